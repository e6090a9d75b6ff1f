/**
 * Guest-facing TCP for one tenant: the connection table, new connections from the guest (policy first,
 * then the host dial), TCP port forwards toward the guest, and the resets RFC 9293 prescribes for
 * segments that belong to no connection.
 *
 * @module
 */
import { ipv4ToString, parseIpv4Address, u16, WireError } from "../../wire/bytes.ts";
import {
  emitTcp,
  newTcpHeader,
  parseTcp,
  TCP_ACK_FLAG,
  TCP_RST,
  TCP_SYN,
  type TcpHeader,
  tcpHeaderLength,
} from "../../wire/tcp.ts";
import { IPPROTO_TCP, IPV4_HEADER_LEN, IPV4_TOTAL_LEN, type Ipv4Header } from "../../wire/ipv4.ts";
import { ETH_HEADER_LEN } from "../../wire/ethernet.ts";
import { pseudoHeaderSumV4, pseudoHeaderSumV6 } from "../../wire/checksum.ts";
import { type Ipv6Header, isUnspecifiedV6, parseIpv6Address } from "../../wire/ipv6.ts";
import { ICMP_UNREACH_ADMIN_PROHIBITED, ICMP_UNREACH_HOST, ICMP_UNREACH_NET } from "../../wire/icmpv4.ts";
import type { HostIcmpError, HostTcpSocket, TcpHandlers } from "../../host/host.ts";
import type { HostForwardConfig } from "../config.ts";
import { type GuestPath, Ipv4Path, Ipv6Path } from "../guest_path.ts";
import type { StackContext } from "../context.ts";
import { TcpConn } from "./tcp_conn.ts";
import { rstReply } from "./rst_reply.ts";
import type { TcpConnOwner } from "./tcp_sender.ts";
import { TcpState } from "./state.ts";
import { SegmentPrediction } from "./segment_prediction.ts";

/** Transport backlog (bytes queued toward the guest) above which connections stop sending. */
export const OUTPUT_PACING_BYTES = 128 * 1024;

/**
 * A guest SYN whose TTL / hop limit is at most this is a path probe (traceroute's and mtr's default reach is
 * 30 hops): the host's SYN then leaves with the guest's TTL less this gateway's hop (RFC 1812 §5.3.1), and
 * a router's error comes back from that router. An ordinary stack's SYN (TTL 64, 128, 255) leaves with the
 * host's default: its TTL would not run out anyway, and the connection saves the system calls.
 */
const PATH_PROBE_TTL = 32;

/** The host's TTL for a guest SYN that came with `ttl`: `ttl` − 1 for a path probe, else 0 (the default). */
function probeHops(ttl: number): number {
  return ttl <= PATH_PROBE_TTL ? ttl - 1 : 0;
}

const SHARED_SEG = newTcpHeader();
const SHARED_RST = newTcpHeader();
const SHARED_OUT = newTcpHeader();

export class TcpService implements TcpConnOwner {
  #stack: StackContext;
  // parse and emit scratch, shared by every tenant's stack (used synchronously, never across stacks)
  #seg = SHARED_SEG;
  #rst = SHARED_RST;
  /** Reused header for every segment we emit. */
  readonly outHeader: TcpHeader = SHARED_OUT;
  /** (guestPort << 16 | localPort) → connections (disambiguated by addresses). */
  #table = new Map<number, TcpConn[]>();
  #count = 0;
  /** Connections waiting for the transport backlog to drain. */
  readonly blocked: Set<TcpConn> = new Set();
  /** The connection the next guest frame most likely belongs to (see segment_prediction.ts). */
  #predicted = new SegmentPrediction<TcpConn>();

  constructor(stack: StackContext) {
    this.#stack = stack;
  }

  /** Open connections. */
  get size(): number {
    return this.#count;
  }

  /** Every open connection (for stats and tests). */
  connections(): TcpConn[] {
    return [...this.#table.values()].flat();
  }

  #key(guestPort: number, localPort: number): number {
    return ((guestPort << 16) | localPort) >>> 0;
  }

