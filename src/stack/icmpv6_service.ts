/**
 * ICMPv6 for the guest: the router side of Neighbor Discovery (RFC 4861) that lets a guest configure
 * itself by SLAAC (RFC 4862), echo to the router's own addresses, and the errors other services send
 * (RFC 4443 §3).
 *
 * - Router Solicitation → Router Advertisement from the link-local fe80::2, hop limit 255, with the source
 *   link-layer option, the /64 prefix (on-link, autonomous), the MTU when it is not Ethernet's 1500, RDNSS
 *   (prefix::3) and DNSSL (RFC 8106). Unsolicited ones follow every {@linkcode RA_INTERVAL_MS} once the
 *   guest has asked.
 * - Neighbor Solicitation for an address the router owns (fe80::2, prefix::2, prefix::3) → Neighbor
 *   Advertisement; a DAD probe (source ::) is never answered, so a guest's own address is never contested.
 * - The guest's link-layer address per IPv6 address (link-local, SLAAC, temporary) is learned from every
 *   packet and from the link-layer options; unknown ones are solicited.
 * - MLD reports, the guest's own RAs and redirects are ignored (counted).
 *
 * @module
 */
import { MAC_BROADCAST, WireError } from "../wire/bytes.ts";
import { pseudoHeaderSumV6 } from "../wire/checksum.ts";
import {
  emitDnsslOption,
  emitIcmpv6,
  emitLinkLayerOption,
  emitMtuOption,
  emitPrefixOption,
  emitRdnssOption,
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_ECHO_REPLY,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_HEADER_LEN,
  ICMPV6_PACKET_TOO_BIG,
  ICMPV6_TIME_EXCEEDED,
  ICMPV6_UNREACH_ADDRESS,
  ICMPV6_UNREACH_ADMIN_PROHIBITED,
  ICMPV6_UNREACH_NO_ROUTE,
  multicastMacV6,
  NA_FLAG_OVERRIDE,
  NA_FLAG_ROUTER,
  NA_FLAG_SOLICITED,
  NDP_NEIGHBOR_ADVERTISEMENT,
  NDP_NEIGHBOR_SOLICITATION,
  NDP_OPT_SOURCE_LLADDR,
  NDP_OPT_TARGET_LLADDR,
  NDP_ROUTER_ADVERTISEMENT,
  NDP_ROUTER_SOLICITATION,
  ndpLinkLayerOption,
  parseIcmpv6,
  RA_FLAG_OTHER,
  solicitedNodeAddress,
} from "../wire/icmpv6.ts";
import {
  emitIpv6,
  IPPROTO_ICMPV6,
  IPV6_HEADER_LEN,
  IPV6_MIN_MTU,
  ipv6Equal,
  type Ipv6Header,
  ipv6InPrefix,
  ipv6ToString,
  isMulticastV6,
  isUnspecifiedV6,
  parseIpv6Address,
} from "../wire/ipv6.ts";
import { ETH_HEADER_LEN } from "../wire/ethernet.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "../wire/ipv4.ts";
import { put16, put32 } from "../wire/bytes.ts";
import type { Ipv6Plan } from "./config.ts";
import type { StackContext } from "./context.ts";
import type { HostIcmpError } from "../host/host.ts";
import { Ipv6Path } from "./guest_path.ts";
import { MAX_PENDING_ECHO } from "./icmp_service.ts";
import { mappedIpv4 } from "./translation.ts";
import { Timer } from "./timer_wheel.ts";

/** How long an echo through the host may take (as for IPv4). */
const ECHO_TIMEOUT_MS = 5000;
/** Unsolicited advertisements, once a guest has solicited one (RFC 4861 §6.2.1 allows 4–1800 s). */
export const RA_INTERVAL_MS = 300_000;
/** Router lifetime: three intervals, as RFC 4861 §6.2.1's default (3 × MaxRtrAdvInterval). */
const ROUTER_LIFETIME_SEC = 900;
/** Prefix lifetimes (RFC 4861 §6.2.1 defaults: 30 days valid, 7 days preferred; ours shorter). */
const PREFIX_VALID_SEC = 86400;
const PREFIX_PREFERRED_SEC = 14400;
/** RDNSS/DNSSL lifetime: at least 3 × the interval (RFC 8106 §5.1). */
const DNS_OPTION_LIFETIME_SEC = 900;
/** Guest addresses whose MAC is remembered: link-local, SLAAC, a few temporary ones. */
const MAX_NEIGHBOURS_V6 = 16;
/** RFC 4861 §3.1: an NDP message must arrive with hop limit 255, proof it was not routed. */
const NDP_HOP_LIMIT = 255;

