/**
 * What the stack's services (ARP, DHCP, DNS, ICMP, UDP NAT, TCP) see of their stack: its configuration,
 * clock, host sockets, counters and the ways to send toward the guest — and of each other, only the small
 * interfaces below. `Stack` implements it; no service imports `Stack`, so the stack and its services form no
 * import circle, and a service can be built on a test's own context.
 *
 * @module
 */
import type { DatagramSender } from "./datagram_sender.ts";
import type { Logger } from "../common/logger.ts";
import type { WireError } from "../wire/bytes.ts";
import type { Ipv4Header } from "../wire/ipv4.ts";
import type { Ipv6Header } from "../wire/ipv6.ts";
import type { Ipv6Path, PathSender } from "./guest_path.ts";
import type { AddressPlan, StackConfig } from "./config.ts";
import type { ContainedHost, FaultOwner } from "./containment.ts";
import type { Counters } from "./counters.ts";
import type { FlowLimit } from "./flow_limit.ts";
import type { MemoryBudget } from "./memory_budget.ts";
import type { EgressPolicy } from "./policy.ts";
import type { TimerWheel } from "./timer_wheel.ts";
import type { TranslationTable } from "./translation.ts";
import type { HostIcmpError } from "../host/host.ts";

/** ICMP errors toward the guest (the ICMP service sends them for every other service). */
export interface IcmpErrors {
  /** Destination unreachable about the datagram in `buf`, counted under `reason`. */
  unreachable(buf: Uint8Array, ip: Ipv4Header, code: number, reason: string): void;
  /** Unreachable about a UDP datagram no longer in hand (rebuilt from the flow). */
  unreachableForUdp(guestIp: number, guestPort: number, dst: number, dstPort: number, code: number): void;
  /** Time exceeded from the gateway about the datagram in `buf`, whose TTL ends here. */
  timeExceeded(buf: Uint8Array, ip: Ipv4Header): void;
  /**
   * A router's ICMP error about a UDP datagram no longer in hand, from that router; false when the caller's
   * own answer should stand.
   */
  routerErrorForUdp(
    icmp: HostIcmpError,
    guestIp: number,
    guestPort: number,
    dst: number,
    dstPort: number,
  ): boolean;
  /** Unreachable about a TCP SYN no longer in hand (the host dial failed later). */
  unreachableForTcp(
    guestIp: number,
    guestPort: number,
    dst: number,
    dstPort: number,
    seq: number,
    code: number,
  ): void;
  /**
   * A router's ICMP error about a guest's SYN (a path probe), from that router; false when the caller's own
   * answer should stand.
   */
  routerErrorForTcp(
    icmp: HostIcmpError,
    guestIp: number,
    guestPort: number,
    dst: number,
    dstPort: number,
    seq: number,
  ): boolean;
}

/** Where a new IPv6 flow goes on the host (address as the socket API takes it, port), or an ICMPv6 code. */
export type Egress6 = { address: string; port: number } | number;

/** ICMPv6 errors toward the guest, and what neighbour discovery learned of it. */
export interface Icmpv6Errors {
  /** Destination unreachable with `code` about the packet `ip` in `buf`, counted under `reason`. */
  unreachable(buf: Uint8Array, ip: Ipv6Header, code: number, reason: string): void;
  /** Unreachable about a UDP datagram no longer in hand (rebuilt from the flow). */
  unreachableForUdp(
    guest: Uint8Array,
    guestPort: number,
    dst: Uint8Array,
    dstPort: number,
    code: number,
  ): void;
  /** Time Exceeded from the router about the packet in `buf`, whose hop limit ends here. */
  timeExceeded(buf: Uint8Array, ip: Ipv6Header): void;
  /**
   * A router's ICMPv6 error about a UDP datagram no longer in hand, from that router; false when the
   * caller's own answer should stand.
   */
  routerErrorForUdp(
    icmp: HostIcmpError,
    guest: Uint8Array,
    guestPort: number,
    dst: Uint8Array,
    dstPort: number,
  ): boolean;
  /** The guest's latest global IPv6 address, or null (the default target of IPv6 port forwards). */
  guestAddress(): Uint8Array | null;
  /** Unreachable about a TCP SYN no longer in hand (the host dial failed later). */
  unreachableForTcp(
    path: Ipv6Path,
    guestPort: number,
    localPort: number,
    seq: number,
    noRoute: boolean,
  ): void;
  /**
   * A router's ICMPv6 error about a guest's SYN (a path probe), from that router; false when the caller's
   * own answer should stand.
   */
  routerErrorForTcp(
    icmp: HostIcmpError,
    path: Ipv6Path,
    guestPort: number,
    localPort: number,
    seq: number,
  ): boolean;
}

