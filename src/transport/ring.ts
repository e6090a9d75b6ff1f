/**
 * The ring carrier: a guest whose frames arrive through a pair of {@linkcode FrameRing}s from another
 * thread — a WebSocket guest of a data-plane worker, whose WebSocket lives on the main thread. The main
 * thread pushes each guest frame into `toWorker` and rings this worker's eventfd; frames toward the guest
 * go into `toMain`, and the main thread's bell is rung once per batch.
 *
 * Frames are fed to the stack as views into the ring (no copy) and freed once the scheduler took them.
 *
 * @module
 */
import type { FrameRing, RingCursor } from "../common/frame_ring.ts";
import type { FrameFeed, GuestLink, LinkPeer } from "./link.ts";
import { linkKindOf, type WebSocketFramingKind } from "./websocket_framing.ts";

/** Frames fed to the scheduler per batch. */
const BATCH = 64;

export interface RingLinkOptions {
  remote: string;
  /** How the guest's WebSocket (on the other thread) carries frames; the ring holds bare frames either way. */
  framing: WebSocketFramingKind;
  /** Bytes allowed to wait toward the guest (in the ring and in the WebSocket's own buffer). */
  backlogLimit: number;
  /** Tells the main thread that `toMain` has frames or closed. */
  ringBell: () => void;
}

/** The worker's side of a ring link: `service` runs whenever the worker is woken. */
export interface RingCarrier {
  readonly link: GuestLink;
  /** Takes the guest's frames, notices closes and room made toward the guest. */
  service(): void;
  readonly closed: boolean;
}

export function carryRing(
  toWorker: FrameRing,
  toMain: FrameRing,
  opts: RingLinkOptions,
  peer: LinkPeer,
): RingCarrier {
  const limit = opts.backlogLimit;
  let waiting = false;
  let closed = false;
  let feed: FrameFeed | null = null;
  let feeding = false;
  const offs: number[] = new Array(BATCH).fill(0), lens: number[] = new Array(BATCH).fill(0);
  const cursor: RingCursor = toWorker.cursor();
  const bytes = new Uint8Array(toWorker.sab);
  const base = toWorker.dataOffset;

  const backlog = () => toMain.used + toMain.farBacklog;
  const link: GuestLink = {
    kind: linkKindOf(opts.framing),
    remote: opts.remote,
    send(f) {
      if (closed || backlog() + f.length > limit) return false;
      const pushed = toMain.push(f);
      // every frame sent asks to hear when the main thread has sent it all: senders pace themselves on
      // `backlog` at levels of their own (TCP stops at 128 KiB), so asking only past some mark left a paced
      // sender waiting for a wake-up nobody was asked for. Not "if anything is still queued" either: the
      // main thread may take the frame between the push and that look, then hold it in its WebSocket's
      // buffer — a backlog the sender paces on with nobody asked to report its drain (a download stalled
      // for good, 1 run in ~10 of bench/e2e_tcp.ts). The wish is stored before the bell rings, so the main
      // thread, which reads it after answering, cannot miss it
      if (!waiting) {
        waiting = true;
        toMain.wantRoom();
      }
      if (toMain.ring()) opts.ringBell();
      return pushed;
    },
    get backlog() {
      const b = backlog();
      // a sender that sees a backlog paces on it, so it must hear when it drains, however the backlog came
      // to be: frames move from the ring to the WebSocket's buffer on the other thread, and a look between
      // the two can see nothing queued, fire "drained" and find the bytes in `farBacklog` a moment later
      if (b > 0 && !waiting) {
        waiting = true;
        toMain.wantRoom();
        if (toMain.ring()) opts.ringBell();
      }
      return b;
    },
    close() {
      if (closed) return;
      toMain.close();
      opts.ringBell();
      finish();
    },
  };

  const finish = () => {
    if (closed) return;
    closed = true;
    feed = null;
    toWorker.close();
    peer.closed(link);
  };

  const pump = async () => {
    feeding = true;
    try {
      while (feed && !closed) {
        let n = 0;
        while (n < BATCH && toWorker.next(cursor)) {
          offs[n] = base + cursor.off;
          lens[n] = cursor.len;
          n++;
        }
        if (n === 0) break;
        const held = feed(bytes, offs, lens, n);
        if (held) await held;
        toWorker.release(cursor);
        // the main thread holds frames back until there is room: tell it there is
        if (toWorker.takeWantRoom()) opts.ringBell();
      }
    } finally {
      feeding = false;
    }
    if (toWorker.closed) finish();
  };

  feed = peer.opened(link);
  if (!feed) {
    closed = true;
    toMain.close();
    opts.ringBell();
  }

  return {
    link,
    get closed() {
      return closed;
    },
    service() {
      if (closed) return;
      toWorker.answer();
      // frames the main thread had to drop (its wait was full too): counted as the tenant's
      for (let d = toWorker.takeDrops(); d > 0; d--) peer.dropped("guest-ring-full");
      if (!feeding) pump();
      if (waiting) {
        if (backlog() === 0) {
          waiting = false;
          peer.drained(link);
        } else {
          // woken with bytes still waiting: the main thread took the wish, so make it again
          toMain.wantRoom();
          if (toMain.ring()) opts.ringBell();
        }
      }
      // the main thread closed it (the WebSocket went); a pump under way finishes it when done
      if (toWorker.closed && !feeding) finish();
    },
  };
}
