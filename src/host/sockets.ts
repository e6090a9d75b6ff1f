/**
 * The relay's sockets on this machine, chosen here once: our epoll loop (epoll_loop.ts, through FFI) on Linux
 * where FFI is allowed, else the runtime's own (node:net and node:dgram, Deno listeners).
 * `SLIRP_SOCKETS=runtime` forces the latter (see epollAvailable).
 *
 * @module
 */
import type { HostDatagramSocket, HostIcmpEcho, HostNet } from "./host.ts";
import { bindUnixDatagram } from "./unix_datagram.ts";
import { deferUntilIdle, epollAvailable, watchReadable } from "./epoll_loop.ts";
import { IcmpSocket } from "./icmp_socket.ts";
import { EpollHost } from "./epoll_host.ts";
import { NodeHost } from "./node_host.ts";
import { type AcceptedStream, listenStream, type StreamListener } from "./stream_listener.ts";

export interface HostSockets {
  readonly kind: "epoll" | "runtime";
  /** Host TCP, UDP and ICMP for the tenants' stacks. */
  readonly net: HostNet;
  /** Listens for guest streams on `url` (tcp:// or unix://). */
  listenStream(url: string, onAccept: (c: AcceptedStream) => void): StreamListener;
  /** Binds a UNIX datagram socket for guests that send a frame per datagram (our loop only). */
  bindDatagram(path: string): HostDatagramSocket;
  /** When a guest stream's frame writer flushes: on our loop, once it idles; else after the current task. */
  readonly flushSchedule: ((flush: () => void) => void) | undefined;
}

/** The sockets to use; `openIcmp` opens the shared ICMP echo socket on first use. */
export function hostSockets(openIcmp: () => HostIcmpEcho | null): HostSockets {
  const epoll = epollAvailable();
  // on our loop the ping socket is one more watched descriptor
  const icmpOnLoop = () => {
    const s = openIcmp();
    if (s instanceof IcmpSocket) s.useLoop(watchReadable);
    return s;
  };
  return {
    kind: epoll ? "epoll" : "runtime",
    net: epoll ? new EpollHost(icmpOnLoop) : new NodeHost(openIcmp),
    listenStream: (url, onAccept) => listenStream(url, onAccept, epoll),
    bindDatagram: (path) => {
      if (!epoll) {
        throw new Error(
          `Cannot listen for datagrams at ${path}: datagram guests need the relay's own socket loop ` +
            '(Linux, FFI allowed, SLIRP_SOCKETS not "runtime")',
        );
      }
      return bindUnixDatagram(path);
    },
    flushSchedule: epoll ? deferUntilIdle : undefined,
  };
}
