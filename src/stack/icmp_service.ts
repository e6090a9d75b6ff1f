/**
 * ICMPv4 for the guest (RFC 792, RFC 1122 §3.2.2): echo to the gateway's own addresses is answered here;
 * echo to anything else goes out through the host's unprivileged ICMP socket, where the host allows it,
 * and the reply is mapped back to the guest's id and sequence. Errors toward the guest (unreachable,
 * administratively prohibited, time exceeded) quote the offending datagram as RFC 1812 §4.3.2.3 asks.
 *
 * Traceroute: the gateway is the guest's first hop, so a datagram beyond it whose TTL runs out here draws a
 * time exceeded from the gateway (RFC 1812 §5.3.1); the rest leave with the guest's TTL less this hop, and
 * a router's time exceeded heard by the host socket comes back from that router — when the tenant's policy
 * would let the guest reach it (a tenant does not see the host's private routers).
 *
 * @module
 */
import { ipv4ToString, parseIpv4Address, WireError } from "../wire/bytes.ts";
import {
  emitIcmpV4,
  ICMP_DEST_UNREACHABLE,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_HEADER_LEN,
  ICMP_TIME_EXCEEDED,
  ICMP_UNREACH_ADMIN_PROHIBITED,
  ICMP_UNREACH_HOST,
  ICMP_UNREACH_PROTOCOL,
  icmpQuoteLength,
  parseIcmpV4,
} from "../wire/icmpv4.ts";
import { emitIpv4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, type Ipv4Header } from "../wire/ipv4.ts";
import { put16, put32 } from "../wire/bytes.ts";
import { L4_OFFSET } from "./frame.ts";
import type { StackContext } from "./context.ts";
import type { HostIcmpError } from "../host/host.ts";

/** Echo requests in flight through the host per tenant. */
export const MAX_PENDING_ECHO = 64;
const ECHO_TIMEOUT_MS = 5000;
/** {@linkcode IcmpService}'s answer for a time exceeded from a router the guest may not see. */
const HIDDEN_TIME_EXCEEDED = -2;

export class IcmpService {
  #stack: StackContext;
  #pending = 0;

  constructor(stack: StackContext) {
    this.#stack = stack;
  }

