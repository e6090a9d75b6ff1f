/**
 * UDP (RFC 768).
 *
 * ```
 *  0      7 8     15 16    23 24    31
 * +--------+--------+--------+--------+
 * |   Source Port   |  Destination    |
 * |     Length      |    Checksum     |
 * +--------+--------+--------+--------+
 * ```
 * @module
 */
import { put16, u16, WireError } from "./bytes.ts";
import { checksumSum } from "./checksum.ts";

export const UDP_SRC_PORT = 0;
export const UDP_DST_PORT = 2;
export const UDP_LENGTH = 4;
export const UDP_CHECKSUM = 6;
export const UDP_HEADER_LEN = 8;

/** A parsed UDP header; offsets absolute. */
export interface UdpHeader {
  srcPort: number;
  dstPort: number;
  length: number;
  checksum: number;
  payloadOffset: number;
  payloadEnd: number;
}

/** A fresh header object, for callers that reuse one across packets. */
export function newUdpHeader(): UdpHeader {
  return { srcPort: 0, dstPort: 0, length: 0, checksum: 0, payloadOffset: 0, payloadEnd: 0 };
}

/**
 * Parses a UDP header in `buf[off, end)` (end = the IP payload end).
 *
 * @param pseudoSum the IPv4/IPv6 pseudo-header sum to verify the checksum, or -1 to skip verification.
 *   A zero checksum means "none" over IPv4 (RFC 768) and is accepted.
 */
export function parseUdp(
  buf: Uint8Array,
  off: number,
  end: number,
  pseudoSum = -1,
  out: UdpHeader = newUdpHeader(),
): UdpHeader | WireError {
  if (end - off < UDP_HEADER_LEN) {
    return new WireError("udp", `Datagram of ${end - off} bytes is shorter than 8`);
  }
  const len = u16(buf, off + UDP_LENGTH);
  if (len < UDP_HEADER_LEN || len > end - off) {
    return new WireError("udp", `Length field ${len} does not fit the ${end - off} bytes received`);
  }
  const ck = u16(buf, off + UDP_CHECKSUM);
  if (pseudoSum >= 0 && ck !== 0 && checksumSum(buf, off, len, pseudoSum) !== 0xffff) {
    return new WireError("udp", "Checksum mismatch");
  }
  out.srcPort = u16(buf, off);
  out.dstPort = u16(buf, off + UDP_DST_PORT);
  out.length = len;
  out.checksum = ck;
  out.payloadOffset = off + UDP_HEADER_LEN;
  out.payloadEnd = off + len;
  return out;
}

/**
 * Writes a UDP header at `off` for the `payloadLength` bytes already placed after it, with its checksum.
 * @param pseudoSum pseudo-header sum for the checksum (length = 8 + payloadLength)
 * @returns 8
 */
export function emitUdp(
  buf: Uint8Array,
  off: number,
  srcPort: number,
  dstPort: number,
  payloadLength: number,
  pseudoSum: number,
): number {
  const len = UDP_HEADER_LEN + payloadLength;
  put16(buf, off, srcPort);
  put16(buf, off + UDP_DST_PORT, dstPort);
  put16(buf, off + UDP_LENGTH, len);
  put16(buf, off + UDP_CHECKSUM, 0);
  // RFC 768: a computed checksum of zero is transmitted as all ones
  const ck = ~checksumSum(buf, off, len, pseudoSum) & 0xffff;
  put16(buf, off + UDP_CHECKSUM, ck === 0 ? 0xffff : ck);
  return UDP_HEADER_LEN;
}
