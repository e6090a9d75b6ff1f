/**
 * A simulated guest built from the project's wire codecs: a DHCP client, ARP replies, ICMP echo to the
 * gateway, and one minimal TCP receiver at a time (in-order, one cumulative ACK per burst, 64 KiB window).
 * It speaks the stream protocol (u32 BE length + frame) or gvforwarder's (`POST /connect`, then u16 LE)
 * over a UNIX or TCP socket, or any other carrier a test gives it as a {@linkcode FrameChannel}. Shared by
 * the benchmarks that drive many tenants (bench/tenants.ts, bench/hostile.ts) and by tests.
 */
import {
  emitEthernet,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  newEthernetHeader,
  parseEthernet,
} from "../src/wire/ethernet.ts";
import { ARP_OP_REPLY, ARP_OP_REQUEST, emitArp, parseArp } from "../src/wire/arp.ts";
import {
  emitIpv4,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  newIpv4Header,
  parseIpv4,
} from "../src/wire/ipv4.ts";
import { newUdpHeader, parseUdp } from "../src/wire/udp.ts";
import {
  emitTcp,
  newTcpHeader,
  parseTcp,
  TCP_ACK_FLAG,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  tcpHeaderLength,
} from "../src/wire/tcp.ts";
import { emitIcmpV4, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, parseIcmpV4 } from "../src/wire/icmpv4.ts";
import { dhcpMessageType, optIpv4List, parseDhcp } from "../src/wire/dhcp.ts";
import { isWireError } from "../src/wire/bytes.ts";
import { pseudoHeaderSumV4 } from "../src/wire/checksum.ts";
import { FrameWriter, readFrames } from "../src/transport/stream.ts";
import { U16_LE, U32_BE } from "../src/transport/framing.ts";
import { dhcpFrame } from "./_frames.ts";

const GW = 0x0a000202;
const GW_MAC = 0x52550a000202;

/** Where a simulated guest's frames go: a carrier's guest side. */
export interface FrameChannel {
  /** Queues a copy of `frame`; false when it was dropped. */
  send(frame: Uint8Array): boolean;
  /** Bytes queued, not yet written. */
  readonly backlog: number;
  close(): void;
}

/** Where a stream-socket guest connects: a UNIX socket path or a TCP `{ hostname, port }`. */
export type StreamAddress = string | { hostname: string; port: number };

/** One simulated guest: DHCP client and a single TCP connection, over a stream socket or a given channel. */
export class SimGuest {
  mac: number;
  ip = 0;
  channel!: FrameChannel;
  #tx = new Uint8Array(65536 + 64);
  /**
   * Leave TCP checksums unfinished, as a NIC with checksum offload is handed them (libkrun): the field
   * holds the folded pseudo-header sum, not the checksum.
   */
  partialChecksums = false;
  #eth = newEthernetHeader();
  #ip = newIpv4Header();
  #udp = newUdpHeader();
  #tcp = newTcpHeader();
  #out = newTcpHeader();
  leased!: Promise<void>;
  #onLease!: () => void;
  // TCP
  sport = 0;
  dport = 0;
  sndNxt = 1000;
  rcvNxt = 0;
  #onEstablished: () => void = () => {};
  received = 0;
  /** Resets received on the current connection's port. */
  resets = 0;
  /** The in-order payload received, when a test collects it (set to `[]`). */
  receivedBytes: Uint8Array[] | null = null;
  #onData: ((n: number) => void) | null = null;

