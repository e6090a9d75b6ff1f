/**
 * UNIX datagram sockets on our epoll loop (through FFI): the host side of the datagram carrier. The
 * runtimes offer none without unstable flags (Deno's `unixpacket` datagrams) or at all (node:dgram).
 *
 * @module
 */
import type { HostDatagramSocket } from "./host.ts";
import { errno, libc } from "./libc.ts";
import { platform } from "../platform/current.ts";
import { sockaddrUn } from "./epoll.ts";
import { SocketError, watchReadable } from "./epoll_loop.ts";
import { errnoName } from "./errno_names.ts";

const AF_UNIX = 1, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40, MSG_TRUNC = 0x20;
const EINTR = 4;
/** sockaddr_un: a 2-byte family and up to 108 bytes of path. */
const SOCKADDR_UN = 110;

class UnixDatagramSocket implements HostDatagramSocket {
  #fd: number;
  #unwatch: (() => void) | null = null;
  #closed = false;
  #from = new Uint8Array(SOCKADDR_UN);
  #fromLen = new Uint32Array(1);
  #fromLenBytes = new Uint8Array(this.#fromLen.buffer);
  /** The last sender as raw bytes and as text: decoded only when it changes. */
  #lastFrom = new Uint8Array(SOCKADDR_UN);
  #lastFromLen = -1;
  #sender = "";
  /** The last destination's sockaddr, kept while it is the same path. */
  #toPath = "";
  #to: Uint8Array = new Uint8Array(0);

  constructor(readonly path: string, fd: number) {
    this.#fd = fd;
  }

  get sender(): string {
    return this.#sender;
  }

  receive(into: Uint8Array): number {
    if (this.#closed) return -1;
    this.#fromLen[0] = SOCKADDR_UN;
    const n = Number(
      libc().recvfrom(
        this.#fd,
        into,
        into.length,
        MSG_DONTWAIT | MSG_TRUNC,
        this.#from,
        this.#fromLenBytes,
      ),
    );
    if (n < 0) return -1; // EAGAIN, or an error a datagram socket has no use for
    this.#noteSender(this.#fromLen[0]);
    return n;
  }

  #noteSender(len: number): void {
    const f = this.#from;
    if (len === this.#lastFromLen) {
      let same = true;
      for (let i = 2; i < len; i++) {
        if (f[i] !== this.#lastFrom[i]) {
          same = false;
          break;
        }
      }
      if (same) return;
    }
    this.#lastFromLen = len;
    this.#lastFrom.set(f);
    // an unbound sender's address is the family alone; an abstract one starts with a zero byte
    if (len <= 2) this.#sender = "";
    else if (f[2] === 0) this.#sender = "@" + new TextDecoder().decode(f.subarray(3, len));
    else {
      const nul = f.subarray(2, len).indexOf(0);
      this.#sender = new TextDecoder().decode(f.subarray(2, nul < 0 ? len : 2 + nul));
    }
  }

  sendTo(data: Uint8Array, peer: string): string | null {
    if (this.#closed) return "EBADF";
    if (peer !== this.#toPath) {
      this.#to = peer.startsWith("@") ? abstractAddress(peer.slice(1)) : sockaddrUn(peer);
      this.#toPath = peer;
    }
    const toLen = peer.startsWith("@") ? 3 + new TextEncoder().encode(peer.slice(1)).length : SOCKADDR_UN;
    const n = libc().sendto(this.#fd, data, data.length, MSG_DONTWAIT, this.#to, toLen);
    if (n >= 0) return null;
    const e = errno();
    return e === EINTR ? "EAGAIN" : errnoName(e);
  }

  watch(onReadable: () => void): void {
    if (this.#closed || this.#unwatch) return;
    this.#unwatch = watchReadable(this.#fd, onReadable);
  }

  pause(): void {
    this.#unwatch?.();
    this.#unwatch = null;
  }

  close(): void {
    if (this.#closed) return;
    this.pause();
    this.#closed = true;
    libc().close(this.#fd);
    try {
      platform.removeFile(this.path);
    } catch { /* gone */ }
  }
}

function abstractAddress(name: string): Uint8Array {
  const sa = new Uint8Array(SOCKADDR_UN);
  new DataView(sa.buffer).setUint16(0, AF_UNIX, true);
  sa.set(new TextEncoder().encode(name).subarray(0, 107), 3);
  return sa;
}

/** Binds a UNIX datagram socket at `path` (a stale socket file from an earlier run is replaced). */
export function bindUnixDatagram(path: string): HostDatagramSocket {
  const L = libc();
  const sa = sockaddrUn(path);
  try {
    if (platform.lstat(path).isSocket) platform.removeFile(path);
  } catch { /* absent */ }
  const fd = L.socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SocketError(errnoName(errno()), "socket");
  if (L.bind(fd, sa, SOCKADDR_UN) < 0) {
    const code = errnoName(errno());
    L.close(fd);
    throw new SocketError(code, `Cannot bind a datagram socket at ${path}`);
  }
  return new UnixDatagramSocket(path, fd);
}
