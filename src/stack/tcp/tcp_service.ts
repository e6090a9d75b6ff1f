/**
 * Guest-facing TCP. Until the connection engine lands, every segment is answered with the reset RFC 9293
 * §3.10.7.1 prescribes for a CLOSED port, so a guest's connect fails fast with ECONNREFUSED.
 *
 * @module
 */
import { WireError } from "../../wire/bytes.ts";
import {
  emitTcp,
  newTcpHeader,
  parseTcp,
  TCP_ACK_FLAG,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
  tcpHeaderLength,
} from "../../wire/tcp.ts";
import { IPPROTO_TCP, type Ipv4Header } from "../../wire/ipv4.ts";
import { pseudoHeaderSumV4 } from "../../wire/checksum.ts";
import { L4_OFFSET } from "../frame.ts";
import type { Stack } from "../stack.ts";

export class TcpService {
  #stack: Stack;
  #seg = newTcpHeader();
  #out = newTcpHeader();

  constructor(stack: Stack) {
    this.#stack = stack;
  }

  input(buf: Uint8Array, ip: Ipv4Header): void {
    const s = this.#stack;
    const len = ip.payloadEnd - ip.payloadOffset;
    const seg = parseTcp(
      buf,
      ip.payloadOffset,
      ip.payloadEnd,
      pseudoHeaderSumV4(ip.src, ip.dst, IPPROTO_TCP, len),
      this.#seg,
    );
    if (seg instanceof WireError) return s.drop("tcp-malformed", seg);
    this.reset(
      ip.src,
      ip.dst,
      seg.srcPort,
      seg.dstPort,
      seg.seq,
      seg.ack,
      seg.flags,
      seg.payloadEnd - seg.payloadOffset,
    );
    s.drop("tcp-refused");
  }

  /**
   * Sends the RST that answers a segment (RFC 9293 §3.10.7.1): if it had ACK, <SEQ=SEG.ACK><CTL=RST>;
   * otherwise <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. A RST is never answered.
   */
  reset(
    guestIp: number,
    dst: number,
    guestPort: number,
    dstPort: number,
    seq: number,
    ack: number,
    flags: number,
    dataLen: number,
  ): void {
    if (flags & TCP_RST) return;
    const s = this.#stack;
    const o = this.#out;
    o.srcPort = dstPort;
    o.dstPort = guestPort;
    o.window = 0;
    if (flags & TCP_ACK_FLAG) {
      o.seq = ack;
      o.ack = 0;
      o.flags = TCP_RST;
    } else {
      o.seq = 0;
      o.ack = (seq + dataLen + (flags & TCP_SYN ? 1 : 0) + (flags & TCP_FIN ? 1 : 0)) >>> 0;
      o.flags = TCP_RST | TCP_ACK_FLAG;
    }
    const hl = tcpHeaderLength(o);
    emitTcp(o, s.tx, L4_OFFSET, 0, pseudoHeaderSumV4(dst, guestIp, IPPROTO_TCP, hl));
    s.sendIpv4(dst, guestIp, IPPROTO_TCP, hl);
  }

  close(): void {}
}
