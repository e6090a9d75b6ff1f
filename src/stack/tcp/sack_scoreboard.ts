/**
 * The SACK scoreboard of one connection (RFC 2018, RFC 6675 §3): the ranges of our data the guest reported
 * holding, as sorted, merged [left, right) sequence pairs, bounded. Recovery asks it where the holes are.
 *
 * @module
 */
import type { TcpHeader } from "../../wire/tcp.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "./seq.ts";

/** Ranges kept (pairs): the lowest, which recovery needs first. */
const MAX_RANGES = 16;

export class SackScoreboard {
  /** [left, right) pairs, sorted, merged. */
  #ranges: number[] = [];

  get empty(): boolean {
    return this.#ranges.length === 0;
  }

  /** The right edge of the highest range (only when not empty). */
  get highest(): number {
    return this.#ranges[this.#ranges.length - 1];
  }

  /** Bytes inside the reported ranges. */
  get bytes(): number {
    let n = 0;
    for (let i = 0; i < this.#ranges.length; i += 2) n += seqDiff(this.#ranges[i + 1], this.#ranges[i]);
    return n;
  }

  /** Adds the SACK blocks of `seg` that lie inside [una, max): others may be stale or bogus (RFC 2018 §5). */
  record(seg: TcpHeader, una: number, max: number): void {
    const r = this.#ranges;
    for (let i = 0; i < seg.sackCount; i++) {
      const left = seg.sackBlocks[2 * i];
      const right = seg.sackBlocks[2 * i + 1];
      if (!seqLt(left, right) || seqLt(left, una) || seqGt(right, max)) continue;
      r.push(left, right);
    }
    const pairs: [number, number][] = [];
    for (let i = 0; i < r.length; i += 2) pairs.push([r[i], r[i + 1]]);
    pairs.sort((a, b) => (seqLt(a[0], b[0]) ? -1 : a[0] === b[0] ? 0 : 1));
    const merged: number[] = [];
    for (const [left, right] of pairs) {
      const n = merged.length;
      if (n > 0 && seqLe(left, merged[n - 1])) {
        if (seqGt(right, merged[n - 1])) merged[n - 1] = right;
      } else merged.push(left, right);
    }
    this.#ranges = merged.slice(0, 2 * MAX_RANGES);
  }

  /** Forgets what the cumulative ACK `una` now covers. */
  prune(una: number): void {
    if (this.#ranges.length === 0) return;
    const kept: number[] = [];
    for (let i = 0; i < this.#ranges.length; i += 2) {
      const l = this.#ranges[i], r = this.#ranges[i + 1];
      if (seqLe(r, una)) continue;
      kept.push(seqLt(l, una) ? una : l, r);
    }
    this.#ranges = kept;
  }

  /** The right edge of the range holding `seq`, or -1 when `seq` is not SACKed. */
  endOfRangeAt(seq: number): number {
    for (let i = 0; i < this.#ranges.length; i += 2) {
      if (seqGe(seq, this.#ranges[i]) && seqLt(seq, this.#ranges[i + 1])) return this.#ranges[i + 1];
    }
    return -1;
  }

  /** Shortens `len` so a segment from `seq` stops where SACKed data begins. */
  until(seq: number, len: number): number {
    for (let i = 0; i < this.#ranges.length; i += 2) {
      const l = this.#ranges[i];
      if (seqGt(l, seq) && seqLt(l, seqAdd(seq, len))) return seqDiff(l, seq);
    }
    return len;
  }

  clear(): void {
    this.#ranges = [];
  }
}
