/**
 * One tenant's address plan and service settings, with libslirp-compatible defaults, and the validation
 * that refuses a plan that cannot work.
 *
 * @module
 */
import { ipv4ToString, parseCidr, parseIpv4Address, parseMacAddress } from "../wire/bytes.ts";
import { ipv6ToString, parseCidrV6, parseIpv6Address } from "../wire/ipv6.ts";
import type { PolicyConfig } from "./policy.ts";

/** A static DNS record answered by the stack itself. */
export interface DnsRecordConfig {
  /** Lower-case name without trailing dot, e.g. "host.slirp.internal". */
  name: string;
  /** IPv4 address (an A record) or IPv6 address (an AAAA record); a name may have one of each. */
  address: string;
}

/** A virtual → real address translation (gvisor-tap-vsock's NAT table). */
export interface NatEntryConfig {
  /** Address inside the virtual network, e.g. "10.0.2.2". */
  virtual: string;
  /** Address the relay dials instead, e.g. "127.0.0.1". */
  real: string;
}

/** A DHCP reservation. */
export interface StaticLeaseConfig {
  mac: string;
  address: string;
  hostname?: string;
}

/** A port forward, QEMU hostfwd semantics: connections to host:hostPort reach guest:guestPort. */
export interface HostForwardConfig {
  protocol: "tcp" | "udp";
  hostAddress: string;
  hostPort: number;
  /** Empty: the guest's DHCP address. */
  guestAddress: string;
  guestPort: number;
}

/** Everything a tenant's stack is configured by. All fields have defaults; see {@linkcode defaultStackConfig}. */
export interface StackConfig {
  /** Network in CIDR notation. */
  net: string;
  gateway: string;
  dns: string;
  dhcpStart: string;
  /** Number of addresses in the DHCP pool, from dhcpStart. */
  dhcpPoolSize: number;
  /** DHCP lease time in seconds. */
  leaseTimeSec: number;
  gatewayMac: string;
  mtu: number;
  /** Upstream resolvers "ip:port" (port defaults to 53). Empty: the host's /etc/resolv.conf. */
  dnsUpstreams: string[];
  dnsRecords: DnsRecordConfig[];
  /** DHCP option 15. */
  domainName: string;
  /** DHCP option 119. */
  searchDomains: string[];
  nat: NatEntryConfig[];
  /** Map the gateway address to the relay host's loopback (single-user mode, as libslirp does). */
  gatewayToLoopback: boolean;
  staticLeases: StaticLeaseConfig[];
  hostfwd: HostForwardConfig[];
  policy: PolicyConfig;
  /** UDP flow idle expiry. */
  udpIdleSec: number;
  /** Concurrent UDP flows per tenant. */
  maxUdpFlows: number;
  /** Concurrent TCP flows per tenant. */
  maxTcpFlows: number;
  /** DNS upstream timeout per attempt. */
  dnsTimeoutMs: number;
  /** New TCP connections plus new UDP flows per second; 0 = unlimited. */
  newFlowsPerSecond: number;
  /**
   * Bytes the tenant's flows may hold in all (TCP send, receive and out-of-order buffers); 0 = no limit.
   */
  bufferedBytes: number;
  /** IPv6 beside IPv4: router advertisements for SLAAC in `net6`, v6 flows to the world. */
  ipv6: boolean;
  /** The guest's IPv6 prefix, a /64 (SLAAC needs 64 bits of interface identifier, RFC 4862 §5.5.3). */
  net6: string;
  /**
   * QEMU's `restrict=on`: the guest reaches nothing beyond the relay's own services (DHCP, DNS, echo to the
   * gateway) and its `guestfwd` entries; port forwards into it still work.
   */
  restrict: boolean;
  /** QEMU's `guestfwd`: a virtual address and port inside the network that reach a host service. */
  guestfwd: GuestForwardConfig[];
  /** QEMU's `tftp=`: the host directory the gateway's TFTP server reads from; "" for no TFTP server. */
  tftp: string;
  /** QEMU's `bootfile=`: the boot file DHCP names (option 67 and BOOTP's file field); "" for none. */
  bootfile: string;
}

/** A guest forward, `tcp:10.0.2.100:80-127.0.0.1:8080`: connections to the virtual side dial the host side. */
export interface GuestForwardConfig {
  protocol: "tcp";
  virtualAddress: string;
  virtualPort: number;
  hostAddress: string;
  hostPort: number;
}

