/**
 * DHCPv4 messages (RFC 2131 §2 BOOTP fixed part; options RFC 2132, long options RFC 3396).
 *
 * ```
 *  0       1       2       3       4 ... 8    10     12      16      20      24      28       44     108     236   240
 * +-------+-------+-------+-------+-----+----+------+-------+-------+-------+-------+--------+-------+-------+-----+--------
 * |  op   | htype | hlen  | hops  | xid |secs|flags |ciaddr |yiaddr |siaddr |giaddr | chaddr | sname | file  |magic| options
 * +-------+-------+-------+-------+-----+----+------+-------+-------+-------+-------+--------+-------+-------+-----+--------
 * ```
 * Options are kept in arrival order as views into the message (no copies), except that an option split
 * into several instances (RFC 3396) is concatenated. Option overload (52) pulls options from `file` and
 * `sname` as RFC 2132 §9.3 orders: options field, then file, then sname.
 *
 * @module
 */
import { put16, put32, u16, u32, WireError } from "./bytes.ts";

export const BOOTP_FIXED_LEN = 236;
export const DHCP_MAGIC = 0x63825363;
/** BOOTP's minimum message (RFC 1542 §3.3); many clients drop shorter replies. */
export const BOOTP_MIN_LEN = 300;
/**
 * Largest message parsed. RFC 2131 §2 lets a client announce up to 65535 (option 57), but requests are a
 * few hundred bytes; a bound keeps a hostile guest's 65 KB request from costing more than an honest one.
 */
export const DHCP_MAX_PARSE_LEN = 4096;
/** Option instances read per message (PAD excluded): real clients send a few dozen. */
export const DHCP_MAX_OPTIONS = 256;
export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;

/** Option codes (RFC 2132 unless noted). */
export const DhcpOption = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS_SERVERS: 6,
  HOSTNAME: 12,
  DOMAIN_NAME: 15,
  INTERFACE_MTU: 26,
  BROADCAST: 28,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_LIST: 55,
  MESSAGE: 56,
  MAX_MESSAGE_SIZE: 57,
  RENEWAL_TIME: 58,
  REBINDING_TIME: 59,
  CLIENT_ID: 61,
  /** RFC 2132 §9.5 */
  BOOTFILE_NAME: 67,
  DOMAIN_SEARCH: 119, // RFC 3397
  END: 255,
} as const;

/** Message types, option 53 (RFC 2132 §9.6). */
export const DhcpMessageType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

/** A DHCP message. `chaddr`, `sname`, `file` and option values are views into the parsed buffer. */
export interface DhcpMessage {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: number;
  yiaddr: number;
  siaddr: number;
  giaddr: number;
  /** Client hardware address, all 16 bytes of the field (the first `hlen` are the address). */
  chaddr: Uint8Array;
  /** The 64-byte server name field, raw. */
  sname: Uint8Array;
  /** The 128-byte boot file field, raw. */
  file: Uint8Array;
  /** Options in order of first appearance, without PAD and END. */
  options: [code: number, value: Uint8Array][];
  /** Total length to pad the emitted message to (at least {@linkcode BOOTP_MIN_LEN}). */
  padTo?: number;
}

/** The value of option `code`, or undefined. */
export function dhcpOption(m: DhcpMessage, code: number): Uint8Array | undefined {
  for (const [c, v] of m.options) if (c === code) return v;
  return undefined;
}

/** The message type (option 53), or 0 for plain BOOTP. */
export function dhcpMessageType(m: DhcpMessage): number {
  const v = dhcpOption(m, DhcpOption.MESSAGE_TYPE);
  return v && v.length === 1 ? v[0] : 0;
}

/** Parses a DHCP message in `buf[off, end)` (a UDP payload). */
export function parseDhcp(buf: Uint8Array, off: number, end: number): DhcpMessage | WireError {
  if (end - off < BOOTP_FIXED_LEN + 4) {
    return new WireError("dhcp", `Message of ${end - off} bytes is shorter than 240`);
  }
  if (end - off > DHCP_MAX_PARSE_LEN) {
    return new WireError("dhcp", `Message of ${end - off} bytes is longer than ${DHCP_MAX_PARSE_LEN}`);
  }
  if (u32(buf, off + 236) !== DHCP_MAGIC) return new WireError("dhcp", "Magic cookie missing (plain BOOTP)");
  const hlen = buf[off + 2];
  if (hlen > 16) return new WireError("dhcp", `Hardware address length ${hlen} exceeds 16`);
  const m: DhcpMessage = {
    op: buf[off],
    htype: buf[off + 1],
    hlen,
    hops: buf[off + 3],
    xid: u32(buf, off + 4),
    secs: u16(buf, off + 8),
    flags: u16(buf, off + 10),
    ciaddr: u32(buf, off + 12),
    yiaddr: u32(buf, off + 16),
    siaddr: u32(buf, off + 20),
    giaddr: u32(buf, off + 24),
    chaddr: buf.subarray(off + 28, off + 44),
    sname: buf.subarray(off + 44, off + 108),
    file: buf.subarray(off + 108, off + 236),
    options: [],
    padTo: end - off,
  };
  const err = readOptions(buf, off + 240, end, m);
  if (err) return err;
  const overload = dhcpOption(m, DhcpOption.OVERLOAD);
  if (overload && overload.length === 1) {
    if (overload[0] & 1) {
      const e = readOptions(buf, off + 108, off + 236, m);
      if (e) return e;
    }
    if (overload[0] & 2) {
      const e = readOptions(buf, off + 44, off + 108, m);
      if (e) return e;
    }
  }
  return m;
}

