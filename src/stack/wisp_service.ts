/**
 * A Wisp session: the L4 streams one WebSocket carries (browser VMs such as v86 with `wisp://`, browser
 * proxies), terminated here as host sockets under the tenant's own rules — its DNS (static records, then
 * its upstreams), egress policy, the relay's guard, flow quotas and the relay-wide flow limit — exactly as a
 * frame-carried guest's flows are. There is no Ethernet side: the client names hosts and ports.
 *
 * Flow control (the spec): the server grants each TCP stream a buffer counted in packets with CONTINUE —
 * first on stream 0 for every stream, then per stream as the host socket takes the data. A client that
 * sends far past its credit (16 MiB held for the host) loses the stream (CLOSE 0x49) rather than the
 * relay's memory. Toward the client the
 * host socket is paused while the WebSocket's backlog is over half its limit.
 *
 * Never a DATA or CONTINUE for a stream after its CLOSE (v86 throws on it): a stream leaves the table when
 * it closes, and every packet to the client is for a stream in the table.
 *
 * @module
 */
import { ipv6ToString, parseIpv6Address } from "../wire/ipv6.ts";
import type { Egress6 } from "./context.ts";
import { ipv4ToString, isWireError, parseIpv4Address } from "../wire/bytes.ts";
import {
  parseWisp,
  parseWispConnect,
  parseWispInfo,
  parseWispPassword,
  WISP_CLOSE,
  WISP_CONNECT,
  WISP_DATA,
  WISP_EXT_MOTD,
  WISP_EXT_PASSWORD,
  WISP_EXT_UDP,
  WISP_HEADER_LEN,
  WISP_INFO,
  WISP_STREAM_TCP,
  WISP_STREAM_UDP,
  WispClose,
  wispClose,
  wispContinue,
  wispInfo,
  type WispPacket,
  wispPacket,
} from "../wire/wisp.ts";
import type { HostNet, HostTcpSocket, HostUdpSocket } from "../host/host.ts";
import type { Logger } from "../common/logger.ts";
import type { StackConfig } from "./config.ts";
import type { Counters } from "./counters.ts";
import type { FlowLimit } from "./flow_limit.ts";
import type { TranslationTable } from "./translation.ts";
import type { MemoryBudget } from "./memory_budget.ts";
import { after, type CancelTimer } from "../common/timers.ts";

/** Packets a stream may send before the next CONTINUE (wisp-js's server uses 128). */
export const WISP_STREAM_BUFFER = 128;
/** Bytes a stream's host socket may hold unsent before the client is taken to ignore its credit. */
const WISP_STREAM_HELD_BYTES = 16 * 1024 * 1024;
/** Streams one session may hold open. */
const MAX_STREAMS = 1024;
/** How often streams held back by the tenant's memory budget look again (only while any is held). */
const BUDGET_RECHECK_MS = 20;
/** Bytes per DATA packet toward the client: one host read, cut to fit a WebSocket message comfortably. */
const MAX_DATA = 64 * 1024;

/** What a Wisp session needs of the tenant's stack (the Stack implements it). */
export interface WispContext {
  readonly config: StackConfig;
  readonly host: HostNet;
  readonly translation: TranslationTable;
  readonly counters: Counters;
  readonly flowLimit: FlowLimit;
  /** The tenant's memory budget (`bufferedBytes`): bytes held for host sockets are charged to it. */
  readonly memory: MemoryBudget;
  readonly log: Logger;
  readonly tenant: string;
  readonly closed: boolean;
  allowEgress(protocol: "tcp" | "udp", real: number, port: number): boolean;
  /** IPv6 translation and policy in one call: where the flow goes, or the ICMPv6 code refusing it. */
  egress6(a: Uint8Array, off: number, protocol: "tcp" | "udp", port: number): Egress6;
  /** Whether the tenant has IPv6 (an IPv6 literal is refused without it). */
  readonly plan: { readonly v6: unknown };
  admitFlow(): boolean;
  readonly dns: { resolve(name: string, done: (address: number | null) => void): void };
}

/** Where the session's packets go: the WebSocket (or the ring toward it). */
export interface WispOutput {
  /** Queues a copy of `packet`; false when the backlog is full. */
  send(packet: Uint8Array): boolean;
  readonly backlog: number;
  readonly backlogLimit: number;
  close(): void;
}