const ALL_NODES = parseIpv6Address("ff02::1")!;

export class Icmpv6Service {
  #stack: StackContext;
  #plan: Ipv6Plan;
  /** Guest address (16 bytes each) → MAC, oldest first. */
  #neighbourAddresses: Uint8Array[] = [];
  #neighbourMacs: number[] = [];
  #raTimer: Timer;
  #scratch = new Uint8Array(16);

  constructor(stack: StackContext, plan: Ipv6Plan) {
    this.#stack = stack;
    this.#plan = plan;
    this.#raTimer = new Timer(() => this.#periodicAdvertisement(), stack);
  }

  /** Whether the 16 bytes at `a[off]` are one of the router's own addresses. */
  owns(a: Uint8Array, off: number): boolean {
    const p = this.#plan;
    return ipv6Equal(a, off, p.gateway, 0) || ipv6Equal(a, off, p.dns, 0) ||
      ipv6Equal(a, off, p.linkLocal, 0);
  }

  input(buf: Uint8Array, ip: Ipv6Header, srcMac: number): void {
    const s = this.#stack;
    const m = parseIcmpv6(
      buf,
      ip.payloadOffset,
      ip.payloadEnd,
      pseudoHeaderSumV6(
        buf,
        ip.srcOffset,
        buf,
        ip.dstOffset,
        IPPROTO_ICMPV6,
        ip.payloadEnd - ip.payloadOffset,
      ),
    );
    if (m instanceof WireError) return s.drop("icmpv6-malformed", m);
    switch (m.type) {
      case NDP_ROUTER_SOLICITATION:
        if (ip.hopLimit !== NDP_HOP_LIMIT) return s.drop("ndp-hop-limit-not-255");
        return this.#routerSolicitation(buf, ip, m.bodyOffset, m.end, srcMac);
      case NDP_NEIGHBOR_SOLICITATION:
        if (ip.hopLimit !== NDP_HOP_LIMIT) return s.drop("ndp-hop-limit-not-255");
        return this.#neighbourSolicitation(buf, ip, m.bodyOffset, m.end, srcMac);
      case NDP_NEIGHBOR_ADVERTISEMENT: {
        if (ip.hopLimit !== NDP_HOP_LIMIT || m.end - m.bodyOffset < 16) return s.drop("ndp-malformed");
        const mac = ndpLinkLayerOption(buf, m.bodyOffset + 16, m.end, NDP_OPT_TARGET_LLADDR);
        if (mac instanceof WireError) return s.drop("ndp-malformed", mac);
        if (!isMulticastV6(buf, m.bodyOffset)) this.learn(buf, m.bodyOffset, mac >= 0 ? mac : srcMac);
        return;
      }
      case ICMPV6_ECHO_REQUEST:
        return this.#echo(buf, ip, m.rest, m.bodyOffset, m.end);
      default:
        // MLD reports, the guest's router advertisements and redirects: nothing for a router of one guest
        return s.drop("icmpv6-type-ignored");
    }
  }

  #routerSolicitation(buf: Uint8Array, ip: Ipv6Header, body: number, end: number, srcMac: number): void {
    const s = this.#stack;
    // §4.1: 4 reserved bytes, then options; §6.1.1: no source link-layer option from ::
    const mac = ndpLinkLayerOption(buf, body, end, NDP_OPT_SOURCE_LLADDR);
    if (mac instanceof WireError) return s.drop("ndp-malformed", mac);
    const unspecified = isUnspecifiedV6(buf, ip.srcOffset);
    if (unspecified && mac >= 0) return s.drop("ndp-malformed");
    s.counters.routerSolicitations++;
    if (!unspecified) this.learn(buf, ip.srcOffset, mac >= 0 ? mac : srcMac);
    // §6.2.6: the answer may go to all nodes; unicast when the soliciting address is known
    if (unspecified) this.advertise(ALL_NODES, 0, multicastMacV6(ALL_NODES, 0));
    else this.advertise(buf, ip.srcOffset, mac >= 0 ? mac : srcMac);
    if (!this.#raTimer.armed) s.wheel.arm(this.#raTimer, s.wheel.now + RA_INTERVAL_MS);
  }

