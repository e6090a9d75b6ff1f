/**
 * DNS messages (RFC 1035 §4): header, questions, enough of resource records to log them and to
 * synthesize simple A/AAAA answers; name compression both ways (§4.1.4), used also for the DHCP
 * domain search option (RFC 3397).
 *
 * ```
 *  0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
 * +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 * |                      ID                       |
 * |QR|   Opcode  |AA|TC|RD|RA|   Z    |   RCODE   |
 * |                    QDCOUNT                    |
 * |                    ANCOUNT                    |
 * |                    NSCOUNT                    |
 * |                    ARCOUNT                    |
 * +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
 * ```
 * @module
 */
import { ipv6ToString } from "./ipv6.ts";
import { put16, put32, u16, u32, WireError } from "./bytes.ts";

export const DNS_HEADER_LEN = 12;
export const DNS_TYPE_A = 1;
export const DNS_TYPE_CNAME = 5;
export const DNS_TYPE_PTR = 12;
export const DNS_TYPE_AAAA = 28;
export const DNS_CLASS_IN = 1;
export const DNS_RCODE_NOERROR = 0;
export const DNS_RCODE_FORMERR = 1;
export const DNS_RCODE_SERVFAIL = 2;
export const DNS_RCODE_NXDOMAIN = 3;
export const DNS_RCODE_REFUSED = 5;

/** RFC 1035 §2.3.4: names are at most 255 octets, labels at most 63. */
const MAX_NAME = 255;
/** Bound on compression pointers followed, against loops in hostile messages. */
const MAX_POINTERS = 32;

/** The fixed header. */
export interface DnsHeader {
  id: number;
  /** The 16-bit flags word (QR, opcode, AA, TC, RD, RA, Z, RCODE). */
  flags: number;
  qdcount: number;
  ancount: number;
  nscount: number;
  arcount: number;
}

export interface DnsQuestion {
  /** Lower-cased dotted name without the trailing dot ("" for the root). */
  name: string;
  type: number;
  class: number;
}

export interface DnsRecord {
  name: string;
  type: number;
  class: number;
  ttl: number;
  /** View of RDATA in the message. */
  rdata: Uint8Array;
  /** Dotted address for A/AAAA, target name for CNAME/PTR, else undefined. */
  value?: string;
}

export interface DnsMessage {
  header: DnsHeader;
  questions: DnsQuestion[];
  answers: DnsRecord[];
}

/** Parses only the header (what a forwarder needs per packet). */
export function parseDnsHeader(buf: Uint8Array, off: number, end: number): DnsHeader | WireError {
  if (end - off < DNS_HEADER_LEN) {
    return new WireError("dns", `Message of ${end - off} bytes is shorter than 12`);
  }
  return {
    id: u16(buf, off),
    flags: u16(buf, off + 2),
    qdcount: u16(buf, off + 4),
    ancount: u16(buf, off + 6),
    nscount: u16(buf, off + 8),
    arcount: u16(buf, off + 10),
  };
}

/** Reads a (possibly compressed) name at `p`; offsets in pointers are relative to the message start `msg`. */
export function readName(
  buf: Uint8Array,
  msg: number,
  p: number,
  end: number,
): { name: string; next: number } | WireError {
  const labels: string[] = [];
  let next = -1;
  let total = 0;
  let jumps = 0;
  for (;;) {
    if (p >= end) return new WireError("dns", "Name runs past the end of the message");
    const len = buf[p];
    if (len === 0) {
      if (next < 0) next = p + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (p + 1 >= end) return new WireError("dns", "Truncated compression pointer");
      if (++jumps > MAX_POINTERS) return new WireError("dns", "Too many compression pointers");
      if (next < 0) next = p + 2;
      const target = msg + (((len & 0x3f) << 8) | buf[p + 1]);
      if (target >= p) return new WireError("dns", "Compression pointer does not point backwards");
      p = target;
      continue;
    }
    if ((len & 0xc0) !== 0) return new WireError("dns", `Unsupported label type 0x${len.toString(16)}`);
    if (p + 1 + len > end) return new WireError("dns", "Label runs past the end of the message");
    total += len + 1;
    if (total > MAX_NAME) return new WireError("dns", "Name longer than 255 octets");
    let label = "";
    for (let i = 0; i < len; i++) label += String.fromCharCode(buf[p + 1 + i]);
    labels.push(label.toLowerCase());
    p += 1 + len;
  }
  return { name: labels.join("."), next };
}

