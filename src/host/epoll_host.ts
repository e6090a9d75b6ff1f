/**
 * {@linkcode HostNet} whose TCP and UDP sockets run on our epoll loop ({@link ./epoll.ts}); the resolver
 * configuration comes from {@linkcode NodeHost}. See epoll_loop.ts for why the runtime's own sockets
 * are not used for the relay's busiest traffic.
 *
 * Reads go straight into the TCP connection's send queue (no buffer allocated per read); writes gather in
 * one buffer per socket, sent when the socket loop idles.
 *
 * @module
 */
import type { HostListener, HostTcpSocket, HostUdpSocket, TcpHandlers, UdpHandlers } from "./host.ts";
import { EpollUdpSocket } from "./epoll_udp.ts";
import { errCode, NodeHost } from "./node_host.ts";
import { connectTcp, EpollListener, type EpollSocket } from "./epoll.ts";
import { deferUntilIdle, deferUntilQuiet, type SocketError } from "./epoll_loop.ts";
import { BufferPool } from "../common/buffer_pool.ts";

/** Read buffer for handlers without a buffer of their own. */
const READ_BUFFER_BYTES = 16 * 1024;
/** Bytes queued toward the host above which write() says "slow down" (as node:net's highWaterMark). */
const WRITE_HIGH_WATER = 256 * 1024;
/**
 * Pending bytes that are sent without waiting for the loop to go idle. A send's fixed cost (the call, the
 * loopback delivery, the reader's wake-up) is paid once per this many bytes of a bulk upload: 128 KiB in
 * place of 32 KiB took sends per GB guest→host from 32,000 to 10,000 (strace -c).
 */
const FLUSH_NOW_BYTES = 128 * 1024;
/**
 * Write buffers above this are let go once the flow has been quiet a moment with nothing queued (the socket
 * loop's quiet time): a bulk flow's buffer grows to twice FLUSH_NOW_BYTES (its fill passes the threshold by up
 * to a segment) and is kept while the flow writes, not made again for each send; an idle flow keeps at most
 * this much.
 */
const WRITE_BUFFER_KEEP = 64 * 1024;
/** A write buffer's first size: a request or an answer of a chatty protocol. */
const WRITE_BUFFER_FIRST = 4096;
/**
 * Small write buffers of closed sockets, for the next connections on this thread: every short connection
 * would otherwise allocate one outside V8's heap and leave it to the GC.
 */
const writeBuffers = new BufferPool(512 * 1024, 16 * 1024);
const EMPTY = new Uint8Array(0);

