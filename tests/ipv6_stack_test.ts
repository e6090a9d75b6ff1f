/**
 * IPv6 in the stack, scripted frame by frame (no root, no real socket: the host is a FakeHost that records
 * what would be dialled): router advertisements and their options, neighbour discovery and its refusals,
 * echo, TCP over IPv6 through the family-neutral TCP engine, and the IPv6 policy with its IPv4-mapped and
 * NAT64 forms.
 */
import assert from "node:assert/strict";
import { GW_MAC, StackHarness } from "./_frames.ts";
import { a6, frame6, MAC6 as MAC, sent6, tcpSyn6From, udp6Frame } from "./_frames6.ts";
import type { HostUdpSocket, UdpHandlers } from "../src/host/host.ts";
import { FakeHost } from "./_fake_host.ts";
import { compilePolicy } from "../src/relay/tenant_config.ts";
import { IPPROTO_ICMPV6, type Ipv6Header, ipv6ToString } from "../src/wire/ipv6.ts";
import {
  emitIcmpv6,
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_ECHO_REPLY,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_PACKET_TOO_BIG,
  ICMPV6_UNREACH_ADDRESS,
  ICMPV6_UNREACH_ADMIN_PROHIBITED,
  ICMPV6_UNREACH_PORT,
  NDP_NEIGHBOR_ADVERTISEMENT,
  NDP_NEIGHBOR_SOLICITATION,
  NDP_OPT_MTU,
  NDP_OPT_PREFIX_INFO,
  NDP_OPT_RDNSS,
  NDP_OPT_SOURCE_LLADDR,
  NDP_ROUTER_ADVERTISEMENT,
  NDP_ROUTER_SOLICITATION,
  parseIcmpv6,
} from "../src/wire/icmpv6.ts";
import { parseTcp, TCP_ACK_FLAG, TCP_SYN } from "../src/wire/tcp.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "../src/wire/ipv4.ts";
import { checksumSum, pseudoHeaderSumV6 } from "../src/wire/checksum.ts";
import {
  DHCPV6_INFORMATION_REQUEST,
  DHCPV6_OPT_CLIENTID,
  DHCPV6_OPT_DNS_SERVERS,
  DHCPV6_OPT_IA_NA,
  DHCPV6_OPT_RAPID_COMMIT,
  DHCPV6_OPT_SERVERID,
  DHCPV6_REPLY,
  DHCPV6_REQUEST,
  DHCPV6_SOLICIT,
  parseDhcpv6,
} from "../src/wire/dhcpv6.ts";
import { isWireError, mac48, put16, put32, u32 } from "../src/wire/bytes.ts";
import { RA_INTERVAL_MS } from "../src/stack/icmpv6_service.ts";
import { HostAddresses } from "../src/relay/host_addresses.ts";

const GUEST_LL = a6("fe80::6a");
const GUEST = a6("fd00::6a");

/** An ICMPv6 message (type, code, rest, body) as L4 bytes with its checksum. */
function icmp6(src: Uint8Array, dst: Uint8Array, type: number, rest: number, body: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + body.length);
  m.set(body, 8);
  emitIcmpv6(m, 0, type, 0, rest, body.length, pseudoHeaderSumV6(src, 0, dst, 0, IPPROTO_ICMPV6, m.length));
  return m;
}

function slla(mac: number): Uint8Array {
  const o = new Uint8Array(8);
  o[0] = NDP_OPT_SOURCE_LLADDR;
  o[1] = 1;
  for (let i = 0; i < 6; i++) o[2 + i] = (mac / 2 ** (8 * (5 - i))) & 0xff;
  return o;
}

function neighbourSolicitation(src: Uint8Array, target: string, hopLimit = 255): Uint8Array {
  const body = new Uint8Array(24);
  body.set(a6(target), 0);
  body.set(slla(MAC), 16);
  const group = a6(`ff02::1:ff00:${target.split(":").pop()}`);
  return frame6(src, group, IPPROTO_ICMPV6, icmp6(src, group, NDP_NEIGHBOR_SOLICITATION, 0, body), {
    hopLimit,
  });
}

function tcpSyn6(dst: string, dport: number, sport = 40000): Uint8Array {
  return tcpSyn6From(GUEST, a6(dst), dport, sport);
}

