/** Host-side test services on 127.0.0.1 (DNS responder, UDP echo, TCP servers) and test data helpers. */
import dgram from "node:dgram";
import net from "node:net";
import { createHash } from "node:crypto";
import { DNS_RCODE_NXDOMAIN, DNS_TYPE_A, DNS_TYPE_AAAA, emitDnsResponse, parseDns } from "../src/wire/dns.ts";
import { parseIpv6Address } from "../src/wire/ipv6.ts";
import { isWireError } from "../src/wire/bytes.ts";

export interface UdpService {
  port: number;
  /** Datagrams received so far. */
  received: number;
  close(): void;
}

function listen(
  onMessage: (s: dgram.Socket, msg: Uint8Array, port: number, address: string) => void,
  host = "127.0.0.1",
): Promise<UdpService> {
  const s = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
  const svc: UdpService = { port: 0, received: 0, close: () => s.close() };
  s.on("message", (msg, r) => {
    svc.received++;
    onMessage(s, new Uint8Array(msg.buffer, msg.byteOffset, msg.length), r.port, r.address);
  });
  return new Promise((resolve) => {
    s.bind(0, host, () => {
      svc.port = s.address().port;
      resolve(svc);
    });
  });
}

function dnsAnswer(zone: Record<string, string>, msg: Uint8Array): Uint8Array | null {
  const q = parseDns(msg, 0, msg.length);
  if (isWireError(q) || q.questions.length !== 1) return null;
  const addr = zone[q.questions[0].name];
  // a name maps to addresses (comma-separated): A records for the dotted ones, AAAA for IPv6 when asked
  const type = q.questions[0].type;
  const answers = (addr ?? "").split(",").filter((a) => a !== "").flatMap((a) => {
    const v6 = a.includes(":") ? parseIpv6Address(a) : null;
    if (type === DNS_TYPE_A && !v6) {
      return [{ type: DNS_TYPE_A, ttl: 30, address: Uint8Array.from(a.split(".").map(Number)) }];
    }
    return v6 && type === DNS_TYPE_AAAA ? [{ type: DNS_TYPE_AAAA, ttl: 30, address: v6 }] : [];
  });
  const out = new Uint8Array(msg.length + 28 * answers.length);
  const n = emitDnsResponse(msg, 0, msg.length, answers, addr ? 0 : DNS_RCODE_NXDOMAIN, out, 0);
  return typeof n === "number" ? out.subarray(0, n) : null;
}

/**
 * A DNS responder on 127.0.0.1 (or `host`, e.g. "::1"), over UDP and TCP (RFC 7766 framing) on the same
 * port: answers A and AAAA queries for names in `zone` (name → addresses, comma-separated), NXDOMAIN
 * otherwise. It answers in full whatever the size, as an upstream does within the buffer the query's EDNS
 * option offers.
 */
export async function startDnsResponder(
  zone: Record<string, string>,
  host = "127.0.0.1",
): Promise<UdpService> {
  for (;;) {
    const udp = await listen((s, msg, port, address) => {
      const a = dnsAnswer(zone, msg);
      if (a) s.send(a, port, address);
    }, host);
    const tcp = net.createServer((c) => {
      let buf = new Uint8Array(0);
      c.on("error", () => {});
      c.on("data", (d: Uint8Array) => {
        const b = new Uint8Array(buf.length + d.length);
        b.set(buf);
        b.set(d, buf.length);
        buf = b;
        while (buf.length >= 2 && buf.length >= 2 + ((buf[0] << 8) | buf[1])) {
          const n = (buf[0] << 8) | buf[1];
          const a = dnsAnswer(zone, buf.subarray(2, 2 + n));
          buf = buf.slice(2 + n);
          if (a) c.write(Uint8Array.of(a.length >> 8, a.length & 0xff, ...a));
        }
      });
    });
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once("error", () => resolve(false));
      tcp.listen(udp.port, host, () => resolve(true));
    });
    if (ok) {
      const closeUdp = udp.close;
      udp.close = () => {
        closeUdp();
        tcp.close();
      };
      return udp;
    }
    udp.close();
  }
}

/** Echoes each datagram back, prefixed with "echo:" (on 127.0.0.1, or `host`, e.g. "::1"). */
export function startUdpEcho(host = "127.0.0.1"): Promise<UdpService> {
  return listen((s, msg, port, address) => {
    const reply = new Uint8Array(5 + msg.length);
    reply.set(new TextEncoder().encode("echo:"));
    reply.set(msg, 5);
    s.send(reply, port, address);
  }, host);
}

/** A TCP server on 127.0.0.1 (or `host`) with `handler` per connection. */
export function listenTcp(
  handler: (s: net.Socket) => void,
  host = "127.0.0.1",
): Promise<{ port: number; close(): void }> {
  const srv = net.createServer(handler);
  return new Promise((resolve) => {
    srv.listen(
      0,
      host,
      () => resolve({ port: (srv.address() as net.AddressInfo).port, close: () => srv.close() }),
    );
  });
}

/** Reads to EOF, replies with the SHA-256 hex of what it read. */
export function startHashServer(host = "127.0.0.1"): Promise<{ port: number; close(): void }> {
  return listenTcp((s) => {
    const h = createHash("sha256");
    s.on("data", (d) => h.update(d));
    s.on("end", () => s.end(h.digest("hex")));
    s.on("error", () => {});
  }, host);
}

/** Writes a file of `size` random bytes into `dir`; returns its path and SHA-256. */
export async function randomFile(
  dir: string,
  size: number,
  name = "random.bin",
): Promise<{ path: string; sha256: string }> {
  const path = `${dir}/${name}`;
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  const h = createHash("sha256");
  const chunk = new Uint8Array(1024 * 1024);
  for (let done = 0; done < size; done += chunk.length) {
    for (let k = 0; k < chunk.length; k += 65536) crypto.getRandomValues(chunk.subarray(k, k + 65536));
    const part = chunk.subarray(0, Math.min(chunk.length, size - done));
    h.update(part);
    let off = 0;
    while (off < part.length) off += await f.write(part.subarray(off));
  }
  f.close();
  return { path, sha256: h.digest("hex") };
}

/** A free TCP port on 127.0.0.1 (bound and released: the code under test binds it next). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * What a guest's one-shot listener says through a port forward at `hostname:port`: connects until the
 * forward answers (the guest's listener may not be up yet, and a forward to a closed guest port is reset),
 * every 200 ms for up to 10 s. "" when it never did.
 */
export async function replyThroughForward(hostname: string, port: number): Promise<string> {
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 200));
    try {
      const c = await Deno.connect({ hostname, port });
      const buf = new Uint8Array(64);
      // longer than the first SYN retransmission (1 s), should the guest's reset come only after it
      const n = await Promise.race([
        c.read(buf).catch(() => null),
        new Promise<null>((r) => setTimeout(() => r(null), 2500)),
      ]);
      c.close();
      if (n) return new TextDecoder().decode(buf.subarray(0, n)).trim();
    } catch { /* not bound yet */ }
  }
  return "";
}
