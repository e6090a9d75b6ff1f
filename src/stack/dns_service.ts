/**
 * DNS at the virtual DNS address (10.0.2.3 by default): static records answered locally, everything else
 * forwarded over UDP to the configured upstream resolvers.
 *
 * Forwarding sends each query from a socket of its own (a fresh random source port, chosen by the
 * kernel) with a random query id, so an off-path attacker must guess both to forge an answer (RFC 5452
 * §4), matches the reply by that socket, that id *and* the upstream it was sent to, and restores the
 * guest's id. A query that gets no answer in `dnsTimeoutMs`, or whose upstream refuses it (ICMP port
 * unreachable), is retried on the next upstream; when every upstream has been tried, the guest gets SERVFAIL
 * rather than silence. Queries start at the upstream that answered last.
 *
 * @module
 */
import { parseIpv4Address, WireError } from "../wire/bytes.ts";
import { parseIpv6Address } from "../wire/ipv6.ts";
import {
  DNS_HEADER_LEN,
  DNS_RCODE_SERVFAIL,
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  type DnsAnswer,
  emitDnsResponse,
  encodeNames,
  parseDns,
  parseDnsHeader,
  readName,
} from "../wire/dns.ts";
import { emitUdp, UDP_HEADER_LEN, type UdpHeader } from "../wire/udp.ts";
import { IPPROTO_UDP } from "../wire/ipv4.ts";
import { u16 } from "../wire/bytes.ts";
import type { HostUdpSocket } from "../host/host.ts";
import { Timer } from "./timer_wheel.ts";
import type { StackContext } from "./context.ts";
import type { GuestPath } from "./guest_path.ts";
import { parseUpstream, type Upstream } from "./config.ts";

/**
 * Outstanding forwarded queries per tenant (each holds a socket); beyond it new queries are dropped (the
 * guest retries).
 */
export const MAX_PENDING_DNS = 128;
/** The relay host's name in every tenant (libslirp's, gvisor-tap-vsock's host.containers.internal alike). */
const HOST_NAME = "host.slirp.internal";
/** TTL of locally answered records. */
const STATIC_TTL = 60;
/** Socket errors that say an upstream will not answer: the next is asked at once. */
const UNREACHABLE = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH"]);

interface PendingQuery {
  upstreamId: number;
  guestId: number;
  /** The guest's side of the query (either family); null for the relay's own queries. */
  guest: GuestPath | null;
  guestPort: number;
  /** A copy of the query, for retries on the next upstream. */
  query: Uint8Array;
  upstream: number;
  tries: number;
  timer: Timer;
  /** This query's own socket: its random source port is half of what a forger must guess. */
  socket: HostUdpSocket | null;
  /** The IP version of that socket (a retry on an upstream of the other version opens a new one). */
  family: 4 | 6;
  /** A query of the relay's own (a stream naming a host, as Wisp's): where its address goes. */
  resolved?: (address: number | null) => void;
}

export class DnsService {
  #stack: StackContext;
  /** Static records: name → its A (4 bytes) and AAAA (16 bytes) addresses, either possibly absent. */
  #records = new Map<string, { a: Uint8Array | null; aaaa: Uint8Array | null }>();
  #upstreams: Upstream[];
  #pending = new Map<number, PendingQuery>();
  /**
   * The upstream that answered last: queries (and DNS over TCP) start there, so that a dead first upstream
   * costs one query its refusal or timeout, not every query.
   */
  #preferred = 0;
  /** Random query ids, drawn in batches from the CSPRNG. */
  #ids = new Uint16Array(64);
  #idsLeft = 0;

  constructor(stack: StackContext) {
    this.#stack = stack;
    for (const r of stack.config.dnsRecords) {
      const name = r.name.toLowerCase().replace(/\.$/, "");
      const rec = this.#records.get(name) ?? { a: null, aaaa: null };
      const a = parseIpv4Address(r.address);
      if (a !== null) rec.a = Uint8Array.of(a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255);
      else rec.aaaa = parseIpv6Address(r.address);
      this.#records.set(name, rec);
    }
    // the host's name answers over IPv6 too: prefix::2, the host's ::1 as 10.0.2.2 is its 127.0.0.1
    const host = this.#records.get(HOST_NAME);
    if (host && !host.aaaa && stack.plan.v6) host.aaaa = stack.plan.v6.gateway;
    const list = stack.config.dnsUpstreams.length > 0
      ? stack.config.dnsUpstreams
      : stack.host.systemResolvers();
    this.#upstreams = list.map(parseUpstream);
  }

  /** Queries awaiting an upstream answer. */
  get pending(): number {
    return this.#pending.size;
  }

