/**
 * Whole datagrams toward the guest that may not fit its MTU: a UDP reply from a host socket, an ICMP or
 * ICMPv6 echo reply as large as the request. The relay is their source on the guest's link, so it fragments
 * them as a source host does (RFC 791 §3.2; RFC 8200 §4.5, where only the source may); TCP never needs this
 * (its segments are cut to the MSS).
 *
 * @module
 */
import { emitEthernet, ETH_HEADER_LEN, ETHERTYPE_IPV4 } from "../wire/ethernet.ts";
import { emitIpv4, IPPROTO_ICMP, IPPROTO_UDP, type Ipv4Emit } from "../wire/ipv4.ts";
import { emitUdp, UDP_HEADER_LEN } from "../wire/udp.ts";
import {
  emitIpv6FragmentHeader,
  IPPROTO_FRAGMENT,
  IPPROTO_ICMPV6,
  IPV6_FRAGMENT_HEADER_LEN,
  IPV6_HEADER_LEN,
} from "../wire/ipv6.ts";
import { emitIcmpv6, ICMPV6_HEADER_LEN } from "../wire/icmpv6.ts";
import { put16 } from "../wire/bytes.ts";
import { emitIcmpV4, ICMP_HEADER_LEN } from "../wire/icmpv4.ts";
import { checksumSum, pseudoHeaderSumV4, pseudoHeaderSumV6 } from "../wire/checksum.ts";
import { L4_OFFSET } from "./frame.ts";
import type { AddressPlan } from "./config.ts";
import type { Counters } from "./counters.ts";
import type { PathSender } from "./guest_path.ts";

/** What the sender needs of its tenant's stack. */
export interface DatagramLink extends PathSender {
  readonly plan: AddressPlan;
  readonly counters: Counters;
  /** Scratch buffer a frame toward the guest is built in (L4 at `L4_OFFSET`). */
  readonly tx: Uint8Array;
  /** The guest MAC of IPv4 address `ip`, or -1. */
  macFor(ip: number): number;
  /** A fresh IPv4 identification value. */
  nextIpId(): number;
  /** Sends the L4 bytes in `tx` at L4_OFFSET as an IPv4 datagram to the guest. */
  sendIpv4(src: number, dst: number, protocol: number, l4Length: number): boolean;
  /** Outputs `tx[0, len)` to the guest. */
  sendFrame(len: number): void;
}

export class DatagramSender {
  #link: DatagramLink;
  /** L4 header scratch for datagrams sent in fragments. */
  #l4Header = new Uint8Array(UDP_HEADER_LEN + ICMP_HEADER_LEN);
  #fragmentHeader: Ipv4Emit = { id: 0, ttl: 64, protocol: 0, src: 0, dst: 0 };
  /** The last IPv6 Identification used; it starts anywhere (RFC 7739: not guessable from outside). */
  #fragmentId6: number;

  constructor(link: DatagramLink) {
    this.#link = link;
    this.#fragmentId6 = crypto.getRandomValues(new Uint32Array(1))[0];
  }

  /**
   * Sends a UDP datagram carrying `data` to the guest, fragmented at the guest's MTU when it does not fit
   * one frame.
   * @returns false when it was not sent
   */
  sendUdp(src: number, dst: number, srcPort: number, dstPort: number, data: Uint8Array): boolean {
    const s = this.#link;
    const total = UDP_HEADER_LEN + data.length;
    if (total + 20 <= s.plan.mtu) {
      s.tx.set(data, L4_OFFSET + UDP_HEADER_LEN);
      emitUdp(
        s.tx,
        L4_OFFSET,
        srcPort,
        dstPort,
        data.length,
        pseudoHeaderSumV4(src, dst, IPPROTO_UDP, total),
      );
      return s.sendIpv4(src, dst, IPPROTO_UDP, total);
    }
    const h = this.#udpHeader(srcPort, dstPort, data, pseudoHeaderSumV4(src, dst, IPPROTO_UDP, total));
    if (!this.sendIpv4Datagram(src, dst, IPPROTO_UDP, h, data)) return false;
    s.counters.udpFragmentedDatagrams++;
    return true;
  }

