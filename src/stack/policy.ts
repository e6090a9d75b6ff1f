/**
 * Egress policy: the one function every outbound flow passes before the relay dials anything.
 * Rules are tried in order, the first match decides; no match falls to the default action.
 *
 * @module
 */
import { parseCidr } from "../wire/bytes.ts";
import { ipv6InPrefix, parseCidrV6 } from "../wire/ipv6.ts";

export type PolicyAction = "allow" | "deny";
export type PolicyProtocol = "tcp" | "udp" | "icmp";

/**
 * One rule as written in config: `{ "action": "deny", "cidr": "169.254.0.0/16", "ports": "80-443" }`; the CIDR
 * may be IPv6 (`"fc00::/7"`), and then it applies to IPv6 destinations.
 */
export interface PolicyRuleConfig {
  action: PolicyAction;
  cidr: string;
  /** "80", "1000-2000"; omitted means every port. */
  ports?: string;
  /** Omitted means every protocol. */
  protocol?: PolicyProtocol;
}

export interface PolicyConfig {
  defaultAction: PolicyAction;
  rules: PolicyRuleConfig[];
}

interface CompiledRule {
  allow: boolean;
  network: number;
  mask: number;
  portLo: number;
  portHi: number;
  protocol: PolicyProtocol | null;
}

/** An IPv6 rule: the prefix as 16 bytes and its length. */
interface CompiledRule6 {
  allow: boolean;
  network: Uint8Array;
  prefix: number;
  portLo: number;
  portHi: number;
  protocol: PolicyProtocol | null;
}

/** A compiled policy; `check` is allocation-free. */
export class EgressPolicy {
  #rules: CompiledRule[] = [];
  #rules6: CompiledRule6[] = [];
  #defaultAllow: boolean;
  /** QEMU's `restrict=on`: nothing leaves, whatever the rules say (forwards and the relay's services stay). */
  readonly restricted: boolean;

  /**
   * @param restricted refuse every destination (`--restrict`)
   * @throws Error naming the rule that does not parse
   */
  constructor(config: PolicyConfig, restricted = false) {
    this.restricted = restricted;
    this.#defaultAllow = config.defaultAction === "allow";
    for (const r of config.rules) {
      if (r.action !== "allow" && r.action !== "deny") throw new Error(`Invalid policy action "${r.action}"`);
      let portLo = 0, portHi = 65535;
      if (r.ports !== undefined) {
        const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(String(r.ports));
        if (!m) throw new Error(`Invalid policy port range "${r.ports}"`);
        portLo = Number(m[1]);
        portHi = m[2] === undefined ? portLo : Number(m[2]);
        if (portHi > 65535 || portLo > portHi) throw new Error(`Invalid policy port range "${r.ports}"`);
      }
      const allow = r.action === "allow", protocol = r.protocol ?? null;
      const c = parseCidr(r.cidr);
      const c6 = c ? null : parseCidrV6(r.cidr);
      if (c) {
        const mask = c.prefix === 0 ? 0 : (0xffffffff << (32 - c.prefix)) >>> 0;
        this.#rules.push({ allow, network: c.network, mask, portLo, portHi, protocol });
      } else if (c6) {
        this.#rules6.push({ allow, network: c6.network, prefix: c6.prefix, portLo, portHi, protocol });
      } else {
        throw new Error(`Invalid policy rule CIDR "${r.cidr}"`);
      }
    }
  }

  /**
   * Whether a flow to the real (translated) destination may be opened.
   * @param port destination port; 0 for ICMP
   */
  check(protocol: PolicyProtocol, address: number, port: number): boolean {
    if (this.restricted) return false;
    for (const r of this.#rules) {
      if (((address & r.mask) >>> 0) !== r.network) continue;
      if (port < r.portLo || port > r.portHi) continue;
      if (r.protocol !== null && r.protocol !== protocol) continue;
      return r.allow;
    }
    return this.#defaultAllow;
  }

  /**
   * {@linkcode check} for an IPv6 destination, the 16 bytes at `a[off]`: the IPv6 rules in order, then the
   * default.
   */
  check6(protocol: PolicyProtocol, a: Uint8Array, off: number, port: number): boolean {
    return this.rule6(protocol, a, off, port) ?? this.#defaultAllow;
  }

  /** The first matching IPv6 rule's verdict, or null when only the default decides. */
  rule6(protocol: PolicyProtocol, a: Uint8Array, off: number, port: number): boolean | null {
    if (this.restricted) return false;
    for (const r of this.#rules6) {
      if (!ipv6InPrefix(a, off, r.network, r.prefix)) continue;
      if (port < r.portLo || port > r.portHi) continue;
      if (r.protocol !== null && r.protocol !== protocol) continue;
      return r.allow;
    }
    return null;
  }
}
