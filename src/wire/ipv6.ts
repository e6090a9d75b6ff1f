/**
 * IPv6 header (RFC 8200 §3) and the extension headers a packet from a guest may carry before its upper
 * layer (§4: Hop-by-Hop Options, Routing, Fragment, Destination Options).
 *
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |Version| Traffic Class |           Flow Label                  |
 * |         Payload Length        |  Next Header  |   Hop Limit   |
 * |                  Source Address (16 bytes)                    |
 * |               Destination Address (16 bytes)                  |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * ```
 * Addresses stay in the buffer: a parsed header holds their offsets, so parsing allocates nothing.
 * @module
 */
import { put16, put32, u16, u32, WireError } from "./bytes.ts";

export const IPV6_PAYLOAD_LEN = 4;
export const IPV6_NEXT_HEADER = 6;
export const IPV6_HOP_LIMIT = 7;
export const IPV6_SRC = 8;
export const IPV6_DST = 24;
export const IPV6_HEADER_LEN = 40;
/** Every IPv6 link carries at least this (RFC 8200 §5). */
export const IPV6_MIN_MTU = 1280;

export const IPPROTO_HOPOPTS = 0;
export const IPPROTO_ROUTING = 43;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_NONE = 59;
export const IPPROTO_DSTOPTS = 60;
/** The Fragment header's size (RFC 8200 §4.5). */
export const IPV6_FRAGMENT_HEADER_LEN = 8;

/** Extension headers walked before giving up: a guest may not make us loop over a long chain. */
const MAX_EXTENSION_HEADERS = 8;

/** A parsed IPv6 packet. Offsets are absolute in the buffer. */
export interface Ipv6Header {
  trafficClass: number;
  flowLabel: number;
  hopLimit: number;
  /** Offset of the 16-byte source address. */
  srcOffset: number;
  /** Offset of the 16-byte destination address. */
  dstOffset: number;
  /**
   * The upper-layer protocol after the extension headers (TCP, UDP, ICMPv6, or IPPROTO_NONE); in a fragment,
   * the Fragment header's Next Header.
   */
  protocol: number;
  /**
   * Whether a Fragment header was present (RFC 8200 §4.5). The walk stops there: what follows it is the
   * fragmentable part, whole only once reassembled.
   */
  fragmented: boolean;
  /** Fragment offset in bytes, the M flag and the Identification, when fragmented. */
  fragmentOffset: number;
  moreFragments: boolean;
  fragmentId: number;
  /** Where the upper-layer header starts (in a fragment: where the fragmentable part starts). */
  payloadOffset: number;
  /** End of the packet from the payload length field: trailing Ethernet padding excluded. */
  payloadEnd: number;
}

/** A fresh header object, for callers that reuse one across packets. */
export function newIpv6Header(): Ipv6Header {
  return {
    trafficClass: 0,
    flowLabel: 0,
    hopLimit: 0,
    srcOffset: 0,
    dstOffset: 0,
    protocol: 0,
    fragmented: false,
    fragmentOffset: 0,
    moreFragments: false,
    fragmentId: 0,
    payloadOffset: 0,
    payloadEnd: 0,
  };
}

/**
 * Parses an IPv6 header in `buf[off, end)` and walks its extension headers to the upper layer. A payload
 * length of 0 (a Jumbo payload, RFC 2675) is refused: no guest link carries one.
 */
