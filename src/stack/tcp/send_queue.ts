/**
 * Bytes read from the host socket and not yet acknowledged by the guest. JavaScript cannot re-read a
 * socket with MSG_PEEK as passt does, so the host's own read buffers are kept (referenced, not copied)
 * until the guest acknowledges them; segments are copied from here straight into the outgoing frame.
 * Offset 0 is SND.UNA.
 *
 * @module
 */

export class SendQueue {
  #chunks: Uint8Array[] = [];
  /** Bytes of chunks[0] already acknowledged. */
  #head = 0;
  #length = 0;

  /** Bytes held (unacknowledged, sent or not). */
  get length(): number {
    return this.#length;
  }

  /** Takes ownership of `chunk` (the caller must not reuse it). */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** Drops `n` acknowledged bytes from the front. */
  consume(n: number): void {
    n = Math.min(n, this.#length);
    this.#length -= n;
    while (n > 0) {
      const c = this.#chunks[0];
      const left = c.length - this.#head;
      if (n < left) {
        this.#head += n;
        return;
      }
      n -= left;
      this.#chunks.shift();
      this.#head = 0;
    }
  }

  /** Copies `len` bytes starting `offset` bytes after SND.UNA into `dst[dstOff]`; returns bytes copied. */
  copyOut(offset: number, len: number, dst: Uint8Array, dstOff: number): number {
    let copied = 0;
    let skip = offset + this.#head;
    for (const c of this.#chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      const n = Math.min(c.length - skip, len - copied);
      dst.set(c.subarray(skip, skip + n), dstOff + copied);
      copied += n;
      skip = 0;
      if (copied === len) break;
    }
    return copied;
  }

  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#length = 0;
  }
}
