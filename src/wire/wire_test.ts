import assert from "node:assert/strict";
import {
  ipv4ToString,
  isWireError,
  macToString,
  parseIpv4Address as parseAddr,
  parseMacAddress as parseMac,
  WireError,
} from "./bytes.ts";
import { emitEthernet, ETHERTYPE_IPV4, parseEthernet } from "./ethernet.ts";
import { ARP_OP_REPLY, emitArp, parseArp } from "./arp.ts";
import { emitIpv4, IPPROTO_UDP, parseIpv4 } from "./ipv4.ts";
import { emitIcmpV4, ICMP_ECHO_REQUEST, parseIcmpV4 } from "./icmpv4.ts";
import { emitUdp, parseUdp } from "./udp.ts";
import { emitTcp, newTcpHeader, parseTcp, TCP_ACK_FLAG, TCP_SYN, tcpHeaderLength } from "./tcp.ts";
import {
  BOOTREPLY,
  type DhcpMessage,
  dhcpMessageType,
  DhcpOption,
  dhcpOption,
  emitDhcp,
  optIpv4List,
  optU8,
  parseDhcp,
} from "./dhcp.ts";
import { DNS_TYPE_A, emitDnsResponse, encodeNames, parseDns, readName } from "./dns.ts";
import { checksumUpdate16, checksumUpdate32, internetChecksum, pseudoHeaderSumV4 } from "./checksum.ts";

const A = parseAddr("10.0.2.15")!;
const B = parseAddr("10.0.2.2")!;

Deno.test("address helpers round-trip", () => {
  assert.equal(ipv4ToString(parseAddr("192.168.1.254")!), "192.168.1.254");
  assert.equal(parseAddr("256.1.1.1"), null);
  assert.equal(macToString(parseMac("52:55:0a:00:02:02")!), "52:55:0a:00:02:02");
  assert.equal(parseMac("zz:55:0a:00:02:02"), null);
});

Deno.test("ethernet: emit then parse, VLAN tag reported, truncation refused", () => {
  const b = new Uint8Array(64);
  emitEthernet(b, 0, 0xffffffffffff, parseMac("52:55:0a:00:02:02")!, ETHERTYPE_IPV4);
  const h = parseEthernet(b, 0, b.length);
  assert.ok(!isWireError(h));
  assert.equal(h.etherType, ETHERTYPE_IPV4);
  assert.equal(h.payloadOffset, 14);
  // insert an 802.1Q tag with VLAN 42
  const t = new Uint8Array(64);
  t.set(b.subarray(0, 12));
  t.set([0x81, 0x00, 0x00, 42, 0x08, 0x00], 12);
  const v = parseEthernet(t, 0, t.length);
  assert.ok(!isWireError(v));
  assert.equal(v.vlanId, 42);
  assert.equal(v.etherType, ETHERTYPE_IPV4);
  assert.equal(v.payloadOffset, 18);
  for (const n of [0, 13, 15]) assert.ok(isWireError(parseEthernet(t, 0, n)), `len ${n}`);
});

Deno.test("arp: round trip and refusals", () => {
  const b = new Uint8Array(28);
  const p = {
    op: ARP_OP_REPLY,
    senderMac: 0x525500000202,
    senderIp: B,
    targetMac: 0x5254001234,
    targetIp: A,
  };
  emitArp(p, b, 0);
  assert.deepEqual(parseArp(b, 0, 28), p);
  assert.ok(isWireError(parseArp(b, 0, 27)));
  b[1] = 6; // htype 6 (IEEE 802) is not ours
  assert.ok(isWireError(parseArp(b, 0, 28)));
});

Deno.test("ipv4: round trip with options, truncated and corrupted headers refused", () => {
  const b = new Uint8Array(40);
  const opts = Uint8Array.of(1, 1, 1, 0); // NOP NOP NOP EOL
  const hl = emitIpv4(
    { id: 7, ttl: 64, protocol: IPPROTO_UDP, src: A, dst: B, dontFragment: true, options: opts },
    b,
    0,
    16,
  );
  assert.equal(hl, 24);
  const h = parseIpv4(b, 0, 40);
  assert.ok(!isWireError(h));
  assert.equal(h.headerLength, 24);
  assert.equal(h.totalLength, 40);
  assert.ok(h.dontFragment);
  assert.equal(h.src, A);
  assert.equal(h.payloadOffset, 24);
  const cases: [string, (x: Uint8Array) => void, number][] = [
    ["short", () => {}, 19],
    ["total beyond received", () => {}, 39],
    ["bad version", (x) => (x[0] = 0x65), 40],
    ["ihl below 5", (x) => (x[0] = 0x44), 40],
    ["checksum", (x) => (x[8] ^= 1), 40],
  ];
  for (const [name, mutate, len] of cases) {
    const c = b.slice();
    mutate(c);
    assert.ok(isWireError(parseIpv4(c, 0, len)), name);
  }
});