  #periodicAdvertisement(): void {
    const s = this.#stack;
    if (s.closed) return;
    this.advertise(ALL_NODES, 0, multicastMacV6(ALL_NODES, 0));
    s.wheel.arm(this.#raTimer, s.wheel.now + RA_INTERVAL_MS);
  }

  /** Sends a Router Advertisement (RFC 4861 §4.2) to `dst[dstOff]` at `dstMac`. */
  advertise(dst: Uint8Array, dstOff: number, dstMac: number): void {
    const s = this.#stack;
    const p = this.#plan;
    const tx = s.tx;
    const l4 = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    let o = l4 + ICMPV6_HEADER_LEN;
    put32(tx, o, 0); // reachable time: unspecified
    put32(tx, o + 4, 0); // retrans timer: unspecified
    o += 8;
    o += emitLinkLayerOption(tx, o, NDP_OPT_SOURCE_LLADDR, s.plan.gatewayMac);
    if (s.plan.mtu !== 1500) o += emitMtuOption(tx, o, s.plan.mtu);
    o += emitPrefixOption(tx, o, p.prefix, p.prefixLength, PREFIX_VALID_SEC, PREFIX_PREFERRED_SEC);
    o += emitRdnssOption(tx, o, p.dns, DNS_OPTION_LIFETIME_SEC);
    o += emitDnsslOption(tx, o, s.config.searchDomains, DNS_OPTION_LIFETIME_SEC);
    const body = o - l4 - ICMPV6_HEADER_LEN;
    // cur hop limit 64; M=0 (addresses by SLAAC), O=1 (DNS also by stateless DHCPv6); router lifetime
    const rest = ((64 << 24) | (RA_FLAG_OTHER << 16) | ROUTER_LIFETIME_SEC) >>> 0;
    this.#send(p.linkLocal, 0, dst, dstOff, NDP_ROUTER_ADVERTISEMENT, 0, rest, body, dstMac, NDP_HOP_LIMIT);
  }

