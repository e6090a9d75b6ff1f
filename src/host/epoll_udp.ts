/**
 * Host UDP sockets on our epoll loop (IPv4 or IPv6, nonblocking, through FFI): in a data-plane worker the
 * loop sleeps in `epoll_wait`, where the runtime's node:dgram sockets would not be served until it wakes.
 * An IPv6 socket is dual-stack (Linux's default): it reaches an IPv4 peer by its mapped address.
 *
 * ICMP errors: a socket that is not connected hears of them only with IP_RECVERR (ip(7)), which queues each
 * on the socket's error queue with the destination it was about; they are read there (`#readErrors`) and
 * told to the handler, so that a guest's datagram to a closed port draws a port unreachable, as through a
 * kernel's own stack, instead of silence.
 *
 * @module
 */
import type { HostUdpSocket, UdpHandlers } from "./host.ts";
import { errorQueue } from "./error_queue.ts";
import { EAGAIN, errno, libc } from "./libc.ts";
import { watchReadable } from "./epoll_loop.ts";
import { errnoName } from "./errno_names.ts";
import { ipv6Equal, ipv6ToString, parseIpv6Address } from "../wire/ipv6.ts";
import { platform } from "../platform/current.ts";
import { parseIpv4Address } from "../wire/bytes.ts";

const AF_INET = 2, AF_INET6 = 10, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
const EINTR = 4;
const SOL_IP = 0, IP_TTL = 2, IP_RECVERR = 11, SOL_IPV6 = 41, IPV6_UNICAST_HOPS = 16, IPV6_RECVERR = 25;
const EPOLLIN = 0x1, EPOLLERR = 0x8;
/** Errors that arrive after a send (an ICMP message), not because of it: the error queue reports them. */
const ASYNC_ERRORS = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN"]);
/** Queued errors read per event: a storm of ICMP errors must not hold the loop. */
const ERRORS_PER_EVENT = 16;
/** Datagrams read per readable event: a flood on one socket must not hold the loop. */
const READS_PER_EVENT = 64;
/** Datagrams one recvmmsg takes (each slot holds the largest UDP payload). */
const BATCH = 8;
const SLOT_BYTES = 65536;
/** struct mmsghdr (x86-64, aarch64): msghdr (56 bytes) then msg_len; an iovec; a sockaddr_in6 rounded up. */
const MMSGHDR_BYTES = 64, IOVEC_BYTES = 16, NAME_BYTES = 32;
const MSG_LEN = 56, MSG_NAMELEN = 8;

/**
 * The thread's receive batch, made on first use: BATCH slots and the mmsghdr/iovec/sockaddr arrays that point
 * at them, all in one ArrayBuffer (its memory never moves, so the addresses written once stay true). One
 * recvmmsg takes what is queued, up to BATCH datagrams; a batch that comes back short means the queue is
 * empty — no trailing call that finds EAGAIN (one system call per datagram less for a lone reply: a DNS
 * answer, one round of a UDP exchange). A datagram is copied out of its slot for its handler, which may keep it.
 */
class ReceiveBatch {
  readonly data: Uint8Array;
  readonly names: Uint8Array;
  readonly namesView: DataView;
  readonly headers: Uint8Array;
  readonly #headersView: DataView;

  constructor() {
    const namesAt = BATCH * SLOT_BYTES,
      iovAt = namesAt + BATCH * NAME_BYTES,
      headersAt = iovAt + BATCH * IOVEC_BYTES;
    const all = new Uint8Array(new ArrayBuffer(headersAt + BATCH * MMSGHDR_BYTES));
    this.data = all.subarray(0, namesAt);
    this.names = all.subarray(namesAt, iovAt);
    this.namesView = new DataView(all.buffer, namesAt, BATCH * NAME_BYTES);
    this.headers = all.subarray(headersAt);
    this.#headersView = new DataView(all.buffer, headersAt, BATCH * MMSGHDR_BYTES);
    const base = platform.addressOf(all);
    const v = new DataView(all.buffer);
    for (let i = 0; i < BATCH; i++) {
      const iov = iovAt + i * IOVEC_BYTES, h = headersAt + i * MMSGHDR_BYTES;
      v.setBigUint64(iov, base + BigInt(i * SLOT_BYTES), true); // iov_base
      v.setBigUint64(iov + 8, BigInt(SLOT_BYTES), true); // iov_len
      v.setBigUint64(h, base + BigInt(namesAt + i * NAME_BYTES), true); // msg_name
      v.setBigUint64(h + 16, base + BigInt(iov), true); // msg_iov
      v.setBigUint64(h + 24, 1n, true); // msg_iovlen (msg_control, msg_controllen, msg_flags stay 0)
    }
  }

  /** Before each call: the kernel writes each sender's address length over msg_namelen. */
  prepare(): void {
    for (let i = 0; i < BATCH; i++) this.#headersView.setUint32(i * MMSGHDR_BYTES + MSG_NAMELEN, 28, true);
  }

  /** Bytes of datagram `i` of the last call. */
  length(i: number): number {
    return this.#headersView.getUint32(i * MMSGHDR_BYTES + MSG_LEN, true);
  }
}
let batch: ReceiveBatch | null = null;

const one = new Int32Array([1]);
const oneBytes = new Uint8Array(one.buffer);
/** An int for setsockopt, rewritten per call. */
const hops = new Int32Array(1);
const hopsBytes = new Uint8Array(hops.buffer);