export interface WispOptions {
  /** 2 when the client offered Wisp v2 (its subprotocol): INFO first, extensions. */
  version: 1 | 2;
  /** The message of the day sent to v2 clients (the MOTD extension). */
  motd?: string;
  /**
   * Set: every client must pass the password extension (v2) with a username and password this accepts; a v1
   * client, which cannot, is refused at once.
   */
  authenticate?: (username: string, password: string) => boolean;
}

interface Stream {
  readonly id: number;
  readonly udp: boolean;
  tcp: HostTcpSocket | null;
  udpSocket: HostUdpSocket | null;
  address: string;
  port: number;
  /** DATA packets taken since the last CONTINUE, and whether the host socket is over its high-water mark. */
  taken: number;
  blocked: boolean;
  paused: boolean;
  /** DATA that arrived while the host address was being resolved. */
  early: Uint8Array[] | null;
  /** Bytes of its host socket's backlog charged to the tenant's memory budget. */
  charged: number;
}

export class WispSession {
  #ctx: WispContext;
  #out: WispOutput;
  #streams = new Map<number, Stream>();
  #opts: WispOptions;
  /** v2: the client's INFO has come (streams wait for it). */
  #ready: boolean;
  #closed = false;
  #udpEnabled: boolean;
  /** Packets the output refused (its ring or buffer full): sent first when it drains. Bounded by the pausing of host reads. */
  #queued: Uint8Array[] = [];

