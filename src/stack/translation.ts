/**
 * The tenant's address translation table: which real host address a virtual destination dials.
 * By default (single-user mode, as libslirp) the gateway 10.0.2.2 means the relay host's 127.0.0.1;
 * config adds entries (gvisor-tap-vsock's NAT table). Destinations outside the virtual network pass
 * unchanged; other addresses inside it have no host behind them.
 *
 * @module
 */
import { parseIpv4Address } from "../wire/bytes.ts";
import type { AddressPlan, StackConfig } from "./config.ts";

/** 127.0.0.1 */
export const LOOPBACK_V4 = 0x7f000001;

export class TranslationTable {
  #map = new Map<number, number>();
  #plan: AddressPlan;

  constructor(config: StackConfig, plan: AddressPlan) {
    this.#plan = plan;
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

  /** Whether `virtual` is a translated address the gateway answers ARP for. */
  has(virtual: number): boolean {
    return this.#map.has(virtual);
  }
}