/** What a host TCP socket needs of a connected stream (an EpollSocket). */
interface Conn {
  /** Calls `onReadable` on each loop turn in which the socket has bytes or has ended, until `watch(null)`. */
  watch(onReadable: (() => void) | null): void;
  /** Reads what is there: bytes read, 0 when nothing is yet, null at the end; throws on errors. */
  readNow(p: Uint8Array): number | null;
  /** Writes some of `p` at once: bytes written, 0 when the socket is full; throws on errors. */
  writeNow(p: Uint8Array): number;
  /** Writes some of `p` once the socket has room, for a caller whose last send found it full. */
  writeWhenRoom(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  reset?(): void;
}

/** {@linkcode HostTcpSocket} over a {@linkcode Conn}: read loop with pause/resume, write queue, half-close. */
class StreamTcpSocket implements HostTcpSocket {
  #conn: Conn | null = null;
  #h: TcpHandlers | null = null;
  #paused: boolean;
  #reading = false;
  #readBuf: Uint8Array | null = null;
  // bytes toward the peer: #pend[#sent, #fill), appended at #fill; a send that waits for room holds a view of
  // [#sent, #fill) then, which appends never touch (a grown buffer keeps the offsets, the old one the bytes)
  #pend: Uint8Array = EMPTY;
  #sent = 0;
  #fill = 0;
  /** A send waits for room in the socket. */
  #writing = false;
  #flushQueued = false;
  /** One function per socket, so the loop can tell a stream of writes from a lone one. */
  readonly #deferredFlush = () => {
    this.#flushQueued = false;
    this.#flush();
  };
  readonly #drained = () => {
    if (!this.#closed) this.#h?.onDrain();
  };
  /** A flush that waits for the rest of the peer's write (see `write`'s `more`). */
  #gatherQueued = false;
  readonly #gatheredFlush = () => {
    this.#gatherQueued = false;
    if (!this.#flushQueued) this.#flush();
  };
  /** Writes so far, and how many there were when a large buffer emptied (see `#releaseIfQuiet`). */
  #writes = 0;
  #writesWhenEmptied = 0;
  #releaseQueued = false;
  readonly #releaseIfQuiet = () => {
    this.#releaseQueued = false;
    if (
      this.#fill === 0 && this.#writes === this.#writesWhenEmptied && this.#pend.length > WRITE_BUFFER_KEEP
    ) {
      this.#pend = EMPTY;
    }
  };
  #aboveHighWater = false;
  #ending = false;
  #writeClosed = false;
  #eof = false;
  #closed = false;
  remoteAddress = "";
  remotePort = 0;

  constructor(paused: boolean) {
    this.#paused = paused;
  }

  /** Attaches the connection once connected or accepted. */
  attach(conn: Conn, remoteAddress: string, remotePort: number): void {
    this.#conn = conn;
    this.#dialing = null;
    this.remoteAddress = remoteAddress;
    this.remotePort = remotePort;
    if (this.#closed) return this.#release();
    if (this.#fill > this.#sent) this.#scheduleFlush();
    if (this.#ending) this.#maybeCloseWrite();
    this.#startReading();
  }

  bind(h: TcpHandlers): void {
    this.#h = h;
    this.#startReading();
  }

  get closed(): boolean {
    return this.#closed;
  }

  get bufferedAmount(): number {
    return this.#fill - this.#sent;
  }

  /** Bytes this socket holds for writes toward the peer (its buffer, queued or not). */
  get writeBufferBytes(): number {
    return this.#pend.length;
  }

  write(data: Uint8Array, more = false): boolean {
    if (this.#closed || this.#ending || data.length === 0) return !this.#aboveHighWater;
    // a copy: the caller's bytes are a view into a guest frame
    this.#writes++;
    const need = this.#fill + data.length;
    if (need > this.#pend.length) {
      const size = Math.max(need, 2 * this.#pend.length, WRITE_BUFFER_FIRST);
      const grown = size === WRITE_BUFFER_FIRST ? writeBuffers.take(size) : new Uint8Array(size);
      grown.set(this.#pend.subarray(0, this.#fill));
      this.#pend = grown;
    }
    this.#pend.set(data, this.#fill);
    this.#fill = need;
    if (this.#fill - this.#sent > WRITE_HIGH_WATER) this.#aboveHighWater = true;
    // the rest of the peer's write is coming: one send for all of it (a segment per send would cost a
    // loopback delivery, and a wake-up of the reader, per 1448 bytes)
    if (more && this.#fill - this.#sent < FLUSH_NOW_BYTES) this.#scheduleGatheredFlush();
    else this.#scheduleFlush();
    return !this.#aboveHighWater;
  }

  #scheduleGatheredFlush(): void {
    if (this.#writing || !this.#conn || this.#flushQueued || this.#gatherQueued) return;
    this.#gatherQueued = true;
    deferUntilQuiet(this.#gatheredFlush);
  }

  /**
   * Sends at once when a write's worth is waiting, else when the socket loop is next idle (or a few
   * turns on): segments that arrive one per frame leave in one send.
   */
  #scheduleFlush(): void {
    if (this.#writing || !this.#conn) return;
    if (this.#fill - this.#sent >= FLUSH_NOW_BYTES) {
      this.#flush();
      return;
    }
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    deferUntilIdle(this.#deferredFlush);
  }

  end(): void {
    if (this.#closed || this.#ending) return;
    this.#ending = true;
    if (this.#conn) this.#maybeCloseWrite();
  }

  destroy(reset = false): void {
    if (this.#closed) return;
    this.#closed = true;
    if (reset && this.#conn?.reset) {
      this.#conn.reset();
      this.#conn = null;
    }
    this.#release();
  }

  pause(): void {
    this.#paused = true;
    if (this.#reading) {
      this.#reading = false;
      this.#conn?.watch(null);
    }
  }

  resume(): void {
    this.#paused = false;
    this.#startReading();
  }

  /** The socket still dialling: closed with this one when destroyed before it connects. */
  #dialing: Conn | null = null;

  /** `socket` is being dialled for this one (see `#dialing`). */
  dialing(socket: Conn): void {
    this.#dialing = socket;
  }

  #release(): void {
    if (!this.#conn) this.#dialing?.close();
    this.#dialing = null;
    const pend = this.#pend;
    this.#pend = EMPTY;
    this.#fill = this.#sent = 0;
    try {
      this.#conn?.close();
    } catch { /* closed */ }
    // closed, and no send held a view of it: the next connection may have it (only the size it asks for)
    if (!this.#writing && pend.length === WRITE_BUFFER_FIRST) writeBuffers.give(pend);
  }

  #fail(e: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#release();
    this.#h?.onError(errCode(e));
    this.#h?.onClose();
  }

  /** Reads on the socket loop's turn (one read per turn, as every socket gets) while not paused. */
  #startReading(): void {
    if (this.#reading || this.#paused || this.#eof || this.#closed || !this.#conn || !this.#h) return;
    this.#reading = true;
    this.#conn.watch(this.#onReadable);
  }

  readonly #onReadable = (): void => {
    const conn = this.#conn, h = this.#h;
    if (!conn || !h || this.#closed || this.#paused) return;
    // into the handler's own buffer when it offers one (the TCP send queue), else into ours
    const direct = h.readBuffer !== undefined && h.onRead !== undefined;
    const buf = direct ? h.readBuffer!() : (this.#readBuf ??= new Uint8Array(READ_BUFFER_BYTES));
    let n: number | null;
    try {
      n = conn.readNow(buf);
    } catch (e) {
      this.#reading = false;
      conn.watch(null);
      return this.#fail(e);
    }
    if (n === 0) return;
    if (n === null) {
      this.#reading = false;
      conn.watch(null);
      if (this.#closed) return;
      this.#eof = true;
      h.onEnd();
      this.#maybeFinish();
      return;
    }
    try {
      if (direct) h.onRead!(n);
      else h.onData(buf.subarray(0, n));
    } catch (e) {
      this.#fail(e);
    }
  };

  /**
   * Sends what is queued, at once while the socket takes it; when it is full, one send waits for room and
   * the rest follows from there. One send takes what fits: less than it was given means the socket is full
   * (`full`, for the send that waited), and another at once would only fail with EAGAIN.
   */
  #flush(full = false): void {
    if (this.#writing || !this.#conn || this.#closed) return;
    const conn = this.#conn;
    try {
      if (!full && this.#sent < this.#fill) {
        this.#sent += conn.writeNow(this.#pend.subarray(this.#sent, this.#fill));
      }
    } catch (e) {
      // reported after the current task: the writer may be inside the handler that would be told
      this.#writing = true;
      queueMicrotask(() => this.#fail(e));
      return;
    }
    if (this.#sent < this.#fill) {
      this.#writing = true;
      const asked = this.#fill - this.#sent;
      conn.writeWhenRoom(this.#pend.subarray(this.#sent, this.#fill)).then((n) => {
        this.#writing = false;
        if (this.#closed) return;
        this.#sent += n;
        this.#flush(n < asked);
      }, (e) => {
        this.#writing = false;
        this.#fail(e);
      });
      this.#wrote();
      return;
    }
    this.#wrote();
    if (this.#ending) this.#maybeCloseWrite();
  }

  /** After a send: the buffer starts over once empty, and a writer held above the high-water mark goes on. */
  #wrote(): void {
    if (this.#sent === this.#fill) {
      this.#sent = this.#fill = 0;
      // let a large buffer go only if the flow stays quiet: mid-stream it empties after every send
      if (this.#pend.length > WRITE_BUFFER_KEEP && !this.#releaseQueued) {
        this.#releaseQueued = true;
        this.#writesWhenEmptied = this.#writes;
        deferUntilQuiet(this.#releaseIfQuiet);
      }
    } else if (!this.#writing && this.#sent > 0) {
      this.#pend.copyWithin(0, this.#sent, this.#fill);
      this.#fill -= this.#sent;
      this.#sent = 0;
    }
    if (this.#aboveHighWater && this.#fill - this.#sent <= WRITE_HIGH_WATER / 2) {
      this.#aboveHighWater = false;
      // after the current task: a flush may run inside the handler's own write() (TCP mid-segment, whose
      // window update would carry an acknowledgment not yet advanced)
      queueMicrotask(this.#drained);
    }
  }

  /** FIN toward the peer once everything queued is written. */
  #maybeCloseWrite(): void {
    if (this.#writeClosed || this.#closed || this.#writing || this.#fill > this.#sent || !this.#conn) return;
    this.#writeClosed = true;
    this.#conn.closeWrite().then(() => this.#maybeFinish(), (e) => this.#fail(e));
  }

  /** Both directions done: the socket is closed. */
  #maybeFinish(): void {
    if (!this.#eof || !this.#writeClosed || this.#closed) return;
    this.#closed = true;
    this.#release();
    this.#h?.onClose();
  }
}

export class EpollHost extends NodeHost {
  override openUdp(handlers: UdpHandlers, family: 4 | 6 = 4): HostUdpSocket {
    return EpollUdpSocket.open(handlers, undefined, 0, family);
  }

  override bindUdp(
    address: string,
    port: number,
    handlers: UdpHandlers,
  ): Promise<HostUdpSocket & { port: number }> {
    try {
      return Promise.resolve(EpollUdpSocket.open(handlers, address, port));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  override connectTcp(address: string, port: number, h: TcpHandlers, hops?: number): HostTcpSocket {
    const s = new StreamTcpSocket(false);
    s.bind(h);
    let es: EpollSocket;
    try {
      es = connectTcp(address, port, hops);
    } catch (e) {
      queueMicrotask(() => {
        h.onError(errCode(e), (e as SocketError).icmp);
        h.onClose();
      });
      return s;
    }
    es.waitConnected().then(() => {
      s.attach(es, address, port);
      if (!s.closed) h.onConnect();
    }, (e) => {
      es.close();
      if (s.closed) return;
      s.destroy();
      h.onError(errCode(e), (e as SocketError).icmp);
      h.onClose();
    });
    // destroyed before connecting: the socket goes with it (a field, not a closure assigned to a property:
    // V8 allocates those in the old generation, and through its context it kept each connection there)
    s.dialing(es);
    return s;
  }

  override listenTcp(
    address: string,
    port: number,
    accept: (socket: HostTcpSocket, bind: (h: TcpHandlers) => void) => void,
  ): Promise<HostListener> {
    let listener: EpollListener;
    try {
      listener = EpollListener.tcp(address, port, (es) => {
        // accepted sockets start paused, as node's pauseOnConnect: the guest's handshake comes first
        const s = new StreamTcpSocket(true);
        s.attach(es, es.remoteAddress, es.remotePort);
        accept(s, (h) => s.bind(h));
      });
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.resolve({ port: listener.port, close: () => listener.close() });
  }
}
