/**
 * Traceroute through the gateway: the gateway is the guest's first hop (a datagram beyond it whose TTL / hop
 * limit ends there draws a time exceeded from the gateway), the rest leave with the guest's TTL less that hop,
 * and a router's time exceeded heard by the host comes back from that router, quoting the guest's probe —
 * unless the tenant's policy hides that router. At the stack (recorded host sockets), then end to end: a
 * Linux guest's own `traceroute` (UDP, ICMP and TCP SYN, IPv4 and IPv6) through a relay in a private namespace and a
 * router namespace to a far one.
 */
import assert from "node:assert/strict";
import { arpFrame, GW_MAC, ip, pingFrame, StackHarness, tcpFrame, udpFrame } from "./_frames.ts";
import { a6, sent6, tcpSyn6From, udp6Frame } from "./_frames6.ts";
import { FakeHost } from "./_fake_host.ts";
import { e2eTest, must, NetnsGuest } from "./_netns_guest.ts";
import { PrivateNetns, RelayProcess } from "./_relay_process.ts";
import type { HostIcmpEcho, HostUdpSocket, IcmpEchoCallback, UdpHandlers } from "../src/host/host.ts";
import { tenantStackConfig } from "../src/relay/tenant_config.ts";
import { defaultStackConfig, parseHostForward } from "../src/stack/config.ts";
import { ipv4ToString, u16 as get16, u32 as get32 } from "../src/wire/bytes.ts";
import {
  ICMP_DEST_UNREACHABLE,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_TIME_EXCEEDED,
} from "../src/wire/icmpv4.ts";
import { ICMPV6_TIME_EXCEEDED } from "../src/wire/icmpv6.ts";
import { ipv6ToString } from "../src/wire/ipv6.ts";
import { TCP_SYN } from "../src/wire/tcp.ts";

const MAC = 0x020000000001;
const GUEST = ip("10.0.2.15");
const FAR = ip("198.51.100.9");

/** Host sockets that record what the stack asks of them: UDP sends with the hop limit set, echo requests. */
class RecordingHost extends FakeHost {
  readonly udp: { handlers: UdpHandlers; hops: number[]; sent: string[] }[] = [];
  readonly echoes: { address: string; hopLimit?: number; done: IcmpEchoCallback }[] = [];

  override openUdp(handlers: UdpHandlers): HostUdpSocket {
    const r = { handlers, hops: [] as number[], sent: [] as string[] };
    this.udp.push(r);
    return {
      sendTo: (_d, address, port) => void r.sent.push(`${address}:${port}`),
      setHopLimit: (n) => void r.hops.push(n),
      close() {},
    };
  }

  override icmpEcho(): HostIcmpEcho {
    return {
      echo: (address, _data, _timeoutMs, done, hopLimit) => {
        this.echoes.push({ address, hopLimit, done });
        return true;
      },
    };
  }
}

/** The IPv4 frames among `frames` that are ICMP time exceeded. */
const timeExceeded = (frames: Uint8Array[]) =>
  frames.filter((f) => f[12] === 0x08 && f[13] === 0 && f[23] === 1 && f[34] === ICMP_TIME_EXCEEDED);

