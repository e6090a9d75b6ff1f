/**
 * {@linkcode HostNet} on the `node:` socket modules, which Deno and Bun both provide.
 *
 * @module
 */
import dgram from "node:dgram";
import net from "node:net";
import { readFileSync } from "node:fs";
import { parseIpv4Address } from "../wire/bytes.ts";
import { parseIpv6Address } from "../wire/ipv6.ts";
import type {
  HostIcmpEcho,
  HostListener,
  HostNet,
  HostTcpSocket,
  HostUdpSocket,
  TcpHandlers,
  UdpHandlers,
} from "./host.ts";

/** The errno name of a socket error ("ECONNREFUSED" …), as node's errors and ours carry it in `code`. */
export function errCode(e: unknown): string {
  return (e as { code?: string })?.code ?? String((e as Error)?.message ?? e);
}

function udpSocket(handlers: UdpHandlers, family: 4 | 6 = 4): dgram.Socket {
  const s = dgram.createSocket({ type: family === 6 ? "udp6" : "udp4" });
  s.on("message", (msg, rinfo) => {
    handlers.onMessage(new Uint8Array(msg.buffer, msg.byteOffset, msg.length), rinfo.address, rinfo.port);
  });
  s.on("error", (e) => handlers.onError(errCode(e)));
  return s;
}

function wrapUdp(s: dgram.Socket, handlers: UdpHandlers, family: 4 | 6 = 4): HostUdpSocket {
  let closed = false;
  return {
    sendTo(data, address, port) {
      if (closed) return;
      // node:dgram on Deno reads the bytes after send() returns: hand it a copy; an IPv6 socket names an
      // IPv4 peer by its mapped address
      const to = family === 6 && !address.includes(":") ? `::ffff:${address}` : address;
      s.send(data.slice(), port, to, (err) => {
        if (err) handlers.onError(errCode(err));
      });
    },
    setHopLimit(n) {
      // node:dgram takes a TTL only once the socket is bound (at its first send)
      const set = () => {
        try {
          s.setTTL(n);
        } catch { /* closed */ }
      };
      try {
        s.setTTL(n);
      } catch {
        s.once("listening", set);
      }
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        s.close();
      } catch { /* already closed */ }
    },
  };
}

function wrapTcp(sock: net.Socket): HostTcpSocket {
  return {
    write(data) {
      return sock.write(data.slice());
    },
    get bufferedAmount() {
      return sock.writableLength;
    },
    end() {
      sock.end();
    },
    destroy(reset = false) {
      if (reset && typeof sock.resetAndDestroy === "function") sock.resetAndDestroy();
      else sock.destroy();
    },
    pause() {
      sock.pause();
    },
    resume() {
      sock.resume();
    },
    get remoteAddress() {
      return sock.remoteAddress ?? "";
    },
    get remotePort() {
      return sock.remotePort ?? 0;
    },
  };
}

function bindTcp(sock: net.Socket, h: TcpHandlers): void {
  sock.on("data", (d: Uint8Array) => h.onData(d));
  sock.on("end", () => h.onEnd());
  sock.on("error", (e) => h.onError(errCode(e)));
  sock.on("close", () => h.onClose());
  sock.on("drain", () => h.onDrain());
}

/**
 * Reads the nameservers of a resolv.conf text, IPv4 and IPv6, as DNS upstreams (`1.2.3.4:53`, `[::1]:53`).
 * As glibc's resolver (resolv.conf(5)), anything after the address on its line is ignored. A link-local
 * address with a zone (`fe80::1%eth0`) is skipped: the zone does not survive into the sockets' addresses.
 */
export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    if (parseIpv4Address(m[1]) !== null) out.push(`${m[1]}:53`);
    else if (parseIpv6Address(m[1])) out.push(`[${m[1]}]:53`);
  }
  return out;
}

export class NodeHost implements HostNet {
  #icmp: HostIcmpEcho | null | undefined;
  #icmpFactory: () => HostIcmpEcho | null;

  /** @param icmpFactory opens the ICMP echo service on first use (e.g. the FFI ping socket) */
  constructor(icmpFactory: () => HostIcmpEcho | null = () => null) {
    this.#icmpFactory = icmpFactory;
  }

  now(): number {
    return performance.now();
  }

  openUdp(handlers: UdpHandlers, family: 4 | 6 = 4): HostUdpSocket {
    return wrapUdp(udpSocket(handlers, family), handlers, family);
  }

  bindUdp(address: string, port: number, handlers: UdpHandlers): Promise<HostUdpSocket & { port: number }> {
    const family = address.includes(":") ? 6 : 4;
    const s = udpSocket(handlers, family);
    return new Promise((resolve, reject) => {
      s.once("error", reject);
      s.bind(port, address, () => {
        s.off("error", reject);
        resolve(Object.assign(wrapUdp(s, handlers, family), { port: s.address().port }));
      });
    });
  }

  connectTcp(address: string, port: number, h: TcpHandlers): HostTcpSocket {
    const sock = net.connect({ host: address, port, noDelay: true });
    sock.once("connect", () => h.onConnect());
    bindTcp(sock, h);
    return wrapTcp(sock);
  }

  listenTcp(
    address: string,
    port: number,
    accept: (socket: HostTcpSocket, bind: (h: TcpHandlers) => void) => void,
  ): Promise<HostListener> {
    const server = net.createServer({ pauseOnConnect: true }, (sock) => {
      sock.setNoDelay(true);
      accept(wrapTcp(sock), (h) => bindTcp(sock, h));
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, address, () => {
        server.off("error", reject);
        const p = (server.address() as net.AddressInfo).port;
        resolve({ port: p, close: () => server.close() });
      });
    });
  }

  icmpEcho(): HostIcmpEcho | null {
    if (this.#icmp === undefined) this.#icmp = this.#icmpFactory();
    return this.#icmp;
  }

  systemResolvers(): string[] {
    try {
      return parseResolvConf(readFileSync("/etc/resolv.conf", "utf8"));
    } catch {
      return [];
    }
  }
}
