/**
 * TCP header and options (RFC 9293 §3.1; options: MSS §3.7.1, window scale and timestamps RFC 7323,
 * SACK RFC 2018).
 *
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |          Source Port          |       Destination Port        |
 * |                        Sequence Number                        |
 * |                    Acknowledgment Number                      |
 * |  Data |       |C|E|U|A|P|R|S|F|                               |
 * | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
 * |       |       |R|E|G|K|H|T|N|N|                               |
 * |           Checksum            |         Urgent Pointer        |
 * |                           [Options]                           |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * ```
 * Options are parsed as Linux's tcp_parse_options does: a malformed length stops option parsing but keeps
 * the segment; unknown kinds are skipped by their length. They are emitted in Linux's order and layout
 * (MSS; SACK-permitted+timestamps; window scale; SACK blocks), so our segments look like Linux's to a
 * guest and a Linux segment re-emits byte-identically.
 *
 * @module
 */
import { put16, put32, u16, u32, WireError } from "./bytes.ts";
import { checksumSum } from "./checksum.ts";

export const TCP_SRC_PORT = 0;
export const TCP_DST_PORT = 2;
export const TCP_SEQ = 4;
export const TCP_ACK = 8;
export const TCP_DATA_OFF = 12;
export const TCP_FLAGS = 13;
export const TCP_WINDOW = 14;
export const TCP_CHECKSUM = 16;
export const TCP_URGENT = 18;
export const TCP_HEADER_LEN = 20;
/** Largest header: data offset 15 words. */
export const TCP_MAX_HEADER_LEN = 60;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK_FLAG = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;
/** The former NS bit (RFC 3540, historic), bit 8 of the flags field: kept so re-emission is exact. */
export const TCP_NS = 0x100;

const OPT_EOL = 0;
const OPT_NOP = 1;
const OPT_MSS = 2;
const OPT_WSCALE = 3;
const OPT_SACK_PERM = 4;
const OPT_SACK = 5;
const OPT_TIMESTAMP = 8;

/** At most four SACK blocks fit in 40 option bytes (RFC 2018 §3). */
export const TCP_MAX_SACK_BLOCKS = 4;

/** A parsed (or to-be-emitted) TCP header. Absent options are -1 / false / 0 blocks. */
export interface TcpHeader {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  headerLength: number;
  /** Flag bits, TCP_FIN..TCP_NS. */
  flags: number;
  window: number;
  checksum: number;
  urgent: number;
  /** MSS option value, or -1. */
  mss: number;
  /** Window scale shift (RFC 7323 §2.3, clamped to 14 by the receiver, not here), or -1. */
  windowScale: number;
  sackPermitted: boolean;
  /** Whether a timestamps option was present (RFC 7323 §3). */
  hasTimestamps: boolean;
  tsVal: number;
  tsEcr: number;
  /** Number of valid pairs in `sackBlocks`. */
  sackCount: number;
  /** Left/right edges, pairwise: [l0, r0, l1, r1, …], length 2 * TCP_MAX_SACK_BLOCKS. */
  sackBlocks: number[];
  payloadOffset: number;
  payloadEnd: number;
}

/** A fresh header object, for callers that reuse one across segments. */
export function newTcpHeader(): TcpHeader {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    headerLength: TCP_HEADER_LEN,
    flags: 0,
    window: 0,
    checksum: 0,
    urgent: 0,
    mss: -1,
    windowScale: -1,
    sackPermitted: false,
    hasTimestamps: false,
    tsVal: 0,
    tsEcr: 0,
    sackCount: 0,
    sackBlocks: [0, 0, 0, 0, 0, 0, 0, 0],
    payloadOffset: 0,
    payloadEnd: 0,
  };
}

/**
 * Parses a TCP segment in `buf[off, end)` (end = IP payload end).
 *
 * @param pseudoSum pseudo-header sum to verify the checksum, or -1 to skip
 * @param out reused to avoid allocating per segment
 */
