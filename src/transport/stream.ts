/**
 * The stream transport: Ethernet frames each prefixed by their length as a 4-byte big-endian integer —
 * QEMU's `-netdev stream` / `-netdev socket`, and passt's socket protocol.
 *
 * Reading parses frames in place in one receive buffer (no copy per frame) and hands each to the
 * stack as a view. Writing coalesces: frames are appended, prefix and all, to a pending buffer that one
 * socket write flushes; frames pushed while a write is in flight are appended behind it. The
 * pending buffer is bounded: a frame that does not fit is dropped and counted (TCP toward the guest
 * recovers by retransmission; the stack paces itself against `writeBacklog`).
 *
 * @module
 */

import { after } from "../common/timers.ts";
import type { TokenBucket } from "../common/token_bucket.ts";
import type { ByteStream } from "../host/host.ts";
import type { GuestLink, LinkPeer } from "./link.ts";

/** QEMU's stream reader refuses frames over 4096 + 65536 bytes (net/stream.c). */
export const QEMU_MAX_FRAME = 4096 + 65536;
/** Longest sleep of a writer waiting for its egress quota before it looks at the bucket again. */
const RATE_RECHECK_MS = 10;
/** Minimum acceptable frame: an Ethernet header. */
export const MIN_FRAME = 14;

export interface StreamLinkOptions {
  remote: string;
  /** Largest frame accepted from the guest; larger (or zero) lengths close the connection. */
  maxFrame: number;
  /** Bytes of frames allowed to wait for the socket toward the guest; beyond it frames are refused. */
  backlogLimit: number;
  /** When the writer flushes (default: after the current task; the relay's socket loop defers to idle). */
  schedule?: (flush: () => void) => void;
}

/** A protocol error: the connection is closed, nothing else is harmed. */
export class FramingError extends Error {}

/**
 * Splits length-prefixed frames out of `buf[0, filled)`, calling `onFrame(buf, off, len)` for each whole
 * frame; returns how many bytes were consumed. Throws {@linkcode FramingError} on a zero, short or
 * oversize length.
 */
export function splitFrames(
  buf: Uint8Array,
  filled: number,
  maxFrame: number,
  onFrame: (buf: Uint8Array, off: number, len: number) => void,
): number {
  let pos = 0;
  while (filled - pos >= 4) {
    const len = ((buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]) >>> 0;
    if (len === 0 || len > maxFrame) throw new FramingError(`Frame length ${len} is outside 1..${maxFrame}`);
    if (len < MIN_FRAME) throw new FramingError(`Frame length ${len} is shorter than an Ethernet header`);
    if (filled - pos - 4 < len) break;
    onFrame(buf, pos + 4, len);
    pos += 4 + len;
  }
  return pos;
}

/** Coalescing, bounded writer of length-prefixed frames. */
export class FrameWriter {
  #stream: ByteStream;
  #pending: Uint8Array;
  #fill = 0;
  #writing = false;
  #closed = false;
  #onError: (e: unknown) => void;
  /** Called after a flush empties the backlog (senders paced on it may continue). */
  readonly #onDrain: (() => void) | undefined;
  /** Egress shaping (tenant quota): flushes wait for tokens; the backlog then paces TCP. */
  rate: TokenBucket | null = null;
  /** When to flush: after the current task by default; the relay puts it off until its socket loop idles. */
  readonly #schedule: (flush: () => void) => void;
  readonly #clock: () => number;

  #max: number;
  /** The same function every time (a scheduler may tell a stream of flushes from a lone one). */
  readonly #flushLater = () => void this.#flush();

  constructor(
    stream: ByteStream,
    maxBacklog: number,
    onError: (e: unknown) => void,
    opts: {
      onDrain?: () => void;
      schedule?: (flush: () => void) => void;
      /** The egress quota's clock (default performance.now; a test's manual one). */
      clock?: () => number;
    } = {},
  ) {
    this.#clock = opts.clock ?? (() => performance.now());
    this.#onDrain = opts.onDrain;
    this.#schedule = opts.schedule ?? queueMicrotask;
    this.#stream = stream;
    this.#max = maxBacklog;
    // starts small and grows to the bound on demand: an idle guest costs a few KiB, not the bound
    this.#pending = new Uint8Array(Math.min(maxBacklog, 1024));
    this.#onError = onError;
  }

  /** Bytes waiting to be written. */
  get backlog(): number {
    return this.#fill;
  }

