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

import type { ByteStream } from "../host/host.ts";
import type { GuestLink, GuestLinkKind, LinkPeer } from "./link.ts";
import { FramingError, type LengthPrefix, splitFrames, U16_LE, U32_BE } from "./framing.ts";
import { gvforwarderRequestLength } from "./gvforwarder.ts";
import {
  isReceiveBlock,
  RECEIVE_BLOCK_BYTES,
  returnReceiveBlock,
  takeReceiveBlock,
} from "../wire/checksum_variants.ts";

/** QEMU's stream reader refuses frames over 4096 + 65536 bytes (net/stream.c). */
export const QEMU_MAX_FRAME = 4096 + 65536;
export interface StreamLinkOptions {
  remote: string;
  /** Largest frame accepted from the guest; larger (or zero) lengths close the connection. */
  maxFrame: number;
  /** Bytes of frames allowed to wait for the socket toward the guest; beyond it frames are refused. */
  backlogLimit: number;
  /** When the writer flushes (default: after the current task; the relay's socket loop defers to idle). */
  schedule?: (flush: () => void) => void;
  /** The largest frame sent toward the guest (Ethernet header and MTU): sizes the kernel's buffer for them. */
  largestFrameToGuest?: number;
}

/**
 * Frames of the largest size the kernel's buffer toward the guest should hold. The writer refills that buffer
 * on the loop's turn after it drains; what it holds must outlast the relay's wake-up. The default 208 KiB is
 * ~140 frames at MTU 1500 but three at 65520, where the guest then waited on the relay: with room for 16
 * (1 MiB) host→guest at 65520 went from 8.5–10.1 to 10.1–12.1 Gbit/s, the machine's idle time per GB down a
 * quarter; at 1500 a larger buffer only made the guest's bursts longer (2.6–3.3 vs 3.1–3.5 Gbit/s), so
 * small frames keep the default.
 */
