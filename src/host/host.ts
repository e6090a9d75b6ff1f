/**
 * The host interface: everything the stack needs from the runtime's sockets, and nothing more.
 * `src/stack/` reaches the outside world only through these types; `node_host.ts` implements them with
 * `node:` modules (which both Deno and Bun provide).
 *
 * Addresses cross this boundary as dotted strings (what socket APIs take); the stack converts once per
 * flow, not per packet.
 *
 * @module
 */

/** A connected byte stream: a guest's stream socket under a transport (Deno.Conn has this shape). */
export interface ByteStream {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
  /**
   * Optional, with {@linkcode readNow}: reading on the socket loop's turn instead of a promise per read.
   * `onReadable` runs on each turn in which the stream has bytes or has ended (and once when it is closed),
   * until `watch(null)`.
   */
  watch?(onReadable: (() => void) | null): void;
  /** What can be read at once: bytes read, 0 when nothing is there yet, null at the end; throws on errors. */
  readNow?(p: Uint8Array): number | null;
  /** Optional: writes what the stream takes of `p` at once — bytes written, 0 when it is full; throws on errors. */
  writeNow?(p: Uint8Array): number;
  /**
   * Optional, with {@linkcode writeNow}: writes some of `p` once the stream has room — for a caller whose last
   * send took less than it was given (the stream is full: a second send at once would only fail).
   */
  writeWhenRoom?(p: Uint8Array): Promise<number>;
  /** Optional: lets the kernel hold at least `bytes` toward the peer (where that is cheap to ask for). */
  reserveSendBuffer?(bytes: number): void;
}

/** Receives datagrams for one UDP flow. */
export interface UdpHandlers {
  /** `data` is owned by the callee (it may keep it). */
  onMessage(data: Uint8Array, address: string, port: number): void;
  /**
   * A send or socket error, e.g. "EHOSTUNREACH". An ICMP error that came back for an earlier datagram names
   * that datagram's destination (`address`, `port`, as `onMessage` would) and, where the host tells it, the
   * ICMP message itself (`icmp`: a router's time exceeded is EHOSTUNREACH too). The socket stays open
   * unless closed by the owner.
   */
  onError(code: string, address?: string, port?: number, icmp?: HostIcmpError): void;
}

/** An ICMP or ICMPv6 error the host received about a datagram we sent (Linux: IP_RECVERR, ip(7)). */
export interface HostIcmpError {
  type: number;
  code: number;
  /** The router or host that sent it. */
  offender: string;
}

/** A host UDP socket. */
export interface HostUdpSocket {
  /** Sends a datagram; the bytes are copied before this returns, so the caller may reuse its buffer. */
  sendTo(data: Uint8Array, address: string, port: number): void;
  /**
   * The IPv4 TTL / IPv6 hop limit of the datagrams sent after this (a guest's traceroute probes leave with
   * theirs, less the gateway's hop). Hosts without it send with the system's default.
   */
  setHopLimit?(hops: number): void;
  close(): void;
}

/**
 * Receives an ICMP echo reply for an outstanding request, or an ICMP error about it (then `offender` is the
 * router or host that sent the error, and `data` is empty), or null on timeout.
 */
export type IcmpEchoCallback = (
  reply: { type: number; code: number; data: Uint8Array; offender?: string } | null,
) => void;

/** Unprivileged ICMP echo (Linux `socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`), shared by all tenants. */
export interface HostIcmpEcho {
  /**
   * Sends an echo request to `address` carrying `data`, with `hopLimit` as its TTL / hop limit when given;
   * `done` gets the reply's type, code and data, or null on timeout. Returns false when the request could
   * not be sent.
   */
  echo(
    address: string,
    data: Uint8Array,
    timeoutMs: number,
    done: IcmpEchoCallback,
    hopLimit?: number,
  ): boolean;
}

/** Callbacks for one host TCP connection. */
export interface TcpHandlers {
  /** Connected (for connectTcp). */
  onConnect(): void;
  /** Bytes from the host peer; valid only during the call (the callee copies what it keeps). */
  onData(data: Uint8Array): void;
  /**
   * Optional zero-copy receive: where the next read should land (the callee's own buffer), and how many
   * bytes it got. A host that supports it calls these instead of onData.
   */
  readBuffer?(): Uint8Array;
  onRead?(n: number): void;
  /** The peer sent FIN. */
  onEnd(): void;
  /**
   * The socket failed ("ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", …) and is closed; `icmp`: the router's or
   * host's ICMP message that ended a path probe's connect.
   */
  onError(code: string, icmp?: HostIcmpError): void;
  /** The socket is fully closed. */
  onClose(): void;
  /** The write queue drained below its high-water mark. */
  onDrain(): void;
}

