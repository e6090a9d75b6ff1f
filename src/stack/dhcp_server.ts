/**
 * The DHCPv4 server of the virtual gateway (RFC 2131 §4.3, options RFC 2132).
 *
 * Leases are keyed by client identifier (option 61) first, then by MAC, because a guest's MAC may change
 * at every boot while its client id does not. Static leases are keyed by MAC. Each lease expires on the
 * shared timer wheel; an offer holds its address for {@linkcode OFFER_HOLD_MS}. A full pool answers NAK
 * (REQUEST) or stays silent (DISCOVER) — never a crash, never an address outside the pool.
 *
 * @module
 */
import {
  ipv4ToString,
  mac48,
  MAC_BROADCAST,
  parseIpv4Address,
  parseMacAddress,
  WireError,
} from "../wire/bytes.ts";
import {
  BOOTREPLY,
  BOOTREQUEST,
  DHCP_CLIENT_PORT,
  DHCP_SERVER_PORT,
  type DhcpMessage,
  DhcpMessageType,
  dhcpMessageType,
  DhcpOption,
  dhcpOption,
  emitDhcp,
  optIpv4List,
  optString,
  optU16,
  optU32,
  optU8,
  parseDhcp,
} from "../wire/dhcp.ts";
import { emitUdp } from "../wire/udp.ts";
import { encodeNames } from "../wire/dns.ts";
import { pseudoHeaderSumV4 } from "../wire/checksum.ts";
import { IPPROTO_UDP } from "../wire/ipv4.ts";
import { Timer } from "./timer_wheel.ts";
import type { StackContext } from "./context.ts";

/** How long an OFFER reserves its address before another client may get it. */
export const OFFER_HOLD_MS = 30_000;
/** A DECLINEd address (conflict found by the client) stays out of the pool this long (RFC 2131 §3.1.5). */
export const DECLINE_HOLD_MS = 10 * 60_000;

interface Lease {
  key: string;
  address: number;
  mac: number;
  /** True once ACKed; false while only offered. */
  bound: boolean;
  hostname?: string;
  timer: Timer;
}

export class DhcpServer {
  #stack: StackContext;
  #byKey = new Map<string, Lease>();
  #byAddress = new Map<number, Lease>();
  #staticByMac = new Map<number, { address: number; hostname?: string }>();