/** NDP options of a message body: type → offset of each. */
function options(f: Uint8Array, off: number, end: number): Map<number, number> {
  const m = new Map<number, number>();
  while (off + 2 <= end && f[off + 1] > 0) {
    m.set(f[off], off);
    off += f[off + 1] * 8;
  }
  return m;
}

Deno.test("IPv6 RS → RA: from fe80::2 with hop limit 255, the gateway MAC, fd00::/64 on-link and autonomous, RDNSS fd00::3", () => {
  const h = new StackHarness();
  try {
    h.send(
      frame6(
        GUEST_LL,
        a6("ff02::2"),
        IPPROTO_ICMPV6,
        icmp6(GUEST_LL, a6("ff02::2"), NDP_ROUTER_SOLICITATION, 0, slla(MAC)),
        { hopLimit: 255, dstMac: 0x333300000002 },
      ),
    );
    const [ra] = sent6(h);
    assert.ok(ra, "an advertisement was sent");
    const f = ra.frame;
    assert.equal(mac48(f, 0), MAC, "unicast to the soliciting guest");
    assert.equal(ipv6ToString(f, ra.ip.srcOffset), "fe80::2");
    assert.equal(ipv6ToString(f, ra.ip.dstOffset), "fe80::6a");
    assert.equal(ra.ip.hopLimit, 255);
    const m = parseIcmpv6(
      f,
      ra.ip.payloadOffset,
      ra.ip.payloadEnd,
      pseudoHeaderSumV6(
        f,
        ra.ip.srcOffset,
        f,
        ra.ip.dstOffset,
        IPPROTO_ICMPV6,
        ra.ip.payloadEnd - ra.ip.payloadOffset,
      ),
    );
    assert.ok(!isWireError(m), "checksum verifies");
    assert.equal(m.type, NDP_ROUTER_ADVERTISEMENT);
    assert.equal(m.rest >>> 24, 64, "cur hop limit");
    assert.equal(
      (m.rest >>> 16) & 0xc0,
      0x40,
      "O set (DNS by stateless DHCPv6), M clear (addresses by SLAAC)",
    );
    assert.ok((m.rest & 0xffff) > 0, "router lifetime > 0: a default router");
    const opts = options(f, m.bodyOffset + 8, m.end);
    assert.equal(mac48(f, opts.get(NDP_OPT_SOURCE_LLADDR)! + 2), GW_MAC);
    const pi = opts.get(NDP_OPT_PREFIX_INFO)!;
    assert.equal(f[pi + 2], 64);
    assert.equal(f[pi + 3] & 0xc0, 0xc0, "L and A set");
    assert.ok(u32(f, pi + 4) >= u32(f, pi + 8), "valid lifetime ≥ preferred");
    assert.equal(ipv6ToString(f, pi + 16), "fd00::");
    assert.equal(ipv6ToString(f, opts.get(NDP_OPT_RDNSS)! + 8), "fd00::3");
    assert.equal(opts.has(NDP_OPT_MTU), false, "no MTU option at Ethernet's 1500");
    assert.equal(h.stack.counters.routerSolicitations, 1);

    // unsolicited advertisements follow to all nodes
    const before = h.raw.length;
    h.advance(RA_INTERVAL_MS + 1);
    const [again] = sent6(h, before);
    assert.ok(again, "an unsolicited advertisement");
    assert.equal(ipv6ToString(again.frame, again.ip.dstOffset), "ff02::1");
    assert.equal(mac48(again.frame, 0), 0x333300000001);
  } finally {
    h.close();
  }
});

