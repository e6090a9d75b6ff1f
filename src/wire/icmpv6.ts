/**
 * ICMPv6 (RFC 4443) and the Neighbor Discovery messages built on it (RFC 4861 §4), with the options a
 * gateway sends and reads (§4.6; RDNSS and DNSSL from RFC 8106).
 *
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |     Type      |     Code      |          Checksum             |
 * |                         Message Body                          |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * ```
 * The checksum covers the IPv6 pseudo-header (RFC 4443 §2.3), so parsing takes its partial sum.
 * @module
 */
import { mac48, put16, put32, putMac48, u32, WireError } from "./bytes.ts";
import { checksumSum } from "./checksum.ts";

export const ICMPV6_HEADER_LEN = 8;

export const ICMPV6_DEST_UNREACHABLE = 1;
export const ICMPV6_PACKET_TOO_BIG = 2;
export const ICMPV6_TIME_EXCEEDED = 3;
export const ICMPV6_PARAMETER_PROBLEM = 4;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;
export const ICMPV6_MLD_QUERY = 130;
export const ICMPV6_MLD_REPORT = 131;
export const ICMPV6_MLD_DONE = 132;
export const NDP_ROUTER_SOLICITATION = 133;
export const NDP_ROUTER_ADVERTISEMENT = 134;
export const NDP_NEIGHBOR_SOLICITATION = 135;
export const NDP_NEIGHBOR_ADVERTISEMENT = 136;
export const NDP_REDIRECT = 137;

/** Whether an ICMPv6 type is one of Neighbor Discovery's five (RFC 4861 §4). */
export function isNdpType(type: number): boolean {
  return type >= NDP_ROUTER_SOLICITATION && type <= NDP_REDIRECT;
}
export const ICMPV6_MLDV2_REPORT = 143;

/** Destination unreachable codes (RFC 4443 §3.1). */
export const ICMPV6_UNREACH_NO_ROUTE = 0;
export const ICMPV6_UNREACH_ADMIN_PROHIBITED = 1;
export const ICMPV6_UNREACH_ADDRESS = 3;
export const ICMPV6_UNREACH_PORT = 4;

/** NDP option types (RFC 4861 §4.6, RFC 8106 §5). */
export const NDP_OPT_SOURCE_LLADDR = 1;
export const NDP_OPT_TARGET_LLADDR = 2;
export const NDP_OPT_PREFIX_INFO = 3;
export const NDP_OPT_MTU = 5;
export const NDP_OPT_RDNSS = 25;
export const NDP_OPT_DNSSL = 31;

/** Neighbor Advertisement flags (RFC 4861 §4.4), in the first byte after the checksum. */
export const NA_FLAG_ROUTER = 0x80;
export const NA_FLAG_SOLICITED = 0x40;
export const NA_FLAG_OVERRIDE = 0x20;

/** Router Advertisement flag: other configuration (DNS) by DHCPv6 (RFC 4861 §4.2). */
export const RA_FLAG_OTHER = 0x40;

/** A parsed ICMPv6 message; offsets absolute. */
export interface Icmpv6Message {
  type: number;
  code: number;
  /** The 4 bytes after the checksum (id<<16|seq for echo, MTU for packet too big, flags for NA). */
  rest: number;
  /** Where the body after those 4 bytes starts (echo data, NS target, options of RS). */
  bodyOffset: number;
  end: number;
}

/**
 * Parses an ICMPv6 message in `buf[off, end)`, verifying its checksum against the pseudo-header sum
 * `pseudo` (-1 skips the check).
 */
export function parseIcmpv6(
  buf: Uint8Array,
  off: number,
  end: number,
  pseudo: number,
): Icmpv6Message | WireError {
  if (end - off < ICMPV6_HEADER_LEN) {
    return new WireError("icmpv6", `Message of ${end - off} bytes is shorter than 8`);
  }
  if (pseudo >= 0 && checksumSum(buf, off, end - off, pseudo) !== 0xffff) {
    return new WireError("icmpv6", "Checksum mismatch");
  }
  return { type: buf[off], code: buf[off + 1], rest: u32(buf, off + 4), bodyOffset: off + 8, end };
}

/**
 * Writes the ICMPv6 header at `off` over `bodyLength` bytes already placed after it, with the checksum
 * chained from the pseudo-header sum `pseudo`.
 * @returns 8
 */
export function emitIcmpv6(
  buf: Uint8Array,
  off: number,
  type: number,
  code: number,
  rest: number,
  bodyLength: number,
  pseudo: number,
): number {
  buf[off] = type;
  buf[off + 1] = code;
  put16(buf, off + 2, 0);
  put32(buf, off + 4, rest);
  const ck = ~checksumSum(buf, off, ICMPV6_HEADER_LEN + bodyLength, pseudo) & 0xffff;
  put16(buf, off + 2, ck);
  return ICMPV6_HEADER_LEN;
}