  #taken(path: GuestPath, guestPort: number, localPort: number): boolean {
    const list = this.#table.get(this.#key(guestPort, localPort));
    return list !== undefined && list.some((c) => c.path.sameAs(path));
  }

  #add(c: TcpConn): void {
    const k = this.#key(c.guestPort, c.localPort);
    const list = this.#table.get(k);
    if (list) list.push(c);
    else this.#table.set(k, [c]);
    this.#count++;
    this.#stack.counters.tcpFlowsOpened++;
    if (c.path.family === 6) this.#stack.counters.tcpFlowsOpened6++;
    c.holdsRelaySlot = true;
  }

  connectionFreed(c: TcpConn): void {
    const k = this.#key(c.guestPort, c.localPort);
    const list = this.#table.get(k);
    this.blocked.delete(c);
    this.budgetBlocked.delete(c);
    this.#predicted.forget(c);
    if (!list) return;
    const i = list.indexOf(c);
    if (i < 0) return;
    list.splice(i, 1);
    if (list.length === 0) this.#table.delete(k);
    this.#count--;
    if (c.holdsRelaySlot) this.#stack.flowLimit.release();
    c.holdsRelaySlot = false;
  }

  /** Connections whose host reads paused for lack of tenant memory budget. */
  readonly budgetBlocked: Set<TcpConn> = new Set();

  /** The tenant's memory budget has room again: let connections paused on it read from the host. */
  budgetFreed(): void {
    if (this.budgetBlocked.size === 0) return;
    const waiting = [...this.budgetBlocked];
    this.budgetBlocked.clear();
    for (const c of waiting) c.budgetRoom();
  }

  /** True when the transport toward the guest holds enough: senders wait for {@linkcode kick}. */
  outputCongested(): boolean {
    return this.#stack.guestBacklog() > OUTPUT_PACING_BYTES;
  }

  /** The transport drained: let blocked connections send again. */
  kick(): void {
    if (this.blocked.size === 0) return;
    // round robin: whoever is still blocked when the transport fills again waits for the next drain
    for (const c of [...this.blocked]) {
      if (this.outputCongested()) break;
      this.blocked.delete(c);
      c.trySend();
    }
  }

  /**
   * The guest frame `buf[off, end)` when it repeats the headers of the last IPv4 segment delivered (an
   * upload's next segment): delivered to that connection at once, and true. False for anything else, which
   * the caller parses in full.
   */
  inputPredicted(buf: Uint8Array, off: number, end: number): boolean {
    const p = this.#predicted;
    const c = p.match(buf, off, end);
    if (c === null) return false;
    const s = this.#stack;
    const tcp = off + ETH_HEADER_LEN + IPV4_HEADER_LEN;
    const tcpEnd = off + ETH_HEADER_LEN + u16(buf, off + ETH_HEADER_LEN + IPV4_TOTAL_LEN);
    const seg = parseTcp(
      buf,
      tcp,
      tcpEnd,
      s.guestOffloads ? -1 : pseudoHeaderSumV4(p.guest, p.local, IPPROTO_TCP, tcpEnd - tcp),
      this.#seg,
    );
    // a bad segment, or a SYN (a new incarnation, maybe), is the full path's to judge
    if (seg instanceof WireError || (seg.flags & TCP_SYN) !== 0) return false;
    s.counters.tcpSegmentsPredicted++;
    s.learnSource(p.guest, p.guestMac);
    c.input(seg, buf);
    return true;
  }

  /** A TCP segment from the guest over IPv4. */
  input(buf: Uint8Array, ip: Ipv4Header): void {
    const s = this.#stack;
    const seg = parseTcp(
      buf,
      ip.payloadOffset,
      ip.payloadEnd,
      s.guestOffloads ? -1 : pseudoHeaderSumV4(ip.src, ip.dst, IPPROTO_TCP, ip.payloadEnd - ip.payloadOffset),
      this.#seg,
    );
    if (seg instanceof WireError) return s.drop("tcp-malformed", seg);
    const list = this.#table.get(this.#key(seg.srcPort, seg.dstPort));
    let c: TcpConn | undefined;
    if (list) {
      for (const x of list) {
        if (x.path.matchesV4(ip.src, ip.dst)) {
          c = x;
          break;
        }
      }
    }
    if (this.#deliver(c, seg, buf)) {
      if (!c!.freed) this.#predicted.remember(c!, buf, ip);
      return;
    }
    const path = new Ipv4Path(s, ip.src, ip.dst);
    if (!this.#mayOpen(path, seg)) return;
    const guestForward = s.translation.guestForward(ip.dst, seg.dstPort);
    if (guestForward) return this.#open(path, seg, guestForward.address, guestForward.port);
    // DNS over TCP to the virtual DNS address goes to the first upstream resolver (RFC 7766: clients
    // retry over TCP when a UDP answer was truncated)
    if (ip.dst === s.plan.dns) {
      const dnsUpstream = seg.dstPort === 53 ? s.dns.tcpUpstream() : null;
      if (!dnsUpstream) return void this.#refuse(path, seg, "tcp-dns-no-upstream");
      return this.#open(path, seg, dnsUpstream.address, dnsUpstream.port);
    }
    const real = s.translation.toReal(ip.dst);
    if (real < 0) return s.icmp.unreachable(buf, ip, ICMP_UNREACH_HOST, "tcp-no-host");
    if (!s.allowEgress("tcp", real, seg.dstPort)) {
      return s.icmp.unreachable(buf, ip, ICMP_UNREACH_ADMIN_PROHIBITED, "policy-denied-tcp");
    }
    this.#open(path, seg, ipv4ToString(real), seg.dstPort, probeHops(ip.ttl));
  }

  /** A TCP segment from the guest over IPv6. */
  input6(buf: Uint8Array, ip: Ipv6Header): void {
    const s = this.#stack;
    const len = ip.payloadEnd - ip.payloadOffset;
    const seg = parseTcp(
      buf,
      ip.payloadOffset,
      ip.payloadEnd,
      s.guestOffloads ? -1 : pseudoHeaderSumV6(buf, ip.srcOffset, buf, ip.dstOffset, IPPROTO_TCP, len),
      this.#seg,
    );
    if (seg instanceof WireError) return s.drop("tcp-malformed", seg);
    const list = this.#table.get(this.#key(seg.srcPort, seg.dstPort));
    let c: TcpConn | undefined;
    if (list) {
      for (const x of list) {
        if (x.path.matchesV6(buf, ip.srcOffset, ip.dstOffset)) {
          c = x;
          break;
        }
      }
    }
    if (this.#deliver(c, seg, buf)) return;
    const path = new Ipv6Path(s, buf, ip.srcOffset, buf, ip.dstOffset);
    if (!this.#mayOpen(path, seg)) return;
    const dest = s.egress6(buf, ip.dstOffset, "tcp", seg.dstPort);
    if (typeof dest === "number") return s.icmp6.unreachable(buf, ip, dest, "tcp6-no-route");
    this.#open(path, seg, dest.address, dest.port, probeHops(ip.hopLimit));
  }

  /**
   * Hands the segment to its connection; true when it is dealt with (delivered, or answered with the reset
   * a segment for no connection draws), false for a fresh SYN that may open one.
   */
  #deliver(c: TcpConn | undefined, seg: TcpHeader, buf: Uint8Array): boolean {
    if (c) {
      // a new SYN for a connection in TIME-WAIT starts a new incarnation (RFC 9293 §3.10.7.4 note)
      if (c.state === TcpState.TIME_WAIT && (seg.flags & (TCP_SYN | TCP_ACK_FLAG)) === TCP_SYN) c.abort();
      else {
        c.input(seg, buf);
        return true;
      }
    }
    return false;
  }

  /** Anything but a fresh SYN is reset; a SYN must pass the flow limits. */
  #mayOpen(path: GuestPath, seg: TcpHeader): boolean {
    const s = this.#stack;
    const f = seg.flags;
    if ((f & (TCP_SYN | TCP_ACK_FLAG | TCP_RST)) !== TCP_SYN) {
      // RFC 9293 §3.10.7.1: anything but a fresh SYN to a closed port draws a reset
      this.#resetSegment(path, seg);
      s.drop(f & TCP_RST ? "tcp-rst-no-connection" : "tcp-no-connection");
      return false;
    }
    if (seg.dstPort === 0) return this.#refuse(path, seg, "tcp-port-zero");
    if (this.#count >= s.config.maxTcpFlows) return this.#refuse(path, seg, "tcp-flow-limit");
    if (!s.admitFlow()) return this.#refuse(path, seg, "tcp-flow-rate-limit");
    return true;
  }

  /**
   * A guest SYN that passed policy: dial the host before answering. `hops` > 0: the SYN is a path probe,
   * and the host's SYN leaves with that TTL ({@linkcode probeHops}).
   */
  #open(path: GuestPath, seg: TcpHeader, real: string, realPort: number, hops = 0): void {
    const s = this.#stack;
    if (!s.flowLimit.tryOpen()) {
      this.#refuse(path, seg, "relay-flow-limit");
      return;
    }
    const c = new TcpConn(
      s,
      this,
      { path, guestPort: seg.srcPort, localPort: seg.dstPort },
      TcpState.CONNECTING,
    );
    c.acceptSynOptions(seg);
    this.#add(c);
    c.host = s.host.connectTcp(real, realPort, c, hops);
    c.startConnectTimer();
  }

  #resetSegment(path: GuestPath, seg: TcpHeader): void {
    this.reset(
      path,
      seg.srcPort,
      seg.dstPort,
      seg.seq,
      seg.ack,
      seg.flags,
      seg.payloadEnd - seg.payloadOffset,
    );
  }

  /** Refuses a SYN with a reset (rate-limited); false, for the caller to return. */
  #refuse(path: GuestPath, seg: TcpHeader, reason: string): false {
    this.#stack.counters.drop(reason);
    if (this.#stack.admitErrorReply()) this.#resetSegment(path, seg);
    return false;
  }

  /**
   * The host refused or could not be reached while the guest waits in SYN; `icmp`: the router's error that
   * ended a path probe, passed on from that router.
   */
  connectFailed(c: TcpConn, code: string, icmp?: HostIcmpError): void {
    const s = this.#stack;
    s.log("debug", "host connect failed", {
      tenant: s.tenant,
      code,
      to: `${c.path.localText()}:${c.localPort}`,
    });
    const p = c.path;
    if (icmp) {
      const told = p.family === 4
        ? s.icmp.routerErrorForTcp(icmp, p.guest, c.guestPort, p.local, c.localPort, c.irs)
        : s.icmp6.routerErrorForTcp(icmp, p, c.guestPort, c.localPort, c.irs);
      if (told) {
        s.counters.drop(`tcp-host-icmp-${icmp.type}`);
        c.forget();
        return;
      }
    }
    if (code === "ECONNREFUSED") {
      // the guest sees ECONNREFUSED at once
      s.counters.drop("tcp-host-refused");
      c.abort();
      return;
    }
    s.counters.drop(`tcp-host-${code}`);
    if (p.family === 4) {
      const icmpCode = code === "ENETUNREACH" ? ICMP_UNREACH_NET : ICMP_UNREACH_HOST;
      s.icmp.unreachableForTcp(p.guest, c.guestPort, p.local, c.localPort, c.irs, icmpCode);
    } else {
      s.icmp6.unreachableForTcp(p, c.guestPort, c.localPort, c.irs, code === "ENETUNREACH");
    }
    c.abort();
  }

  /**
   * Sends the RST that answers a segment ({@linkcode rstReply}); a RST is never answered.
   */
  reset(
    path: GuestPath,
    guestPort: number,
    localPort: number,
    seq: number,
    ack: number,
    flags: number,
    dataLen: number,
  ): void {
    const o = this.#rst;
    if (!rstReply(seq, ack, flags, dataLen, o)) return;
    const s = this.#stack;
    o.srcPort = localPort;
    o.dstPort = guestPort;
    o.window = 0;
    const hl = tcpHeaderLength(o);
    emitTcp(o, s.tx, path.l4Offset, 0, path.pseudoSum(IPPROTO_TCP, hl));
    path.send(s.tx, 0, IPPROTO_TCP, hl);
  }

  // ───────────────────────── port forwards ─────────────────────────

  /**
   * A host client connected to a `tcp:` forward: originate a connection to the guest (our SYN). The
   * guest sees it coming from the gateway ("the host"), from the client's port unless another
   * connection to the same guest port uses it.
   */
  acceptForward(fwd: HostForwardConfig, sock: HostTcpSocket, bind: (h: TcpHandlers) => void): void {
    const s = this.#stack;
    const path = this.#forwardPath(fwd.guestAddress);
    if (!path || s.closed || this.#count >= s.config.maxTcpFlows || !s.flowLimit.tryOpen()) {
      s.counters.drop(!path ? "tcp-forward-no-guest" : "tcp-forward-refused");
      sock.destroy();
      return;
    }
    let localPort = sock.remotePort || 1024;
    for (let i = 0; this.#taken(path, fwd.guestPort, localPort) && i < 64512; i++) {
      localPort = localPort >= 65535 ? 1024 : localPort + 1;
    }
    const c = new TcpConn(s, this, { path, guestPort: fwd.guestPort, localPort }, TcpState.SYN_SENT);
    c.host = sock;
    this.#add(c);
    // the listener belongs to the tenant, not this stack: its callbacks enter the boundary here
    bind(s.host.containTcp(c));
    c.startActiveOpen();
  }

  /**
   * The path a forward's connection takes to `guestAddress`: IPv4 from the gateway (empty: the stack's
   * default guest), or IPv6 from prefix::2 (`::`: the guest's latest global IPv6 address); null when there
   * is no such guest.
   */
  #forwardPath(guestAddress: string): GuestPath | null {
    const s = this.#stack;
    const v6 = guestAddress.includes(":") ? parseIpv6Address(guestAddress) : null;
    if (v6) {
      const plan = s.plan.v6;
      const guest = isUnspecifiedV6(v6, 0) ? s.icmp6.guestAddress() : v6;
      return plan && guest ? new Ipv6Path(s, guest, 0, plan.gateway, 0) : null;
    }
    const guestIp = guestAddress ? parseIpv4Address(guestAddress)! : s.defaultForwardGuest;
    return new Ipv4Path(s, guestIp, s.plan.gateway);
  }

  /** The guest's link is back after an outage: each connection resends what it has in flight. */
  linkReturned(): void {
    for (const list of this.#table.values()) for (const c of [...list]) c.linkReturned();
  }

  close(): void {
    this.closeSome(Infinity);
  }

  /** Aborts at most `n` connections; true while some remain. */
  closeSome(n: number): boolean {
    for (const list of this.#table.values()) {
      for (const c of [...list]) {
        if (n-- <= 0) return true;
        c.abort();
      }
    }
    return this.#count > 0;
  }
}
