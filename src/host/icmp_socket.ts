/**
 * Unprivileged ICMP echo through Linux "ping sockets": `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)` and, for
 * IPv6 destinations, `socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6)`, reached with FFI (libc). The kernel
 * allows them to groups listed in /proc/sys/net/ipv4/ping_group_range (both families); elsewhere `open()`
 * returns null and the stack reports ICMP as unsupported.
 *
 * One socket per family serves every tenant. The kernel owns the echo identifier (it is the socket's "port"), so
 * requests are told apart by a relay-wide sequence number we assign; the guest's own id and sequence are
 * restored by the caller. Replies are read only while requests are outstanding: a poll() with a short
 * timeout on an FFI worker thread, then non-blocking recvfrom() until the queue is empty — no thread or
 * timer stays busy while nobody pings.
 *
 * @module
 */
import type { HostIcmpEcho, IcmpEchoCallback } from "./host.ts";
import { parseIpv4Address } from "../wire/bytes.ts";
import { ipv6Equal, parseIpv6Address } from "../wire/ipv6.ts";

import { EAGAIN, errno, type Libc, libc, pollFdFor } from "./libc.ts";
import { after } from "../common/timers.ts";

const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_ICMPV6 = 58;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_ICMP = 1;
const MAX_REPLY = 65536;
/** How often outstanding requests are checked for their timeout, on a socket loop. */
const SWEEP_MS = 100;

interface Outstanding {
  /** IPv4: the address as u32; IPv6: 16 bytes. */
  address: number | Uint8Array;
  deadline: number;
  done: IcmpEchoCallback;
}

/**
 * The ICMP echo of both families behind one {@linkcode HostIcmpEcho}: the IPv4 ping socket opened at once,
 * the IPv6 one at the first IPv6 destination. An address with a colon is IPv6.
 */
export class IcmpSocket implements HostIcmpEcho {
  #v4: PingSocket;
  #v6: PingSocket | null | undefined;
  #lib: Libc;
  #watch: ((fd: number, onReadable: () => void) => () => void) | null = null;

  private constructor(lib: Libc, v4: PingSocket) {
    this.#lib = lib;
    this.#v4 = v4;
  }

  /** Opens the IPv4 ping socket, or returns null (with the reason) when FFI or the kernel refuses. */
  static open(): { socket: IcmpSocket | null; reason: string } {
    let lib: Libc;
    try {
      lib = libc();
    } catch (e) {
      return { socket: null, reason: `FFI unavailable: ${(e as Error).message}` };
    }
    const v4 = PingSocket.open(lib, 4);
    return v4 instanceof PingSocket
      ? { socket: new IcmpSocket(lib, v4), reason: "" }
      : { socket: null, reason: v4 };
  }

  echo(address: string, data: Uint8Array, timeoutMs: number, done: IcmpEchoCallback): boolean {
    if (!address.includes(":")) return this.#v4.echo(address, data, timeoutMs, done);
    if (this.#v6 === undefined) {
      const s = PingSocket.open(this.#lib, 6);
      this.#v6 = s instanceof PingSocket ? s : null;
      if (this.#v6 && this.#watch) this.#v6.useLoop(this.#watch);
    }
    return this.#v6 ? this.#v6.echo(address, data, timeoutMs, done) : false;
  }

  /** Reads replies on the caller's socket loop instead of polling on an FFI thread. */
  useLoop(watch: (fd: number, onReadable: () => void) => () => void): void {
    this.#watch = watch;
    this.#v4.useLoop(watch);
    this.#v6?.useLoop(watch);
  }

  close(): void {
    this.#v4.close();
    this.#v6?.close();
  }
}

/** One family's ping socket. */
class PingSocket {
  #lib: Libc;
  #fd: number;
  readonly #v6: boolean;
  #nextSeq = 1;
  #pending = new Map<number, Outstanding>();
  #polling = false;
  #closed = false;
  #rx = new Uint8Array(MAX_REPLY);
  /** Room for a sockaddr_in6. */
  #from = new Uint8Array(28);
  #fromLen = new Uint32Array(1);
  #pollFd: Uint8Array;

  private constructor(lib: Libc, fd: number, v6: boolean) {
    this.#lib = lib;
    this.#fd = fd;
    this.#v6 = v6;
    this.#pollFd = pollFdFor(fd);
  }

  /** Opens the ping socket of `family`, or returns why not. */
  static open(lib: Libc, family: 4 | 6): PingSocket | string {
    const fd = family === 6
      ? lib.socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMPV6)
      : lib.socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
    if (fd < 0) {
      return `socket(${family === 6 ? "AF_INET6" : "AF_INET"}, SOCK_DGRAM, ${
        family === 6 ? "IPPROTO_ICMPV6" : "IPPROTO_ICMP"
      }) failed with errno ${errno()} (see /proc/sys/net/ipv4/ping_group_range)`;
    }
    return new PingSocket(lib, fd, family === 6);
  }

  echo(address: string, data: Uint8Array, timeoutMs: number, done: IcmpEchoCallback): boolean {
    if (this.#closed) return false;
    const a = this.#v6 ? parseIpv6Address(address) : parseIpv4Address(address);
    if (a === null) return false;
    let seq = this.#nextSeq;
    for (let i = 0; this.#pending.has(seq) && i < 0x10000; i++) seq = (seq + 1) & 0xffff;
    if (this.#pending.has(seq)) return false;
    this.#nextSeq = (seq + 1) & 0xffff;
    const msg = new Uint8Array(8 + data.length);
    msg[0] = this.#v6 ? 128 : 8; // echo request; the kernel fills in the id and the checksum
    msg[6] = seq >>> 8;
    msg[7] = seq & 0xff;
    msg.set(data, 8);
    const sa = new Uint8Array(this.#v6 ? 28 : 16);
    const v = new DataView(sa.buffer);
    v.setUint16(0, this.#v6 ? AF_INET6 : AF_INET, true);
    if (typeof a === "number") v.setUint32(4, a, false);
    else sa.set(a, 8);
    const n = this.#lib.sendto(this.#fd, msg, msg.length, 0, sa, sa.length);
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
      this.#fromLen[0] = this.#from.length;
      const n = Number(
        this.#lib.recvfrom(
          this.#fd,
          this.#rx,
          MAX_REPLY,
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
      if (!p) continue;
      const same = typeof p.address === "number"
        ? p.address === new DataView(this.#from.buffer).getUint32(4, false)
        : ipv6Equal(p.address, 0, this.#from, 8);
      if (!same) continue;
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
