/**
 * Competing implementations of the RFC 1071 one's-complement sum, kept side by side so that
 * `bench/checksum_bench.ts` can measure them and `checksum_variants_test.ts` can hold each one to the naive
 * reference. `checksum.ts` picks the winner per size class.
 *
 * Every variant has the same contract: `sum(buf, off, len, initial)` returns the 16-bit folded
 * (not complemented) one's-complement sum of `buf[off, off+len)` read as big-endian 16-bit words
 * (an odd final byte is padded with a zero low byte, RFC 1071 §4.1), plus `initial` (a partial sum, at
 * most 32 bits, e.g. a pseudo-header).
 *
 * @module
 */

import { CHECKSUM_WASM_BASE64 } from "./wasm/checksum_wasm.ts";
import { ViewCache } from "./bytes.ts";

/** Folds a non-negative integer (< 2^53) to 16 bits with end-around carry. */
export function fold(s: number): number {
  // Up to 32 bits (every per-frame sum): two end-around-carry steps, no division
  if (s <= 0xffffffff) {
    s = (s >>> 16) + (s & 0xffff);
    return (s >>> 16) + (s & 0xffff);
  }
  // x mod 0xffff equals the end-around-carry fold, except that a non-zero multiple folds to 0xffff.
  return ((s - 1) % 0xffff) + 1;
}

/** Reference: one byte pair at a time, folding each step. Obviously correct, slow. */
export function sumNaive(b: Uint8Array, off: number, len: number, initial = 0): number {
  let s = fold(initial);
  const end = off + len;
  for (let i = off; i < end; i += 2) {
    const w = (b[i] << 8) | (i + 1 < end ? b[i + 1] : 0);
    s += w;
    if (s > 0xffff) s = (s & 0xffff) + 1;
  }
  return s;
}

/** DataView, 16 bits per step, one fold at the end. */
export function sumDataView16(b: Uint8Array, off: number, len: number, initial = 0): number {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let s = initial;
  let i = off;
  const last = off + len - 1;
  for (; i < last; i += 2) s += dv.getUint16(i);
  if (i === last) s += b[i] << 8;
  return fold(s);
}

/** Plain byte reads, 16 bytes per step unrolled; no views, no allocation. */
export function sumBytesUnrolled(b: Uint8Array, off: number, len: number, initial = 0): number {
  let s = initial;
  let i = off;
  const end = off + len;
  const end16 = end - 15;
  for (; i < end16; i += 16) {
    s += ((b[i] << 8) | b[i + 1]) + ((b[i + 2] << 8) | b[i + 3]) + ((b[i + 4] << 8) | b[i + 5]) +
      ((b[i + 6] << 8) | b[i + 7]) + ((b[i + 8] << 8) | b[i + 9]) + ((b[i + 10] << 8) | b[i + 11]) +
      ((b[i + 12] << 8) | b[i + 13]) + ((b[i + 14] << 8) | b[i + 15]);
  }
  for (; i < end - 1; i += 2) s += (b[i] << 8) | b[i + 1];
  if (i < end) s += b[i] << 8;
  return fold(s);
}

let cachedBuffer: ArrayBufferLike | null = null;
let cachedWords: Uint32Array = new Uint32Array(0);

/** A Uint32Array over the whole backing buffer, cached so that repeated sums over one ring allocate nothing. */
function wordsOf(buffer: ArrayBufferLike): Uint32Array {
  if (buffer !== cachedBuffer || cachedWords.length !== buffer.byteLength >>> 2) {
    cachedBuffer = buffer;
    cachedWords = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
  }
  return cachedWords;
}

function swap16(x: number): number {
  return ((x >>> 8) | (x << 8)) & 0xffff;
}

/**
 * 32-bit words through an aligned Uint32Array in host (little-endian) order, summed in a float64 with
 * a single deferred fold; the result is swapped back (RFC 1071 §2(B): the sum is byte-order independent).
 * Unaligned head and tail bytes are summed by position parity.
 */
