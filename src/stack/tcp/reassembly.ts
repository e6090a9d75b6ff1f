/**
 * Out-of-order data from the guest, held until the hole before it fills (RFC 9293 §3.10.7.4: segments
 * beyond RCV.NXT are kept "for later processing").
 *
 * As smoltcp does, out-of-order bytes are written straight into a ring indexed by sequence number, and a
 * small sorted list of received intervals (the "assembler") tracks what is there — no per-segment
 * copies or objects. The ring is allocated when the first hole appears and released when the last one
 * fills, so a connection without loss holds no reassembly memory. The intervals are also the SACK
 * blocks we report (RFC 2018 §4: the block holding the latest arrival first).
 *
 * @module
 */
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt, seqMax } from "./seq.ts";

export class Reassembly {
  #capacity: number;
  #mask: number;
  #ring: Uint8Array | null = null;
  /** Merged received intervals as [start, end) pairs, sorted by sequence. */
  #iv: number[] = [];
  #maxIntervals: number;
  #bytes = 0;
  /** Start of the interval that grew last, for SACK ordering. */
  #lastSeq = 0;

  /**
   * @param windowBytes the largest receive window advertised: data never lies further than this beyond
   *   RCV.NXT (rounded up to a power of two for the ring)
   */
  constructor(windowBytes: number, maxIntervals = 64) {
    let cap = 1;
    while (cap < windowBytes) cap *= 2;
    this.#capacity = cap;
    this.#mask = cap - 1;
    this.#maxIntervals = maxIntervals;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  get empty(): boolean {
    return this.#iv.length === 0;
  }

  /**
   * Stores `data` at `seq`, which lies after `rcvNxt` and within the window.
   * @returns false when it would need more intervals than allowed (the guest will retransmit it)
   */
  insert(rcvNxt: number, seq: number, data: Uint8Array): boolean {
    const end = seqAdd(seq, data.length);
    if (seqGt(end, seqAdd(rcvNxt, this.#capacity))) return false;
    // find where [seq, end) goes and which intervals it touches
    const iv = this.#iv;
    let i = 0;
    while (i < iv.length && seqLt(iv[i + 1], seq)) i += 2;
    let j = i;
    while (j < iv.length && seqLe(iv[j], end)) j += 2;
    // intervals i..j-2 overlap or touch the new data: merge them
    const touching = (j - i) / 2;
    if (touching === 0 && iv.length >= 2 * this.#maxIntervals) return false;
    this.#ring ??= new Uint8Array(this.#capacity);
    this.#write(seq, data);
    let start = seq, stop = end;
    let removed = 0;
    if (touching > 0) {
      if (seqLt(iv[i], start)) start = iv[i];
      stop = seqMax(stop, iv[j - 1]);
      for (let k = i; k < j; k += 2) removed += seqDiff(iv[k + 1], iv[k]);
    }
    iv.splice(i, j - i, start, stop);
    this.#bytes += seqDiff(stop, start) - removed;
    this.#lastSeq = start;
    return true;
  }

  #write(seq: number, data: Uint8Array): void {
    const ring = this.#ring!;
    const pos = seq & this.#mask;
    const first = Math.min(data.length, this.#capacity - pos);
    ring.set(data.subarray(0, first), pos);
    if (first < data.length) ring.set(data.subarray(first), 0);
  }

  /**
   * Hands contiguous data from `rcvNxt` on to `deliver` (views into the ring, valid during the call);
   * returns the new RCV.NXT.
   */
  drain(rcvNxt: number, deliver: (data: Uint8Array) => void): number {
    const iv = this.#iv;
    while (iv.length > 0 && seqLe(iv[0], rcvNxt)) {
      const end = iv[1];
      this.#bytes -= seqDiff(end, iv[0]);
      iv.splice(0, 2);
      if (seqLe(end, rcvNxt)) continue;
      const ring = this.#ring!;
      const pos = rcvNxt & this.#mask;
      const len = seqDiff(end, rcvNxt);
      const first = Math.min(len, this.#capacity - pos);
      deliver(ring.subarray(pos, pos + first));
      if (first < len) deliver(ring.subarray(0, len - first));
      rcvNxt = end;
    }
    if (iv.length === 0) this.#ring = null; // no hole left: give the memory back
    return rcvNxt;
  }

  /** Writes up to `max` SACK blocks as [left, right] pairs into `out`; returns how many. */
  sackBlocks(out: number[], max: number): number {
    const iv = this.#iv;
    let n = 0;
    let latest = -1;
    for (let k = 0; k < iv.length; k += 2) {
      if (seqGe(this.#lastSeq, iv[k]) && seqLt(this.#lastSeq, iv[k + 1])) latest = k;
    }
    if (latest >= 0) {
      out[0] = iv[latest];
      out[1] = iv[latest + 1];
      n = 1;
    }
    for (let k = 0; k < iv.length && n < max; k += 2) {
      if (k === latest) continue;
      out[2 * n] = iv[k];
      out[2 * n + 1] = iv[k + 1];
      n++;
    }
    return n;
  }

  clear(): void {
    this.#iv = [];
    this.#bytes = 0;
    this.#ring = null;
  }
}
