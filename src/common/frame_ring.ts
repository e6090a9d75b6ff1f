/**
 * A single-producer, single-consumer ring of frames in a SharedArrayBuffer: how a WebSocket guest's frames
 * cross between the main thread (which owns the WebSocket) and the data-plane worker that owns its tenant.
 * No locks: the producer alone moves `head`, the consumer alone moves `tail` (Atomics, so each side sees
 * the other's bytes before the index that publishes them).
 *
 * Each record is a 4-byte little-endian length and the frame, padded to 4 bytes, and is never split at
 * the end of the buffer (a skip marker sends the reader to the start): the consumer reads every frame as a
 * view into the ring, without a copy, and frees it only once done with it.
 *
 * @module
 */

/** Header words (Int32): */
const HEAD = 0, TAIL = 1;
/** Either side has closed the ring (the WebSocket closed, or the tenant let its guest go). */
const CLOSED = 2;
/** The consumer's own backlog past the ring (the WebSocket's bufferedAmount), for the producer's pacing. */
const FAR_BACKLOG = 3;
/** The producer waits for room: the consumer says when it made some. */
const WANT_ROOM = 4;
/** The producer rang the consumer's bell and the consumer has not looked yet (one wake-up per batch). */
const RUNG = 5;
/** Frames the producer dropped for want of room since the consumer last counted them. */
const DROPPED = 6;
const HEADER_BYTES = 64;
const SKIP = 0xffff_ffff;

export class FrameRing {
  readonly sab: SharedArrayBuffer;
  readonly #h: Int32Array;
  readonly #data: Uint8Array;
  readonly #view: DataView;
  readonly capacity: number;

  /** A new ring of `capacity` bytes (a power of two), or the ring of an existing buffer. */
  constructor(from: number | SharedArrayBuffer) {
    if (typeof from === "number" && (from < 64 || (from & (from - 1)) !== 0)) {
      throw new Error(`A frame ring's capacity must be a power of two, got ${from}`);
    }
    this.sab = typeof from === "number" ? new SharedArrayBuffer(HEADER_BYTES + from) : from;
    this.#h = new Int32Array(this.sab, 0, HEADER_BYTES / 4);
    this.#data = new Uint8Array(this.sab, HEADER_BYTES);
    this.#view = new DataView(this.sab, HEADER_BYTES);
    this.capacity = this.#data.length;
  }

  /** Bytes held (records and padding). */
  get used(): number {
    return (Atomics.load(this.#h, HEAD) - Atomics.load(this.#h, TAIL)) >>> 0;
  }

  get closed(): boolean {
    return Atomics.load(this.#h, CLOSED) !== 0;
  }

  close(): void {
    Atomics.store(this.#h, CLOSED, 1);
  }

  get farBacklog(): number {
    return Atomics.load(this.#h, FAR_BACKLOG);
  }

  set farBacklog(n: number) {
    Atomics.store(this.#h, FAR_BACKLOG, Math.min(n, 0x7fff_ffff));
  }

  /** Producer: marks that it waits for room; consumer: takes the mark (true when it was set). */
  wantRoom(): void {
    Atomics.store(this.#h, WANT_ROOM, 1);
  }

  takeWantRoom(): boolean {
    return Atomics.exchange(this.#h, WANT_ROOM, 0) !== 0;
  }

  /** Producer: counts a frame it dropped (the ring and its own wait were full). */
  countDrop(): void {
    Atomics.add(this.#h, DROPPED, 1);
  }

  /** Consumer: the drops counted since it last asked. */
  takeDrops(): number {
    return Atomics.exchange(this.#h, DROPPED, 0);
  }

  /** Producer: true when the bell must be rung (the consumer has not been told since it last looked). */
  ring(): boolean {
    return Atomics.exchange(this.#h, RUNG, 1) === 0;
  }

  /** Consumer: about to look; a later push rings again. */
  answer(): void {
    Atomics.store(this.#h, RUNG, 0);
  }

  /** Producer: appends a copy of `frame`; false when it does not fit (the caller drops or waits). */
  push(frame: Uint8Array): boolean {
    const len = frame.length;
    const need = 4 + ((len + 3) & ~3);
    const head = Atomics.load(this.#h, HEAD) >>> 0;
    const tail = Atomics.load(this.#h, TAIL) >>> 0;
    const cap = this.capacity;
    const at = head % cap;
    // a record is never split: if it does not fit before the end, skip to the start
    const skip = cap - at < need ? cap - at : 0;
    if (need + skip > cap - ((head - tail) >>> 0)) return false;
    if (skip > 0) this.#view.setUint32(at, SKIP, true);
    const start = skip > 0 ? 0 : at;
    this.#view.setUint32(start, len, true);
    this.#data.set(frame, start + 4);
    Atomics.store(this.#h, HEAD, (head + skip + need) | 0);
    return true;
  }

  /**
   * Consumer: the next frame, as `cursor.off`/`cursor.len` into the ring's bytes (from
   * {@linkcode dataOffset} in `sab`; valid until {@linkcode release}); false when none is left. Frames are
   * taken in order; `release` frees every one taken so far.
   */
  next(cursor: RingCursor): boolean {
    const head = Atomics.load(this.#h, HEAD) >>> 0;
    let at = cursor.pos >>> 0;
    if (at === head) return false;
    const cap = this.capacity;
    let off = at % cap;
    let len = this.#view.getUint32(off, true);
    if (len === SKIP) {
      at = (at + cap - off) >>> 0;
      if (at === head) return false;
      off = 0;
      len = this.#view.getUint32(0, true);
    }
    cursor.pos = (at + 4 + ((len + 3) & ~3)) >>> 0;
    cursor.off = off + 4;
    cursor.len = len;
    return true;
  }

  /** Where the frames' bytes start in `sab`. */
  get dataOffset(): number {
    return HEADER_BYTES;
  }

  /** Consumer: frees every frame taken with `peek` up to `cursor`. */
  release(cursor: RingCursor): void {
    Atomics.store(this.#h, TAIL, cursor.pos | 0);
  }

  /** Consumer: where reading starts (after the frames already released). */
  cursor(): RingCursor {
    return { pos: Atomics.load(this.#h, TAIL) >>> 0, off: 0, len: 0 };
  }
}

/** The consumer's read position (frames peeked but not yet released lie between the tail and it). */
export interface RingCursor {
  pos: number;
  /** The last frame taken: its offset in the ring's bytes and its length. */
  off: number;
  len: number;
}