export function sumWord32(b: Uint8Array, off: number, len: number, initial = 0): number {
  if (len < 32) return sumBytesUnrolled(b, off, len, initial);
  const abs = b.byteOffset + off;
  const head = (4 - (abs & 3)) & 3;
  let s = initial;
  // head bytes: position parity relative to the start decides high or low byte
  for (let k = 0; k < head; k++) s += (k & 1) === 0 ? b[off + k] << 8 : b[off + k];
  const words = wordsOf(b.buffer);
  const first = (abs + head) >>> 2;
  const n = (len - head) >>> 2;
  let le = 0;
  let w = first;
  const stop = first + n;
  const stop4 = stop - 3;
  for (; w < stop4; w += 4) le += words[w] + words[w + 1] + words[w + 2] + words[w + 3];
  for (; w < stop; w++) le += words[w];
  // a word x = lo + hi*65536 and 65536 ≡ 1 (mod 0xffff), so folding the plain sum is exact
  const mid = swap16(fold(le));
  s += (head & 1) === 0 ? mid : swap16(mid);
  for (let k = head + n * 4; k < len; k++) s += (k & 1) === 0 ? b[off + k] << 8 : b[off + k];
  return fold(s);
}

interface ChecksumWasm {
  memory: WebAssembly.Memory;
  sum_scalar(p: number, n: number): number;
  sum_simd(p: number, n: number): number;
}

let wasm: ChecksumWasm | null = null;
/** The module's memory (never grown after instantiation, so it stays the same buffer). */
let wasmBuffer: ArrayBuffer | null = null;
let wasmBytes: Uint8Array = new Uint8Array(0);
const inputView = new ViewCache();

/**
 * The module's memory, sized once when it is instantiated and never grown after (a growth would detach
 * every view of it handed out):
 *   [0, COPY_REGION)            bytes copied in for a sum
 *   [COPY_REGION, BLOCKS_AT)    the frame scratch (see frameScratch)
 *   [BLOCKS_AT, end)            receive blocks (see takeReceiveBlock)
 * The pages are the kernel's zero pages until first written: an idle thread holds none of it.
 */
const COPY_REGION = 128 * 1024;
/** Room for the largest frame toward a guest (14 + 65520 + slack) with margin. */
const SCRATCH_MAX = 128 * 1024;
const BLOCKS_AT = COPY_REGION + SCRATCH_MAX;
/** The size of a receive block: a guest link's largest receive buffer (stream.ts). */
export const RECEIVE_BLOCK_BYTES = 256 * 1024;
/** Receive blocks per thread (8 MiB): the busiest guests of a worker; the others copy for their sums. */
const RECEIVE_BLOCKS = 32;
const MEMORY_BYTES = BLOCKS_AT + RECEIVE_BLOCKS * RECEIVE_BLOCK_BYTES;

/** Instantiates the WebAssembly module once (synchronously: it is 525 bytes). */
export function checksumWasm(): ChecksumWasm {
  if (wasm === null) {
    const bin = Uint8Array.from(atob(CHECKSUM_WASM_BASE64), (c) => c.charCodeAt(0));
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bin));
    const m = inst.exports as unknown as ChecksumWasm;
    const have = m.memory.buffer.byteLength;
    if (have < MEMORY_BYTES) m.memory.grow(Math.ceil((MEMORY_BYTES - have) / 65536));
    wasm = m;
    // the module's memory is not shared (no `shared` flag in its definition)
    wasmBuffer = m.memory.buffer as ArrayBuffer;
    wasmBytes = new Uint8Array(wasmBuffer);
  }
  return wasm;
}

/**
 * A buffer inside the checksum module's memory, for building outgoing frames: sums over it need no copy
 * (at 64 KiB frames that copy was a third of the relay's memmove). One per thread, at most SCRATCH_MAX
 * bytes; every call returns a view of the same bytes.
 */
export function frameScratch(size: number): Uint8Array {
  if (size > SCRATCH_MAX) throw new RangeError(`frame scratch of ${size} bytes (at most ${SCRATCH_MAX})`);
  return new Uint8Array(checksumWasm().memory.buffer, COPY_REGION, size);
}