  input(buf: Uint8Array, ip: Ipv4Header): void {
    const s = this.#stack;
    const m = parseIcmpV4(buf, ip.payloadOffset, ip.payloadEnd);
    if (m instanceof WireError) return s.drop("icmp-malformed", m);
    if (m.type !== ICMP_ECHO_REQUEST) return s.drop("icmp-type-ignored");
    s.counters.icmpEchoes++;
    if (ip.dst === s.plan.gateway || ip.dst === s.plan.dns) {
      // the gateway and DNS addresses answer themselves, as large as asked (fragmented past the MTU)
      s.datagrams.sendIcmp(ip.dst, ip.src, ICMP_ECHO_REPLY, 0, m.rest, buf.subarray(m.dataOffset, m.dataEnd));
      return;
    }
    const real = s.translation.toReal(ip.dst);
    if (real < 0) return this.unreachable(buf, ip, ICMP_UNREACH_HOST, "icmp-no-host");
    if (!s.policy.check("icmp", real, 0)) {
      return this.unreachable(buf, ip, ICMP_UNREACH_ADMIN_PROHIBITED, "policy-denied-icmp");
    }
    const echo = s.host.icmpEcho();
    if (!echo) return this.unreachable(buf, ip, ICMP_UNREACH_ADMIN_PROHIBITED, "icmp-unsupported-by-host");
    if (this.#pending >= MAX_PENDING_ECHO) return s.drop("icmp-too-many-pending");
    const guest = ip.src, virtualDst = ip.dst, rest = m.rest;
    this.#pending++;
    const sent = echo.echo(
      ipv4ToString(real),
      buf.slice(m.dataOffset, m.dataEnd),
      ECHO_TIMEOUT_MS,
      (reply) => {
        this.#pending--;
        if (s.closed || !reply) return;
        if (reply.type === ICMP_ECHO_REPLY) {
          return s.datagrams.sendIcmp(virtualDst, guest, ICMP_ECHO_REPLY, 0, rest, reply.data);
        }
        const from = reply.offender === undefined ? -1 : this.#router(reply as HostIcmpError);
        if (from < 0) return s.drop("icmp-host-error-reply");
        // the quote: the guest's request rebuilt (its own id and sequence, by which the guest matches it)
        const q = L4_OFFSET + ICMP_HEADER_LEN;
        emitIpv4({ id: 0, ttl: 1, protocol: IPPROTO_ICMP, src: guest, dst: virtualDst }, s.tx, q, 8);
        emitIcmpV4(s.tx, q + 20, ICMP_ECHO_REQUEST, 0, rest, 0);
        this.#sendError(reply.type, reply.code, from, guest, 28);
      },
      ip.ttl - 1, // RFC 1812 §5.3.1: this gateway is a hop
    );
    if (!sent) {
      this.#pending--;
      this.unreachable(buf, ip, ICMP_UNREACH_HOST, "icmp-send-failed");
    }
  }

  /** Destination unreachable with `code` about the datagram `ip` in `buf`, counted under `reason`. */
  unreachable(buf: Uint8Array, ip: Ipv4Header, code: number, reason: string): void {
    this.#stack.counters.drop(reason);
    // RFC 1122 §3.2.2: sent from the address the datagram was for
    this.#errorAbout(buf, ip, ICMP_DEST_UNREACHABLE, code, ip.dst);
  }

  /**
   * Time exceeded in transit (RFC 792) about a datagram beyond the gateway whose TTL ends here (RFC 1812
   * §5.3.1), from the gateway: a traceroute's first hop.
   */
  timeExceeded(buf: Uint8Array, ip: Ipv4Header): void {
    this.#stack.counters.drop("ttl-exceeded");
    this.#errorAbout(buf, ip, ICMP_TIME_EXCEEDED, 0, this.#stack.plan.gateway);
  }

  /** An error of `type` and `code` from `from` quoting the datagram `ip` in `buf`. */
  #errorAbout(buf: Uint8Array, ip: Ipv4Header, type: number, code: number, from: number): void {
    const s = this.#stack;
    if (!s.admitErrorReply()) return;
    const start = ip.payloadOffset - ip.headerLength;
    const quote = icmpQuoteLength(ip.headerLength, ip.totalLength);
    const room = s.plan.mtu - 20 - ICMP_HEADER_LEN;
    const n = Math.min(quote, room);
    s.tx.set(buf.subarray(start, start + n), L4_OFFSET + ICMP_HEADER_LEN);
    this.#sendError(type, code, from, ip.src, n);
  }

  /** Writes the ICMP header over the `quoteLength` bytes of quote already in `tx`, and sends. */
  #sendError(type: number, code: number, from: number, guest: number, quoteLength: number): void {
    emitIcmpV4(this.#stack.tx, L4_OFFSET, type, code, 0, quoteLength);
    this.#stack.sendIpv4(from, guest, IPPROTO_ICMP, ICMP_HEADER_LEN + quoteLength);
  }

