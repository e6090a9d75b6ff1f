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
import type { HostIcmpEcho } from "../host/host.ts";

export interface RelayOptions {
  /** Stream listeners: tcp://HOST:PORT, unix:///PATH. */
  listenQemu: string[];
  stack: StackConfig;
  log: Logger;
  /** Largest frame accepted from a stream guest. */
  maxFrame?: number;
  /** Bytes of frames queued per guest connection before frames are dropped. */
  maxBacklog?: number;
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

  /** Binds every listener; resolves with their bound URLs (real ports when 0 was asked). */
  start(): string[] {
    try {
      for (const url of this.#opts.listenQemu) {
        const l = listenStream(url);
        this.#listeners.push(l);
        this.#acceptLoop(l);
      }
    } catch (e) {
      this.stop();
      throw e;
    }
    return this.#listeners.map((l) => l.url);
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
    const stack = new Stack(this.#opts.stack, {
      host: this.host,
      wheel: this.wheel,
      output: (f) => writer.push(f),
      log,
      tenant: `session-${id}`,
    });
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
