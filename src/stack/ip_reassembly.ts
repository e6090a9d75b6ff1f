/**
 * IPv4 reassembly of fragmented datagrams from the guest (RFC 791 §3.2; RFC 815 hole tracking).
 *
 * Bounded for a hostile guest: at most {@linkcode MAX_DATAGRAMS} datagrams in progress per tenant, each
 * buffer grown only as far as its fragments reach (≤ 65535 bytes), discarded {@linkcode REASSEMBLY_TIMEOUT_MS}
 * after its first fragment. Overlapping fragments discard the whole datagram, as the overlap attacks
 * (teardrop and kin) leave no honest reading of the bytes.
 *
 * @module
 */
import { put16, u16 } from "../wire/bytes.ts";
import { internetChecksum } from "../wire/checksum.ts";
import { IPV4_CHECKSUM, IPV4_FLAGS_FRAG, IPV4_TOTAL_LEN, type Ipv4Header } from "../wire/ipv4.ts";
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

interface Partial {
  /** RFC 791 §3.2: a datagram is identified by source, destination, protocol and identification. */
  src: number;
  dst: number;
  protocol: number;
  id: number;
  header: Uint8Array;
  data: Uint8Array;
  /** Received [start, end) ranges of the payload, sorted, non-overlapping. */
  ranges: number[];
  /** Payload length, known once the last fragment (MF = 0) arrived; -1 before. */
  total: number;
  /** Fragments taken so far. */
  fragments: number;
  timer: Timer;
}

export class Ipv4Reassembly {
  /** At most MAX_DATAGRAMS: a scan is cheaper than a key string per fragment. */
  #partials: Partial[] = [];
  #wheel: TimerWheel;
  #drop: (reason: string) => void;

  #owner: FaultOwner;

  constructor(wheel: TimerWheel, drop: (reason: string) => void, owner: FaultOwner) {
    this.#wheel = wheel;
    this.#drop = drop;
    this.#owner = owner;
  }

  get pending(): number {
    return this.#partials.length;
  }

  #find(ip: Ipv4Header): Partial | undefined {
    for (const p of this.#partials) {
      if (p.id === ip.id && p.src === ip.src && p.dst === ip.dst && p.protocol === ip.protocol) return p;
    }
    return undefined;
  }

  #delete(p: Partial): void {
    const i = this.#partials.indexOf(p);
    if (i >= 0) this.#partials.splice(i, 1);
  }

  /**
   * Adds the fragment `ip` (in `buf`). Returns the whole datagram (header and payload, fragment fields
   * cleared, checksum fixed) when this fragment completes one, else null.
   */
  input(buf: Uint8Array, ip: Ipv4Header): Uint8Array | null {
    const start = ip.fragmentOffset;
    const len = ip.payloadEnd - ip.payloadOffset;
    const end = start + len;
    if (end + ip.headerLength > MAX_DATAGRAM || (ip.moreFragments && len % 8 !== 0)) {
      this.#drop("ipv4-fragment-invalid");
      return null;
    }
    let p = this.#find(ip);
    if (!p) {
      if (this.#partials.length >= MAX_DATAGRAMS) {
        this.#drop("ipv4-reassembly-full");
        return null;
      }
      const entry: Partial = {
        src: ip.src,
        dst: ip.dst,
        protocol: ip.protocol,
        id: ip.id,
        header: new Uint8Array(0),
        data: new Uint8Array(Math.max(end, 1500)),
        ranges: [],
        total: -1,
        fragments: 0,
        timer: new Timer(() => {
          this.#delete(entry);
          this.#drop("ipv4-reassembly-timeout");
        }, this.#owner),
      };
      p = entry;
      this.#partials.push(p);
      this.#wheel.arm(p.timer, this.#wheel.now + REASSEMBLY_TIMEOUT_MS);
    }
    if (++p.fragments > MAX_FRAGMENTS) return this.#discard(p, "ipv4-too-many-fragments");
    for (let i = 0; i < p.ranges.length; i += 2) {
      if (start < p.ranges[i + 1] && end > p.ranges[i]) return this.#discard(p, "ipv4-fragment-overlap");
    }
    if (!ip.moreFragments) {
      if (p.total >= 0 && p.total !== end) return this.#discard(p, "ipv4-fragment-inconsistent");
      p.total = end;
    }
    if (p.total >= 0 && end > p.total) return this.#discard(p, "ipv4-fragment-inconsistent");
    if (end > p.data.length) {
      const grown = new Uint8Array(Math.min(MAX_DATAGRAM, Math.max(end, p.data.length * 2)));
      grown.set(p.data);
      p.data = grown;
    }
    p.data.set(buf.subarray(ip.payloadOffset, ip.payloadEnd), start);
    if (start === 0) p.header = buf.slice(ip.payloadOffset - ip.headerLength, ip.payloadOffset);
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