/**
 * Parses QEMU's `guestfwd=[tcp]:SERVER:PORT-DEV` where DEV is a host service as `HOST:PORT` (or QEMU's
 * chardev form `tcp:HOST:PORT`); the server address must lie inside the guest network (checked with the plan).
 */
export function parseGuestForward(text: string): GuestForwardConfig {
  const m = /^(?:tcp)?:(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})-(?:tcp:)?([^:]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/
    .exec(text.trim());
  const host = m ? m[3].replace(/^\[(.*)\]$/, "$1") : "";
  if (
    !m || parseIpv4Address(m[1]) === null ||
    (parseIpv4Address(host) === null && parseIpv6Address(host) === null) ||
    Number(m[2]) < 1 || Number(m[2]) > 65535 || Number(m[4]) < 1 || Number(m[4]) > 65535
  ) {
    throw new Error(`Invalid --guestfwd "${text}": expected tcp:GUESTADDR:PORT-HOSTADDR:PORT`);
  }
  return {
    protocol: "tcp",
    virtualAddress: m[1],
    virtualPort: Number(m[2]),
    hostAddress: host,
    hostPort: Number(m[4]),
  };
}

/** libslirp's plan: 10.0.2.0/24, gateway .2, DNS .3, leases from .15, MTU 1500. */
export function defaultStackConfig(): StackConfig {
  return {
    net: "10.0.2.0/24",
    gateway: "10.0.2.2",
    dns: "10.0.2.3",
    dhcpStart: "10.0.2.15",
    dhcpPoolSize: 16,
    leaseTimeSec: 86400,
    gatewayMac: "52:55:0a:00:02:02",
    mtu: 1500,
    dnsUpstreams: [],
    dnsRecords: [{ name: "host.slirp.internal", address: "10.0.2.2" }],
    domainName: "",
    searchDomains: [],
    nat: [],
    gatewayToLoopback: true,
    staticLeases: [],
    hostfwd: [],
    policy: { defaultAction: "allow", rules: [] },
    udpIdleSec: 60,
    maxUdpFlows: 1024,
    maxTcpFlows: 4096,
    dnsTimeoutMs: 2000,
    newFlowsPerSecond: 0,
    // single-user mode: the guest is the user's own; multi-tenant quotas default to 8 MiB per tenant
    bufferedBytes: 64 * 1024 * 1024,
    ipv6: true,
    // a ULA prefix, as libslirp's default fec0::/64 is deprecated site-local space (RFC 3879)
    net6: "fd00::/64",
    restrict: false,
    tftp: "",
    bootfile: "",
    guestfwd: [],
  };
}

/** A DNS upstream resolver. */
export interface Upstream {
  /** An IPv4 address, or an IPv6 one in its canonical text (RFC 5952: how the host names a reply's sender). */
  address: string;
  port: number;
  family: 4 | 6;
}

/**
 * Parses a DNS upstream — "1.2.3.4", "1.2.3.4:5353", "::1", "[::1]" or "[fd00::1]:5353" — into an upstream;
 * throws on anything else.
 */
export function parseUpstream(text: string): Upstream {
  const t = text.trim();
  const m = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(t) ?? /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/.exec(t) ??
    /^([0-9a-fA-F]*:[0-9a-fA-F:.]*)()$/.exec(t);
  const v4 = m ? parseIpv4Address(m[1]) : null;
  const v6 = m && v4 === null ? parseIpv6Address(m[1]) : null;
  const port = m?.[2] ? Number(m[2]) : 53;
  if (!m || (v4 === null && !v6) || port > 65535 || port === 0) {
    throw new Error(`Invalid DNS upstream "${text}": expected IPV4[:PORT], IPV6 or [IPV6]:PORT`);
  }
  return v6 ? { address: ipv6ToString(v6, 0), port, family: 6 } : { address: m[1], port, family: 4 };
}

/**
 * Parses QEMU's hostfwd syntax `[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport` (no protocol means
 * tcp, as in QEMU); either address may be IPv6 in brackets (`tcp:[::1]:2222-[fd00::15]:22`).
 */
