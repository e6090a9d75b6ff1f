/**
 * IPv4 header (RFC 791 §3.1).
 *
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |Version|  IHL  |Type of Service|          Total Length         |
 * |         Identification        |Flags|      Fragment Offset    |
 * |  Time to Live |    Protocol   |         Header Checksum       |
 * |                       Source Address                          |
 * |                    Destination Address                        |
 * |                    Options                    |    Padding    |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * ```
 * @module
 */
import { put16, put32, u16, u32, WireError } from "./bytes.ts";
import { checksumSum, internetChecksum } from "./checksum.ts";

export const IPV4_VER_IHL = 0;
export const IPV4_TOS = 1;
export const IPV4_TOTAL_LEN = 2;
export const IPV4_ID = 4;
export const IPV4_FLAGS_FRAG = 6;
export const IPV4_TTL = 8;
export const IPV4_PROTOCOL = 9;
export const IPV4_CHECKSUM = 10;
export const IPV4_SRC = 12;
export const IPV4_DST = 16;
/** Header length without options. */
export const IPV4_HEADER_LEN = 20;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** Flag bits in the flags/fragment-offset word. */
export const IPV4_FLAG_DF = 0x4000;
export const IPV4_FLAG_MF = 0x2000;

/** A parsed IPv4 header. Offsets are absolute in the buffer. */
export interface Ipv4Header {
  headerLength: number;
  tos: number;
  totalLength: number;
  id: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Fragment offset in bytes (the field counts 8-byte units). */
  fragmentOffset: number;
  ttl: number;
  protocol: number;
  checksum: number;
  src: number;
  dst: number;
  /** Absolute offset of the options (= header start + 20); options length is headerLength - 20. */
  optionsOffset: number;
  payloadOffset: number;
  /** End of the datagram, from the total length field: trailing Ethernet padding excluded. */
  payloadEnd: number;
}

/** A fresh header object, for callers that reuse one across packets. */
export function newIpv4Header(): Ipv4Header {
  return {
    headerLength: 0,
    tos: 0,
    totalLength: 0,
    id: 0,
    dontFragment: false,
    moreFragments: false,
    fragmentOffset: 0,
    ttl: 0,
    protocol: 0,
    checksum: 0,
    src: 0,
    dst: 0,
    optionsOffset: 0,
    payloadOffset: 0,
    payloadEnd: 0,
  };
}

/**
 * Parses and validates an IPv4 header in `buf[off, end)` (RFC 1122 §3.2.1.1–3.2.1.2: version, header
 * length, total length, checksum).
 *
 * @param verifyChecksum false skips the header checksum (for captures with offloaded checksums)
 */
export function parseIpv4(
  buf: Uint8Array,
  off: number,
  end: number,
  out: Ipv4Header = newIpv4Header(),
  verifyChecksum = true,
): Ipv4Header | WireError {
  const avail = end - off;
  if (avail < IPV4_HEADER_LEN) return new WireError("ipv4", `Packet of ${avail} bytes is shorter than 20`);
  const vi = buf[off];
  if (vi >> 4 !== 4) return new WireError("ipv4", `Version ${vi >> 4} is not 4`);
  const hl = (vi & 0x0f) * 4;
  if (hl < IPV4_HEADER_LEN) return new WireError("ipv4", `Header length ${hl} is below the minimum of 20`);
  const total = u16(buf, off + IPV4_TOTAL_LEN);
  if (total < hl) return new WireError("ipv4", `Total length ${total} is below the header length ${hl}`);
  if (total > avail) {
    return new WireError("ipv4", `Total length ${total} exceeds the ${avail} bytes received`);
  }
  if (verifyChecksum && checksumSum(buf, off, hl) !== 0xffff) {
    return new WireError("ipv4", "Header checksum mismatch");
  }
  const ff = u16(buf, off + IPV4_FLAGS_FRAG);
  out.headerLength = hl;
  out.tos = buf[off + IPV4_TOS];
  out.totalLength = total;
  out.id = u16(buf, off + IPV4_ID);
  out.dontFragment = (ff & IPV4_FLAG_DF) !== 0;
  out.moreFragments = (ff & IPV4_FLAG_MF) !== 0;
  out.fragmentOffset = (ff & 0x1fff) * 8;
  out.ttl = buf[off + IPV4_TTL];
  out.protocol = buf[off + IPV4_PROTOCOL];
  out.checksum = u16(buf, off + IPV4_CHECKSUM);
  out.src = u32(buf, off + IPV4_SRC);
  out.dst = u32(buf, off + IPV4_DST);
  out.optionsOffset = off + IPV4_HEADER_LEN;
  out.payloadOffset = off + hl;
  out.payloadEnd = off + total;
  return out;
}

/** What {@linkcode emitIpv4} writes. */
export interface Ipv4Emit {
  tos?: number;
  id: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  fragmentOffset?: number;
  ttl: number;
  protocol: number;
  src: number;
  dst: number;
  /** Raw option bytes (already padded to a multiple of 4), or omitted. */
  options?: Uint8Array;
}

/**
 * Writes an IPv4 header at `off` for a payload of `payloadLength` bytes that follows it, and its checksum.
 * @returns the header length written
 */
export function emitIpv4(h: Ipv4Emit, buf: Uint8Array, off: number, payloadLength: number): number {
  const optLen = h.options ? h.options.length : 0;
  const hl = IPV4_HEADER_LEN + optLen;
  buf[off] = 0x40 | (hl >> 2);
  buf[off + IPV4_TOS] = h.tos ?? 0;
  put16(buf, off + IPV4_TOTAL_LEN, hl + payloadLength);
  put16(buf, off + IPV4_ID, h.id);
  put16(
    buf,
    off + IPV4_FLAGS_FRAG,
    (h.dontFragment ? IPV4_FLAG_DF : 0) | (h.moreFragments ? IPV4_FLAG_MF : 0) |
      ((h.fragmentOffset ?? 0) >> 3),
  );
  buf[off + IPV4_TTL] = h.ttl;
  buf[off + IPV4_PROTOCOL] = h.protocol;
  put16(buf, off + IPV4_CHECKSUM, 0);
  put32(buf, off + IPV4_SRC, h.src);
  put32(buf, off + IPV4_DST, h.dst);
  if (h.options) buf.set(h.options, off + IPV4_HEADER_LEN);
  put16(buf, off + IPV4_CHECKSUM, internetChecksum(buf, off, hl));
  return hl;
}

/** The header as an {@linkcode Ipv4Emit} (options viewed, not copied), so a parsed header re-emits. */
export function ipv4ToEmit(h: Ipv4Header, buf: Uint8Array): Ipv4Emit {
  return {
    tos: h.tos,
    id: h.id,
    dontFragment: h.dontFragment,
    moreFragments: h.moreFragments,
    fragmentOffset: h.fragmentOffset,
    ttl: h.ttl,
    protocol: h.protocol,
    src: h.src,
    dst: h.dst,
    options: h.headerLength > IPV4_HEADER_LEN ? buf.subarray(h.optionsOffset, h.payloadOffset) : undefined,
  };
}

/** True for 224.0.0.0/4 (RFC 5771). */
export function isMulticastV4(a: number): boolean {
  return a >>> 28 === 0xe;
}