Deno.test("IPv6 RA carries the MTU option when the MTU is not 1500; an RS from :: is answered to all nodes; hop limit ≠ 255 is refused", () => {
  const h = new StackHarness((c) => (c.mtu = 9000));
  try {
    const any = a6("::");
    h.send(
      frame6(
        GUEST_LL,
        a6("ff02::2"),
        IPPROTO_ICMPV6,
        icmp6(GUEST_LL, a6("ff02::2"), NDP_ROUTER_SOLICITATION, 0, new Uint8Array(0)),
        { hopLimit: 64 },
      ),
    );
    assert.equal(sent6(h).length, 0, "an RS that was routed (hop limit 64) is not answered");
    assert.equal(h.drops("ndp-hop-limit-not-255"), 1);
    h.send(
      frame6(
        any,
        a6("ff02::2"),
        IPPROTO_ICMPV6,
        icmp6(any, a6("ff02::2"), NDP_ROUTER_SOLICITATION, 0, new Uint8Array(0)),
        { hopLimit: 255 },
      ),
    );
    const [ra] = sent6(h);
    assert.equal(ipv6ToString(ra.frame, ra.ip.dstOffset), "ff02::1");
    const opts = options(ra.frame, ra.ip.payloadOffset + 16, ra.ip.payloadEnd);
    assert.equal(u32(ra.frame, opts.get(NDP_OPT_MTU)! + 4), 9000);
  } finally {
    h.close();
  }
});

Deno.test("IPv6 NS: answered for fd00::2, fd00::3 and fe80::2 (R, S, O and the gateway MAC); never for a DAD probe or an address not the router's", () => {
  const h = new StackHarness();
  try {
    for (const target of ["fd00::2", "fd00::3", "fe80::2"]) {
      const before = h.raw.length;
      h.send(neighbourSolicitation(GUEST, target));
      const [na] = sent6(h, before);
      assert.ok(na, `an advertisement for ${target}`);
      const f = na.frame;
      assert.equal(f[na.ip.payloadOffset], NDP_NEIGHBOR_ADVERTISEMENT);
      assert.equal(f[na.ip.payloadOffset + 4] & 0xe0, 0xe0, "router, solicited, override");
      assert.equal(ipv6ToString(f, na.ip.payloadOffset + 8), target);
      assert.equal(mac48(f, na.ip.payloadOffset + 24 + 2), GW_MAC, "target link-layer option");
      assert.equal(na.ip.hopLimit, 255);
      assert.equal(ipv6ToString(f, na.ip.dstOffset), "fd00::6a");
    }
    const before = h.raw.length;
    h.send(neighbourSolicitation(a6("::"), "fd00::2"));
    h.send(neighbourSolicitation(GUEST, "fd00::77"));
    h.send(neighbourSolicitation(GUEST, "fd00::2", 254));
    assert.equal(sent6(h, before).length, 0);
    assert.equal(h.drops("ndp-dad-probe"), 1);
    assert.equal(h.drops("ndp-target-not-ours"), 1);
    assert.equal(h.drops("ndp-hop-limit-not-255"), 1);
  } finally {
    h.close();
  }
});

Deno.test("IPv6 echo to fd00::3 is answered with the same identifier, sequence and data; a packet over the MTU draws Packet Too Big; a zero UDP checksum is refused", () => {
  const h = new StackHarness();
  try {
    const dns = a6("fd00::3");
    const data = new TextEncoder().encode("echo-data-over-ipv6");
    h.send(frame6(GUEST, dns, IPPROTO_ICMPV6, icmp6(GUEST, dns, ICMPV6_ECHO_REQUEST, 0x12340007, data)));
    const [r] = sent6(h);
    assert.equal(r.frame[r.ip.payloadOffset], ICMPV6_ECHO_REPLY);
    assert.equal(u32(r.frame, r.ip.payloadOffset + 4), 0x12340007);
    assert.deepEqual(r.frame.slice(r.ip.payloadOffset + 8, r.ip.payloadEnd), data);
    assert.equal(ipv6ToString(r.frame, r.ip.srcOffset), "fd00::3");

    // a packet over the link's MTU draws Packet Too Big with the MTU (RFC 4443 §3.2), from the router
    const before = h.raw.length;
    h.send(
      frame6(
        GUEST,
        dns,
        IPPROTO_ICMPV6,
        icmp6(GUEST, dns, ICMPV6_ECHO_REQUEST, 0x12340008, new Uint8Array(1500)),
      ),
    );
    const [ptb] = sent6(h, before);
    assert.equal(ptb.frame[ptb.ip.payloadOffset], ICMPV6_PACKET_TOO_BIG);
    assert.equal(u32(ptb.frame, ptb.ip.payloadOffset + 4), 1500);
    assert.equal(ipv6ToString(ptb.frame, ptb.ip.srcOffset), "fd00::2");
    assert.ok(ptb.ip.payloadEnd - 14 <= 1280, "the error fits the minimum MTU");

    const udp = new Uint8Array(12);
    put16(udp, 0, 5353);
    put16(udp, 2, 53);
    put16(udp, 4, 12);
    h.send(frame6(GUEST, dns, IPPROTO_UDP, udp));
    assert.equal(h.drops("udp6-zero-checksum"), 1);
  } finally {
    h.close();
  }
});

