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
 * timer stays busy while nobody pings. A request leaves with the TTL / hop limit it is given, and an ICMP
 * error about it (a router's time exceeded: a guest's traceroute) comes back through the socket's error
 * queue, matched by the sequence number in the request it quotes.
 *
 * @module
 */
import type { HostIcmpEcho, IcmpEchoCallback } from "./host.ts";
import { parseIpv4Address } from "../wire/bytes.ts";
import { ipv6Equal, parseIpv6Address } from "../wire/ipv6.ts";

import { EAGAIN, errno, type Libc, libc, pollFdFor } from "./libc.ts";
import { errorQueue } from "./error_queue.ts";
import { after } from "../common/timers.ts";

const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_ICMPV6 = 58;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_ICMP = 1;
const SOL_IP = 0, IP_TTL = 2, IP_RECVERR = 11, SOL_IPV6 = 41, IPV6_UNICAST_HOPS = 16, IPV6_RECVERR = 25;
/** The hop limit of a request that names none. */
const DEFAULT_HOPS = 64;
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

  echo(
    address: string,
    data: Uint8Array,
    timeoutMs: number,
    done: IcmpEchoCallback,
    hopLimit?: number,
  ): boolean {
    if (!address.includes(":")) return this.#v4.echo(address, data, timeoutMs, done, hopLimit);
    if (this.#v6 === undefined) {
      const s = PingSocket.open(this.#lib, 6);
      this.#v6 = s instanceof PingSocket ? s : null;
      if (this.#v6 && this.#watch) this.#v6.useLoop(this.#watch);
    }
    return this.#v6 ? this.#v6.echo(address, data, timeoutMs, done, hopLimit) : false;
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
  #fromView = new DataView(this.#from.buffer);
  #fromLen = new Uint32Array(1);
  #fromLenBytes = new Uint8Array(this.#fromLen.buffer);
  #pollFd: Uint8Array;
  /** The hop limit the socket sends with now. */
  #hops = -1;
  /** An int for setsockopt. */
  #int = new Int32Array(1);
  #intBytes = new Uint8Array(this.#int.buffer);

  private constructor(lib: Libc, fd: number, v6: boolean) {
    this.#lib = lib;
    this.#fd = fd;
    this.#v6 = v6;
    this.#pollFd = pollFdFor(fd);
    this.#setInt(v6 ? SOL_IPV6 : SOL_IP, v6 ? IPV6_RECVERR : IP_RECVERR, 1);
  }

  #setInt(level: number, name: number, value: number): void {
    this.#int[0] = value;
    this.#lib.setsockopt(this.#fd, level, name, this.#intBytes, 4);
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

  echo(
    address: string,
    data: Uint8Array,
    timeoutMs: number,
    done: IcmpEchoCallback,
    hopLimit?: number,
  ): boolean {
    if (this.#closed) return false;
    const hops = hopLimit ?? DEFAULT_HOPS;
    if (hops !== this.#hops) {
      this.#hops = hops;
      this.#setInt(this.#v6 ? SOL_IPV6 : SOL_IP, this.#v6 ? IPV6_UNICAST_HOPS : IP_TTL, hops);
    }
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
    // an earlier request's ICMP error, pending on the socket, fails the next send (the kernel hands it over
    // once): its caller hears of it from the error queue, and this request goes again
    let n = Number(this.#lib.sendto(this.#fd, msg, msg.length, 0, sa, sa.length));
    if (n < 0 && errno() !== EAGAIN) {
      this.#readErrors();
      n = Number(this.#lib.sendto(this.#fd, msg, msg.length, 0, sa, sa.length));
    }
    if (n < 0) return false;
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
          this.#fromLenBytes,
        ),
      );
      if (n < 0) {
        // an ICMP error about a request: the error queue holds it
        if (errno() !== EAGAIN) this.#readErrors();
        return;
      }
      if (n < 8) continue;
      const seq = (this.#rx[6] << 8) | this.#rx[7];
      const p = this.#pending.get(seq);
      if (!p) continue;
      if (!this.#sameAddress(p, this.#from, this.#fromView)) continue;
      this.#pending.delete(seq);
      p.done({ type: this.#rx[0], code: this.#rx[1], data: this.#rx.slice(8, n) });
    }
  }

  /**
   * Tells each request's caller of the ICMP error queued about it (a router's time exceeded, an
   * unreachable): the error names the request's destination and quotes its header, our sequence number.
   */
  #readErrors(): void {
    const q = errorQueue();
    for (let i = 0; i < 64 && !this.#closed; i++) {
      const e = q.next(this.#fd);
      if (e < 0) return;
      if (!q.icmp || q.payloadLength < 8) continue;
      const seq = (q.payload[6] << 8) | q.payload[7];
      const p = this.#pending.get(seq);
      if (!p || !this.#sameAddress(p, q.names, q.namesView)) continue;
      this.#pending.delete(seq);
      p.done({ type: q.icmp.type, code: q.icmp.code, data: new Uint8Array(0), offender: q.icmp.offender });
    }
  }

  /** Whether the sockaddr in `sa` (`view` over it) names the request's destination. */
  #sameAddress(p: Outstanding, sa: Uint8Array, view: DataView): boolean {
    return typeof p.address === "number"
      ? p.address === view.getUint32(4, false)
      : ipv6Equal(p.address, 0, sa, 8);
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
