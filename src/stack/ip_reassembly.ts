/**
 * Reassembly of datagrams the guest sent in fragments: IPv4 (RFC 791 §3.2; RFC 815 hole tracking) and IPv6
 * (RFC 8200 §4.5). The relay is the destination of every datagram it terminates (a UDP flow, an echo to
 * the gateway), so it puts them back together as a host does.
 *
 * Bounded for a hostile guest: at most {@linkcode MAX_DATAGRAMS} datagrams in progress per tenant and
 * family, each buffer grown only as far as its fragments reach (≤ 65535 bytes), discarded
 * {@linkcode REASSEMBLY_TIMEOUT_MS} after its first fragment. Overlapping fragments discard the whole
 * datagram, as the overlap attacks (teardrop and kin) leave no honest reading of the bytes (RFC 5722 for
 * IPv6).
 *
 * @module
 */
import { put16, put32, u16 } from "../wire/bytes.ts";
import { internetChecksum } from "../wire/checksum.ts";
import { IPV4_CHECKSUM, IPV4_FLAGS_FRAG, IPV4_TOTAL_LEN, type Ipv4Header } from "../wire/ipv4.ts";
import { IPV6_HEADER_LEN, type Ipv6Header } from "../wire/ipv6.ts";
import { Timer, type TimerWheel } from "./timer_wheel.ts";
import type { FaultOwner } from "./containment.ts";

export const MAX_DATAGRAMS = 8;
/**
 * Fragments per datagram: a 65535-byte datagram at the smallest MTU we allow (576) takes 119; more can
 * only be a storm of tiny fragments meant to make each insertion cost more.
 */
export const MAX_FRAGMENTS = 128;
export const REASSEMBLY_TIMEOUT_MS = 5000;
const MAX_DATAGRAM = 65535;
/** IPv6 Payload Length (RFC 8200 §3): the reassembled packet's fragmentable part can be no longer. */
const MAX_PAYLOAD6 = 65535;
/** Offset of the Next Header and Payload Length fields in the IPv6 header. */
const IPV6_NEXT_HEADER = 6;
const IPV6_PAYLOAD_LEN = 4;

interface Partial {
  /** The datagram's identity, family-specific bytes (see the two front ends). */
  key: Uint8Array;
  /** The first fragment's header, once it arrived: the reassembled datagram's header. */
  header: Uint8Array;
  data: Uint8Array;
  /** Received [start, end) ranges of the payload, sorted, non-overlapping. */
  ranges: number[];
  /** Payload length, known once the last fragment (MF / M = 0) arrived; -1 before. */
  total: number;
  /** Fragments taken so far. */
  fragments: number;
  timer: Timer;
}

/** The drop counter names of one family ("ipv4-fragment-overlap", …). */
function reasons(family: "ipv4" | "ipv6") {
  return {
    invalid: `${family}-fragment-invalid`,
    full: `${family}-reassembly-full`,
    timeout: `${family}-reassembly-timeout`,
    tooMany: `${family}-too-many-fragments`,
    overlap: `${family}-fragment-overlap`,
    inconsistent: `${family}-fragment-inconsistent`,
  };
}

/** Datagrams in progress for one family: hole tracking, bounds and timeouts, whatever the header. */
class FragmentTable {
  /** At most MAX_DATAGRAMS: a scan is cheaper than a key string per fragment. */
  #partials: Partial[] = [];
  #wheel: TimerWheel;
  #drop: (reason: string) => void;
  #owner: FaultOwner;
  readonly reasons: ReturnType<typeof reasons>;

  constructor(family: "ipv4" | "ipv6", wheel: TimerWheel, drop: (reason: string) => void, owner: FaultOwner) {
    this.#wheel = wheel;
    this.#drop = drop;
    this.#owner = owner;
    this.reasons = reasons(family);
  }

  get pending(): number {
    return this.#partials.length;
  }

