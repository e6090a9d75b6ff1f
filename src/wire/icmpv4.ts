/**
 * ICMP for IPv4 (RFC 792): echo, destination unreachable, time exceeded.
 *
 * ```
 *  0       1       2               4
 * +-------+-------+---------------+------------------------------+
 * | type  | code  |   checksum    | rest of header (id/seq, MTU) | data...
 * +-------+-------+---------------+------------------------------+
 * ```
 * @module
 */
import { put16, put32, u16, u32, WireError } from "./bytes.ts";
import { checksumSum, internetChecksum } from "./checksum.ts";

export const ICMP_HEADER_LEN = 8;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACHABLE = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;

/** Destination-unreachable codes (RFC 792; RFC 1812 §5.2.7.1 for 13). */
export const ICMP_UNREACH_NET = 0;
export const ICMP_UNREACH_HOST = 1;
export const ICMP_UNREACH_PROTOCOL = 2;
export const ICMP_UNREACH_PORT = 3;
export const ICMP_UNREACH_NEEDFRAG = 4;
export const ICMP_UNREACH_ADMIN_PROHIBITED = 13;

/** A parsed ICMPv4 message; offsets absolute. */
export interface IcmpV4Message {
  type: number;
  code: number;
  checksum: number;
  /** The 4 bytes after the checksum as one u32 (id<<16|seq for echo, next-hop MTU for code 4). */
  rest: number;
  /** Echo identifier (rest >>> 16). */
  id: number;
  /** Echo sequence (rest & 0xffff). */
  seq: number;
  dataOffset: number;
  dataEnd: number;
}

/** Parses an ICMPv4 message in `buf[off, end)`; verifies the checksum unless `verify` is false. */
export function parseIcmpV4(
  buf: Uint8Array,
  off: number,
  end: number,
  verify = true,
): IcmpV4Message | WireError {
  if (end - off < ICMP_HEADER_LEN) {
    return new WireError("icmpv4", `Message of ${end - off} bytes is shorter than 8`);
  }
  if (verify && checksumSum(buf, off, end - off) !== 0xffff) {
    return new WireError("icmpv4", "Checksum mismatch");
  }
  const rest = u32(buf, off + 4);
  return {
    type: buf[off],
    code: buf[off + 1],
    checksum: u16(buf, off + 2),
    rest,
    id: rest >>> 16,
    seq: rest & 0xffff,
    dataOffset: off + ICMP_HEADER_LEN,
    dataEnd: end,
  };
}

/**
 * Writes an ICMPv4 header at `off` over `dataLength` bytes already placed after it, with the checksum.
 * @param rest the 4 bytes after the checksum (id<<16|seq for echo; MTU for frag-needed; 0 otherwise)
 * @param initial the sum of data that follows elsewhere (a header built apart from its data), else 0
 * @returns 8
 */
export function emitIcmpV4(
  buf: Uint8Array,
  off: number,
  type: number,
  code: number,
  rest: number,
  dataLength: number,
  initial = 0,
): number {
  buf[off] = type;
  buf[off + 1] = code;
  put16(buf, off + 2, 0);
  put32(buf, off + 4, rest);
  put16(buf, off + 2, internetChecksum(buf, off, ICMP_HEADER_LEN + dataLength, initial));
  return ICMP_HEADER_LEN;
}

/**
 * How much of an offending datagram an ICMP error quotes: its IP header plus up to 8 bytes of data is the
 * RFC 792 minimum; RFC 1812 §4.3.2.3 allows up to 576 bytes in all, which helps the guest match the flow.
 */
export function icmpQuoteLength(ipHeaderLength: number, datagramLength: number): number {
  return Math.min(datagramLength, Math.max(ipHeaderLength + 8, 576 - 20 - ICMP_HEADER_LEN));
}
