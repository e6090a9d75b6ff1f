/**
 * Host UDP sockets on our epoll loop (IPv4 or IPv6, nonblocking, through FFI): in a data-plane worker the
 * loop sleeps in `epoll_wait`, where the runtime's node:dgram sockets would not be served until it wakes.
 * An IPv6 socket is dual-stack (Linux's default): it reaches an IPv4 peer by its mapped address.
 *
 * @module
 */
import type { HostUdpSocket, UdpHandlers } from "./host.ts";
import { EAGAIN, errno, libc } from "./libc.ts";
import { watchReadable } from "./epoll_loop.ts";
import { errnoName } from "./errno_names.ts";
import { ipv6Equal, ipv6ToString, parseIpv6Address } from "../wire/ipv6.ts";

const AF_INET = 2, AF_INET6 = 10, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
const EINTR = 4;
/** Datagrams read per readable event: a flood on one socket must not hold the loop. */
const READS_PER_EVENT = 64;

/** One receive buffer per thread: a datagram is copied out of it for its handler, which may keep it. */
const rx = new Uint8Array(65536);
/** Room for a sockaddr_in6 (28 bytes); a sockaddr_in uses the first 16. */
const from = new Uint8Array(28);
const fromView = new DataView(from.buffer);
const fromLen = new Uint32Array(1);
const fromLenBytes = new Uint8Array(fromLen.buffer);
/** sockaddr_in for sendto, rewritten per datagram. */
const to = new Uint8Array(16);
const toView = new DataView(to.buffer);
toView.setUint16(0, AF_INET, true);
/** sockaddr_in6 for sendto from an IPv6 socket. */
const to6 = new Uint8Array(28);
const to6View = new DataView(to6.buffer);
to6View.setUint16(0, AF_INET6, true);

/** An address as an IPv6 socket takes it (IPv4 as ::ffff:a.b.c.d), cached for the last one. */
let lastText6 = "", lastAddr6: Uint8Array | null = null;
function address6Of(text: string): Uint8Array | null {
  if (text === lastText6) return lastAddr6;
  lastText6 = text;
  lastAddr6 = parseIpv6Address(
    text.includes(":") ? text : `::ffff:${text === "localhost" ? "127.0.0.1" : text}`,
  );
  return lastAddr6;
}

const lastFrom6 = new Uint8Array(16);
let lastFrom6Text = "";
function text6Of(sa: Uint8Array): string {
  if (lastFrom6Text === "" || !ipv6Equal(sa, 8, lastFrom6, 0)) {
    lastFrom6.set(sa.subarray(8, 24));
    lastFrom6Text = ipv6ToString(sa, 8);
  }
  return lastFrom6Text;
}

/** "a.b.c.d" → network-order u32, or -1. Cached for the last address (a flow talks to one peer). */
let lastText = "", lastAddr = -1;
function addressOf(text: string): number {
  if (text === lastText) return lastAddr;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text === "localhost" ? "127.0.0.1" : text);
  let a = -1;
  if (m && m.slice(1).every((x) => Number(x) <= 255)) {
    a = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
  }
  lastText = text;
  lastAddr = a;
  return a;
}

let lastFrom = -1, lastFromText = "";
function textOf(a: number): string {
  if (a !== lastFrom) {
    lastFrom = a;
    lastFromText = `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
  }
  return lastFromText;
}

export class EpollUdpSocket implements HostUdpSocket {
  #fd: number;
  #unwatch: () => void;
  #closed = false;
  readonly port: number;

  readonly #v6: boolean;

  private constructor(fd: number, readonly handlers: UdpHandlers, v6: boolean) {
    this.#fd = fd;
    this.#v6 = v6;
    fromLen[0] = from.length;
    this.port = libc().getsockname(fd, from, fromLenBytes) === 0 ? fromView.getUint16(2, false) : 0;
    this.#unwatch = watchReadable(fd, () => this.#readSome());
  }

  /**
   * An unbound socket of `family` (the kernel picks the port at the first send), or one bound to
   * `address:port` (its family from the address).
   */
  static open(handlers: UdpHandlers, address?: string, port = 0, family: 4 | 6 = 4): EpollUdpSocket {
    const L = libc();
    const v6 = address === undefined ? family === 6 : address.includes(":");
    const fd = L.socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw Object.assign(new Error(`socket: ${errnoName(errno())}`), { code: errnoName(errno()) });
    if (address !== undefined) {
      const a = v6 ? (address6Of(address) ? 1 : -1) : addressOf(address);
      const sa = new Uint8Array(v6 ? 28 : 16);
      const v = new DataView(sa.buffer);
      v.setUint16(0, v6 ? AF_INET6 : AF_INET, true);
      v.setUint16(2, port, false);
      if (v6 && a > 0) sa.set(address6Of(address)!, 8);
      else v.setUint32(4, a < 0 ? 0 : a, false);
      if (a < 0 || L.bind(fd, sa, sa.length) < 0) {
        const code = a < 0 ? "EINVAL" : errnoName(errno());
        L.close(fd);
        throw Object.assign(new Error(`bind ${address}:${port}: ${code}`), { code });
      }
    }
    return new EpollUdpSocket(fd, handlers, v6);
  }

  sendTo(data: Uint8Array, address: string, port: number): void {
    if (this.#closed) return;
    let n: number;
    if (this.#v6) {
      const a = address6Of(address);
      if (!a) return this.handlers.onError("EINVAL");
      to6View.setUint16(2, port, false);
      to6.set(a, 8);
      n = libc().sendto(this.#fd, data, data.length, MSG_DONTWAIT, to6, 28);
    } else {
      const a = addressOf(address);
      if (a < 0) return this.handlers.onError("EINVAL");
      toView.setUint16(2, port, false);
      toView.setUint32(4, a, false);
      n = libc().sendto(this.#fd, data, data.length, MSG_DONTWAIT, to, 16);
    }
    if (n < 0) {
      const e = errno();
      // a full send buffer drops the datagram, as UDP may
      if (e !== EAGAIN && e !== EINTR) this.handlers.onError(errnoName(e));
    }
  }

  #readSome(): void {
    const L = libc();
    for (let i = 0; i < READS_PER_EVENT && !this.#closed; i++) {
      fromLen[0] = from.length;
      const n = L.recvfrom(this.#fd, rx, rx.length, MSG_DONTWAIT, from, fromLenBytes);
      if (n < 0) {
        const e = errno();
        if (e !== EAGAIN && e !== EINTR) this.handlers.onError(errnoName(e));
        return;
      }
      this.handlers.onMessage(
        rx.slice(0, n),
        this.#v6 ? text6Of(from) : textOf(fromView.getUint32(4, false)),
        fromView.getUint16(2, false),
      );
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unwatch();
    libc().close(this.#fd);
  }
}
