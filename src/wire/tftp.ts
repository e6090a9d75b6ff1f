/**
 * TFTP (RFC 1350) with option negotiation (RFC 2347) and its blksize (RFC 2348), timeout and tsize (RFC
 * 2349) options: what a PXE ROM or `curl tftp://` sends and expects.
 *
 * ```
 *  RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | …
 *  DATA     | 03 | block | data (0..blksize bytes; shorter than blksize: the last)
 *  ACK      | 04 | block |
 *  ERROR    | 05 | code  | message | 0 |
 *  OACK     | 06 | opt1 | 0 | value1 | 0 | …
 * ```
 * @module
 */
import { put16, u16, WireError } from "./bytes.ts";

export const TFTP_PORT = 69;
export const TFTP_HEADER_LEN = 4;
/** The block size without a blksize option (RFC 1350 §2). */
export const TFTP_DEFAULT_BLOCK = 512;
/** RFC 2348: blksize is 8 to 65464. */
export const TFTP_MIN_BLOCK = 8;
export const TFTP_MAX_BLOCK = 65464;

export const TftpOpcode = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;

/** Error codes (RFC 1350 §5; 8: RFC 2347 option negotiation refused). */
export const TftpError = {
  UNDEFINED: 0,
  FILE_NOT_FOUND: 1,
  ACCESS_VIOLATION: 2,
  ILLEGAL_OPERATION: 4,
  OPTION_REFUSED: 8,
} as const;

/** A read or write request. */
export interface TftpRequest {
  opcode: number;
  filename: string;
  /** Lower-cased: "octet", "netascii" or "mail". */
  mode: string;
  /** Options by lower-cased name, values as sent. */
  options: Map<string, string>;
}

/** Reads the NUL-terminated string at `buf[p]`; null when no NUL comes before `end`. */
function cString(buf: Uint8Array, p: number, end: number): { text: string; next: number } | null {
  const nul = buf.subarray(p, end).indexOf(0);
  if (nul < 0) return null;
  return { text: new TextDecoder("latin1").decode(buf.subarray(p, p + nul)), next: p + nul + 1 };
}

/** Parses a RRQ or WRQ in `buf[off, end)`. */
export function parseTftpRequest(buf: Uint8Array, off: number, end: number): TftpRequest | WireError {
  if (end - off < 2) return new WireError("tftp", "Shorter than an opcode");
  const opcode = u16(buf, off);
  if (opcode !== TftpOpcode.RRQ && opcode !== TftpOpcode.WRQ) return new WireError("tftp", "Not a request");
  const name = cString(buf, off + 2, end);
  if (!name || name.text.length === 0) return new WireError("tftp", "No file name");
  const mode = cString(buf, name.next, end);
  if (!mode) return new WireError("tftp", "No transfer mode");
  const options = new Map<string, string>();
  // RFC 2347: name/value pairs after the mode; a trailing unterminated one is ignored
  for (let p = mode.next; p < end;) {
    const k = cString(buf, p, end);
    if (!k) break;
    const v = cString(buf, k.next, end);
    if (!v) break;
    options.set(k.text.toLowerCase(), v.text);
    p = v.next;
  }
  return { opcode, filename: name.text, mode: mode.text.toLowerCase(), options };
}

/** Writes a DATA header for `block` (its low 16 bits) at `buf[off]`; the data follows it. */
export function emitTftpDataHeader(buf: Uint8Array, off: number, block: number): void {
  put16(buf, off, TftpOpcode.DATA);
  put16(buf, off + 2, block & 0xffff);
}

/** Writes an ERROR packet at `buf[off]`; returns its length. */
export function emitTftpError(buf: Uint8Array, off: number, code: number, message: string): number {
  put16(buf, off, TftpOpcode.ERROR);
  put16(buf, off + 2, code);
  const m = new TextEncoder().encode(message);
  buf.set(m, off + 4);
  buf[off + 4 + m.length] = 0;
  return 5 + m.length;
}

/** Writes an OACK with `options` (name, value) at `buf[off]`; returns its length. */
export function emitTftpOack(buf: Uint8Array, off: number, options: [string, string][]): number {
  put16(buf, off, TftpOpcode.OACK);
  let p = off + 2;
  const enc = new TextEncoder();
  for (const [k, v] of options) {
    for (const s of [k, v]) {
      p += enc.encodeInto(s, buf.subarray(p)).written;
      buf[p++] = 0;
    }
  }
  return p - off;
}
