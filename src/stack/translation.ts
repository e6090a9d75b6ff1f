/**
 * The tenant's address translation table: which real host address a virtual destination dials.
 * By default (single-user mode, as libslirp) the gateway 10.0.2.2 means the relay host's 127.0.0.1;
 * config adds entries (gvisor-tap-vsock's NAT table). Destinations outside the virtual network pass
 * unchanged; other addresses inside it have no host behind them.
 *
 * @module
 */
import { parseIpv4Address, u32 } from "../wire/bytes.ts";
import { ipv6Equal, ipv6InPrefix, isLinkLocalV6, isMulticastV6, parseIpv6Address } from "../wire/ipv6.ts";
import type { AddressPlan, StackConfig } from "./config.ts";

/** 127.0.0.1 */
export const LOOPBACK_V4 = 0x7f000001;
/** ::1 */
export const LOOPBACK_V6: Uint8Array = parseIpv6Address("::1")!;
const MAPPED_V4_PREFIX = parseIpv6Address("::ffff:0:0")!;
const NAT64_PREFIX = parseIpv6Address("64:ff9b::")!;

/** The IPv4 address inside an IPv4-mapped (::ffff:0:0/96) IPv6 address at `a[off]`, or -1. */
export function mappedIpv4(a: Uint8Array, off: number): number {
  return ipv6InPrefix(a, off, MAPPED_V4_PREFIX, 96) ? u32(a, off + 12) : -1;
}

/** The IPv4 address a NAT64 well-known-prefix address (64:ff9b::/96, RFC 6052) stands for, or -1. */
export function nat64Ipv4(a: Uint8Array, off: number): number {
  return ipv6InPrefix(a, off, NAT64_PREFIX, 96) ? u32(a, off + 12) : -1;
}

export class TranslationTable {
  #map = new Map<number, number>();
  #plan: AddressPlan;

  #gatewayToLoopback: boolean;
  /** guestfwd: virtual address → port → the host service it reaches. */
  #guestForwards = new Map<number, Map<number, { address: string; port: number }>>();

  constructor(config: StackConfig, plan: AddressPlan) {
    this.#plan = plan;
    this.#gatewayToLoopback = config.gatewayToLoopback;
    for (const g of config.guestfwd ?? []) {
      const a = parseIpv4Address(g.virtualAddress)!;
      const ports = this.#guestForwards.get(a) ?? new Map();
      ports.set(g.virtualPort, { address: g.hostAddress, port: g.hostPort });
      this.#guestForwards.set(a, ports);
    }
    if (config.gatewayToLoopback) this.#map.set(plan.gateway, LOOPBACK_V4);
    for (const e of config.nat) this.#map.set(parseIpv4Address(e.virtual)!, parseIpv4Address(e.real)!);
  }

  /** The real address for a guest's destination, or -1 when nothing is behind it. */
  toReal(virtual: number): number {
    const real = this.#map.get(virtual);
    if (real !== undefined) return real;
    if (((virtual & this.#plan.netmask) >>> 0) === this.#plan.network) return -1;
    return virtual;
  }

  /**
   * The real IPv6 address for a guest's IPv6 destination at `a[off]`, or null when nothing is behind it:
   * prefix::2 is the host's ::1 where the gateway maps to loopback; the rest of the tenant's prefix,
   * link-local and multicast addresses have no host behind them; others pass unchanged (a view, not a copy).
   */
  toReal6(a: Uint8Array, off: number): Uint8Array | null {
    const v6 = this.#plan.v6;
    if (!v6) return null;
    if (ipv6Equal(a, off, v6.gateway, 0)) return this.#gatewayToLoopback ? LOOPBACK_V6 : null;
    if (ipv6InPrefix(a, off, v6.prefix, v6.prefixLength)) return null;
    if (isLinkLocalV6(a, off) || isMulticastV6(a, off)) return null;
    return a.subarray(off, off + 16);
  }

  /**
   * The address the guest sees for the host's `real` one (a reply's source, a router that answered): the
   * host's loopback is the gateway where the gateway maps to it, and nothing otherwise (-1).
   */
  toVirtual(real: number): number {
    if ((real >>> 24) === 127) return this.#gatewayToLoopback ? this.#plan.gateway : -1;
    return real;
  }

  /** {@linkcode toVirtual} for the host's IPv6 address at `a[off]`: ::1 is prefix::2; null for none. */
  toVirtual6(a: Uint8Array, off: number): Uint8Array | null {
    if (ipv6Equal(a, off, LOOPBACK_V6, 0)) {
      return this.#gatewayToLoopback ? this.#plan.v6?.gateway ?? null : null;
    }
    return this.toReal6(a, off) === null ? null : a.subarray(off, off + 16);
  }

  /** Whether `virtual` is a translated address (or a guestfwd's) the gateway answers ARP for. */
  has(virtual: number): boolean {
    return this.#map.has(virtual) || this.#guestForwards.has(virtual);
  }

  /**
   * The host service a guestfwd puts at `virtual:port`, or null. The operator named it: it is dialled
   * whatever the tenant's egress policy says (as QEMU's guestfwd works under `restrict=on`).
   */
  guestForward(virtual: number, port: number): { address: string; port: number } | null {
    return this.#guestForwards.get(virtual)?.get(port) ?? null;
  }
}
