/**
 * ARP for IPv4 over Ethernet (RFC 826), the only combination a virtual LAN needs.
 *
 * ```
 *  0       2       4   5   6       8            14       18           24       28
 * +-------+-------+---+---+-------+------------+--------+------------+--------+
 * | htype | ptype |hln|pln|  op   | sender MAC | snd IP | target MAC | tgt IP |
 * +-------+-------+---+---+-------+------------+--------+------------+--------+
 * ```
 * @module
 */
import { mac48, put16, put32, putMac48, u16, u32, WireError } from "./bytes.ts";
import { ETHERTYPE_IPV4 } from "./ethernet.ts";

export const ARP_LEN = 28;
export const ARP_OP_REQUEST = 1;
export const ARP_OP_REPLY = 2;
const HTYPE_ETHERNET = 1;

/** An ARP packet (Ethernet/IPv4). Addresses as numbers. */
export interface ArpPacket {
  op: number;
  senderMac: number;
  senderIp: number;
  targetMac: number;
  targetIp: number;
}

/** Parses an ARP packet; other hardware or protocol types are refused with a reason. */
export function parseArp(buf: Uint8Array, off: number, end: number): ArpPacket | WireError {
  if (end - off < ARP_LEN) return new WireError("arp", `Packet of ${end - off} bytes is shorter than 28`);
  if (u16(buf, off) !== HTYPE_ETHERNET || u16(buf, off + 2) !== ETHERTYPE_IPV4) {
    return new WireError("arp", `Unsupported hardware/protocol type ${u16(buf, off)}/${u16(buf, off + 2)}`);
  }
  if (buf[off + 4] !== 6 || buf[off + 5] !== 4) {
    return new WireError("arp", `Unsupported address lengths ${buf[off + 4]}/${buf[off + 5]}`);
  }
  return {
    op: u16(buf, off + 6),
    senderMac: mac48(buf, off + 8),
    senderIp: u32(buf, off + 14),
    targetMac: mac48(buf, off + 18),
    targetIp: u32(buf, off + 24),
  };
}

/** Writes an ARP packet at `off`; returns 28. */
export function emitArp(p: ArpPacket, buf: Uint8Array, off: number): number {
  put16(buf, off, HTYPE_ETHERNET);
  put16(buf, off + 2, ETHERTYPE_IPV4);
  buf[off + 4] = 6;
  buf[off + 5] = 4;
  put16(buf, off + 6, p.op);
  putMac48(buf, off + 8, p.senderMac);
  put32(buf, off + 14, p.senderIp);
  putMac48(buf, off + 18, p.targetMac);
  put32(buf, off + 24, p.targetIp);
  return ARP_LEN;
}