function readOptions(buf: Uint8Array, p: number, end: number, m: DhcpMessage): WireError | null {
  // RFC 3396 §7: instances of a split option are concatenated in order. Pieces are gathered first and
  // joined once, so a message of many instances costs linear time, not a copy per instance.
  let split: Map<number, Uint8Array[]> | null = null;
  let count = m.options.length;
  while (p < end) {
    const code = buf[p];
    if (code === DhcpOption.PAD) {
      p++;
      continue;
    }
    if (code === DhcpOption.END) break;
    if (p + 1 >= end) return new WireError("dhcp", `Option ${code} has no length byte`);
    const len = buf[p + 1];
    if (p + 2 + len > end) {
      return new WireError("dhcp", `Option ${code} of length ${len} overruns the message`);
    }
    if (++count > DHCP_MAX_OPTIONS) return new WireError("dhcp", `More than ${DHCP_MAX_OPTIONS} options`);
    const value = buf.subarray(p + 2, p + 2 + len);
    const pieces = split?.get(code);
    if (pieces) pieces.push(value);
    else {
      const at = m.options.findIndex(([c]) => c === code);
      if (at < 0) m.options.push([code, value]);
      else (split ??= new Map()).set(code, [m.options[at][1], value]);
    }
    p += 2 + len;
  }
  if (split) {
    for (const [code, pieces] of split) {
      const joined = new Uint8Array(pieces.reduce((n, v) => n + v.length, 0));
      let w = 0;
      for (const v of pieces) {
        joined.set(v, w);
        w += v.length;
      }
      m.options[m.options.findIndex(([c]) => c === code)][1] = joined;
    }
  }
  // A missing END is tolerated: the payload end bounds the options
  return null;
}

/** Bytes {@linkcode emitDhcp} writes for `m`. */
export function dhcpLength(m: DhcpMessage): number {
  let n = 240 + 1;
  for (const [, v] of m.options) n += 2 * Math.ceil(Math.max(v.length, 1) / 255) + v.length;
  return Math.max(n, m.padTo ?? BOOTP_MIN_LEN, BOOTP_MIN_LEN);
}

/** Writes `m` at `off` (options, END, zero padding); returns the bytes written (= dhcpLength(m)). */
export function emitDhcp(m: DhcpMessage, buf: Uint8Array, off: number): number {
  const total = dhcpLength(m);
  buf.fill(0, off, off + total);
  buf[off] = m.op;
  buf[off + 1] = m.htype;
  buf[off + 2] = m.hlen;
  buf[off + 3] = m.hops;
  put32(buf, off + 4, m.xid);
  put16(buf, off + 8, m.secs);
  put16(buf, off + 10, m.flags);
  put32(buf, off + 12, m.ciaddr);
  put32(buf, off + 16, m.yiaddr);
  put32(buf, off + 20, m.siaddr);
  put32(buf, off + 24, m.giaddr);
  buf.set(m.chaddr.subarray(0, 16), off + 28);
  buf.set(m.sname.subarray(0, 64), off + 44);
  buf.set(m.file.subarray(0, 128), off + 108);
  put32(buf, off + 236, DHCP_MAGIC);
  let p = off + 240;
  for (const [code, v] of m.options) {
    // RFC 3396: values over 255 bytes are split into consecutive instances
    let i = 0;
    do {
      const n = Math.min(255, v.length - i);
      buf[p] = code;
      buf[p + 1] = n;
      buf.set(v.subarray(i, i + n), p + 2);
      p += 2 + n;
      i += n;
    } while (i < v.length);
  }
  buf[p] = DhcpOption.END;
  return total;
}

/** Option value helpers. */
export function optU8(v: number): Uint8Array {
  return Uint8Array.of(v);
}

export function optU16(v: number): Uint8Array {
  return Uint8Array.of(v >>> 8, v & 0xff);
}

export function optU32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  put32(b, 0, v);
  return b;
}

export function optIpv4List(addrs: number[]): Uint8Array {
  const b = new Uint8Array(4 * addrs.length);
  addrs.forEach((a, i) => put32(b, 4 * i, a));
  return b;
}

export function optString(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
