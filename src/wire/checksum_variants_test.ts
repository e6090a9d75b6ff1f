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
