/**
 * UDP NAT: one host UDP socket per guest source (address, port), as libslirp does, so that the guest
 * sees endpoint-independent mapping (what STUN and games expect). Each datagram's destination is
 * translated (10.0.2.2 → 127.0.0.1 and config entries) and checked against the egress policy before it
 * leaves; replies from any source come back with that source as the sender, loopback sources shown as
 * the translated address they were reached by.
 *
 * Flows expire after `udpIdleSec` without traffic either way, checked by one wheel timer per flow that
 * re-arms lazily (no timer work per packet). The table is bounded by `maxUdpFlows`: a new flow in a full
 * table takes the place of the least recently active one if that one has been quiet for a second, else the
 * guest gets ICMP port unreachable for it.
 *
 * @module
 */
import { ipv4ToString, parseIpv4Address } from "../wire/bytes.ts";
import type { UdpHeader } from "../wire/udp.ts";
import type { Ipv4Header } from "../wire/ipv4.ts";
import { ipv6Equal, type Ipv6Header, parseIpv6Address } from "../wire/ipv6.ts";
import {
  ICMPV6_UNREACH_ADDRESS,
  ICMPV6_UNREACH_ADMIN_PROHIBITED,
  ICMPV6_UNREACH_NO_ROUTE,
  ICMPV6_UNREACH_PORT,
} from "../wire/icmpv6.ts";
import {
  ICMP_UNREACH_ADMIN_PROHIBITED,
  ICMP_UNREACH_HOST,
  ICMP_UNREACH_NET,
  ICMP_UNREACH_PORT,
} from "../wire/icmpv4.ts";
import type { HostIcmpError, HostUdpSocket } from "../host/host.ts";
import { Timer } from "./timer_wheel.ts";
import type { StackContext } from "./context.ts";

/** One guest source's mapping. */
export interface UdpFlow {
  /** IPv4 guest address; 0 for an IPv6 flow. */
  guestIp: number;
  /** IPv6 guest address (16 bytes); null for an IPv4 flow. */
  guest6: Uint8Array | null;
  guestPort: number;
  socket: HostUdpSocket;
  lastActive: number;
  timer: Timer;
  /** Last destination sent to, virtual and real, cached with its string form for the socket API. */
  lastVirtual: number;
  lastReal: number;
  lastRealText: string;
  lastPort: number;
  /** IPv6 flows: the last destination (virtual), and the host's text for the address replies come from. */
  lastVirtual6: Uint8Array | null;
  lastReplyText: string;
  /** The TTL / hop limit the host socket sends with now (-1: the system's default). */
  hops: number;
}

/** A host client of a `udp:` port forward, seen by the guest as gateway:clientPort. */
interface ForwardPeer {
  socket: HostUdpSocket;
  address: string;
  port: number;
  guestIp: number;
  /** An IPv6 guest's address (the forward then speaks IPv6 from prefix::2), else null. */
  guest6: Uint8Array | null;
  guestPort: number;
  localPort: number;
  lastActive: number;
  timer: Timer;
}

/** Forward peers per tenant. */
const MAX_FORWARD_PEERS = 256;
/** How long the least recently active flow must have been quiet to give way to a new one in a full table. */
const RECLAIM_IDLE_MS = 1000;

export class UdpNat {
  #stack: StackContext;
  /** (guestPort << 16 | localPort) → forward peer. */
  #peers = new Map<number, ForwardPeer>();
  /** guestPort → flows (usually one: one guest address per tenant). */
  #flows = new Map<number, UdpFlow[]>();
  #count = 0;
  /** Until then no flow can have been quiet for RECLAIM_IDLE_MS: the last scan's idlest was newer. */
  #noReclaimBefore = 0;

  constructor(stack: StackContext) {
    this.#stack = stack;
  }

  /** Open flows. */
  get size(): number {
    return this.#count;
  }

