/**
 * Tenant settings as operators write them (admin API JSON, config file, token claims): egress policy,
 * quotas, port forwards; and how they become a {@linkcode StackConfig}.
 *
 * In multi-tenant mode a guest reaches neither the relay host's loopback nor private, shared, link-local
 * (cloud metadata), multicast or reserved ranges unless its policy allows them: the tenant's own allow and
 * deny rules come first, these defaults after.
 *
 * @module
 */
import {
  checkHostForward,
  defaultStackConfig,
  type HostForwardConfig,
  parseHostForward,
  type StackConfig,
  useNetwork,
} from "../stack/config.ts";
import { parseCidr } from "../wire/bytes.ts";
import { parseCidrV6 } from "../wire/ipv6.ts";
import type { PolicyConfig, PolicyRuleConfig } from "../stack/policy.ts";

/** Tenant ids: path- and filename-safe. */
export const TENANT_ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

/** Egress rules: "CIDR", "CIDR:PORT[-PORT]", optionally "/tcp" or "/udp" or "/icmp" at the end. */
export interface TenantPolicy {
  allow?: string[];
  deny?: string[];
  /** What is not matched by any rule or default range (default "allow": the public internet). */
  defaultAction?: "allow" | "deny";
}

/** Per-tenant limits. Omitted fields take {@linkcode DEFAULT_QUOTAS}. */
export interface TenantQuotas {
  maxTcpFlows?: number;
  maxUdpFlows?: number;
  /** New TCP connections plus new UDP flows per second (token bucket, burst = one second's worth). */
  newFlowsPerSecond?: number;
  /** Bytes per second from the guest (0 = unlimited). */
  ingressBytesPerSecond?: number;
  /** Bytes per second toward the guest (0 = unlimited). */
  egressBytesPerSecond?: number;
  /**
   * Bytes the tenant may hold in all its buffers: TCP data waiting for the guest's ACK or for the host
   * socket, out-of-order segments; frames waiting toward the guest are bounded by the smaller of this and
   * 1 MiB. Flows slow down (windows close, host reads pause) when it is spent.
   */
  bufferedBytes?: number;
}

export const DEFAULT_QUOTAS: Required<TenantQuotas> = {
  maxTcpFlows: 1024,
  maxUdpFlows: 256,
  newFlowsPerSecond: 200,
  ingressBytesPerSecond: 0,
  egressBytesPerSecond: 0,
  bufferedBytes: 8 * 1024 * 1024,
};

/** Most bytes of frames waiting toward one guest, whatever its `bufferedBytes`. */
export const LINK_BACKLOG_MAX = 1024 * 1024;

/** A tenant as created through the admin API or the config file. */
export interface TenantSpec {
  id: string;
  policy?: TenantPolicy;
  quotas?: TenantQuotas;
  /** QEMU hostfwd strings or parsed forwards. */
  hostfwd?: (string | HostForwardConfig)[];
  /** Guest network (default 10.0.2.0/24). */
  net?: string;
  /** Guest IPv6 prefix, a /64 (default fd00::/64). */
  net6?: string;
  /** false: IPv4 only. */
  ipv6?: boolean;
  mtu?: number;
  /**
   * A TCP port of its own for the stream protocol, "HOST:PORT" or "PORT" (host 127.0.0.1; port 0 = any
   * free one): for QEMU guests that cannot reach the tenant's UNIX socket. Whoever reaches it becomes the
   * tenant's guest, so bind it where only they can.
   */
  streamTcp?: string;
}

