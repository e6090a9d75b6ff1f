/**
 * A socket's error queue (Linux IP_RECVERR / IPV6_RECVERR, ip(7), ipv6(7)): each ICMP error the kernel heard
 * about a datagram we sent waits there with the destination it was about, the first bytes of that datagram
 * and the ICMP message's type, code and sender. UDP sockets read it for unreachable ports and a router's
 * time exceeded; ping sockets for the same about an echo request (its sequence in those first bytes).
 *
 * @module
 */
import type { HostIcmpError } from "./host.ts";
import { libc } from "./libc.ts";
import { platform } from "../platform/current.ts";
import { ipv4ToString } from "../wire/bytes.ts";
import { ipv6ToString } from "../wire/ipv6.ts";

const AF_INET = 2, AF_INET6 = 10;
const SOL_IP = 0, IP_RECVERR = 11, SOL_IPV6 = 41, IPV6_RECVERR = 25;
const MSG_DONTWAIT = 0x40, MSG_ERRQUEUE = 0x2000;
/** sock_extended_err.ee_origin of an error an ICMP / ICMPv6 message caused (linux/errqueue.h). */
const SO_EE_ORIGIN_ICMP = 2, SO_EE_ORIGIN_ICMP6 = 3;
/** struct msghdr (56 bytes), then an iovec, the name (a sockaddr_in6), the payload and the control data. */
const IOV_AT = 64, NAME_AT = 80, PAYLOAD_AT = 112, PAYLOAD_BYTES = 16, CONTROL_AT = 128, CONTROL_BYTES = 128;

/**
 * The thread's reader of error queues: a msghdr whose msg_name takes the destination the error is about,
 * whose one iovec takes the first bytes of the datagram it is about and whose control buffer takes the
 * extended error (struct sock_extended_err, then the offender's address), in one ArrayBuffer whose
 * addresses are written once.
 */
export class ErrorQueueReader {
  /** The destination of the datagram the last error was about (a sockaddr_in or sockaddr_in6). */
  readonly names: Uint8Array;
  readonly namesView: DataView;
  /** Its first bytes (as many as {@linkcode payloadLength}). */
  readonly payload: Uint8Array;
  payloadLength = 0;
  /** The ICMP message behind the last error, if one was. */
  icmp: HostIcmpError | null = null;
  readonly #header: Uint8Array;
  readonly #view: DataView;
  readonly #bytes: Uint8Array;

  constructor() {
    const all = new Uint8Array(new ArrayBuffer(CONTROL_AT + CONTROL_BYTES));
    this.#bytes = all;
    this.#view = new DataView(all.buffer);
    this.#header = all.subarray(0, 56);
    this.names = all.subarray(NAME_AT, NAME_AT + 28);
    this.namesView = new DataView(all.buffer, NAME_AT, 28);
    this.payload = all.subarray(PAYLOAD_AT, PAYLOAD_AT + PAYLOAD_BYTES);
    const base = platform.addressOf(all), v = this.#view;
    v.setBigUint64(0, base + BigInt(NAME_AT), true); // msg_name
    v.setBigUint64(16, base + BigInt(IOV_AT), true); // msg_iov
    v.setBigUint64(24, 1n, true); // msg_iovlen
    v.setBigUint64(32, base + BigInt(CONTROL_AT), true); // msg_control
    v.setBigUint64(IOV_AT, base + BigInt(PAYLOAD_AT), true); // iov_base
    v.setBigUint64(IOV_AT + 8, BigInt(PAYLOAD_BYTES), true); // iov_len
  }

  /**
   * Takes the next error queued on `fd`: its errno (0 when the entry carried no extended error), or -1 when
   * the queue is empty; then {@linkcode names}, {@linkcode payload} and {@linkcode icmp} describe it.
   */
  next(fd: number): number {
    const v = this.#view;
    v.setUint32(8, 28, true); // msg_namelen: the kernel writes the lengths it filled over these
    v.setBigUint64(40, BigInt(CONTROL_BYTES), true); // msg_controllen
    const n = libc().recvmsg(fd, this.#header, MSG_ERRQUEUE | MSG_DONTWAIT);
    if (n < 0) return -1;
    this.payloadLength = Math.min(n, PAYLOAD_BYTES);
    return this.#extendedError();
  }

  /** Reads the extended error in the control data the last call filled. */
  #extendedError(): number {
    const v = this.#view, end = CONTROL_AT + Number(v.getBigUint64(40, true));
    this.icmp = null;
    for (let c = CONTROL_AT; c + 16 <= end;) {
      const len = Number(v.getBigUint64(c, true)),
        level = v.getInt32(c + 8, true),
        type = v.getInt32(c + 12, true);
      if (len < 16) return 0;
      // struct cmsghdr (16 bytes), then struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code,
      // ee_pad, ee_info, ee_data (16 bytes), then the offender's sockaddr (SO_EE_OFFENDER)
      if ((level === SOL_IP && type === IP_RECVERR) || (level === SOL_IPV6 && type === IPV6_RECVERR)) {
        if (len < 20) return 0;
        const origin = v.getUint8(c + 20);
        if ((origin === SO_EE_ORIGIN_ICMP || origin === SO_EE_ORIGIN_ICMP6) && len >= 32 + 16) {
          const at = c + 32, family = v.getUint16(at, true);
          const offender = family === AF_INET
            ? ipv4ToString(v.getUint32(at + 4, false))
            : family === AF_INET6 && len >= 32 + 28
            ? ipv6ToString(this.#bytes, at + 8)
            : "";
          if (offender) this.icmp = { type: v.getUint8(c + 21), code: v.getUint8(c + 22), offender };
        }
        return v.getUint32(c + 16, true);
      }
      c += (len + 7) & ~7;
    }
    return 0;
  }
}

let reader: ErrorQueueReader | null = null;
/** The thread's {@linkcode ErrorQueueReader}, made on first use. */
export function errorQueue(): ErrorQueueReader {
  return reader ??= new ErrorQueueReader();
}
