/**
 * Stream sockets on the relay's own loop (epoll_loop.ts), through FFI to libc (Linux): the relay's guest
 * streams and host TCP connections, read straight into our buffers — connected sockets, the nonblocking
 * connect, and listeners.
 *
 * @module
 */
import { after } from "../common/timers.ts";
import { EAGAIN, errno, libc } from "./libc.ts";
import { errnoName } from "./errno_names.ts";
import { errorQueue } from "./error_queue.ts";
import { parseIpv4Address } from "../wire/bytes.ts";
import { ipv6ToString, parseIpv6Address } from "../wire/ipv6.ts";
import {
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  epollLoop,
  EPOLLOUT,
  EPOLLRDHUP,
  fail,
  SocketError,
  type Watcher,
} from "./epoll_loop.ts";

const AF_UNIX = 1, AF_INET = 2, AF_INET6 = 10;
const SOCK_STREAM = 1, SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1, SO_REUSEADDR = 2, SO_ERROR = 4, SO_SNDBUF = 7, SO_LINGER = 13, SO_DOMAIN = 39;
const IPPROTO_TCP = 6, TCP_NODELAY = 1;
const SOL_IP = 0, IP_TTL = 2, IP_RECVERR = 11, SOL_IPV6 = 41, IPV6_UNICAST_HOPS = 16, IPV6_RECVERR = 25;
/** IP_TTL / IPV6_UNICAST_HOPS: the system's default (ip(7), ipv6(7)). */
const DEFAULT_HOPS = -1;
const SHUT_WR = 1;
const MSG_NOSIGNAL = 0x4000;
const EINTR = 4, EINPROGRESS = 115;
/** Pause after an accept failure such as EMFILE. */
const ACCEPT_RETRY_MS = 100;

const L = libc;

// ───────────────────────── addresses ─────────────────────────

/** The last host's sockaddr (a relay connects to the same few hosts again and again): only the port changes. */
let lastHost = "";
let lastSockaddr: Uint8Array = new Uint8Array(0);

/**
 * A sockaddr_in / sockaddr_in6 for `host:port`, valid until the next call (bind and connect copy it). The
 * address is parsed once per host in a row, not per connection (a regexp and two views, ~5 µs in a
 * profile of sequential connections).
 */
function sockaddrIn(host: string, port: number): Uint8Array {
  if (host !== lastHost) {
    lastSockaddr = parseSockaddr(host);
    lastHost = host;
  }
  lastSockaddr[2] = port >> 8;
  lastSockaddr[3] = port & 0xff;
  return lastSockaddr;
}

function parseSockaddr(host: string): Uint8Array {
  const v4 = parseIpv4Address(host === "localhost" ? "127.0.0.1" : host);
  if (v4 !== null) {
    const sa = new Uint8Array(16);
    const dv = new DataView(sa.buffer);
    dv.setUint16(0, AF_INET, true);
    dv.setUint32(4, v4, false);
    return sa;
  }
  const a = parseIpv6Address(host);
  if (!a) throw new SocketError("EINVAL", `Not an IP address: "${host}"`);
  const sa = new Uint8Array(28);
  new DataView(sa.buffer).setUint16(0, AF_INET6, true);
  sa.set(a, 8);
  return sa;
}

export function sockaddrUn(path: string): Uint8Array {
  const p = new TextEncoder().encode(path);
  if (p.length > 107) {
    throw new SocketError("ENAMETOOLONG", `UNIX socket path too long (${p.length} > 107 bytes)`);
  }
  const sa = new Uint8Array(110);
  new DataView(sa.buffer).setUint16(0, AF_UNIX, true);
  sa.set(p, 2);
  return sa;
}

/** Address and port of a sockaddr_in / sockaddr_in6. */
function formatSockaddr(sa: Uint8Array): { address: string; port: number } {
  const dv = new DataView(sa.buffer, sa.byteOffset);
  const family = dv.getUint16(0, true);
  if (family === AF_INET) {
    return { address: `${sa[4]}.${sa[5]}.${sa[6]}.${sa[7]}`, port: dv.getUint16(2, false) };
  }
  if (family === AF_INET6) return { address: ipv6ToString(sa, 8), port: dv.getUint16(2, false) };
  return { address: "unix", port: 0 };
}

