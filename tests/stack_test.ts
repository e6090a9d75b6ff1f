/**
 * One tenant's stack driven frame by frame over a real host (node sockets on loopback), with a manual
 * clock for the timer wheel.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  arpFrame,
  dhcpFrame,
  GW_MAC,
  ip,
  optIpv4List,
  pingFrame,
  StackHarness,
  udpFrame,
} from "./_frames.ts";
import { DhcpMessageType, dhcpMessageType, DhcpOption, dhcpOption, optU32 } from "../src/wire/dhcp.ts";
import { ipv4ToString } from "../src/wire/bytes.ts";
import { ARP_OP_REPLY } from "../src/wire/arp.ts";
import {
  ICMP_DEST_UNREACHABLE,
  ICMP_ECHO_REPLY,
  ICMP_UNREACH_ADMIN_PROHIBITED,
  ICMP_UNREACH_PORT,
} from "../src/wire/icmpv4.ts";
import { parseDns } from "../src/wire/dns.ts";
import { isWireError } from "../src/wire/bytes.ts";
import { startUdpEcho } from "./_services.ts";
import { parseUdp } from "../src/wire/udp.ts";
import { pseudoHeaderSumV4 } from "../src/wire/checksum.ts";

const MAC_A = 0x020000000001;
const MAC_B = 0x020000000002;
const MAC_C = 0x020000000003;
const GUEST = ip("10.0.2.15");

Deno.test("DHCP: DISCOVER/OFFER/REQUEST/ACK carries the plan's options", () => {
  const h = new StackHarness((c) => {
    c.mtu = 9000;
    c.domainName = "corp.test";
    c.searchDomains = ["corp.test", "lab.corp.test"];
  });
  const [offer] = h.send(dhcpFrame(MAC_A, DhcpMessageType.DISCOVER));
  assert.equal(dhcpMessageType(offer.dhcp!), DhcpMessageType.OFFER);
  assert.equal(ipv4ToString(offer.dhcp!.yiaddr), "10.0.2.15");
  // unicast to the offered address at the client's MAC (RFC 2131 §4.1, broadcast bit clear)
  assert.equal(offer.eth!.dst, MAC_A);
  const o = (code: number) => dhcpOption(offer.dhcp!, code);
  assert.deepEqual([...o(DhcpOption.SUBNET_MASK)!], [255, 255, 255, 0]);
  assert.deepEqual([...o(DhcpOption.ROUTER)!], [10, 0, 2, 2]);
  assert.deepEqual([...o(DhcpOption.DNS_SERVERS)!], [10, 0, 2, 3]);
  assert.deepEqual([...o(DhcpOption.INTERFACE_MTU)!], [0x23, 0x28]);
  assert.deepEqual([...o(DhcpOption.BROADCAST)!], [10, 0, 2, 255]);
  assert.deepEqual([...o(DhcpOption.SERVER_ID)!], [10, 0, 2, 2]);
  assert.equal(new TextDecoder().decode(o(DhcpOption.DOMAIN_NAME)), "corp.test");
  // RFC 3397 with compression: "corp.test" then "lab" + pointer
  assert.deepEqual([...o(DhcpOption.DOMAIN_SEARCH)!], [
    4,
    99,
    111,
    114,
    112,
    4,
    116,
    101,
    115,
    116,
    0,
    3,
    108,
    97,
    98,
    0xc0,
    0,
  ]);
  assert.ok(o(DhcpOption.LEASE_TIME) && o(DhcpOption.RENEWAL_TIME) && o(DhcpOption.REBINDING_TIME));
  const [ack] = h.send(
    dhcpFrame(MAC_A, DhcpMessageType.REQUEST, [[50, optIpv4List([GUEST])], [
      54,
      optIpv4List([ip("10.0.2.2")]),
    ]]),
  );
  assert.equal(dhcpMessageType(ack.dhcp!), DhcpMessageType.ACK);
  assert.equal(ack.dhcp!.yiaddr, GUEST);
  assert.equal(h.stack.dhcp.addressOf(MAC_A), GUEST);
  h.close();
});

Deno.test("DHCP: a full pool NAKs and stays silent instead of failing; RELEASE frees an address", () => {
  const h = new StackHarness((c) => (c.dhcpPoolSize = 2));
  for (const mac of [MAC_A, MAC_B]) {
    const [offer] = h.send(dhcpFrame(mac, DhcpMessageType.DISCOVER));
    h.send(dhcpFrame(mac, DhcpMessageType.REQUEST, [[50, optIpv4List([offer.dhcp!.yiaddr])]]));
  }
  assert.deepEqual(h.send(dhcpFrame(MAC_C, DhcpMessageType.DISCOVER)), []);
  assert.equal(h.drops("dhcp-pool-exhausted"), 1);
  const [nak] = h.send(dhcpFrame(MAC_C, DhcpMessageType.REQUEST, [[50, optIpv4List([GUEST])]]));
  assert.equal(dhcpMessageType(nak.dhcp!), DhcpMessageType.NAK);
  assert.equal(nak.eth!.dst, 0xffffffffffff);
  // outside the pool entirely
  const [nak2] = h.send(dhcpFrame(MAC_C, DhcpMessageType.REQUEST, [[50, optIpv4List([ip("10.0.2.200")])]]));
  assert.equal(dhcpMessageType(nak2.dhcp!), DhcpMessageType.NAK);
  h.send(dhcpFrame(MAC_A, DhcpMessageType.RELEASE, [], GUEST));
  const [offer] = h.send(dhcpFrame(MAC_C, DhcpMessageType.DISCOVER));
  assert.equal(offer.dhcp!.yiaddr, GUEST);
  h.close();
});

Deno.test("DHCP: the client id keeps the address across a MAC change; static lease by MAC; INFORM; DECLINE", () => {
  const h = new StackHarness((
    c,
  ) => (c.staticLeases = [{ mac: "02:00:00:00:00:03", address: "10.0.2.100", hostname: "fixed" }]));
  const cid: [number, Uint8Array] = [61, Uint8Array.of(255, 1, 2, 3, 4)];
  const [o1] = h.send(dhcpFrame(MAC_A, DhcpMessageType.DISCOVER, [cid]));
  h.send(dhcpFrame(MAC_A, DhcpMessageType.REQUEST, [cid, [50, optIpv4List([o1.dhcp!.yiaddr])]]));
  const [o2] = h.send(dhcpFrame(MAC_B, DhcpMessageType.DISCOVER, [cid]));
  assert.equal(o2.dhcp!.yiaddr, o1.dhcp!.yiaddr, "same client id, new MAC, same address");
  const [fixed] = h.send(dhcpFrame(MAC_C, DhcpMessageType.DISCOVER));
  assert.equal(ipv4ToString(fixed.dhcp!.yiaddr), "10.0.2.100");
  assert.equal(new TextDecoder().decode(dhcpOption(fixed.dhcp!, DhcpOption.HOSTNAME)), "fixed");
  const [inform] = h.send(dhcpFrame(MAC_A, DhcpMessageType.INFORM, [], GUEST));
  assert.equal(dhcpMessageType(inform.dhcp!), DhcpMessageType.ACK);
  assert.equal(inform.dhcp!.yiaddr, 0);
  assert.equal(dhcpOption(inform.dhcp!, DhcpOption.LEASE_TIME), undefined);
  assert.equal(inform.ip!.dst, GUEST);
  // DECLINE: the client found the address in use; the next client gets another one
  const mac = 0x020000000009;
  const [o3] = h.send(dhcpFrame(mac, DhcpMessageType.DISCOVER));
  h.send(dhcpFrame(mac, DhcpMessageType.REQUEST, [[50, optIpv4List([o3.dhcp!.yiaddr])]]));
  h.send(dhcpFrame(mac, DhcpMessageType.DECLINE, [[50, optIpv4List([o3.dhcp!.yiaddr])]]));
  const [o4] = h.send(dhcpFrame(mac, DhcpMessageType.DISCOVER));
  assert.notEqual(o4.dhcp!.yiaddr, o3.dhcp!.yiaddr);
  h.close();
});

Deno.test("DHCP: an unconfirmed offer expires on the timer wheel, a lease at its lease time", () => {
  const h = new StackHarness((c) => (c.leaseTimeSec = 120));
  h.send(dhcpFrame(MAC_A, DhcpMessageType.DISCOVER));
  assert.equal(h.stack.dhcp.size, 1);
  h.advance(31_000);
  assert.equal(h.stack.dhcp.size, 0);
  const [o] = h.send(dhcpFrame(MAC_A, DhcpMessageType.DISCOVER));
  h.send(dhcpFrame(MAC_A, DhcpMessageType.REQUEST, [[50, optIpv4List([o.dhcp!.yiaddr])]]));
  h.advance(60_000);
  assert.equal(h.stack.dhcp.size, 1);
  h.advance(61_000);
  assert.equal(h.stack.dhcp.size, 0);
  h.close();
});

Deno.test("ARP: answers for gateway and DNS; probes for free addresses get no reply (RFC 5227)", () => {
  const h = new StackHarness();
  const [r] = h.send(arpFrame(MAC_A, GUEST, ip("10.0.2.2")));
  assert.equal(r.arp!.op, ARP_OP_REPLY);
  assert.equal(r.arp!.senderMac, GW_MAC);
  assert.equal(r.arp!.targetIp, GUEST);
  assert.equal(h.raw.at(-1)!.length, 60, "padded to the Ethernet minimum");
  assert.equal(h.send(arpFrame(MAC_A, GUEST, ip("10.0.2.3")))[0].arp!.senderIp, ip("10.0.2.3"));
  assert.deepEqual(h.send(arpFrame(MAC_A, 0, GUEST)), [], "probe for a free address");
  assert.deepEqual(h.send(arpFrame(MAC_A, GUEST, ip("10.0.2.50"))), [], "nobody at .50");
  const [probeGw] = h.send(arpFrame(MAC_A, 0, ip("10.0.2.2")));
  assert.equal(probeGw.arp!.targetIp, 0, "probe for our address is answered: conflict");
  assert.deepEqual(h.send(arpFrame(MAC_B, ip("10.0.2.2"), ip("10.0.2.2"))), []);
  assert.equal(h.drops("arp-claims-gateway-address"), 1);
  assert.equal(h.stack.neighbours.get(GUEST), MAC_A);
  h.close();
});

Deno.test("ICMP: echo to the gateway is answered by the stack with id, seq and data intact", () => {
  const h = new StackHarness();
  h.send(arpFrame(MAC_A, GUEST, ip("10.0.2.2")));
  const data = new TextEncoder().encode("0123456789abcdef0123456789abcdef0123456789abcdef");
  const [r] = h.send(pingFrame(MAC_A, GUEST, ip("10.0.2.2"), 0x4242, 7, data));
  assert.equal(r.icmp!.type, ICMP_ECHO_REPLY);
  assert.equal(r.icmp!.id, 0x4242);
  assert.equal(r.icmp!.seq, 7);
  assert.equal(r.ip!.src, ip("10.0.2.2"));
  const frame = h.raw.at(-1)!;
  assert.deepEqual(frame.subarray(r.icmp!.dataOffset, r.icmp!.dataEnd), data);
  h.close();
});

Deno.test("malformed frames are counted by reason and harm nothing", () => {
  const h = new StackHarness();
  const good = pingFrame(MAC_A, GUEST, ip("10.0.2.2"), 1, 1, new Uint8Array(8));
  const bad = good.slice();
  bad[14 + 10] ^= 0xff; // IPv4 header checksum
  h.send(arpFrame(MAC_A, GUEST, ip("10.0.2.2")));
  assert.deepEqual(h.send(bad), []);
  assert.deepEqual(h.send(good.subarray(0, 10)), []);
  const trunc = good.slice();
  trunc[14 + 3] = 200; // total length beyond the frame
  assert.deepEqual(h.send(trunc), []);
  assert.equal(h.drops("ipv4-malformed"), 2);
  assert.equal(h.drops("ethernet-malformed"), 1);
  assert.equal(h.send(good).length, 1, "still serving");
  h.close();
});

Deno.test("UDP NAT: round trip to a loopback service via 10.0.2.2; policy refusal and flow limit answer ICMP", async () => {
  const echo = await startUdpEcho();
  const h = new StackHarness((c) => {
    c.maxUdpFlows = 1;
    c.policy = { defaultAction: "allow", rules: [{ action: "deny", cidr: "127.0.0.1/32", ports: "9" }] };
  });
  try {
    h.send(arpFrame(MAC_A, GUEST, ip("10.0.2.2")));
    h.send(udpFrame(MAC_A, GUEST, ip("10.0.2.2"), 40000, echo.port, new TextEncoder().encode("hi")));
    const r = await h.waitFor((d) => d.udp?.dstPort === 40000);
    assert.equal(r.ip!.src, ip("10.0.2.2"));
    assert.equal(r.udp!.srcPort, echo.port);
    const frame = h.raw[h.out.indexOf(r)];
    assert.equal(
      new TextDecoder().decode(frame.subarray(r.udp!.payloadOffset, r.udp!.payloadEnd)),
      "echo:hi",
    );
    const deny = h.send(udpFrame(MAC_A, GUEST, ip("10.0.2.2"), 40000, 9, new Uint8Array(1)));
    assert.equal(deny[0].icmp!.type, ICMP_DEST_UNREACHABLE);
    assert.equal(deny[0].icmp!.code, ICMP_UNREACH_ADMIN_PROHIBITED);
    const full = h.send(udpFrame(MAC_A, GUEST, ip("10.0.2.2"), 40001, echo.port, new Uint8Array(1)));
    assert.equal(full[0].icmp!.code, ICMP_UNREACH_PORT);
    assert.equal(h.drops("udp-flow-limit"), 1);
    assert.equal(h.stack.udp.size, 1);
    // idle expiry on the wheel frees the flow
    h.advance(61_000);
    assert.equal(h.stack.udp.size, 0);
  } finally {
    h.close();
    echo.close();
  }
});

Deno.test("DNS: an upstream that never answers yields SERVFAIL after every upstream was tried", async () => {
  const silent = dgram.createSocket("udp4");
  await new Promise<void>((r) => silent.bind(0, "127.0.0.1", r));
  let seen = 0;
  silent.on("message", () => seen++);
  const port = silent.address().port;
  const h = new StackHarness((c) => {
    c.dnsUpstreams = [`127.0.0.1:${port}`, `127.0.0.1:${port}`];
    c.dnsTimeoutMs = 1000;
  });
  try {
    h.send(arpFrame(MAC_A, GUEST, ip("10.0.2.2")));
    const q = Uint8Array.of(0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 0x77, 0x77, 0x77, 0, 0, 1, 0, 1);
    h.send(udpFrame(MAC_A, GUEST, ip("10.0.2.3"), 5353, 53, q));
    while (seen < 1) await new Promise((r) => setTimeout(r, 5));
    h.advance(1100);
    while (seen < 2) await new Promise((r) => setTimeout(r, 5));
    h.advance(1100);
    const r = await h.waitFor((d) => d.udp?.srcPort === 53);
    const m = parseDns(h.raw.at(-1)!, r.udp!.payloadOffset, r.udp!.payloadEnd);
    assert.ok(!isWireError(m));
    assert.equal(m.header.id, 0xabcd);
    assert.equal(m.header.flags & 0xf, 2);
    assert.equal(h.stack.dns.pending, 0);
  } finally {
    h.close();
    silent.close();
  }
});

Deno.test("DHCP server id option from another server makes us forget the offer", () => {
  const h = new StackHarness();
  h.send(dhcpFrame(MAC_A, DhcpMessageType.DISCOVER));
  assert.deepEqual(
    h.send(
      dhcpFrame(MAC_A, DhcpMessageType.REQUEST, [[54, optU32(ip("10.0.2.99"))], [50, optIpv4List([GUEST])]]),
    ),
    [],
  );
  assert.equal(h.stack.dhcp.size, 0);
  h.close();
});

Deno.test("UDP NAT: a reply larger than the guest MTU arrives as RFC 791 fragments that reassemble exactly", async () => {
  const echo = await startUdpEcho();
  const h = new StackHarness();
  try {
    h.send(arpFrame(MAC_A, GUEST, ip("10.0.2.2")));
    const payload = new Uint8Array(3000);
    for (let i = 0; i < payload.length; i++) payload[i] = i * 7;
    h.send(udpFrame(MAC_A, GUEST, ip("10.0.2.2"), 40100, echo.port, payload));
    await h.waitFor((d) => d.ip !== undefined && d.ip.moreFragments === false && d.ip.fragmentOffset > 0);
    const frags = h.out.map((d, i) => ({ d, raw: h.raw[i] })).filter(({ d }) =>
      d.ip && (d.ip.moreFragments || d.ip.fragmentOffset > 0)
    );
    assert.equal(frags.length, 3, "3013 bytes of UDP at MTU 1500: 1480 + 1480 + 53");
    assert.equal(new Set(frags.map(({ d }) => d.ip!.id)).size, 1, "one IP id");
    const datagram = new Uint8Array(8 + 5 + payload.length);
    for (const { d, raw } of frags) {
      assert.equal(d.ip!.fragmentOffset % 8, 0);
      datagram.set(raw.subarray(d.ip!.payloadOffset, d.ip!.payloadEnd), d.ip!.fragmentOffset);
    }
    const udp = parseUdp(
      datagram,
      0,
      datagram.length,
      pseudoHeaderSumV4(ip("10.0.2.2"), GUEST, 17, datagram.length),
    );
    assert.ok(!isWireError(udp), "UDP checksum over the reassembled datagram");
    assert.equal(new TextDecoder().decode(datagram.subarray(8, 13)), "echo:");
    assert.deepEqual(datagram.subarray(13), payload);
    assert.equal(h.stack.counters.udpFragmentedDatagrams, 1);
  } finally {
    h.close();
    echo.close();
  }
});

/** Splits the IPv4 datagram of `frame` into fragments of `per` payload bytes (a multiple of 8). */
function fragment(frame: Uint8Array, per: number): Uint8Array[] {
  const hl = (frame[14] & 0xf) * 4;
  const total = ((frame[16] << 8) | frame[17]) - hl;
  const out: Uint8Array[] = [];
  for (let off = 0; off < total; off += per) {
    const n = Math.min(per, total - off);
    const f = new Uint8Array(Math.max(60, 14 + hl + n));
    f.set(frame.subarray(0, 14 + hl));
    f.set(frame.subarray(14 + hl + off, 14 + hl + off + n), 14 + hl);
    const mf = off + n < total ? 0x2000 : 0;
    f[16] = (hl + n) >> 8;
    f[17] = (hl + n) & 0xff;
    f[20] = (mf | (off >> 3)) >> 8;
    f[21] = (mf | (off >> 3)) & 0xff;
    f[24] = f[25] = 0;
    let sum = 0;
    for (let i = 0; i < hl; i += 2) sum += (f[14 + i] << 8) | f[15 + i];
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    f[24] = (~sum >> 8) & 0xff;
    f[25] = ~sum & 0xff;
    out.push(f);
  }
  return out;
}

