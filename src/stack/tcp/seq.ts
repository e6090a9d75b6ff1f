/**
 * Wrap-safe 32-bit sequence number arithmetic (RFC 9293 §3.4: comparisons are modulo 2^32).
 * `seqLt(a, b)` is true when a precedes b by less than 2^31.
 *
 * @module
 */

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/** b - a as an unsigned distance, for a ≤ b. */
export function seqDiff(b: number, a: number): number {
  return (b - a) >>> 0;
}

/** a + n modulo 2^32. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** The larger of two sequence numbers. */
export function seqMax(a: number, b: number): number {
  return seqGt(a, b) ? a : b;
}