/** Parses header, questions and answers (authority and additional sections are not decoded). */
export function parseDns(buf: Uint8Array, off: number, end: number): DnsMessage | WireError {
  const header = parseDnsHeader(buf, off, end);
  if (header instanceof WireError) return header;
  let p = off + DNS_HEADER_LEN;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < header.qdcount; i++) {
    const n = readName(buf, off, p, end);
    if (n instanceof WireError) return n;
    if (n.next + 4 > end) return new WireError("dns", "Truncated question");
    questions.push({ name: n.name, type: u16(buf, n.next), class: u16(buf, n.next + 2) });
    p = n.next + 4;
  }
  const answers: DnsRecord[] = [];
  for (let i = 0; i < header.ancount; i++) {
    const n = readName(buf, off, p, end);
    if (n instanceof WireError) return n;
    const q = n.next;
    if (q + 10 > end) return new WireError("dns", "Truncated resource record");
    const rdlen = u16(buf, q + 8);
    if (q + 10 + rdlen > end) return new WireError("dns", "Resource record data runs past the end");
    const rec: DnsRecord = {
      name: n.name,
      type: u16(buf, q),
      class: u16(buf, q + 2),
      ttl: u32(buf, q + 4),
      rdata: buf.subarray(q + 10, q + 10 + rdlen),
    };
    if (rec.type === DNS_TYPE_A && rdlen === 4) rec.value = [...rec.rdata].join(".");
    else if (rec.type === DNS_TYPE_AAAA && rdlen === 16) rec.value = ipv6ToString(rec.rdata);
    else if (rec.type === DNS_TYPE_CNAME || rec.type === DNS_TYPE_PTR) {
      const t = readName(buf, off, q + 10, q + 10 + rdlen);
      if (!(t instanceof WireError)) rec.value = t.name;
    }
    answers.push(rec);
    p = q + 10 + rdlen;
  }
  return { header, questions, answers };
}

/**
 * Encodes names in wire format with RFC 1035 §4.1.4 compression against each other (suffixes already
 * written are replaced by pointers), as RFC 3397 asks for the DHCP domain search option.
 *
 * @param base offset the pointers count from (0 for a standalone option value)
 */
export function encodeNames(names: string[], base = 0): Uint8Array | WireError {
  const out: number[] = [];
  const written = new Map<string, number>();
  for (const raw of names) {
    const labels = raw.replace(/\.$/, "").split(".").filter((l) => l.length > 0);
    let total = 1;
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join(".").toLowerCase();
      const at = written.get(suffix);
      if (at !== undefined && at + base < 0x4000) {
        out.push(0xc0 | ((at + base) >> 8), (at + base) & 0xff);
        total = -1;
        break;
      }
      const bytes = new TextEncoder().encode(labels[i]);
      if (bytes.length > 63) return new WireError("dns", `Label "${labels[i]}" is longer than 63 octets`);
      total += bytes.length + 1;
      if (total > MAX_NAME) return new WireError("dns", `Name "${raw}" is longer than 255 octets`);
      written.set(suffix, out.length);
      out.push(bytes.length, ...bytes);
    }
    if (total !== -1) out.push(0);
  }
  return Uint8Array.from(out);
}

/** One answer to synthesize: an address for the question's name. */
export interface DnsAnswer {
  type: number;
  ttl: number;
  /** 4 bytes for A, 16 for AAAA. */
  address: Uint8Array;
}

/**
 * Builds a response to the query in `query[qOff, qEnd)` at `out[off]`: the query's header and first
 * question echoed, the given answers pointing at the question's name (pointer 0xc00c), and `rcode`.
 * Authority and additional sections of the query (e.g. EDNS OPT) are dropped.
 *
 * @returns bytes written, or a WireError when the query has no question to answer
 */
export function emitDnsResponse(
  query: Uint8Array,
  qOff: number,
  qEnd: number,
  answers: DnsAnswer[],
  rcode: number,
  out: Uint8Array,
  off: number,
): number | WireError {
  const h = parseDnsHeader(query, qOff, qEnd);
  if (h instanceof WireError) return h;
  if (h.qdcount < 1) return new WireError("dns", "Query has no question");
  const n = readName(query, qOff, qOff + DNS_HEADER_LEN, qEnd);
  if (n instanceof WireError) return n;
  if (n.next + 4 > qEnd) return new WireError("dns", "Truncated question");
  const qLen = n.next + 4 - (qOff + DNS_HEADER_LEN);
  const need = DNS_HEADER_LEN + qLen + answers.reduce((s, a) => s + 12 + a.address.length, 0);
  if (off + need > out.length) return new WireError("dns", "Response does not fit the buffer");
  put16(out, off, h.id);
  // QR=1, opcode and RD echoed, AA=1 (we are authoritative for synthesized names), RA=1
  put16(out, off + 2, 0x8000 | (h.flags & 0x7900) | 0x0400 | 0x0080 | (rcode & 0xf));
  put16(out, off + 4, 1);
  put16(out, off + 6, answers.length);
  put16(out, off + 8, 0);
  put16(out, off + 10, 0);
  out.set(query.subarray(qOff + DNS_HEADER_LEN, qOff + DNS_HEADER_LEN + qLen), off + DNS_HEADER_LEN);
  let p = off + DNS_HEADER_LEN + qLen;
  for (const a of answers) {
    put16(out, p, 0xc00c);
    put16(out, p + 2, a.type);
    put16(out, p + 4, DNS_CLASS_IN);
    put32(out, p + 6, a.ttl);
    put16(out, p + 10, a.address.length);
    out.set(a.address, p + 12);
    p += 12 + a.address.length;
  }
  return p - off;
}