Deno.test("traceroute (IPv4, stack): the gateway is hop 1, probes leave with TTL-1, routers' time exceeded come back unless policy hides them", () => {
  let host!: RecordingHost;
  const h = new StackHarness(
    (c) => {
      // a multi-tenant tenant allowed one public range: private routers stay hidden
      const spec = { id: "t", policy: { allow: ["198.51.100.0/24"] } };
      Object.assign(c, tenantStackConfig(spec, defaultStackConfig(), true, parseHostForward), {
        dnsUpstreams: ["127.0.0.1:9"],
        newFlowsPerSecond: 0,
      });
    },
    (clock) => (host = new RecordingHost(clock)),
  );
  try {
    h.send(arpFrame(MAC, GUEST, ip("10.0.2.2")));
    const payload = new Uint8Array(12);
    // hop 1: TTL 1 beyond the gateway is answered by the gateway, quoting the probe; nothing leaves
    let from = h.raw.length;
    h.send(udpFrame(MAC, GUEST, FAR, 40000, 33434, payload, GW_MAC, 1));
    let [te] = timeExceeded(h.raw.slice(from));
    assert.ok(te, "time exceeded for a TTL-1 probe");
    assert.equal(ipv4ToString(get32(te, 26)), "10.0.2.2", "from the gateway");
    assert.equal(ipv4ToString(get32(te, 30)), "10.0.2.15");
    assert.equal(ipv4ToString(get32(te, 42 + 16)), "198.51.100.9", "the quote names the probe's destination");
    assert.equal(get16(te, 42 + 22), 33434, "and its port");
    assert.equal(host.udp.length, 0, "the probe did not leave");
    assert.equal(h.drops("ttl-exceeded"), 1);
    // TTL 1 to the gateway itself, or a broadcast, is not beyond it
    from = h.raw.length;
    h.send(pingFrame(MAC, GUEST, ip("10.0.2.2"), 7, 1, new Uint8Array(8), 1));
    h.send(udpFrame(MAC, GUEST, ip("10.0.2.255"), 40001, 9, payload, GW_MAC, 1));
    assert.equal(timeExceeded(h.raw.slice(from)).length, 0);
    assert.ok(
      h.out.slice(-2).some((d) => d.icmp?.type === ICMP_ECHO_REPLY),
      "the gateway answers its own ping",
    );

    // later hops: the probe leaves with its TTL less the gateway's hop, set only when it changes
    h.send(udpFrame(MAC, GUEST, FAR, 40000, 33435, payload, GW_MAC, 3));
    h.send(udpFrame(MAC, GUEST, FAR, 40000, 33436, payload, GW_MAC, 3));
    h.send(udpFrame(MAC, GUEST, FAR, 40000, 33437, payload, GW_MAC, 4));
    assert.equal(host.udp.length, 1);
    const flow = host.udp[0];
    assert.deepEqual(flow.sent, ["198.51.100.9:33435", "198.51.100.9:33436", "198.51.100.9:33437"]);
    assert.deepEqual(flow.hops, [2, 3]);
    // a router's time exceeded about an earlier probe comes back from that router, quoting that probe
    from = h.raw.length;
    flow.handlers.onError("EHOSTUNREACH", "198.51.100.9", 33435, {
      type: ICMP_TIME_EXCEEDED,
      code: 0,
      offender: "198.51.100.254",
    });
    [te] = timeExceeded(h.raw.slice(from));
    assert.ok(te, "the router's time exceeded is passed on");
    assert.equal(ipv4ToString(get32(te, 26)), "198.51.100.254", "from the router");
    assert.equal(get16(te, 42 + 20), 40000, "quoting the guest's port");
    assert.equal(get16(te, 42 + 22), 33435, "and the probe's destination port");
    // a router the tenant may not reach stays hidden
    from = h.raw.length;
    flow.handlers.onError("EHOSTUNREACH", "198.51.100.9", 33436, {
      type: ICMP_TIME_EXCEEDED,
      code: 0,
      offender: "10.1.1.1",
    });
    assert.equal(h.raw.length, from, "nothing about a hidden router");
    assert.equal(h.drops("icmp-hop-hidden"), 1);
    // a router that cannot reach the destination says so itself; the destination's own port unreachable
    // comes from the destination; a hidden router's unreachable is shown from the destination
    const unreachable = (errno: string, offender: string, code: number) => {
      const at = h.raw.length;
      flow.handlers.onError(errno, "198.51.100.9", 33437, { type: ICMP_DEST_UNREACHABLE, code, offender });
      const f = h.raw.slice(at).find((f) => f[23] === 1 && f[34] === ICMP_DEST_UNREACHABLE);
      assert.ok(f, `an unreachable for the error from ${offender}`);
      return { from: ipv4ToString(get32(f, 26)), code: f[35], port: get16(f, 42 + 22) };
    };
    assert.deepEqual(unreachable("EHOSTUNREACH", "198.51.100.254", 1), {
      from: "198.51.100.254",
      code: 1,
      port: 33437,
    });
    assert.deepEqual(unreachable("ECONNREFUSED", "198.51.100.9", 3), {
      from: "198.51.100.9",
      code: 3,
      port: 33437,
    });
    assert.deepEqual(unreachable("EHOSTUNREACH", "10.1.1.1", 1), {
      from: "198.51.100.9",
      code: 1,
      port: 33437,
    });

    // ICMP probes (traceroute -I, mtr): TTL less one hop on the request; the router's error quotes the
    // guest's own identifier and sequence
    h.send(pingFrame(MAC, GUEST, FAR, 0x1234, 5, new Uint8Array(8), 5));
    assert.equal(host.echoes.length, 1);
    assert.equal(host.echoes[0].hopLimit, 4);
    from = h.raw.length;
    host.echoes[0].done({
      type: ICMP_TIME_EXCEEDED,
      code: 0,
      data: new Uint8Array(0),
      offender: "198.51.100.254",
    });
    [te] = timeExceeded(h.raw.slice(from));
    assert.ok(te, "the echo's time exceeded is passed on");
    assert.equal(ipv4ToString(get32(te, 26)), "198.51.100.254");
    assert.equal(te[42 + 20], ICMP_ECHO_REQUEST, "the quote is the guest's request");
    assert.equal(get16(te, 42 + 24), 0x1234, "with its identifier");
    assert.equal(get16(te, 42 + 26), 5, "and sequence");
    // an ICMP probe of TTL 1 is answered by the gateway and does not leave
    from = h.raw.length;
    h.send(pingFrame(MAC, GUEST, FAR, 0x1234, 6, new Uint8Array(8), 1));
    assert.equal(timeExceeded(h.raw.slice(from)).length, 1);
    assert.equal(host.echoes.length, 1);
  } finally {
    h.close();
  }
});