Deno.test("IPv6 TCP: prefix::2 dials the host's ::1 and the handshake completes through the family-neutral engine; fe80::1 and the rest of the prefix are unreachable", () => {
  let host!: FakeHost;
  const h = new StackHarness(() => {}, (clock) => (host = new FakeHost(clock)));
  try {
    h.send(tcpSyn6("fd00::2", 8080));
    assert.equal(host.sockets.length, 1);
    assert.equal(host.sockets[0].remoteAddress, "::1");
    host.sockets[0].handlers.onConnect();
    const [synAck] = sent6(h);
    const t = parseTcp(
      synAck.frame,
      synAck.ip.payloadOffset,
      synAck.ip.payloadEnd,
      pseudoHeaderSumV6(
        synAck.frame,
        synAck.ip.srcOffset,
        synAck.frame,
        synAck.ip.dstOffset,
        IPPROTO_TCP,
        synAck.ip.payloadEnd - synAck.ip.payloadOffset,
      ),
    );
    assert.ok(
      !(t instanceof Error) && "flags" in t,
      "the SYN-ACK's checksum verifies over the IPv6 pseudo-header",
    );
    assert.equal(t.flags & (TCP_SYN | TCP_ACK_FLAG), TCP_SYN | TCP_ACK_FLAG);
    assert.equal(t.mss, 1500 - 40 - 20, "MSS from the IPv6 header length");
    assert.equal(t.ack, 1001);
    const flows = h.stack.inspectTcp();
    assert.equal(flows[0].family, "ipv6");
    assert.equal(flows[0].remote, "[fd00::2]:8080");

    for (const [dst, reason] of [["fe80::1", "tcp6-no-route"], ["fd00::99", "tcp6-no-route"]] as const) {
      const before = h.raw.length;
      h.send(tcpSyn6(dst, 80, 40001));
      const [err] = sent6(h, before);
      assert.equal(err.frame[err.ip.payloadOffset], ICMPV6_DEST_UNREACHABLE, dst);
      assert.equal(err.frame[err.ip.payloadOffset + 1], ICMPV6_UNREACH_ADDRESS, dst);
      assert.ok(h.drops(reason) >= 1);
    }
    assert.equal(host.sockets.length, 1, "nothing else was dialled");
  } finally {
    h.close();
  }
});

Deno.test("IPv6 policy (multi-tenant defaults): ::1, IPv4-mapped loopback and metadata, ULA, NAT64-embedded private space are refused; a public address is dialled", () => {
  let host!: FakeHost;
  const h = new StackHarness((c) => {
    c.policy = compilePolicy(undefined, true);
    c.gatewayToLoopback = false;
  }, (clock) => (host = new FakeHost(clock)));
  try {
    let sport = 41000;
    for (
      const dst of [
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "fc00::1",
        "fd12::1",
        "64:ff9b::a00:1",
        "2001:db8::1",
        "ff0e::1",
      ]
    ) {
      const before = h.raw.length;
      h.send(tcpSyn6(dst, 80, sport++));
      const errs = sent6(h, before).filter((p) => p.frame[p.ip.payloadOffset] === ICMPV6_DEST_UNREACHABLE);
      if (dst.startsWith("ff")) continue; // multicast destinations are dropped silently
      assert.equal(errs.length, 1, `${dst} refused with an ICMPv6 error`);
      assert.equal(errs[0].frame[errs[0].ip.payloadOffset + 1], ICMPV6_UNREACH_ADMIN_PROHIBITED, dst);
    }
    assert.equal(host.sockets.length, 0, "nothing was dialled");
    // a public address (RFC 3849's documentation space is denied, so a global unicast one stands in; the
    // FakeHost only records it)
    h.send(tcpSyn6("2a00:1450::1", 443, sport++));
    assert.equal(host.sockets.length, 1);
    assert.equal(host.sockets[0].remoteAddress, "2a00:1450::1");
    // an IPv4-mapped public address is an IPv4 flow
    h.send(tcpSyn6("::ffff:93.184.216.34", 443, sport++));
    assert.equal(host.sockets[1].remoteAddress, "93.184.216.34");
  } finally {
    h.close();
  }
});