  /**
   * Sends a UDP datagram carrying `data` to the guest over IPv6, from `src` to `dst` (16 bytes each),
   * fragmented at the guest's MTU when it does not fit one frame.
   * @returns false when it was not sent
   */
  sendUdp6(src: Uint8Array, dst: Uint8Array, srcPort: number, dstPort: number, data: Uint8Array): boolean {
    const s = this.#link;
    const total = UDP_HEADER_LEN + data.length;
    if (total + IPV6_HEADER_LEN <= s.plan.mtu) {
      const l4 = ETH_HEADER_LEN + IPV6_HEADER_LEN;
      s.tx.set(data, l4 + UDP_HEADER_LEN);
      emitUdp(
        s.tx,
        l4,
        srcPort,
        dstPort,
        data.length,
        pseudoHeaderSumV6(src, 0, dst, 0, IPPROTO_UDP, total),
      );
      return s.sendIpv6In(s.tx, 0, src, 0, dst, 0, IPPROTO_UDP, total);
    }
    const h = this.#udpHeader(srcPort, dstPort, data, pseudoHeaderSumV6(src, 0, dst, 0, IPPROTO_UDP, total));
    if (!this.sendIpv6Datagram(src, 0, dst, 0, IPPROTO_UDP, h, data)) return false;
    s.counters.udpFragmentedDatagrams++;
    return true;
  }