  #find(guestIp: number, guestPort: number): UdpFlow | undefined {
    const list = this.#flows.get(guestPort);
    if (!list) return undefined;
    for (const f of list) if (f.guest6 === null && f.guestIp === guestIp) return f;
    return undefined;
  }

  #find6(buf: Uint8Array, guestOff: number, guestPort: number): UdpFlow | undefined {
    const list = this.#flows.get(guestPort);
    if (!list) return undefined;
    for (const f of list) if (f.guest6 !== null && ipv6Equal(f.guest6, 0, buf, guestOff)) return f;
    return undefined;
  }

  /**
   * A datagram from the guest over IPv6: the same endpoint-independent mapping as IPv4, on an IPv6 host
   * socket, after the tenant's IPv6 translation and policy ({@linkcode StackContext.egress6}).
   */
  input6(buf: Uint8Array, ip: Ipv6Header, udp: UdpHeader): void {
    const s = this.#stack;
    if (this.#peers.size > 0 && ipv6Equal(buf, ip.dstOffset, s.plan.v6!.gateway, 0)) {
      // a reply to a port-forward client leaves through the forward's own socket
      const peer = this.#peers.get(((udp.srcPort << 16) | udp.dstPort) >>> 0);
      if (peer?.guest6 && ipv6Equal(peer.guest6, 0, buf, ip.srcOffset)) {
        peer.lastActive = s.wheel.now;
        peer.socket.sendTo(buf.subarray(udp.payloadOffset, udp.payloadEnd), peer.address, peer.port);
        return;
      }
    }
    const dest = s.egress6(buf, ip.dstOffset, "udp", udp.dstPort);
    if (typeof dest === "number") return s.icmp6.unreachable(buf, ip, dest, "udp6-no-route");
    if (udp.dstPort === 0) return s.icmp6.unreachable(buf, ip, ICMPV6_UNREACH_PORT, "udp-port-zero");
    let f = this.#find6(buf, ip.srcOffset, udp.srcPort);
    if (!f) {
      if (this.#count >= s.config.maxUdpFlows && !this.#reclaimIdlest()) {
        return s.icmp6.unreachable(buf, ip, ICMPV6_UNREACH_PORT, "udp-flow-limit");
      }
      if (!s.admitFlow()) return s.drop("udp-flow-rate-limit");
      if (!s.flowLimit.tryOpen()) {
        return s.icmp6.unreachable(buf, ip, ICMPV6_UNREACH_PORT, "relay-flow-limit");
      }
      f = this.#open(0, udp.srcPort, buf.slice(ip.srcOffset, ip.srcOffset + 16));
    }
    f.lastActive = s.wheel.now;
    if (f.lastVirtual6 === null || !ipv6Equal(f.lastVirtual6, 0, buf, ip.dstOffset)) {
      f.lastVirtual6 = buf.slice(ip.dstOffset, ip.dstOffset + 16);
      f.lastRealText = dest.address;
      // the host names a reply's source as it names ours: "::1", or "::ffff:a.b.c.d" for an IPv4 peer
      f.lastReplyText = dest.address.includes(":") ? dest.address : `::ffff:${dest.address}`;
    }
    f.lastPort = udp.dstPort;
    if (ip.hopLimit - 1 !== f.hops) this.#setHops(f, ip.hopLimit - 1);
    f.socket.sendTo(buf.subarray(udp.payloadOffset, udp.payloadEnd), f.lastRealText, dest.port);
  }

  input(buf: Uint8Array, ip: Ipv4Header, udp: UdpHeader): void {
    const s = this.#stack;
    if (ip.dst === s.plan.gateway && this.#peers.size > 0) {
      // a reply to a port-forward client leaves through the forward's own socket
      const peer = this.#peers.get(((udp.srcPort << 16) | udp.dstPort) >>> 0);
      if (peer && !peer.guest6 && peer.guestIp === ip.src) {
        peer.lastActive = s.wheel.now;
        peer.socket.sendTo(buf.subarray(udp.payloadOffset, udp.payloadEnd), peer.address, peer.port);
        return;
      }
    }
    const real = s.translation.toReal(ip.dst);
    if (real < 0) return s.icmp.unreachable(buf, ip, ICMP_UNREACH_HOST, "udp-no-host");
    if (!s.allowEgress("udp", real, udp.dstPort)) {
      return s.icmp.unreachable(buf, ip, ICMP_UNREACH_ADMIN_PROHIBITED, "policy-denied-udp");
    }
    if (udp.dstPort === 0) return s.icmp.unreachable(buf, ip, ICMP_UNREACH_PORT, "udp-port-zero");
    let f = this.#find(ip.src, udp.srcPort);
    if (!f) {
      if (this.#count >= s.config.maxUdpFlows && !this.#reclaimIdlest()) {
        return s.icmp.unreachable(buf, ip, ICMP_UNREACH_PORT, "udp-flow-limit");
      }
      // a new flow is a new host socket: it counts against the tenant's new-flow rate, as TCP does
      if (!s.admitFlow()) return s.drop("udp-flow-rate-limit");
      if (!s.flowLimit.tryOpen()) return s.icmp.unreachable(buf, ip, ICMP_UNREACH_PORT, "relay-flow-limit");
      f = this.#open(ip.src, udp.srcPort, null);
    }
    f.lastActive = s.wheel.now;
    if (f.lastVirtual !== ip.dst || f.lastReal !== real) {
      f.lastVirtual = ip.dst;
      f.lastReal = real;
      f.lastRealText = ipv4ToString(real);
    }
    f.lastPort = udp.dstPort;
    if (ip.ttl - 1 !== f.hops) this.#setHops(f, ip.ttl - 1);
    f.socket.sendTo(buf.subarray(udp.payloadOffset, udp.payloadEnd), f.lastRealText, udp.dstPort);
  }

  /**
   * The guest's TTL / hop limit, less the gateway's hop (RFC 1812 §5.3.1), goes on with its datagrams: a
   * traceroute's probes reach the routers they are meant for. A system call only when it changes.
   */
  #setHops(f: UdpFlow, hops: number): void {
    f.hops = hops;
    f.socket.setHopLimit?.(hops);
  }

  #open(guestIp: number, guestPort: number, guest6: Uint8Array | null): UdpFlow {
    const s = this.#stack;
    const flow: UdpFlow = {
      guestIp,
      guest6,
      guestPort,
      socket: null as unknown as HostUdpSocket,
      lastActive: s.wheel.now,
      timer: new Timer((now) => this.#expire(flow, now), s),
      lastVirtual: -1,
      lastReal: -1,
      lastRealText: "",
      lastPort: 0,
      lastVirtual6: null,
      lastReplyText: "",
      hops: -1,
    };
    flow.socket = s.host.openUdp({
      onMessage: (data, address, port) =>
        guest6 ? this.#fromHost6(flow, data, address, port) : this.#fromHost(flow, data, address, port),
      onError: (code, address, port, icmp) => this.#hostError(flow, code, address, port, icmp),
    }, guest6 ? 6 : 4);
    const list = this.#flows.get(guestPort);
    if (list) list.push(flow);
    else this.#flows.set(guestPort, [flow]);
    this.#count++;
    s.counters.udpFlowsOpened++;
    if (guest6) s.counters.udpFlowsOpened6++;
    s.wheel.arm(flow.timer, flow.lastActive + s.config.udpIdleSec * 1000);
    return flow;
  }

  /**
   * A full table gives up its least recently active flow when that one has been quiet for
   * {@linkcode RECLAIM_IDLE_MS}, as a NAT evicts its oldest mappings (RFC 4787 §4.3 asks only that a
   * mapping live 2 minutes *while used*): a guest that sends each query from a new port (its own resolver,
   * QUIC, NTP) would otherwise be refused for the rest of `udpIdleSec`. True when a flow was removed.
   */
  #reclaimIdlest(): boolean {
    const s = this.#stack;
    // a hostile guest's flood of new ports must not buy a scan of the table per datagram
    if (s.wheel.now < this.#noReclaimBefore) return false;
    let idlest: UdpFlow | null = null;
    for (const list of this.#flows.values()) {
      for (const f of list) if (!idlest || f.lastActive < idlest.lastActive) idlest = f;
    }
    if (!idlest) return false;
    if (s.wheel.now - idlest.lastActive < RECLAIM_IDLE_MS) {
      // activity only moves lastActive later, and new flows start now: none can qualify before this
      this.#noReclaimBefore = idlest.lastActive + RECLAIM_IDLE_MS;
      return false;
    }
    this.#remove(idlest);
    s.counters.udpFlowsReclaimed++;
    return true;
  }

  #expire(f: UdpFlow, now: number): void {
    const idleMs = this.#stack.config.udpIdleSec * 1000;
    if (now - f.lastActive < idleMs) this.#stack.wheel.arm(f.timer, f.lastActive + idleMs);
    else this.#remove(f);
  }

  #remove(f: UdpFlow): void {
    this.#stack.wheel.cancel(f.timer);
    f.socket.close();
    const list = this.#flows.get(f.guestPort);
    if (!list) return;
    const i = list.indexOf(f);
    if (i < 0) return;
    list.splice(i, 1);
    if (list.length === 0) this.#flows.delete(f.guestPort);
    this.#count--;
    this.#stack.flowLimit.release();
  }

  /** The virtual source a reply from `address` is shown with. */
  #virtualSource(f: UdpFlow, real: number): number {
    return real === f.lastReal ? f.lastVirtual : this.#stack.translation.toVirtual(real);
  }

  /** The IPv6 address the guest sees for the host's `address` (prefix::2 for its ::1), or null. */
  #virtualSource6(address: string): Uint8Array | null {
    const a = parseIpv6Address(address);
    return a && this.#stack.translation.toVirtual6(a, 0);
  }

  #fromHost(f: UdpFlow, data: Uint8Array, address: string, port: number): void {
    const s = this.#stack;
    if (s.closed) return;
    // a reply from where the flow last sent (the usual case) needs no parse of its text: a regexp and its
    // substrings per datagram were ~1 % of a worker's time in a UDP request/response
    const real = address === f.lastRealText ? f.lastReal : parseIpv4Address(address);
    if (real === null) return s.drop("udp-reply-not-ipv4");
    const src = this.#virtualSource(f, real);
    if (src < 0) return s.drop("udp-reply-unmappable-source");
    f.lastActive = s.wheel.now;
    s.datagrams.sendUdp(src, f.guestIp, port, f.guestPort, data);
  }

  /**
   * A reply to an IPv6 flow: shown as coming from the address the guest sent to when it comes from there,
   * from prefix::2 when from the host's ::1, else from its own address.
   */
  #fromHost6(f: UdpFlow, data: Uint8Array, address: string, port: number): void {
    const s = this.#stack;
    if (s.closed) return;
    const src = address === f.lastReplyText && f.lastVirtual6
      ? f.lastVirtual6
      : this.#virtualSource6(address);
    if (src === null) return s.drop("udp-reply-unmappable-source");
    f.lastActive = s.wheel.now;
    s.datagrams.sendUdp6(src, f.guest6!, port, f.guestPort, data);
  }

  /**
   * An error on the flow's host socket: ICMP destination unreachable (RFC 792) about the datagram it names
   * (`address`, `port`; else the flow's last), or a router's time exceeded passed on from that router.
   */
  #hostError(f: UdpFlow, code: string, address?: string, port?: number, icmp?: HostIcmpError): void {
    const s = this.#stack;
    if (f.guest6) return this.#hostError6(f, f.guest6, code, address, port, icmp);
    if (s.closed) return;
    let dst = f.lastVirtual, dstPort = f.lastPort;
    if (address !== undefined && address !== f.lastRealText) {
      const real = parseIpv4Address(address);
      dst = real === null ? -1 : this.#virtualSource(f, real);
    }
    if (port !== undefined) dstPort = port;
    if (dst < 0) return s.drop("udp-host-error-unknown-destination");
    // a router's error (not the destination's own) comes from that router
    if (
      icmp && icmp.offender !== (address ?? f.lastRealText) &&
      s.icmp.routerErrorForUdp(icmp, f.guestIp, f.guestPort, dst, dstPort)
    ) {
      return s.counters.drop(`udp-host-error-router-icmp-${icmp.type}`);
    }
    const icmpCode = code === "ECONNREFUSED"
      ? ICMP_UNREACH_PORT
      : code === "ENETUNREACH"
      ? ICMP_UNREACH_NET
      : code === "EHOSTUNREACH" || code === "EACCES" || code === "EPERM"
      ? ICMP_UNREACH_HOST
      : -1;
    s.counters.drop(`udp-host-error-${code}`);
    if (icmpCode >= 0) s.icmp.unreachableForUdp(f.guestIp, f.guestPort, dst, dstPort, icmpCode);
  }

  /** The same for an IPv6 flow: ICMPv6 destination unreachable (RFC 4443 §3.1) or a router's time exceeded. */
  #hostError6(
    f: UdpFlow,
    guest6: Uint8Array,
    code: string,
    address?: string,
    port?: number,
    icmp?: HostIcmpError,
  ): void {
    const s = this.#stack;
    if (s.closed) return;
    const dst = address === undefined || address === f.lastReplyText
      ? f.lastVirtual6
      : this.#virtualSource6(address);
    const dstPort = port ?? f.lastPort;
    if (!dst) return s.drop("udp-host-error-unknown-destination");
    // a router's error (not the destination's own) comes from that router
    if (
      icmp && icmp.offender !== (address ?? f.lastReplyText) &&
      s.icmp6.routerErrorForUdp(icmp, guest6, f.guestPort, dst, dstPort)
    ) {
      return s.counters.drop(`udp-host-error-router-icmp6-${icmp.type}`);
    }
    s.counters.drop(`udp-host-error-${code}`);
    const icmpCode = code === "ECONNREFUSED"
      ? ICMPV6_UNREACH_PORT
      : code === "ENETUNREACH"
      ? ICMPV6_UNREACH_NO_ROUTE
      : code === "EHOSTUNREACH"
      ? ICMPV6_UNREACH_ADDRESS
      : code === "EACCES" || code === "EPERM"
      ? ICMPV6_UNREACH_ADMIN_PROHIBITED
      : -1;
    if (icmpCode >= 0) s.icmp6.unreachableForUdp(guest6, f.guestPort, dst, dstPort, icmpCode);
  }

  /**
   * A datagram from a host client of a `udp:` forward bound on `socket`: deliver it to the guest as
   * coming from gateway:clientPort, and remember the client for the guest's replies.
   */
  forwardInput(
    socket: HostUdpSocket,
    guestIp: number,
    guest6: Uint8Array | null,
    guestPort: number,
    data: Uint8Array,
    address: string,
    port: number,
  ): void {
    const s = this.#stack;
    if (s.closed) return;
    const key = ((guestPort << 16) | port) >>> 0;
    let peer = this.#peers.get(key);
    if (!peer || peer.address !== address) {
      if (peer) this.#removePeer(peer);
      if (this.#peers.size >= MAX_FORWARD_PEERS) return s.drop("udp-forward-peer-limit");
      const p: ForwardPeer = {
        socket,
        address,
        port,
        guestIp,
        guest6,
        guestPort,
        localPort: port,
        lastActive: s.wheel.now,
        timer: new Timer((now) => {
          const idle = s.config.udpIdleSec * 1000;
          if (now - p.lastActive < idle) s.wheel.arm(p.timer, p.lastActive + idle);
          else this.#removePeer(p);
        }, s),
      };
      this.#peers.set(key, p);
      s.wheel.arm(p.timer, p.lastActive + s.config.udpIdleSec * 1000);
      peer = p;
    }
    peer.lastActive = s.wheel.now;
    if (guest6) s.datagrams.sendUdp6(s.plan.v6!.gateway, guest6, port, guestPort, data);
    else s.datagrams.sendUdp(s.plan.gateway, guestIp, port, guestPort, data);
  }

  #removePeer(p: ForwardPeer): void {
    this.#stack.wheel.cancel(p.timer);
    const key = ((p.guestPort << 16) | p.localPort) >>> 0;
    if (this.#peers.get(key) === p) this.#peers.delete(key);
  }

  close(): void {
    this.closeSome(Infinity);
  }

  /** Closes at most `n` flows (forward peers first); true while some remain. */
  closeSome(n: number): boolean {
    for (const p of [...this.#peers.values()]) {
      if (n-- <= 0) return true;
      this.#removePeer(p);
    }
    for (const list of [...this.#flows.values()]) {
      for (const f of [...list]) {
        if (n-- <= 0) return true;
        this.#remove(f);
      }
    }
    return this.#peers.size > 0 || this.#flows.size > 0;
  }
}