/** Free receive blocks, by index (null until the first is asked for). */
let freeBlocks: number[] | null = null;

/**
 * A receive buffer of {@linkcode RECEIVE_BLOCK_BYTES} inside the checksum module's memory, or null when
 * this thread's blocks are all taken. What a guest link reads into it is summed where it landed: no copy
 * into the module for each received segment's checksum (at MTU 1500, guest→host, that copy and its view
 * were ~6 % of the worker's time). Zeroed: nothing of its last holder's bytes. Give it back with
 * {@linkcode returnReceiveBlock} when the link is done with it.
 */
export function takeReceiveBlock(): Uint8Array<ArrayBuffer> | null {
  const m = checksumWasm();
  freeBlocks ??= Array.from({ length: RECEIVE_BLOCKS }, (_, i) => RECEIVE_BLOCKS - 1 - i);
  const i = freeBlocks.pop();
  if (i === undefined) return null;
  // the module's memory is not shared (no `shared` flag in its definition)
  const buffer = m.memory.buffer as ArrayBuffer;
  return new Uint8Array(buffer, BLOCKS_AT + i * RECEIVE_BLOCK_BYTES, RECEIVE_BLOCK_BYTES).fill(0);
}

/** Whether `b` is a block of {@linkcode takeReceiveBlock} (a view of all of one). */
export function isReceiveBlock(b: Uint8Array): boolean {
  return wasm !== null && b.buffer === wasmBuffer && b.byteOffset >= BLOCKS_AT &&
    b.byteLength === RECEIVE_BLOCK_BYTES && (b.byteOffset - BLOCKS_AT) % RECEIVE_BLOCK_BYTES === 0;
}

/** Gives a block of {@linkcode takeReceiveBlock} back; the caller keeps no view of it. */
export function returnReceiveBlock(b: Uint8Array): void {
  if (!isReceiveBlock(b)) throw new RangeError("not a receive block");
  const i = (b.byteOffset - BLOCKS_AT) / RECEIVE_BLOCK_BYTES;
  if (freeBlocks!.includes(i)) throw new Error("receive block given back twice");
  freeBlocks!.push(i);
}

function wasmSum(
  fn: "sum_scalar" | "sum_simd",
  b: Uint8Array,
  off: number,
  len: number,
  initial: number,
): number {
  const m = checksumWasm();
  // a frame built in the scratch, or received into a block, is summed where it is (the cached buffer: the
  // `memory.buffer` getter is a call into the runtime)
  if (b.buffer === wasmBuffer) return fold(m[fn](b.byteOffset + off, len) + initial);
  // The copy is the honest cost of WebAssembly here: these bytes live in JS memory. More than the copy
  // region (larger than any IP packet) goes in region-sized pieces: even-sized, so the words line up.
  let s = initial;
  for (let at = 0; at < len; at += COPY_REGION) {
    const n = Math.min(COPY_REGION, len - at);
    wasmBytes.set(inputView.view(b, off + at, off + at + n), 0);
    s += m[fn](0, n);
  }
  return fold(s);
}

/** WebAssembly scalar, 8 bytes per step (includes copying the input into wasm memory). */
export function sumWasmScalar(b: Uint8Array, off: number, len: number, initial = 0): number {
  return wasmSum("sum_scalar", b, off, len, initial);
}

/** WebAssembly SIMD, 32 bytes per step (includes copying the input into wasm memory). */
export function sumWasmSimd(b: Uint8Array, off: number, len: number, initial = 0): number {
  return wasmSum("sum_simd", b, off, len, initial);
}

/** Every variant by name, for the property test and the benchmark. */
export const SUM_VARIANTS: Record<
  string,
  (b: Uint8Array, off: number, len: number, initial?: number) => number
> = {
  naive: sumNaive,
  dataView16: sumDataView16,
  bytesUnrolled: sumBytesUnrolled,
  word32: sumWord32,
  wasmScalar: sumWasmScalar,
  wasmSimd: sumWasmSimd,
};
