/**
 * The IPv6 side of a tenant's stack (RFC 8200): a packet from the guest is parsed in place and handed to
 * the service for its upper layer — Neighbor Discovery and echo (ICMPv6), DNS at prefix::3, UDP NAT, TCP —
 * and every new IPv6 flow's destination passes {@linkcode Ipv6Input.egress}: translation and policy, the
 * IPv6 twin of what IPv4 flows pass.
 *
 * A packet the guest sent in fragments (a UDP datagram or an echo larger than the link's MTU: the guest is
 * their source and fragments them itself, RFC 8200 §4.5) is reassembled first; the whole packet then goes
 * where an unfragmented one would.
 *
 * @module
 */
import { ipv4ToString, u16, WireError } from "../wire/bytes.ts";
import { pseudoHeaderSumV6 } from "../wire/checksum.ts";
import {
  ICMPV6_ECHO_REQUEST,
  ICMPV6_UNREACH_ADDRESS,
  ICMPV6_UNREACH_ADMIN_PROHIBITED,
  ICMPV6_UNREACH_PORT,
  isNdpType,
} from "../wire/icmpv6.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "../wire/ipv4.ts";
import {
  IPPROTO_ICMPV6,
  ipv6Equal,
  type Ipv6Header,
  ipv6ToString,
  isMulticastV6,
  isUnspecifiedV6,
  newIpv6Header,
  parseIpv6,
} from "../wire/ipv6.ts";
import { newUdpHeader, parseUdp, UDP_HEADER_LEN, type UdpHeader } from "../wire/udp.ts";
import { DHCPV6_CLIENT_PORT, DHCPV6_SERVER_PORT } from "../wire/dhcpv6.ts";
import type { Egress6, StackContext } from "./context.ts";
import { type GuestPath, Ipv6Path } from "./guest_path.ts";
import type { Icmpv6Service } from "./icmpv6_service.ts";
import { mappedIpv4, nat64Ipv4 } from "./translation.ts";
import { Ipv6Reassembly } from "./ip_reassembly.ts";
import { TFTP_PORT } from "../wire/tftp.ts";

/** The services IPv6 packets go to. */
export interface Ipv6Services {
  readonly icmp6: Icmpv6Service;
  readonly dhcp6: { input(buf: Uint8Array, ip: Ipv6Header, udp: UdpHeader): void };
  readonly tcp: { input6(buf: Uint8Array, ip: Ipv6Header): void };
  readonly udp: { input6(buf: Uint8Array, ip: Ipv6Header, udp: UdpHeader): void };
  readonly dns: {
    input(buf: Uint8Array, guest: GuestPath, udp: UdpHeader): void;
    tcpUpstream(): { address: string; port: number } | null;
  };
  /** The gateway's TFTP server (prefix::2 port 69), or null. */
  readonly tftp: { input(buf: Uint8Array, guest: GuestPath, udp: UdpHeader): void } | null;
}

// parse scratch, shared by every stack in the process (input is processed synchronously)
const SHARED_IP6 = newIpv6Header();
const SHARED_UDP = newUdpHeader();

export class Ipv6Input {
  #stack: StackContext;
  #services: Ipv6Services;
  #reassembly: Ipv6Reassembly;

  constructor(stack: StackContext, services: Ipv6Services) {
    this.#stack = stack;
    this.#services = services;
    this.#reassembly = new Ipv6Reassembly(stack.wheel, (reason) => stack.counters.drop(reason), stack);
  }

  /** Packets in reassembly. */
  get fragmentsPending(): number {
    return this.#reassembly.pending;
  }

  /** An IPv6 packet from the guest at `buf[off, end)`, from Ethernet source `srcMac`. */
  input(buf: Uint8Array, off: number, end: number, srcMac: number): void {
    const s = this.#stack;
    const v6 = s.plan.v6;
    if (!v6) return s.drop("ipv6-disabled");
    const ip = parseIpv6(buf, off, end, SHARED_IP6);
    if (ip instanceof WireError) return s.drop("ipv6-malformed", ip);
    s.counters.ipv6PacketsIn++;
    // larger than the link's MTU (a guest whose NIC was set larger than the RA said): Packet Too Big. An
    // offloading NIC's large segments are the exception (their size is not the wire's)
    if (ip.payloadEnd - off > s.plan.mtu && !s.guestOffloads) {
      return this.#services.icmp6.packetTooBig(buf, ip, s.plan.mtu);
    }
    if (isMulticastV6(buf, ip.srcOffset)) return s.drop("ipv6-multicast-source");
    if (!ip.fragmented) return this.#deliver(buf, ip, srcMac);
    const whole = this.#reassembly.input(buf, off, ip);
    if (whole === null) return;
    const again = parseIpv6(whole, 0, whole.length, SHARED_IP6);
    if (again instanceof WireError) return s.drop("ipv6-malformed", again);
    if (again.fragmented) return s.drop("ipv6-fragment-in-fragment");
    // RFC 6980 §5: Neighbor Discovery in fragments is ignored (its checks assume one on-link packet)
    if (again.protocol === IPPROTO_ICMPV6 && isNdpType(whole[again.payloadOffset])) {
      return s.drop("ndp-fragmented");
    }
    this.#deliver(whole, again, srcMac);
  }

