/**
 * Link wrappers: a {@linkcode GuestLink} around a {@linkcode GuestLink}, so that what is done to every frame
 * whatever the carrier — capturing it, shaping it, losing it on purpose — is written once, outside the
 * carriers, as gVisor's `link/sniffer` and `link/qdisc` and smoltcp's `phy/fault_injector.rs` are. A tenant's
 * peer stacks them when a guest attaches (relay/guest_peers.ts):
 * stack → {@linkcode recordingLink} → {@linkcode lossyLink} → {@linkcode shapedLink} → carrier, and
 * carrier → {@linkcode recordingFeed} → stack.
 *
 * @module
 */
import { after, type CancelTimer } from "../common/timers.ts";
import type { TokenBucket } from "../common/token_bucket.ts";
import type { FrameFeed, GuestLink, LinkPeer } from "./link.ts";

/** Where a capture writes frames (a pcap file). */
export interface FrameRecorder {
  record(frame: Uint8Array): void;
}

/**
 * Records every frame toward the guest into whatever `recorder()` names at that moment (a capture the
 * operator started or stopped meanwhile), or nowhere; {@linkcode recordingFeed} is its twin for the guest's
 * frames. Costs one call and a null check per frame while nothing captures.
 */
export function recordingLink(link: GuestLink, recorder: () => FrameRecorder | null): GuestLink {
  return around(link, {
    send(frame) {
      recorder()?.record(frame);
      return link.send(frame);
    },
  });
}

/** Records every frame from the guest (as {@linkcode recordingLink}), then hands the batch to `feed`. */
export function recordingFeed(feed: FrameFeed, recorder: () => FrameRecorder | null): FrameFeed {
  return (buf, offs, lens, n) => {
    const r = recorder();
    if (r) { for (let i = 0; i < n; i++) r.record(buf.subarray(offs[i], offs[i] + lens[i])); }
    return feed(buf, offs, lens, n);
  };
}

/**
 * A link that drops a share of the frames sent toward the guest (tests of loss recovery): reproducible
 * (xorshift32 from `seed`), counted through `dropped`.
 */
export function lossyLink(link: GuestLink, loss: number, seed: number, dropped: () => void): GuestLink {
  let x = seed >>> 0 || 1;
  return around(link, {
    send(frame) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      if (x / 0x1_0000_0000 < loss) {
        dropped();
        return true;
      }
      return link.send(frame);
    },
  });
}

/** Longest sleep of a shaped link waiting for tokens before it looks at the bucket again. */
const RATE_RECHECK_MS = 10;

/**
 * Egress shaping (a tenant's `egressBytesPerSecond`): frames toward the guest leave at most at `rate`, every
 * kind alike (TCP, UDP, ICMP). While the bucket holds tokens a frame goes straight to the carrier (a frame is
 * never split, so one may take the bucket into debt); after that frames wait here in order, as copies, and
 * leave as the debt is repaid. The wait counts in `backlog`, so TCP toward the guest paces itself on it as
 * on any carrier's backlog; `peer.drained` is told when the wait empties. At most `maxQueued` bytes wait:
 * beyond that a frame is refused (`send` is false), and one the carrier refuses later is counted through
 * `peer.dropped`.
 */
export function shapedLink(
  link: GuestLink,
  rate: TokenBucket,
  peer: LinkPeer,
  maxQueued: number,
  clock: () => number = () => performance.now(),
): GuestLink {
  const queue: Uint8Array[] = [];
  let head = 0;
  let queued = 0;
  let cancel: CancelTimer | undefined;
  let closed = false;

  const release = () => {
    cancel = undefined;
    if (closed) return;
    while (head < queue.length) {
      const wait = rate.waitMs(1, clock());
      if (wait > 0) {
        cancel = after(Math.min(wait, RATE_RECHECK_MS), release);
        return;
      }
      const f = queue[head];
      queue[head++] = EMPTY;
      queued -= f.length;
      rate.spend(f.length, clock());
      if (!link.send(f)) peer.dropped("guest-backlog-full");
    }
    queue.length = head = 0;
    peer.drained(shaped);
  };

  const shaped: GuestLink = around(link, {
    send(frame) {
      if (closed) return false;
      if (head === queue.length && rate.waitMs(1, clock()) === 0) {
        if (!link.send(frame)) return false;
        rate.spend(frame.length, clock());
        return true;
      }
      if (queued + frame.length > maxQueued) return false;
      queue.push(frame.slice());
      queued += frame.length;
      cancel ??= after(Math.min(rate.waitMs(1, clock()), RATE_RECHECK_MS), release);
      return true;
    },
    backlog: () => queued + link.backlog,
    close() {
      closed = true;
      cancel?.();
      cancel = undefined;
      queue.length = head = queued = 0;
      link.close();
    },
  });
  return shaped;
}

const EMPTY = new Uint8Array(0);

/** `link` with what a wrapper does itself: `send` always, its own `backlog` and `close` where given. */
function around(
  link: GuestLink,
  own: { send(frame: Uint8Array): boolean; backlog?: () => number; close?: () => void },
): GuestLink {
  const backlog = own.backlog;
  return {
    get kind() {
      return link.kind;
    },
    remote: link.remote,
    offloads: link.offloads,
    send: own.send,
    get backlog() {
      return backlog ? backlog() : link.backlog;
    },
    close: own.close ?? (() => link.close()),
  };
}
