/**
 * One tenant's engine: takes Ethernet frames from the guest, answers as the virtual gateway, and
 * turns guest flows into host sockets through the {@linkcode HostNet} interface.
 *
 * Theory of operation
 * - `input()` parses a frame in place (no copy) and hands each layer to its service: ARP, DHCP, DNS,
 *   ICMP, UDP NAT, TCP. Every refused frame increments a drop counter named by its reason.
 * - Frames toward the guest are built in one scratch buffer (`tx`), headers written around the payload,
 *   and passed to `output`, which must copy what it keeps before returning (the transport's coalescing
 *   write buffer does). Nothing is allocated per forwarded packet on this path.
 * - Time comes from the shared {@linkcode TimerWheel}; services embed their timers.
 *
 * @module
 */
import { nextTurn } from "../common/timers.ts";
import { isMulticastMac, MAC_BROADCAST, ViewCache } from "../wire/bytes.ts";
import {
  emitEthernet,
  ETH_HEADER_LEN,
  ETH_MIN_FRAME,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  newEthernetHeader,
  parseEthernet,
} from "../wire/ethernet.ts";
import {
  emitIpv4,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  type Ipv4Emit,
  type Ipv4Header,
  isMulticastV4,
  newIpv4Header,
  parseIpv4,
} from "../wire/ipv4.ts";
import { newUdpHeader, parseUdp } from "../wire/udp.ts";
import { emitIpv6, IPV6_HEADER_LEN } from "../wire/ipv6.ts";
import { frameScratch, pseudoHeaderSumV4 } from "../wire/checksum.ts";
import { WireError } from "../wire/bytes.ts";
import { ICMP_ECHO_REQUEST } from "../wire/icmpv4.ts";
import type { HostFiles, HostNet, HostTcpSocket, HostUdpSocket, TcpHandlers } from "../host/host.ts";
import { TftpService } from "./tftp_service.ts";
import { TFTP_PORT } from "../wire/tftp.ts";
import type { Logger } from "../common/logger.ts";
import type { Egress6, StackContext } from "./context.ts";
import {
  type AddressPlan,
  type HostForwardConfig,
  resolvePlan,
  resolvePlan6,
  type StackConfig,
} from "./config.ts";
import { Icmpv6Service } from "./icmpv6_service.ts";
import { Dhcpv6Server } from "./dhcpv6_server.ts";
import { Ipv6Input } from "./ipv6_input.ts";
import { Ipv4Path } from "./guest_path.ts";
import { TranslationTable } from "./translation.ts";
import { EgressPolicy } from "./policy.ts";
import type { TimerWheel } from "./timer_wheel.ts";
import { ArpService } from "./arp_service.ts";
import { DhcpServer } from "./dhcp_server.ts";
import { DnsService } from "./dns_service.ts";
import { IcmpService } from "./icmp_service.ts";
import { UdpNat } from "./udp_nat.ts";
import { DHCP_CLIENT_PORT, DHCP_SERVER_PORT } from "../wire/dhcp.ts";
import { Counters } from "./counters.ts";
import { TcpService } from "./tcp/tcp_service.ts";
import { TokenBucket } from "../common/token_bucket.ts";
import { Ipv4Reassembly } from "./ip_reassembly.ts";
import { DatagramSender } from "./datagram_sender.ts";
import { contained, ContainedHost } from "./containment.ts";
import { MemoryBudget } from "./memory_budget.ts";
import { type FlowLimit, UNLIMITED_FLOWS } from "./flow_limit.ts";

/** Receives a frame for the guest. The bytes are valid only during the call. */
export type FrameSink = (frame: Uint8Array) => void;