  /** Queues a copy of `frame`; returns false when the backlog has no room (the caller counts the drop). */
  push(frame: Uint8Array): boolean {
    if (this.#closed) return false;
    const n = frame.length;
    const need = this.#fill + 4 + n;
    if (need > this.#pending.length) {
      if (need > this.#max) {
        return false;
      }
      // a write in flight keeps reading the old buffer, which stays unchanged
      const grown = new Uint8Array(Math.min(this.#max, Math.max(need, this.#pending.length * 2)));
      grown.set(this.#pending.subarray(0, this.#fill));
      this.#pending = grown;
    }
    const b = this.#pending;
    const p = this.#fill;
    b[p] = n >>> 24;
    b[p + 1] = n >>> 16;
    b[p + 2] = n >>> 8;
    b[p + 3] = n;
    b.set(frame, p + 4);
    this.#fill = p + 4 + n;
    if (!this.#writing) {
      this.#writing = true;
      // flush later: frames produced by one input batch (or several) leave in one write
      this.#schedule(this.#flushLater);
    }
    return true;
  }

  /**
   * Writes the backlog from its one buffer. Frames pushed meanwhile are appended behind the bytes being
   * written (never over them), and the written prefix is dropped afterwards: one buffer per guest, not two.
   */
  async #flush(): Promise<void> {
    try {
      while (this.#fill > 0 && !this.#closed) {
        const len = this.#fill;
        if (this.rate && !this.rate.unlimited) {
          // out of the quota's debt first; checked again after each sleep (a timer may fire early, and the
          // quota's clock may be a test's)
          for (let wait; (wait = this.rate.waitMs(1, this.#clock())) > 0 && !this.#closed;) {
            await new Promise<void>((r) => after(Math.min(wait, RATE_RECHECK_MS), r));
          }
          this.rate.spend(len, this.#clock());
        }
        let off = 0;
        while (off < len) off += await this.#stream.write(this.#pending.subarray(off, len));
        const b = this.#pending;
        b.copyWithin(0, len, this.#fill);
        this.#fill -= len;
      }
    } catch (e) {
      this.#closed = true;
      this.#onError(e);
    } finally {
      this.#writing = false;
    }
    if (!this.#closed) this.#onDrain?.();
  }

  close(): void {
    this.#closed = true;
  }
}

/** Bytes the buffer must hold for the frame that starts at 0 to be complete. */
function needs(buf: Uint8Array, filled: number): number {
  if (filled < 4) return 4;
  return 4 + (((buf[0] << 24) | (buf[1] << 16) | (buf[2] << 8) | buf[3]) >>> 0);
}

/**
 * Reads frames from `stream` in batches: every whole frame of one read is handed over at once as
 * (offset, length) pairs into the receive buffer, and the next read waits until `onBatch`'s promise
 * settles — the buffer is reused only after the scheduler consumed the frames (zero-copy backpressure).
 */
export async function readFrameBatches(
  stream: ByteStream,
  maxFrame: number,
  onBatch: (buf: Uint8Array, offs: number[], lens: number[], n: number) => void | Promise<void>,
): Promise<void> {
  // starts small (idle guests are cheap), grows while reads fill it, up to room for two maximal frames
  const cap = Math.max(256 * 1024, 2 * (maxFrame + 4));
  let buf = new Uint8Array(1024);
  const offs: number[] = [];
  const lens: number[] = [];
  let filled = 0;
  for (;;) {
    if (filled === buf.length || (filled >= 4 && needs(buf, filled) > buf.length)) {
      const bigger = new Uint8Array(Math.min(cap, Math.max(buf.length * 2, needs(buf, filled))));
      bigger.set(buf.subarray(0, filled));
      buf = bigger;
    }
    const n = await stream.read(buf.subarray(filled));
    if (n === null) return;
    filled += n;
    let count = 0;
    const used = splitFrames(buf, filled, maxFrame, (_b, off, len) => {
      offs[count] = off;
      lens[count] = len;
      count++;
    });
    if (count > 0) {
      const r = onBatch(buf, offs, lens, count);
      if (r) await r;
    }
    if (used > 0) {
      buf.copyWithin(0, used, filled);
      filled -= used;
    }
  }
}

/**
 * Reads frames from `stream` until it ends or breaks the protocol, calling `onFrame` with views into the
 * receive buffer (valid only during the call). Resolves when the stream ends; rejects with
 * {@linkcode FramingError} on a protocol error.
 */
export async function readFrames(
  stream: ByteStream,
  maxFrame: number,
  onFrame: (buf: Uint8Array, off: number, len: number) => void,
): Promise<void> {
  // room for at least two maximal frames so a large read rarely splits one
  const buf = new Uint8Array(Math.max(256 * 1024, 2 * (maxFrame + 4)));
  let filled = 0;
  for (;;) {
    const n = await stream.read(buf.subarray(filled));
    if (n === null) return;
    filled += n;
    const used = splitFrames(buf, filled, maxFrame, onFrame);
    if (used > 0) {
      buf.copyWithin(0, used, filled);
      filled -= used;
    }
  }
}

/**
 * The stream carrier (QEMU `-netdev stream`/`socket`, passt): carries frames over `conn` until either side
 * closes, reporting to `peer`. Resolves when the link is down.
 */
export async function carryStream(conn: ByteStream, opts: StreamLinkOptions, peer: LinkPeer): Promise<void> {
  const closeConn = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  const writer = new FrameWriter(conn, opts.backlogLimit, closeConn, {
    schedule: opts.schedule,
    onDrain: () => peer.drained(link),
  });
  const link: GuestLink = {
    kind: "stream",
    remote: opts.remote,
    send: (f) => writer.push(f),
    get backlog() {
      return writer.backlog;
    },
    setRate: (r: TokenBucket | null) => (writer.rate = r),
    close: () => {
      writer.close();
      closeConn();
    },
  };
  const feed = peer.opened(link);
  if (!feed) return link.close();
  let reason: string | undefined;
  try {
    await readFrameBatches(conn, opts.maxFrame, feed);
  } catch (e) {
    if (e instanceof FramingError) peer.protocolError(e.message, {});
    else reason = String(e);
  } finally {
    peer.closed(link, reason);
    link.close();
  }
}