  constructor(readonly index: number) {
    this.mac = 0x020000000000 + index + 1;
    this.leased = new Promise((r) => (this.#onLease = r));
  }

  /**
   * Connects over a stream socket: QEMU's framing, or gvforwarder's (the request gvisor-tap-vsock's agent
   * writes with Go's `http.Request.Write`, then u16 LE lengths).
   */
  async connect(to: StreamAddress, carrier: "stream" | "gvforwarder" = "stream"): Promise<void> {
    const conn = typeof to === "string"
      ? await Deno.connect({ transport: "unix", path: to })
      : await Deno.connect({ hostname: to.hostname, port: to.port });
    const prefix = carrier === "gvforwarder" ? U16_LE : U32_BE;
    if (carrier === "gvforwarder") {
      const request = "POST /connect HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\n" +
        "Content-Length: 0\r\n\r\n";
      await conn.write(new TextEncoder().encode(request));
    }
    const writer = new FrameWriter(conn, 1 << 20, () => {}, { prefix });
    this.attach({
      send: (f) => writer.push(f),
      get backlog() {
        return writer.backlog;
      },
      close: () => conn.close(),
    });
    readFrames(conn, 70000, (b, off, len) => this.receive(b.subarray(off, off + len)), prefix).catch((e) => {
      if (!this.#closing) console.error(`simulated guest ${this.index}: read loop failed: ${e?.stack ?? e}`);
    });
  }

  /** Sends this guest's frames into `channel`; frames from the carrier come in through {@linkcode receive}. */
  attach(channel: FrameChannel): void {
    this.channel = channel;
  }

  framesSent = 0;
  #send(len: number): void {
    this.framesSent++;
    if (!this.channel.send(this.#tx.subarray(0, Math.max(len, 60)))) {
      console.error(`guest ${this.index}: writer full`);
    }
  }

  dhcp(type: number, requested = 0): void {
    const opts: [number, Uint8Array][] = requested
      ? [[50, optIpv4List([requested])], [54, optIpv4List([GW])]]
      : [];
    this.framesSent++;
    this.channel.send(dhcpFrame(this.mac, type, opts, 0, this.index));
  }

  #sendTcp(flags: number, payload: Uint8Array | null): void {
    const o = this.#out;
    Object.assign(o, {
      srcPort: this.sport,
      dstPort: this.dport,
      seq: this.sndNxt,
      ack: this.rcvNxt,
      flags,
      window: 65535,
    });
    o.mss = flags & TCP_SYN ? 1460 : -1;
    const hl = tcpHeaderLength(o);
    const plen = payload?.length ?? 0;
    if (payload) this.#tx.set(payload, 34 + hl);
    const pseudo = pseudoHeaderSumV4(this.ip, GW, IPPROTO_TCP, hl + plen);
    emitTcp(o, this.#tx, 34, plen, pseudo);
    if (this.partialChecksums) {
      let folded = pseudo;
      while (folded > 0xffff) folded = (folded & 0xffff) + (folded >>> 16);
      this.#tx[34 + 16] = folded >>> 8;
      this.#tx[34 + 17] = folded & 0xff;
    }
    emitIpv4({ id: 2, ttl: 64, protocol: IPPROTO_TCP, src: this.ip, dst: GW }, this.#tx, 14, hl + plen);
    emitEthernet(this.#tx, 0, GW_MAC, this.mac, ETHERTYPE_IPV4);
    this.#send(34 + hl + plen);
  }

  /** Opens a new TCP connection (the previous one is left idle); resolves when established. */
  open(port: number, sport: number): Promise<void> {
    this.sport = sport;
    this.dport = port;
    this.sndNxt = 1000;
    this.rcvNxt = 0;
    const p = new Promise<void>((r) => (this.#onEstablished = r));
    this.#sendTcp(TCP_SYN, null);
    this.sndNxt++;
    return p;
  }

  /**
   * Sends `data` and resolves when `expect` bytes have come back. `push: false` leaves PSH off the segment,
   * as a sender whose write goes on in the next segments does.
   */
  request(data: Uint8Array, expect: number, push = true): Promise<void> {
    return new Promise((resolve) => {
      let got = 0;
      this.#onData = (n) => {
        got += n;
        if (got >= expect) {
          this.#onData = null;
          resolve();
        }
      };
      this.#sendTcp(TCP_ACK_FLAG | (push ? TCP_PSH : 0), data);
      this.sndNxt = (this.sndNxt + data.length) >>> 0;
    });
  }

  /** A frame from the carrier (valid during the call). */
  receive(f: Uint8Array): void {
    const e = parseEthernet(f, 0, f.length, this.#eth);
    if (isWireError(e)) return;
    if (e.etherType === ETHERTYPE_ARP) {
      const a = parseArp(f, 14, f.length);
      if (isWireError(a) || a.op !== ARP_OP_REQUEST || a.targetIp !== this.ip) return;
      emitEthernet(this.#tx, 0, a.senderMac, this.mac, ETHERTYPE_ARP);
      emitArp(
        {
          op: ARP_OP_REPLY,
          senderMac: this.mac,
          senderIp: this.ip,
          targetMac: a.senderMac,
          targetIp: a.senderIp,
        },
        this.#tx,
        14,
      );
      return this.#send(42);
    }
    const ip = parseIpv4(f, 14, f.length, this.#ip, false);
    if (isWireError(ip)) return;
    if (ip.protocol === IPPROTO_UDP) {
      const u = parseUdp(f, ip.payloadOffset, ip.payloadEnd, -1, this.#udp);
      if (isWireError(u) || u.srcPort !== 67) return;
      const m = parseDhcp(f, u.payloadOffset, u.payloadEnd);
      if (isWireError(m)) return;
      if (dhcpMessageType(m) === 2) this.dhcp(3, m.yiaddr);
      else if (dhcpMessageType(m) === 5) {
        this.ip = m.yiaddr;
        this.#onLease();
      }
      return;
    }
    if (ip.protocol === IPPROTO_ICMP) return this.#icmpInput(f, ip.payloadOffset, ip.payloadEnd);
    if (ip.protocol !== IPPROTO_TCP) return;
    const t = parseTcp(f, ip.payloadOffset, ip.payloadEnd, -1, this.#tcp);
    if (isWireError(t) || t.dstPort !== this.sport) return;
    if (t.flags & TCP_RST) {
      this.resets++;
      return;
    }
    if (t.flags & TCP_SYN) {
      this.rcvNxt = (t.seq + 1) >>> 0;
      this.#sendTcp(TCP_ACK_FLAG, null);
      this.#onEstablished();
      return;
    }
    const len = t.payloadEnd - t.payloadOffset;
    if (len === 0) return;
    if (t.seq === this.rcvNxt) {
      this.rcvNxt = (this.rcvNxt + len) >>> 0;
      this.received += len;
      this.receivedBytes?.push(f.slice(t.payloadOffset, t.payloadEnd));
      this.#onData?.(len);
    }
    // one cumulative ACK per burst of segments (at the end of the current read), as a delayed-ACK
    // receiver would; an out-of-order segment gets its duplicate ACK the same way
    if (!this.#ackQueued) {
      this.#ackQueued = true;
      queueMicrotask(() => {
        this.#ackQueued = false;
        this.#sendTcp(TCP_ACK_FLAG, null);
      });
    }
  }

  #ackQueued = false;

  /** Echo requests in flight: sequence → resolve. */
  #pings = new Map<number, () => void>();
  #pingSeq = 0;

  /** Sends an ICMP echo carrying `size` bytes to `dst` (default the gateway); resolves on the reply. */
  ping(size = 56, dst = GW): Promise<void> {
    const seq = (this.#pingSeq = (this.#pingSeq + 1) & 0xffff);
    const p = new Promise<void>((r) => this.#pings.set(seq, r));
    this.#tx.fill(0x61, 42, 42 + size);
    emitIcmpV4(this.#tx, 34, ICMP_ECHO_REQUEST, 0, (0x5151 << 16) | seq, size);
    emitIpv4({ id: 3, ttl: 64, protocol: IPPROTO_ICMP, src: this.ip, dst }, this.#tx, 14, 8 + size);
    emitEthernet(this.#tx, 0, GW_MAC, this.mac, ETHERTYPE_IPV4);
    this.#send(42 + size);
    return p;
  }

  #icmpInput(f: Uint8Array, off: number, end: number): void {
    const m = parseIcmpV4(f, off, end);
    if (isWireError(m) || m.type !== ICMP_ECHO_REPLY || m.id !== 0x5151) return;
    const done = this.#pings.get(m.seq);
    this.#pings.delete(m.seq);
    done?.();
  }

  #closing = false;

  close(): void {
    this.#closing = true;
    try {
      this.channel.close();
    } catch { /* closed */ }
  }
}