/** A host TCP connection. */
export interface HostTcpSocket {
  /**
   * Queues bytes (copied); returns false when the write queue is above its high-water mark. With `more`, the
   * peer's data goes on (a TCP segment without PSH, RFC 9293 §3.9.1.2): the host may hold the bytes briefly
   * to send them with what follows; without it they leave as soon as the socket loop is idle.
   */
  write(data: Uint8Array, more?: boolean): boolean;
  /** Bytes queued but not yet written to the kernel. */
  readonly bufferedAmount: number;
  /** Sends FIN after queued data. */
  end(): void;
  /** Closes at once; with `reset`, sends RST instead of FIN. */
  destroy(reset?: boolean): void;
  /** Stops/starts delivering onData (backpressure toward the host peer). */
  pause(): void;
  resume(): void;
  readonly remoteAddress: string;
  readonly remotePort: number;
}

/** A listening host socket (port forwards). */
export interface HostListener {
  readonly port: number;
  close(): void;
}

/** A file the stack reads from the host (a TFTP download). */
export interface HostFile {
  readonly size: number;
  /** Reads into `buf` from byte `position`; returns the bytes read (0 at the end). */
  readAt(buf: Uint8Array, position: number): number;
  close(): void;
}

/** One host directory the stack may read files from and nothing else (the TFTP root). */
export interface HostFiles {
  /** The file `name` names inside the directory, or why there is none to give. */
  open(name: string): HostFile | "missing" | "refused";
}

/** The sockets of the runtime. */
export interface HostNet {
  /** Monotonic milliseconds. */
  now(): number;
  /**
   * An unbound-then-ephemeral UDP socket, IPv4 or IPv6 (`family` 6: it also reaches IPv4 peers by their
   * IPv4-mapped addresses, and names them so).
   */
  openUdp(handlers: UdpHandlers, family?: 4 | 6): HostUdpSocket;
  /** Binds a UDP socket on `address:port` (port forwards). Throws when the port cannot be bound. */
  bindUdp(address: string, port: number, handlers: UdpHandlers): Promise<HostUdpSocket & { port: number }>;
  /**
   * Connects a TCP socket. `hops` > 0 makes it a path probe (a guest's TCP traceroute): its SYN leaves with
   * that TTL / hop limit and a router's ICMP error that ends it reaches `onError`. Hosts without it connect
   * with the system's TTL.
   */
  connectTcp(address: string, port: number, handlers: TcpHandlers, hops?: number): HostTcpSocket;
  /** Listens for TCP; each accepted socket gets handlers from `accept`. */
  listenTcp(
    address: string,
    port: number,
    accept: (socket: HostTcpSocket, bind: (h: TcpHandlers) => void) => void,
  ): Promise<HostListener>;
  /** ICMP echo, or null where the host forbids unprivileged ICMP sockets. */
  icmpEcho(): HostIcmpEcho | null;
  /** Nameservers from the host's resolver configuration ("ip:port"). */
  systemResolvers(): string[];
}

/**
 * A UNIX datagram socket bound to a path: guests that send one Ethernet frame per datagram (QEMU
 * `-netdev dgram`, vfkit, libkrun). The carrier (transport/datagram.ts) reads in batches into its own
 * buffer, so nothing is copied here.
 */
export interface HostDatagramSocket {
  /** The path it is bound to. */
  readonly path: string;
  /**
   * Reads one waiting datagram into `into`: its full length (more than `into.length` when it was cut
   * short), or -1 when none waits. {@linkcode sender} then names who sent it.
   */
  receive(into: Uint8Array): number;
  /** The socket path of the last datagram's sender ("" when its socket is unbound: no reply can reach it). */
  readonly sender: string;
  /** Sends `data` to the socket at `peer`: null, or the errno name ("EAGAIN": dropped; "ECONNREFUSED"/"ENOENT": gone). */
  sendTo(data: Uint8Array, peer: string): string | null;
  /** Calls `onReadable` while datagrams wait, until paused. */
  watch(onReadable: () => void): void;
  pause(): void;
  close(): void;
}