Deno.test("IPv6 host addresses: ::, ::1 and every interface address (zone stripped) count as the relay host's", () => {
  let list = [
    { family: "IPv4", address: "192.0.2.7" },
    { family: "IPv6", address: "2001:db8:1::7" },
    { family: "IPv6", address: "fe80::1234%eth0" },
  ];
  const host = new HostAddresses(() => list);
  for (const a of ["::", "::1", "2001:db8:1::7", "fe80::1234"]) assert.ok(host.has6(a6(a), 0), a);
  for (const a of ["2001:db8:1::8", "fd00::2", "::2"]) assert.ok(!host.has6(a6(a), 0), a);
  assert.ok(host.has(0xc0000207, 0), "IPv4 interface addresses still count");
  // the list is read again once stale: a removed address stops counting
  list = [];
  assert.ok(!host.has6(a6("2001:db8:1::7"), 60_000));
  assert.ok(host.has6(a6("::1"), 60_000));
});

Deno.test("IPv6 relay guard: a tenant stack refuses what the relay-wide IPv6 guard refuses, after its own policy allowed it", () => {
  let host!: FakeHost;
  const refused: string[] = [];
  const h = new StackHarness(() => {}, (clock) => (host = new FakeHost(clock)), {
    egressGuard6: (_p, real) => {
      const text = ipv6ToString(real, 0);
      if (text === "2a00:1450::9") refused.push(text);
      return text !== "2a00:1450::9";
    },
  });
  try {
    const before = h.raw.length;
    h.send(tcpSyn6("2a00:1450::9", 443));
    const [err] = sent6(h, before);
    assert.equal(err.frame[err.ip.payloadOffset + 1], ICMPV6_UNREACH_ADMIN_PROHIBITED);
    assert.deepEqual(refused, ["2a00:1450::9"]);
    h.send(tcpSyn6("2a00:1450::10", 443, 40002));
    assert.equal(host.sockets.length, 1, "another address passes");
  } finally {
    h.close();
  }
});

/** A DHCPv6 client message from the guest's link-local address to ff02::1:2. */
function dhcpv6Frame(type: number, options: [number, Uint8Array][]): Uint8Array {
  const size = 4 + options.reduce((n, [, v]) => n + 4 + v.length, 0);
  const udp = new Uint8Array(8 + size);
  put16(udp, 0, 546);
  put16(udp, 2, 547);
  put16(udp, 4, udp.length);
  udp[8] = type;
  udp[9] = 0xab;
  udp[10] = 0xcd;
  udp[11] = 0xef;
  let o = 12;
  for (const [code, v] of options) {
    put16(udp, o, code);
    put16(udp, o + 2, v.length);
    udp.set(v, o + 4);
    o += 4 + v.length;
  }
  const group = a6("ff02::1:2");
  const ck =
    ~checksumSum(udp, 0, udp.length, pseudoHeaderSumV6(GUEST_LL, 0, group, 0, IPPROTO_UDP, udp.length)) &
    0xffff;
  put16(udp, 6, ck === 0 ? 0xffff : ck);
  return frame6(GUEST_LL, group, IPPROTO_UDP, udp, { dstMac: 0x333300010002 });
}

/** The DHCPv6 options of a reply the stack sent: code → value. */
function dhcpv6Options(f: Uint8Array, ip: Ipv6Header): { type: number; options: Map<number, Uint8Array> } {
  const m = parseDhcpv6(f, ip.payloadOffset + 8, ip.payloadEnd);
  assert.ok(!isWireError(m));
  const options = new Map<number, Uint8Array>();
  for (const [code, o] of m.options) options.set(code, f.slice(o.offset, o.offset + o.length));
  return { type: m.type, options };
}