/**
 * Walks NDP options in `buf[off, end)` (RFC 4861 §4.6: type, length in 8-byte units, value) and returns
 * the link-layer address of option `type` (source or target), -1 when absent, or a WireError when an
 * option has length 0 (§4.6: such a packet must be discarded) or runs past the end.
 */
export function ndpLinkLayerOption(
  buf: Uint8Array,
  off: number,
  end: number,
  type: number,
): number | WireError {
  let mac = -1;
  while (off < end) {
    if (end - off < 2) return new WireError("ndp", "Option header truncated");
    const len = buf[off + 1] * 8;
    if (len === 0) return new WireError("ndp", `Option ${buf[off]} has length 0`);
    if (off + len > end) return new WireError("ndp", `Option ${buf[off]} runs past the message`);
    if (buf[off] === type && len >= 8 && mac < 0) mac = mac48(buf, off + 2);
    off += len;
  }
  return mac;
}

/** Writes a source/target link-layer address option (8 bytes) at `off`. @returns 8 */
export function emitLinkLayerOption(buf: Uint8Array, off: number, type: number, mac: number): number {
  buf[off] = type;
  buf[off + 1] = 1;
  putMac48(buf, off + 2, mac);
  return 8;
}

/**
 * Writes a Prefix Information option (RFC 4861 §4.6.2, 32 bytes) at `off`: on-link (L) and autonomous
 * address configuration (A) set.
 * @returns 32
 */
export function emitPrefixOption(
  buf: Uint8Array,
  off: number,
  prefix: Uint8Array,
  prefixLength: number,
  validSec: number,
  preferredSec: number,
): number {
  buf[off] = NDP_OPT_PREFIX_INFO;
  buf[off + 1] = 4;
  buf[off + 2] = prefixLength;
  buf[off + 3] = 0xc0; // L | A
  put32(buf, off + 4, validSec);
  put32(buf, off + 8, preferredSec);
  put32(buf, off + 12, 0);
  buf.set(prefix.subarray(0, 16), off + 16);
  return 32;
}

/** Writes an MTU option (RFC 4861 §4.6.4, 8 bytes). @returns 8 */
export function emitMtuOption(buf: Uint8Array, off: number, mtu: number): number {
  buf[off] = NDP_OPT_MTU;
  buf[off + 1] = 1;
  put16(buf, off + 2, 0);
  put32(buf, off + 4, mtu);
  return 8;
}

/** Writes a Recursive DNS Server option with one address (RFC 8106 §5.1, 24 bytes). @returns 24 */
export function emitRdnssOption(
  buf: Uint8Array,
  off: number,
  server: Uint8Array,
  lifetimeSec: number,
): number {
  buf[off] = NDP_OPT_RDNSS;
  buf[off + 1] = 3;
  put16(buf, off + 2, 0);
  put32(buf, off + 4, lifetimeSec);
  buf.set(server.subarray(0, 16), off + 8);
  return 24;
}

/**
 * Writes a DNS Search List option (RFC 8106 §5.2): the domains as DNS names, padded with zeros to a
 * multiple of 8 bytes.
 * @returns bytes written (0 when `domains` is empty)
 */
export function emitDnsslOption(
  buf: Uint8Array,
  off: number,
  domains: string[],
  lifetimeSec: number,
): number {
  if (domains.length === 0) return 0;
  let p = off + 8;
  for (const d of domains) {
    for (const label of d.split(".").filter((l) => l !== "")) {
      const bytes = new TextEncoder().encode(label.slice(0, 63));
      buf[p++] = bytes.length;
      buf.set(bytes, p);
      p += bytes.length;
    }
    buf[p++] = 0;
  }
  const len = Math.ceil((p - off) / 8) * 8;
  buf.fill(0, p, off + len);
  buf[off] = NDP_OPT_DNSSL;
  buf[off + 1] = len / 8;
  put16(buf, off + 2, 0);
  put32(buf, off + 4, lifetimeSec);
  return len;
}

/**
 * The solicited-node multicast address of `a[ao]` (RFC 4291 §2.7.1): ff02::1:ffXX:XXXX with the low 24
 * bits of the address, written into `out`.
 */
export function solicitedNodeAddress(a: Uint8Array, ao: number, out: Uint8Array): Uint8Array {
  out.fill(0);
  out[0] = 0xff;
  out[1] = 0x02;
  out[11] = 0x01;
  out[12] = 0xff;
  out[13] = a[ao + 13];
  out[14] = a[ao + 14];
  out[15] = a[ao + 15];
  return out;
}

/** The Ethernet multicast MAC of an IPv6 multicast address (RFC 2464 §7): 33:33 and its low 32 bits. */
export function multicastMacV6(a: Uint8Array, ao: number): number {
  return 0x3333_0000_0000 + ((a[ao + 12] << 24) >>> 0) + (a[ao + 13] << 16) + (a[ao + 14] << 8) + a[ao + 15];
}