  constructor(ctx: WispContext, out: WispOutput, opts: WispOptions) {
    this.#ctx = ctx;
    this.#out = out;
    this.#opts = opts;
    this.#ready = opts.version === 1 && !opts.authenticate;
    // v1 has no extensions: UDP streams are simply allowed; v2 enables them by the extension
    this.#udpEnabled = opts.version === 1;
    if (opts.version === 2) {
      const ext = [{ id: WISP_EXT_UDP, payload: new Uint8Array(0) }];
      // the password extension's server payload: u8 "required"
      if (opts.authenticate) ext.push({ id: WISP_EXT_PASSWORD, payload: Uint8Array.of(1) });
      if (opts.motd) ext.push({ id: WISP_EXT_MOTD, payload: new TextEncoder().encode(opts.motd) });
      out.send(wispInfo(2, 0, ext));
    } else if (opts.authenticate) {
      // not from inside the constructor: the owner holds the session before it hears of the close
      queueMicrotask(() =>
        this.#refuseSession(
          WispClose.authMissingCredentials,
          "Wisp v1 client refused: credentials are required (v2)",
        )
      );
    } else {
      out.send(wispContinue(0, WISP_STREAM_BUFFER));
    }
  }

  get streams(): number {
    return this.#streams.size;
  }

  /** One packet from the client (a view, valid during the call). */
  input(buf: Uint8Array): void {
    if (this.#closed) return;
    const p = parseWisp(buf, 0, buf.length);
    if (isWireError(p)) return this.#ctx.counters.drop("wisp-malformed");
    if (!this.#ready) return this.#handshake(p, buf);
    switch (p.type) {
      case WISP_CONNECT:
        return this.#connect(p, buf);
      case WISP_DATA:
        return this.#data(p, buf);
      case WISP_CLOSE:
        return this.#closeStream(p.streamId, null);
      default:
        // CONTINUE and INFO have no meaning from a client once the session runs
        this.#ctx.counters.drop("wisp-unexpected-packet");
    }
  }

  #handshake(p: WispPacket, buf: Uint8Array): void {
    if (p.type !== WISP_INFO || p.streamId !== 0) {
      this.#ctx.log("warn", "Wisp client did not answer INFO first", { tenant: this.#ctx.tenant });
      return this.close();
    }
    const info = parseWispInfo(p, buf);
    if (isWireError(info)) return this.close();
    if (this.#opts.authenticate) {
      const ext = info.extensions.find((e) => e.id === WISP_EXT_PASSWORD);
      if (!ext) {
        return this.#refuseSession(WispClose.authMissingCredentials, "Wisp client sent no credentials");
      }
      const c = parseWispPassword(ext.payload);
      if (isWireError(c) || !this.#opts.authenticate(c.username, c.password)) {
        return this.#refuseSession(WispClose.authBadPassword, "Wisp client failed password authentication", {
          username: isWireError(c) ? null : c.username,
        });
      }
    }
    this.#udpEnabled = info.extensions.some((e) => e.id === WISP_EXT_UDP);
    this.#ready = true;
    this.#send(wispContinue(0, WISP_STREAM_BUFFER));
  }

  /** Ends the session before any stream: CLOSE on stream 0 with `reason`, logged and counted. */
  #refuseSession(reason: number, message: string, fields: Record<string, unknown> = {}): void {
    if (this.#closed) return;
    this.#ctx.log("warn", message, { tenant: this.#ctx.tenant, ...fields });
    this.#ctx.counters.drop("wisp-auth-failed");
    this.#out.send(wispClose(0, reason));
    this.close();
  }

  #connect(p: WispPacket, buf: Uint8Array): void {
    const ctx = this.#ctx;
    const id = p.streamId;
    const c = parseWispConnect(p, buf);
    if (id === 0 || this.#streams.has(id)) return this.#refuse(id, WispClose.invalid, "wisp-bad-stream-id");
    if (
      isWireError(c) || c.port === 0 || (c.streamType !== WISP_STREAM_TCP && c.streamType !== WISP_STREAM_UDP)
    ) {
      return this.#refuse(id, WispClose.invalid, "wisp-bad-connect");
    }
    const udp = c.streamType === WISP_STREAM_UDP;
    if (udp && !this.#udpEnabled) return this.#refuse(id, WispClose.invalid, "wisp-udp-not-negotiated");
    if (this.#streams.size >= MAX_STREAMS) return this.#refuse(id, WispClose.throttled, "wisp-stream-limit");
    if (ctx.memory.available <= 0) return this.#refuse(id, WispClose.throttled, "wisp-memory-budget");
    if (!ctx.admitFlow()) return this.#refuse(id, WispClose.throttled, "wisp-flow-rate-limit");
    const s: Stream = {
      id,
      udp,
      tcp: null,
      udpSocket: null,
      address: "",
      port: c.port,
      taken: 0,
      blocked: false,
      paused: false,
      early: [],
      charged: 0,
    };
    this.#streams.set(id, s);
    const literal = c.hostname === "localhost" ? 0x7f000001 : parseIpv4Address(c.hostname);
    if (literal !== null) return this.#dial(s, ctx.translation.toReal(literal));
    const literal6 = parseIpv6Address(c.hostname);
    if (literal6) return this.#dial6(s, literal6);
    ctx.dns.resolve(c.hostname, (a) => {
      if (this.#streams.get(id) === s) this.#dial(s, a ?? -1);
    });
  }

  /** The stream's host is known (-1: none): policy and limits, then the host socket. */
  #dial(s: Stream, real: number): void {
    const ctx = this.#ctx;
    const proto = s.udp ? "udp" : "tcp";
    if (real < 0) return this.#closeStream(s.id, WispClose.unreachable, "wisp-unresolved");
    const loopback = real >>> 24 === 127;
    if ((loopback && !ctx.config.gatewayToLoopback) || !ctx.allowEgress(proto, real, s.port)) {
      return this.#refused(s, ipv4ToString(real));
    }
    this.#open(s, ipv4ToString(real), s.port, 4);
  }

  /**
   * An IPv6 literal (`[2001:db8::1]` or bare): the tenant's IPv6 translation and policy, as for a guest's
   * IPv6 flow (the host's ::1 only where the gateway maps to loopback).
   */
  #dial6(s: Stream, a: Uint8Array): void {
    const ctx = this.#ctx;
    if (!ctx.plan.v6) return this.#closeStream(s.id, WispClose.unreachable, "wisp-ipv6-off");
    const loopback = a.every((b, i) => b === (i === 15 ? 1 : 0));
    const dest = loopback && !ctx.config.gatewayToLoopback
      ? -1
      : ctx.egress6(a, 0, s.udp ? "udp" : "tcp", s.port);
    if (typeof dest === "number") return this.#refused(s, `[${ipv6ToString(a)}]`);
    this.#open(s, dest.address, dest.port, dest.address.includes(":") ? 6 : 4);
  }

  #refused(s: Stream, to: string): void {
    const ctx = this.#ctx;
    const proto = s.udp ? "udp" : "tcp";
    ctx.log("info", "Wisp stream refused by policy", { tenant: ctx.tenant, to, port: s.port });
    this.#closeStream(s.id, WispClose.blocked, `policy-denied-${proto}`);
  }

  /** Limits, then the host socket to `address:port`. */
  #open(s: Stream, address: string, port: number, family: 4 | 6): void {
    const ctx = this.#ctx;
    const proto = s.udp ? "udp" : "tcp";
    let open = 0;
    for (const o of this.#streams.values()) if (o.udp === s.udp && (o.tcp || o.udpSocket)) open++;
    if (open >= (s.udp ? ctx.config.maxUdpFlows : ctx.config.maxTcpFlows)) {
      return this.#closeStream(s.id, WispClose.throttled, `${proto}-flow-limit`);
    }
    if (!ctx.flowLimit.tryOpen()) return this.#closeStream(s.id, WispClose.throttled, "relay-flow-limit");
    s.address = address;
    s.port = port;
    if (s.udp) {
      ctx.counters.udpFlowsOpened++;
      s.udpSocket = ctx.host.openUdp({
        onMessage: (data) => this.#toClient(s, data),
        onError: (code) => ctx.log("debug", "Wisp UDP stream error", { tenant: ctx.tenant, code }),
      }, family);
      for (const d of s.early ?? []) s.udpSocket.sendTo(d, s.address, s.port);
      s.early = null;
      return;
    }
    ctx.counters.tcpFlowsOpened++;
    s.tcp = ctx.host.connectTcp(s.address, s.port, {
      onConnect: () => {
        for (const d of s.early ?? []) this.#write(s, d);
        s.early = null;
      },
      onData: (data) => this.#toClient(s, data),
      onEnd: () => this.#closeStream(s.id, WispClose.voluntary),
      onError: (code) => {
        ctx.log("debug", "Wisp stream's host socket failed", { tenant: ctx.tenant, code });
        this.#closeStream(s.id, closeReasonOf(code));
      },
      onClose: () => this.#closeStream(s.id, WispClose.voluntary),
      onDrain: () => {
        this.#account(s);
        if (!s.blocked || this.#streams.get(s.id) !== s) return;
        s.blocked = false;
        this.#grant(s);
      },
    });
  }

  #data(p: WispPacket, buf: Uint8Array): void {
    const s = this.#streams.get(p.streamId);
    if (!s) return this.#ctx.counters.drop("wisp-data-no-stream");
    const data = buf.slice(p.payloadOffset, p.payloadEnd);
    if (s.udp) {
      if (s.udpSocket) s.udpSocket.sendTo(data, s.address, s.port);
      else if (s.early && s.early.length < WISP_STREAM_BUFFER) s.early.push(data);
      return;
    }
    s.taken++;
    if (s.early) s.early.push(data);
    else this.#write(s, data);
    if (!s.blocked) this.#grant(s);
  }

  /**
   * A new buffer of credit once the client spent all of it: its count is then zero with nothing in flight,
   * so the CONTINUE's absolute count is exact. (Granting earlier would reset a count that packets still in
   * flight have used, and let the client run ahead of the relay without bound.)
   */
  #grant(s: Stream): void {
    if (s.taken < WISP_STREAM_BUFFER) return;
    // the tenant's memory budget is spent: no more credit until the host sockets have taken some back
    if (this.#ctx.memory.available <= 0) return this.#holdForBudget(s);
    s.taken = 0;
    this.#send(wispContinue(s.id, WISP_STREAM_BUFFER));
  }

  #write(s: Stream, data: Uint8Array): void {
    if (!s.tcp) return;
    this.#ctx.counters.tcpBytesFromGuest += data.length;
    // over its high-water mark the host socket holds the rest; the next CONTINUE waits for its drain
    if (!s.tcp.write(data)) s.blocked = true;
    this.#account(s);
    // credit is counted in packets and a CONTINUE resets the client's count when it arrives, not when it
    // left, so packets in flight come on top: no count tells an honest client from one that ignores its
    // credit. What it would cost is bytes held for the host, so those are bounded instead
    if (s.tcp.bufferedAmount > WISP_STREAM_HELD_BYTES) {
      this.#closeStream(s.id, WispClose.throttled, "wisp-credit-exceeded");
    }
  }

  /** Keeps the tenant's budget charged for the bytes `s`'s host socket still holds. */
  #account(s: Stream): void {
    const now = s.tcp && this.#streams.get(s.id) === s ? s.tcp.bufferedAmount : 0;
    const d = now - s.charged;
    if (d > 0) this.#ctx.memory.charge(d);
    else if (d < 0) this.#ctx.memory.credit(-d);
    s.charged = now;
  }

  /** Streams whose next CONTINUE waits for room in the tenant's budget, and the one timer that looks again. */
  #heldForBudget = new Set<Stream>();
  #budgetTimer: CancelTimer | undefined;

  #holdForBudget(s: Stream): void {
    this.#heldForBudget.add(s);
    this.#budgetTimer ??= after(BUDGET_RECHECK_MS, () => {
      this.#budgetTimer = undefined;
      if (this.#closed) return;
      // what the host sockets took meanwhile comes back to the budget, then the held streams try again
      for (const x of this.#streams.values()) if (!x.udp) this.#account(x);
      const held = [...this.#heldForBudget];
      this.#heldForBudget.clear();
      for (const x of held) if (this.#streams.get(x.id) === x && !x.blocked) this.#grant(x);
    });
  }

  #toClient(s: Stream, data: Uint8Array): void {
    if (this.#streams.get(s.id) !== s) return;
    if (s.udp && (this.#queued.length > 0 || this.#out.backlog > this.#out.backlogLimit / 2)) {
      return this.#ctx.counters.drop("wisp-udp-client-backlog-full"); // datagrams may be lost; bytes may not
    }
    for (let off = 0; off < data.length; off += MAX_DATA) {
      const n = Math.min(MAX_DATA, data.length - off);
      const packet = wispPacket(WISP_DATA, s.id, n);
      packet.set(data.subarray(off, off + n), WISP_HEADER_LEN);
      this.#send(packet);
    }
    if (s.udp) return;
    this.#ctx.counters.tcpBytesToGuest += data.length;
    if (s.tcp && !s.paused && (this.#queued.length > 0 || this.#out.backlog > this.#out.backlogLimit / 2)) {
      s.paused = true;
      s.tcp.pause();
    }
  }

  /** Sends `packet`, or queues it behind the ones the output refused. */
  #send(packet: Uint8Array): void {
    if (this.#queued.length > 0 || !this.#out.send(packet)) this.#queued.push(packet);
  }

  /** The WebSocket's backlog drained: queued packets go, then paused host sockets read again. */
  drained(): void {
    while (this.#queued.length > 0 && this.#out.send(this.#queued[0])) this.#queued.shift();
    if (this.#queued.length > 0 || this.#out.backlog > this.#out.backlogLimit / 2) return;
    for (const s of this.#streams.values()) {
      if (s.paused && s.tcp) {
        s.paused = false;
        s.tcp.resume();
      }
    }
  }

  #refuse(id: number, reason: number, drop: string): void {
    this.#ctx.counters.drop(drop);
    if (!this.#streams.has(id)) this.#send(wispClose(id, reason));
  }

  /** Ends stream `id`: its socket goes, and the client is told `reason` (null: the client closed it). */
  #closeStream(id: number, reason: number | null, drop?: string): void {
    const s = this.#streams.get(id);
    if (!s) return;
    this.#streams.delete(id);
    if (drop) this.#ctx.counters.drop(drop);
    if (s.tcp || s.udpSocket) this.#ctx.flowLimit.release();
    this.#ctx.memory.credit(s.charged);
    s.charged = 0;
    this.#heldForBudget.delete(s);
    s.tcp?.destroy();
    s.udpSocket?.close();
    // what still waits for the client must not follow the client's own CLOSE
    if (reason === null && this.#queued.length > 0) {
      this.#queued = this.#queued.filter((p) => streamOf(p) !== id);
    }
    if (reason !== null && !this.#closed) this.#send(wispClose(id, reason));
  }

  /** Closes every stream and the session (the WebSocket went, or the tenant). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#budgetTimer?.();
    this.#queued = [];
    for (const id of [...this.#streams.keys()]) this.#closeStream(id, null);
    this.#out.close();
  }
}

function streamOf(packet: Uint8Array): number {
  return (packet[1] | (packet[2] << 8) | (packet[3] << 16) | (packet[4] << 24)) >>> 0;
}

/** The CLOSE reason for a host socket's error. */
function closeReasonOf(code: string): number {
  switch (code) {
    case "ECONNREFUSED":
      return WispClose.refused;
    case "ETIMEDOUT":
      return WispClose.timeout;
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return WispClose.unreachable;
    default:
      return WispClose.networkError;
  }
}