export function parseTcp(
  buf: Uint8Array,
  off: number,
  end: number,
  pseudoSum = -1,
  out: TcpHeader = newTcpHeader(),
): TcpHeader | WireError {
  const avail = end - off;
  if (avail < TCP_HEADER_LEN) return new WireError("tcp", `Segment of ${avail} bytes is shorter than 20`);
  const hl = (buf[off + TCP_DATA_OFF] >> 4) * 4;
  if (hl < TCP_HEADER_LEN) return new WireError("tcp", `Data offset ${hl} is below the minimum of 20`);
  if (hl > avail) return new WireError("tcp", `Data offset ${hl} exceeds the ${avail} bytes received`);
  if (pseudoSum >= 0 && checksumSum(buf, off, avail, pseudoSum) !== 0xffff) {
    return new WireError("tcp", "Checksum mismatch");
  }
  out.srcPort = u16(buf, off);
  out.dstPort = u16(buf, off + TCP_DST_PORT);
  out.seq = u32(buf, off + TCP_SEQ);
  out.ack = u32(buf, off + TCP_ACK);
  out.headerLength = hl;
  out.flags = buf[off + TCP_FLAGS] | ((buf[off + TCP_DATA_OFF] & 1) << 8);
  out.window = u16(buf, off + TCP_WINDOW);
  out.checksum = u16(buf, off + TCP_CHECKSUM);
  out.urgent = u16(buf, off + TCP_URGENT);
  out.mss = -1;
  out.windowScale = -1;
  out.sackPermitted = false;
  out.hasTimestamps = false;
  out.tsVal = 0;
  out.tsEcr = 0;
  out.sackCount = 0;
  out.payloadOffset = off + hl;
  out.payloadEnd = end;
  // nearly every segment after the handshake carries NOP, NOP, timestamps (the layout of RFC 7323
  // Appendix A, the one Linux sends): read at once, as Linux's tcp_parse_aligned_timestamp does
  if (hl === TCP_HEADER_LEN + 12 && u32(buf, off + TCP_HEADER_LEN) === ALIGNED_TIMESTAMPS) {
    out.hasTimestamps = true;
    out.tsVal = u32(buf, off + TCP_HEADER_LEN + 4);
    out.tsEcr = u32(buf, off + TCP_HEADER_LEN + 8);
  } else parseTcpOptions(buf, off + TCP_HEADER_LEN, off + hl, out);
  return out;
}

/** NOP, NOP, kind 8, length 10: the first word of an aligned timestamps option. */
const ALIGNED_TIMESTAMPS = (OPT_NOP << 24 | OPT_NOP << 16 | OPT_TIMESTAMP << 8 | 10) >>> 0;

/** Fills the option fields of `out` from `buf[p, end)`. Stops at EOL or at the first malformed option. */
function parseTcpOptions(buf: Uint8Array, p: number, end: number, out: TcpHeader): void {
  while (p < end) {
    const kind = buf[p];
    if (kind === OPT_EOL) return;
    if (kind === OPT_NOP) {
      p++;
      continue;
    }
    if (p + 1 >= end) return;
    const len = buf[p + 1];
    // Linux: "don't parse partial options" — a bad length ends option processing, the segment stays valid
    if (len < 2 || p + len > end) return;
    switch (kind) {
      case OPT_MSS:
        if (len === 4) out.mss = u16(buf, p + 2);
        break;
      case OPT_WSCALE:
        if (len === 3) out.windowScale = buf[p + 2];
        break;
      case OPT_SACK_PERM:
        if (len === 2) out.sackPermitted = true;
        break;
      case OPT_TIMESTAMP:
        if (len === 10) {
          out.hasTimestamps = true;
          out.tsVal = u32(buf, p + 2);
          out.tsEcr = u32(buf, p + 6);
        }
        break;
      case OPT_SACK:
        if ((len - 2) % 8 === 0) {
          const n = Math.min((len - 2) / 8, TCP_MAX_SACK_BLOCKS);
          for (let i = 0; i < n; i++) {
            out.sackBlocks[2 * i] = u32(buf, p + 2 + 8 * i);
            out.sackBlocks[2 * i + 1] = u32(buf, p + 6 + 8 * i);
          }
          out.sackCount = n;
        }
        break;
    }
    p += len;
  }
}

