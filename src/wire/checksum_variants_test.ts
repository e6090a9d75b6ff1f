import assert from "node:assert/strict";
import { SUM_VARIANTS, sumNaive } from "./checksum_variants.ts";
import { rng } from "../../tests/_rng.ts";

Deno.test("every checksum variant equals the naive reference on random lengths, offsets and alignments", () => {
  const seed = Date.now() >>> 0;
  const next = rng(seed);
  const backing = new Uint8Array(70_000 + 16);
  for (let i = 0; i < backing.length; i++) backing[i] = next() & 0xff;
  for (let round = 0; round < 400; round++) {
    // a subarray at a random byte offset exercises the aligned/unaligned paths of word32
    const base = next() % 16;
    const view = backing.subarray(base);
    const len = round < 80 ? round : next() % (round % 10 === 0 ? 66_000 : 1600);
    const off = next() % 8;
    const initial = next() % 0x2_0000;
    const want = sumNaive(view, off, len, initial);
    for (const [name, fn] of Object.entries(SUM_VARIANTS)) {
      assert.equal(
        fn(view, off, len, initial),
        want,
        `${name} len=${len} off=${off} base=${base} seed=${seed}`,
      );
    }
  }
});

Deno.test("every checksum variant handles all-0xff input without carry loss", () => {
  for (const len of [1, 2, 3, 31, 32, 33, 1500, 65535, 65536]) {
    const b = new Uint8Array(len).fill(0xff);
    const want = sumNaive(b, 0, len);
    for (const [name, fn] of Object.entries(SUM_VARIANTS)) {
      assert.equal(fn(b, 0, len), want, `${name} len=${len}`);
    }
  }
});

Deno.test("a frame built in the wasm scratch is summed where it is, as the reference sums it; sums larger than any packet go above it and leave it intact", async () => {
  const { frameScratch, sumWasmSimd, sumWasmScalar } = await import("./checksum_variants.ts");
  const next = rng(0x5c7a7c);
  const scratch = frameScratch(66_000);
  for (let i = 0; i < scratch.length; i++) scratch[i] = next() & 0xff;
  const kept = scratch.slice();
  for (let round = 0; round < 200; round++) {
    const off = next() % 64;
    const len = next() % (round % 10 === 0 ? 65_000 : 1600);
    const initial = next() % 0x2_0000;
    const want = sumNaive(scratch, off, len, initial);
    assert.equal(sumWasmSimd(scratch, off, len, initial), want, `simd off ${off} len ${len}`);
    assert.equal(sumWasmScalar(scratch, off, len, initial), want, `scalar off ${off} len ${len}`);
  }
  // a copy past the copy region grows the memory: the scratch's old view detaches, a new one has the bytes
  const huge = new Uint8Array(200_000).map((_, i) => (i * 31) & 0xff);
  assert.equal(sumWasmSimd(huge, 0, huge.length, 0), sumNaive(huge, 0, huge.length, 0));
  const again = scratch.length === 0 ? frameScratch(66_000) : scratch;
  assert.deepEqual(again, kept, "the scratch's bytes survive");
});
