/**
 * Test helpers for IPv6: frames a guest sends (Ethernet + IPv6 + a transport), and the IPv6 packets a stack
 * sent, parsed.
 */
import { emitEthernet, ETHERTYPE_IPV6 } from "../src/wire/ethernet.ts";
import { emitIpv6, type Ipv6Header, parseIpv6, parseIpv6Address } from "../src/wire/ipv6.ts";
import { emitTcp, newTcpHeader, TCP_SYN, tcpHeaderLength } from "../src/wire/tcp.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "../src/wire/ipv4.ts";
import { checksumSum, pseudoHeaderSumV6 } from "../src/wire/checksum.ts";
import { isWireError, put16 } from "../src/wire/bytes.ts";
import { GW_MAC, type StackHarness } from "./_frames.ts";

/** The guest's MAC in IPv6 tests. */
export const MAC6 = 0x02000000006a;
/** An IPv6 address from text (the test's own literals). */
export const a6 = (s: string): Uint8Array => parseIpv6Address(s)!;

/** An Ethernet frame from the guest carrying an IPv6 packet with `l4` (its checksum already set) as payload. */
export function frame6(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  l4: Uint8Array,
  opts: { hopLimit?: number; dstMac?: number; srcMac?: number } = {},
): Uint8Array {
  const f = new Uint8Array(Math.max(60, 54 + l4.length));
  emitEthernet(f, 0, opts.dstMac ?? GW_MAC, opts.srcMac ?? MAC6, ETHERTYPE_IPV6);
  emitIpv6(f, 14, l4.length, protocol, opts.hopLimit ?? 64, src, 0, dst, 0);
  f.set(l4, 54);
  return f;
}

/** A TCP SYN (MSS 1440) from `src`:`sport` to `dst`:`dport` over IPv6, with `hopLimit` (64 unless told). */
export function tcpSyn6From(
  src: Uint8Array,
  dst: Uint8Array,
  dport: number,
  sport: number,
  hopLimit = 64,
): Uint8Array {
  const t = newTcpHeader();
  Object.assign(t, {
    srcPort: sport,
    dstPort: dport,
    seq: 1000,
    ack: 0,
    flags: TCP_SYN,
    window: 65535,
    mss: 1440,
  });
  const hl = tcpHeaderLength(t);
  const l4 = new Uint8Array(hl);
  emitTcp(t, l4, 0, 0, pseudoHeaderSumV6(src, 0, dst, 0, IPPROTO_TCP, hl));
  return frame6(src, dst, IPPROTO_TCP, l4, { hopLimit });
}

/** A UDP datagram from `src`:`sport` to `dst`:`dport` over IPv6, with its (mandatory) checksum. */
export function udp6Frame(
  src: Uint8Array,
  dst: Uint8Array,
  sport: number,
  dport: number,
  data: Uint8Array,
  hopLimit = 64,
): Uint8Array {
  const udp = new Uint8Array(8 + data.length);
  put16(udp, 0, sport);
  put16(udp, 2, dport);
  put16(udp, 4, udp.length);
  udp.set(data, 8);
  const ck = ~checksumSum(udp, 0, udp.length, pseudoHeaderSumV6(src, 0, dst, 0, IPPROTO_UDP, udp.length)) &
    0xffff;
  put16(udp, 6, ck === 0 ? 0xffff : ck);
  return frame6(src, dst, IPPROTO_UDP, udp, { hopLimit });
}

/** The IPv6 packets a stack sent since output `from`, parsed (each with its frame). */
export function sent6(h: StackHarness, from = 0): { frame: Uint8Array; ip: Ipv6Header }[] {
  const out: { frame: Uint8Array; ip: Ipv6Header }[] = [];
  for (const f of h.raw.slice(from)) {
    if (((f[12] << 8) | f[13]) !== ETHERTYPE_IPV6) continue;
    const ip = parseIpv6(f, 14, f.length);
    if (!isWireError(ip)) out.push({ frame: f, ip });
  }
  return out;
}