  #find(key: Uint8Array, keyLength: number): Partial | undefined {
    next: for (const p of this.#partials) {
      for (let i = 0; i < keyLength; i++) if (p.key[i] !== key[i]) continue next;
      return p;
    }
    return undefined;
  }

  #delete(p: Partial): void {
    const i = this.#partials.indexOf(p);
    if (i >= 0) this.#partials.splice(i, 1);
  }

  /**
   * Adds the fragment whose payload is `buf[from, to)`, at byte `start` of its datagram (`key[0, keyLength)`
   * names it; copied when it is new). `header` makes the reassembled datagram's header from the first
   * fragment. Returns the datagram, taken out of the table, when this fragment completes it; else null.
   */
  add(
    key: Uint8Array,
    keyLength: number,
    start: number,
    more: boolean,
    buf: Uint8Array,
    from: number,
    to: number,
    header: () => Uint8Array,
  ): Partial | null {
    const r = this.reasons;
    const end = start + (to - from);
    let p = this.#find(key, keyLength);
    if (!p) {
      if (this.#partials.length >= MAX_DATAGRAMS) {
        this.#drop(r.full);
        return null;
      }
      const entry: Partial = {
        key: key.slice(0, keyLength),
        header: new Uint8Array(0),
        data: new Uint8Array(Math.max(end, 1500)),
        ranges: [],
        total: -1,
        fragments: 0,
        timer: new Timer(() => {
          this.#delete(entry);
          this.#drop(r.timeout);
        }, this.#owner),
      };
      p = entry;
      this.#partials.push(p);
      this.#wheel.arm(p.timer, this.#wheel.now + REASSEMBLY_TIMEOUT_MS);
    }
    if (++p.fragments > MAX_FRAGMENTS) return this.#discard(p, r.tooMany);
    for (let i = 0; i < p.ranges.length; i += 2) {
      if (start < p.ranges[i + 1] && end > p.ranges[i]) return this.#discard(p, r.overlap);
    }
    if (!more) {
      if (p.total >= 0 && p.total !== end) return this.#discard(p, r.inconsistent);
      p.total = end;
    }
    if (p.total >= 0 && end > p.total) return this.#discard(p, r.inconsistent);
    if (end > p.data.length) {
      const grown = new Uint8Array(Math.min(MAX_DATAGRAM, Math.max(end, p.data.length * 2)));
      grown.set(p.data);
      p.data = grown;
    }
    p.data.set(buf.subarray(from, to), start);
    if (start === 0) p.header = header();
    // insert the range, merging neighbours
    let i = 0;
    while (i < p.ranges.length && p.ranges[i] < start) i += 2;
    p.ranges.splice(i, 0, start, end);
    const merged: number[] = [];
    for (let k = 0; k < p.ranges.length; k += 2) {
      const n = merged.length;
      if (n > 0 && merged[n - 1] === p.ranges[k]) merged[n - 1] = p.ranges[k + 1];
      else merged.push(p.ranges[k], p.ranges[k + 1]);
    }
    p.ranges = merged;
    if (
      p.total < 0 || p.header.length === 0 || p.ranges.length !== 2 || p.ranges[0] !== 0 ||
      p.ranges[1] !== p.total
    ) {
      return null;
    }
    this.#wheel.cancel(p.timer);
    this.#delete(p);
    return p;
  }

  #discard(p: Partial, reason: string): null {
    this.#wheel.cancel(p.timer);
    this.#delete(p);
    this.#drop(reason);
    return null;
  }

  close(): void {
    for (const p of this.#partials) this.#wheel.cancel(p.timer);
    this.#partials = [];
  }
}

/** IPv4: a datagram is identified by source, destination, protocol and identification (RFC 791 §3.2). */
export class Ipv4Reassembly {
  #table: FragmentTable;
  #drop: (reason: string) => void;
  #key = new Uint8Array(11);

  constructor(wheel: TimerWheel, drop: (reason: string) => void, owner: FaultOwner) {
    this.#table = new FragmentTable("ipv4", wheel, drop, owner);
    this.#drop = drop;
  }

  get pending(): number {
    return this.#table.pending;
  }

