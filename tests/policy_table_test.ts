/**
 * Egress policy as a table: every range a multi-tenant guest may not reach by default, over TCP, UDP and ICMP,
 * and a tenant's own allow/deny rules and their precedence — through the relay's own config path
 * (`tenantStackConfig`) into a Stack on the manual clock. The host is a `DialRecorder`: a regressed rule
 * shows up as a recorded dial, never as a packet to a private or metadata address.
 */
import assert from "node:assert/strict";
import { arpFrame, ip, pingFrame, StackHarness, tcpFrame, udpFrame } from "./_frames.ts";
import { DialRecorder } from "./_dial_recorder.ts";
import { MULTI_TENANT_DENIED, type TenantSpec, tenantStackConfig } from "../src/relay/tenant_config.ts";
import { defaultStackConfig, parseHostForward } from "../src/stack/config.ts";
import { parseCidr } from "../src/wire/bytes.ts";
import { ICMP_DEST_UNREACHABLE, ICMP_UNREACH_ADMIN_PROHIBITED } from "../src/wire/icmpv4.ts";
import { TCP_SYN } from "../src/wire/tcp.ts";
import { ipv4ToString } from "../src/wire/bytes.ts";
import type { Dissection } from "./_dissect.ts";
import { a6, sent6, tcpSyn6From, udp6Frame } from "./_frames6.ts";
import { ipv6ToString, parseCidrV6 } from "../src/wire/ipv6.ts";
import {
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_UNREACH_ADDRESS,
  ICMPV6_UNREACH_ADMIN_PROHIBITED,
} from "../src/wire/icmpv6.ts";

const GUEST6 = a6("fd00::6a");

const MAC = 0x020000000001;
const GUEST = ip("10.0.2.15");
type Protocol = "tcp" | "udp" | "icmp";
const PROTOCOLS: Protocol[] = ["tcp", "udp", "icmp"];

/** A stack configured for `spec` exactly as the relay configures a tenant's. */
function tenant(spec: Omit<TenantSpec, "id">, multiTenant = true) {
  let recorder!: DialRecorder;
  const h = new StackHarness(
    (c) => {
      const t = tenantStackConfig({ id: "t", ...spec }, defaultStackConfig(), multiTenant, parseHostForward);
      Object.assign(c, t, { dnsUpstreams: ["127.0.0.1:9"], newFlowsPerSecond: 0 });
    },
    (clock) => (recorder = new DialRecorder(clock)),
  );
  h.send(arpFrame(MAC, GUEST, ip("10.0.2.2")));
  return { h, dials: recorder.dials };
}

let sport = 30000;

/** The guest opens one flow of `protocol` to `dst:port`; returns the frames the stack answered at once. */
function open(h: StackHarness, protocol: Protocol, dst: number, port: number): Dissection[] {
  sport++;
  if (protocol === "tcp") {
    return h.send(
      tcpFrame({ srcMac: MAC, src: GUEST, dst, sport, dport: port, seq: 1, ack: 0, flags: TCP_SYN }),
    );
  }
  if (protocol === "udp") return h.send(udpFrame(MAC, GUEST, dst, sport, port, new Uint8Array([1, 2, 3])));
  return h.send(pingFrame(MAC, GUEST, dst, sport, 1, new Uint8Array(8)));
}

/** Lets the recorder's asynchronous answers (refused connects) run. */
const settle = () => new Promise((r) => setTimeout(r, 0));

function assertDenied(
  h: StackHarness,
  dials: unknown[],
  protocol: Protocol,
  dst: number,
  port: number,
  what: string,
): void {
  const before = h.drops(`policy-denied-${protocol}`);
  const dialsBefore = dials.length;
  const out = open(h, protocol, dst, port);
  assert.equal(dials.length, dialsBefore, `${what}: nothing dialled`);
  assert.equal(
    h.drops(`policy-denied-${protocol}`),
    before + 1,
    `${what}: counted as policy-denied-${protocol}`,
  );
  // RFC 1812 §5.2.7.1: communication administratively prohibited, quoting the guest's datagram
  assert.equal(out.length, 1, `${what}: one answer`);
  assert.equal(out[0].icmp?.type, ICMP_DEST_UNREACHABLE, what);
  assert.equal(out[0].icmp?.code, ICMP_UNREACH_ADMIN_PROHIBITED, what);
  assert.equal(out[0].ip?.dst, GUEST);
}

/**
 * Multicast and broadcast never leave, whatever the policy says, and get no ICMP error (RFC 1122 §3.2.2: none
 * about a datagram sent to a broadcast or multicast address).
 */
function assertNotForwarded(
  h: StackHarness,
  dials: unknown[],
  protocol: Protocol,
  dst: number,
  what: string,
) {
  const before = h.drops("broadcast-not-forwarded");
  const dialsBefore = dials.length;
  assert.deepEqual(open(h, protocol, dst, 80), [], `${what}: no answer`);
  assert.equal(dials.length, dialsBefore, `${what}: nothing dialled`);
  assert.equal(h.drops("broadcast-not-forwarded"), before + 1, `${what}: counted`);
}

