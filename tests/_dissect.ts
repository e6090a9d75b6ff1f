/**
 * Test helper: walks every layer of a frame with the wire codecs and rebuilds the frame from the parsed
 * values with the emitters, so fixture tests can demand byte-identical re-emission and fuzz tests can drive
 * every parser with one call.
 */
import { WireError } from "../src/wire/bytes.ts";
import { emitEthernet, ETHERTYPE_ARP, ETHERTYPE_IPV4, parseEthernet } from "../src/wire/ethernet.ts";
import { emitArp, parseArp } from "../src/wire/arp.ts";
import { emitIpv4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ipv4ToEmit, parseIpv4 } from "../src/wire/ipv4.ts";
import { emitIcmpV4, parseIcmpV4 } from "../src/wire/icmpv4.ts";
import { emitUdp, parseUdp } from "../src/wire/udp.ts";
import { emitTcp, parseTcp, type TcpHeader } from "../src/wire/tcp.ts";
import {
  DHCP_CLIENT_PORT,
  DHCP_SERVER_PORT,
  type DhcpMessage,
  emitDhcp,
  parseDhcp,
} from "../src/wire/dhcp.ts";
import { type DnsMessage, parseDns } from "../src/wire/dns.ts";
import { pseudoHeaderSumV4 } from "../src/wire/checksum.ts";
import type { ArpPacket } from "../src/wire/arp.ts";
import type { Ipv4Header } from "../src/wire/ipv4.ts";
import type { IcmpV4Message } from "../src/wire/icmpv4.ts";
import type { UdpHeader } from "../src/wire/udp.ts";
import type { EthernetHeader } from "../src/wire/ethernet.ts";

export interface Dissection {
  eth?: EthernetHeader;
  arp?: ArpPacket;
  ip?: Ipv4Header;
  icmp?: IcmpV4Message;
  udp?: UdpHeader;
  tcp?: TcpHeader;
  dhcp?: DhcpMessage;
  dns?: DnsMessage;
  /** The first parse error met, if any. */
  error?: WireError;
  /** The frame rebuilt from the parsed values (only for fully understood frames), up to the IP end. */
  rebuilt?: Uint8Array;
  /** Bytes of the original that `rebuilt` corresponds to. */
  original?: Uint8Array;
}

export function dissect(frame: Uint8Array): Dissection {
  const d: Dissection = {};
  const eth = parseEthernet(frame, 0, frame.length);
  if (eth instanceof WireError) return { error: eth };
  d.eth = { ...eth };
  const out = new Uint8Array(frame.length + 64);
  emitEthernet(out, 0, eth.dst, eth.src, eth.etherType);
  if (eth.vlanTags > 0) return d;
  const p = eth.payloadOffset;
  if (eth.etherType === ETHERTYPE_ARP) {
    const arp = parseArp(frame, p, frame.length);
    if (arp instanceof WireError) return { ...d, error: arp };
    d.arp = arp;
    const n = emitArp(arp, out, p);
    d.rebuilt = out.subarray(0, p + n);
    d.original = frame.subarray(0, p + n);
    return d;
  }
  if (eth.etherType !== ETHERTYPE_IPV4) return d;
  const ip = parseIpv4(frame, p, frame.length);
  if (ip instanceof WireError) return { ...d, error: ip };
  d.ip = { ...ip };
  const ipEnd = ip.payloadEnd;
  const q = ip.payloadOffset;
  const l4len = ipEnd - q;
  const fragment = ip.moreFragments || ip.fragmentOffset > 0;
  const pseudo = pseudoHeaderSumV4(ip.src, ip.dst, ip.protocol, l4len);
  // the transport payload is copied as is; headers are rebuilt around it
  out.set(frame.subarray(q, ipEnd), q);
  let rebuiltL4 = fragment;
  if (!fragment && ip.protocol === IPPROTO_ICMP) {
    const icmp = parseIcmpV4(frame, q, ipEnd);
    if (icmp instanceof WireError) return { ...d, error: icmp };
    d.icmp = icmp;
    emitIcmpV4(out, q, icmp.type, icmp.code, icmp.rest, ipEnd - icmp.dataOffset);
    rebuiltL4 = true;
  } else if (!fragment && ip.protocol === IPPROTO_UDP) {
    const udp = parseUdp(frame, q, ipEnd, pseudo);
    if (udp instanceof WireError) return { ...d, error: udp };
    d.udp = { ...udp };
    const ports = [udp.srcPort, udp.dstPort];
    if (ports.includes(DHCP_SERVER_PORT) && ports.includes(DHCP_CLIENT_PORT)) {
      const m = parseDhcp(frame, udp.payloadOffset, udp.payloadEnd);
      if (m instanceof WireError) return { ...d, error: m };
      d.dhcp = m;
      emitDhcp(m, out, udp.payloadOffset);
    } else if (udp.srcPort === 53 || udp.dstPort === 53) {
      const m = parseDns(frame, udp.payloadOffset, udp.payloadEnd);
      if (m instanceof WireError) return { ...d, error: m };
      d.dns = m;
    }
    if (udp.checksum !== 0) {
      emitUdp(out, q, udp.srcPort, udp.dstPort, udp.payloadEnd - udp.payloadOffset, pseudo);
    } else out.set(frame.subarray(q, q + 8), q);
    rebuiltL4 = true;
  } else if (!fragment && ip.protocol === IPPROTO_TCP) {
    const tcp = parseTcp(frame, q, ipEnd, pseudo);
    if (tcp instanceof WireError) return { ...d, error: tcp };
    d.tcp = { ...tcp, sackBlocks: [...tcp.sackBlocks] };
    // payload moves if our option layout differs in length; place it where emitTcp expects it
    const hl = tcp.headerLength;
    out.set(frame.subarray(q + hl, ipEnd), q + hl);
    emitTcp(tcp, out, q, ipEnd - q - hl, pseudo);
    rebuiltL4 = true;
  }
  if (!rebuiltL4) return d;
  emitIpv4(ipv4ToEmit(ip, frame), out, p, l4len);
  d.rebuilt = out.subarray(0, ipEnd);
  d.original = frame.subarray(0, ipEnd);
  return d;
}