export function parseIpv6(
  buf: Uint8Array,
  off: number,
  end: number,
  out: Ipv6Header = newIpv6Header(),
): Ipv6Header | WireError {
  const avail = end - off;
  if (avail < IPV6_HEADER_LEN) return new WireError("ipv6", `Packet of ${avail} bytes is shorter than 40`);
  const v = buf[off] >> 4;
  if (v !== 6) return new WireError("ipv6", `Version ${v} is not 6`);
  const payloadLength = u16(buf, off + IPV6_PAYLOAD_LEN);
  if (payloadLength === 0) return new WireError("ipv6", "Payload length 0 (jumbogram) is not supported");
  if (IPV6_HEADER_LEN + payloadLength > avail) {
    return new WireError("ipv6", `Payload length ${payloadLength} exceeds the ${avail - 40} bytes received`);
  }
  out.trafficClass = ((buf[off] & 0x0f) << 4) | (buf[off + 1] >> 4);
  out.flowLabel = ((buf[off + 1] & 0x0f) << 16) | u16(buf, off + 2);
  out.hopLimit = buf[off + IPV6_HOP_LIMIT];
  out.srcOffset = off + IPV6_SRC;
  out.dstOffset = off + IPV6_DST;
  out.fragmented = false;
  out.fragmentOffset = 0;
  out.moreFragments = false;
  out.fragmentId = 0;
  const payloadEnd = off + IPV6_HEADER_LEN + payloadLength;
  let next = buf[off + IPV6_NEXT_HEADER];
  let p = off + IPV6_HEADER_LEN;
  for (let n = 0;; n++) {
    if (
      next !== IPPROTO_HOPOPTS && next !== IPPROTO_ROUTING && next !== IPPROTO_FRAGMENT &&
      next !== IPPROTO_DSTOPTS
    ) break;
    // RFC 8200 §4.1: Hop-by-Hop Options only directly after the IPv6 header
    if (next === IPPROTO_HOPOPTS && n > 0) return new WireError("ipv6", "Hop-by-Hop header not first");
    if (n >= MAX_EXTENSION_HEADERS) return new WireError("ipv6", "Too many extension headers");
    if (payloadEnd - p < 8) return new WireError("ipv6", `Extension header ${next} truncated`);
    const nextAfter = buf[p];
    if (next === IPPROTO_FRAGMENT) {
      // §4.5: 8 bytes; offset in 8-byte units in the high 13 bits, M in the lowest, then the Identification
      const w = u16(buf, p + 2);
      out.fragmented = true;
      out.fragmentOffset = w & 0xfff8;
      out.moreFragments = (w & 1) !== 0;
      out.fragmentId = u32(buf, p + 4);
      next = nextAfter;
      p += IPV6_FRAGMENT_HEADER_LEN;
      break;
    }
    const len = (buf[p + 1] + 1) * 8;
    if (payloadEnd - p < len) return new WireError("ipv6", `Extension header ${next} runs past the packet`);
    p += len;
    next = nextAfter;
  }
  out.protocol = next;
  out.payloadOffset = p;
  out.payloadEnd = payloadEnd;
  return out;
}

/**
 * Writes a 40-byte IPv6 header at `off` (no extension headers) for `payloadLength` bytes after it.
 * Addresses are copied from `src[srcOff]` and `dst[dstOff]`.
 * @returns 40
 */
export function emitIpv6(
  buf: Uint8Array,
  off: number,
  payloadLength: number,
  protocol: number,
  hopLimit: number,
  src: Uint8Array,
  srcOff: number,
  dst: Uint8Array,
  dstOff: number,
): number {
  buf[off] = 0x60;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  put16(buf, off + IPV6_PAYLOAD_LEN, payloadLength);
  buf[off + IPV6_NEXT_HEADER] = protocol;
  buf[off + IPV6_HOP_LIMIT] = hopLimit;
  // byte loops, not set(subarray): a view per packet is garbage on the hot path
  for (let i = 0; i < 16; i++) buf[off + IPV6_SRC + i] = src[srcOff + i];
  for (let i = 0; i < 16; i++) buf[off + IPV6_DST + i] = dst[dstOff + i];
  return IPV6_HEADER_LEN;
}

/**
 * Writes a Fragment header (RFC 8200 §4.5) at `off`: `nextHeader` of the fragmentable part, this fragment's
 * `offset` in bytes (a multiple of 8), M set when `more` fragments follow, and the datagram's `id`.
 * @returns 8
 */