Deno.test("DHCPv6: information-request answered with fd00::3; rapid-commit SOLICIT binds fd00::100; a REQUEST naming another server is ignored", () => {
  const h = new StackHarness((c) => (c.searchDomains = ["guest.test"]));
  try {
    const duid = Uint8Array.of(0, 3, 0, 1, 2, 0, 0, 0, 0, 0x6a);
    h.send(dhcpv6Frame(DHCPV6_INFORMATION_REQUEST, [[DHCPV6_OPT_CLIENTID, duid]]));
    let [r] = sent6(h);
    assert.equal(ipv6ToString(r.frame, r.ip.srcOffset), "fe80::2");
    assert.equal(ipv6ToString(r.frame, r.ip.dstOffset), "fe80::6a");
    let reply = dhcpv6Options(r.frame, r.ip);
    assert.equal(reply.type, DHCPV6_REPLY);
    assert.equal(ipv6ToString(reply.options.get(DHCPV6_OPT_DNS_SERVERS)!, 0), "fd00::3");
    assert.deepEqual(reply.options.get(DHCPV6_OPT_CLIENTID), duid);
    const serverId = reply.options.get(DHCPV6_OPT_SERVERID)!;

    let before = h.raw.length;
    const iaNa = new Uint8Array(12);
    put16(iaNa, 2, 7); // IAID 7
    h.send(
      dhcpv6Frame(DHCPV6_SOLICIT, [[DHCPV6_OPT_CLIENTID, duid], [DHCPV6_OPT_IA_NA, iaNa], [
        DHCPV6_OPT_RAPID_COMMIT,
        new Uint8Array(0),
      ]]),
    );
    [r] = sent6(h, before);
    reply = dhcpv6Options(r.frame, r.ip);
    assert.equal(reply.type, DHCPV6_REPLY, "rapid commit: a REPLY, not an ADVERTISE");
    const ia = reply.options.get(DHCPV6_OPT_IA_NA)!;
    assert.equal(u32(ia, 0), 7, "the client's IAID");
    assert.equal(ipv6ToString(ia, 12 + 4), "fd00::100", "IAADDR");

    before = h.raw.length;
    const otherServer = Uint8Array.of(0, 3, 0, 1, 9, 9, 9, 9, 9, 9);
    h.send(
      dhcpv6Frame(DHCPV6_REQUEST, [[DHCPV6_OPT_CLIENTID, duid], [DHCPV6_OPT_SERVERID, otherServer], [
        DHCPV6_OPT_IA_NA,
        iaNa,
      ]]),
    );
    assert.equal(sent6(h, before).length, 0);
    assert.equal(h.drops("dhcpv6-other-server"), 1);
    h.send(
      dhcpv6Frame(DHCPV6_REQUEST, [[DHCPV6_OPT_CLIENTID, duid], [DHCPV6_OPT_SERVERID, serverId], [
        DHCPV6_OPT_IA_NA,
        iaNa,
      ]]),
    );
    [r] = sent6(h, before);
    assert.equal(
      ipv6ToString(dhcpv6Options(r.frame, r.ip).options.get(DHCPV6_OPT_IA_NA)!, 16),
      "fd00::100",
      "the same address again",
    );
    assert.equal(h.stack.dhcp6.size, 1);
  } finally {
    h.close();
  }
});

