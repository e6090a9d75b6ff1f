/**
 * The containment boundary: every call into a tenant's code from outside — a host socket's callbacks, a
 * timer, an ICMP reply, a frame — runs inside a try/catch whose owner absorbs the throw. A flow that
 * throws is reset (its owner is the flow); anything else faults the tenant, which closes its guest link
 * and starts a fresh stack. Either way the process and every other tenant go on.
 *
 * {@linkcode ContainedHost} is the wrapper that puts the boundary around the host interface: it implements
 * {@linkcode HostNet} by handing each handler object to the real host inside a wrapper whose methods
 * catch. One wrapper per socket, made when the socket opens: nothing is allocated per callback.
 *
 * @module
 */
import type {
  HostIcmpEcho,
  HostIcmpError,
  HostListener,
  HostNet,
  HostTcpSocket,
  HostUdpSocket,
  IcmpEchoCallback,
  TcpHandlers,
  UdpHandlers,
} from "../host/host.ts";

/** Whoever answers for a throw from code it owns: a flow resets itself, a stack faults its tenant. */
export interface FaultOwner {
  /** Absorbs `err`, thrown in `where` (a short label such as "tcp.onRead"). Must not throw. */
  onFault(err: unknown, where: string): void;
}

/** Handlers that answer for their own throws (a TCP connection resets itself). */
function ownerOf(h: object, fallback: FaultOwner): FaultOwner {
  return typeof (h as Partial<FaultOwner>).onFault === "function" ? h as FaultOwner : fallback;
}

/** {@linkcode TcpHandlers} whose every call runs inside the boundary of `owner`. */
class ContainedTcpHandlers implements TcpHandlers {
  constructor(readonly inner: TcpHandlers, readonly owner: FaultOwner) {}

  onConnect(): void {
    try {
      this.inner.onConnect();
    } catch (e) {
      this.owner.onFault(e, "tcp.onConnect");
    }
  }

  onData(data: Uint8Array): void {
    try {
      this.inner.onData(data);
    } catch (e) {
      this.owner.onFault(e, "tcp.onData");
    }
  }

  onEnd(): void {
    try {
      this.inner.onEnd();
    } catch (e) {
      this.owner.onFault(e, "tcp.onEnd");
    }
  }

  onError(code: string, icmp?: HostIcmpError): void {
    try {
      this.inner.onError(code, icmp);
    } catch (e) {
      this.owner.onFault(e, "tcp.onError");
    }
  }

  onClose(): void {
    try {
      this.inner.onClose();
    } catch (e) {
      this.owner.onFault(e, "tcp.onClose");
    }
  }

  onDrain(): void {
    try {
      this.inner.onDrain();
    } catch (e) {
      this.owner.onFault(e, "tcp.onDrain");
    }
  }
}

/**
 * The same, for handlers that offer the zero-copy receive (the host asks by presence). Methods, not
 * closures assigned in the constructor: V8 allocates a function literal assigned to a property in the
 * old generation, and through its context it held every connection past the young one (bench/RESULTS.md,
 * "A closure assigned to a property").
 */
class ContainedZeroCopyTcpHandlers extends ContainedTcpHandlers {
  readBuffer(): Uint8Array {
    try {
      return this.inner.readBuffer!();
    } catch (e) {
      this.owner.onFault(e, "tcp.readBuffer");
      return new Uint8Array(0);
    }
  }

  onRead(n: number): void {
    try {
      this.inner.onRead!(n);
    } catch (e) {
      this.owner.onFault(e, "tcp.onRead");
    }
  }
}

/** `h` inside the boundary of its own fault owner when it is one, else of `fallback`. */
function containTcpHandlers(h: TcpHandlers, fallback: FaultOwner): TcpHandlers {
  const owner = ownerOf(h, fallback);
  return h.readBuffer && h.onRead
    ? new ContainedZeroCopyTcpHandlers(h, owner)
    : new ContainedTcpHandlers(h, owner);
}

/** {@linkcode UdpHandlers} whose calls run inside the boundary of `owner`. */
class ContainedUdpHandlers implements UdpHandlers {
  constructor(readonly inner: UdpHandlers, readonly owner: FaultOwner) {}

  onMessage(data: Uint8Array, address: string, port: number): void {
    try {
      this.inner.onMessage(data, address, port);
    } catch (e) {
      this.owner.onFault(e, "udp.onMessage");
    }
  }

  onError(code: string, address?: string, port?: number, icmp?: HostIcmpError): void {
    try {
      this.inner.onError(code, address, port, icmp);
    } catch (e) {
      this.owner.onFault(e, "udp.onError");
    }
  }
}

/** ICMP echo whose replies are delivered inside the boundary. */
class ContainedIcmpEcho implements HostIcmpEcho {
  constructor(readonly inner: HostIcmpEcho, readonly owner: FaultOwner) {}

  echo(
    address: string,
    data: Uint8Array,
    timeoutMs: number,
    done: IcmpEchoCallback,
    hopLimit?: number,
  ): boolean {
    return this.inner.echo(address, data, timeoutMs, (reply) => {
      try {
        done(reply);
      } catch (e) {
        this.owner.onFault(e, "icmp.reply");
      }
    }, hopLimit);
  }
}

/**
 * A {@linkcode HostNet} that runs every callback of the sockets it opens inside a fault boundary: the
 * handler object itself when it is a {@linkcode FaultOwner} (a TCP connection), else `owner`.
 */
export class ContainedHost implements HostNet {
  #icmp: ContainedIcmpEcho | null = null;

  constructor(readonly inner: HostNet, readonly owner: FaultOwner) {}

  now(): number {
    return this.inner.now();
  }

  openUdp(handlers: UdpHandlers, family: 4 | 6 = 4): HostUdpSocket {
    return this.inner.openUdp(new ContainedUdpHandlers(handlers, ownerOf(handlers, this.owner)), family);
  }

  bindUdp(address: string, port: number, handlers: UdpHandlers): Promise<HostUdpSocket & { port: number }> {
    return this.inner.bindUdp(
      address,
      port,
      new ContainedUdpHandlers(handlers, ownerOf(handlers, this.owner)),
    );
  }

  connectTcp(address: string, port: number, handlers: TcpHandlers, hops?: number): HostTcpSocket {
    return this.inner.connectTcp(
      address,
      port,
      containTcpHandlers(handlers, this.owner),
      hops,
    );
  }

  listenTcp(
    address: string,
    port: number,
    accept: (socket: HostTcpSocket, bind: (h: TcpHandlers) => void) => void,
  ): Promise<HostListener> {
    return this.inner.listenTcp(address, port, (socket, bind) => {
      try {
        accept(socket, (h) => bind(containTcpHandlers(h, this.owner)));
      } catch (e) {
        this.owner.onFault(e, "tcp.accept");
        socket.destroy(true);
      }
    });
  }

  /** `h` inside the boundary: for handlers bound to a socket this host did not open (a port forward's). */
  containTcp(h: TcpHandlers): TcpHandlers {
    return containTcpHandlers(h, this.owner);
  }

  icmpEcho(): HostIcmpEcho | null {
    const inner = this.inner.icmpEcho();
    if (!inner) return null;
    if (this.#icmp?.inner !== inner) this.#icmp = new ContainedIcmpEcho(inner, this.owner);
    return this.#icmp;
  }

  systemResolvers(): string[] {
    return this.inner.systemResolvers();
  }
}

/**
 * Runs `fn` inside `owner`'s boundary: for the few entry points that are not host callbacks or timers
 * (a frame from the guest, a transport's drain signal).
 */
export function contained(owner: FaultOwner, where: string, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    owner.onFault(e, where);
  }
}
