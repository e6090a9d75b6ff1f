/** Test helpers: build guest frames with the wire emitters, and drive a Stack with a real host. */
import { emitEthernet, ETHERTYPE_ARP, ETHERTYPE_IPV4 } from "../src/wire/ethernet.ts";
import { ARP_OP_REQUEST, emitArp } from "../src/wire/arp.ts";
import { emitIpv4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP } from "../src/wire/ipv4.ts";
import { emitTcp, newTcpHeader, type TcpHeader, tcpHeaderLength } from "../src/wire/tcp.ts";
import { emitUdp } from "../src/wire/udp.ts";
import { emitIcmpV4, ICMP_ECHO_REQUEST } from "../src/wire/icmpv4.ts";
import { pseudoHeaderSumV4 } from "../src/wire/checksum.ts";
import { BOOTREQUEST, type DhcpMessage, emitDhcp, optIpv4List, optU8 } from "../src/wire/dhcp.ts";
import { MAC_BROADCAST, parseIpv4Address, putMac48 } from "../src/wire/bytes.ts";
import { Stack, type StackDeps } from "../src/stack/stack.ts";
import { defaultStackConfig, type StackConfig } from "../src/stack/config.ts";
import { TimerWheel } from "../src/stack/timer_wheel.ts";
import { NodeHost } from "../src/host/node_host.ts";
import type { HostNet } from "../src/host/host.ts";
import { dissect, type Dissection } from "./_dissect.ts";

export const GW_MAC = 0x52550a000202;
export const ip = (s: string): number => parseIpv4Address(s)!;

export function arpFrame(
  srcMac: number,
  senderIp: number,
  targetIp: number,
  op = ARP_OP_REQUEST,
): Uint8Array {
  const b = new Uint8Array(60); // zero-padded to the Ethernet minimum, as guests send
  emitEthernet(b, 0, MAC_BROADCAST, srcMac, ETHERTYPE_ARP);
  emitArp({ op, senderMac: srcMac, senderIp, targetMac: 0, targetIp }, b, 14);
  return b;
}

export function udpFrame(
  srcMac: number,
  src: number,
  dst: number,
  sport: number,
  dport: number,
  payload: Uint8Array,
  dstMac = GW_MAC,
  ttl = 64,
): Uint8Array {
  const b = new Uint8Array(Math.max(60, 42 + payload.length));
  emitEthernet(b, 0, dstMac, srcMac, ETHERTYPE_IPV4);
  b.set(payload, 42);
  emitUdp(b, 34, sport, dport, payload.length, pseudoHeaderSumV4(src, dst, IPPROTO_UDP, 8 + payload.length));
  emitIpv4({ id: 1, ttl, protocol: IPPROTO_UDP, src, dst }, b, 14, 8 + payload.length);
  return b;
}

export function pingFrame(
  srcMac: number,
  src: number,
  dst: number,
  id: number,
  seq: number,
  data: Uint8Array,
  ttl = 64,
): Uint8Array {
  const b = new Uint8Array(Math.max(60, 42 + data.length));
  emitEthernet(b, 0, GW_MAC, srcMac, ETHERTYPE_IPV4);
  b.set(data, 42);
  emitIcmpV4(b, 34, ICMP_ECHO_REQUEST, 0, (id << 16) | seq, data.length);
  emitIpv4({ id: 2, ttl, protocol: IPPROTO_ICMP, src, dst }, b, 14, 8 + data.length);
  return b;
}

export function dhcpFrame(
  mac: number,
  type: number,
  opts: [number, Uint8Array][] = [],
  ciaddr = 0,
  xid = 0x1234,
): Uint8Array {
  const chaddr = new Uint8Array(16);
  putMac48(chaddr, 0, mac);
  const m: DhcpMessage = {
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid,
    secs: 0,
    flags: 0,
    ciaddr,
    yiaddr: 0,
    siaddr: 0,
    giaddr: 0,
    chaddr,
    sname: new Uint8Array(64),
    file: new Uint8Array(128),
    options: [[53, optU8(type)], ...opts],
  };
  const payload = new Uint8Array(600);
  const n = emitDhcp(m, payload, 0);
  return udpFrame(
    mac,
    ciaddr,
    ciaddr ? ip("10.0.2.2") : 0xffffffff,
    68,
    67,
    payload.subarray(0, n),
    MAC_BROADCAST,
  );
}

export { optIpv4List };

/** A guest TCP segment to `dst:dport` from GUEST (10.0.2.15 by default), with `mutate` to set options. */
export function tcpFrame(
  o: {
    srcMac: number;
    src: number;
    dst: number;
    sport: number;
    dport: number;
    seq: number;
    ack: number;
    flags: number;
    /** The IPv4 TTL (64 unless told). */
    ttl?: number;
  },
  payload: Uint8Array = new Uint8Array(0),
  mutate?: (t: TcpHeader) => void,
): Uint8Array {
  const t = newTcpHeader();
  Object.assign(t, {
    srcPort: o.sport,
    dstPort: o.dport,
    seq: o.seq,
    ack: o.ack,
    flags: o.flags,
    window: 65535,
  });
  mutate?.(t);
  const hl = tcpHeaderLength(t);
  const f = new Uint8Array(Math.max(60, 34 + hl + payload.length));
  emitEthernet(f, 0, GW_MAC, o.srcMac, ETHERTYPE_IPV4);
  f.set(payload, 34 + hl);
  emitTcp(t, f, 34, payload.length, pseudoHeaderSumV4(o.src, o.dst, IPPROTO_TCP, hl + payload.length));
  emitIpv4(
    { id: 1, ttl: o.ttl ?? 64, protocol: IPPROTO_TCP, src: o.src, dst: o.dst },
    f,
    14,
    hl + payload.length,
  );
  return f.subarray(0, Math.max(60, 34 + hl + payload.length));
}