Deno.test("IPv6 UDP: the host socket's error comes back as ICMPv6 port unreachable quoting the guest's datagram", () => {
  const handlers: UdpHandlers[] = [];
  const sentTo: string[] = [];
  class UdpFakeHost extends FakeHost {
    override openUdp(h: UdpHandlers, family?: 4 | 6): HostUdpSocket {
      handlers.push(h);
      assert.equal(family, 6, "an IPv6 flow gets an IPv6 host socket");
      return { sendTo: (_d, address, port) => void sentTo.push(`[${address}]:${port}`), close() {} };
    }
  }
  const h = new StackHarness(() => {}, (clock) => new UdpFakeHost(clock));
  try {
    h.send(udp6Frame(GUEST, a6("fd00::2"), 40100, 9, Uint8Array.of(1, 2, 3)));
    assert.deepEqual(sentTo, ["[::1]:9"], "prefix::2 is the host's ::1");
    const before = h.raw.length;
    handlers[0].onError("ECONNREFUSED");
    const [err] = sent6(h, before);
    const f = err.frame, at = err.ip.payloadOffset;
    assert.equal(f[at], ICMPV6_DEST_UNREACHABLE);
    assert.equal(f[at + 1], ICMPV6_UNREACH_PORT);
    assert.equal(ipv6ToString(f, err.ip.srcOffset), "fd00::2", "from the address the guest sent to");
    // the quote: the guest's IPv6 header and UDP ports
    assert.equal(ipv6ToString(f, at + 8 + 8), "fd00::6a");
    assert.equal(ipv6ToString(f, at + 8 + 24), "fd00::2");
    assert.equal((f[at + 48] << 8) | f[at + 49], 40100);
    assert.equal((f[at + 50] << 8) | f[at + 51], 9);
    // an ICMP error the socket names the destination of quotes that destination, the flow's last or not
    // (a traceroute sends to a new port per probe, several probes at once)
    const told = h.raw.length;
    handlers[0].onError("ECONNREFUSED", "::1", 9);
    handlers[0].onError("ECONNREFUSED", "::1", 10);
    const quotes = sent6(h, told).map((e) =>
      (e.frame[e.ip.payloadOffset + 50] << 8) | e.frame[e.ip.payloadOffset + 51]
    );
    assert.deepEqual(quotes, [9, 10], "each error quotes the port it was about");
    // a destination the guest never had a name for is not told
    handlers[0].onError("ECONNREFUSED", "fe80::1", 10);
    assert.equal(sent6(h, told).length, 2);
  } finally {
    h.close();
  }
});

/**
 * Splits the IPv6 packet of `frame` (no extension headers) into fragments of `per` payload bytes (a multiple
 * of 8) behind a Fragment header carrying `id` (RFC 8200 §4.5).
 */
function fragment6(frame: Uint8Array, per: number, id: number): Uint8Array[] {
  const total = (frame[18] << 8) | frame[19];
  const out: Uint8Array[] = [];
  for (let off = 0; off < total; off += per) {
    const n = Math.min(per, total - off);
    const f = new Uint8Array(62 + n);
    f.set(frame.subarray(0, 54));
    put16(f, 18, 8 + n);
    f[20] = 44; // Fragment
    f[54] = frame[20];
    put16(f, 56, off | (off + n < total ? 1 : 0));
    put32(f, 58, id);
    f.set(frame.subarray(54 + off, 54 + off + n), 62);
    out.push(f);
  }
  return out;
}

/** The fragmentable parts of the fragments in `sent`, put back together by offset (all of one Identification). */
function reassembled(sent: { frame: Uint8Array; ip: Ipv6Header }[]): { bytes: Uint8Array; next: number } {
  const frags = sent.filter((s) => s.ip.fragmented);
  assert.ok(frags.length > 1, "sent in fragments");
  assert.equal(new Set(frags.map((s) => u32(s.frame, s.ip.payloadOffset - 4))).size, 1, "one Identification");
  const last = frags.find((s) => !s.ip.moreFragments)!;
  const bytes = new Uint8Array(last.ip.fragmentOffset + last.ip.payloadEnd - last.ip.payloadOffset);
  for (const { frame, ip } of frags) {
    assert.ok(frame.length <= 14 + 1500, "every fragment fits the MTU");
    if (ip.moreFragments) {
      assert.equal((ip.payloadEnd - ip.payloadOffset) % 8, 0, "8-byte multiples but the last");
    }
    bytes.set(frame.subarray(ip.payloadOffset, ip.payloadEnd), ip.fragmentOffset);
  }
  return { bytes, next: frags[0].ip.protocol };
}