/**
 * Scratch space of the calls that take a small buffer (socket options, names): one per thread, filled per
 * call. A fresh typed array per call would cost ~0.6 µs each: the FFI moves it out of V8's heap (a calloc
 * the GC frees later) before the call may have its address.
 */
const nameBuf = new Uint8Array(128);
const lengthBuf = new Uint32Array(1);
const optionBuf = new Int32Array(2);

function sockName(fd: number, peer: boolean): { address: string; port: number } {
  lengthBuf[0] = nameBuf.length;
  const r = peer ? L().getpeername(fd, nameBuf, lengthBuf) : L().getsockname(fd, nameBuf, lengthBuf);
  return r < 0 ? { address: "", port: 0 } : formatSockaddr(nameBuf);
}

function setInt(fd: number, level: number, opt: number, value: number): void {
  optionBuf[0] = value;
  L().setsockopt(fd, level, opt, optionBuf, 4);
}

/** An int socket option's value (-1 when the call fails). */
function getInt(fd: number, level: number, opt: number): number {
  optionBuf[0] = -1;
  lengthBuf[0] = 4;
  return L().getsockopt(fd, level, opt, optionBuf, lengthBuf) < 0 ? -1 : optionBuf[0];
}

// ───────────────────────── connected sockets ─────────────────────────

interface Waiter {
  buf: Uint8Array;
  resolve: (n: number | null) => void;
  reject: (e: Error) => void;
}

/**
 * A connected, nonblocking stream socket. `read` waits for the loop to report the socket readable and
 * then reads once (fairness: one read per socket per turn); `write` writes at once and waits only when
 * the socket's buffer is full. The shape of `Deno.Conn` (read/write/closeWrite/close), so the stream
 * transport and the host TCP code take either.
 */
export class EpollSocket implements Watcher {
  #fd: number;
  #token = 0;
  /** The events asked of the loop; NOT_WATCHED while out of its set. */
  #interest = NOT_WATCHED;
  #reader: Waiter | null = null;
  /** Reads on the loop's turn instead ({@linkcode watch}). */
  #onReadable: (() => void) | null = null;
  #writer: Waiter | null = null;
  #connecting: { resolve: () => void; reject: (e: Error) => void } | null = null;
  /** The IP version of a path probe's connect ({@linkcode connectTcp}'s `hops`), else 0. */
  #probe: 0 | 4 | 6 = 0;
  #closed = false;
  readonly remoteAddress: string;
  readonly remotePort: number;

