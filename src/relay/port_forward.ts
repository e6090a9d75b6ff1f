/**
 * Port forwards (QEMU's `hostfwd`): a host listener per rule, whose clients reach a guest — TCP as our SYN
 * toward the guest, UDP from gateway:clientPort. Bound for a tenant, or for the latest single-user guest.
 *
 * @module
 */
import type { Stack } from "../stack/stack.ts";
import type { HostForwardConfig } from "../stack/config.ts";
import type { Logger } from "../common/logger.ts";
import type { HostNet, HostUdpSocket } from "../host/host.ts";
import { parseIpv4Address } from "../wire/bytes.ts";
import { parseIpv6Address } from "../wire/ipv6.ts";

/**
 * Binds a QEMU-style port forward on the host: TCP connections become our SYN toward the guest, UDP
 * datagrams reach the guest from gateway:clientPort. `target` names the stack at the moment a client
 * arrives (a tenant's own, or the latest single-user guest); with none, the client is refused.
 */
export async function bindForward(
  host: HostNet,
  f: HostForwardConfig,
  target: () => Stack | null,
  log: Logger,
  tenant: string,
  onNoGuest: () => void,
): Promise<BoundForward> {
  let bound: BoundForward;
  try {
    if (f.protocol === "tcp") {
      const listener = await host.listenTcp(f.hostAddress, f.hostPort, (sock, bind) => {
        const stack = target();
        if (!stack) {
          onNoGuest();
          sock.destroy();
          return;
        }
        try {
          stack.acceptTcpForward(f, sock, bind);
        } catch (e) {
          sock.destroy(true);
          stack.onFault(e, "tcp.forward");
        }
      });
      bound = { config: { ...f, hostPort: listener.port }, close: () => listener.close() };
    } else {
      // parsed once, not per datagram
      const guest6 = f.guestAddress.includes(":") ? parseIpv6Address(f.guestAddress) : null;
      const guestIp = f.guestAddress && !guest6 ? parseIpv4Address(f.guestAddress)! : -1;
      const sock: HostUdpSocket & { port: number } = await host.bindUdp(f.hostAddress, f.hostPort, {
        onMessage: (data, address, port) => {
          const stack = target();
          if (!stack) return onNoGuest();
          try {
            if (!stack.udpForwardInput(sock, guest6 ?? guestIp, f.guestPort, data, address, port)) {
              stack.drop("udp-forward-no-guest");
            }
          } catch (e) {
            stack.onFault(e, "udp.forward");
          }
        },
        onError: (code) => log("warn", "UDP port forward socket error", { tenant, code }),
      });
      bound = { config: { ...f, hostPort: sock.port }, close: () => sock.close() };
    }
  } catch (e) {
    // "bind: EADDRINUSE" alone does not say which of several forwards failed
    const why = e instanceof Error ? e.message : String(e);
    throw Object.assign(new Error(`port forward ${f.protocol}:${f.hostAddress}:${f.hostPort}: ${why}`), {
      code: (e as { code?: string }).code,
    });
  }
  log("info", "port forward", {
    tenant,
    protocol: f.protocol,
    host: `${f.hostAddress}:${bound.config.hostPort}`,
    guestPort: f.guestPort,
  });
  return bound;
}

/** A bound port forward of a tenant. */
export interface BoundForward {
  config: HostForwardConfig;
  close(): void;
}
