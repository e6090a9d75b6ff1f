import assert from "node:assert/strict";
import { fold, SUM_VARIANTS, sumNaive } from "./checksum_variants.ts";
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

Deno.test("fold is the end-around-carry fold of RFC 1071 §2(B) for sums below 2^32 and beyond", () => {
  // the reference: add the carries back one at a time
  const reference = (s: number) => {
    while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
    return s;
  };
  const next = rng(0xf01d);
  const edges = [
    0,
    1,
    0xfffe,
    0xffff,
    0x10000,
    0x1fffe,
    0x1ffff,
    0xfffeffff,
    0xffff0000,
    0xffffffff,
    2 ** 32,
  ];
  const randoms = Array.from(
    { length: 2000 },
    (_, i) => i % 2 ? next() >>> 0 : (next() >>> 0) * 2 ** 21 + next(),
  );
  for (const s of [...edges, 2 ** 53 - 1, ...randoms]) assert.equal(fold(s), reference(s), `fold(${s})`);
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

Deno.test("a frame built in the wasm scratch is summed where it is, as the reference sums it; sums larger than the copy region go through it in pieces and leave the scratch intact", async () => {
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
  for (const len of [131_072, 131_073, 200_000, 300_001]) {
    const huge = new Uint8Array(len + 3).map((_, i) => (i * 31) & 0xff);
    assert.equal(sumWasmSimd(huge, 3, len, 7), sumNaive(huge, 3, len, 7), `simd len ${len}`);
    assert.equal(sumWasmScalar(huge, 1, len, 0), sumNaive(huge, 1, len, 0), `scalar len ${len}`);
  }
  assert.equal(scratch.length, 66_000, "the memory never grew: the scratch's view is still attached");
  assert.deepEqual(scratch, kept, "the scratch's bytes survive");
  assert.throws(() => frameScratch(200_000), RangeError);
});

Deno.test("receive blocks: zeroed when taken, summed in place as the reference sums them, a bounded set given back and taken again", async () => {
  const { takeReceiveBlock, returnReceiveBlock, isReceiveBlock, sumWasmSimd, RECEIVE_BLOCK_BYTES } =
    await import("./checksum_variants.ts");
  const next = rng(0xb10c);
  const taken: Uint8Array[] = [];
  for (let b = takeReceiveBlock(); b !== null; b = takeReceiveBlock()) taken.push(b);
  assert.ok(taken.length >= 8 && taken.length <= 64, `a bounded set per thread (${taken.length})`);
  const starts = new Set(taken.map((b) => b.byteOffset));
  assert.equal(starts.size, taken.length, "no two blocks share bytes");
  for (const b of taken) {
    assert.equal(b.length, RECEIVE_BLOCK_BYTES);
    assert.ok(isReceiveBlock(b));
  }
  const first = taken[0];
  for (let i = 0; i < first.length; i++) first[i] = next() & 0xff;
  for (let round = 0; round < 100; round++) {
    const off = next() % 4096;
    const len = next() % 1600;
    assert.equal(
      sumWasmSimd(first, off, len, 5),
      sumNaive(first, off, len, 5),
      `in place off ${off} len ${len}`,
    );
  }
  assert.ok(!isReceiveBlock(first.subarray(1)) && !isReceiveBlock(new Uint8Array(RECEIVE_BLOCK_BYTES)));
  returnReceiveBlock(first);
  assert.throws(() => returnReceiveBlock(first), /twice/);
  const again = takeReceiveBlock();
  assert.ok(again !== null && again.byteOffset === first.byteOffset, "the block given back is taken again");
  assert.ok(again.every((x) => x === 0), "and holds none of its last holder's bytes");
  for (const b of [again, ...taken.slice(1)]) returnReceiveBlock(b);
});
