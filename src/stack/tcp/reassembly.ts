/**
 * Out-of-order data from the guest, held until the hole before it fills (RFC 9293 §3.10.7.4: segments
 * beyond RCV.NXT are kept "for later processing").
 *
 * Held as a short sorted list of blocks, each the bytes of one received interval in a buffer of its own
 * that grows by doubling as segments extend it: memory follows the data actually held, not the window it
 * may lie in (a 1-byte segment at the far edge of a 1 MiB window costs a small block, not a 1 MiB ring),
 * and every buffer is charged to the tenant's {@linkcode MemoryBudget} for as long as it is held. Intervals that touch merge, so the list
 * stays within `maxIntervals`. The intervals are also the SACK blocks we report (RFC 2018 §4: the block
 * holding the latest arrival first).
 *
 * @module
 */
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "./seq.ts";
import type { MemoryBudget } from "../memory_budget.ts";

interface Block {
  start: number;
  end: number;
  /** The interval's bytes at [0, end - start); room to grow after them. */
  data: Uint8Array;
}

/** Smallest buffer of a block: most holes are filled by one or two segments. */
export const MIN_BLOCK = 2048;

export class Reassembly {
  #window: number;
  #blocks: Block[] = [];
  #maxIntervals: number;
  #bytes = 0;
  #budget: MemoryBudget | null;
  /** Start of the interval that grew last, for SACK ordering. */
  #lastSeq = 0;

  /**
   * @param windowBytes the largest receive window advertised: data never lies further than this beyond
   *   RCV.NXT
   * @param budget the tenant's memory budget, charged for every byte held
   */
  constructor(windowBytes: number, maxIntervals = 64, budget: MemoryBudget | null = null) {
    this.#window = windowBytes;
    this.#maxIntervals = maxIntervals;
    this.#budget = budget;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  get empty(): boolean {
    return this.#blocks.length === 0;
  }

  /**
   * Stores `data` at `seq`, which lies after `rcvNxt` and within the window.
   * @returns false when it would need more intervals than allowed or more memory than the tenant's budget
   *   has (the guest will retransmit it)
   */
  insert(rcvNxt: number, seq: number, data: Uint8Array): boolean {
    const end = seqAdd(seq, data.length);
    if (seqGt(end, seqAdd(rcvNxt, this.#window))) return false;
    const bl = this.#blocks;
    // blocks i..j-1 overlap or touch [seq, end)
    let i = 0;
    while (i < bl.length && seqLt(bl[i].end, seq)) i++;
    let j = i;
    while (j < bl.length && seqLe(bl[j].start, end)) j++;
    const touching = j - i;
    if (touching === 0 && bl.length >= this.#maxIntervals) return false;
    const start = touching > 0 && seqLt(bl[i].start, seq) ? bl[i].start : seq;
    const stop = touching > 0 && seqGt(bl[j - 1].end, end) ? bl[j - 1].end : end;
    const len = seqDiff(stop, start);
    let had = 0;
    for (let k = i; k < j; k++) had += seqDiff(bl[k].end, bl[k].start);
    const added = len - had;
    // reuse the first block's buffer when it starts the merged interval and has room; else grow by doubling
    let target: Uint8Array;
    if (touching > 0 && bl[i].start === start && bl[i].data.length >= len) target = bl[i].data;
    else {
      const old = touching > 0 ? bl[i].data.length : 0;
      const size = Math.max(len, MIN_BLOCK, Math.min(2 * old, this.#window));
      if (this.#budget && !this.#budget.tryCharge(size)) return false;
      target = new Uint8Array(size);
      if (touching > 0) {
        const b = bl[i];
        target.set(b.data.subarray(0, seqDiff(b.end, b.start)), seqDiff(b.start, start));
      }
    }
    for (let k = i + 1; k < j; k++) {
      const b = bl[k];
      target.set(b.data.subarray(0, seqDiff(b.end, b.start)), seqDiff(b.start, start));
    }
    target.set(data, seqDiff(seq, start));
    // the merged blocks' own buffers are let go
    for (let k = i; k < j; k++) if (bl[k].data !== target) this.#budget?.credit(bl[k].data.length);
    bl.splice(i, touching, { start, end: stop, data: target });
    this.#bytes += added;
    this.#lastSeq = start;
    return true;
  }

  /**
   * Hands contiguous data from `rcvNxt` on to `deliver` (views valid during the call); returns the new
   * RCV.NXT.
   */
  drain(rcvNxt: number, deliver: (data: Uint8Array) => void): number {
    const bl = this.#blocks;
    while (bl.length > 0 && seqLe(bl[0].start, rcvNxt)) {
      const b = bl.shift()!;
      const len = seqDiff(b.end, b.start);
      this.#bytes -= len;
      this.#budget?.credit(b.data.length);
      if (seqLe(b.end, rcvNxt)) continue;
      deliver(b.data.subarray(seqDiff(rcvNxt, b.start), len));
      rcvNxt = b.end;
    }
    return rcvNxt;
  }

  /** Writes up to `max` SACK blocks as [left, right] pairs into `out`; returns how many. */
  sackBlocks(out: number[], max: number): number {
    const bl = this.#blocks;
    let n = 0;
    let latest = -1;
    for (let k = 0; k < bl.length; k++) {
      if (seqGe(this.#lastSeq, bl[k].start) && seqLt(this.#lastSeq, bl[k].end)) latest = k;
    }
    if (latest >= 0) {
      out[0] = bl[latest].start;
      out[1] = bl[latest].end;
      n = 1;
    }
    for (let k = 0; k < bl.length && n < max; k++) {
      if (k === latest) continue;
      out[2 * n] = bl[k].start;
      out[2 * n + 1] = bl[k].end;
      n++;
    }
    return n;
  }

  clear(): void {
    for (const b of this.#blocks) this.#budget?.credit(b.data.length);
    this.#blocks = [];
    this.#bytes = 0;
  }
}
