/**
 * The containment boundary: a throw inside a tenant's code (a frame, a host callback, a timer) resets a
 * flow or that tenant's stack, is counted, and never escapes; replies larger than the MTU are fragmented
 * instead of written past the transmit buffer.
 */
import assert from "node:assert/strict";
import { fragmentFrames, GW_MAC, icmpEchoMessage, ip, reassembleFrom, StackHarness } from "./_frames.ts";
import { IPPROTO_ICMP } from "../src/wire/ipv4.ts";
import { ICMP_ECHO_REPLY, parseIcmpV4 } from "../src/wire/icmpv4.ts";
import { isWireError } from "../src/wire/bytes.ts";
import { ContainedHost, type FaultOwner } from "../src/stack/containment.ts";
import { Timer, TimerWheel } from "../src/stack/timer_wheel.ts";
import type { HostNet, TcpHandlers, UdpHandlers } from "../src/host/host.ts";
import { Stack } from "../src/stack/stack.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { NodeHost } from "../src/host/node_host.ts";
import { udpFrame } from "./_frames.ts";

const MAC = 0x020000000009;
const GUEST = ip("10.0.2.15");

for (const size of [1473, 1601, 9000, 65507 - 8]) {
  Deno.test(`ICMP: a fragmented ${size}-byte echo to the gateway is answered in fragments within the MTU`, () => {
    const h = new StackHarness();
    const data = new Uint8Array(size).map((_, i) => (i * 7 + 3) & 0xff);
    for (
      const f of fragmentFrames(MAC, GUEST, ip("10.0.2.2"), IPPROTO_ICMP, icmpEchoMessage(0x77, 1, data))
    ) {
      h.send(f);
    }
    assert.equal(h.stack.counters.faults, 0);
    const ids = new Set(h.out.filter((d) => d.ip?.protocol === IPPROTO_ICMP).map((d) => d.ip!.id));
    assert.equal(ids.size, 1, "one reply datagram");
    const l4 = reassembleFrom(h.raw, [...ids][0], 1500);
    assert.ok(l4, "every fragment of the reply arrived");
    const m = parseIcmpV4(l4, 0, l4.length);
    assert.ok(!isWireError(m), "the reassembled reply's ICMP checksum is valid");
    assert.equal(m.type, ICMP_ECHO_REPLY);
    assert.equal(m.id, 0x77);
    assert.deepEqual(l4.subarray(8), data);
    for (const raw of h.raw) assert.ok(raw.length <= 1514, `frame of ${raw.length} bytes exceeds the MTU`);
    h.close();
  });
}

Deno.test("containment: a throw while handling a frame faults only that stack; it closes, counts and tells its tenant", () => {
  const wheel = new TimerWheel(0);
  const faults: string[] = [];
  const make = () =>
    new Stack(defaultStackConfig(), {
      host: new NodeHost(),
      wheel,
      output: () => {},
      onFault: (_e, where) => faults.push(where),
    });
  const broken = make();
  const healthy = make();
  // a bug in one service, reached by an ordinary DNS query
  (broken.dns as unknown as { input: () => void }).input = () => {
    throw new RangeError("offset is out of bounds");
  };
  const q = new Uint8Array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 97, 0, 0, 1, 0, 1]);
  const frame = udpFrame(MAC, GUEST, ip("10.0.2.3"), 40000, 53, q, GW_MAC);
  broken.input(frame); // must not throw
  assert.equal(broken.counters.faults, 1);
  assert.equal(broken.counters.drops.get("fault-tenant-reset"), 1);
  assert.ok(broken.closed, "the faulted stack closed itself");
  assert.deepEqual(faults, ["frame"]);
  broken.input(frame); // a closed stack ignores frames
  assert.equal(broken.counters.faults, 1);
  assert.ok(!healthy.closed);
  healthy.close();
});

Deno.test("containment: host callbacks run inside the boundary; a handler that owns its faults absorbs its own", () => {
  const captured: { tcp: TcpHandlers[]; udp: UdpHandlers[] } = { tcp: [], udp: [] };
  const fake = {
    now: () => 0,
    openUdp: (h: UdpHandlers) => (captured.udp.push(h), { sendTo() {}, close() {} }),
    connectTcp: (_a: string, _p: number, h: TcpHandlers) => (captured.tcp.push(h), {}),
    icmpEcho: () => null,
    systemResolvers: () => [],
  } as unknown as HostNet;
  const stackFaults: string[] = [];
  const owner: FaultOwner = { onFault: (_e, where) => stackFaults.push(where) };
  const host = new ContainedHost(fake, owner);
  const boom = () => {
    throw new Error("boom");
  };
  host.openUdp({ onMessage: boom, onError: boom });
  captured.udp[0].onMessage(new Uint8Array(1), "127.0.0.1", 1);
  captured.udp[0].onError("EHOSTUNREACH");
  assert.deepEqual(stackFaults, ["udp.onMessage", "udp.onError"]);
  // a flow is its own fault owner: its throw resets it, not the stack
  const flowFaults: string[] = [];
  const flow: TcpHandlers & FaultOwner = {
    onConnect: boom,
    onData: boom,
    onEnd: boom,
    onError: boom,
    onClose: boom,
    onDrain: boom,
    readBuffer: () => new Uint8Array(8),
    onRead: boom,
    onFault: (_e, where) => flowFaults.push(where),
  };
  host.connectTcp("127.0.0.1", 1, flow);
  const h = captured.tcp[0];
  h.onConnect();
  h.onData(new Uint8Array(1));
  assert.equal(h.readBuffer!().length, 8, "zero-copy receive is kept");
  h.onRead!(1);
  h.onEnd();
  h.onDrain();
  h.onError("ECONNRESET");
  h.onClose();
  assert.deepEqual(flowFaults, [
    "tcp.onConnect",
    "tcp.onData",
    "tcp.onRead",
    "tcp.onEnd",
    "tcp.onDrain",
    "tcp.onError",
    "tcp.onClose",
  ]);
  assert.equal(stackFaults.length, 2, "the stack saw none of the flow's throws");
});

Deno.test("containment: a timer that throws goes to its owner; the other timers of the turn still fire", () => {
  const wheel = new TimerWheel(0, 5, 64);
  const seen: string[] = [];
  const owner: FaultOwner = { onFault: (e) => seen.push(`fault:${(e as Error).message}`) };
  const a = new Timer(() => {
    throw new Error("a");
  }, owner);
  const b = new Timer(() => seen.push("b"), owner);
  wheel.arm(a, 10);
  wheel.arm(b, 10);
  wheel.advance(20);
  assert.deepEqual(seen.sort(), ["b", "fault:a"]);
  assert.equal(wheel.size, 0);
});
