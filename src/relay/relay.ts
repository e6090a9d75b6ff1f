/**
 * The relay service: listeners, one {@linkcode Stack} per guest connection, and the timer driver.
 *
 * @module
 */
import { type Logger, Stack } from "../stack/stack.ts";
import { defaultStackConfig, resolvePlan, type StackConfig } from "../stack/config.ts";
import { TimerWheel } from "../stack/timer_wheel.ts";
import { NodeHost } from "../host/node_host.ts";
import { IcmpSocket } from "../host/icmp_socket.ts";
import { listenStream, type StreamListener } from "../host/stream_listener.ts";
import {
  type ByteStream,
  FrameWriter,
  FramingError,
  QEMU_MAX_FRAME,
  readFrames,
} from "../transport/stream.ts";
import type { HostIcmpEcho, HostUdpSocket } from "../host/host.ts";
import type { HostForwardConfig } from "../stack/config.ts";
import { parseIpv4Address } from "../wire/bytes.ts";

export interface RelayOptions {
  /** Stream listeners: tcp://HOST:PORT, unix:///PATH. */
  listenQemu: string[];
  stack: StackConfig;
  log: Logger;
  /** Largest frame accepted from a stream guest. */
  maxFrame?: number;
  /** Bytes of frames queued per guest connection before frames are dropped. */
  maxBacklog?: number;
  /** Test-only fault injection: drop this fraction (0..1) of guest-bound frames, pseudo-randomly. */
  faults?: { guestBoundLoss?: number; seed?: number };
}

/** A connected guest. */
export interface GuestSession {
  id: number;
  remote: string;
  listener: string;
  stack: Stack;
  /** Closes the guest's connection. */
  close(): void;
}

export class Relay {
  readonly wheel: TimerWheel;
  readonly host: NodeHost;
  readonly sessions: Set<GuestSession> = new Set();
  #opts: RelayOptions;
  #listeners: StreamListener[] = [];
  #tick: ReturnType<typeof setInterval> | undefined;
  #nextId = 1;
  #icmp: IcmpSocket | null = null;
  #forwards: { config: HostForwardConfig; close(): void }[] = [];

  constructor(opts: RelayOptions) {
    resolvePlan(opts.stack); // refuse a bad plan before binding anything
    this.#opts = opts;
    this.wheel = new TimerWheel(performance.now());
    this.wheel.onWake = () => this.#startTicking();
    this.host = new NodeHost(() => this.#openIcmp());
  }

  #openIcmp(): HostIcmpEcho | null {
    const r = IcmpSocket.open();
    if (!r.socket) this.#opts.log("warn", "ICMP echo to the outside is unavailable", { reason: r.reason });
    this.#icmp = r.socket;
    return r.socket;
  }