  #neighbourSolicitation(buf: Uint8Array, ip: Ipv6Header, body: number, end: number, srcMac: number): void {
    const s = this.#stack;
    // §4.3: the reserved word is the message's `rest`; the target follows, then the options
    if (end - body < 16) return s.drop("ndp-malformed");
    const target = body;
    const mac = ndpLinkLayerOption(buf, body + 16, end, NDP_OPT_SOURCE_LLADDR);
    if (mac instanceof WireError) return s.drop("ndp-malformed", mac);
    // §7.1.1 / RFC 4862 §5.4.3: a DAD probe is not answered — the guest's tentative address is its own
    if (isUnspecifiedV6(buf, ip.srcOffset)) return s.drop("ndp-dad-probe");
    this.learn(buf, ip.srcOffset, mac >= 0 ? mac : srcMac);
    if (!this.owns(buf, target)) return s.drop("ndp-target-not-ours");
    const tx = s.tx;
    const l4 = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    // §4.4: target address, then the target link-layer option
    tx.set(buf.subarray(target, target + 16), l4 + ICMPV6_HEADER_LEN);
    emitLinkLayerOption(tx, l4 + ICMPV6_HEADER_LEN + 16, NDP_OPT_TARGET_LLADDR, s.plan.gatewayMac);
    const flags = (NA_FLAG_ROUTER | NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE) << 24;
    this.#send(
      buf,
      target,
      buf,
      ip.srcOffset,
      NDP_NEIGHBOR_ADVERTISEMENT,
      0,
      flags >>> 0,
      24,
      -1,
      NDP_HOP_LIMIT,
    );
  }

  #echo(buf: Uint8Array, ip: Ipv6Header, rest: number, body: number, end: number): void {
    const s = this.#stack;
    s.counters.icmpEchoes++;
    if (isMulticastV6(buf, ip.dstOffset)) return s.drop("icmpv6-echo-multicast");
    if (!this.owns(buf, ip.dstOffset)) return this.#echoThroughHost(buf, ip, rest, body, end);
    // as large as the request, which the guest may have sent in fragments: fragmented alike when it must be
    s.datagrams.sendIcmpv6(
      buf,
      ip.dstOffset,
      buf,
      ip.srcOffset,
      ICMPV6_ECHO_REPLY,
      0,
      rest,
      buf.subarray(body, end),
    );
  }

  /**
   * Echo to an address beyond the router: through the host's IPv6 ping socket where policy and the host
   * allow it, the reply mapped back to the guest's identifier and sequence (the kernel owns the socket's).
   */
  #echoThroughHost(buf: Uint8Array, ip: Ipv6Header, rest: number, body: number, end: number): void {
    const s = this.#stack;
    const real = s.translation.toReal6(buf, ip.dstOffset);
    if (real === null || mappedIpv4(real, 0) >= 0) {
      return this.unreachable(buf, ip, ICMPV6_UNREACH_ADDRESS, "icmpv6-no-host");
    }
    if (!s.policy.check6("icmp", real, 0, 0)) {
      return this.unreachable(buf, ip, ICMPV6_UNREACH_ADMIN_PROHIBITED, "policy-denied-icmpv6");
    }
    const echo = s.host.icmpEcho();
    if (!echo) return this.unreachable(buf, ip, ICMPV6_UNREACH_ADMIN_PROHIBITED, "icmp-unsupported-by-host");
    if (this.#pendingEchoes >= MAX_PENDING_ECHO) return s.drop("icmp-too-many-pending");
    // the reply goes back between these two addresses, from the one the guest pinged
    const path = new Ipv6Path(s, buf, ip.srcOffset, buf, ip.dstOffset);
    this.#pendingEchoes++;
    const sent = echo.echo(ipv6ToString(real, 0), buf.slice(body, end), ECHO_TIMEOUT_MS, (reply) => {
      this.#pendingEchoes--;
      if (s.closed || !reply) return;
      const a = path.addresses;
      if (reply.type === ICMPV6_ECHO_REPLY) {
        return s.datagrams.sendIcmpv6(a, 16, a, 0, ICMPV6_ECHO_REPLY, 0, rest, reply.data);
      }
      const from = reply.offender === undefined ? false : this.#router(reply as HostIcmpError);
      if (typeof from === "boolean") return s.drop("icmpv6-host-error-reply");
      // the quote: the guest's request rebuilt (its own identifier and sequence, by which it matches it)
      const q = ETH_HEADER_LEN + IPV6_HEADER_LEN + ICMPV6_HEADER_LEN;
      emitIpv6(s.tx, q, ICMPV6_HEADER_LEN, IPPROTO_ICMPV6, 1, a, 0, a, 16);
      emitIcmpv6(s.tx, q + IPV6_HEADER_LEN, ICMPV6_ECHO_REQUEST, 0, rest, 0, 0);
      this.#send(from, 0, a, 0, reply.type, reply.code, 0, IPV6_HEADER_LEN + ICMPV6_HEADER_LEN, -1, 64);
    }, ip.hopLimit - 1); // this router is a hop
    if (!sent) {
      this.#pendingEchoes--;
      this.unreachable(buf, ip, ICMPV6_UNREACH_NO_ROUTE, "icmpv6-send-failed");
    }
  }

  #pendingEchoes = 0;

  /**
   * Destination unreachable (RFC 4443 §3.1) about the packet `ip` in `buf`, counted under `reason`: as much
   * of it quoted as keeps the error within the minimum MTU (§2.4 (c)), sent from the address it was for.
   */
  unreachable(buf: Uint8Array, ip: Ipv6Header, code: number, reason: string): void {
    const s = this.#stack;
    s.counters.drop(reason);
    // §2.4 (e): never about a multicast destination or from an unspecified/multicast source
    if (isMulticastV6(buf, ip.dstOffset) || isMulticastV6(buf, ip.srcOffset)) return;
    if (isUnspecifiedV6(buf, ip.srcOffset) || !s.admitErrorReply()) return;
    const start = ip.srcOffset - 8;
    const n = Math.min(ip.payloadEnd - start, IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMPV6_HEADER_LEN);
    const l4 = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    s.tx.set(buf.subarray(start, start + n), l4 + ICMPV6_HEADER_LEN);
    // §2.2: from the address the packet was for, unless that is no unicast address (::) — then the router's
    const [from, fromOff] = isUnspecifiedV6(buf, ip.dstOffset)
      ? [this.#plan.gateway, 0]
      : [buf, ip.dstOffset];
    this.#send(from, fromOff, buf, ip.srcOffset, ICMPV6_DEST_UNREACHABLE, code, 0, n, -1, 64);
  }

  /**
   * Packet Too Big (RFC 4443 §3.2) about a packet from the guest larger than its link's MTU: an IPv6 router
   * does not fragment, it tells the source the MTU (RFC 8201), and the guest's path MTU follows.
   */
  packetTooBig(buf: Uint8Array, ip: Ipv6Header, mtu: number): void {
    const s = this.#stack;
    s.counters.drop("ipv6-packet-too-big");
    if (isUnspecifiedV6(buf, ip.srcOffset) || !s.admitErrorReply()) return;
    const start = ip.srcOffset - 8;
    const n = Math.min(ip.payloadEnd - start, IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMPV6_HEADER_LEN);
    s.tx.set(buf.subarray(start, start + n), ETH_HEADER_LEN + IPV6_HEADER_LEN + ICMPV6_HEADER_LEN);
    // from the router's own address: the packet's destination may be anywhere
    this.#send(this.#plan.gateway, 0, buf, ip.srcOffset, ICMPV6_PACKET_TOO_BIG, 0, mtu, n, -1, 64);
  }

  /**
   * Time Exceeded (RFC 4443 §3.3) about a packet beyond the router whose hop limit ends here (RFC 8200
   * §3): a traceroute's first hop, from the router's own address.
   */
  timeExceeded(buf: Uint8Array, ip: Ipv6Header): void {
    const s = this.#stack;
    s.counters.drop("hop-limit-exceeded");
    if (!s.admitErrorReply()) return;
    const start = ip.srcOffset - 8;
    const n = Math.min(ip.payloadEnd - start, IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMPV6_HEADER_LEN);
    s.tx.set(buf.subarray(start, start + n), ETH_HEADER_LEN + IPV6_HEADER_LEN + ICMPV6_HEADER_LEN);
    this.#send(this.#plan.gateway, 0, buf, ip.srcOffset, ICMPV6_TIME_EXCEEDED, 0, 0, n, -1, 64);
  }

  /**
   * The address a router's error about a guest's packet is shown from: as the host heard it, the host's ::1
   * as prefix::2; null when it is no IPv6 address or the tenant's policy would not let the guest reach it.
   */
  #hop(offender: string): Uint8Array | null {
    const s = this.#stack;
    const real = offender.includes(":") ? parseIpv6Address(offender) : null;
    if (!real || !s.policy.check6("icmp", real, 0, 0)) return null;
    return s.translation.toVirtual6(real, 0);
  }

  /** Unreachable about a TCP SYN no longer in hand (the host dial failed later), its headers rebuilt. */
  unreachableForTcp(
    path: Ipv6Path,
    guestPort: number,
    localPort: number,
    seq: number,
    noRoute: boolean,
  ): void {
    const code = noRoute ? ICMPV6_UNREACH_NO_ROUTE : ICMPV6_UNREACH_ADDRESS;
    this.#aboutTcp(ICMPV6_DEST_UNREACHABLE, code, path.addresses, 16, path, guestPort, localPort, seq);
  }

  /**
   * The ICMPv6 error a router sent the host about a guest's SYN (a path probe: a TCP traceroute's later
   * hops), passed on from that router; true when dealt with — sent, or a Time Exceeded from a router the
   * guest may not see (dropped, as for UDP) — false when the caller's own answer should stand.
   */
  routerErrorForTcp(
    icmp: HostIcmpError,
    path: Ipv6Path,
    guestPort: number,
    localPort: number,
    seq: number,
  ): boolean {
    const from = this.#router(icmp);
    if (typeof from === "boolean") return from;
    this.#aboutTcp(icmp.type, icmp.code, from, 0, path, guestPort, localPort, seq);
    return true;
  }

  /**
   * Where a router's `icmp` is shown from; or false when the caller's own answer should stand (not an error
   * we pass on; an unreachable from a router the guest may not see); or true for a Time Exceeded from such
   * a router, counted and dropped — the guest's traceroute shows `*` there.
   */
  #router(icmp: HostIcmpError): Uint8Array | boolean {
    if (icmp.type !== ICMPV6_TIME_EXCEEDED && icmp.type !== ICMPV6_DEST_UNREACHABLE) return false;
    const from = this.#hop(icmp.offender);
    if (from || icmp.type !== ICMPV6_TIME_EXCEEDED) return from ?? false;
    this.#stack.counters.drop("icmp-hop-hidden");
    return true;
  }

  /** An error from `from[fromOff]` quoting a guest's SYN no longer in hand, its headers rebuilt. */
  #aboutTcp(
    type: number,
    code: number,
    from: Uint8Array,
    fromOff: number,
    path: Ipv6Path,
    guestPort: number,
    localPort: number,
    seq: number,
  ): void {
    const s = this.#stack;
    if (!s.admitErrorReply()) return;
    const a = path.addresses;
    const q = ETH_HEADER_LEN + IPV6_HEADER_LEN + ICMPV6_HEADER_LEN;
    const tx = s.tx;
    emitIpv6(tx, q, 20, IPPROTO_TCP, 64, a, 0, a, 16);
    tx.fill(0, q + IPV6_HEADER_LEN, q + IPV6_HEADER_LEN + 20);
    put16(tx, q + IPV6_HEADER_LEN, guestPort);
    put16(tx, q + IPV6_HEADER_LEN + 2, localPort);
    put32(tx, q + IPV6_HEADER_LEN + 4, seq);
    tx[q + IPV6_HEADER_LEN + 12] = 0x50;
    tx[q + IPV6_HEADER_LEN + 13] = 0x02; // SYN
    this.#send(from, fromOff, a, 0, type, code, 0, IPV6_HEADER_LEN + 20, -1, 64);
  }

  /**
   * Unreachable about a UDP datagram no longer in hand (the host socket failed later): its IPv6 and UDP
   * headers rebuilt from the flow (guest → `dst`), sent from `dst`.
   */
  unreachableForUdp(
    guest: Uint8Array,
    guestPort: number,
    dst: Uint8Array,
    dstPort: number,
    code: number,
  ): void {
    this.#aboutUdp(ICMPV6_DEST_UNREACHABLE, code, dst, guest, guestPort, dst, dstPort);
  }

  /**
   * The ICMPv6 error (Time Exceeded, unreachable) a router sent the host about a guest's UDP datagram no
   * longer in hand, passed on from that router; true when dealt with — sent, or a Time Exceeded from a
   * router the guest may not see (dropped) — false when the caller's own answer should stand.
   */
  routerErrorForUdp(
    icmp: HostIcmpError,
    guest: Uint8Array,
    guestPort: number,
    dst: Uint8Array,
    dstPort: number,
  ): boolean {
    const from = this.#router(icmp);
    if (typeof from === "boolean") return from;
    this.#aboutUdp(icmp.type, icmp.code, from, guest, guestPort, dst, dstPort);
    return true;
  }

  #aboutUdp(
    type: number,
    code: number,
    from: Uint8Array,
    guest: Uint8Array,
    guestPort: number,
    dst: Uint8Array,
    dstPort: number,
  ): void {
    const s = this.#stack;
    if (!s.admitErrorReply()) return;
    const q = ETH_HEADER_LEN + IPV6_HEADER_LEN + ICMPV6_HEADER_LEN;
    const tx = s.tx;
    emitIpv6(tx, q, 8, IPPROTO_UDP, 64, guest, 0, dst, 0);
    put16(tx, q + IPV6_HEADER_LEN, guestPort);
    put16(tx, q + IPV6_HEADER_LEN + 2, dstPort);
    put16(tx, q + IPV6_HEADER_LEN + 4, 8);
    put16(tx, q + IPV6_HEADER_LEN + 6, 0);
    this.#send(from, 0, guest, 0, type, code, 0, IPV6_HEADER_LEN + 8, -1, 64);
  }

  /** Writes the ICMPv6 header over `bodyLength` bytes already at its body in `tx`, and sends. */
  #send(
    src: Uint8Array,
    srcOff: number,
    dst: Uint8Array,
    dstOff: number,
    type: number,
    code: number,
    rest: number,
    bodyLength: number,
    dstMac: number,
    hopLimit: number,
  ): void {
    const s = this.#stack;
    const l4 = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    const len = ICMPV6_HEADER_LEN + bodyLength;
    emitIcmpv6(
      s.tx,
      l4,
      type,
      code,
      rest,
      bodyLength,
      pseudoHeaderSumV6(src, srcOff, dst, dstOff, IPPROTO_ICMPV6, len),
    );
    s.sendIpv6In(s.tx, 0, src, srcOff, dst, dstOff, IPPROTO_ICMPV6, len, dstMac, hopLimit);
  }

  // ───────────────────────── neighbours ─────────────────────────

  /** Records that the guest's address at `a[off]` is at `mac` (bounded; the oldest gives way). */
  learn(a: Uint8Array, off: number, mac: number): void {
    if (mac < 0 || mac === MAC_BROADCAST) return;
    const addrs = this.#neighbourAddresses;
    for (let i = 0; i < addrs.length; i++) {
      if (ipv6Equal(addrs[i], 0, a, off)) {
        this.#neighbourMacs[i] = mac;
        return;
      }
    }
    if (addrs.length >= MAX_NEIGHBOURS_V6) {
      addrs.shift();
      this.#neighbourMacs.shift();
    }
    const copy = a.slice(off, off + 16);
    addrs.push(copy);
    this.#neighbourMacs.push(mac);
    if (ipv6InPrefix(copy, 0, this.#plan.prefix, this.#plan.prefixLength)) this.#latestGlobal = copy;
  }

  #latestGlobal: Uint8Array | null = null;

  /** The guest's global address in the tenant's prefix seen most recently first, or null (port forwards). */
  guestAddress(): Uint8Array | null {
    return this.#latestGlobal;
  }

  /**
   * The MAC of the guest address at `a[off]`; for a multicast address its 33:33 MAC. Unknown: a Neighbor
   * Solicitation goes out for it and -1 comes back (the caller drops its packet, as with ARP).
   */
  macFor(a: Uint8Array, off: number): number {
    if (isMulticastV6(a, off)) return multicastMacV6(a, off);
    const addrs = this.#neighbourAddresses;
    for (let i = addrs.length - 1; i >= 0; i--) {
      if (ipv6Equal(addrs[i], 0, a, off)) return this.#neighbourMacs[i];
    }
    this.#solicit(a, off);
    return -1;
  }

  /** The guest addresses learned, each with its MAC. */
  *neighbours(): Generator<[Uint8Array, number]> {
    for (let i = 0; i < this.#neighbourAddresses.length; i++) {
      yield [this.#neighbourAddresses[i], this.#neighbourMacs[i]];
    }
  }

  /** Neighbor Solicitation for a guest address (RFC 4861 §7.2.2), to its solicited-node group. */
  #solicit(a: Uint8Array, off: number): void {
    if (!this.#stack.admitErrorReply()) return;
    const group = solicitedNodeAddress(a, off, this.#scratch);
    this.#emitSolicitation(a, off, group, multicastMacV6(group, 0));
  }

  /**
   * Asks the host at `mac` whether it still holds `a`, unicast (RFC 4861 §7.3.1: confirming reachability):
   * only that host answers, and its advertisement comes from its MAC.
   */
  poll(a: Uint8Array, mac: number): void {
    this.#emitSolicitation(a, 0, a, mac);
  }

  #emitSolicitation(target: Uint8Array, off: number, dst: Uint8Array, dstMac: number): void {
    const s = this.#stack;
    const tx = s.tx;
    const l4 = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    tx.set(target.subarray(off, off + 16), l4 + ICMPV6_HEADER_LEN);
    emitLinkLayerOption(tx, l4 + ICMPV6_HEADER_LEN + 16, NDP_OPT_SOURCE_LLADDR, s.plan.gatewayMac);
    this.#send(this.#plan.linkLocal, 0, dst, 0, NDP_NEIGHBOR_SOLICITATION, 0, 0, 24, dstMac, 255);
  }

  close(): void {
    this.#stack.wheel.cancel(this.#raTimer);
  }
}
