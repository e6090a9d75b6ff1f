/**
 * Cost of the wire layer per frame: parse a full Ethernet/IPv4/TCP frame (with checksum verification) and
 * emit one (with checksums), at 64 B and 1514 B of frame. Run: `deno task bench`.
 */
import { emitEthernet, ETHERTYPE_IPV4, newEthernetHeader, parseEthernet } from "../src/wire/ethernet.ts";
import { emitIpv4, IPPROTO_TCP, type Ipv4Emit, newIpv4Header, parseIpv4 } from "../src/wire/ipv4.ts";
import { emitTcp, newTcpHeader, parseTcp, TCP_ACK_FLAG, TCP_PSH, tcpHeaderLength } from "../src/wire/tcp.ts";
import { pseudoHeaderSumV4 } from "../src/wire/checksum.ts";

const SRC = 0x0a00020f;
const DST = 0x0a000202;
const tcp = newTcpHeader();
Object.assign(tcp, {
  srcPort: 40000,
  dstPort: 8080,
  seq: 1,
  ack: 1,
  flags: TCP_ACK_FLAG | TCP_PSH,
  window: 502,
});
Object.assign(tcp, { hasTimestamps: true, tsVal: 1, tsEcr: 2 });
const ip: Ipv4Emit = { id: 1, ttl: 64, protocol: IPPROTO_TCP, src: SRC, dst: DST, dontFragment: true };

function build(buf: Uint8Array, payload: number): number {
  const hl = tcpHeaderLength(tcp);
  const l4 = hl + payload;
  emitEthernet(buf, 0, 0x525400123456, 0x52550a000202, ETHERTYPE_IPV4);
  emitTcp(tcp, buf, 34, payload, pseudoHeaderSumV4(SRC, DST, IPPROTO_TCP, l4));
  emitIpv4(ip, buf, 14, l4);
  return 34 + l4;
}

const eth = newEthernetHeader();
const iph = newIpv4Header();
const th = newTcpHeader();
let sink = 0;

function parse(buf: Uint8Array, len: number): void {
  const e = parseEthernet(buf, 0, len, eth);
  if (!("payloadOffset" in e)) throw new Error("bad frame");
  const i = parseIpv4(buf, e.payloadOffset, len, iph);
  if (!("payloadEnd" in i)) throw new Error("bad ip");
  const t = parseTcp(
    buf,
    i.payloadOffset,
    i.payloadEnd,
    pseudoHeaderSumV4(i.src, i.dst, i.protocol, i.payloadEnd - i.payloadOffset),
    th,
  );
  if (!("seq" in t)) throw new Error(`bad tcp ${t}`);
  sink ^= t.seq;
}

for (const payload of [0, 1448]) {
  const frameLen = 14 + 20 + 32 + payload;
  const buf = new Uint8Array(2048);
  for (let i = 0; i < buf.length; i++) buf[i] = i * 7;
  const len = build(buf, payload);
  Deno.bench({
    group: `${frameLen} B frame`,
    name: "parse (eth+ipv4+tcp, checksums verified)",
    fn: () => parse(buf, len),
  });
  Deno.bench({
    group: `${frameLen} B frame`,
    name: "emit (eth+ipv4+tcp, checksums computed)",
    fn() {
      sink ^= build(buf, payload);
    },
  });
  Deno.bench({
    group: `${frameLen} B frame`,
    name: "parse + emit",
    baseline: true,
    fn() {
      build(buf, payload);
      parse(buf, len);
    },
  });
}