export interface StackContext extends FaultOwner, PathSender {
  readonly config: StackConfig;
  readonly plan: AddressPlan;
  /** The host's sockets, every callback inside this stack's fault boundary. */
  readonly host: ContainedHost;
  readonly wheel: TimerWheel;
  readonly policy: EgressPolicy;
  readonly translation: TranslationTable;
  readonly counters: Counters;
  readonly log: Logger;
  /** Tenant name for logs. */
  readonly tenant: string;
  /** Scratch buffer a frame toward the guest is built in (L4 at `L4_OFFSET`). */
  readonly tx: Uint8Array;
  /** Bytes the tenant's flows hold (quota bufferedBytes). */
  readonly memory: MemoryBudget;
  /** Open flows across the relay. */
  readonly flowLimit: FlowLimit;
  readonly closed: boolean;
  /** The guest's NIC offloads checksums: TCP/UDP checksums from it are not verified. */
  readonly guestOffloads: boolean;
  /** Bytes waiting in the transport toward the guest (TCP paces itself on it). */
  guestBacklog(): number;
  readonly icmp: IcmpErrors;
  readonly icmp6: Icmpv6Errors;
  /** Where DNS over TCP to the virtual DNS address goes. */
  readonly dns: { tcpUpstream(): { address: string; port: number } | null };
  /** The guest a port forward without a guest address reaches ({@linkcode Stack.defaultForwardGuest}). */
  readonly defaultForwardGuest: number;
  /** UDP and ICMP datagrams toward the guest, fragmented when they do not fit its MTU. */
  readonly datagrams: DatagramSender;

  /** Counts a dropped frame under `reason`. */
  drop(reason: string, err?: WireError): void;
  /** Records that the guest's `ip` is at `mac`. */
  learn(ip: number, mac: number): void;
  /** The same when `ip` (a guest packet's or ARP sender's) is a unicast address inside the network. */
  learnSource(ip: number, mac: number): void;
  /** Policy and relay guard together: may the guest reach `real:port`? */
  allowEgress(protocol: "tcp" | "udp", real: number, port: number): boolean;
  /**
   * Where a new IPv6 flow to the 16 bytes at `a[off]` goes on the host (address text and port), or the
   * ICMPv6 unreachable code that refuses it: translation and policy for IPv6 in one call.
   */
  egress6(a: Uint8Array, off: number, protocol: "tcp" | "udp", port: number): Egress6;
  /** The same for an IPv6 destination, the 16 bytes at `a[off]`. */
  allowEgress6(protocol: "tcp" | "udp", a: Uint8Array, off: number, port: number): boolean;
  /** Admits one new flow under the tenant's rate quota. */
  admitFlow(): boolean;
  /** Admits one error reply (ICMP unreachable, refusing RST) under the stack's rate limit. */
  admitErrorReply(): boolean;
  /** Sends the L4 bytes in `tx` at L4_OFFSET as an IPv4 datagram to the guest. */
  sendIpv4(
    src: number,
    dst: number,
    protocol: number,
    l4Length: number,
    dstMac?: number,
    ttl?: number,
  ): boolean;
  /** Sends `len` bytes of `tx` as a frame. */
  sendFrame(len: number): void;
  /** A throw inside one flow's code: that flow alone is reset. */
  flowFault(flow: { abort(): void }, err: unknown, where: string): void;
}