export function parseHostForward(text: string): HostForwardConfig {
  const addr = String.raw`(\[[0-9a-fA-F:.]*\]|[^:\[\]]*)`;
  const m = new RegExp(`^(tcp|udp)?:${addr}:(\\d{1,5})-${addr}:(\\d{1,5})$`).exec(text.trim());
  if (!m) {
    throw new Error(
      `Invalid --hostfwd "${text}": expected tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT ` +
        "(IPv6 addresses in brackets)",
    );
  }
  const unbracket = (a: string) => a.replace(/^\[(.*)\]$/, "$1");
  return checkHostForward({
    protocol: (m[1] ?? "tcp") as "tcp" | "udp",
    hostAddress: m[2] === "" ? "127.0.0.1" : unbracket(m[2]),
    hostPort: Number(m[3]),
    guestAddress: unbracket(m[4]),
    guestPort: Number(m[5]),
  }, `--hostfwd "${text}"`);
}

/**
 * Checks a port forward given as an object (admin API, config file) as strictly as the string form:
 * protocol, IPv4 or IPv6 addresses, ports in range; throws naming `what`.
 */
export function checkHostForward(f: unknown, what = "hostfwd"): HostForwardConfig {
  const o = f as Partial<HostForwardConfig> | null;
  const bad = (why: string) => new Error(`Invalid ${what}: ${why}`);
  const isAddress = (a: string) => parseIpv4Address(a) !== null || parseIpv6Address(a) !== null;
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw bad("expected an object or a string");
  if (o.protocol !== "tcp" && o.protocol !== "udp") throw bad('protocol must be "tcp" or "udp"');
  if (typeof o.hostAddress !== "string" || !isAddress(o.hostAddress)) {
    throw bad("hostAddress must be an IPv4 or IPv6 address");
  }
  if (!Number.isInteger(o.hostPort) || o.hostPort! < 0 || o.hostPort! > 65535) {
    throw bad("hostPort must be 0..65535");
  }
  const guest = o.guestAddress ?? "";
  if (typeof guest !== "string" || (guest !== "" && !isAddress(guest))) {
    throw bad('guestAddress must be an IPv4 or IPv6 address or ""');
  }
  if (!Number.isInteger(o.guestPort) || o.guestPort! < 1 || o.guestPort! > 65535) {
    throw bad("guestPort must be 1..65535");
  }
  return {
    protocol: o.protocol,
    hostAddress: o.hostAddress,
    hostPort: o.hostPort!,
    guestAddress: guest,
    guestPort: o.guestPort!,
  };
}

/** A validated plan with addresses as numbers, what the stack runs on. */
export interface AddressPlan {
  network: number;
  prefix: number;
  netmask: number;
  broadcast: number;
  gateway: number;
  dns: number;
  dhcpStart: number;
  dhcpEnd: number;
  gatewayMac: number;
  mtu: number;
  /** The IPv6 side, or null when IPv6 is off. */
  v6: Ipv6Plan | null;
}

/** A tenant's IPv6 addresses, 16 bytes each (libslirp's layout: gateway prefix::2, DNS prefix::3). */
export interface Ipv6Plan {
  prefix: Uint8Array;
  prefixLength: number;
  /** prefix::2: "the host", as 10.0.2.2. */
  gateway: Uint8Array;
  /** prefix::3: the DNS forwarder. */
  dns: Uint8Array;
  /** fe80::2: the router's link-local address, source of its advertisements (RFC 4861 §4.2). */
  linkLocal: Uint8Array;
}

/** Smallest MTU IPv4 allows (RFC 791: 68); largest: what QEMU's stream reader and a u16 length allow. */
export const MIN_MTU = 576;
export const MAX_MTU = 65520;

/**
 * Puts `c` on network `net` (CIDR) with libslirp's layout inside it: gateway .2, DNS .3, DHCP from .15, and
 * host.slirp.internal naming the gateway. Throws on a bad CIDR.
 */
export function useNetwork(c: StackConfig, net: string, what = "network"): void {
  const cidr = parseCidr(net);
  if (!cidr) throw new Error(`Invalid ${what} "${net}": expected CIDR such as 10.0.2.0/24`);
  c.net = `${ipv4ToString(cidr.network)}/${cidr.prefix}`;
  c.gateway = ipv4ToString(cidr.network + 2);
  c.dns = ipv4ToString(cidr.network + 3);
  c.dhcpStart = ipv4ToString(cidr.network + 15);
  c.dnsRecords = [{ name: "host.slirp.internal", address: c.gateway }];
}

