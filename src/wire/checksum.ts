/**
 * Internet checksum (RFC 1071), pseudo-headers (RFC 768, RFC 9293 §3.1, RFC 8200 §8.1) and
 * incremental update (RFC 1624).
 *
 * `checksumSum` dispatches by size to the variant that won `bench/checksum_bench.ts` on this runtime;
 * see bench/RESULTS.md for the figures behind the choice.
 *
 * @module
 */

import { fold, frameScratch, sumBytesUnrolled, sumWasmSimd } from "./checksum_variants.ts";

export { fold, frameScratch };

/**
 * Below this many bytes the unrolled byte loop wins (no call into WebAssembly, no copy); at or above it,
 * WebAssembly SIMD wins even though it first copies the bytes into its memory (bench/RESULTS.md).
 */
export const WASM_THRESHOLD = 256;

/**
 * One's-complement sum of `buf[off, off+len)` as big-endian 16-bit words, folded to 16 bits, plus `initial`.
 * Not complemented: chain sums by passing one as the next one's `initial`.
 *
 * @param buf bytes to sum
 * @param off first byte
 * @param len byte count (odd allowed: the last byte is padded with a zero, RFC 1071 §4.1)
 * @param initial a previous partial sum (e.g. a pseudo-header), at most 32 bits
 * @returns the folded 16-bit sum
 */
export function checksumSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return len < WASM_THRESHOLD
    ? sumBytesUnrolled(buf, off, len, initial)
    : sumWasmSimd(buf, off, len, initial);
}

/**
 * The Internet checksum to place in a header: complement of the sum (RFC 1071).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { internetChecksum } from "./checksum.ts";
 * // RFC 1071 §3 example bytes
 * const b = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
 * assert.equal(internetChecksum(b, 0, 8), (~0xddf2) & 0xffff);
 * ```
 */
export function internetChecksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~checksumSum(buf, off, len, initial) & 0xffff;
}

/** Partial sum of the IPv4 pseudo-header (RFC 768; RFC 9293 §3.1): src, dst, zero, protocol, length. */
export function pseudoHeaderSumV4(src: number, dst: number, protocol: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length;
}

/** Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1): 16-byte addresses at the given offsets. */
export function pseudoHeaderSumV6(
  src: Uint8Array,
  srcOff: number,
  dst: Uint8Array,
  dstOff: number,
  nextHeader: number,
  length: number,
): number {
  let s = nextHeader + (length >>> 16) + (length & 0xffff);
  for (let i = 0; i < 16; i += 2) {
    s += ((src[srcOff + i] << 8) | src[srcOff + i + 1]) + ((dst[dstOff + i] << 8) | dst[dstOff + i + 1]);
  }
  return s;
}

/**
 * RFC 1624 eqn. 3 incremental update: the new checksum after one 16-bit field changes from `oldWord`
 * to `newWord`, without touching the rest of the data. HC' = ~(~HC + ~m + m').
 */
export function checksumUpdate16(oldChecksum: number, oldWord: number, newWord: number): number {
  return ~fold((~oldChecksum & 0xffff) + (~oldWord & 0xffff) + newWord) & 0xffff;
}

/** RFC 1624 update for a 32-bit field (an IPv4 address or a sequence number): two 16-bit updates. */
export function checksumUpdate32(oldChecksum: number, oldValue: number, newValue: number): number {
  return ~fold(
    (~oldChecksum & 0xffff) + (~(oldValue >>> 16) & 0xffff) + (~oldValue & 0xffff) + (newValue >>> 16) +
      (newValue & 0xffff),
  ) & 0xffff;
}
