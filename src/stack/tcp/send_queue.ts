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

const EMPTY = new Uint8Array(0);
/** Smallest ring: enough for a request or response of a chatty protocol. */
const MIN_CAPACITY = 4096;

export class SendQueue {
  #buf: Uint8Array = EMPTY;
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

  #grow(need: number): void {
    // 1.5x (amortized), rounded to 4 KiB; no power of two: the ring stays near the connection's limit
    const cap = Math.ceil(Math.max(MIN_CAPACITY, need, this.#buf.length * 1.5) / 4096) * 4096;
    const next = new Uint8Array(cap);
    this.#copy(0, this.#length, next, 0);
    this.#buf = next;
    this.#head = 0;
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

  /** Frees the ring. */
  clear(): void {
    this.#buf = EMPTY;
    this.#head = 0;
    this.#length = 0;
  }
}
