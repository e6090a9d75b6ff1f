/** Host-side test services on 127.0.0.1: a DNS responder and a UDP echo server. */
import dgram from "node:dgram";
import { DNS_RCODE_NXDOMAIN, DNS_TYPE_A, emitDnsResponse, parseDns } from "../src/wire/dns.ts";
import { isWireError } from "../src/wire/bytes.ts";

export interface UdpService {
  port: number;
  /** Datagrams received so far. */
  received: number;
  close(): void;
}

function listen(
  onMessage: (s: dgram.Socket, msg: Uint8Array, port: number, address: string) => void,
): Promise<UdpService> {
  const s = dgram.createSocket("udp4");
  const svc: UdpService = { port: 0, received: 0, close: () => s.close() };
  s.on("message", (msg, r) => {
    svc.received++;
    onMessage(s, new Uint8Array(msg.buffer, msg.byteOffset, msg.length), r.port, r.address);
  });
  return new Promise((resolve) => {
    s.bind(0, "127.0.0.1", () => {
      svc.port = s.address().port;
      resolve(svc);
    });
  });
}

/**
 * A DNS responder: answers A queries for names in `zone` (name → dotted address), NXDOMAIN otherwise.
 */
export function startDnsResponder(zone: Record<string, string>): Promise<UdpService> {
  return listen((s, msg, port, address) => {
    const q = parseDns(msg, 0, msg.length);
    if (isWireError(q) || q.questions.length !== 1) return;
    const name = q.questions[0].name;
    const addr = zone[name];
    const out = new Uint8Array(512);
    const answers = addr && q.questions[0].type === DNS_TYPE_A
      ? [{ type: DNS_TYPE_A, ttl: 30, address: Uint8Array.from(addr.split(".").map(Number)) }]
      : [];
    const n = emitDnsResponse(msg, 0, msg.length, answers, addr ? 0 : DNS_RCODE_NXDOMAIN, out, 0);
    if (typeof n === "number") s.send(out.subarray(0, n), port, address);
  });
}

/** Echoes each datagram back, prefixed with "echo:". */
export function startUdpEcho(): Promise<UdpService> {
  return listen((s, msg, port, address) => {
    const reply = new Uint8Array(5 + msg.length);
    reply.set(new TextEncoder().encode("echo:"));
    reply.set(msg, 5);
    s.send(reply, port, address);
  });
}