/** NodeHost whose clock is the test's. */
class ManualClockHost extends NodeHost {
  constructor(readonly clock: () => number) {
    super();
  }

  override now(): number {
    return this.clock();
  }
}

/** A Stack on a real host, with a manual clock and every output frame dissected. */
export class StackHarness {
  readonly out: Dissection[] = [];
  readonly raw: Uint8Array[] = [];
  readonly wheel: TimerWheel;
  /** Real sockets on the harness's manual clock (token buckets, RACK timing), unless the test gives a host. */
  readonly host: HostNet;
  readonly stack: Stack;
  now = 1_000_000;

  constructor(
    patch: (c: StackConfig) => void = () => {},
    host?: (clock: () => number) => HostNet,
    deps: Pick<StackDeps, "egressGuard" | "egressGuard6" | "tftpFiles" | "flowLimit"> = {},
  ) {
    this.host = host ? host(() => this.now) : new ManualClockHost(() => this.now);
    const c = defaultStackConfig();
    c.dnsUpstreams = ["127.0.0.1:9"];
    patch(c);
    this.wheel = new TimerWheel(this.now);
    this.stack = new Stack(c, {
      ...deps,
      host: this.host,
      wheel: this.wheel,
      output: (f) => {
        // a runaway send loop must fail the test, not hang it: the throw ends the loop at the stack's boundary
        if (this.raw.length >= 200_000) throw new Error("The stack sent 200,000 frames: a runaway loop");
        const copy = f.slice();
        this.raw.push(copy);
        this.out.push(dissect(copy));
      },
    });
  }

  send(frame: Uint8Array): Dissection[] {
    const before = this.out.length;
    this.stack.input(frame);
    return this.out.slice(before);
  }

  advance(ms: number): void {
    this.now += ms;
    this.wheel.advance(this.now);
  }

  /** Waits until `pred` holds for a new output frame (host replies arrive asynchronously). */
  async waitFor(pred: (d: Dissection) => boolean, timeoutMs = 3000): Promise<Dissection> {
    const start = Date.now();
    let seen = 0;
    for (;;) {
      for (; seen < this.out.length; seen++) if (pred(this.out[seen])) return this.out[seen];
      if (Date.now() - start > timeoutMs) throw new Error("Timed out waiting for a frame from the stack");
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  drops(reason: string): number {
    return this.stack.counters.drops.get(reason) ?? 0;
  }

  close(): void {
    this.stack.close();
  }
}

/** An ICMP echo request message (header and data), the L4 bytes of a ping. */
export function icmpEchoMessage(id: number, seq: number, data: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + data.length);
  m.set(data, 8);
  emitIcmpV4(m, 0, ICMP_ECHO_REQUEST, 0, (id << 16) | seq, data.length);
  return m;
}

/** `l4` as IPv4 fragments from the guest, each fitting `mtu` (RFC 791 §3.2), in Ethernet frames. */
export function fragmentFrames(
  srcMac: number,
  src: number,
  dst: number,
  protocol: number,
  l4: Uint8Array,
  mtu = 1500,
  id = 0x4242,
): Uint8Array[] {
  const per = ((mtu - 20) >> 3) << 3;
  const frames: Uint8Array[] = [];
  for (let off = 0; off < l4.length; off += per) {
    const n = Math.min(per, l4.length - off);
    const f = new Uint8Array(Math.max(60, 34 + n));
    emitEthernet(f, 0, GW_MAC, srcMac, ETHERTYPE_IPV4);
    f.set(l4.subarray(off, off + n), 34);
    emitIpv4(
      { id, ttl: 64, protocol, src, dst, moreFragments: off + n < l4.length, fragmentOffset: off },
      f,
      14,
      n,
    );
    frames.push(f);
  }
  return frames;
}

/**
 * The L4 bytes of the datagram `id` put together from fragments among `frames` (raw Ethernet frames), or
 * null while some are missing. Checks that no fragment exceeds `mtu`.
 */
export function reassembleFrom(frames: Uint8Array[], id: number, mtu = 1500): Uint8Array | null {
  const parts: { off: number; data: Uint8Array; more: boolean }[] = [];
  for (const f of frames) {
    const d = dissect(f);
    if (!d.ip || d.ip.id !== id) continue;
    if (d.ip.totalLength > mtu) {
      throw new Error(`Fragment of ${d.ip.totalLength} bytes exceeds the MTU ${mtu}`);
    }
    parts.push({
      off: d.ip.fragmentOffset,
      data: f.slice(d.ip.payloadOffset, d.ip.payloadEnd),
      more: d.ip.moreFragments,
    });
  }
  parts.sort((a, b) => a.off - b.off);
  let at = 0;
  for (const p of parts) {
    if (p.off !== at) return null;
    at += p.data.length;
  }
  if (parts.length === 0 || parts[parts.length - 1].more) return null;
  const out = new Uint8Array(at);
  for (const p of parts) out.set(p.data, p.off);
  return out;
}