/** Bytes of options {@linkcode emitTcp} will write for `h` (a multiple of 4). */
export function tcpOptionsLength(h: TcpHeader): number {
  let n = 0;
  if (h.mss >= 0) n += 4;
  if (h.hasTimestamps) n += 12;
  else if (h.sackPermitted) n += 4;
  if (h.windowScale >= 0) n += 4;
  if (h.sackCount > 0) n += 4 + 8 * h.sackCount;
  return n;
}

/** Header length {@linkcode emitTcp} will write: size the buffer and place the payload with it. */
export function tcpHeaderLength(h: TcpHeader): number {
  return TCP_HEADER_LEN + tcpOptionsLength(h);
}

/**
 * Writes the TCP header for `h` at `off`, the payload of `payloadLength` bytes being already in place at
 * `off + tcpHeaderLength(h)`, then the checksum over both.
 *
 * @param pseudoSum pseudo-header sum with length = header + payload
 * @returns the header length written
 */
export function emitTcp(
  h: TcpHeader,
  buf: Uint8Array,
  off: number,
  payloadLength: number,
  pseudoSum: number,
): number {
  const hl = tcpHeaderLength(h);
  put16(buf, off, h.srcPort);
  put16(buf, off + TCP_DST_PORT, h.dstPort);
  put32(buf, off + TCP_SEQ, h.seq);
  put32(buf, off + TCP_ACK, h.ack);
  buf[off + TCP_DATA_OFF] = ((hl >> 2) << 4) | ((h.flags >> 8) & 1);
  buf[off + TCP_FLAGS] = h.flags & 0xff;
  put16(buf, off + TCP_WINDOW, h.window);
  put16(buf, off + TCP_CHECKSUM, 0);
  put16(buf, off + TCP_URGENT, h.urgent);
  let p = off + TCP_HEADER_LEN;
  // Linux tcp_options_write() order and padding
  if (h.mss >= 0) {
    put32(buf, p, (OPT_MSS << 24) | (4 << 16) | h.mss);
    p += 4;
  }
  if (h.hasTimestamps) {
    if (h.sackPermitted) put32(buf, p, (OPT_SACK_PERM << 24) | (2 << 16) | (OPT_TIMESTAMP << 8) | 10);
    else put32(buf, p, (OPT_NOP << 24) | (OPT_NOP << 16) | (OPT_TIMESTAMP << 8) | 10);
    put32(buf, p + 4, h.tsVal);
    put32(buf, p + 8, h.tsEcr);
    p += 12;
  } else if (h.sackPermitted) {
    put32(buf, p, (OPT_NOP << 24) | (OPT_NOP << 16) | (OPT_SACK_PERM << 8) | 2);
    p += 4;
  }
  if (h.windowScale >= 0) {
    put32(buf, p, (OPT_NOP << 24) | (OPT_WSCALE << 16) | (3 << 8) | h.windowScale);
    p += 4;
  }
  if (h.sackCount > 0) {
    put32(buf, p, (OPT_NOP << 24) | (OPT_NOP << 16) | (OPT_SACK << 8) | (2 + 8 * h.sackCount));
    p += 4;
    for (let i = 0; i < h.sackCount; i++) {
      put32(buf, p, h.sackBlocks[2 * i]);
      put32(buf, p + 4, h.sackBlocks[2 * i + 1]);
      p += 8;
    }
  }
  put16(buf, off + TCP_CHECKSUM, ~checksumSum(buf, off, hl + payloadLength, pseudoSum) & 0xffff);
  return hl;
}
