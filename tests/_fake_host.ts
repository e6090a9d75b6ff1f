/**
 * A host whose TCP sockets the test drives by hand: the stack dials, the test decides when the dial
 * succeeds, what the host peer sends, when it closes or resets — no real socket, no wall clock, so a
 * scripted guest on the manual clock meets a deterministic peer. UDP and ICMP are not offered.
 */
import type {
  HostIcmpEcho,
  HostIcmpError,
  HostListener,
  HostNet,
  HostTcpSocket,
  HostUdpSocket,
  TcpHandlers,
  UdpHandlers,
} from "../src/host/host.ts";

/** One host TCP socket the stack opened, and the test's end of it. */
export class FakeTcpSocket implements HostTcpSocket {
  /** Bytes the stack wrote toward the host peer, joined. */
  written = new Uint8Array(0);
  ended = false;
  destroyed = false;
  resetSent = false;
  paused = false;
  bufferedAmount = 0;

  /**
   * @param hops the TTL the stack asked the dial's SYN to leave with (a path probe), or 0
   */
  constructor(
    readonly handlers: TcpHandlers,
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly hops = 0,
  ) {}

  // ── the stack's side (HostTcpSocket) ──
  write(data: Uint8Array): boolean {
    const w = new Uint8Array(this.written.length + data.length);
    w.set(this.written);
    w.set(data, this.written.length);
    this.written = w;
    return true;
  }
  end(): void {
    this.ended = true;
  }
  destroy(reset = false): void {
    this.destroyed = true;
    this.resetSent = reset;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }

  // ── the host peer's side (the test) ──
  /** The dial succeeded. */
  accept(): void {
    this.handlers.onConnect();
  }
  /** The host peer sends `data` (through the stack's zero-copy read path when it has one). */
  send(data: Uint8Array): void {
    const h = this.handlers;
    if (!h.readBuffer || !h.onRead) return h.onData(data);
    for (let off = 0; off < data.length;) {
      const into = h.readBuffer();
      const n = Math.min(into.length, data.length - off);
      into.set(data.subarray(off, off + n));
      h.onRead(n);
      off += n;
    }
  }
  /** The host peer sends FIN. */
  finish(): void {
    this.handlers.onEnd();
  }
  /**
   * The host peer resets the connection (or the dial is refused while connecting; `icmp`: the router's error
   * that ended a path probe's dial).
   */
  fail(code = "ECONNRESET", icmp?: HostIcmpError): void {
    this.handlers.onError(code, icmp);
  }
}

export class FakeHost implements HostNet {
  readonly sockets: FakeTcpSocket[] = [];

  constructor(readonly now: () => number) {}

  connectTcp(address: string, port: number, handlers: TcpHandlers, hops = 0): HostTcpSocket {
    const s = new FakeTcpSocket(handlers, address, port, hops);
    this.sockets.push(s);
    return s;
  }

  openUdp(_handlers: UdpHandlers): HostUdpSocket {
    throw new Error("FakeHost offers no UDP");
  }

  bindUdp(): Promise<HostUdpSocket & { port: number }> {
    return Promise.reject(new Error("FakeHost binds nothing"));
  }

  listenTcp(): Promise<HostListener> {
    return Promise.reject(new Error("FakeHost listens on nothing"));
  }

  icmpEcho(): HostIcmpEcho | null {
    return null;
  }

  systemResolvers(): string[] {
    return [];
  }
}
