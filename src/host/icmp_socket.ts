/**
 * Unprivileged ICMP echo through Linux "ping sockets": `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`,
 * reached with Deno FFI (libc). The kernel allows them to groups listed in
 * /proc/sys/net/ipv4/ping_group_range; elsewhere `open()` returns null and the stack reports ICMP as
 * unsupported.
 *
 * One socket serves every tenant. The kernel owns the echo identifier (it is the socket's "port"), so
 * requests are told apart by a relay-wide sequence number we assign; the guest's own id and sequence are
 * restored by the caller. Replies are read only while requests are outstanding: a poll() with a short
 * timeout on an FFI worker thread, then non-blocking recvfrom() until the queue is empty — no thread or
 * timer stays busy while nobody pings.
 *
 * @module
 */
import type { HostIcmpEcho, IcmpEchoCallback } from "./host.ts";
import { parseIpv4Address } from "../wire/bytes.ts";

import { EAGAIN, errno, type Libc, libc, pollFdFor, size } from "./libc.ts";
import { after } from "../common/timers.ts";

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_ICMP = 1;
const MAX_REPLY = 65536;
/** How often outstanding requests are checked for their timeout, on a socket loop. */
const SWEEP_MS = 100;

interface Outstanding {
  address: number;
  deadline: number;
  done: IcmpEchoCallback;
}

export class IcmpSocket implements HostIcmpEcho {
  #lib: Libc;
  #fd: number;
  #nextSeq = 1;
  #pending = new Map<number, Outstanding>();
  #polling = false;
  #closed = false;
  #rx = new Uint8Array(MAX_REPLY);
  #from = new Uint8Array(16);
  #fromLen = new Uint32Array(1);
  #pollFd: Uint8Array;

  private constructor(lib: Libc, fd: number) {
    this.#lib = lib;
    this.#fd = fd;
    this.#pollFd = pollFdFor(fd);
  }

  /** Opens the ping socket, or returns null (with the reason) when FFI or the kernel refuses. */
  static open(): { socket: IcmpSocket | null; reason: string } {
    let lib: Libc;
    try {
      lib = libc();
    } catch (e) {
      return { socket: null, reason: `FFI unavailable: ${(e as Error).message}` };
    }
    const fd = lib.socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
    if (fd < 0) {
      return {
        socket: null,
        reason: `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP) failed with errno ${errno()}` +
          " (see /proc/sys/net/ipv4/ping_group_range)",
      };
    }
    return { socket: new IcmpSocket(lib, fd), reason: "" };
  }

  echo(address: string, data: Uint8Array, timeoutMs: number, done: IcmpEchoCallback): boolean {
    if (this.#closed) return false;
    const a = parseIpv4Address(address);
    if (a === null) return false;
    let seq = this.#nextSeq;
    for (let i = 0; this.#pending.has(seq) && i < 0x10000; i++) seq = (seq + 1) & 0xffff;
    if (this.#pending.has(seq)) return false;
    this.#nextSeq = (seq + 1) & 0xffff;
    const msg = new Uint8Array(8 + data.length);
    msg[0] = 8; // echo request; the kernel fills in the id and the checksum
    msg[6] = seq >>> 8;
    msg[7] = seq & 0xff;
    msg.set(data, 8);
    const sa = new Uint8Array(16);
    const v = new DataView(sa.buffer);
    v.setUint16(0, AF_INET, true);
    v.setUint32(4, a, false);
    const n = this.#lib.sendto(this.#fd, msg, size(msg.length), 0, sa, 16);
    if (Number(n) < 0) return false;
    this.#pending.set(seq, { address: a, deadline: performance.now() + timeoutMs, done });
    if (this.#watch) this.#startWatching();
    else if (!this.#polling) this.#pollLoop();
    return true;
  }

  /**
   * On a socket loop (`watch`): replies are read when the loop reports the socket readable, and expired
   * requests are swept by a timer — nothing waits on a thread.
   */
  #watch: ((fd: number, onReadable: () => void) => () => void) | null = null;
  #unwatch: (() => void) | null = null;
  #sweep: (() => void) | null = null;

  /** Reads replies on the caller's socket loop instead of polling on an FFI thread. */
  useLoop(watch: (fd: number, onReadable: () => void) => () => void): void {
    this.#watch = watch;
  }

  #startWatching(): void {
    this.#unwatch ??= this.#watch!(this.#fd, () => this.#drain());
    if (!this.#sweep) this.#sweepSoon();
  }

  #sweepSoon(): void {
    this.#sweep = after(SWEEP_MS, () => {
      this.#sweep = null;
      this.#expire();
      if (this.#pending.size > 0 && !this.#closed) this.#sweepSoon();
      else {
        this.#unwatch?.();
        this.#unwatch = null;
      }
    });
  }

  #expire(): void {
    const now = performance.now();
    for (const [seq, p] of this.#pending) {
      if (p.deadline <= now) {
        this.#pending.delete(seq);
        p.done(null);
      }
    }
  }

  async #pollLoop(): Promise<void> {
    this.#polling = true;
    try {
      while (!this.#closed && this.#pending.size > 0) {
        await this.#lib.poll(this.#pollFd, 1n, 100);
        if (this.#closed) break;
        this.#drain();
        this.#expire();
      }
    } finally {
      this.#polling = false;
    }
  }

  #drain(): void {
    for (;;) {
      this.#fromLen[0] = 16;
      const n = Number(
        this.#lib.recvfrom(
          this.#fd,
          this.#rx,
          size(MAX_REPLY),
          0,
          this.#from,
          new Uint8Array(this.#fromLen.buffer),
        ),
      );
      if (n < 0) {
        if (errno() !== EAGAIN) return;
        return;
      }
      if (n < 8) continue;
      const seq = (this.#rx[6] << 8) | this.#rx[7];
      const p = this.#pending.get(seq);
      const from = new DataView(this.#from.buffer).getUint32(4, false);
      if (!p || p.address !== from) continue;
      this.#pending.delete(seq);
      p.done({ type: this.#rx[0], code: this.#rx[1], data: this.#rx.slice(8, n) });
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sweep?.();
    this.#unwatch?.();
    for (const p of this.#pending.values()) p.done(null);
    this.#pending.clear();
    this.#lib.close(this.#fd);
  }
}