/** Validates `c` and derives the numeric plan. Throws an Error whose message says what is wrong. */
export function resolvePlan(c: StackConfig): AddressPlan {
  const cidr = parseCidr(c.net);
  if (!cidr) throw new Error(`Invalid network "${c.net}": expected CIDR such as 10.0.2.0/24`);
  if (cidr.prefix < 8 || cidr.prefix > 29) {
    throw new Error(`Invalid network "${c.net}": prefix must be between /8 and /29`);
  }
  const netmask = (0xffffffff << (32 - cidr.prefix)) >>> 0;
  const broadcast = (cidr.network | ~netmask) >>> 0;
  const inNet = (name: string, text: string): number => {
    const a = parseIpv4Address(text);
    if (a === null) throw new Error(`Invalid ${name} "${text}": not an IPv4 address`);
    if (((a & netmask) >>> 0) !== cidr.network || a === cidr.network || a === broadcast) {
      throw new Error(`Invalid ${name} ${text}: not a host address inside ${c.net}`);
    }
    return a;
  };
  const gateway = inNet("gateway", c.gateway);
  const dns = inNet("DNS address", c.dns);
  const dhcpStart = inNet("DHCP start", c.dhcpStart);
  if (!Number.isInteger(c.dhcpPoolSize) || c.dhcpPoolSize < 1) {
    throw new Error(`Invalid DHCP pool size ${c.dhcpPoolSize}: must be a positive integer`);
  }
  const dhcpEnd = dhcpStart + c.dhcpPoolSize - 1;
  if (dhcpEnd >= broadcast) {
    throw new Error(`DHCP pool ${c.dhcpStart} + ${c.dhcpPoolSize} runs past the end of ${c.net}`);
  }
  for (const [name, a] of [["gateway", gateway], ["DNS address", dns]] as const) {
    if (a >= dhcpStart && a <= dhcpEnd) {
      throw new Error(`The ${name} ${ipv4ToString(a)} lies inside the DHCP pool`);
    }
  }
  const gatewayMac = parseMacAddress(c.gatewayMac);
  if (gatewayMac === null) throw new Error(`Invalid gateway MAC "${c.gatewayMac}"`);
  if (!Number.isInteger(c.mtu) || c.mtu < MIN_MTU || c.mtu > MAX_MTU) {
    throw new Error(`Invalid MTU ${c.mtu}: must be between ${MIN_MTU} and ${MAX_MTU}`);
  }
  for (const u of c.dnsUpstreams) parseUpstream(u);
  for (const r of c.dnsRecords) {
    if (parseIpv4Address(r.address) === null && parseIpv6Address(r.address) === null) {
      throw new Error(`Invalid DNS record ${r.name}=${r.address}`);
    }
  }
  for (const e of c.nat) {
    if (parseIpv4Address(e.virtual) === null || parseIpv4Address(e.real) === null) {
      throw new Error(`Invalid NAT entry ${e.virtual}=${e.real}`);
    }
  }
  for (const l of c.staticLeases) {
    if (parseMacAddress(l.mac) === null) throw new Error(`Invalid static lease MAC "${l.mac}"`);
    inNet("static lease address", l.address);
  }
  for (const g of c.guestfwd ?? []) {
    const a = inNet("guestfwd address", g.virtualAddress);
    if (a === gateway || a === dns || (a >= dhcpStart && a <= dhcpEnd)) {
      throw new Error(`Invalid guestfwd address ${g.virtualAddress}: the gateway, DNS or a DHCP address`);
    }
  }
  return {
    network: cidr.network,
    prefix: cidr.prefix,
    netmask,
    broadcast,
    gateway,
    dns,
    dhcpStart,
    dhcpEnd,
    gatewayMac,
    mtu: c.mtu,
    v6: c.ipv6 === false ? null : resolvePlan6(c.net6),
  };
}

/** The IPv6 plan of prefix `net6`; throws when it is not a unicast /64. */
export function resolvePlan6(net6: string): Ipv6Plan {
  const cidr = parseCidrV6(net6);
  if (!cidr || cidr.prefix !== 64) {
    throw new Error(`Invalid IPv6 network "${net6}": expected a /64 prefix such as fd00::/64`);
  }
  const p = cidr.network;
  if (p[0] === 0xff || (p[0] === 0xfe && (p[1] & 0xc0) === 0x80) || p.every((b) => b === 0)) {
    throw new Error(`Invalid IPv6 network "${net6}": not a unicast prefix`);
  }
  const host = (n: number) => {
    const a = p.slice();
    a[15] = n;
    return a;
  };
  return {
    prefix: p,
    prefixLength: 64,
    gateway: host(2),
    dns: host(3),
    linkLocal: parseIpv6Address("fe80::2")!,
  };
}
