/**
 * Egress policy: the one function every outbound flow passes before the relay dials anything.
 * Rules are tried in order, the first match decides; no match falls to the default action.
 *
 * @module
 */
import { parseCidr } from "../wire/bytes.ts";

export type PolicyAction = "allow" | "deny";
export type PolicyProtocol = "tcp" | "udp" | "icmp";

/** One rule as written in config: `{ "action": "deny", "cidr": "169.254.0.0/16", "ports": "80-443" }`. */
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

/** A compiled policy; `check` is allocation-free. */
export class EgressPolicy {
  #rules: CompiledRule[];
  #defaultAllow: boolean;

  /** @throws Error naming the rule that does not parse */
  constructor(config: PolicyConfig) {
    this.#defaultAllow = config.defaultAction === "allow";
    this.#rules = config.rules.map((r) => {
      const c = parseCidr(r.cidr);
      if (!c) throw new Error(`Invalid policy rule CIDR "${r.cidr}"`);
      if (r.action !== "allow" && r.action !== "deny") throw new Error(`Invalid policy action "${r.action}"`);
      let portLo = 0, portHi = 65535;
      if (r.ports !== undefined) {
        const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(String(r.ports));
        if (!m) throw new Error(`Invalid policy port range "${r.ports}"`);
        portLo = Number(m[1]);
        portHi = m[2] === undefined ? portLo : Number(m[2]);
        if (portHi > 65535 || portLo > portHi) throw new Error(`Invalid policy port range "${r.ports}"`);
      }
      return {
        allow: r.action === "allow",
        network: c.network,
        mask: c.prefix === 0 ? 0 : (0xffffffff << (32 - c.prefix)) >>> 0,
        portLo,
        portHi,
        protocol: r.protocol ?? null,
      };
    });
  }

  /**
   * Whether a flow to the real (translated) destination may be opened.
   * @param port destination port; 0 for ICMP
   */
  check(protocol: PolicyProtocol, address: number, port: number): boolean {
    for (const r of this.#rules) {
      if (((address & r.mask) >>> 0) !== r.network) continue;
      if (port < r.portLo || port > r.portHi) continue;
      if (r.protocol !== null && r.protocol !== protocol) continue;
      return r.allow;
    }
    return this.#defaultAllow;
  }
}
