/**
 * The rings a WebSocket guest's frames cross threads in (common/frame_ring.ts) and the worker's side of
 * them (transport/ring.ts), in one thread: order, wrap-around, a full ring, and the hand-shakes that keep a
 * full ring from losing frames — the wish for room answered by the bell, drops counted into the tenant's.
 */
import assert from "node:assert/strict";
import { FrameRing } from "../src/common/frame_ring.ts";
import { carryRing } from "../src/transport/ring.ts";
import type { LinkPeer } from "../src/transport/link.ts";

const frame = (n: number, len: number) => new Uint8Array(len).fill(n);

/** The worker's side of a frame guest's rings, reporting to a peer that does what `peer` says and no more. */
function ringCarrier(toWorker: FrameRing, toMain: FrameRing, ringBell: () => void, peer: Partial<LinkPeer>) {
  return carryRing(toWorker, toMain, {
    remote: "test",
    framing: "frame-per-message",
    backlogLimit: 1 << 20,
    ringBell,
  }, {
    opened: () => () => Promise.resolve(),
    closed: () => {},
    protocolError: () => {},
    dropped: () => {},
    drained: () => {},
    ...peer,
  });
}

Deno.test("FrameRing: frames come out in order as views, a record never splits at the end, a full ring refuses", () => {
  const r = new FrameRing(1024);
  const bytes = new Uint8Array(r.sab);
  const cursor = r.cursor();
  const out: number[][] = [];
  const drain = () => {
    while (r.next(cursor)) {
      const f = bytes.subarray(r.dataOffset + cursor.off, r.dataOffset + cursor.off + cursor.len);
      out.push([f[0], f.length]);
    }
    r.release(cursor);
  };
  let pushed = 0;
  while (r.push(frame(pushed, 300))) pushed++;
  assert.equal(pushed, 3, "three 304-byte records fit in 1024 bytes, a fourth does not");
  drain();
  // 912 bytes used so far: the next record does not fit before the end and skips to the start
  for (let i = 3; i < 6; i++) assert.ok(r.push(frame(i, 300)), `record ${i} after the wrap`);
  drain();
  assert.deepEqual(out, [0, 1, 2, 3, 4, 5].map((i) => [i, 300]));
  assert.equal(r.used, 0);
});

Deno.test("FrameRing: the wish for room, the bell and counted drops are each taken once", () => {
  const r = new FrameRing(256);
  assert.equal(r.takeWantRoom(), false);
  r.wantRoom();
  assert.equal(r.takeWantRoom(), true);
  assert.equal(r.takeWantRoom(), false);
  assert.equal(r.ring(), true, "the first push of a batch rings");
  assert.equal(r.ring(), false, "later ones do not, until the consumer looked");
  r.answer();
  assert.equal(r.ring(), true);
  r.countDrop();
  r.countDrop();
  assert.equal(r.takeDrops(), 2);
  assert.equal(r.takeDrops(), 0);
});

Deno.test("carryRing: after taking frames the worker rings the main thread's bell when it wished for room, and counts its drops as the tenant's", async () => {
  const toWorker = new FrameRing(1024), toMain = new FrameRing(1024);
  const fed: number[] = [];
  const dropped: string[] = [];
  let bells = 0;
  let release: () => void = () => {};
  const carrier = ringCarrier(toWorker, toMain, () => bells++, {
    // the scheduler takes each batch only when the test says so
    opened: () => (buf, offs, _lens, n) => {
      for (let i = 0; i < n; i++) fed.push(buf[offs[i]]);
      return new Promise<void>((r) => (release = r));
    },
    dropped: (reason) => dropped.push(reason),
  });
  // the main thread fills the ring, keeps the rest waiting and says so; one frame it had to drop
  let n = 0;
  while (toWorker.push(frame(n, 300))) n++;
  toWorker.wantRoom();
  toWorker.countDrop();
  carrier.service();
  assert.deepEqual(fed, [0, 1, 2], "the ring's frames went to the scheduler");
  assert.deepEqual(dropped, ["guest-ring-full"]);
  assert.equal(bells, 0, "no bell while the scheduler still holds the frames (the ring is still full)");
  release();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(bells, 1, "once freed, one bell for the waiting main thread");
  assert.equal(toWorker.used, 0);
  assert.ok(toWorker.push(frame(9, 300)), "room again");
  carrier.link.close();
});

Deno.test("carryRing: a backlog seen after 'drained' fired asks for the next drain (the bytes moved from the ring to the WebSocket's buffer between two looks)", () => {
  const toWorker = new FrameRing(1024), toMain = new FrameRing(4096);
  let drained = 0, bells = 0;
  const carrier = ringCarrier(toWorker, toMain, () => bells++, { drained: () => drained++ });
  assert.ok(carrier.link.send(frame(1, 1000)));
  // the main thread takes the frame and the wish, but stores what its WebSocket buffers only later
  toMain.answer();
  const cursor = toMain.cursor();
  assert.ok(toMain.next(cursor));
  toMain.release(cursor);
  assert.equal(toMain.takeWantRoom(), true);
  carrier.service();
  assert.equal(drained, 1, "nothing queued anywhere at that look: drained");
  toMain.farBacklog = 1000; // ...and now the bytes show up in the WebSocket's buffer
  bells = 0;
  assert.equal(carrier.link.backlog, 1000);
  assert.equal(toMain.takeWantRoom(), true, "a sender that saw the backlog will hear of its drain");
  assert.equal(bells, 1, "the main thread was told to look");
  toMain.farBacklog = 0;
  carrier.service();
  assert.equal(drained, 2);
  carrier.link.close();
});