function assertDialled(
  h: StackHarness,
  dials: { protocol: string; address: string; port: number }[],
  protocol: Protocol,
  dst: number,
  port: number,
  real: string,
): void {
  const dialsBefore = dials.length;
  const deniedBefore = h.drops(`policy-denied-${protocol}`);
  open(h, protocol, dst, port);
  assert.equal(h.drops(`policy-denied-${protocol}`), deniedBefore, `${real} ${protocol} not denied`);
  assert.deepEqual(dials.slice(dialsBefore), [{
    protocol,
    address: real,
    port: protocol === "icmp" ? 0 : port,
  }]);
}

/** The first and last host addresses of a range, and one in the middle. */
function samples(cidr: string): number[] {
  const c = parseCidr(cidr)!;
  const size = 2 ** (32 - c.prefix);
  return [c.network + 1, c.network + Math.floor(size / 2) + 7, c.network + size - 2].map((a) => a >>> 0);
}

Deno.test("policy table: every default-denied range is refused over TCP, UDP and ICMP before any dial", async () => {
  const { h, dials } = tenant({});
  try {
    const v4 = MULTI_TENANT_DENIED.filter((c) => !c.includes(":"));
    assert.equal(v4.length, 15, "the table below covers every IPv4 range of the default list");
    for (
      const cidr of [
        "0.0.0.0/8", // this network
        "10.0.0.0/8", // RFC 1918
        "100.64.0.0/10", // shared address space (carrier-grade NAT)
        "127.0.0.0/8", // loopback
        "169.254.0.0/16", // link-local, cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24", // IETF protocol assignments
        "192.0.2.0/24", // documentation
        "192.88.99.0/24", // 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15", // benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4", // multicast
        "240.0.0.0/4", // reserved, and the limited broadcast 255.255.255.255 at its top
      ]
    ) {
      assert.ok(MULTI_TENANT_DENIED.includes(cidr), `${cidr} is in the default list`);
      for (const dst of samples(cidr)) {
        for (const p of PROTOCOLS) {
          if (cidr === "224.0.0.0/4") {
            assertNotForwarded(h, dials, p, dst, `${ipv4ToString(dst)} (${cidr}) ${p}`);
          } else assertDenied(h, dials, p, dst, 80, `${ipv4ToString(dst)} (${cidr}) ${p}`);
        }
      }
    }
    for (const p of PROTOCOLS) assertNotForwarded(h, dials, p, 0xffffffff, `255.255.255.255 ${p}`);
    for (const p of PROTOCOLS) assertDenied(h, dials, p, ip("169.254.169.254"), 80, `metadata ${p}`);
    // the gateway's alias for the relay host's loopback is loopback too
    for (const p of ["tcp", "udp"] as const) assertDenied(h, dials, p, ip("10.0.2.2"), 8080, `10.0.2.2 ${p}`);
    // control: an ordinary public address is dialled (by the recorder, which sends nothing)
    for (const p of PROTOCOLS) assertDialled(h, dials, p, ip("93.184.216.34"), 443, "93.184.216.34");
    await settle();
  } finally {
    h.close();
  }
});

Deno.test("policy table: single-user mode denies nothing by default; 10.0.2.2 is the host's loopback", async () => {
  const { h, dials } = tenant({}, false);
  try {
    for (const p of ["tcp", "udp"] as const) assertDialled(h, dials, p, ip("10.0.2.2"), 8080, "127.0.0.1");
    assertDialled(h, dials, "tcp", ip("192.168.1.1"), 80, "192.168.1.1");
    await settle();
  } finally {
    h.close();
  }
});

Deno.test("policy table: a tenant's allow opens exactly its address, port and protocol", async () => {
  const { h, dials } = tenant({
    policy: { allow: ["10.1.2.3/32:8080/tcp", "169.254.169.254:80", "100.64.0.0/10"] },
  });
  try {
    assertDialled(h, dials, "tcp", ip("10.1.2.3"), 8080, "10.1.2.3");
    assertDenied(h, dials, "tcp", ip("10.1.2.3"), 8081, "other port of an allowed address");
    assertDenied(h, dials, "udp", ip("10.1.2.3"), 8080, "other protocol of an allowed address");
    assertDenied(h, dials, "tcp", ip("10.1.2.4"), 8080, "neighbour of an allowed address");
    assertDialled(h, dials, "tcp", ip("169.254.169.254"), 80, "169.254.169.254");
    assertDialled(h, dials, "udp", ip("169.254.169.254"), 80, "169.254.169.254");
    assertDenied(h, dials, "tcp", ip("169.254.169.254"), 8080, "metadata on another port");
    // an allow without port or protocol covers ICMP too
    assertDialled(h, dials, "icmp", ip("100.100.1.1"), 0, "100.100.1.1");
    assertDenied(h, dials, "icmp", ip("169.254.169.254"), 0, "ICMP to an address allowed only on port 80");
    await settle();
  } finally {
    h.close();
  }
});