  /**
   * The address a router's error about a guest's datagram is shown from: as the host heard it, the host's
   * loopback as the gateway; -1 when the tenant's policy would not let the guest reach it.
   */
  #hop(offender: string): number {
    const s = this.#stack;
    const real = parseIpv4Address(offender);
    if (real === null || !s.policy.check("icmp", real, 0)) return -1;
    return s.translation.toVirtual(real);
  }

  /** Protocol unreachable (RFC 1122 §3.2.2.1) for an IP protocol we do not carry. */
  protocolUnreachable(buf: Uint8Array, ip: Ipv4Header): void {
    this.unreachable(buf, ip, ICMP_UNREACH_PROTOCOL, "ip-protocol-unreachable");
  }

  /**
   * Unreachable about a UDP datagram that is no longer in hand (a host socket failed later): the quote is
   * rebuilt from the flow's addresses and ports.
   */
  unreachableForUdp(guestIp: number, guestPort: number, dst: number, dstPort: number, code: number): void {
    this.#aboutUdp(ICMP_DEST_UNREACHABLE, code, dst, guestIp, guestPort, dst, dstPort);
  }

  /**
   * The ICMP error (time exceeded, unreachable) a router sent the host about a guest's UDP datagram no longer
   * in hand (a traceroute's later hops, a network the router cannot reach), passed on from that router;
   * true when dealt with — sent, or a time exceeded from a router the guest may not see (dropped) — false
   * when the caller's own answer should stand.
   */
  routerErrorForUdp(
    icmp: HostIcmpError,
    guestIp: number,
    guestPort: number,
    dst: number,
    dstPort: number,
  ): boolean {
    const from = this.#router(icmp);
    if (from < 0) return from === HIDDEN_TIME_EXCEEDED;
    this.#aboutUdp(icmp.type, icmp.code, from, guestIp, guestPort, dst, dstPort);
    return true;
  }

  /** {@linkcode #aboutFlow} for a UDP datagram: its header's last word is length 8, no checksum. */
  #aboutUdp(
    type: number,
    code: number,
    from: number,
    ip: number,
    port: number,
    dst: number,
    dstPort: number,
  ): void {
    this.#aboutFlow(type, code, from, IPPROTO_UDP, ip, port, dst, dstPort, 8 << 16);
  }

  /**
   * Where a router's `icmp` is shown from, or -1 when the caller's own answer should stand (not an error we
   * pass on; an unreachable from a router the guest may not see), or {@linkcode HIDDEN_TIME_EXCEEDED}: a time
   * exceeded from such a router, counted and dropped — the guest's traceroute shows `*` there.
   */
  #router(icmp: HostIcmpError): number {
    if (icmp.type !== ICMP_TIME_EXCEEDED && icmp.type !== ICMP_DEST_UNREACHABLE) return -1;
    const from = this.#hop(icmp.offender);
    if (from >= 0 || icmp.type !== ICMP_TIME_EXCEEDED) return from;
    this.#stack.counters.drop("icmp-hop-hidden");
    return HIDDEN_TIME_EXCEEDED;
  }

  /** Unreachable about a TCP SYN no longer in hand (the host dial failed later). */
  unreachableForTcp(
    guestIp: number,
    guestPort: number,
    dst: number,
    dstPort: number,
    seq: number,
    code: number,
  ): void {
    this.#aboutFlow(ICMP_DEST_UNREACHABLE, code, dst, IPPROTO_TCP, guestIp, guestPort, dst, dstPort, seq);
  }

  /**
   * The ICMP error a router sent the host about a guest's SYN (a path probe: a TCP traceroute's later hops),
   * passed on from that router; true when dealt with — sent, or a time exceeded from a router the guest may
   * not see (dropped, as for UDP) — false when the caller's own answer should stand.
   */
  routerErrorForTcp(
    icmp: HostIcmpError,
    guestIp: number,
    guestPort: number,
    dst: number,
    dstPort: number,
    seq: number,
  ): boolean {
    const from = this.#router(icmp);
    if (from < 0) return from === HIDDEN_TIME_EXCEEDED;
    this.#aboutFlow(icmp.type, icmp.code, from, IPPROTO_TCP, guestIp, guestPort, dst, dstPort, seq);
    return true;
  }

  /**
   * An error from `from` quoting a guest's UDP datagram or TCP SYN no longer in hand: its IPv4 header and
   * first 8 transport bytes rebuilt (RFC 792: enough to match it) — the ports, then `word`: a UDP header's
   * length and checksum, or a TCP segment's sequence number.
   */
  #aboutFlow(
    type: number,
    code: number,
    from: number,
    protocol: typeof IPPROTO_UDP | typeof IPPROTO_TCP,
    guestIp: number,
    guestPort: number,
    dst: number,
    dstPort: number,
    word: number,
  ): void {
    const s = this.#stack;
    if (!s.admitErrorReply()) return;
    const q = L4_OFFSET + ICMP_HEADER_LEN;
    emitIpv4({ id: 0, ttl: 64, protocol, src: guestIp, dst }, s.tx, q, protocol === IPPROTO_TCP ? 20 : 8);
    put16(s.tx, q + 20, guestPort);
    put16(s.tx, q + 22, dstPort);
    put32(s.tx, q + 24, word);
    this.#sendError(type, code, from, guestIp, 28);
  }

  close(): void {}
}
