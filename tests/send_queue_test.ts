import assert from "node:assert/strict";
import { SendQueue } from "../src/stack/tcp/send_queue.ts";
import { rng } from "./_rng.ts";

Deno.test("send queue ring: reads into free space, pushes, acks and segment copies match a plain byte list", () => {
  for (let seed = 1; seed <= 20; seed++) {
    const r = rng(seed);
    const q = new SendQueue();
    q.frameRoomWanted = 4000;
    let model: number[] = [];
    let next = 0;
    for (let step = 0; step < 200; step++) {
      const op = r() % 4;
      if (op === 0) {
        // a host read straight into the ring, possibly shorter than the room offered
        const room = q.writable(1 + (r() % 20_000));
        const n = room.length === 0 ? 0 : r() % (room.length + 1);
        for (let i = 0; i < n; i++) room[i] = next++ & 0xff;
        q.commit(n);
        for (let i = 0; i < n; i++) model.push((next - n + i) & 0xff);
      } else if (op === 1) {
        const data = Uint8Array.from({ length: r() % 5000 }, () => next++ & 0xff);
        q.push(data);
        model.push(...data);
      } else if (op === 2) {
        const n = r() % (model.length + 1);
        q.consume(n);
        model = model.slice(n);
      } else {
        const off = model.length === 0 ? 0 : r() % model.length;
        const len = r() % 3000;
        const want = model.slice(off, off + len);
        const dst = new Uint8Array(len + 7);
        const copied = q.copyOut(off, len, dst, 7);
        assert.equal(copied, want.length, `seed ${seed} step ${step}`);
        assert.deepEqual([...dst.subarray(7, 7 + copied)], want, `seed ${seed} step ${step}`);
        // the same bytes into the frame area next to the ring, when it has room
        const area = q.frameArea(len + 7);
        if (area) {
          const n = q.copyToFrame(off, len, area.off + 7);
          assert.equal(n, want.length, `seed ${seed} step ${step}`);
          assert.deepEqual(
            [...area.buf.subarray(area.off + 7, area.off + 7 + n)],
            want,
            `frame area, seed ${seed}`,
          );
        }
      }
      assert.equal(q.length, model.length, `seed ${seed} step ${step}`);
    }
    q.clear();
    assert.equal(q.length, 0);
    assert.equal(q.capacity, 0);
  }
});

Deno.test("send queue ring: a ring let go is reused by the thread's next flow, cleared of the last flow's bytes", () => {
  const a = new SendQueue();
  a.frameRoomWanted = 1514;
  const room = a.writable(16 * 1024);
  room.fill(0x5a);
  a.commit(room.length);
  const memory = room.buffer;
  a.clear();
  const b = new SendQueue();
  b.frameRoomWanted = 1514;
  const next = b.writable(16 * 1024);
  assert.equal(next.buffer, memory, "the same memory, not a new allocation");
  assert.ok(next.every((x) => x === 0), "no byte of the previous flow (maybe another tenant's) is left");
  const area = b.frameArea(1514)!;
  assert.ok(area.buf.every((x) => x === 0));
});
