/**
 * The guest-link contract: what a tenant needs of the carrier that brings its guest's frames (a stream
 * socket, a WebSocket, …), and what a carrier tells its owner. A new carrier is a new file in this folder
 * that returns a {@linkcode GuestLink} and calls a {@linkcode LinkPeer}; the relay does not change.
 *
 * @module
 */
import type { TokenBucket } from "../common/token_bucket.ts";
import { after, type CancelTimer } from "../common/timers.ts";

/** How often a rate-limited link wakes its senders while the bucket refills. */
const RATE_POLL_MS = 10;

/**
 * Keeps telling `link`'s peer it drained while egress quota `rate` has tokens, every
 * {@linkcode RATE_POLL_MS}, for as long as `current()` (the link still uses that bucket and is open): TCP
 * toward the guest waits on a bucket in debt and needs a nudge once it refills. Returns the cancel.
 */
export function wakeWhileRateLimited(
  rate: TokenBucket,
  current: () => boolean,
  peer: LinkPeer,
  link: GuestLink,
): CancelTimer {
  let cancel: CancelTimer = () => {};
  const poll = () => {
    cancel = after(RATE_POLL_MS, () => {
      if (!current()) return;
      if (rate.available(performance.now()) >= 0) peer.drained(link);
      poll();
    });
  };
  poll();
  return () => cancel();
}

/** Which carrier a guest came by (shown in the tenant's state and the logs). */
export type GuestLinkKind = "stream" | "gvforwarder" | "websocket" | "websocket-stream" | "datagram" | "wisp";

/** Frames toward the guest, and the carrier's state. */
export interface GuestLink {
  readonly kind: GuestLinkKind;
  readonly remote: string;
  /**
   * The guest's NIC offloads (libkrun): its frames may be up to 64 KiB, their TCP/UDP checksums unfinished;
   * the tenant takes them as they are.
   */
  readonly offloads?: boolean;
  /** Queues a copy of `frame` toward the guest; false when dropped (backlog full or closed). */
  send(frame: Uint8Array): boolean;
  /** Bytes queued toward the guest (the carrier tells its peer when it drained). */
  readonly backlog: number;
  /** Egress shaping, applied by the link's writer. */
  setRate(rate: TokenBucket | null): void;
  close(): void;
}

/** A batch of guest frames `buf[offs[i], offs[i]+lens[i])`, i < n; resolves when the frames were taken. */
export type FrameFeed = (buf: Uint8Array, offs: number[], lens: number[], n: number) => Promise<void>;

/** What a carrier reports to its owner. */
export interface LinkPeer {
  /** The link is up: where its frames go, or null to refuse it (the carrier then closes). */
  opened(link: GuestLink): FrameFeed | null;
  /** The link went down (either side); `reason` when a socket error ended it. */
  closed(link: GuestLink, reason?: string): void;
  /** The guest broke the carrier's protocol; the carrier closes the link after this. */
  protocolError(reason: string, fields: Record<string, unknown>): void;
  /** A guest frame was dropped (counted under `reason`). */
  dropped(reason: string): void;
  /** The backlog toward the guest drained: senders paced on it may go on. */
  drained(link: GuestLink): void;
}

/**
 * A link that drops a share of the frames sent toward the guest (tests of loss recovery): reproducible
 * (xorshift32 from `seed`), counted through `dropped`. A wrapper, as smoltcp's `phy/fault_injector.rs`.
 */
export function lossyLink(link: GuestLink, loss: number, seed: number, dropped: () => void): GuestLink {
  let x = seed >>> 0 || 1;
  return {
    get kind() {
      return link.kind;
    },
    remote: link.remote,
    offloads: link.offloads,
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
    get backlog() {
      return link.backlog;
    },
    setRate: (rate) => link.setRate(rate),
    close: () => link.close(),
  };
}