  /**
   * Adds the fragment `ip` (in `buf`). Returns the whole datagram (header and payload, fragment fields
   * cleared, checksum fixed) when this fragment completes one, else null.
   */
  input(buf: Uint8Array, ip: Ipv4Header): Uint8Array | null {
    const start = ip.fragmentOffset;
    const len = ip.payloadEnd - ip.payloadOffset;
    if (start + len + ip.headerLength > MAX_DATAGRAM || (ip.moreFragments && len % 8 !== 0)) {
      this.#drop(this.#table.reasons.invalid);
      return null;
    }
    const k = this.#key;
    put32(k, 0, ip.src);
    put32(k, 4, ip.dst);
    k[8] = ip.protocol;
    put16(k, 9, ip.id);
    const hs = ip.payloadOffset - ip.headerLength;
    const p = this.#table.add(
      k,
      11,
      start,
      ip.moreFragments,
      buf,
      ip.payloadOffset,
      ip.payloadEnd,
      () => buf.slice(hs, ip.payloadOffset),
    );
    if (!p) return null;
    const hl = p.header.length;
    const out = new Uint8Array(hl + p.total);
    out.set(p.header);
    out.set(p.data.subarray(0, p.total), hl);
    put16(out, IPV4_TOTAL_LEN, hl + p.total);
    put16(out, IPV4_FLAGS_FRAG, u16(out, IPV4_FLAGS_FRAG) & 0x4000); // keep DF, clear MF and offset
    put16(out, IPV4_CHECKSUM, 0);
    put16(out, IPV4_CHECKSUM, internetChecksum(out, 0, hl));
    return out;
  }

  close(): void {
    this.#table.close();
  }
}

/**
 * IPv6: a packet is identified by source, destination and the Fragment header's Identification (RFC 8200
 * §4.5). The reassembled packet is the first fragment's fixed header, its Next Header the first fragment's
 * Fragment header's, followed by the fragmentable part; extension headers before the Fragment header are
 * left out (the relay, the packet's destination, acts on none of them).
 */
export class Ipv6Reassembly {
  #table: FragmentTable;
  #drop: (reason: string) => void;
  #key = new Uint8Array(36);

  constructor(wheel: TimerWheel, drop: (reason: string) => void, owner: FaultOwner) {
    this.#table = new FragmentTable("ipv6", wheel, drop, owner);
    this.#drop = drop;
  }

  get pending(): number {
    return this.#table.pending;
  }

  /**
   * Adds the fragment `ip` (its IPv6 header at `buf[off]`). Returns the whole packet (a 40-byte header, no
   * Fragment header) when this fragment completes one, else null.
   */
  input(buf: Uint8Array, off: number, ip: Ipv6Header): Uint8Array | null {
    const start = ip.fragmentOffset;
    const from = ip.payloadOffset, to = ip.payloadEnd;
    const len = to - from;
    // §4.5: a fragment other than the last must be a multiple of 8 bytes long, and no fragment may reach
    // past the largest payload
    if (start + len > MAX_PAYLOAD6 || (ip.moreFragments && len % 8 !== 0)) {
      this.#drop(this.#table.reasons.invalid);
      return null;
    }
    const headerOf = () => {
      const h = buf.slice(off, off + IPV6_HEADER_LEN);
      h[IPV6_NEXT_HEADER] = ip.protocol; // only the first fragment's Next Header counts (§4.5)
      return h;
    };
    // RFC 6946: an atomic fragment (offset 0, M clear) is a whole packet, never merged with a queue
    if (start === 0 && !ip.moreFragments) return whole(headerOf(), buf.subarray(from, to), len);
    const k = this.#key;
    k.set(buf.subarray(ip.srcOffset, ip.srcOffset + 32), 0); // source and destination, adjacent
    put32(k, 32, ip.fragmentId);
    const p = this.#table.add(k, 36, start, ip.moreFragments, buf, from, to, headerOf);
    return p ? whole(p.header, p.data, p.total) : null;
  }

  close(): void {
    this.#table.close();
  }
}

/** The IPv6 packet `header` (40 bytes) ++ `data[0, length)`, its Payload Length set. */
function whole(header: Uint8Array, data: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(IPV6_HEADER_LEN + length);
  out.set(header);
  out.set(data.subarray(0, length), IPV6_HEADER_LEN);
  put16(out, IPV6_PAYLOAD_LEN, length);
  return out;
}