Deno.test("policy table: deny rules close public addresses; allow is tried before deny; default deny", async () => {
  const { h, dials } = tenant({
    policy: { allow: ["203.0.113.7/32:443"], deny: ["93.184.0.0/16", "8.8.8.8/32/udp", "203.0.113.0/24"] },
  });
  try {
    for (const p of PROTOCOLS) assertDenied(h, dials, p, ip("93.184.216.34"), 443, `denied public ${p}`);
    assertDenied(h, dials, "udp", ip("8.8.8.8"), 53, "deny narrowed to UDP");
    assertDialled(h, dials, "tcp", ip("8.8.8.8"), 53, "8.8.8.8");
    assertDialled(h, dials, "icmp", ip("8.8.8.8"), 0, "8.8.8.8");
    // the tenant's allow comes first: it wins over its own broader deny and over the default list
    assertDialled(h, dials, "tcp", ip("203.0.113.7"), 443, "203.0.113.7");
    assertDenied(h, dials, "tcp", ip("203.0.113.7"), 80, "the same address off the allowed port");
    await settle();
  } finally {
    h.close();
  }
  const only = tenant({ policy: { defaultAction: "deny", allow: ["1.1.1.1/32"] } });
  try {
    assertDialled(only.h, only.dials, "udp", ip("1.1.1.1"), 53, "1.1.1.1");
    for (const p of PROTOCOLS) assertDenied(only.h, only.dials, p, ip("1.0.0.1"), 53, `default deny ${p}`);
    await settle();
  } finally {
    only.h.close();
  }
});

/** The second, a middle and the next-to-last address of an IPv6 range (the address itself for a /128). */
function samples6(cidr: string): Uint8Array[] {
  const c = parseCidrV6(cidr)!;
  if (c.prefix === 128) return [c.network];
  const at = (fill: number, last: number) => {
    const a = c.network.slice();
    for (let bit = c.prefix; bit < 128; bit++) if (fill) a[bit >> 3] |= 0x80 >> (bit & 7);
    a[15] = (a[15] & ~0xff) | last;
    return a;
  };
  const middle = c.network.slice();
  middle[c.prefix >> 3] |= 0x80 >> (c.prefix & 7); // the range's upper half
  middle[15] |= 7;
  return [at(0, 1), middle, at(1, 0xfe)];
}

Deno.test("policy table: every default-denied IPv6 range is refused over TCP and UDP before any dial", () => {
  const { h, dials } = tenant({});
  try {
    const v6 = MULTI_TENANT_DENIED.filter((c) => c.includes(":"));
    assert.deepEqual(v6, [
      "::/128", // unspecified
      "::1/128", // loopback
      "::/96", // IPv4-compatible (deprecated)
      "100::/64", // discard-only
      "2001::/23", // IETF protocol assignments: Teredo, benchmarking, ORCHID
      "2001:db8::/32", // documentation
      "2002::/16", // 6to4: embeds any IPv4 address
      "fc00::/7", // unique local (the tenant's own prefix is the relay's, refused before policy)
      "fec0::/10", // site-local (deprecated)
      "fe80::/10", // link-local: no host behind it
      "ff00::/8", // multicast: never forwarded
    ]);
    let sport = 52000;
    for (const cidr of v6) {
      for (const dst of samples6(cidr)) {
        for (const p of ["tcp", "udp"] as const) {
          const what = `${ipv6ToString(dst)} (${cidr}) ${p}`;
          const before = h.raw.length, dialsBefore = dials.length;
          h.send(
            p === "tcp"
              ? tcpSyn6From(GUEST6, dst, 80, sport++)
              : udp6Frame(GUEST6, dst, sport++, 80, Uint8Array.of(1)),
          );
          assert.equal(dials.length, dialsBefore, `${what}: nothing dialled`);
          const errors = sent6(h, before).filter((x) =>
            x.frame[x.ip.payloadOffset] === ICMPV6_DEST_UNREACHABLE
          );
          if (cidr === "ff00::/8") {
            assert.equal(errors.length, 0, `${what}: no error about a multicast destination`);
            continue;
          }
          assert.equal(errors.length, 1, `${what}: one ICMPv6 error`);
          // link-local and the tenant's own prefix have no host behind them; the rest is refused by policy
          const own = cidr === "fe80::/10" || (cidr === "fc00::/7" && dst[0] === 0xfd && dst[1] === 0);
          const code = errors[0].frame[errors[0].ip.payloadOffset + 1];
          assert.equal(code, own ? ICMPV6_UNREACH_ADDRESS : ICMPV6_UNREACH_ADMIN_PROHIBITED, what);
        }
      }
    }
    // control: a public address is dialled (by the recorder, which sends nothing)
    h.send(tcpSyn6From(GUEST6, a6("2a00:1450::1"), 443, sport++));
    assert.deepEqual(dials.at(-1), { protocol: "tcp", address: "2a00:1450::1", port: 443 });
  } finally {
    h.close();
  }
});