/** Parses a tenant's `streamTcp`: "HOST:PORT", "[V6]:PORT" or "PORT". */
export function parseStreamTcp(v: string): { host: string; port: number } {
  const m = /^(?:(\[[0-9a-fA-F:]+\]|[0-9.]+|localhost):)?(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : -1;
  if (!m || port > 65535) throw new Error(`Invalid streamTcp "${v}": expected HOST:PORT or PORT`);
  return { host: m[1] ?? "127.0.0.1", port };
}

/**
 * Ranges a multi-tenant guest may not reach by default (RFC 6890 special-purpose registry): this host,
 * loopback, private, shared address space, link-local (169.254.169.254 is the cloud metadata service),
 * documentation and benchmarking nets, multicast and reserved.
 */
export const MULTI_TENANT_DENIED: string[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
  // IPv6 (RFC 6890 and the IANA special-purpose registry): unspecified, loopback, IPv4-compatible,
  // discard-only, IETF protocol assignments (Teredo, benchmarking, ORCHID), documentation, 6to4 (which
  // embeds any IPv4 address), ULA (a tenant's own prefix is the relay's, handled before policy), site-local,
  // link-local, multicast. IPv4-mapped destinations are dialled as IPv4 and meet the ranges above; NAT64
  // ones (64:ff9b::/96) must pass them for the IPv4 address they embed.
  "::/128",
  "::1/128",
  "::/96",
  "100::/64",
  "2001::/23",
  "2001:db8::/32",
  "2002::/16",
  "fc00::/7",
  "fec0::/10",
  "fe80::/10",
  "ff00::/8",
];

/**
 * Parses one rule string into a policy rule; throws with the rule in the message. IPv4:
 * `CIDR[:PORT[-PORT]][/PROTO]`; IPv6: `CIDR6[/PROTO]` or, with ports, `[CIDR6]:PORT[-PORT][/PROTO]`.
 */
export function parseRule(text: string, action: "allow" | "deny"): PolicyRuleConfig {
  const t = text.trim();
  const v6 =
    /^\[([0-9a-fA-F:.]+(?:\/\d{1,3})?)\](?::(\d{1,5}(?:-\d{1,5})?))?(?:\/(tcp|udp|icmp))?$/.exec(t) ??
      /^([0-9a-fA-F]*:[0-9a-fA-F:.]*(?:\/\d{1,3})?)()(?:\/(tcp|udp|icmp))?$/.exec(t);
  if (v6) {
    const cidr = v6[1].includes("/") ? v6[1] : `${v6[1]}/128`;
    if (!parseCidrV6(cidr)) throw new Error(`Invalid policy rule "${text}": bad IPv6 CIDR`);
    return { action, cidr, ports: v6[2] || undefined, protocol: v6[3] as PolicyRuleConfig["protocol"] };
  }
  const m = /^([0-9.]+(?:\/\d{1,2})?)(?::(\d{1,5}(?:-\d{1,5})?))?(?:\/(tcp|udp|icmp))?$/.exec(t);
  if (!m) {
    throw new Error(
      `Invalid policy rule "${text}": expected CIDR[:PORT[-PORT]][/tcp|udp|icmp] or [CIDR6]:PORT[-PORT][/tcp|udp|icmp]`,
    );
  }
  const cidr = m[1].includes("/") ? m[1] : `${m[1]}/32`;
  if (!parseCidr(cidr)) throw new Error(`Invalid policy rule "${text}": bad CIDR`);
  return { action, cidr, ports: m[2], protocol: m[3] as PolicyRuleConfig["protocol"] };
}

/** The compiled policy: the tenant's allow, then deny rules, then (multi-tenant) the default denials. */
export function compilePolicy(p: TenantPolicy | undefined, multiTenant: boolean): PolicyConfig {
  const rules: PolicyRuleConfig[] = [];
  for (const r of p?.allow ?? []) rules.push(parseRule(r, "allow"));
  for (const r of p?.deny ?? []) rules.push(parseRule(r, "deny"));
  if (multiTenant) { for (const cidr of MULTI_TENANT_DENIED) rules.push({ action: "deny", cidr }); }
  return { defaultAction: p?.defaultAction ?? "allow", rules };
}

function checkQuota(q: TenantQuotas, k: keyof TenantQuotas): void {
  const v = q[k];
  if (v !== undefined && (!Number.isFinite(v) || v < 0)) throw new Error(`Invalid quota ${k}: ${v}`);
}

/** Validates a spec from untrusted JSON; throws an Error whose message says what is wrong. */
export function validateSpec(x: unknown): TenantSpec {
  if (typeof x !== "object" || x === null || Array.isArray(x)) {
    throw new Error("Tenant must be a JSON object");
  }
  const s = x as TenantSpec;
  if (typeof s.id !== "string" || !TENANT_ID_PATTERN.test(s.id)) {
    throw new Error(`Invalid tenant id ${JSON.stringify(s.id)}: letters, digits, "_", "-", "." (up to 63)`);
  }
  if (s.policy !== undefined) {
    if (typeof s.policy !== "object" || s.policy === null) throw new Error("policy must be an object");
    compilePolicy(s.policy, true);
    if (s.policy.defaultAction !== undefined && !["allow", "deny"].includes(s.policy.defaultAction)) {
      throw new Error(`Invalid policy defaultAction "${s.policy.defaultAction}"`);
    }
  }
  if (s.quotas !== undefined) {
    if (typeof s.quotas !== "object" || s.quotas === null) throw new Error("quotas must be an object");
    for (const k of Object.keys(s.quotas)) {
      if (!(k in DEFAULT_QUOTAS)) throw new Error(`Unknown quota "${k}"`);
      checkQuota(s.quotas, k as keyof TenantQuotas);
    }
  }
  if (s.hostfwd !== undefined) {
    if (!Array.isArray(s.hostfwd)) throw new Error("hostfwd must be a list");
    s.hostfwd = s.hostfwd.map((f) => (typeof f === "string" ? parseHostForward(f) : checkHostForward(f)));
  }
  if (s.streamTcp !== undefined) {
    if (typeof s.streamTcp !== "string") throw new Error('streamTcp must be a string such as "127.0.0.1:0"');
    parseStreamTcp(s.streamTcp);
  }
  return s;
}

/** The stack configuration of a tenant. */
export function tenantStackConfig(
  spec: TenantSpec,
  base: StackConfig,
  multiTenant: boolean,
  parseForward: (s: string) => HostForwardConfig,
): StackConfig {
  const c: StackConfig = { ...defaultStackConfig(), ...structuredClone(base) };
  if (spec.net) useNetwork(c, spec.net, "net");
  if (spec.net6 !== undefined) c.net6 = spec.net6;
  if (spec.ipv6 !== undefined) c.ipv6 = spec.ipv6 === true;
  if (spec.mtu !== undefined) c.mtu = spec.mtu;
  c.policy = compilePolicy(spec.policy, multiTenant);
  const q = { ...DEFAULT_QUOTAS, ...spec.quotas };
  c.maxTcpFlows = q.maxTcpFlows;
  c.maxUdpFlows = q.maxUdpFlows;
  c.newFlowsPerSecond = q.newFlowsPerSecond;
  c.bufferedBytes = q.bufferedBytes;
  c.hostfwd = (spec.hostfwd ?? []).map((f) => (typeof f === "string" ? parseForward(f) : f));
  return c;
}