Deno.test("traceroute (IPv6, stack): the router is hop 1, probes leave with hop limit-1, a router's time exceeded comes back", () => {
  let host!: RecordingHost;
  const h = new StackHarness(() => {}, (clock) => (host = new RecordingHost(clock)));
  const guest = a6("fd00::6a"), far = a6("2001:db8::9");
  try {
    let from = h.raw.length;
    h.send(udp6Frame(guest, far, 41000, 33434, new Uint8Array(12), 1));
    let [te] = sent6(h, from);
    assert.ok(te, "time exceeded for a hop-limit-1 probe");
    assert.equal(te.frame[te.ip.payloadOffset], ICMPV6_TIME_EXCEEDED);
    assert.equal(ipv6ToString(te.frame, te.ip.srcOffset), "fd00::2", "from the router's address");
    assert.equal(get16(te.frame, te.ip.payloadOffset + 8 + 40 + 2), 33434, "quoting the probe");
    assert.equal(host.udp.length, 0, "the probe did not leave");

    h.send(udp6Frame(guest, far, 41000, 33435, new Uint8Array(12), 2));
    assert.deepEqual(host.udp[0].hops, [1]);
    from = h.raw.length;
    host.udp[0].handlers.onError("EHOSTUNREACH", "2001:db8::9", 33435, {
      type: ICMPV6_TIME_EXCEEDED,
      code: 0,
      offender: "2001:db8::fe",
    });
    [te] = sent6(h, from);
    assert.ok(te, "the router's time exceeded is passed on");
    assert.equal(te.frame[te.ip.payloadOffset], ICMPV6_TIME_EXCEEDED);
    assert.equal(ipv6ToString(te.frame, te.ip.srcOffset), "2001:db8::fe", "from the router");
    assert.equal(get16(te.frame, te.ip.payloadOffset + 8 + 40 + 2), 33435, "quoting the probe's port");
  } finally {
    h.close();
  }
});