  /**
   * @param events the first interest, or {@linkcode NOT_WATCHED}: the socket joins the loop's set with the
   * first interest someone has (one epoll_ctl instead of an add and a change)
   */
  constructor(fd: number, remote: { address: string; port: number } = { address: "", port: 0 }, events = 0) {
    this.#fd = fd;
    this.remoteAddress = remote.address;
    this.remotePort = remote.port;
    this.#want(events);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #want(events: number): void {
    if (this.#closed || events === this.#interest) return;
    if (this.#interest === NOT_WATCHED) this.#token = epollLoop().add(this.#fd, this, events);
    else epollLoop().modify(this.#fd, this.#token, events);
    this.#interest = events;
  }

  /** Adds `events` to the interest (joining the loop's set if out of it). */
  #wantAlso(events: number): void {
    this.#want((this.#interest === NOT_WATCHED ? 0 : this.#interest) | events);
  }

  onEvents(ev: number): void {
    if (this.#closed) return;
    const broken = (ev & (EPOLLERR | EPOLLHUP)) !== 0;
    if (this.#connecting && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
      const c = this.#connecting;
      this.#connecting = null;
      const err = getInt(this.#fd, SOL_SOCKET, SO_ERROR);
      if (err > 0) c.reject(connectFailure(this.#fd, err, this.#probe !== 0));
      else {
        this.#probeDone();
        c.resolve();
      }
    }
    // level-triggered: what nobody waits for is dropped from the interest set lazily, when it is
    // reported with no waiter (a read loop that reads again at once never pays for a change)
    let want = this.#interest;
    if (ev & (EPOLLIN | EPOLLRDHUP) || broken) {
      if (this.#reader) this.#doRead();
      else if (this.#onReadable) this.#onReadable();
      else want &= ~(EPOLLIN | EPOLLRDHUP);
      if (this.#closed) return;
    }
    if (ev & EPOLLOUT || broken) {
      if (this.#writer) this.#doWrite();
      else if (!this.#connecting) want &= ~EPOLLOUT;
    }
    if (this.#closed) return;
    if (broken && !this.#reader && !this.#writer && !this.#onReadable) {
      // ERR/HUP are reported whatever the mask: out of the set until someone reads or writes again
      epollLoop().remove(this.#fd, this.#token);
      this.#interest = NOT_WATCHED;
      return;
    }
    this.#want(want);
  }

  #doRead(): void {
    const w = this.#reader!;
    const n = L().recv(this.#fd, w.buf, w.buf.length, 0);
    if (n < 0) {
      const e = errno();
      if (e === EAGAIN || e === EINTR) return;
      this.#reader = null;
      w.reject(fail("recv", e));
      return;
    }
    this.#reader = null;
    w.resolve(n === 0 ? null : n);
  }

  #doWrite(): void {
    const w = this.#writer!;
    const n = L().send(this.#fd, w.buf, w.buf.length, MSG_NOSIGNAL);
    if (n < 0) {
      const e = errno();
      if (e === EAGAIN || e === EINTR) return;
      this.#writer = null;
      w.reject(fail("send", e));
      return;
    }
    this.#writer = null;
    w.resolve(n);
  }

  /**
   * Resolves once connected; rejects with the connect error (ECONNREFUSED …). On loopback the kernel runs
   * the whole handshake inside connect(): then this settles at once (one system call) instead of a loop
   * turn later.
   */
  waitConnected(): Promise<void> {
    // connected already: the peer's name is known (one call); otherwise SO_ERROR tells a failure from "under way"
    lengthBuf[0] = nameBuf.length;
    if (L().getpeername(this.#fd, nameBuf, lengthBuf) === 0) {
      this.#probeDone();
      return Promise.resolve();
    }
    const err = getInt(this.#fd, SOL_SOCKET, SO_ERROR);
    if (err > 0) return Promise.reject(connectFailure(this.#fd, err, this.#probe !== 0));
    return new Promise((resolve, reject) => {
      this.#connecting = { resolve, reject };
      this.#wantAlso(EPOLLOUT);
    });
  }

  /**
   * A path probe got through: later segments leave with the system's TTL, and the error queue (whose
   * entries would keep the socket reporting EPOLLERR) is emptied and closed.
   */
  #probeDone(): void {
    if (!this.#probe) return;
    probeOptions(this.#fd, this.#probe, DEFAULT_HOPS, 0);
    this.#probe = 0;
  }

  /** Marks the socket as a path probe of IP version `v` (set up by {@linkcode connectTcp}). */
  probing(v: 4 | 6): void {
    this.#probe = v;
  }

  /**
   * Calls `onReadable` on every loop turn in which the socket has bytes or has ended, until `watch(null)`
   * (it reads with {@linkcode readNow}; level-triggered: what it leaves is reported again next turn). It
   * runs once more, soon, when the socket is closed (or is called at once if it already was), to find the end
   * there.
   */
  watch(onReadable: (() => void) | null): void {
    if (this.#closed) {
      // closed while nobody watched (a batch was held): the watcher finds the end at once
      if (onReadable) queueMicrotask(onReadable);
      return;
    }
    this.#onReadable = onReadable;
    if (!onReadable) return;
    this.#wantAlso(EPOLLIN | EPOLLRDHUP);
  }

  /** Reads what is there into `p`: bytes read, 0 when nothing is yet, null at the end (or once closed). */
  readNow(p: Uint8Array): number | null {
    if (this.#closed) return null;
    const n = L().recv(this.#fd, p, p.length, 0);
    if (n > 0) return n;
    if (n === 0) return p.length === 0 ? 0 : null;
    const e = errno();
    if (e === EAGAIN || e === EINTR) return 0;
    throw fail("recv", e);
  }

  /** Reads into `p`: bytes read, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.resolve(null);
    if (this.#reader) return Promise.reject(new Error("read already pending"));
    return new Promise((resolve, reject) => {
      this.#reader = { buf: p, resolve, reject };
      this.#wantAlso(EPOLLIN | EPOLLRDHUP);
    });
  }

  /** Writes what the socket takes of `p` at once: bytes written, 0 when it is full; throws on errors. */
  writeNow(p: Uint8Array): number {
    if (this.#closed) throw new SocketError("EPIPE", "send on a closed socket");
    if (this.#writer) return 0; // a write waits for room: bytes must not overtake it
    const n = L().send(this.#fd, p, p.length, MSG_NOSIGNAL);
    if (n >= 0) return n;
    const e = errno();
    if (e === EAGAIN || e === EINTR) return 0;
    throw fail("send", e);
  }

  /** Writes some of `p` (at least one byte unless it fails); waits only while the socket is full. */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new SocketError("EPIPE", "send on a closed socket"));
    if (this.#writer) return Promise.reject(new Error("write already pending"));
    const n = L().send(this.#fd, p, p.length, MSG_NOSIGNAL);
    if (n >= 0) return Promise.resolve(n);
    const e = errno();
    if (e !== EAGAIN && e !== EINTR) return Promise.reject(fail("send", e));
    return this.writeWhenRoom(p);
  }

  /**
   * Writes some of `p` once the socket reports room (EPOLLOUT), without a send first: the caller's last send
   * took less than it was given, so the socket is full and a send at once would fail with EAGAIN — a fifth
   * of the sends toward a guest downloading at MTU 1500 were such second tries.
   */
  writeWhenRoom(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new SocketError("EPIPE", "send on a closed socket"));
    if (this.#writer) return Promise.reject(new Error("write already pending"));
    return new Promise((resolve, reject) => {
      this.#writer = { buf: p, resolve: (n) => resolve(n ?? 0), reject };
      this.#wantAlso(EPOLLOUT);
    });
  }

  /** Sends FIN; reading goes on (half-close). */
  closeWrite(): Promise<void> {
    if (!this.#closed && L().shutdown(this.#fd, SHUT_WR) < 0) return Promise.reject(fail("shutdown"));
    return Promise.resolve();
  }

  /**
   * Lets the kernel hold at least `bytes` toward the peer (SO_SNDBUF, capped by net.core.wmem_max; never
   * lowered). UNIX sockets only: on TCP a fixed SO_SNDBUF would switch off the kernel's autotuning.
   */
  reserveSendBuffer(bytes: number): void {
    if (this.#closed || getInt(this.#fd, SOL_SOCKET, SO_DOMAIN) !== AF_UNIX) return;
    // the kernel reports (and charges) twice what was asked: the other half is its bookkeeping (socket(7))
    if (getInt(this.#fd, SOL_SOCKET, SO_SNDBUF) < 2 * bytes) setInt(this.#fd, SOL_SOCKET, SO_SNDBUF, bytes);
  }

  setNoDelay(on = true): void {
    setInt(this.#fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
  }

  /** Closes with RST instead of FIN (SO_LINGER with a zero timeout). */
  reset(): void {
    if (this.#closed) return;
    // struct linger { l_onoff = 1, l_linger = 0 }
    optionBuf[0] = 1;
    optionBuf[1] = 0;
    L().setsockopt(this.#fd, SOL_SOCKET, SO_LINGER, optionBuf, 8);
    this.close();
  }

  close(): void {
    if (this.#closed) return;
    // our own descriptor (socket() or accept4(), never duplicated): close() takes it out of the set
    if (this.#interest !== NOT_WATCHED) epollLoop().remove(this.#fd, this.#token, true);
    this.#closed = true;
    L().close(this.#fd);
    const r = this.#reader, w = this.#writer, c = this.#connecting, watcher = this.#onReadable;
    this.#reader = this.#writer = null;
    this.#connecting = this.#onReadable = null;
    r?.resolve(null);
    // after the current task: the watcher may be the very code that is closing us
    if (watcher) queueMicrotask(watcher);
    w?.reject(new SocketError("EPIPE", "socket closed"));
    c?.reject(new SocketError("ECONNABORTED", "socket closed"));
  }
}

/** The interest of a socket outside the loop's epoll set. */
const NOT_WATCHED = -1;

/** A path probe's TTL / hop limit and whether the socket queues the ICMP errors it hears of. */
function probeOptions(fd: number, v: 4 | 6, hops: number, recvErr: 0 | 1): void {
  setInt(fd, v === 4 ? SOL_IP : SOL_IPV6, v === 4 ? IP_TTL : IPV6_UNICAST_HOPS, hops);
  setInt(fd, v === 4 ? SOL_IP : SOL_IPV6, v === 4 ? IP_RECVERR : IPV6_RECVERR, recvErr);
}

/** A connect failed with `err`; for a path probe, with the ICMP message behind it if the error queue holds one. */
function connectFailure(fd: number, err: number, probe: boolean): SocketError {
  if (!probe) return fail("connect", err);
  const q = errorQueue();
  return new SocketError(errnoName(err), "connect", q.next(fd) >= 0 && q.icmp ? q.icmp : undefined);
}

/**
 * Starts a nonblocking TCP connect; the socket is usable once `waitConnected()` resolves. `hops` > 0 makes
 * the connect a path probe (a guest's `traceroute -T`): its SYN leaves with that TTL / hop limit, and a
 * router's ICMP error that ends it comes with the failure ({@linkcode SocketError.icmp}).
 */
export function connectTcp(host: string, port: number, hops = 0): EpollSocket {
  const sa = sockaddrIn(host, port);
  const family = sa.length === 16 ? AF_INET : AF_INET6;
  const fd = L().socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw fail("socket");
  const v = family === AF_INET ? 4 : 6;
  if (hops > 0) probeOptions(fd, v, hops, 1);
  const r = L().connect(fd, sa, sa.length);
  const e = r < 0 ? errno() : 0;
  if (r < 0 && e !== EINPROGRESS) {
    L().close(fd);
    throw fail("connect", e);
  }
  setInt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  // joins the loop's set only when someone waits: a loopback connect has usually completed already
  const s = new EpollSocket(fd, { address: host, port }, NOT_WATCHED);
  if (hops > 0) s.probing(v);
  return s;
}

// ───────────────────────── listeners ─────────────────────────

/** A listening socket; `onAccept` gets each new connection (already nonblocking). */
export class EpollListener implements Watcher {
  #fd: number;
  #token: number;
  #closed = false;
  #resting = false;
  readonly address: string;
  readonly port: number;
  readonly #tcp: boolean;

  private constructor(fd: number, tcp: boolean, readonly onAccept: (s: EpollSocket) => void) {
    this.#fd = fd;
    this.#tcp = tcp;
    const name = tcp ? sockName(fd, false) : { address: "unix", port: 0 };
    this.address = name.address;
    this.port = name.port;
    this.#token = epollLoop().add(fd, this, EPOLLIN);
  }

  static tcp(host: string, port: number, onAccept: (s: EpollSocket) => void): EpollListener {
    const sa = sockaddrIn(host, port);
    const fd = L().socket(
      sa.length === 16 ? AF_INET : AF_INET6,
      SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
      0,
    );
    if (fd < 0) throw fail("socket");
    setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    return EpollListener.#bind(fd, sa, true, onAccept);
  }

  static unix(path: string, onAccept: (s: EpollSocket) => void): EpollListener {
    const sa = sockaddrUn(path);
    const fd = L().socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw fail("socket");
    return EpollListener.#bind(fd, sa, false, onAccept);
  }

  static #bind(fd: number, sa: Uint8Array, tcp: boolean, onAccept: (s: EpollSocket) => void): EpollListener {
    if (L().bind(fd, sa, sa.length) < 0 || L().listen(fd, 4096) < 0) {
      const err = fail("bind");
      L().close(fd);
      throw err;
    }
    return new EpollListener(fd, tcp, onAccept);
  }

  onEvents(_ev: number): void {
    // up to 64 per turn: a connection storm must not hold the loop
    for (let i = 0; i < 64 && !this.#closed; i++) {
      const fd = L().accept4(this.#fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const e = errno();
        if (e === EAGAIN || e === EINTR || e === 103 /* ECONNABORTED */) return;
        // EMFILE and the like: the socket stays readable (level-triggered), so stop watching it for a
        // moment instead of failing on every turn
        if (!this.#resting) {
          console.error(`slirp-relay: accept failed (${errnoName(e)}); retrying in 100 ms`);
        }
        this.#resting = true;
        epollLoop().modify(this.#fd, this.#token, 0);
        after(ACCEPT_RETRY_MS, () => {
          this.#resting = false;
          if (!this.#closed) epollLoop().modify(this.#fd, this.#token, EPOLLIN);
        });
        return;
      }
      if (this.#tcp) setInt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
      const s = new EpollSocket(fd, this.#tcp ? sockName(fd, true) : { address: "unix", port: 0 });
      this.onAccept(s);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    epollLoop().remove(this.#fd, this.#token, true);
    L().close(this.#fd);
  }
}
