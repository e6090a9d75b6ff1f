/**
 * Tenant quotas on the stack's manual clock: new flows per second, TCP/UDP flow limits and the memory
 * budget (bufferedBytes) — each at, below and above its limit, checked by counters and real host sockets.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { ip, StackHarness, tcpFrame, udpFrame } from "./_frames.ts";
import { TCP_ACK_FLAG, TCP_RST, TCP_SYN } from "../src/wire/tcp.ts";
import { ICMP_UNREACH_PORT } from "../src/wire/icmpv4.ts";
import { tenantStackConfig } from "../src/relay/tenant_config.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { parseHostForward } from "../src/cli.ts";
import { startUdpEcho } from "./_services.ts";
import { descriptorLimit, FlowLimit } from "../src/stack/flow_limit.ts";
import { openFileLimit } from "../src/host/libc.ts";
import { TimerWheel } from "../src/stack/timer_wheel.ts";
import { NodeHost } from "../src/host/node_host.ts";
import { ERROR_REPLIES_PER_SECOND, Stack } from "../src/stack/stack.ts";
import { MIN_BLOCK as REASSEMBLY_MIN_BLOCK } from "../src/stack/tcp/reassembly.ts";
import { FrameScheduler } from "../src/relay/scheduler.ts";
import { shapedLink } from "../src/transport/link_wrappers.ts";
import type { GuestLink, LinkPeer } from "../src/transport/link.ts";
import { TokenBucket } from "../src/common/token_bucket.ts";

const MAC = 0x02000000000d;
const GUEST = ip("10.0.2.15");
const GW = ip("10.0.2.2");

/** A loopback listener that counts the connections it accepted. */
async function countingListener(): Promise<{ port: number; accepted: () => number; close(): void }> {
  let n = 0;
  const socks: net.Socket[] = [];
  const srv = net.createServer((s) => {
    n++;
    socks.push(s);
    s.on("error", () => {});
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    accepted: () => n,
    close: () => {
      for (const s of socks) s.destroy();
      srv.close();
    },
  };
}

const syn = (sport: number, dport: number) =>
  tcpFrame({ srcMac: MAC, src: GUEST, dst: GW, sport, dport, seq: 1000, ack: 0, flags: TCP_SYN });

const settle = () => new Promise((r) => setTimeout(r, 200));

Deno.test("quota newFlowsPerSecond: a burst of 100 SYNs dials the host 5 times; refused SYNs get RST; a second later 5 more", async () => {
  const srv = await countingListener();
  const h = new StackHarness((c) => (c.newFlowsPerSecond = 5));
  try {
    for (let i = 0; i < 100; i++) h.send(syn(20000 + i, srv.port));
    await settle();
    assert.equal(srv.accepted(), 5, "host connections after the burst");
    assert.equal(h.drops("tcp-flow-rate-limit"), 95);
    const rsts = h.out.filter((d) => d.tcp && (d.tcp.flags & TCP_RST) !== 0);
    assert.equal(rsts.length, 95, "each refused SYN was answered with a reset");
    h.now += 1000; // the manual clock: one second's worth of tokens
    for (let i = 0; i < 100; i++) h.send(syn(30000 + i, srv.port));
    await settle();
    assert.equal(srv.accepted(), 10);
    // UDP flows take from the same bucket
    const echo = await startUdpEcho();
    try {
      h.send(udpFrame(MAC, GUEST, GW, 5000, echo.port, new Uint8Array([1])));
      assert.equal(h.drops("udp-flow-rate-limit"), 1);
      h.now += 1000;
      h.send(udpFrame(MAC, GUEST, GW, 5001, echo.port, new Uint8Array([1])));
      assert.equal(h.stack.udp.size, 1);
    } finally {
      echo.close();
    }
  } finally {
    h.close();
    srv.close();
  }
});

Deno.test("quota maxUdpFlows: a full table gives up its least recently active flow once it has been quiet for a second", async () => {
  const echo = await startUdpEcho();
  const h = new StackHarness((c) => {
    c.maxUdpFlows = 2;
  });
  const ask = async (port: number) => {
    h.send(udpFrame(MAC, GUEST, GW, port, echo.port, new TextEncoder().encode(`q${port}`)));
    await h.waitFor((d) => d.udp?.dstPort === port);
  };
  try {
    await ask(7000);
    await ask(7001);
    h.advance(600);
    await ask(7000); // 7000 is the more recently active now
    h.advance(600);
    // full, and 7001 (quiet for 1.2 s) is the idlest: it gives way; the new flow is answered
    await ask(7002);
    assert.equal(h.stack.udp.size, 2);
    assert.equal(h.stack.counters.udpFlowsReclaimed, 1);
    assert.equal(h.drops("udp-flow-limit"), 0);
    await ask(7000); // kept its flow: no new one was needed
    assert.equal(h.stack.counters.udpFlowsOpened, 3);
    // every flow has been active within the last second: a new one is refused, not made room for
    const full = h.send(udpFrame(MAC, GUEST, GW, 7003, echo.port, new Uint8Array([1])));
    assert.equal(full[0]?.icmp?.code, ICMP_UNREACH_PORT);
    assert.equal(h.drops("udp-flow-limit"), 1);
    assert.equal(h.stack.counters.udpFlowsReclaimed, 1);
  } finally {
    h.close();
    echo.close();
  }
});

Deno.test("quota maxTcpFlows / maxUdpFlows: at the limit new flows are refused, below it they open", async () => {
  const srv = await countingListener();
  const echo = await startUdpEcho();
  const h = new StackHarness((c) => {
    c.maxTcpFlows = 3;
    c.maxUdpFlows = 2;
  });
  try {
    for (let i = 0; i < 5; i++) h.send(syn(21000 + i, srv.port));
    await settle();
    assert.equal(srv.accepted(), 3);
    assert.equal(h.stack.tcp.size, 3);
    assert.equal(h.drops("tcp-flow-limit"), 2);
    for (let i = 0; i < 4; i++) h.send(udpFrame(MAC, GUEST, GW, 6000 + i, echo.port, new Uint8Array([1])));
    assert.equal(h.stack.udp.size, 2);
    assert.equal(h.drops("udp-flow-limit"), 2);
    // one TCP flow goes away (the guest resets it): a new one fits again
    const c = h.stack.tcp.connections()[0];
    await h.waitFor((d) =>
      d.tcp !== undefined && (d.tcp.flags & TCP_SYN) !== 0 && d.tcp.dstPort === c.guestPort
    );
    const synAck = h.out.find((d) => d.tcp && (d.tcp.flags & TCP_SYN) && d.tcp.dstPort === c.guestPort)!.tcp!;
    h.send(tcpFrame({
      srcMac: MAC,
      src: GUEST,
      dst: GW,
      sport: c.guestPort,
      dport: srv.port,
      seq: 1001,
      ack: (synAck.seq + 1) >>> 0,
      flags: TCP_RST | TCP_ACK_FLAG,
    }));
    assert.equal(h.stack.tcp.size, 2, "the guest's RST freed its flow");
    h.send(syn(22000, srv.port));
    await settle();
    assert.equal(srv.accepted(), 4);
  } finally {
    h.close();
    srv.close();
    echo.close();
  }
});

Deno.test("memory budget: 1-byte out-of-order segments on 128 connections hold a small block each, not a window; the budget bounds the rest", async () => {
  const srv = await countingListener();
  const limit = 1024 * 1024;
  const h = new StackHarness((c) => (c.bufferedBytes = limit));
  try {
    const conns = 128;
    for (let i = 0; i < conns; i++) h.send(syn(23000 + i, srv.port));
    await settle();
    const synAcks = new Map<number, number>();
    for (const d of h.out) {
      if (d.tcp && (d.tcp.flags & TCP_SYN)) synAcks.set(d.tcp.dstPort, d.tcp.seq);
    }
    assert.equal(synAcks.size, conns);
    const base = (port: number, iss: number) => ({
      srcMac: MAC,
      src: GUEST,
      dst: GW,
      sport: port,
      dport: srv.port,
      ack: (iss + 1) >>> 0,
    });
    const before = Deno.memoryUsage().rss;
    for (const [port, iss] of synAcks) {
      h.send(tcpFrame({ ...base(port, iss), seq: 1001, flags: TCP_ACK_FLAG }));
      // one byte well inside the window, a hole in front of it
      h.send(tcpFrame({ ...base(port, iss), seq: 1001 + 60_000, flags: TCP_ACK_FLAG }, new Uint8Array([7])));
    }
    assert.equal(h.stack.memory.used, conns * REASSEMBLY_MIN_BLOCK, "one small block per connection");
    assert.ok(Deno.memoryUsage().rss - before < 32 * 1024 * 1024, "no window-sized buffer per connection");
    // five more separate holes per connection would take 1.25 MiB of blocks: the budget stops at 1 MiB
    for (const [port, iss] of synAcks) {
      for (let k = 1; k <= 5; k++) {
        h.send(
          tcpFrame({ ...base(port, iss), seq: 1001 + k * 5000, flags: TCP_ACK_FLAG }, new Uint8Array(1000)),
        );
      }
    }
    assert.ok(h.stack.memory.used <= limit, `budget used ${h.stack.memory.used} of ${limit}`);
    assert.ok(h.drops("tcp-reassembly-full") > 0, "segments past the budget were refused");
    // resetting every connection gives every byte back
    h.stack.tcp.close();
    assert.equal(h.stack.memory.used, 0);
  } finally {
    h.close();
    srv.close();
  }
});

Deno.test("tenant quotas reach the stack: newFlowsPerSecond, bufferedBytes, flow limits", () => {
  const c = tenantStackConfig(
    { id: "q", quotas: { newFlowsPerSecond: 5, bufferedBytes: 12345, maxTcpFlows: 7, maxUdpFlows: 3 } },
    defaultStackConfig(),
    true,
    parseHostForward,
  );
  assert.equal(c.newFlowsPerSecond, 5);
  assert.equal(c.bufferedBytes, 12345);
  assert.equal(c.maxTcpFlows, 7);
  assert.equal(c.maxUdpFlows, 3);
});

Deno.test("relay-wide flow limit: tenants under their own quotas together cannot pass it; a freed slot is reused", async () => {
  const srv = await countingListener();
  const shared = new FlowLimit(3);
  const wheel = new TimerWheel(performance.now());
  const host = new NodeHost();
  const make = () => {
    const c = defaultStackConfig();
    c.dnsUpstreams = ["127.0.0.1:9"];
    return new Stack(c, { host, wheel, output: () => {}, flowLimit: shared });
  };
  const a = make(), b = make();
  try {
    a.input(syn(24000, srv.port));
    a.input(syn(24001, srv.port));
    b.input(syn(24002, srv.port));
    b.input(syn(24003, srv.port));
    await settle();
    assert.equal(srv.accepted(), 3);
    assert.equal(shared.open, 3);
    assert.equal(b.counters.drops.get("relay-flow-limit"), 1);
    a.tcp.close(); // a's flows end: their slots come back
    assert.equal(shared.open, 1);
    b.input(syn(24004, srv.port));
    await settle();
    assert.equal(srv.accepted(), 4);
    assert.equal(shared.open, 2);
  } finally {
    a.close();
    b.close();
    srv.close();
  }
  assert.equal(shared.open, 0, "every slot released");
});

Deno.test("relay-wide flow limit: the descriptor limit is read from /proc/self/limits", () => {
  const limits = "Limit                     Soft Limit           Hard Limit           Units     \n" +
    "Max open files            4096                 524288               files     \n";
  assert.equal(descriptorLimit(() => limits), 4096);
  assert.equal(descriptorLimit(() => "nothing"), null);
  assert.equal(
    descriptorLimit(() => {
      throw new Error("ENOENT");
    }),
    null,
  );
});

Deno.test("relay-wide flow limit: getrlimit through FFI agrees with /proc/self/limits (what --allow-all would read)", () => {
  const viaFfi = openFileLimit();
  if (viaFfi === null) return; // no FFI here: the relay falls back to /proc or to no limit
  assert.equal(viaFfi, descriptorLimit(() => Deno.readTextFileSync("/proc/self/limits")));
});

Deno.test("quota ingressBytesPerSecond on the manual clock: the lane delivers what its bucket holds, the rest as time passes", async () => {
  let now = 1_000;
  const s = new FrameScheduler(() => now);
  const bucket = new TokenBucket(10_000, 10_000, now); // 10 kB/s, one second's burst
  let delivered = 0;
  const lane = s.open("limited", () => delivered++, bucket);
  const other = s.open("unlimited", () => {});
  const n = 30;
  const buf = new Uint8Array(1000 * n);
  const offs = Array.from({ length: n }, (_, i) => i * 1000);
  const lens = new Array(n).fill(1000);
  const done = s.submit(lane, buf, offs, lens, n);
  const settle = () => new Promise((r) => setTimeout(r, 20));
  await settle();
  // at the limit: the burst (10 kB) goes through, the eleventh frame waits
  assert.equal(delivered, 10);
  const first = delivered;
  // below it: another lane is not held up meanwhile
  await s.submit(other, buf, [0], [1000], 1);
  await settle();
  assert.equal(delivered, first, "no time passed: no more frames");
  // above it, over time: half a second refills 5 kB, five frames
  now += 500;
  await settle();
  assert.equal(delivered - first, 5);
  // the burst is capped at one second's worth: the rest comes a second at a time
  for (let i = 0; i < 10 && delivered < n; i++) {
    now += 1_000;
    await settle();
  }
  await done;
  assert.equal(delivered, n);
});

Deno.test("error replies are rate-limited (RFC 1812 §4.3.2.8): a SYN flood past the flow quota draws 1000 RSTs a second, not one per SYN", () => {
  const h = new StackHarness((c) => (c.maxTcpFlows = 0));
  try {
    const syn = (sport: number) =>
      tcpFrame({
        srcMac: MAC,
        src: GUEST,
        dst: ip("10.0.2.2"),
        sport,
        dport: 80,
        seq: 1,
        ack: 0,
        flags: TCP_SYN,
      });
    let rsts = 0;
    for (let i = 0; i < 1500; i++) {
      rsts += h.send(syn(10_000 + i)).filter((d) => d.tcp && d.tcp.flags & TCP_RST).length;
    }
    assert.equal(rsts, ERROR_REPLIES_PER_SECOND);
    assert.equal(h.drops("tcp-flow-limit"), 1500);
    assert.equal(h.drops("error-reply-rate-limit"), 1500 - ERROR_REPLIES_PER_SECOND);
    // a second later the bucket has refilled
    h.advance(1000);
    let later = 0;
    for (let i = 0; i < 10; i++) {
      later += h.send(syn(20_000 + i)).filter((d) => d.tcp && d.tcp.flags & TCP_RST).length;
    }
    assert.equal(later, 10);
  } finally {
    h.close();
  }
});

Deno.test("quota egressBytesPerSecond on the manual clock: the shaped link sends within the bucket, queues the rest and releases it as tokens come back", async () => {
  let now = 0;
  const sent: Uint8Array[] = [];
  let acceptsMore = true;
  const carrier: GuestLink = {
    kind: "stream",
    remote: "test",
    send: (f) => acceptsMore && (sent.push(f), true),
    backlog: 0,
    close: () => {},
  };
  let drained = 0;
  const dropped: string[] = [];
  const peer: LinkPeer = {
    opened: () => null,
    closed: () => {},
    protocolError: () => {},
    dropped: (r) => dropped.push(r),
    drained: () => drained++,
  };
  const bucket = new TokenBucket(10_000, 10_000, now); // 10 kB/s, one second's burst
  const link = shapedLink(carrier, bucket, peer, 15_000, () => now);
  const bytes = () => sent.reduce((n, f) => n + f.length, 0);
  const settle = () => new Promise((r) => setTimeout(r, 30));
  const frame = (i: number) => new Uint8Array(1000).fill(i);
  for (let i = 0; i < 30; i++) assert.equal(link.send(frame(i)), i < 25, `frame ${i} taken or refused`);
  // one second's burst goes at once, the rest waits in order and counts as backlog (TCP paces on it)
  assert.equal(bytes(), 10_000);
  assert.equal(link.backlog, 15_000);
  await settle();
  assert.equal(bytes(), 10_000, "the bucket is empty: nothing more");
  now += 1000;
  await settle();
  assert.equal(bytes(), 20_000, "a second later, a second's worth");
  assert.equal(drained, 0);
  now += 0.1; // one token: a frame is never split, so the next one takes the bucket into debt
  await settle();
  assert.equal(bytes(), 21_000);
  now += 100.1; // the debt (999 bytes) repaid and a token more
  await settle();
  assert.equal(bytes(), 22_000);
  now += 1000;
  await settle();
  assert.equal(bytes(), 25_000, "every queued frame went");
  assert.deepEqual(sent.map((f) => f[0]), Array.from({ length: 25 }, (_, i) => i), "in order");
  assert.equal(link.backlog, 0);
  assert.equal(drained, 1, "told the peer once the queue emptied");
  // a carrier refusing a frame released from the queue: counted, not lost silently
  for (let i = 0; i < 20; i++) link.send(frame(i));
  const waiting = link.backlog / 1000;
  assert.ok(waiting > 0, "past the bucket, frames wait");
  acceptsMore = false;
  for (let i = 0; i < 2; i++) {
    now += 1000; // at most a bucket a second
    await settle();
  }
  assert.equal(dropped.length, waiting);
  assert.ok(dropped.every((r) => r === "guest-backlog-full"));
  link.close();
});