Deno.test("traceroute -T (stack): a SYN of small TTL dials with TTL-1, a router's error that ends the dial comes back from the router", () => {
  let host!: RecordingHost;
  const h = new StackHarness(
    (c) => {
      const spec = { id: "t", policy: { allow: ["198.51.100.0/24", "[2001:db8::/32]"] } };
      Object.assign(c, tenantStackConfig(spec, defaultStackConfig(), true, parseHostForward), {
        dnsUpstreams: ["127.0.0.1:9"],
        newFlowsPerSecond: 0,
      });
    },
    (clock) => (host = new RecordingHost(clock)),
  );
  const syn = (sport: number, ttl: number) =>
    tcpFrame({
      srcMac: MAC,
      src: GUEST,
      dst: FAR,
      sport,
      dport: 80,
      seq: 5000 + sport,
      ack: 0,
      flags: TCP_SYN,
      ttl,
    });
  try {
    h.send(arpFrame(MAC, GUEST, ip("10.0.2.2")));
    // an ordinary stack's SYN dials with the host's default TTL; a probe's with its own less the gateway's hop
    h.send(syn(41000, 64));
    h.send(syn(41001, 3));
    assert.deepEqual(host.sockets.map((s) => s.hops), [0, 2]);
    // the router's time exceeded that ended the dial comes back from the router, quoting the guest's SYN
    let from = h.raw.length;
    host.sockets[1].fail("EHOSTUNREACH", { type: ICMP_TIME_EXCEEDED, code: 0, offender: "198.51.100.254" });
    let [te] = timeExceeded(h.raw.slice(from));
    assert.ok(te, "the router's time exceeded is passed on");
    assert.equal(ipv4ToString(get32(te, 26)), "198.51.100.254", "from the router");
    assert.equal(te[42 + 9], 6, "the quote is TCP");
    assert.equal(get16(te, 42 + 20), 41001, "from the guest's port");
    assert.equal(get16(te, 42 + 22), 80, "to the destination's");
    assert.equal(get32(te, 42 + 24), 5000 + 41001, "with the SYN's sequence number");
    assert.equal(
      h.out.slice(from).filter((d) => d.tcp).length,
      0,
      "no reset: the guest hears only the router",
    );
    // a router the tenant may not reach stays hidden
    h.send(syn(41002, 4));
    from = h.raw.length;
    host.sockets[2].fail("EHOSTUNREACH", { type: ICMP_TIME_EXCEEDED, code: 0, offender: "10.1.1.1" });
    assert.equal(h.raw.length, from, "nothing about a hidden router");
    assert.equal(h.drops("icmp-hop-hidden"), 1);

    // IPv6: the same with the hop limit
    const guest6 = a6("fd00::6a"), far6 = a6("2001:db8::9");
    h.send(tcpSyn6From(guest6, far6, 80, 42000, 2));
    assert.equal(host.sockets[3].hops, 1);
    from = h.raw.length;
    host.sockets[3].fail("EHOSTUNREACH", { type: ICMPV6_TIME_EXCEEDED, code: 0, offender: "2001:db8::fe" });
    [te] = sent6(h, from).map((s) => s.frame);
    assert.ok(te, "the router's time exceeded is passed on");
    const l4 = 14 + 40;
    assert.equal(te[l4], ICMPV6_TIME_EXCEEDED);
    assert.equal(ipv6ToString(te, 14 + 8), "2001:db8::fe", "from the router");
    assert.equal(get16(te, l4 + 8 + 40), 42000, "quoting the guest's SYN");
  } finally {
    h.close();
  }
});

/** One connection on 192.0.2.9:7007 at a time, echoed back until the client closes (the far namespace). */
const ECHO_SERVER = `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.9", 7007)); s.listen(1)
while True:
    c, _ = s.accept()
    while d := c.recv(65536): c.sendall(d)
    c.close()
`;

/** The guest: a connection with TTL 3, 300 kB each way; prints how many came back. */
const TTL_CLIENT = `
import socket, time
for attempt in range(50):
    try:
        s = socket.socket()
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 3); s.settimeout(10); s.connect(("192.0.2.9", 7007)); break
    except ConnectionRefusedError: time.sleep(0.1)
s.sendall(b"x" * 300000); s.shutdown(socket.SHUT_WR)
n = 0
while d := s.recv(65536): n += len(d)
print("echoed", n)
`;

/** The address each hop of a `traceroute -n` answered from, in order ("*" for none). */
function hops(output: string): string[] {
  const out: string[] = [];
  for (const line of output.split("\n")) {
    const m = /^\s*(\d+)\s+(\S+)/.exec(line);
    if (m) out[Number(m[1]) - 1] = m[2];
  }
  return out;
}

