/**
 * CPU per frame is bounded: DHCP option parsing is linear and capped, fragment reassembly refuses a storm
 * of tiny fragments, the scheduler ends a lane's turn when it takes too long, and frames over the MTU are
 * dropped at the tenant's edge.
 */
import assert from "node:assert/strict";
import { DHCP_MAX_OPTIONS, DHCP_MAX_PARSE_LEN, DhcpOption, dhcpOption, parseDhcp } from "../src/wire/dhcp.ts";
import { isWireError } from "../src/wire/bytes.ts";
import { FrameScheduler, LANE_TURN_MS } from "../src/relay/scheduler.ts";
import { fragmentFrames, ip, StackHarness } from "./_frames.ts";
import { IPPROTO_UDP } from "../src/wire/ipv4.ts";
import { MAX_FRAGMENTS } from "../src/stack/ip_reassembly.ts";

/** A BOOTREQUEST with the magic cookie and then `options` (raw bytes). */
function dhcpWith(options: number[]): Uint8Array {
  const m = new Uint8Array(240 + options.length);
  m[0] = 1;
  m[1] = 1;
  m[2] = 6;
  m.set([0x63, 0x82, 0x53, 0x63], 236);
  m.set(options, 240);
  return m;
}

Deno.test("DHCP parse: split options are joined in order (RFC 3396); too many options or bytes are refused", async (t) => {
  await t.step("200 instances of option 12 join into one value", () => {
    const opts: number[] = [];
    for (let i = 0; i < 200; i++) opts.push(DhcpOption.HOSTNAME, 2, i & 0xff, 0x41);
    opts.push(255);
    const m = parseDhcp(dhcpWith(opts), 0, 240 + opts.length);
    assert.ok(!isWireError(m));
    const v = dhcpOption(m, DhcpOption.HOSTNAME)!;
    assert.equal(v.length, 400);
    for (let i = 0; i < 200; i++) assert.deepEqual([v[2 * i], v[2 * i + 1]], [i & 0xff, 0x41]);
    assert.equal(m.options.length, 1);
  });
  await t.step(`more than ${DHCP_MAX_OPTIONS} instances are refused`, () => {
    const opts: number[] = [];
    for (let i = 0; i <= DHCP_MAX_OPTIONS; i++) opts.push(DhcpOption.HOSTNAME, 1, 0x41);
    const m = parseDhcp(dhcpWith(opts), 0, 240 + opts.length);
    assert.ok(isWireError(m));
    assert.match(m.reason, /More than 256 options/);
  });
  await t.step(`a message over ${DHCP_MAX_PARSE_LEN} bytes is refused`, () => {
    const big = dhcpWith(new Array(DHCP_MAX_PARSE_LEN).fill(0));
    const m = parseDhcp(big, 0, big.length);
    assert.ok(isWireError(m));
    assert.match(m.reason, /longer than 4096/);
  });
});

Deno.test("IPv4 reassembly: a datagram cut into more than 128 fragments is discarded, counted", () => {
  const h = new StackHarness();
  // 8-byte fragments of a 2 KB datagram: 256 fragments
  const frags = fragmentFrames(
    0x020000000001,
    ip("10.0.2.15"),
    ip("10.0.2.2"),
    IPPROTO_UDP,
    new Uint8Array(2048),
    28,
  );
  assert.ok(frags.length > MAX_FRAGMENTS);
  for (const f of frags) h.send(f);
  assert.equal(h.drops("ipv4-too-many-fragments"), 1);
  assert.equal(h.out.length, 0, "nothing was delivered from the storm");
  h.close();
});

Deno.test("scheduler: a lane whose frames are slow to handle yields to the others before its quantum is spent", async () => {
  const s = new FrameScheduler();
  const order: string[] = [];
  const busy = (ms: number) => {
    const end = performance.now() + ms;
    while (performance.now() < end) { /* a frame that costs CPU, not bytes */ }
  };
  const slow = s.open("slow", () => {
    busy(LANE_TURN_MS / 2);
    order.push("slow");
  });
  const quiet = s.open("quiet", () => order.push("quiet"));
  const buf = new Uint8Array(64 * 100);
  const offs = Array.from({ length: 100 }, (_, i) => i * 64);
  const lens = new Array(100).fill(64); // 6,400 bytes: well inside one 64 KiB quantum
  const a = s.submit(slow, buf, offs, lens, 100);
  const b = s.submit(quiet, buf, [0], [64], 1);
  await Promise.all([a, b]);
  const at = order.indexOf("quiet");
  assert.ok(at > 0 && at <= 16, `the quiet lane ran after ${at} slow frames`);
  assert.ok(slow.timeLimited >= 1);
});

Deno.test("scheduler: a pass of small, slow frames yields to I/O within its time bound, not its byte budget", async () => {
  const s = new FrameScheduler();
  let delivered = 0;
  const lane = s.open("syn-flood", () => {
    const end = performance.now() + 0.05; // a refused SYN costs µs, not bytes
    while (performance.now() < end) { /* busy */ }
    delivered++;
  });
  // 20,000 frames of 60 bytes: 1.2 MB, past the byte budget, and about a second of work
  const n = 20_000;
  const buf = new Uint8Array(60 * n);
  const offs = Array.from({ length: n }, (_, i) => i * 60);
  const lens = new Array(n).fill(60);
  let seenAtIo = -1;
  const done = s.submit(lane, buf, offs, lens, n);
  // what other guests' I/O would see: the first chance the event loop gets to run something else
  setTimeout(() => (seenAtIo = delivered), 0);
  await done;
  assert.equal(delivered, n);
  // a pass is bounded by PASS_TIME_MS (4 ms, ~80 of these frames); give it generous room for a slow runner
  assert.ok(seenAtIo >= 0 && seenAtIo < 2_000, `I/O first ran after ${seenAtIo} of ${n} frames`);
});
