/**
 * The relay host's own addresses: loopback, 0.0.0.0 / ::, and every interface's IPv4 and IPv6 address. A tenant that may
 * reach some public address must still not reach another tenant's ports through the host's own address
 * (a port bound on 0.0.0.0 answers on all of them), so the cross-tenant guard asks here.
 *
 * Interfaces come and go (DHCP renewals, VPNs): the set is read again when older than a few seconds, at
 * the next question — no timer runs for it.
 *
 * @module
 */
import { parseIpv4Address } from "../wire/bytes.ts";
import { ipv6ToString, isUnspecifiedV6, parseIpv6Address } from "../wire/ipv6.ts";
import { platform } from "../platform/current.ts";

/** How long a read of the interface list is trusted. */
const REFRESH_MS = 5000;

export class HostAddresses {
  #set = new Set<number>();
  /** IPv6 addresses in RFC 5952 text (a new flow asks, not a packet). */
  #set6 = new Set<string>();
  #readAt = -Infinity;
  #read: () => { family: string; address: string }[];
  /** Why the interface list could not be read (then only loopback and 0.0.0.0 count as the host's). */
  error: string | null = null;

  constructor(read: () => { family: string; address: string }[] = () => platform.networkAddresses()) {
    this.#read = read;
  }

  /** Whether `a` reaches this host: 0.0.0.0/8, 127.0.0.0/8 or an interface's address. */
  has(a: number, now = performance.now()): boolean {
    if (a >>> 24 === 127 || a >>> 24 === 0) return true;
    if (now - this.#readAt > REFRESH_MS) this.#refresh(now);
    return this.#set.has(a);
  }

  /** Whether the IPv6 address `a` (16 bytes) reaches this host: ::, ::1 or an interface's address. */
  has6(a: Uint8Array, now = performance.now()): boolean {
    if (isUnspecifiedV6(a, 0)) return true;
    if (now - this.#readAt > REFRESH_MS) this.#refresh(now);
    return this.#set6.has(ipv6ToString(a, 0));
  }

  #refresh(now: number): void {
    this.#readAt = now;
    try {
      const next = new Set<number>();
      const next6 = new Set<string>(["::1"]);
      for (const i of this.#read()) {
        if (i.family === "IPv6") {
          // a link-local address carries its zone ("fe80::1%eth0"): the address is what a flow names
          const a = parseIpv6Address(i.address.replace(/%.*$/, ""));
          if (a) next6.add(ipv6ToString(a, 0));
          continue;
        }
        if (i.family !== "IPv4") continue;
        const a = parseIpv4Address(i.address);
        if (a !== null) next.add(a);
      }
      this.#set = next;
      this.#set6 = next6;
      this.error = null;
    } catch (e) {
      this.error = (e as Error).message;
    }
  }
}