e2eTest(
  "netns Linux guest: traceroute (UDP, ICMP and TCP, IPv4 and IPv6) shows the gateway, a router and the far host",
  ["traceroute", "sysctl"],
  async () => {
    // the relay's host is a private namespace; beyond it a router namespace, then a far one
    const host = await PrivateNetns.create({ "net.ipv4.ping_group_range": "0 2147483647" });
    const router = await PrivateNetns.create({
      "net.ipv4.ip_forward": "1",
      "net.ipv6.conf.all.forwarding": "1",
      // every probe gets its answer: no ICMP rate limit on the router
      "net.ipv4.icmp_ratelimit": "0",
      "net.ipv6.icmp.ratelimit": "0",
    });
    // nor on the far host, whose port unreachables end the UDP traceroutes (several in a row here)
    const far = await PrivateNetns.create({ "net.ipv4.icmp_ratelimit": "0", "net.ipv6.icmp.ratelimit": "0" });
    const dir = await Deno.makeTempDir();
    let relay: RelayProcess | null = null, guest: NetnsGuest | null = null;
    try {
      const link = async (a: PrivateNetns, aIf: string, b: PrivateNetns, bIf: string) => {
        await must([
          "ip",
          "link",
          "add",
          aIf,
          "netns",
          a.name,
          "type",
          "veth",
          "peer",
          "name",
          bIf,
          "netns",
          b.name,
        ]);
        await must(["ip", "-n", a.name, "link", "set", aIf, "up"]);
        await must(["ip", "-n", b.name, "link", "set", bIf, "up"]);
      };
      const addr = (ns: PrivateNetns, dev: string, a: string) =>
        must(["ip", "-n", ns.name, "addr", "add", a, "dev", dev, ...(a.includes(":") ? ["nodad"] : [])]);
      const route = (ns: PrivateNetns, to: string, via: string) =>
        must(["ip", "-n", ns.name, ...(via.includes(":") ? ["-6"] : []), "route", "add", to, "via", via]);
      await link(host, "up0", router, "rt0");
      await link(router, "rt1", far, "fr0");
      await addr(host, "up0", "203.0.113.1/24");
      await addr(host, "up0", "2001:db8:1::1/64");
      await addr(router, "rt0", "203.0.113.2/24");
      await addr(router, "rt0", "2001:db8:1::2/64");
      await addr(router, "rt1", "192.0.2.1/24");
      await addr(router, "rt1", "2001:db8:2::1/64");
      await addr(far, "fr0", "192.0.2.9/24");
      await addr(far, "fr0", "2001:db8:2::9/64");
      await route(host, "192.0.2.0/24", "203.0.113.2");
      await route(host, "2001:db8:2::/64", "2001:db8:1::2");
      await route(far, "default", "192.0.2.1");
      await route(far, "default", "2001:db8:2::1");
      await Deno.writeTextFile(
        `${dir}/relay.json`,
        JSON.stringify({ "listen-qemu": [`unix://${dir}/relay.sock`], "dns-upstream": ["127.0.0.1:9"] }),
      );
      relay = await RelayProcess.start(["--config", `${dir}/relay.json`, "--log-level", "warn"], {
        netns: host,
      });
      guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
      await guest.dhcp();
      await guest.slaac();
      const cases = [
        [["-n", "-w", "2", "-m", "6", "192.0.2.9"], ["10.0.2.2", "203.0.113.2", "192.0.2.9"]],
        [["-I", "-n", "-w", "2", "-m", "6", "192.0.2.9"], ["10.0.2.2", "203.0.113.2", "192.0.2.9"]],
        [["-6", "-n", "-w", "2", "-m", "6", "2001:db8:2::9"], ["fd00::2", "2001:db8:1::2", "2001:db8:2::9"]],
        [["-6", "-I", "-n", "-w", "2", "-m", "6", "2001:db8:2::9"], [
          "fd00::2",
          "2001:db8:1::2",
          "2001:db8:2::9",
        ]],
        // TCP SYN probes (traceroute -T, mtr --tcp): the host's SYN carries the guest's TTL less one, and the
        // router's time exceeded ends its connect; the far host's reset (nothing on port 80) is the last hop
        [["-T", "-n", "-w", "2", "-m", "6", "192.0.2.9"], ["10.0.2.2", "203.0.113.2", "192.0.2.9"]],
        [["-6", "-T", "-n", "-w", "2", "-m", "6", "2001:db8:2::9"], [
          "fd00::2",
          "2001:db8:1::2",
          "2001:db8:2::9",
        ]],
      ] as const;
      for (const [args, expected] of cases) {
        const r = await guest.exec(["traceroute", ...args]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.deepEqual(hops(r.stdout), expected, `traceroute ${args.join(" ")}:\n${r.stdout}`);
      }
      // a connection whose SYN was a probe that got through (TTL 3: the gateway, the router, the far host)
      // carries data both ways like any other
      const [cmd, ...args] = far.wrap(["python3", "-c", ECHO_SERVER]);
      const echo = new Deno.Command(cmd, { args, stdout: "null" }).spawn();
      try {
        const r = await guest.exec(["python3", "-c", TTL_CLIENT], { timeoutMs: 20_000 });
        assert.equal(r.stdout.trim(), "echoed 300000", r.stdout + r.stderr);
      } finally {
        echo.kill();
        await echo.status;
      }
    } finally {
      await guest?.close();
      await relay?.stop();
      for (const ns of [far, router, host]) await ns.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