export function emitIpv6FragmentHeader(
  buf: Uint8Array,
  off: number,
  nextHeader: number,
  offset: number,
  more: boolean,
  id: number,
): number {
  buf[off] = nextHeader;
  buf[off + 1] = 0;
  put16(buf, off + 2, (offset & 0xfff8) | (more ? 1 : 0));
  put32(buf, off + 4, id);
  return IPV6_FRAGMENT_HEADER_LEN;
}

// ───────────────────────── addresses ─────────────────────────

/** Whether the 16 bytes at `a[ao]` equal those at `b[bo]`. */
export function ipv6Equal(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  for (let i = 0; i < 16; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

/** Whether the first `bits` bits of the address at `a[ao]` equal those of `prefix` (16 bytes). */
export function ipv6InPrefix(a: Uint8Array, ao: number, prefix: Uint8Array, bits: number): boolean {
  let i = 0;
  for (; bits >= 8; i++, bits -= 8) if (a[ao + i] !== prefix[i]) return false;
  if (bits === 0) return true;
  const mask = (0xff << (8 - bits)) & 0xff;
  return (a[ao + i] & mask) === (prefix[i] & mask);
}

/** ff00::/8 (RFC 4291 §2.7). */
export function isMulticastV6(a: Uint8Array, ao: number): boolean {
  return a[ao] === 0xff;
}

/** The unspecified address :: (RFC 4291 §2.5.2), the source of a DAD probe. */
export function isUnspecifiedV6(a: Uint8Array, ao: number): boolean {
  for (let i = 0; i < 16; i++) if (a[ao + i] !== 0) return false;
  return true;
}

/** fe80::/10 (RFC 4291 §2.5.6). */
export function isLinkLocalV6(a: Uint8Array, ao: number): boolean {
  return a[ao] === 0xfe && (a[ao + 1] & 0xc0) === 0x80;
}

/**
 * Parses an IPv6 address in RFC 4291 §2.2 text form (with `::`, and a dotted IPv4 tail) into 16 bytes,
 * or returns null when it is not one. A zone (`%eth0`) is not accepted.
 */
export function parseIpv6Address(text: string): Uint8Array | null {
  let s = text.trim();
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return null;
  const out = new Uint8Array(16);
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (part: string): number[] | null => {
    if (part === "") return [];
    const words: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (i === items.length - 1 && item.includes(".")) {
        const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(item);
        if (!m) return null;
        const b = m.slice(1).map(Number);
        if (b.some((x) => x > 255)) return null;
        words.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return null;
        words.push(parseInt(item, 16));
      }
    }
    return words;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  if (halves.length === 1 ? head.length !== 8 : head.length + tail.length > 7) return null;
  head.forEach((w, i) => put16(out, i * 2, w));
  tail.forEach((w, i) => put16(out, 16 - (tail.length - i) * 2, w));
  return out;
}

/** Formats the 16 bytes at `a[ao]` as RFC 5952 text: lower case, the longest run of zero words as `::`. */
export function ipv6ToString(a: Uint8Array, ao = 0): string {
  const w: number[] = [];
  for (let i = 0; i < 16; i += 2) w.push(u16(a, ao + i));
  // RFC 5952 §5: ::ffff:a.b.c.d for IPv4-mapped addresses
  if (w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff) {
    return `::ffff:${a[ao + 12]}.${a[ao + 13]}.${a[ao + 14]}.${a[ao + 15]}`;
  }
  let bestAt = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (bestAt < 0) return hex(w);
  return `${hex(w.slice(0, bestAt))}::${hex(w.slice(bestAt + bestLen))}`;
}

/** Parses "fd00::/64" into 16 bytes (host bits cleared) and a prefix length, or returns null. */
export function parseCidrV6(text: string): { network: Uint8Array; prefix: number } | null {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text.trim());
  if (!m) return null;
  const a = parseIpv6Address(m[1]);
  const prefix = Number(m[2]);
  if (!a || prefix > 128) return null;
  for (let bit = prefix; bit < 128; bit++) a[bit >> 3] &= ~(0x80 >> (bit & 7));
  return { network: a, prefix };
}
