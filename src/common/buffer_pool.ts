/**
 * Buffers let go of, kept for the next user of the same size on this thread (each data-plane worker has
 * its own). A short connection otherwise allocates a fresh buffer and drops it: V8 allocates every typed
 * array above 64 bytes (and every one handed to a system call) outside its heap — a calloc — and its GC
 * threads free it later under the arena's lock; glibc grows and trims the thread's arena around it (perf of
 * sequential connections). Bounded: at most `maxBytes` kept, none larger than `largest`.
 *
 * @module
 */
export class BufferPool {
  #free = new Map<number, Uint8Array[]>();
  #bytes = 0;

  constructor(readonly maxBytes: number, readonly largest: number) {}

  /** A zeroed buffer of `len` bytes: a kept one (another flow's, maybe another tenant's: cleared) or a new one. */
  take(len: number): Uint8Array {
    const kept = this.#free.get(len)?.pop();
    if (!kept) return new Uint8Array(len);
    this.#bytes -= len;
    return kept.fill(0);
  }

  /** Keeps `buf` for a later `take` of its size, if there is room; its owner must not use it again. */
  give(buf: Uint8Array): void {
    const len = buf.length;
    if (len === 0 || len > this.largest || this.#bytes + len > this.maxBytes) return;
    let list = this.#free.get(len);
    if (!list) this.#free.set(len, list = []);
    list.push(buf);
    this.#bytes += len;
  }
}