/** What a stack is built from besides its config. */
export interface StackDeps {
  host: HostNet;
  wheel: TimerWheel;
  output: FrameSink;
  log?: Logger;
  /** Tenant name for logs. */
  tenant?: string;
  /** Counters to use (a tenant keeps one set across guest reconnects). */
  counters?: Counters;
  /**
   * A relay-wide egress check run besides the tenant's policy (multi-tenant mode: no tenant may dial
   * another tenant's port forwards on the relay host). Returns false to deny.
   */
  egressGuard?: (protocol: "tcp" | "udp", real: number, port: number) => boolean;
  /**
   * The same for IPv6 destinations (16 bytes), told whether a rule of the tenant's policy allowed it by name
   * (multi-tenant mode: the relay host's own addresses only so, and never its or other tenants' ports).
   */
  egressGuard6?: (protocol: "tcp" | "udp", real: Uint8Array, port: number, allowedByRule: boolean) => boolean;
  /**
   * Called after a throw that no flow could absorb faulted this stack (it has already closed itself): the
   * tenant closes its guest link, and its next guest gets a fresh stack.
   */
  onFault?: (err: unknown, where: string) => void;
  /** The relay-wide bound on open flows, shared by every tenant (default: none). */
  flowLimit?: FlowLimit;
  /** Bytes waiting in the transport toward the guest (TCP paces itself on it; default: none). */
  guestBacklog?: () => number;
  /** The directory the gateway's TFTP server reads (config `tftp`); without it there is no TFTP server. */
  tftpFiles?: HostFiles;
}

/** Room for the largest frame plus slack for an ICMP error around a quoted datagram. */
const TX_SLACK = 128;
/** Where frames are built: inside the checksum module's memory, so that their sums need no copy. */
let sharedTx: Uint8Array = new Uint8Array(0);
let sharedTxSize = 0;
/** The frame handed to `output`: one view for a run of equal-size frames (output copies it). */
const outputView = new ViewCache();
/** The IPv4 header of every frame sendIpv4 builds (no object per frame). */
const SHARED_IP_OUT: Ipv4Emit = { id: 0, ttl: 64, protocol: 0, src: 0, dst: 0, dontFragment: true };
const SHARED_ETH = newEthernetHeader();
const SHARED_IP = newIpv4Header();
const SHARED_UDP = newUdpHeader();
/** Lines of one log message a stack writes per window (see Stack.#logLimited). */
const LOG_BURST = 5;
const LOG_WINDOW_MS = 10_000;
/** Error replies (ICMP unreachable, refusing RSTs) a stack sends per second, and in a burst. */
export const ERROR_REPLIES_PER_SECOND = 1000;
/** Flows released per event-loop turn when a stack closes in slices. */
const CLOSE_SLICE = 32;
/** Bound on the IP→MAC table: a guest LAN has few hosts. */
const MAX_NEIGHBOURS = 64;

export class Stack implements StackContext {
  readonly config: StackConfig;
  readonly plan: AddressPlan;
  /** The host's sockets, with every callback inside this stack's fault boundary. */
  readonly host: ContainedHost;
  readonly wheel: TimerWheel;
  readonly policy: EgressPolicy;
  readonly translation: TranslationTable;
  readonly counters: Counters;
  readonly log: Logger;
  readonly tenant: string;
  /**
   * Scratch buffer for frames toward the guest, one for every stack in the process: a frame is built
   * and handed to `output` (which copies it) before any other stack runs, and a thousand idle tenants
   * need not hold a thousand of them.
   */
  get tx(): Uint8Array {
    return sharedTx;
  }
  output: FrameSink;
  /**
   * The guest's NIC offloads checksums (libkrun): TCP/UDP checksums from it are unfinished, so they are
   * not verified (the host kernel makes its own for what leaves).
   */
  guestOffloads = false;
  /** Guest IPv4 → MAC, learned from ARP, DHCP and IP source addresses. */
  readonly neighbours: Map<number, number> = new Map();
  /** New-flow admission (quota newFlowsPerSecond). */
  readonly flowRate: TokenBucket;
  #errorReplies: TokenBucket;
  /** Bytes the tenant's flows hold (quota bufferedBytes). */
  readonly memory: MemoryBudget;
  /** Open flows across the relay (each a host socket). */
  readonly flowLimit: FlowLimit;