  /** A whole packet (parsed as `ip`, reassembled or not) to the service for its upper layer. */
  #deliver(buf: Uint8Array, ip: Ipv6Header, srcMac: number): void {
    const s = this.#stack;
    const v6 = s.plan.v6!;
    const { icmp6, dhcp6, tcp, udp: nat, dns, tftp } = this.#services;
    if (!isUnspecifiedV6(buf, ip.srcOffset)) icmp6.learn(buf, ip.srcOffset, srcMac);
    if (ip.hopLimit <= 1 && this.#hopEndsHere(buf, ip)) return icmp6.timeExceeded(buf, ip);
    if (ip.protocol === IPPROTO_ICMPV6) return icmp6.input(buf, ip, srcMac);
    if (ip.protocol === IPPROTO_UDP) {
      const len = ip.payloadEnd - ip.payloadOffset;
      // RFC 8200 §8.1: a zero UDP checksum is invalid over IPv6
      if (len >= UDP_HEADER_LEN && u16(buf, ip.payloadOffset + 6) === 0) return s.drop("udp6-zero-checksum");
      const pseudo = s.guestOffloads
        ? -1
        : pseudoHeaderSumV6(buf, ip.srcOffset, buf, ip.dstOffset, IPPROTO_UDP, len);
      const udp = parseUdp(buf, ip.payloadOffset, ip.payloadEnd, pseudo, SHARED_UDP);
      if (udp instanceof WireError) return s.drop("udp-malformed", udp);
      // DHCPv6 goes to All_DHCP_Relay_Agents_and_Servers (ff02::1:2) from a link-local address (RFC 8415 §7.1)
      if (udp.dstPort === DHCPV6_SERVER_PORT && udp.srcPort === DHCPV6_CLIENT_PORT) {
        return dhcp6.input(buf, ip, udp);
      }
      if (isMulticastV6(buf, ip.dstOffset)) return s.drop("ipv6-multicast-not-forwarded");
      if (isUnspecifiedV6(buf, ip.srcOffset)) return s.drop("ipv6-unspecified-source");
      if (udp.dstPort === 53 && ipv6Equal(buf, ip.dstOffset, v6.dns, 0)) {
        return dns.input(buf, new Ipv6Path(s, buf, ip.srcOffset, buf, ip.dstOffset), udp);
      }
      if (tftp && udp.dstPort === TFTP_PORT && ipv6Equal(buf, ip.dstOffset, v6.gateway, 0)) {
        return tftp.input(buf, new Ipv6Path(s, buf, ip.srcOffset, buf, ip.dstOffset), udp);
      }
      return nat.input6(buf, ip, udp);
    }
    // beyond Neighbor Discovery and DHCPv6 nothing multicast is served (mDNS, LLMNR stay on the guest's link)
    if (isMulticastV6(buf, ip.dstOffset)) return s.drop("ipv6-multicast-not-forwarded");
    if (isUnspecifiedV6(buf, ip.srcOffset)) return s.drop("ipv6-unspecified-source");
    if (ip.protocol === IPPROTO_TCP) return tcp.input6(buf, ip);
    icmp6.unreachable(buf, ip, ICMPV6_UNREACH_PORT, "ip-protocol-unsupported");
  }

  /**
   * RFC 8200 §3, RFC 4443 §3.3: the gateway is a router — a packet of hop limit 1 (or 0) for an address
   * beyond it is not forwarded, and its sender hears why (a traceroute's first hop). Not for our own
   * addresses or multicast, from the unspecified address, nor about an ICMPv6 error (RFC 4443 §2.4 (e)).
   */
  #hopEndsHere(buf: Uint8Array, ip: Ipv6Header): boolean {
    if (isMulticastV6(buf, ip.dstOffset) || isUnspecifiedV6(buf, ip.srcOffset)) return false;
    if (this.#services.icmp6.owns(buf, ip.dstOffset)) return false;
    if (ip.protocol !== IPPROTO_ICMPV6) return true;
    return ip.payloadEnd > ip.payloadOffset && buf[ip.payloadOffset] === ICMPV6_ECHO_REQUEST;
  }

  /**
   * Where a new IPv6 flow to the 16 bytes at `a[off]` goes on the host, or the ICMPv6 unreachable code that
   * refuses it. prefix::3 is the DNS forwarder (TCP port 53 goes to the upstream that answered last); the tenant's IPv6
   * policy decides for the rest; an IPv4-mapped destination is the IPv4 flow it names (IPv4 translation and
   * policy, dialled over IPv4); a NAT64 address must pass the IPv4 policy for the address it embeds too; the
   * relay's IPv6 guard has the last word (multi-tenant: the host's own addresses and the tenants' ports).
   */
  egress(a: Uint8Array, off: number, protocol: "tcp" | "udp", port: number): Egress6 {
    const s = this.#stack;
    if (ipv6Equal(a, off, s.plan.v6!.dns, 0)) {
      const u = protocol === "tcp" && port === 53 ? this.#services.dns.tcpUpstream() : null;
      return u ?? ICMPV6_UNREACH_PORT;
    }
    const mapped = mappedIpv4(a, off);
    if (mapped >= 0) {
      const real = s.translation.toReal(mapped);
      if (real < 0) return ICMPV6_UNREACH_ADDRESS;
      if (!s.allowEgress(protocol, real, port)) return ICMPV6_UNREACH_ADMIN_PROHIBITED;
      return { address: ipv4ToString(real), port };
    }
    const real = s.translation.toReal6(a, off);
    if (real === null) return ICMPV6_UNREACH_ADDRESS;
    if (!s.allowEgress6(protocol, real, 0, port)) return ICMPV6_UNREACH_ADMIN_PROHIBITED;
    const embedded = nat64Ipv4(real, 0);
    if (embedded >= 0 && !s.policy.check(protocol, embedded, port)) return ICMPV6_UNREACH_ADMIN_PROHIBITED;
    return { address: ipv6ToString(real, 0), port };
  }
}
