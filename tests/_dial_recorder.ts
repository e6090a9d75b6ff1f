/**
 * A host that dials nothing: every TCP connect, UDP send and ICMP echo the stack asks for is recorded and
 * refused. Policy tests run on it, so that a regressed rule shows up as a recorded dial instead of a real
 * packet to a private or metadata address.
 */
import type {
  HostIcmpEcho,
  HostListener,
  HostNet,
  HostTcpSocket,
  HostUdpSocket,
  TcpHandlers,
  UdpHandlers,
} from "../src/host/host.ts";

export interface Dial {
  protocol: "tcp" | "udp" | "icmp";
  address: string;
  port: number;
}

export class DialRecorder implements HostNet {
  readonly dials: Dial[] = [];

  constructor(readonly now: () => number) {}

  openUdp(_handlers: UdpHandlers): HostUdpSocket {
    return {
      sendTo: (_data, address, port) => void this.dials.push({ protocol: "udp", address, port }),
      close: () => {},
    };
  }

  bindUdp(): Promise<HostUdpSocket & { port: number }> {
    return Promise.reject(new Error("DialRecorder binds nothing"));
  }

  connectTcp(address: string, port: number, handlers: TcpHandlers): HostTcpSocket {
    this.dials.push({ protocol: "tcp", address, port });
    queueMicrotask(() => handlers.onError("ECONNREFUSED"));
    return {
      write: () => true,
      bufferedAmount: 0,
      end: () => {},
      destroy: () => {},
      pause: () => {},
      resume: () => {},
      remoteAddress: address,
      remotePort: port,
    };
  }

  listenTcp(): Promise<HostListener> {
    return Promise.reject(new Error("DialRecorder listens on nothing"));
  }

  icmpEcho(): HostIcmpEcho {
    return {
      echo: (address) => {
        this.dials.push({ protocol: "icmp", address, port: 0 });
        return false;
      },
    };
  }

  systemResolvers(): string[] {
    return [];
  }
}