  /** Bytes waiting in the transport toward the guest. */
  readonly guestBacklog: () => number;

  readonly arp: ArpService;
  readonly dhcp: DhcpServer;
  readonly dns: DnsService;
  readonly icmp: IcmpService;
  /** Neighbor Discovery, router advertisements, ICMPv6 echo and errors (idle when IPv6 is off). */
  readonly icmp6: Icmpv6Service;
  /** DHCPv6: DNS for stateless clients, an address for stateful ones (idle when IPv6 is off). */
  readonly dhcp6: Dhcpv6Server;
  readonly udp: UdpNat;
  readonly tcp: TcpService;
  /** The gateway's TFTP server, or null without a TFTP directory. */
  readonly tftp: TftpService | null;
  /** UDP and ICMP datagrams toward the guest, fragmented when they do not fit its MTU. */
  readonly datagrams: DatagramSender;

  // parse scratch, shared by every stack in the process (input is processed synchronously, one frame at
  // a time)
  #eth = SHARED_ETH;
  #ip = SHARED_IP;
  #udp = SHARED_UDP;
  #ipId = 1;
  #closed = false;
  #guard: StackDeps["egressGuard"];
  #guard6: StackDeps["egressGuard6"];
  #rawLog: Logger;
  /** Per message: when its window began, lines logged in it, lines held back. */
  #logWindows = new Map<string, { start: number; n: number; suppressed: number }>();
  #onFault: StackDeps["onFault"];
  #ipv6: Ipv6Input;

  /** @throws Error when the config's address plan or policy is invalid */
  constructor(config: StackConfig, deps: StackDeps) {
    this.config = config;
    this.plan = resolvePlan(config);
    this.policy = new EgressPolicy(config.policy, config.restrict === true);
    this.translation = new TranslationTable(config, this.plan);
    this.host = new ContainedHost(deps.host, this);
    this.wheel = deps.wheel;
    this.output = deps.output;
    this.#rawLog = deps.log ?? (() => {});
    this.log = this.#logLimited.bind(this);
    this.tenant = deps.tenant ?? "default";
    this.counters = deps.counters ?? new Counters();
    this.#guard = deps.egressGuard;
    this.#guard6 = deps.egressGuard6;
    this.#onFault = deps.onFault;
    this.guestBacklog = deps.guestBacklog ?? (() => 0);
    if (sharedTxSize < ETH_HEADER_LEN + this.plan.mtu + TX_SLACK) {
      sharedTxSize = ETH_HEADER_LEN + this.plan.mtu + TX_SLACK;
      sharedTx = frameScratch(sharedTxSize);
    }
    this.#reassembly = new Ipv4Reassembly(deps.wheel, (reason) => this.counters.drop(reason), this);
    this.flowLimit = deps.flowLimit ?? UNLIMITED_FLOWS;
    this.memory = new MemoryBudget(config.bufferedBytes, () => this.tcp.budgetFreed());
    this.flowRate = new TokenBucket(config.newFlowsPerSecond, config.newFlowsPerSecond, deps.host.now());
    this.#errorReplies = new TokenBucket(ERROR_REPLIES_PER_SECOND, ERROR_REPLIES_PER_SECOND, deps.host.now());
    this.datagrams = new DatagramSender(this);
    this.arp = new ArpService(this);
    this.dhcp = new DhcpServer(this);
    this.dns = new DnsService(this);
    this.icmp = new IcmpService(this);
    // with IPv6 off nothing reaches it; it is built on the default prefix so that it is never null
    const plan6 = this.plan.v6 ?? resolvePlan6("fd00::/64");
    this.icmp6 = new Icmpv6Service(this, plan6);
    this.dhcp6 = new Dhcpv6Server(this, plan6);
    this.udp = new UdpNat(this);
    this.tcp = new TcpService(this);
    this.tftp = deps.tftpFiles ? new TftpService(this, deps.tftpFiles) : null;
    this.#ipv6 = new Ipv6Input(this, this);
  }