Deno.test("icmpv4 and udp: round trip with checksums", () => {
  const b = new Uint8Array(8 + 5);
  b.set([1, 2, 3, 4, 5], 8);
  emitIcmpV4(b, 0, ICMP_ECHO_REQUEST, 0, (0x1234 << 16) | 9, 5);
  const m = parseIcmpV4(b, 0, b.length);
  assert.ok(!isWireError(m));
  assert.equal(m.id, 0x1234);
  assert.equal(m.seq, 9);
  b[9] ^= 0xff;
  assert.ok(isWireError(parseIcmpV4(b, 0, b.length)));

  const u = new Uint8Array(8 + 3);
  u.set([9, 8, 7], 8);
  const ps = pseudoHeaderSumV4(A, B, IPPROTO_UDP, 11);
  emitUdp(u, 0, 5353, 53, 3, ps);
  const h = parseUdp(u, 0, 11, ps);
  assert.ok(!isWireError(h));
  assert.equal(h.dstPort, 53);
  assert.equal(h.payloadEnd - h.payloadOffset, 3);
  assert.ok(isWireError(parseUdp(u, 0, 11, ps + 1)), "wrong pseudo-header must fail");
  assert.ok(isWireError(parseUdp(u, 0, 10, -1)), "length field beyond data");
});

Deno.test("tcp: options round trip in Linux layout; malformed option stops parsing only", () => {
  const h = newTcpHeader();
  Object.assign(h, {
    srcPort: 40000,
    dstPort: 80,
    seq: 0xfffffff0,
    ack: 5,
    flags: TCP_SYN | TCP_ACK_FLAG,
    window: 65535,
  });
  Object.assign(h, {
    mss: 1460,
    windowScale: 7,
    sackPermitted: true,
    hasTimestamps: true,
    tsVal: 1,
    tsEcr: 2,
  });
  h.sackCount = 2;
  h.sackBlocks = [10, 20, 30, 40, 0, 0, 0, 0];
  const hl = tcpHeaderLength(h);
  assert.equal(hl, 20 + 4 + 12 + 4 + 20);
  const b = new Uint8Array(hl + 4);
  b.set([1, 2, 3, 4], hl);
  const ps = pseudoHeaderSumV4(A, B, 6, b.length);
  emitTcp(h, b, 0, 4, ps);
  const p = parseTcp(b, 0, b.length, ps);
  assert.ok(!isWireError(p));
  for (
    const k of [
      "seq",
      "ack",
      "flags",
      "mss",
      "windowScale",
      "sackPermitted",
      "tsVal",
      "tsEcr",
      "sackCount",
    ] as const
  ) {
    assert.equal(p[k], h[k], k);
  }
  assert.deepEqual(p.sackBlocks.slice(0, 4), [10, 20, 30, 40]);
  assert.equal(p.payloadEnd - p.payloadOffset, 4);
  // an option with length 0 ends option parsing but the segment is still accepted
  const bad = b.slice();
  bad[20 + 4] = 99;
  bad[20 + 5] = 0;
  const q = parseTcp(bad, 0, bad.length);
  assert.ok(!isWireError(q));
  assert.equal(q.mss, 1460);
  assert.equal(q.hasTimestamps, false);
  assert.ok(isWireError(parseTcp(b, 0, 19)));
  assert.ok(isWireError(parseTcp(b, 0, hl - 1)), "data offset beyond segment");
});

