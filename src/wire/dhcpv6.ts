/**
 * DHCPv6 messages (RFC 8415 §8, §21): a type, a 24-bit transaction id, then options as type, length, value.
 *
 * ```
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |    msg-type   |               transaction-id                  |
 * |                            options                            |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * ```
 * Parsing records where each option's value lies (the first of each type) without copying; emitting writes
 * options one at a time into a caller's buffer.
 * @module
 */
import { put16, u16, WireError } from "./bytes.ts";

export const DHCPV6_CLIENT_PORT = 546;
export const DHCPV6_SERVER_PORT = 547;

export const DHCPV6_SOLICIT = 1;
export const DHCPV6_ADVERTISE = 2;
export const DHCPV6_REQUEST = 3;
export const DHCPV6_CONFIRM = 4;
export const DHCPV6_RENEW = 5;
export const DHCPV6_REBIND = 6;
export const DHCPV6_REPLY = 7;
export const DHCPV6_RELEASE = 8;
export const DHCPV6_DECLINE = 9;
export const DHCPV6_INFORMATION_REQUEST = 11;

export const DHCPV6_OPT_CLIENTID = 1;
export const DHCPV6_OPT_SERVERID = 2;
export const DHCPV6_OPT_IA_NA = 3;
export const DHCPV6_OPT_IAADDR = 5;
export const DHCPV6_OPT_ORO = 6;
export const DHCPV6_OPT_ELAPSED_TIME = 8;
export const DHCPV6_OPT_STATUS_CODE = 13;
export const DHCPV6_OPT_RAPID_COMMIT = 14;
export const DHCPV6_OPT_DNS_SERVERS = 23;
export const DHCPV6_OPT_DOMAIN_LIST = 24;

/** Status codes (RFC 8415 §21.13). */
export const DHCPV6_STATUS_SUCCESS = 0;
export const DHCPV6_STATUS_NO_ADDRS_AVAIL = 2;
export const DHCPV6_STATUS_NOT_ON_LINK = 4;

/** A DUID is at most 128 bytes (RFC 8415 §11.1). */
const MAX_DUID = 130;
/** Options read per message: more is a hostile message. */
const MAX_OPTIONS = 64;

/** Where one option's value lies in the buffer. */
export interface Dhcpv6Option {
  offset: number;
  length: number;
}

/** A parsed DHCPv6 message: its type, transaction id, and the first option of each type. */
export interface Dhcpv6Message {
  type: number;
  transactionId: number;
  options: Map<number, Dhcpv6Option>;
}

/** Parses a client message in `buf[off, end)` (RFC 8415 §8); relay messages are refused. */
export function parseDhcpv6(buf: Uint8Array, off: number, end: number): Dhcpv6Message | WireError {
  if (end - off < 4) return new WireError("dhcpv6", `Message of ${end - off} bytes is shorter than 4`);
  const type = buf[off];
  if (type === 12 || type === 13) return new WireError("dhcpv6", "Relay messages are not served");
  const options = new Map<number, Dhcpv6Option>();
  let p = off + 4;
  for (let n = 0; p < end; n++) {
    if (n >= MAX_OPTIONS) return new WireError("dhcpv6", `More than ${MAX_OPTIONS} options`);
    if (end - p < 4) return new WireError("dhcpv6", "Option header truncated");
    const code = u16(buf, p), len = u16(buf, p + 2);
    if (p + 4 + len > end) return new WireError("dhcpv6", `Option ${code} runs past the message`);
    if ((code === DHCPV6_OPT_CLIENTID || code === DHCPV6_OPT_SERVERID) && (len < 2 || len > MAX_DUID)) {
      return new WireError("dhcpv6", `DUID of ${len} bytes`);
    }
    if (!options.has(code)) options.set(code, { offset: p + 4, length: len });
    p += 4 + len;
  }
  return { type, transactionId: (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3], options };
}

/** Writes the message header at `off`. @returns 4 */
export function emitDhcpv6Header(buf: Uint8Array, off: number, type: number, transactionId: number): number {
  buf[off] = type;
  buf[off + 1] = (transactionId >>> 16) & 0xff;
  buf[off + 2] = (transactionId >>> 8) & 0xff;
  buf[off + 3] = transactionId & 0xff;
  return 4;
}

/** Writes an option header for `length` bytes of value at `off`. @returns 4 */
export function emitDhcpv6OptionHeader(buf: Uint8Array, off: number, code: number, length: number): number {
  put16(buf, off, code);
  put16(buf, off + 2, length);
  return 4;
}

/** Writes option `code` with `value`. @returns bytes written */
export function emitDhcpv6Option(buf: Uint8Array, off: number, code: number, value: Uint8Array): number {
  emitDhcpv6OptionHeader(buf, off, code, value.length);
  buf.set(value, off + 4);
  return 4 + value.length;
}
