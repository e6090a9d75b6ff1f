/**
 * Bytes read from the host socket and not yet acknowledged by the guest, in one ring buffer per
 * connection. JavaScript cannot re-read a socket with MSG_PEEK as passt does, so the bytes are kept here
 * until the guest acknowledges them; segments are copied from here straight into the outgoing frame.
 * Offset 0 is SND.UNA.
 *
 * The host socket reads straight into the ring's free space ({@linkcode SendQueue.writable} then
 * {@linkcode SendQueue.commit}): no buffer is allocated per read. At 2 Gbit/s a fresh 64 KiB buffer per
 * read made V8 run a full mark-compact every ~250 ms (external-memory pressure), and each one stalled
 * every tenant's traffic for milliseconds (measured with --trace-gc in bench/tenants.ts).
 *
 * @module
 */

import { BufferPool } from "../../common/buffer_pool.ts";

const EMPTY = new Uint8Array(0);
/** Smallest ring: enough for a request or response of a chatty protocol. */
const MIN_CAPACITY = 4096;
/**
 * Rings let go of, kept for the next connections on this thread: at most 1 MiB, none above 128 KiB (a short
 * connection's ring would otherwise be a fresh 16 KiB+ allocation per connection).
 */
const pool = new BufferPool(1024 * 1024, 128 * 1024);

export class SendQueue {
  /** Told how many bytes of buffer were allocated (positive) or let go (negative): the tenant's budget. */
  readonly #onResize: (delta: number) => void;

  constructor(onResize: (delta: number) => void = () => {}) {
    this.#onResize = onResize;
  }

  /** The ring's bytes followed by its frame area (one buffer: copies between them need no view). */
  #all: Uint8Array = EMPTY;
  /** The ring: `#all[0, capacity)`. */
  #buf: Uint8Array = EMPTY;
  /** Bytes of frame area after the ring. */
  #frameRoom = 0;
  /** Index of the byte at SND.UNA. */
  #head = 0;
  #length = 0;

  /** Bytes held (unacknowledged, sent or not). */
  get length(): number {
    return this.#length;
  }

  /** Bytes of ring allocated. */
  get capacity(): number {
    return this.#buf.length;
  }

  /**
   * Free space at the tail for the next host read, growing the ring when less than `want` bytes are
   * free. The view stays valid until the next call that adds bytes (commit, push) or clear().
   */
  writable(want: number): Uint8Array {
    const cap = this.#buf.length;
    if (cap - this.#length < want) this.#grow(this.#length + want);
    const b = this.#buf;
    const tail = (this.#head + this.#length) % b.length;
    // contiguous free bytes from the tail: to the end of the ring, or up to the head once wrapped
    const end = tail >= this.#head && !(this.#length > 0 && tail === this.#head) ? b.length : this.#head;
    return b.subarray(tail, end);
  }

  /** `n` bytes were written into the last {@linkcode writable} view. */
  commit(n: number): void {
    this.#length += n;
  }

  /** Copies `data` in (the caller keeps its buffer). */
  push(data: Uint8Array): void {
    let n = data.length;
    if (n === 0) return;
    let from = 0;
    while (n > 0) {
      const room = this.writable(n);
      const k = Math.min(room.length, n);
      room.set(data.subarray(from, from + k));
      this.#length += k;
      from += k;
      n -= k;
    }
  }

  /**
   * Frame area wanted after the ring (the connection's largest frame); it is allocated with the ring, up to
   * the ring's own size, so a small ring does not carry a 64 KiB area for a 65520-byte MTU.
   */
  frameRoomWanted = 0;

  #grow(need: number): void {
    // 1.5x (amortized), rounded to 4 KiB; no power of two: the ring stays near the connection's limit
    const cap = Math.ceil(Math.max(MIN_CAPACITY, need, this.#buf.length * 1.5) / 4096) * 4096;
    const room = Math.min(this.frameRoomWanted, cap);
    const all = pool.take(cap + room);
    const next = all.subarray(0, cap);
    this.#copy(0, this.#length, next, 0);
    this.#onResize(all.length - this.#all.length);
    pool.give(this.#all);
    this.#all = all;
    this.#buf = next;
    this.#frameRoom = room;
    this.#head = 0;
  }

  /**
   * Where to build a frame of `bytes` next to the ring ({@linkcode copyToFrame} fills its payload), or
   * null when the area is smaller. Never reallocates: a host read may be landing in the ring's free space.
   */
  frameArea(bytes: number): { buf: Uint8Array; off: number } | null {
    if (this.#frameRoom < bytes) return null;
    this.#area.buf = this.#all;
    this.#area.off = this.#buf.length;
    return this.#area;
  }
  #area: { buf: Uint8Array; off: number } = { buf: EMPTY, off: 0 };

  /**
   * Copies `len` bytes starting `offset` after SND.UNA to `at` in the frame area's buffer (as returned by
   * {@linkcode frameArea}): within one buffer, so no view is made.
   */
  copyToFrame(offset: number, len: number, at: number): number {
    len = Math.max(0, Math.min(len, this.#length - offset));
    if (len === 0) return 0;
    const cap = this.#buf.length;
    const start = (this.#head + offset) % cap;
    const first = Math.min(len, cap - start);
    this.#all.copyWithin(at, start, start + first);
    if (first < len) this.#all.copyWithin(at + first, 0, len - first);
    return len;
  }

  /** Drops `n` acknowledged bytes from the front. */
  consume(n: number): void {
    n = Math.min(n, this.#length);
    this.#length -= n;
    this.#head = this.#buf.length === 0 ? 0 : (this.#head + n) % this.#buf.length;
  }

  /** Copies `len` bytes starting `offset` bytes after SND.UNA into `dst[dstOff]`; returns bytes copied. */
  copyOut(offset: number, len: number, dst: Uint8Array, dstOff: number): number {
    len = Math.max(0, Math.min(len, this.#length - offset));
    this.#copy(offset, len, dst, dstOff);
    return len;
  }

  #copy(offset: number, len: number, dst: Uint8Array, dstOff: number): void {
    if (len === 0) return;
    const b = this.#buf;
    const start = (this.#head + offset) % b.length;
    const first = Math.min(len, b.length - start);
    dst.set(b.subarray(start, start + first), dstOff);
    if (first < len) dst.set(b.subarray(0, len - first), dstOff + first);
  }

  /** Bytes of buffer allocated (ring and frame area). */
  get allocated(): number {
    return this.#all.length;
  }

  /** Frees the ring. */
  clear(): void {
    this.#onResize(-this.#all.length);
    pool.give(this.#all);
    this.#buf = this.#all = EMPTY;
    this.#frameRoom = 0;
    this.#head = 0;
    this.#length = 0;
  }
}