/** Room for a sockaddr_in6 (28 bytes), for getsockname. */
const from = new Uint8Array(28);
const fromView = new DataView(from.buffer);
const fromLen = new Uint32Array(1);
const fromLenBytes = new Uint8Array(fromLen.buffer);
/** sockaddr_in for sendto, rewritten per datagram. */
const to4 = new Uint8Array(16);
const toView = new DataView(to4.buffer);
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
/** The address of the sockaddr_in6 at `at` in `names`, as text (cached for the last one). */
function text6Of(names: Uint8Array, at: number): string {
  if (lastFrom6Text === "" || !ipv6Equal(names, at + 8, lastFrom6, 0)) {
    lastFrom6.set(names.subarray(at + 8, at + 24));
    lastFrom6Text = ipv6ToString(names, at + 8);
  }
  return lastFrom6Text;
}

/** "a.b.c.d" → network-order u32, or -1. Cached for the last address (a flow talks to one peer). */
let lastText = "", lastAddr = -1;
function addressOf(text: string): number {
  if (text === lastText) return lastAddr;
  const a = parseIpv4Address(text === "localhost" ? "127.0.0.1" : text) ?? -1;
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
    // hear of ICMP errors though not connected (an IPv6 socket's IPv4 peers report through IP_RECVERR)
    libc().setsockopt(fd, SOL_IP, IP_RECVERR, oneBytes, 4);
    if (v6) libc().setsockopt(fd, SOL_IPV6, IPV6_RECVERR, oneBytes, 4);
    this.#unwatch = watchReadable(fd, (events) => this.#onEvents(events));
  }

  #onEvents(events: number): void {
    if (events & EPOLLERR) this.#readErrors();
    if (events & EPOLLIN) this.#readSome();
  }

  /**
   * Tells the handler of each error queued on the socket (at most ERRORS_PER_EVENT; level-triggered epoll
   * reports the rest), with the destination it was about. Reading the queue also clears the socket's pending
   * error, so that no later send or receive fails with it.
   * @returns how many were read
   */
  #readErrors(): number {
    const q = errorQueue();
    let read = 0;
    for (; read < ERRORS_PER_EVENT && !this.#closed; read++) {
      const e = q.next(this.#fd);
      if (e < 0) break;
      if (e === 0) continue;
      const v4 = q.namesView.getUint16(0, true) === AF_INET;
      this.handlers.onError(
        errnoName(e),
        v4 ? textOf(q.namesView.getUint32(4, false)) : text6Of(q.names, 0),
        q.namesView.getUint16(2, false),
        q.icmp ?? undefined,
      );
    }
    return read;
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
    let to: Uint8Array, toLength: number;
    if (this.#v6) {
      const a = address6Of(address);
      if (!a) return this.handlers.onError("EINVAL");
      to6View.setUint16(2, port, false);
      to6.set(a, 8);
      to = to6;
      toLength = 28;
    } else {
      const a = addressOf(address);
      if (a < 0) return this.handlers.onError("EINVAL");
      toView.setUint16(2, port, false);
      toView.setUint32(4, a, false);
      to = to4;
      toLength = 16;
    }
    // an earlier datagram's ICMP error, pending on the socket, fails the next call (the kernel hands it over
    // once): the error queue tells it, with its destination, and this datagram goes again
    for (let attempt = 0; attempt < 2; attempt++) {
      if (libc().sendto(this.#fd, data, data.length, MSG_DONTWAIT, to, toLength) >= 0) return;
      const e = errno();
      // a full send buffer drops the datagram, as UDP may
      if (e === EAGAIN || e === EINTR) return;
      const code = errnoName(e);
      if (!ASYNC_ERRORS.has(code) || attempt === 1) return this.handlers.onError(code);
    }
  }

  setHopLimit(n: number): void {
    if (this.#closed) return;
    hops[0] = n;
    // an IPv6 socket sends to IPv4 peers (mapped addresses) with its IPv4 TTL
    libc().setsockopt(this.#fd, SOL_IP, IP_TTL, hopsBytes, 4);
    if (this.#v6) libc().setsockopt(this.#fd, SOL_IPV6, IPV6_UNICAST_HOPS, hopsBytes, 4);
  }

  #readSome(): void {
    const L = libc();
    const b = batch ??= new ReceiveBatch();
    for (let read = 0; read < READS_PER_EVENT && !this.#closed;) {
      b.prepare();
      const n = L.recvmmsg(this.#fd, b.headers, BATCH, MSG_DONTWAIT, null);
      if (n < 0) {
        const e = errno();
        // a pending ICMP error: the error queue holds it with its destination
        if (e !== EAGAIN && e !== EINTR && this.#readErrors() === 0) this.handlers.onError(errnoName(e));
        return;
      }
      for (let i = 0; i < n && !this.#closed; i++) {
        const at = i * NAME_BYTES, slot = i * SLOT_BYTES;
        this.handlers.onMessage(
          b.data.slice(slot, slot + b.length(i)),
          this.#v6 ? text6Of(b.names, at) : textOf(b.namesView.getUint32(at + 4, false)),
          b.namesView.getUint16(at + 2, false),
        );
      }
      // a short batch emptied the queue (level-triggered epoll reports what comes later)
      if (n < BATCH) return;
      read += n;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unwatch();
    libc().close(this.#fd);
  }
}