  constructor(stack: StackContext) {
    this.#stack = stack;
    const c = stack.config;
    for (const l of c.staticLeases) {
      this.#staticByMac.set(parseMacAddress(l.mac)!, {
        address: parseIpv4Address(l.address)!,
        hostname: l.hostname,
      });
    }
    this.#fixedOptions(); // a bad search domain fails here, at configuration time
  }

  /**
   * Options sent in every OFFER/ACK, in RFC 2132 order. Built per reply (DHCP is rare) rather than
   * held: eight small buffers per tenant add up over a thousand idle tenants.
   */
  #fixedOptions(): [number, Uint8Array][] {
    const c = this.#stack.config;
    const p = this.#stack.plan;
    const lease = c.leaseTimeSec;
    const opts: [number, Uint8Array][] = [
      [DhcpOption.SUBNET_MASK, optU32(p.netmask)],
      [DhcpOption.ROUTER, optIpv4List([p.gateway])],
      [DhcpOption.DNS_SERVERS, optIpv4List([p.dns])],
    ];
    if (c.domainName) opts.push([DhcpOption.DOMAIN_NAME, optString(c.domainName)]);
    opts.push([DhcpOption.INTERFACE_MTU, optU16(p.mtu)]);
    opts.push([DhcpOption.BROADCAST, optU32(p.broadcast)]);
    opts.push([DhcpOption.LEASE_TIME, optU32(lease)]);
    // RFC 2131 §4.4.5 defaults: T1 = 0.5, T2 = 0.875 of the lease
    opts.push([DhcpOption.RENEWAL_TIME, optU32(Math.floor(lease / 2))]);
    opts.push([DhcpOption.REBINDING_TIME, optU32(Math.floor(lease * 7 / 8))]);
    if (c.searchDomains.length > 0) {
      const names = encodeNames(c.searchDomains);
      if (names instanceof WireError) throw new Error(`Invalid search domain list: ${names.reason}`);
      opts.push([DhcpOption.DOMAIN_SEARCH, names]);
    }
    return opts;
  }

  /** Number of leases and offers held. */
  get size(): number {
    return this.#byKey.size;
  }

  /** The bound address of the guest with this MAC, or -1. */
  addressOf(mac: number): number {
    for (const l of this.#byKey.values()) if (l.mac === mac && l.bound) return l.address;
    return -1;
  }

  /** The most recently bound lease's address, or -1 (the default target of port forwards). */
  get lastBoundAddress(): number {
    let a = -1;
    for (const l of this.#byKey.values()) if (l.bound) a = l.address;
    return a;
  }

  input(buf: Uint8Array, off: number, end: number, _srcMac: number, srcIp: number): void {
    const s = this.#stack;
    const m = parseDhcp(buf, off, end);
    if (m instanceof WireError) return s.drop("dhcp-malformed", m);
    if (m.op !== BOOTREQUEST || m.htype !== 1 || m.hlen !== 6) return s.drop("dhcp-not-ethernet-request");
    const mac = mac48(m.chaddr, 0);
    const type = dhcpMessageType(m);
    const clientId = dhcpOption(m, DhcpOption.CLIENT_ID);
    const key = clientId && clientId.length > 0 ? "id:" + Array.from(clientId).join(",") : "mac:" + mac;
    switch (type) {
      case DhcpMessageType.DISCOVER:
        return this.#discover(m, key, mac);
      case DhcpMessageType.REQUEST:
        return this.#request(m, key, mac, srcIp);
      case DhcpMessageType.RELEASE: {
        const l = this.#byKey.get(key);
        if (l && l.address === m.ciaddr) this.#remove(l);
        return;
      }
      case DhcpMessageType.DECLINE: {
        const l = this.#byKey.get(key);
        const req = dhcpOption(m, DhcpOption.REQUESTED_IP);
        if (
          l && req && req.length === 4 &&
          l.address === ((req[0] << 24 | req[1] << 16 | req[2] << 8 | req[3]) >>> 0)
        ) {
          this.#remove(l);
          this.#hold(`declined:${l.address}`, l.address, 0, DECLINE_HOLD_MS);
        }
        return;
      }
      case DhcpMessageType.INFORM:
        // RFC 2131 §4.3.5: ACK with configuration, no lease, no yiaddr, unicast to ciaddr
        return this.#reply(m, DhcpMessageType.ACK, 0, mac, false);
      default:
        return s.drop("dhcp-unknown-message-type");
    }
  }

  #discover(m: DhcpMessage, key: string, mac: number): void {
    let l = this.#byKey.get(key);
    if (!l) {
      const addr = this.#pick(mac, this.#requested(m));
      if (addr < 0) {
        this.#stack.log("warn", "DHCP pool exhausted", { tenant: this.#stack.tenant });
        return this.#stack.drop("dhcp-pool-exhausted");
      }
      l = this.#hold(key, addr, mac, OFFER_HOLD_MS);
    } else if (!l.bound) this.#stack.wheel.arm(l.timer, this.#stack.wheel.now + OFFER_HOLD_MS);
    l.mac = mac;
    this.#reply(m, DhcpMessageType.OFFER, l.address, mac, true);
  }

  #request(m: DhcpMessage, key: string, mac: number, srcIp: number): void {
    const s = this.#stack;
    const server = dhcpOption(m, DhcpOption.SERVER_ID);
    const serverId = server && server.length === 4 ? this.#u32(server) : -1;
    if (serverId >= 0 && serverId !== s.plan.gateway) {
      // RFC 2131 §4.3.2: the client chose another server; forget our offer
      const l = this.#byKey.get(key);
      if (l && !l.bound) this.#remove(l);
      return;
    }
    // SELECTING / INIT-REBOOT carry option 50; RENEWING / REBINDING carry ciaddr
    const wanted = this.#requested(m) >= 0 ? this.#requested(m) : m.ciaddr;
    if (wanted <= 0) return this.#nak(m, mac, "no address requested");
    let l = this.#byKey.get(key);
    if (l && l.address !== wanted) {
      if (!l.bound) this.#remove(l);
      l = undefined;
    }
    if (!l) {
      // INIT-REBOOT or a lease we forgot (relay restart): grant it if it is free and ours to give
      const holder = this.#byAddress.get(wanted);
      const fixed = this.#staticByMac.get(mac);
      const allowed = fixed
        ? fixed.address === wanted
        : this.#inPool(wanted) && !this.#isStaticAddress(wanted);
      if (holder || !allowed) return this.#nak(m, mac, `address ${ipv4ToString(wanted)} is not available`);
      l = this.#hold(key, wanted, mac, 0);
    }
    l.bound = true;
    l.mac = mac;
    const hn = dhcpOption(m, DhcpOption.HOSTNAME);
    if (hn) l.hostname = new TextDecoder().decode(hn);
    s.wheel.arm(l.timer, s.wheel.now + s.config.leaseTimeSec * 1000);
    s.learn(l.address, mac);
    s.counters.dhcpLeases++;
    s.log("info", "DHCP lease", {
      tenant: s.tenant,
      address: ipv4ToString(l.address),
      srcIp: ipv4ToString(srcIp),
    });
    this.#reply(m, DhcpMessageType.ACK, l.address, mac, true);
  }

  #nak(m: DhcpMessage, mac: number, why: string): void {
    this.#stack.counters.drop("dhcp-nak");
    this.#stack.log("info", "DHCP NAK", { tenant: this.#stack.tenant, why });
    this.#reply(m, DhcpMessageType.NAK, 0, mac, false, why);
  }

  #u32(b: Uint8Array): number {
    return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  }

  #requested(m: DhcpMessage): number {
    const r = dhcpOption(m, DhcpOption.REQUESTED_IP);
    return r && r.length === 4 ? this.#u32(r) : -1;
  }

  #inPool(a: number): boolean {
    return a >= this.#stack.plan.dhcpStart && a <= this.#stack.plan.dhcpEnd;
  }

  #isStaticAddress(a: number): boolean {
    for (const v of this.#staticByMac.values()) if (v.address === a) return true;
    return false;
  }

  /** A static reservation, else the requested address if free, else the lowest free pool address, else -1. */
  #pick(mac: number, requested: number): number {
    const fixed = this.#staticByMac.get(mac);
    if (fixed) return this.#byAddress.has(fixed.address) ? -1 : fixed.address;
    if (
      requested >= 0 && this.#inPool(requested) && !this.#byAddress.has(requested) &&
      !this.#isStaticAddress(requested)
    ) {
      return requested;
    }
    for (let a = this.#stack.plan.dhcpStart; a <= this.#stack.plan.dhcpEnd; a++) {
      if (!this.#byAddress.has(a) && !this.#isStaticAddress(a)) return a;
    }
    return -1;
  }

  #hold(key: string, address: number, mac: number, forMs: number): Lease {
    const l: Lease = {
      key,
      address,
      mac,
      bound: false,
      timer: new Timer(() => this.#remove(l), this.#stack),
    };
    this.#byKey.set(key, l);
    this.#byAddress.set(address, l);
    if (forMs > 0) this.#stack.wheel.arm(l.timer, this.#stack.wheel.now + forMs);
    return l;
  }

  #remove(l: Lease): void {
    this.#stack.wheel.cancel(l.timer);
    if (this.#byKey.get(l.key) === l) this.#byKey.delete(l.key);
    if (this.#byAddress.get(l.address) === l) this.#byAddress.delete(l.address);
  }

  /**
   * Sends OFFER/ACK/NAK. Destination per RFC 2131 §4.1: NAK and broadcast-flag replies go to the
   * broadcast address; a client with ciaddr gets unicast there; otherwise unicast to yiaddr at chaddr —
   * possible here because we build the Ethernet frame ourselves.
   */
  #reply(
    m: DhcpMessage,
    type: number,
    yiaddr: number,
    mac: number,
    withLease: boolean,
    message?: string,
  ): void {
    const s = this.#stack;
    const options: [number, Uint8Array][] = [[DhcpOption.MESSAGE_TYPE, optU8(type)], [
      DhcpOption.SERVER_ID,
      optU32(s.plan.gateway),
    ]];
    if (type === DhcpMessageType.NAK) {
      if (message) options.push([DhcpOption.MESSAGE, optString(message)]);
    } else {
      for (const o of this.#fixedOptions()) {
        const isLeaseOpt = o[0] === DhcpOption.LEASE_TIME || o[0] === DhcpOption.RENEWAL_TIME ||
          o[0] === DhcpOption.REBINDING_TIME;
        if (isLeaseOpt && !withLease) continue;
        options.push(o);
      }
      const fixed = this.#staticByMac.get(mac);
      if (fixed?.hostname) options.push([DhcpOption.HOSTNAME, optString(fixed.hostname)]);
      if (s.config.bootfile) options.push([DhcpOption.BOOTFILE_NAME, optString(s.config.bootfile)]);
    }
    // RFC 2131 §2: the boot file in `file` and its server in siaddr, for ROMs that read BOOTP's fields
    const file = new Uint8Array(128);
    if (type !== DhcpMessageType.NAK && s.config.bootfile) {
      file.set(new TextEncoder().encode(s.config.bootfile).subarray(0, 127)); // NUL-terminated in 128 bytes
    }
    const reply: DhcpMessage = {
      op: BOOTREPLY,
      htype: 1,
      hlen: 6,
      hops: 0,
      xid: m.xid,
      secs: 0,
      flags: m.flags & 0x8000,
      ciaddr: type === DhcpMessageType.NAK ? 0 : m.ciaddr,
      yiaddr,
      siaddr: type !== DhcpMessageType.NAK && s.config.tftp ? s.plan.gateway : 0,
      giaddr: m.giaddr,
      chaddr: m.chaddr,
      sname: new Uint8Array(64),
      file,
      options,
    };
    const L4 = 14 + 20;
    const tx = s.tx;
    const n = emitDhcp(reply, tx, L4 + 8);
    let dstIp = 0xffffffff, dstMac = MAC_BROADCAST;
    if (type !== DhcpMessageType.NAK) {
      if (m.ciaddr !== 0) {
        dstIp = m.ciaddr;
        dstMac = mac;
      } else if ((m.flags & 0x8000) === 0 && yiaddr !== 0) {
        dstIp = yiaddr;
        dstMac = mac;
      }
    }
    emitUdp(
      tx,
      L4,
      DHCP_SERVER_PORT,
      DHCP_CLIENT_PORT,
      n,
      pseudoHeaderSumV4(s.plan.gateway, dstIp, IPPROTO_UDP, 8 + n),
    );
    s.sendIpv4(s.plan.gateway, dstIp, IPPROTO_UDP, 8 + n, dstMac);
  }

  close(): void {
    for (const l of [...this.#byKey.values()]) this.#remove(l);
  }
}