Deno.test("tcp: timestamps read alike in the aligned layout (NOP, NOP, TS) and any other; a near miss is parsed in full", () => {
  const segment = (options: number[]) => {
    const b = new Uint8Array(20 + options.length);
    b[12] = (b.length / 4) << 4;
    b.set(options, 20);
    return parseTcp(b, 0, b.length);
  };
  const ts = [8, 10, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
  for (const options of [[1, 1, ...ts], [...ts, 1, 1], [1, ...ts, 0]]) {
    const p = segment(options);
    assert.ok(!isWireError(p));
    assert.equal(p.hasTimestamps, true, `${options}`);
    assert.equal(p.tsVal, 0x11223344);
    assert.equal(p.tsEcr, 0x55667788);
  }
  // NOP, NOP, then a timestamps option of the wrong length: no timestamps, as the full parse decides
  const bad = segment([1, 1, 8, 9, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
  assert.ok(!isWireError(bad));
  assert.equal(bad.hasTimestamps, false);
  // an MSS option in the same twelve bytes is still seen
  const mss = segment([2, 4, 0x05, 0xb4, 1, 1, 1, 1, 1, 1, 1, 0]);
  assert.ok(!isWireError(mss));
  assert.equal(mss.mss, 1460);
});

Deno.test("dhcp: round trip, overload, long options split and joined, truncation refused", () => {
  const m: DhcpMessage = {
    op: BOOTREPLY,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 0xdeadbeef,
    secs: 0,
    flags: 0x8000,
    ciaddr: 0,
    yiaddr: A,
    siaddr: B,
    giaddr: 0,
    chaddr: new Uint8Array(16).fill(7),
    sname: new Uint8Array(64),
    file: new Uint8Array(128),
    options: [[DhcpOption.MESSAGE_TYPE, optU8(2)], [DhcpOption.DNS_SERVERS, optIpv4List(Array(70).fill(B))]],
  };
  const b = new Uint8Array(1024);
  const n = emitDhcp(m, b, 0);
  const p = parseDhcp(b, 0, n);
  assert.ok(!isWireError(p));
  assert.equal(dhcpMessageType(p), 2);
  assert.equal(dhcpOption(p, DhcpOption.DNS_SERVERS)!.length, 280, "RFC 3396 split and rejoined");
  assert.equal(p.yiaddr, A);
  // overload: option 52=1 moves options into the file field
  const o = b.slice(0, 300);
  o.fill(0, 240);
  o.set([53, 1, 3, 52, 1, 1, 255], 240);
  o.set([12, 3, 0x61, 0x62, 0x63, 255], 108);
  const q = parseDhcp(o, 0, 300);
  assert.ok(!isWireError(q));
  assert.equal(new TextDecoder().decode(dhcpOption(q, DhcpOption.HOSTNAME)), "abc");
  const t = o.slice();
  t.set([12, 200], 243);
  assert.ok(isWireError(parseDhcp(t, 0, 300)), "option overrunning the message");
  assert.ok(isWireError(parseDhcp(o, 0, 239)));
});

Deno.test("dns: names with compression, pointer loops refused, synthesized answer parses", () => {
  const enc = encodeNames(["a.example.test", "b.example.test", "example.test"]);
  assert.ok(!isWireError(enc));
  // "a.example.test" = 16 bytes, "b" + pointer = 4, "example.test" = pointer only (2)
  assert.equal(enc.length, 16 + 4 + 2);
  const r1 = readName(enc, 0, 16, enc.length);
  assert.ok(!isWireError(r1));
  assert.equal(r1.name, "b.example.test");
  const loop = Uint8Array.of(0xc0, 0x00);
  assert.ok(isWireError(readName(loop, 0, 0, 2)));
  // query for host.slirp.internal A
  const name = encodeNames(["host.slirp.internal"]) as Uint8Array;
  const q = new Uint8Array(12 + name.length + 4);
  q.set([0x12, 0x34, 0x01, 0x00, 0, 1], 0);
  q.set(name, 12);
  q.set([0, 1, 0, 1], 12 + name.length);
  const out = new Uint8Array(512);
  const n = emitDnsResponse(
    q,
    0,
    q.length,
    [{ type: DNS_TYPE_A, ttl: 60, address: Uint8Array.of(10, 0, 2, 2) }],
    0,
    out,
    0,
  );
  assert.equal(typeof n, "number");
  const m = parseDns(out, 0, n as number);
  assert.ok(!isWireError(m));
  assert.equal(m.header.id, 0x1234);
  assert.equal(m.questions[0].name, "host.slirp.internal");
  assert.equal(m.answers[0].value, "10.0.2.2");
  assert.ok(m.answers[0].rdata instanceof Uint8Array);
  assert.ok(isWireError(parseDns(out, 0, (n as number) - 1)));
});

Deno.test("checksum: RFC 1071 example, RFC 1624 incremental updates match recomputation", () => {
  const b = Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7);
  assert.equal(internetChecksum(b, 0, 8), ~0xddf2 & 0xffff);
  const h = new Uint8Array(20);
  emitIpv4({ id: 1, ttl: 64, protocol: 17, src: A, dst: B }, h, 0, 0);
  const old = (h[10] << 8) | h[11];
  // change TTL/protocol word and destination address
  const oldWord = (h[8] << 8) | h[9];
  h[8] = 63;
  const c1 = checksumUpdate16(old, oldWord, (h[8] << 8) | h[9]);
  const newDst = parseAddr("127.0.0.1")!;
  const c2 = checksumUpdate32(c1, B, newDst);
  const fresh = new Uint8Array(20);
  emitIpv4({ id: 1, ttl: 63, protocol: 17, src: A, dst: newDst }, fresh, 0, 0);
  assert.equal(c2, (fresh[10] << 8) | fresh[11]);
});

Deno.test("WireError formats protocol and reason", () => {
  assert.equal(String(new WireError("udp", "Checksum mismatch")), "udp: Checksum mismatch");
});