  /**
   * The UDP header of a datagram sent in fragments, its checksum over the whole datagram: the header's sum
   * (with the pseudo-header's, `pseudo`) chained into the data's. Never zero (RFC 768; RFC 8200 §8.1).
   */
  #udpHeader(srcPort: number, dstPort: number, data: Uint8Array, pseudo: number): Uint8Array {
    const h = this.#l4Header.subarray(0, UDP_HEADER_LEN);
    put16(h, 0, srcPort);
    put16(h, 2, dstPort);
    put16(h, 4, (UDP_HEADER_LEN + data.length) & 0xffff);
    put16(h, 6, 0);
    const ck = ~checksumSum(data, 0, data.length, checksumSum(h, 0, UDP_HEADER_LEN, pseudo)) & 0xffff;
    put16(h, 6, ck === 0 ? 0xffff : ck);
    return h;
  }

  /**
   * Sends an ICMPv6 message (`type`, `code`, `rest`) carrying `data` from `src[srcOff]` to `dst[dstOff]`,
   * fragmented when it does not fit the MTU: an echo reply is as large as the request (RFC 4443 §4.2).
   */
  sendIcmpv6(
    src: Uint8Array,
    srcOff: number,
    dst: Uint8Array,
    dstOff: number,
    type: number,
    code: number,
    rest: number,
    data: Uint8Array,
  ): boolean {
    const h = this.#l4Header.subarray(0, ICMPV6_HEADER_LEN);
    const pseudo = pseudoHeaderSumV6(
      src,
      srcOff,
      dst,
      dstOff,
      IPPROTO_ICMPV6,
      ICMPV6_HEADER_LEN + data.length,
    );
    // the header apart from its data: the data's sum chained in with the pseudo-header's
    emitIcmpv6(h, 0, type, code, rest, 0, checksumSum(data, 0, data.length, pseudo));
    return this.sendIpv6Datagram(src, srcOff, dst, dstOff, IPPROTO_ICMPV6, h, data);
  }

  /**
   * Sends an ICMP message (`type`, `code`, `rest`) carrying `data` to the guest, fragmented when it does
   * not fit the MTU: an echo reply is as large as the request, which the guest may have fragmented.
   */
  sendIcmp(src: number, dst: number, type: number, code: number, rest: number, data: Uint8Array): boolean {
    const h = this.#l4Header.subarray(0, ICMP_HEADER_LEN);
    emitIcmpV4(h, 0, type, code, rest, 0, checksumSum(data, 0, data.length));
    return this.sendIpv4Datagram(src, dst, IPPROTO_ICMP, h, data);
  }

  /**
   * Sends one IPv4 datagram whose payload is `head` (the L4 header, checksum already set) followed by
   * `data`, as one frame when it fits the guest's MTU, else as fragments the way a Linux router forwards
   * a datagram without DF (RFC 791 §3.2: fragment payloads are multiples of 8 bytes, MF on all but the
   * last). Never writes past the transmit buffer.
   * @returns false when it was not sent (larger than an IPv4 datagram can be, or no MAC for `dst`)
   */
  sendIpv4Datagram(src: number, dst: number, protocol: number, head: Uint8Array, data: Uint8Array): boolean {
    const s = this.#link;
    const total = head.length + data.length;
    if (total + 20 > 65535) {
      s.counters.drop("ipv4-datagram-too-large");
      return false;
    }
    const tx = s.tx;
    if (total + 20 <= s.plan.mtu) {
      tx.set(head, L4_OFFSET);
      tx.set(data, L4_OFFSET + head.length);
      return s.sendIpv4(src, dst, protocol, total);
    }
    const mac = s.macFor(dst);
    if (mac < 0) {
      s.counters.drop("guest-mac-unknown");
      return false;
    }
    const per = ((s.plan.mtu - 20) >> 3) << 3;
    const id = s.nextIpId();
    const ip = this.#fragmentHeader;
    ip.id = id;
    ip.protocol = protocol;
    ip.src = src;
    ip.dst = dst;
    for (let off = 0; off < total; off += per) {
      const n = Math.min(per, total - off);
      copyPart(tx, L4_OFFSET, head, data, off, n);
      emitEthernet(tx, 0, mac, s.plan.gatewayMac, ETHERTYPE_IPV4);
      ip.moreFragments = off + n < total;
      ip.fragmentOffset = off;
      emitIpv4(ip, tx, ETH_HEADER_LEN, n);
      s.sendFrame(L4_OFFSET + n);
    }
    return true;
  }

  /**
   * Sends one IPv6 packet from `src[srcOff]` to `dst[dstOff]` whose payload is `head` (the upper-layer
   * header, checksum already set) followed by `data`: one frame when it fits the guest's MTU, else fragments
   * behind a Fragment header (RFC 8200 §4.5: each fragment's data a multiple of 8 bytes but the last, one
   * Identification for all).
   * @returns false when it was not sent (longer than an IPv6 payload can be, or no MAC for `dst`)
   */
  sendIpv6Datagram(
    src: Uint8Array,
    srcOff: number,
    dst: Uint8Array,
    dstOff: number,
    protocol: number,
    head: Uint8Array,
    data: Uint8Array,
  ): boolean {
    const s = this.#link;
    const total = head.length + data.length;
    if (total > 65535) {
      s.counters.drop("ipv6-datagram-too-large");
      return false;
    }
    const tx = s.tx;
    const l4 = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    if (total + IPV6_HEADER_LEN <= s.plan.mtu) {
      tx.set(head, l4);
      tx.set(data, l4 + head.length);
      return s.sendIpv6In(tx, 0, src, srcOff, dst, dstOff, protocol, total);
    }
    const per = ((s.plan.mtu - IPV6_HEADER_LEN - IPV6_FRAGMENT_HEADER_LEN) >> 3) << 3;
    const id = this.#fragmentId6 = (this.#fragmentId6 + 1) >>> 0;
    for (let off = 0; off < total; off += per) {
      const n = Math.min(per, total - off);
      copyPart(tx, l4 + IPV6_FRAGMENT_HEADER_LEN, head, data, off, n);
      emitIpv6FragmentHeader(tx, l4, protocol, off, off + n < total, id);
      // the first fragment finds the guest's MAC or fails (the rest would fail alike)
      const l4Length = IPV6_FRAGMENT_HEADER_LEN + n;
      if (!s.sendIpv6In(tx, 0, src, srcOff, dst, dstOff, IPPROTO_FRAGMENT, l4Length)) return false;
    }
    return true;
  }
}

/** Copies bytes [off, off + n) of `head` ++ `data` to `tx[at]`. */
function copyPart(
  tx: Uint8Array,
  at: number,
  head: Uint8Array,
  data: Uint8Array,
  off: number,
  n: number,
): void {
  if (off < head.length) {
    const k = Math.min(head.length - off, n);
    tx.set(head.subarray(off, off + k), at);
    at += k;
  }
  const from = Math.max(0, off - head.length);
  const to = off + n - head.length;
  if (to > from) tx.set(data.subarray(from, to), at);
}