  /**
   * Processes one Ethernet frame from the guest, `buf[off, off+len)`. Never throws: a frame that cannot be
   * understood is counted under `drops` with its reason, and a throw from the code it reaches faults this
   * stack (see {@linkcode onFault}) instead of leaving the tenant.
   */
  input(buf: Uint8Array, off = 0, len = buf.length - off): void {
    if (this.#closed) return;
    try {
      this.#input(buf, off, len);
    } catch (e) {
      this.onFault(e, "frame");
    }
  }

  /**
   * A throw that reached the stack's boundary (a frame, a host callback, a timer) and that no flow
   * absorbed: the stack's state can no longer be trusted, so it closes (every flow reset, every host
   * socket released) and the tenant is told. Logged at the first fault and at every power of ten after.
   */
  onFault(err: unknown, where: string): void {
    this.#countFault(err, where, "tenant");
    if (this.#closed) return;
    try {
      this.close();
    } catch (e) {
      this.#countFault(e, `${where}/close`, "tenant");
    }
    try {
      this.#onFault?.(err, where);
    } catch (e) {
      this.#countFault(e, `${where}/tenant`, "tenant");
    }
  }

  /**
   * A throw inside one flow's code: that flow alone is reset; if resetting it throws too, the stack faults.
   */
  flowFault(flow: { abort(): void }, err: unknown, where: string): void {
    this.#countFault(err, where, "flow");
    try {
      flow.abort();
    } catch (e) {
      this.onFault(e, `${where}/reset`);
    }
  }

  /**
   * Logs at most {@linkcode LOG_BURST} lines of one message per {@linkcode LOG_WINDOW_MS}; the next line
   * after a quiet spell says how many were held back. Much of what a stack logs a guest can trigger (a
   * DHCP DISCOVER per frame exhausts the pool), and a log line costs far more than the frame.
   */
  #logLimited(level: Parameters<Logger>[0], msg: string, fields?: Record<string, unknown>): void {
    const now = performance.now();
    let w = this.#logWindows.get(msg);
    if (!w) this.#logWindows.set(msg, w = { start: now, n: 0, suppressed: 0 });
    if (now - w.start >= LOG_WINDOW_MS) {
      w.start = now;
      w.n = 0;
    }
    if (w.n >= LOG_BURST) {
      w.suppressed++;
      return;
    }
    w.n++;
    if (w.suppressed > 0) {
      fields = { ...fields, suppressed: w.suppressed };
      w.suppressed = 0;
    }
    this.#rawLog(level, msg, fields);
  }

  #countFault(err: unknown, where: string, scope: "flow" | "tenant"): void {
    const n = ++this.counters.faults;
    this.counters.drop(scope === "flow" ? "fault-flow-reset" : "fault-tenant-reset");
    // once, then at every power of ten: a guest that can trigger a bug must not flood the log
    if (n === 1 || Number.isInteger(Math.log10(n))) {
      this.#rawLog("error", "internal error contained", {
        tenant: this.tenant,
        where,
        scope,
        faults: n,
        error: n === 1 ? ((err as Error)?.stack ?? String(err)) : String(err),
      });
    }
  }

  #input(buf: Uint8Array, off: number, len: number): void {
    const c = this.counters;
    c.framesIn++;
    c.bytesIn += len;
    const end = off + len;
    if (this.tcp.inputPredicted(buf, off, end)) return; // an upload's next segment: no Ethernet/IPv4 parse
    const eth = parseEthernet(buf, off, end, this.#eth);
    if (eth instanceof WireError) return this.drop("ethernet-malformed", eth);
    if (eth.vlanTags > 0) return this.drop("vlan-tagged");
    // frames not for us or broadcast: a guest LAN has only the gateway on our side
    if (eth.dst !== this.plan.gatewayMac && eth.dst !== MAC_BROADCAST && !isMulticastMac(eth.dst)) {
      return this.drop("not-for-gateway-mac");
    }
    if (isMulticastMac(eth.src)) return this.drop("multicast-source-mac");
    switch (eth.etherType) {
      case ETHERTYPE_ARP:
        return this.arp.input(buf, eth.payloadOffset, end, eth.src);
      case ETHERTYPE_IPV4:
        return this.#ipv4Input(buf, eth.payloadOffset, end, eth.src, eth.dst);
      case ETHERTYPE_IPV6:
        return this.#ipv6.input(buf, eth.payloadOffset, end, eth.src);
      default:
        return this.drop("unknown-ethertype");
    }
  }

  #ipv4Input(buf: Uint8Array, off: number, end: number, srcMac: number, dstMac: number): void {
    const ip = parseIpv4(buf, off, end, this.#ip);
    if (ip instanceof WireError) return this.drop("ipv4-malformed", ip);
    if (ip.moreFragments || ip.fragmentOffset !== 0) {
      const whole = this.#reassembly.input(buf, ip);
      if (whole) this.#ipv4Input(whole, 0, whole.length, srcMac, dstMac);
      return;
    }
    const p = this.plan;
    this.learnSource(ip.src, srcMac);
    if (ip.ttl <= 1 && this.#ttlEndsHere(buf, ip, dstMac)) return this.icmp.timeExceeded(buf, ip);
    // DHCP arrives from 0.0.0.0 to broadcast: the one broadcast we serve
    if (ip.protocol === IPPROTO_UDP) {
      const udp = parseUdp(
        buf,
        ip.payloadOffset,
        ip.payloadEnd,
        this.#udpPseudo(ip.src, ip.dst, ip.payloadEnd - ip.payloadOffset),
        this.#udp,
      );
      if (udp instanceof WireError) return this.drop("udp-malformed", udp);
      if (udp.dstPort === DHCP_SERVER_PORT && udp.srcPort === DHCP_CLIENT_PORT) {
        return this.dhcp.input(buf, udp.payloadOffset, udp.payloadEnd, srcMac, ip.src);
      }
      if (this.#isBroadcastOrMulticast(ip.dst) || dstMac === MAC_BROADCAST) {
        return this.drop("broadcast-not-forwarded");
      }
      if (ip.dst === p.dns && udp.dstPort === 53) {
        return this.dns.input(buf, new Ipv4Path(this, ip.src, ip.dst), udp);
      }
      if (this.tftp && ip.dst === p.gateway && udp.dstPort === TFTP_PORT) {
        return this.tftp.input(buf, new Ipv4Path(this, ip.src, ip.dst), udp);
      }
      return this.udp.input(buf, ip, udp);
    }
    if (this.#isBroadcastOrMulticast(ip.dst) || dstMac === MAC_BROADCAST) {
      return this.drop("broadcast-not-forwarded");
    }
    if (ip.protocol === IPPROTO_TCP) return this.tcp.input(buf, ip);
    if (ip.protocol === IPPROTO_ICMP) return this.icmp.input(buf, ip);
    this.icmp.protocolUnreachable(buf, ip);
    return this.drop("ip-protocol-unsupported");
  }

  /**
   * RFC 1812 §5.3.1: the gateway is a router — a datagram of TTL 1 (or 0) for an address beyond it is not
   * forwarded, and its sender hears why (a traceroute's first hop). Not for our own addresses, broadcast or
   * multicast, nor about an ICMP error (§4.3.2.7).
   */
  #ttlEndsHere(buf: Uint8Array, ip: Ipv4Header, dstMac: number): boolean {
    if (this.arp.isOurs(ip.dst) || this.#isBroadcastOrMulticast(ip.dst) || dstMac === MAC_BROADCAST) {
      return false;
    }
    if (ip.protocol !== IPPROTO_ICMP) return true;
    return ip.payloadEnd > ip.payloadOffset && buf[ip.payloadOffset] === ICMP_ECHO_REQUEST;
  }

  #udpPseudo(src: number, dst: number, len: number): number {
    return this.guestOffloads ? -1 : pseudoHeaderSumV4(src, dst, IPPROTO_UDP, len);
  }

  #isBroadcastOrMulticast(a: number): boolean {
    return a === 0xffffffff || a === this.plan.broadcast || isMulticastV4(a);
  }

  /**
   * {@linkcode Ipv6Input.egress}: where a new IPv6 flow goes on the host, or the ICMPv6 code refusing it.
   */
  egress6(a: Uint8Array, off: number, protocol: "tcp" | "udp", port: number): Egress6 {
    return this.#ipv6.egress(a, off, protocol, port);
  }

  /** The guest's address learned from a packet's or an ARP sender's: any unicast one inside the network. */
  learnSource(ip: number, mac: number): void {
    if (ip !== 0 && ((ip & this.plan.netmask) >>> 0) === this.plan.network) this.learn(ip, mac);
  }

  /** Records that `ip` is at `mac` (bounded; the oldest entry gives way). */
  learn(ip: number, mac: number): void {
    if (this.neighbours.get(ip) === mac) return;
    if (!this.neighbours.has(ip) && this.neighbours.size >= MAX_NEIGHBOURS) {
      this.neighbours.delete(this.neighbours.keys().next().value!);
    }
    this.neighbours.set(ip, mac);
  }

  /**
   * The IPv4 guest a port forward without a guest address reaches: the latest DHCP lease; else the address
   * the guest was heard from (the latest one learned: configured by hand, or a lease kept across a relay
   * restart, which the guest renews only at T1); else the first DHCP address, libslirp's default target.
   */
  get defaultForwardGuest(): number {
    const leased = this.dhcp.lastBoundAddress;
    if (leased >= 0) return leased;
    let heard = -1;
    for (const ip of this.neighbours.keys()) {
      if (ip !== this.plan.gateway && ip !== this.plan.dns && ip !== this.plan.broadcast) heard = ip;
    }
    return heard >= 0 ? heard : this.plan.dhcpStart;
  }

  /** The MAC to send to `ip`, or -1 after sending an ARP request for it (the caller drops its packet). */
  macFor(ip: number): number {
    const mac = this.neighbours.get(ip);
    if (mac !== undefined) return mac;
    this.arp.request(ip);
    return -1;
  }

  /** Policy and relay guard together: may the guest reach `real:port`? */
  allowEgress(protocol: "tcp" | "udp", real: number, port: number): boolean {
    return this.policy.check(protocol, real, port) &&
      (this.#guard === undefined || this.#guard(protocol, real, port));
  }

  /** {@linkcode allowEgress} for the IPv6 destination at `a[off]`. */
  allowEgress6(protocol: "tcp" | "udp", a: Uint8Array, off: number, port: number): boolean {
    const rule = this.policy.rule6(protocol, a, off, port);
    if (!this.policy.check6(protocol, a, off, port)) return false;
    return this.#guard6 === undefined ||
      this.#guard6(protocol, a.subarray(off, off + 16), port, rule === true);
  }

  /** Admits one new flow under the tenant's rate quota. */
  admitFlow(): boolean {
    return this.flowRate.take(1, this.host.now());
  }

  /**
   * Admits one error reply to the guest (ICMP unreachable, the RST refusing a SYN): at most
   * {@linkcode ERROR_REPLIES_PER_SECOND}. RFC 1812 §4.3.2.8 asks a router to limit its ICMP errors; a SYN
   * flood beyond the tenant's flow quota would otherwise cost a reply frame per SYN. Beyond it the packet is
   * dropped silently (counted under "error-reply-rate-limit"): the guest retransmits, or gives up.
   */
  admitErrorReply(): boolean {
    if (this.#errorReplies.take(1, this.host.now())) return true;
    this.counters.drop("error-reply-rate-limit");
    return false;
  }

  /** Counts a dropped frame under `reason`; logs the parse error at debug level. */
  drop(reason: string, err?: WireError): void {
    this.counters.drop(reason);
    if (err) this.log("debug", "dropped frame", { tenant: this.tenant, reason, error: err.toString() });
  }

  /** A fresh IPv4 identification value. */
  nextIpId(): number {
    this.#ipId = (this.#ipId + 1) & 0xffff;
    return this.#ipId;
  }

  /**
   * Wraps the `l4Length` bytes already at `tx[L4_OFFSET]` (see frame.ts) in IPv4 and Ethernet headers and outputs the
   * frame. `dstMac` -1 resolves the MAC from the neighbour table (dropping if unknown).
   * @returns false when the frame was not sent
   */
  sendIpv4(src: number, dst: number, protocol: number, l4Length: number, dstMac = -1, ttl = 64): boolean {
    return this.sendIpv4In(this.tx, 0, src, dst, protocol, l4Length, dstMac, ttl);
  }

  /**
   * {@linkcode sendIpv4} for a frame built at `buf[base]` instead of `tx[0]` (the L4 bytes already at
   * `buf[base + L4_OFFSET]`): TCP builds data segments next to its send ring.
   */
  sendIpv4In(
    buf: Uint8Array,
    base: number,
    src: number,
    dst: number,
    protocol: number,
    l4Length: number,
    dstMac = -1,
    ttl = 64,
  ): boolean {
    if (this.#closed) return false;
    if (l4Length + 20 > this.plan.mtu) {
      // a caller's bug, not the guest's: never hand the guest a frame its NIC would drop
      this.counters.drop("frame-over-mtu");
      return false;
    }
    const mac = dstMac >= 0 ? dstMac : this.macFor(dst);
    if (mac < 0) {
      this.counters.drop("guest-mac-unknown");
      return false;
    }
    emitEthernet(buf, base, mac, this.plan.gatewayMac, ETHERTYPE_IPV4);
    const h = SHARED_IP_OUT;
    h.id = this.nextIpId();
    h.ttl = ttl;
    h.protocol = protocol;
    h.src = src;
    h.dst = dst;
    emitIpv4(h, buf, base + ETH_HEADER_LEN, l4Length);
    this.sendFrameIn(buf, base, ETH_HEADER_LEN + 20 + l4Length);
    return true;
  }

  /**
   * Wraps the `l4Length` bytes at `buf[base + 54]` in an IPv6 header (src and dst copied from the given
   * offsets) and Ethernet, and outputs the frame. `dstMac` -1 looks the guest's MAC up (soliciting it when
   * unknown, and dropping the packet, as ARP does).
   * @returns false when the frame was not sent
   */
  sendIpv6In(
    buf: Uint8Array,
    base: number,
    src: Uint8Array,
    srcOff: number,
    dst: Uint8Array,
    dstOff: number,
    protocol: number,
    l4Length: number,
    dstMac = -1,
    hopLimit = 64,
  ): boolean {
    if (this.#closed) return false;
    if (l4Length + IPV6_HEADER_LEN > this.plan.mtu) {
      this.counters.drop("frame-over-mtu");
      return false;
    }
    const mac = dstMac >= 0 ? dstMac : this.icmp6.macFor(dst, dstOff);
    if (mac < 0) {
      this.counters.drop("guest-mac-unknown");
      return false;
    }
    emitEthernet(buf, base, mac, this.plan.gatewayMac, ETHERTYPE_IPV6);
    emitIpv6(buf, base + ETH_HEADER_LEN, l4Length, protocol, hopLimit, src, srcOff, dst, dstOff);
    this.sendFrameIn(buf, base, ETH_HEADER_LEN + IPV6_HEADER_LEN + l4Length);
    return true;
  }

  readonly #reassembly: Ipv4Reassembly;

  /** Outputs `tx[0, len)` to the guest. */
  sendFrame(len: number): void {
    this.sendFrameIn(this.tx, 0, len);
  }

  /** {@linkcode sendFrame} for a frame at `buf[base, base + len)` (room for padding to 60 bytes after it). */
  sendFrameIn(buf: Uint8Array, base: number, len: number): void {
    if (this.#closed) return;
    // IEEE 802.3 minimum frame: pad as a NIC would (libslirp does too; some guest drivers expect it)
    if (len < ETH_MIN_FRAME) {
      buf.fill(0, base + len, base + ETH_MIN_FRAME);
      len = ETH_MIN_FRAME;
    }
    const c = this.counters;
    c.framesOut++;
    c.bytesOut += len;
    this.output(outputView.view(buf, base, base + len));
  }

  /** Releases every host socket and timer of this tenant. Idempotent. */
  // ───────── what the relay asks of a tenant's stack (it does not reach into the services) ─────────

  /** Open TCP and UDP flows. */
  get flowCounts(): { tcp: number; udp: number; dhcpLeases: number; dhcp6Leases: number } {
    return {
      tcp: this.tcp.size,
      udp: this.udp.size,
      dhcpLeases: this.dhcp.size,
      dhcp6Leases: this.dhcp6.size,
    };
  }

  /** Every TCP connection's state (the admin API's `/flows`: what `ss -ti` shows). */
  inspectTcp(): Record<string, unknown>[] {
    return this.tcp.connections().map((c) => c.inspect());
  }

  /** The transport toward the guest drained: TCP connections waiting on it send again. */
  guestDrained(): void {
    this.tcp.kick();
  }

  /** The guest's link is back after an outage (a resumed session): TCP resends at once what it lost. */
  guestReturned(): void {
    this.tcp.linkReturned();
  }

  /** Resets every TCP connection (relay shutdown: the guests see RSTs, not hangs). */
  resetAllTcp(): void {
    this.tcp.close();
  }

  /** A host client of a `tcp:` forward: our SYN toward the guest. */
  acceptTcpForward(fwd: HostForwardConfig, sock: HostTcpSocket, bind: (h: TcpHandlers) => void): void {
    this.tcp.acceptForward(fwd, sock, bind);
  }

  /**
   * A datagram from a host client of a `udp:` forward bound on `socket`, for `guestIp:guestPort` (-1: the
   * {@linkcode defaultForwardGuest}; 16 bytes: an IPv6 guest, :: its latest SLAAC address). False when there is
   * no such guest.
   */
  udpForwardInput(
    socket: HostUdpSocket,
    guestIp: number | Uint8Array,
    guestPort: number,
    data: Uint8Array,
    address: string,
    port: number,
  ): boolean {
    if (typeof guestIp !== "number") {
      // an IPv6 guest address; :: is the guest's latest SLAAC address
      const guest6 = guestIp.every((b) => b === 0) ? this.icmp6.guestAddress() : guestIp;
      if (!guest6 || !this.plan.v6) return false;
      this.udp.forwardInput(socket, -1, guest6, guestPort, data, address, port);
      return true;
    }
    const guest = guestIp >= 0 ? guestIp : this.defaultForwardGuest;
    this.udp.forwardInput(socket, guest, null, guestPort, data, address, port);
    return true;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.tcp.close();
    this.udp.close();
    this.#closeServices();
  }

  /** What is left once the flows are gone: pending DNS queries and echoes, leases, held fragments. */
  #closeServices(): void {
    this.dns.close();
    this.tftp?.close();
    this.icmp.close();
    this.icmp6.close();
    this.dhcp.close();
    this.#reassembly.close();
  }

  /**
   * Closes like {@linkcode close}, at once for the guest (no frame goes in or out), but releases the flows
   * and their host sockets {@linkcode CLOSE_SLICE} at a time, one event-loop turn apart: a tenant leaving
   * with hundreds of flows took 35 ms in one piece (measured under bench/hostile.ts), a stall for every
   * other tenant.
   */
  closeInSlices(): void {
    if (this.#closed) return;
    this.#closed = true;
    const step = () => {
      let more = false;
      contained(this, "stack.closeInSlices", () => {
        more = this.tcp.closeSome(CLOSE_SLICE) || this.udp.closeSome(CLOSE_SLICE);
        if (!more) this.#closeServices();
      });
      if (more) nextTurn(step);
    };
    step();
  }

  get closed(): boolean {
    return this.#closed;
  }
}