const KERNEL_BUFFER_FRAMES = 16;

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
  /** When to flush: after the current task by default; the relay puts it off until its socket loop idles. */
  readonly #schedule: (flush: () => void) => void;
  /** The length prefix written before each frame (a carrier may learn it from the guest's first bytes). */
  prefix: LengthPrefix;

  #max: number;
  /** The same function every time (a scheduler may tell a stream of flushes from a lone one). */
  readonly #flushLater = () => this.#flush();

  constructor(
    stream: ByteStream,
    maxBacklog: number,
    onError: (e: unknown) => void,
    opts: {
      onDrain?: () => void;
      schedule?: (flush: () => void) => void;
      prefix?: LengthPrefix;
    } = {},
  ) {
    this.prefix = opts.prefix ?? U32_BE;
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
    const size = this.prefix.size;
    if (n > this.prefix.max) return false;
    const need = this.#fill + size + n;
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
    this.prefix.write(b, p, n);
    b.set(frame, p + size);
    this.#fill = p + size + n;
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
  #flush(): void {
    if (this.#closed) {
      this.#writing = false;
      return;
    }
    // at once while the stream takes the bytes (no promise per flush); a full stream is waited for. One send
    // takes what fits: less than it was given means the socket is full, and another at once would fail (EAGAIN)
    let off = 0;
    if (this.#stream.writeNow) {
      try {
        off = this.#stream.writeNow(this.#pending.subarray(0, this.#fill));
      } catch (e) {
        this.#closed = true;
        this.#writing = false;
        return this.#onError(e);
      }
      if (off === this.#fill) {
        this.#fill = 0;
        this.#writing = false;
        if (!this.#closed) this.#onDrain?.();
        return;
      }
      void this.#flushWaiting(off, true);
      return;
    }
    void this.#flushWaiting(off, false);
  }

  /** The rest of a flush, from `off`, waiting for room in the stream (`full`: the last send found none). */
  async #flushWaiting(off: number, full: boolean): Promise<void> {
    const stream = this.#stream;
    try {
      while (this.#fill > 0 && !this.#closed) {
        const len = this.#fill;
        while (off < len) {
          const rest = this.#pending.subarray(off, len);
          const n = full && stream.writeWhenRoom
            ? await stream.writeWhenRoom(rest)
            : await stream.write(rest);
          off += n;
          full = n < rest.length;
        }
        const b = this.#pending;
        b.copyWithin(0, len, this.#fill);
        this.#fill -= len;
        off = 0;
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
function needs(buf: Uint8Array, filled: number, prefix: LengthPrefix): number {
  if (filled < prefix.size) return prefix.size;
  return prefix.size + prefix.read(buf, 0);
}

/** How a guest's byte stream is cut into frames; a carrier may learn it from the guest's first bytes. */
export interface StreamFraming {
  prefix: LengthPrefix;
  /**
   * Looks at the stream's first bytes before any frame: how many belong to a preamble (0 when there is
   * none), or null while it cannot tell yet. May change `prefix`; throws {@linkcode FramingError} on a
   * broken preamble.
   */
  opening?: (buf: Uint8Array, filled: number) => number | null;
}

/** A batch of whole frames, `buf[offs[i], offs[i]+lens[i])` for i < n; a promise while it holds `buf`. */
type BatchSink = (buf: Uint8Array, offs: number[], lens: number[], n: number) => void | Promise<void>;

/**
 * The receive side of a framed byte stream: reads land in {@linkcode room}, whole frames come out of
 * {@linkcode received} as (offset, length) pairs into the one buffer, and {@linkcode release} drops them
 * once they were taken. Shared by the promise reader and the socket-loop reader below.
 */
class FrameReceiveBuffer {
  // starts small (idle guests are cheap), grows while reads fill it, up to room for two maximal frames
  buf = new Uint8Array(1024);
  readonly offs: number[] = [];
  readonly lens: number[] = [];
  #filled = 0;
  #used = 0;
  #count = 0;
  /** The last read filled the buffer: the next room() grows it. */
  #readFilled = false;
  readonly #cap: number;
  #opening: StreamFraming["opening"];
  readonly #collect = (_b: Uint8Array, off: number, len: number) => {
    this.offs[this.#count] = off;
    this.lens[this.#count] = len;
    this.#count++;
  };

  constructor(readonly maxFrame: number, readonly framing: StreamFraming) {
    this.#cap = Math.max(256 * 1024, 2 * (maxFrame + 4));
    this.#opening = framing.opening;
  }

  /** Where the next read goes; the buffer grows first when it is full or a frame needs more room. */
  room(): Uint8Array {
    const prefix = this.framing.prefix;
    const opening = this.#opening;
    const filled = this.#filled;
    // the last read filled the buffer (what it left of a frame has moved to the front since, so `filled`
    // alone would not show it: the buffer then stayed at one frame and a partial, one frame per read)
    const wasFull = this.#readFilled;
    this.#readFilled = false;
    if (
      (wasFull && this.buf.length < this.#cap) || filled === this.buf.length ||
      (!opening && needs(this.buf, filled, prefix) > this.buf.length)
    ) {
      const want = opening ? 0 : needs(this.buf, filled, prefix);
      const size = Math.min(this.#cap, Math.max(this.buf.length * 2, want));
      // a busy guest's buffer, when one is free, lies where checksums are summed without a copy in
      const bigger = (size === RECEIVE_BLOCK_BYTES && takeReceiveBlock()) || new Uint8Array(size);
      bigger.set(this.buf.subarray(0, filled));
      this.buf = bigger;
    }
    return this.buf.subarray(filled);
  }

  /**
   * Takes `n` bytes just read into {@linkcode room}: how many whole frames are ready (in `offs`/`lens`).
   * Throws {@linkcode FramingError} on a broken length or preamble.
   */
  received(n: number): number {
    this.#filled += n;
    if (this.#filled === this.buf.length) this.#readFilled = true;
    let from = 0;
    if (this.#opening) {
      const took = this.#opening(this.buf, this.#filled);
      if (took === null) return 0;
      this.#opening = undefined;
      from = took;
    }
    this.#count = 0;
    this.#used = splitFrames(this.buf, this.#filled, this.maxFrame, this.#collect, this.framing.prefix, from);
    return this.#count;
  }

  /** The link is done: a receive block goes back to the thread's set (no frame of it is in use). */
  dispose(): void {
    if (isReceiveBlock(this.buf)) returnReceiveBlock(this.buf);
    this.buf = new Uint8Array(0);
  }

  /** The frames (and any preamble) of the last {@linkcode received} were taken: their bytes go. */
  release(): void {
    const used = this.#used;
    if (used === 0) return;
    this.buf.copyWithin(0, used, this.#filled);
    this.#filled -= used;
    this.#used = 0;
  }
}

/**
 * Reads frames from `stream` in batches: every whole frame of one read is handed over at once as
 * (offset, length) pairs into the receive buffer, and the next read waits until `onBatch`'s promise
 * settles — the buffer is reused only after the scheduler consumed the frames (zero-copy backpressure).
 * A stream that can be read on the socket loop's turn ({@linkcode ByteStream.watch}) is read that way: no
 * promise per read.
 */
export function readFrameBatches(
  stream: ByteStream,
  maxFrame: number,
  onBatch: BatchSink,
  framing: StreamFraming = { prefix: U32_BE },
): Promise<void> {
  const rx = new FrameReceiveBuffer(maxFrame, framing);
  // ended or failed, the reader is done with every frame: no batch is held then (see both readers)
  return (stream.watch ? pumpFrameBatches(stream, rx, onBatch) : awaitFrameBatches(stream, rx, onBatch))
    .finally(() => rx.dispose());
}

async function awaitFrameBatches(
  stream: ByteStream,
  rx: FrameReceiveBuffer,
  onBatch: BatchSink,
): Promise<void> {
  for (;;) {
    const n = await stream.read(rx.room());
    if (n === null) return;
    const count = rx.received(n);
    if (count > 0) {
      const r = onBatch(rx.buf, rx.offs, rx.lens, count);
      if (r) await r;
    }
    rx.release();
  }
}

/**
 * The socket loop calls back while `stream` has bytes: one read per turn (every guest gets its turn), the
 * frames handed on at once; while `onBatch` holds the buffer the stream is not watched.
 */
function pumpFrameBatches(stream: ByteStream, rx: FrameReceiveBuffer, onBatch: BatchSink): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (e: unknown) => {
      stream.watch!(null);
      reject(e);
    };
    const onReadable = () => {
      let count: number;
      try {
        const n = stream.readNow!(rx.room());
        if (n === null) {
          stream.watch!(null);
          return resolve();
        }
        if (n === 0) return;
        count = rx.received(n);
      } catch (e) {
        return fail(e);
      }
      const held = count > 0 ? onBatch(rx.buf, rx.offs, rx.lens, count) : undefined;
      if (!held) return rx.release();
      stream.watch!(null);
      held.then(() => {
        rx.release();
        stream.watch!(onReadable);
      }, fail);
    };
    stream.watch!(onReadable);
  });
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
  prefix: LengthPrefix = U32_BE,
): Promise<void> {
  // room for at least two maximal frames so a large read rarely splits one
  const buf = new Uint8Array(Math.max(256 * 1024, 2 * (maxFrame + 4)));
  let filled = 0;
  for (;;) {
    const n = await stream.read(buf.subarray(filled));
    if (n === null) return;
    filled += n;
    const used = splitFrames(buf, filled, maxFrame, onFrame, prefix);
    if (used > 0) {
      buf.copyWithin(0, used, filled);
      filled -= used;
    }
  }
}

/**
 * The stream carrier (QEMU `-netdev stream`/`socket`, passt, and gvforwarder — told apart by the first
 * bytes): carries frames over `conn` until either side closes, reporting to `peer`. Resolves when the link
 * is down.
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
  let kind: GuestLinkKind = "stream";
  // QEMU's framing unless the guest opens with gvforwarder's request (gvforwarder.ts)
  const framing: StreamFraming = {
    prefix: U32_BE,
    opening: (buf, filled) => {
      const took = gvforwarderRequestLength(buf, filled);
      if (took) {
        kind = "gvforwarder";
        framing.prefix = writer.prefix = U16_LE;
      }
      return took;
    },
  };
  const link: GuestLink = {
    get kind() {
      return kind;
    },
    remote: opts.remote,
    send: (f) => writer.push(f),
    get backlog() {
      return writer.backlog;
    },
    close: () => {
      writer.close();
      closeConn();
    },
  };
  const feed = peer.opened(link);
  if (!feed) return link.close();
  if (opts.largestFrameToGuest) {
    conn.reserveSendBuffer?.(KERNEL_BUFFER_FRAMES * (opts.largestFrameToGuest + 4));
  }
  let reason: string | undefined;
  try {
    await readFrameBatches(conn, opts.maxFrame, feed, framing);
  } catch (e) {
    if (e instanceof FramingError) peer.protocolError(e.message, {});
    else reason = String(e);
  } finally {
    peer.closed(link, reason);
    link.close();
  }
}