  #startTicking(): void {
    if (this.#tick !== undefined) return;
    this.#tick = setInterval(() => {
      this.wheel.advance(performance.now());
      if (this.wheel.size === 0) {
        clearInterval(this.#tick);
        this.#tick = undefined;
      }
    }, this.wheel.tickMs);
  }

  /** Binds every listener and port forward; resolves with the listeners' URLs (real ports when 0 was asked). */
  async start(): Promise<string[]> {
    try {
      for (const url of this.#opts.listenQemu) {
        const l = listenStream(url);
        this.#listeners.push(l);
        this.#acceptLoop(l);
      }
      for (const f of this.#opts.stack.hostfwd) await this.#bindForward(f);
    } catch (e) {
      this.stop();
      throw e;
    }
    return this.#listeners.map((l) => l.url);
  }

  /** Port forwards with their bound host ports. */
  get forwards(): HostForwardConfig[] {
    return this.#forwards.map((f) => f.config);
  }

  /** The guest a single-user port forward reaches: the most recently connected one. */
  #currentStack(): Stack | null {
    let last: GuestSession | null = null;
    for (const s of this.sessions) last = s;
    return last?.stack ?? null;
  }

  async #bindForward(f: HostForwardConfig): Promise<void> {
    const log = this.#opts.log;
    if (f.protocol === "tcp") {
      const listener = await this.host.listenTcp(f.hostAddress, f.hostPort, (sock, bind) => {
        const stack = this.#currentStack();
        if (!stack) {
          log("info", "port forward connection refused: no guest connected", { port: f.hostPort });
          sock.destroy();
          return;
        }
        stack.tcp.acceptForward(f, sock, bind);
      });
      this.#forwards.push({ config: { ...f, hostPort: listener.port }, close: () => listener.close() });
      log("info", "TCP port forward", { host: `${f.hostAddress}:${listener.port}`, guestPort: f.guestPort });
    } else {
      const sock: HostUdpSocket & { port: number } = await this.host.bindUdp(f.hostAddress, f.hostPort, {
        onMessage: (data, address, port) => {
          const stack = this.#currentStack();
          if (!stack) return;
          const guest = f.guestAddress ? parseIpv4Address(f.guestAddress)! : stack.dhcp.lastBoundAddress;
          if (guest < 0) return stack.drop("udp-forward-no-guest");
          stack.udp.forwardInput(sock, guest, f.guestPort, data, address, port);
        },
        onError: (code) => log("warn", "UDP port forward socket error", { code }),
      });
      this.#forwards.push({ config: { ...f, hostPort: sock.port }, close: () => sock.close() });
      log("info", "UDP port forward", { host: `${f.hostAddress}:${sock.port}`, guestPort: f.guestPort });
    }
  }

  get urls(): string[] {
    return this.#listeners.map((l) => l.url);
  }

  async #acceptLoop(l: StreamListener): Promise<void> {
    for await (const conn of l.accept()) this.#serve(conn, conn.remote, l.url);
  }

  async #serve(conn: ByteStream, remote: string, listener: string): Promise<void> {
    const log = this.#opts.log;
    const id = this.#nextId++;
    const writer = new FrameWriter(conn, this.#opts.maxBacklog ?? 1024 * 1024, (e) => {
      log("info", "guest write failed", { session: id, error: String(e) });
      try {
        conn.close();
      } catch { /* closed */ }
    });
    const loss = this.#opts.faults?.guestBoundLoss ?? 0;
    let x = (this.#opts.faults?.seed ?? 0x9e3779b9) >>> 0 || 1;
    const lossy = (f: Uint8Array) => {
      // xorshift32: reproducible drops
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      if (x / 0x1_0000_0000 < loss) stack.counters.drop("fault-injected");
      else writer.push(f);
    };
    const stack: Stack = new Stack(this.#opts.stack, {
      host: this.host,
      wheel: this.wheel,
      output: loss > 0 ? lossy : (f) => writer.push(f),
      log,
      tenant: `session-${id}`,
    });
    stack.tcp.outputBacklog = () => writer.backlog;
    writer.onDrain = () => stack.tcp.kick();
    const session: GuestSession = {
      id,
      remote,
      listener,
      stack,
      close: () => {
        try {
          conn.close();
        } catch { /* closed */ }
      },
    };
    this.sessions.add(session);
    log("info", "guest connected", { session: id, remote, listener });
    try {
      await readFrames(
        conn,
        this.#opts.maxFrame ?? QEMU_MAX_FRAME,
        (b, off, len) => stack.input(b, off, len),
      );
      log("info", "guest disconnected", { session: id });
    } catch (e) {
      const reason = e instanceof FramingError ? e.message : String(e);
      log(e instanceof FramingError ? "warn" : "info", "guest connection closed", { session: id, reason });
    } finally {
      this.sessions.delete(session);
      stack.close();
      writer.close();
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }

  stop(): void {
    for (const f of this.#forwards) f.close();
    this.#forwards = [];
    for (const l of this.#listeners) l.close();
    this.#listeners = [];
    for (const s of this.sessions) {
      s.stack.close();
      s.close();
    }
    if (this.#tick !== undefined) clearInterval(this.#tick);
    this.#tick = undefined;
    this.#icmp?.close();
  }
}

export { defaultStackConfig };