  /** A query from the guest, over the path `guest` (the DNS address as its local side). */
  input(buf: Uint8Array, guest: GuestPath, udp: UdpHeader): void {
    const s = this.#stack;
    const q = udp.payloadOffset;
    const end = udp.payloadEnd;
    const h = parseDnsHeader(buf, q, end);
    if (h instanceof WireError) return s.drop("dns-malformed", h);
    if (h.flags & 0x8000) return s.drop("dns-not-a-query");
    s.counters.dnsQueries++;
    if (h.qdcount === 1 && this.#records.size > 0) {
      const n = readName(buf, q, q + DNS_HEADER_LEN, end);
      if (n instanceof WireError) return s.drop("dns-malformed", n);
      const rec = this.#records.get(n.name);
      if (rec && n.next + 4 <= end) {
        const type = u16(buf, n.next);
        const addr = type === DNS_TYPE_A ? rec.a : type === DNS_TYPE_AAAA ? rec.aaaa : null;
        // a name we hold answers every type itself: NODATA for the ones it has no address of
        const answers: DnsAnswer[] = addr ? [{ type, ttl: STATIC_TTL, address: addr }] : [];
        return this.#answerLocally(buf, q, end, answers, 0, guest, udp.srcPort);
      }
    }
    if (this.#upstreams.length === 0) {
      return this.#answerLocally(buf, q, end, [], DNS_RCODE_SERVFAIL, guest, udp.srcPort);
    }
    if (this.#pending.size >= MAX_PENDING_DNS) return s.drop("dns-too-many-pending");
    let id = this.#randomId();
    while (this.#pending.has(id)) id = this.#randomId();
    const query = buf.slice(q, end);
    query[0] = id >>> 8;
    query[1] = id & 0xff;
    const p: PendingQuery = {
      upstreamId: id,
      guestId: h.id,
      guest,
      guestPort: udp.srcPort,
      query,
      upstream: this.#preferred,
      tries: 0,
      timer: new Timer(() => this.#timeout(p), s),
      socket: null,
      family: 4,
    };
    this.#pending.set(id, p);
    this.#send(p);
  }

  /**
   * Resolves `name` to an IPv4 address for a stream that names its host (Wisp): a static record at once,
   * else an A query to the upstreams, with the guests' queries' safeguards (own socket, random id,
   * retries); `done(null)` when there is no answer.
   */
  resolve(name: string, done: (address: number | null) => void): void {
    const key = name.toLowerCase().replace(/\.$/, "");
    const fixed = this.#records.get(key)?.a;
    if (fixed) return done(((fixed[0] << 24) | (fixed[1] << 16) | (fixed[2] << 8) | fixed[3]) >>> 0);
    const qname = encodeNames([key]);
    if (qname instanceof WireError || this.#upstreams.length === 0) return done(null);
    if (this.#pending.size >= MAX_PENDING_DNS) return done(null);
    let id = this.#randomId();
    while (this.#pending.has(id)) id = this.#randomId();
    const query = new Uint8Array(DNS_HEADER_LEN + qname.length + 4);
    query[0] = id >>> 8;
    query[1] = id & 0xff;
    query[2] = 0x01; // RD
    query[5] = 1; // one question
    query.set(qname, DNS_HEADER_LEN);
    query[DNS_HEADER_LEN + qname.length + 1] = DNS_TYPE_A;
    query[DNS_HEADER_LEN + qname.length + 3] = 1; // IN
    const p: PendingQuery = {
      upstreamId: id,
      guestId: 0,
      guest: null,
      guestPort: 0,
      query,
      upstream: this.#preferred,
      tries: 0,
      timer: new Timer(() => this.#timeout(p), this.#stack),
      socket: null,
      family: 4,
      resolved: done,
    };
    this.#pending.set(id, p);
    this.#send(p);
  }

  #send(p: PendingQuery): void {
    const s = this.#stack;
    const u = this.#upstreams[p.upstream];
    p.tries++;
    s.wheel.arm(p.timer, s.wheel.now + s.config.dnsTimeoutMs);
    if (p.socket && p.family !== u.family) {
      p.socket.close();
      p.socket = null;
    }
    p.family = u.family;
    p.socket ??= s.host.openUdp({
      onMessage: (data, address, port) => this.#reply(p, data, address, port),
      onError: (code, address, port) => this.#upstreamFailed(p, code, address, port),
    }, u.family);
    p.socket.sendTo(p.query, u.address, u.port);
  }

  #randomId(): number {
    if (this.#idsLeft === 0) {
      crypto.getRandomValues(this.#ids);
      this.#idsLeft = this.#ids.length;
    }
    return this.#ids[--this.#idsLeft];
  }

  /** The query is answered or given up: its socket goes. */
  #finish(p: PendingQuery): void {
    this.#pending.delete(p.upstreamId);
    this.#stack.wheel.cancel(p.timer);
    p.socket?.close();
    p.socket = null;
  }

  /**
   * The upstream asked last refused the query or cannot be reached (an ICMP error, a failed send): the next
   * one is asked now rather than after the timeout, as a stub resolver does on ECONNREFUSED. An error about
   * an upstream asked before (`address`, `port`) changes nothing.
   */
  #upstreamFailed(p: PendingQuery, code: string, address?: string, port?: number): void {
    const s = this.#stack;
    s.log("debug", "DNS upstream socket error", { tenant: s.tenant, code });
    if (s.closed || this.#pending.get(p.upstreamId) !== p || !UNREACHABLE.has(code)) return;
    const u = this.#upstreams[p.upstream];
    if (address !== undefined && (address !== u.address || port !== u.port)) return;
    s.counters.drop("dns-upstream-unreachable");
    this.#timeout(p);
  }

  #timeout(p: PendingQuery): void {
    if (p.tries < this.#upstreams.length) {
      p.upstream = (p.upstream + 1) % this.#upstreams.length;
      this.#send(p);
      return;
    }
    this.#finish(p);
    this.#stack.counters.drop("dns-upstream-timeout");
    this.#stack.log("warn", "DNS query timed out on every upstream", { tenant: this.#stack.tenant });
    if (p.resolved || !p.guest) return p.resolved?.(null);
    const q = p.query;
    q[0] = p.guestId >>> 8;
    q[1] = p.guestId & 0xff;
    this.#answerLocally(q, 0, q.length, [], DNS_RCODE_SERVFAIL, p.guest, p.guestPort);
  }

  #reply(p: PendingQuery, data: Uint8Array, address: string, port: number): void {
    const s = this.#stack;
    if (s.closed || this.#pending.get(p.upstreamId) !== p) return;
    if (data.length < DNS_HEADER_LEN) return s.drop("dns-upstream-malformed");
    if (u16(data, 0) !== p.upstreamId) return s.drop("dns-upstream-unmatched");
    const u = this.#upstreams[p.upstream];
    if (u.address !== address || u.port !== port) return s.drop("dns-upstream-wrong-source");
    this.#finish(p);
    this.#preferred = p.upstream;
    if (p.resolved || !p.guest) return p.resolved?.(firstAddress(data));
    data[0] = p.guestId >>> 8;
    data[1] = p.guestId & 0xff;
    // The upstream kept to the size the guest's query offered (RFC 6891 §6.2.5; 512 without EDNS, RFC 1035
    // §4.2.1), so the guest can take it whole: past the MTU in fragments, as through a NAT, not truncated
    const g = p.guest;
    if (g.family === 4) s.datagrams.sendUdp(g.local, g.guest, 53, p.guestPort, data);
    else s.datagrams.sendUdp6(g.addresses.subarray(16), g.addresses.subarray(0, 16), 53, p.guestPort, data);
  }

  #answerLocally(
    query: Uint8Array,
    q: number,
    end: number,
    answers: DnsAnswer[],
    rcode: number,
    guest: GuestPath,
    guestPort: number,
  ): void {
    const s = this.#stack;
    const n = emitDnsResponse(query, q, end, answers, rcode, s.tx, guest.l4Offset + UDP_HEADER_LEN);
    if (n instanceof WireError) return s.drop("dns-malformed", n);
    this.#emit(n, guest, guestPort);
  }

  #emit(payloadLen: number, guest: GuestPath, guestPort: number): void {
    const s = this.#stack;
    const len = UDP_HEADER_LEN + payloadLen;
    emitUdp(s.tx, guest.l4Offset, 53, guestPort, payloadLen, guest.pseudoSum(IPPROTO_UDP, len));
    guest.send(s.tx, 0, IPPROTO_UDP, len);
  }

  /** Where DNS over TCP to the virtual DNS address goes: the upstream that answered last, or null without one. */
  tcpUpstream(): { address: string; port: number } | null {
    const u = this.#upstreams[this.#preferred];
    return u ? { address: u.address, port: u.port } : null;
  }

  close(): void {
    for (const p of [...this.#pending.values()]) {
      this.#finish(p);
      p.resolved?.(null);
    }
  }
}

/** The first A record's address in an answer, or null. */
function firstAddress(data: Uint8Array): number | null {
  const m = parseDns(data, 0, data.length);
  if (m instanceof WireError || (m.header.flags & 0xf) !== 0) return null;
  const a = m.answers.find((r) => r.type === DNS_TYPE_A && r.rdata.length === 4);
  return a ? ((a.rdata[0] << 24) | (a.rdata[1] << 16) | (a.rdata[2] << 8) | a.rdata[3]) >>> 0 : null;
}