Deno.test("IPv6 fragments: a guest's datagram in fragments (any order) reaches the host whole, a larger reply leaves in fragments that reassemble exactly; overlaps and stragglers discard, an atomic fragment is whole, NDP in fragments is ignored", () => {
  const handlers: UdpHandlers[] = [];
  const sentTo: Uint8Array[] = [];
  class UdpFakeHost extends FakeHost {
    override openUdp(h: UdpHandlers): HostUdpSocket {
      handlers.push(h);
      return { sendTo: (d) => void sentTo.push(d.slice()), close() {} };
    }
  }
  const h = new StackHarness(() => {}, (clock) => new UdpFakeHost(clock));
  try {
    const gw = a6("fd00::2");
    const payload = new Uint8Array(3000).map((_, i) => (i * 7) & 255);
    const frags = fragment6(udp6Frame(GUEST, gw, 40100, 9, payload), 1232, 0x1234);
    assert.equal(frags.length, 3);
    for (const f of [frags[2], frags[0], frags[1]]) h.send(f);
    assert.equal(sentTo.length, 1, "one datagram reached the host");
    assert.deepEqual(sentTo[0], payload);

    // the host's 4000-byte reply: fragments whose data carries a valid UDP datagram
    const before = h.raw.length;
    const reply = new Uint8Array(4000).map((_, i) => (i * 13) & 255);
    handlers[0].onMessage(reply, "::1", 9);
    const { bytes, next } = reassembled(sent6(h, before));
    assert.equal(next, IPPROTO_UDP);
    assert.equal(bytes.length, 8 + reply.length);
    assert.equal(
      ~checksumSum(bytes, 0, bytes.length, pseudoHeaderSumV6(gw, 0, GUEST, 0, IPPROTO_UDP, bytes.length)) &
        0xffff,
      0,
      "the UDP checksum covers the whole datagram",
    );
    assert.deepEqual(bytes.subarray(8), reply);
    assert.equal(h.stack.counters.udpFragmentedDatagrams, 1);

    // RFC 5722: an overlap discards the datagram; a datagram missing a fragment times out
    const again = fragment6(udp6Frame(GUEST, gw, 40101, 9, payload), 1232, 0x1235);
    const overlap = fragment6(udp6Frame(GUEST, gw, 40101, 9, payload), 616, 0x1235);
    h.send(again[0]);
    h.send(overlap[1]); // 616..1232 overlaps 0..1232
    assert.equal(h.drops("ipv6-fragment-overlap"), 1);
    h.send(again[1]);
    h.advance(6000);
    assert.equal(h.drops("ipv6-reassembly-timeout"), 1);
    assert.equal(sentTo.length, 1, "nothing incomplete was forwarded");

    // RFC 6946: an atomic fragment (offset 0, M clear) is a whole packet
    const [atomic] = fragment6(udp6Frame(GUEST, gw, 40100, 9, Uint8Array.of(1, 2, 3)), 1232, 0x1236);
    h.send(atomic);
    assert.deepEqual(sentTo.at(-1), Uint8Array.of(1, 2, 3));
    // RFC 6980 §5: Neighbor Discovery in fragments is ignored
    h.send(fragment6(neighbourSolicitation(GUEST, "fd00::2"), 1232, 0x1237)[0]);
    assert.equal(h.drops("ndp-fragmented"), 1);
  } finally {
    h.close();
  }
});

Deno.test("IPv6 fragments: an echo to fd00::3 larger than the MTU, sent in fragments, is answered in fragments with the same data", () => {
  const h = new StackHarness();
  try {
    const dns = a6("fd00::3");
    const data = new Uint8Array(5000).map((_, i) => (i * 3) & 255);
    const frame = frame6(
      GUEST,
      dns,
      IPPROTO_ICMPV6,
      icmp6(GUEST, dns, ICMPV6_ECHO_REQUEST, 0x12340009, data),
    );
    for (const f of fragment6(frame, 1448, 77)) h.send(f);
    const { bytes, next } = reassembled(sent6(h));
    assert.equal(next, IPPROTO_ICMPV6);
    assert.equal(bytes[0], ICMPV6_ECHO_REPLY);
    assert.equal(u32(bytes, 4), 0x12340009);
    assert.equal(
      ~checksumSum(
        bytes,
        0,
        bytes.length,
        pseudoHeaderSumV6(dns, 0, GUEST, 0, IPPROTO_ICMPV6, bytes.length),
      ) & 0xffff,
      0,
    );
    assert.deepEqual(bytes.subarray(8), data);
  } finally {
    h.close();
  }
});