Deno.test("IPv4 reassembly: a fragmented guest datagram is reassembled (any order); overlaps and stragglers are dropped", async () => {
  const echo = await startUdpEcho();
  const h = new StackHarness();
  try {
    h.send(arpFrame(MAC_A, GUEST, ip("10.0.2.2")));
    const payload = new Uint8Array(2500).fill(0x61);
    const frags = fragment(udpFrame(MAC_A, GUEST, ip("10.0.2.2"), 40200, echo.port, payload), 1024);
    assert.equal(frags.length, 3);
    for (const f of [frags[2], frags[0], frags[1]]) h.send(f); // out of order
    const r = await h.waitFor((d) => d.ip !== undefined && d.ip.fragmentOffset > 0 && !d.ip.moreFragments);
    assert.ok(r, "the 2505-byte echo came back (fragmented toward the guest)");
    assert.equal(echo.received, 1);
    // overlapping fragments discard the datagram
    const again = fragment(udpFrame(MAC_A, GUEST, ip("10.0.2.2"), 40201, echo.port, payload), 1024);
    const overlap = fragment(udpFrame(MAC_A, GUEST, ip("10.0.2.2"), 40201, echo.port, payload), 512);
    h.send(again[0]);
    h.send(overlap[1]); // 512..1024 overlaps 0..1024
    assert.equal(h.drops("ipv4-fragment-overlap"), 1);
    // a datagram missing a fragment times out on the wheel
    h.send(again[1]);
    h.advance(6000);
    assert.equal(h.drops("ipv4-reassembly-timeout"), 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(echo.received, 1, "nothing incomplete was forwarded");
  } finally {
    h.close();
    echo.close();
  }
});
