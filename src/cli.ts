/**
 * Command line: flags → config → relay. Every flag has a config-file key of the same name
 * (`--dns-upstream` ↔ `"dns-upstream"`); flags override the file.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { VERSION } from "./version.ts";
import {
  defaultStackConfig,
  parseGuestForward,
  parseHostForward,
  parseUpstream,
  resolvePlan6,
  type StackConfig,
  useNetwork,
} from "./stack/config.ts";

export { parseHostForward };
import { parseIpv4Address } from "./wire/bytes.ts";
import { parseIpv6Address } from "./wire/ipv6.ts";
import { Relay, type RelayOptions } from "./relay/relay.ts";
import { RelayFront } from "./relay/front.ts";
import { epollAvailable } from "./host/epoll_loop.ts";
import { IcmpSocket } from "./host/icmp_socket.ts";
import { NodeHost } from "./host/node_host.ts";
import { ReadOnlyDir } from "./host/read_only_dir.ts";
import { jsonLogger, type LogLevel } from "./relay/log.ts";
import type { Logger } from "./common/logger.ts";
import { installLastResortGuards } from "./relay/last_resort.ts";
import { checkAllowedOrigin } from "./relay/web_origin.ts";
import { defaultSocketDir, prepareSocketDir } from "./relay/socket_dir.ts";
import { datagramPath, parseListenUrl } from "./host/stream_listener.ts";
import { createToken, parseDuration, readSecretFile } from "./relay/tokens.ts";
import { type TenantSpec, validateSpec } from "./relay/tenant_config.ts";
import { wispCredentials } from "./relay/wisp_guest.ts";
import { platform } from "./platform/current.ts";

const DEFAULT_LISTEN = "tcp://127.0.0.1:8022";
/** With no listener flag at all, browsers (v86) get a WebSocket listener too. */
const DEFAULT_LISTEN_WS = "http://127.0.0.1:8080";

const SERVE_FLAGS = `Serve flags (each also a key of the same name in --config FILE.json):
  --config FILE.json               read settings from a JSON file; flags override it
  --listen-qemu URL                stream listener, repeatable: tcp://HOST:PORT or unix:///PATH
                                   (QEMU -netdev stream / -netdev socket, passt's protocol; a guest that
                                   opens with gvforwarder's "POST /connect" gets its u16 framing)
  --listen-dgram URL               UNIX datagram socket, repeatable: unix:///PATH — one Ethernet frame per
                                   datagram (QEMU -netdev dgram, vfkit, libkrun); needs the relay's own
                                   socket loop (Linux, FFI)
  --listen-ws URL                  WebSocket listener, repeatable: http://HOST:PORT (v86 net_device relay_url:
                                   one Ethernet frame per binary message; ws://HOST:PORT/ in single-user mode,
                                   ws://HOST:PORT/v1/tenants/ID/ws?token=… in multi-tenant mode; QEMU's
                                   stream framing as a byte stream — container2wasm, emscripten QEMU — when
                                   the client offers the "binary" subprotocol, or on /stream and
                                   /v1/tenants/ID/stream)
  --ws-allow-origin ORIGIN         a web origin besides loopback pages whose pages may open a WebSocket,
                                   repeatable: https://vm.example, https://vm.example:*, or * for any
                                   (single-user mode checks Origin and Host always; multi-tenant mode,
                                   where tokens admit guests, checks Origin only when this is given)
  --admin URL                      admin API, /metrics, /healthz: http://HOST:PORT
  --admin-token-file FILE          bearer token the admin API requires (default: a random one, printed)
  --multi-tenant                   named tenants, each isolated, default-deny toward loopback/private ranges
  --token-secret-file FILE         HMAC secret for tenant tokens (see "token create"); repeatable during a
                                   rotation: a token signed with any of them is admitted
  --tenant-socket-dir DIR          each tenant gets a stream socket DIR/ID.sock and a datagram socket
                                   DIR/ID.dgram.sock (default
                                   $XDG_RUNTIME_DIR/slirp-relay, else /tmp/slirp-relay-UID; created 0700;
                                   refused when another user owns it or others may write to it)
  --tenant-grace SECONDS           a tenant keeps its flows this long after its guest left (default 30);
                                   in single-user mode a guest that comes back within it (same MAC)
                                   resumes its session: lease, TCP connections, UDP flows
  --duplicate-guest replace|refuse a second guest for a connected tenant (default replace)
  --capture-dir DIR                where admin-started pcap captures go, and only there (default /tmp)
  --instance NAME                  this relay's name in a fleet: the relay="NAME" label of every metric
                                   (default: the host name)
  --drain-timeout SECONDS          on SIGTERM/SIGINT first drain: admit no new tenants or guests (/readyz
                                   answers 503) and give live guests up to SECONDS to leave, then reset
                                   what is left and exit (default 0: at once); POST /v1/drain does the first
                                   half on demand
  --wisp-motd TEXT                 message of the day for Wisp v2 clients (the MOTD extension)
  --wisp-credentials FILE          Wisp clients must authenticate (v2 password extension) as one of the
                                   USERNAME:PASSWORD lines of FILE; v1 clients are then refused
  --pcap FILE                      single-user mode: capture every guest's frames from the first (a boot's
                                   DHCP included) into FILE (overwritten; up to 256 MiB)
  --net CIDR                       guest network (default 10.0.2.0/24; gateway .2, DNS .3, DHCP from .15)
  --net6 PREFIX/64                 guest IPv6 prefix for SLAAC (default fd00::/64; router fe80::2, "host"
                                   prefix::2 → the relay host's ::1 as 10.0.2.2 → 127.0.0.1, DNS prefix::3)
  --no-ipv6                        IPv4 only: no router advertisements, IPv6 frames dropped
  --mtu N                          guest MTU, 576..65520 (default 1500; sent in DHCP option 26 and in the
                                   IPv6 router advertisement)
  --dns-upstream IP[:PORT]         resolver to forward guest DNS to, repeatable: 1.1.1.1, 1.1.1.1:5353, ::1
                                   or [::1]:5353 (default: /etc/resolv.conf's nameservers, IPv4 and IPv6)
  --dns-record NAME=ADDR           answer NAME with ADDR locally (A for IPv4, AAAA for IPv6), repeatable
                                   (host.slirp.internal=<gateway> is always present)
  --domain NAME                    the guest's domain (DHCP option 15)
  --dns-search DOMAIN              a search domain, repeatable (DHCP option 119, RA DNSSL, DHCPv6)
  --dhcp-start IP                  first address DHCP hands out (default .15 of --net)
  --dhcp-host MAC=IP[,NAME]        a static lease, repeatable (inside --net; IP outside the pool is fine)
  --guestfwd tcp:ADDR:PORT-HOST:PORT
                                   QEMU's guestfwd: the guest's connections to ADDR:PORT (a free address
                                   inside --net, e.g. 10.0.2.100) reach the host service HOST:PORT,
                                   whatever the policy says; repeatable
  --restrict                       QEMU's restrict=on: the guest reaches nothing but the relay's own
                                   services (DHCP, DNS, echo to the gateway) and its --guestfwd entries;
                                   --hostfwd into it still works
  --tftp DIR                       QEMU's tftp=: the gateway serves DIR's files read-only over TFTP (port 69)
  --bootfile NAME                  QEMU's bootfile=: the boot file DHCP names (PXE), e.g. pxelinux.0
  --hostfwd tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT
                                   port forward, QEMU syntax, repeatable; no GUESTADDR: the
                                   guest's DHCP lease, else the address it is heard from,
                                   else the first DHCP address
  --no-host-loopback               do not map the gateway address to the relay host's 127.0.0.1
  --udp-idle SECONDS               UDP flow idle expiry (default 60)
  --max-tenants N                  tenants (and single-user guests) at once; more are refused (default 4096)
  --max-flows N                    TCP and UDP flows at once across all tenants (default: the descriptor
                                   limit less 512)
  --workers N                      data-plane threads, each running its own socket loop; multi-tenant
                                   mode spreads tenants over them by id, single-user mode uses one
                                   (default: one per core on Linux with FFI; 0 runs everything on the
                                   main thread — the fallback where FFI or epoll is unavailable)
  --log-level debug|info|warn|error
                                   JSON log lines on stderr (default info)

`;
const EXAMPLES = `Examples:
  slirp-relay serve
  slirp-relay serve --listen-qemu unix:///tmp/slirp.sock --dns-upstream 127.0.0.1:5353
`;

export const HELP = `slirp-relay ${VERSION} — a user-mode network stack for virtual machines

Guests (QEMU, a TAP bridge, passt-compatible clients) connect with raw Ethernet frames; slirp-relay
answers ARP, DHCP and DNS as the gateway 10.0.2.2 and carries the guest's UDP, ICMP and TCP through
ordinary host sockets. No root needed.

Usage:
  slirp-relay serve [flags]        start the relay (with no listener flag: ${DEFAULT_LISTEN} for QEMU and
                                   ${
  DEFAULT_LISTEN_WS.replace("http", "ws")
}/ for v86, both on 127.0.0.1 only)
  slirp-relay token create --tenant ID --ttl 1h --token-secret-file FILE [--policy JSON] [--quotas JSON]
                                   print a signed token that admits tenant ID (multi-tenant mode)
  slirp-relay health URL           exit 0 when URL (e.g. http://127.0.0.1:8081/healthz) answers 200 within
                                   2 s, else 1 (a container's HEALTHCHECK, where no curl exists)
  slirp-relay --version | --help

${SERVE_FLAGS}
${EXAMPLES}`;

/** `slirp-relay serve --help`. */
export const SERVE_HELP = `Usage: slirp-relay serve [flags]

Starts the relay. With no listener flag it listens on ${DEFAULT_LISTEN} for QEMU and
${DEFAULT_LISTEN_WS.replace("http", "ws")}/ for v86, both on 127.0.0.1 only, in single-user mode.

${SERVE_FLAGS}
${EXAMPLES}`;

/** `slirp-relay token --help`. */
export const TOKEN_HELP = `Usage: slirp-relay token create --tenant ID --ttl DURATION --token-secret-file FILE
                                [--policy JSON] [--quotas JSON]

Prints a signed token that admits tenant ID to a multi-tenant relay sharing FILE's secret, until DURATION
(e.g. 30m, 1h, 7d) from now. A guest presents it in the WebSocket URL (?token=…) or an Authorization header;
--policy and --quotas (JSON, as the admin API's tenant fields) become the tenant's when the token creates it.

Example:
  slirp-relay token create --tenant ci-42 --ttl 1h --token-secret-file /etc/slirp/secret \\
    --policy '{"allow":["127.0.0.1/32:8080"]}' --quotas '{"maxTcpFlows":256}'
`;

/** The flags of `serve` as parsed (strings and lists), before they become a config. */
interface ServeFlags {
  "config"?: string;
  "listen-qemu"?: string[];
  "net"?: string;
  "net6"?: string;
  "no-ipv6"?: boolean;
  "mtu"?: string | number;
  "dns-upstream"?: string[];
  "dns-record"?: string[];
  "domain"?: string;
  "dns-search"?: string[];
  "dhcp-start"?: string;
  "dhcp-host"?: string[];
  "guestfwd"?: string[];
  "restrict"?: boolean;
  "tftp"?: string;
  "bootfile"?: string;
  "hostfwd"?: string[];
  "no-host-loopback"?: boolean;
  "udp-idle"?: string | number;
  "log-level"?: string;
  "listen-ws"?: string[];
  "listen-dgram"?: string[];
  "admin"?: string;
  "admin-token-file"?: string;
  "multi-tenant"?: boolean;
  /** One file, or several during a rotation (the first signs; every one verifies). */
  "token-secret-file"?: string | string[];
  "tenant-socket-dir"?: string;
  "tenant-grace"?: string | number;
  "duplicate-guest"?: string;
  "capture-dir"?: string;
  "pcap"?: string;
  "wisp-motd"?: string;
  "wisp-credentials"?: string;
  "drain-timeout"?: string | number;
  "instance"?: string;
  "ws-allow-origin"?: string[];
  "max-tenants"?: string | number;
  "max-flows"?: string | number;
  workers?: string | number;
  /** Config file only: tenants created at start. */
  "tenants"?: unknown[];
}

/** Turns flags (merged over a config file's keys) into relay settings; throws with a clear message. */
export function buildServeConfig(
  flags: ServeFlags,
): { listen: string[]; stack: StackConfig; logLevel: LogLevel } {
  const stack = defaultStackConfig();
  if (flags.net !== undefined) useNetwork(stack, flags.net, "--net");
  if (flags.net6 !== undefined) {
    try {
      resolvePlan6(flags.net6); // refused at start, with the flag's name
    } catch (e) {
      throw new Error(`Invalid --net6: ${(e as Error).message}`);
    }
    stack.net6 = flags.net6;
  }
  if (flags["no-ipv6"]) stack.ipv6 = false;
  if (flags.mtu !== undefined) {
    const mtu = Number(flags.mtu);
    if (!Number.isInteger(mtu)) throw new Error(`Invalid --mtu "${flags.mtu}": not an integer`);
    stack.mtu = mtu;
  }
  for (const u of flags["dns-upstream"] ?? []) {
    parseUpstream(u); // refused here, at start, not at the first guest's query
    stack.dnsUpstreams.push(u);
  }
  for (const r of flags["dns-record"] ?? []) {
    const m = /^([^=]+)=(.+)$/.exec(r);
    const v4 = m ? parseIpv4Address(m[2]) !== null : false;
    if (!m || (!v4 && parseIpv6Address(m[2]) === null)) {
      throw new Error(`Invalid --dns-record "${r}": expected NAME=IPV4 or NAME=IPV6`);
    }
    const name = m[1].toLowerCase().replace(/\.$/, "");
    // a record replaces the name's record of the same family (A or AAAA), not the other
    stack.dnsRecords = stack.dnsRecords.filter((x) =>
      x.name !== name || (parseIpv4Address(x.address) !== null) !== v4
    );
    stack.dnsRecords.push({ name, address: m[2] });
  }
  for (const h of flags.hostfwd ?? []) stack.hostfwd.push(parseHostForward(h));
  if (flags.tftp !== undefined) stack.tftp = ReadOnlyDir.check(flags.tftp); // refused at start if missing
  if (flags.bootfile !== undefined) {
    if (new TextEncoder().encode(flags.bootfile).length > 127) throw new Error("--bootfile: over 127 bytes");
    stack.bootfile = flags.bootfile;
  }
  if (flags.domain !== undefined) stack.domainName = checkDomain(flags.domain, "--domain");
  for (const d of flags["dns-search"] ?? []) stack.searchDomains.push(checkDomain(d, "--dns-search"));
  if (flags["dhcp-start"] !== undefined) {
    if (parseIpv4Address(flags["dhcp-start"]) === null) {
      throw new Error(`Invalid --dhcp-start "${flags["dhcp-start"]}": not an IPv4 address`);
    }
    stack.dhcpStart = flags["dhcp-start"];
  }
  for (const d of flags["dhcp-host"] ?? []) {
    // dnsmasq's and QEMU users' form: MAC=IP (libvirt's host entries alike), a hostname after a comma
    const m = /^([0-9a-fA-F:]{17})=([0-9.]+)(?:,([a-zA-Z0-9.-]+))?$/.exec(d.trim());
    if (!m || parseIpv4Address(m[2]) === null) {
      throw new Error(`Invalid --dhcp-host "${d}": expected MAC=IPV4[,HOSTNAME]`);
    }
    stack.staticLeases.push({ mac: m[1].toLowerCase(), address: m[2], ...(m[3] ? { hostname: m[3] } : {}) });
  }
  for (const g of flags.guestfwd ?? []) stack.guestfwd.push(parseGuestForward(g));
  if (flags.restrict) stack.restrict = true;
  if (flags["no-host-loopback"]) stack.gatewayToLoopback = false;
  if (flags["udp-idle"] !== undefined) {
    const s = Number(flags["udp-idle"]);
    if (!(s > 0)) {
      throw new Error(`Invalid --udp-idle "${flags["udp-idle"]}": must be a positive number of seconds`);
    }
    stack.udpIdleSec = s;
  }
  const listen = flags["listen-qemu"] && flags["listen-qemu"].length > 0
    ? flags["listen-qemu"]
    : [DEFAULT_LISTEN];
  for (const l of listen) parseListenUrl(l);
  const logLevel = (flags["log-level"] ?? "info") as LogLevel;
  if (!["debug", "info", "warn", "error"].includes(logLevel)) {
    throw new Error(`Invalid --log-level "${logLevel}"`);
  }
  return { listen, stack, logLevel };
}

/** A DNS name as a flag takes it: letters, digits, hyphens and dots, at most 253 characters. */
function checkDomain(name: string, flag: string): string {
  const d = name.trim().toLowerCase().replace(/\.$/, "");
  if (
    !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(d) || d.length > 253
  ) {
    throw new Error(`Invalid ${flag} "${name}": not a domain name`);
  }
  return d;
}

/** The QEMU command-line fragments that connect a guest to a stream listener. */
export function qemuLines(url: string): string[] {
  const a = parseListenUrl(url);
  if (a.kind === "unix") {
    return [
      `-netdev stream,id=net0,server=off,addr.type=unix,addr.path=${a.path} -device virtio-net-pci,netdev=net0`,
    ];
  }
  return [
    `-netdev stream,id=net0,server=off,addr.type=inet,addr.host=${a.host},addr.port=${a.port} -device virtio-net-pci,netdev=net0`,
    `-netdev socket,id=net0,connect=${a.host}:${a.port} -device virtio-net-pci,netdev=net0   (QEMU < 7.2)`,
  ];
}

const SERVE_OPTIONS = {
  "config": { type: "string" },
  "listen-qemu": { type: "string", multiple: true },
  "listen-dgram": { type: "string", multiple: true },
  "net": { type: "string" },
  "net6": { type: "string" },
  "no-ipv6": { type: "boolean" },
  "mtu": { type: "string" },
  "dns-upstream": { type: "string", multiple: true },
  "dns-record": { type: "string", multiple: true },
  "domain": { type: "string" },
  "dns-search": { type: "string", multiple: true },
  "dhcp-start": { type: "string" },
  "dhcp-host": { type: "string", multiple: true },
  "guestfwd": { type: "string", multiple: true },
  "restrict": { type: "boolean" },
  "tftp": { type: "string" },
  "bootfile": { type: "string" },
  "hostfwd": { type: "string", multiple: true },
  "no-host-loopback": { type: "boolean" },
  "udp-idle": { type: "string" },
  "log-level": { type: "string" },
  "listen-ws": { type: "string", multiple: true },
  "admin": { type: "string" },
  "admin-token-file": { type: "string" },
  "multi-tenant": { type: "boolean" },
  "token-secret-file": { type: "string", multiple: true },
  "tenant-socket-dir": { type: "string" },
  "tenant-grace": { type: "string" },
  "duplicate-guest": { type: "string" },
  "capture-dir": { type: "string" },
  "pcap": { type: "string" },
  "wisp-motd": { type: "string" },
  "wisp-credentials": { type: "string" },
  "drain-timeout": { type: "string" },
  "instance": { type: "string" },
  "ws-allow-origin": { type: "string", multiple: true },
  "max-tenants": { type: "string" },
  "max-flows": { type: "string" },
  workers: { type: "string" },
} as const;

function readConfigFile(path: string): ServeFlags {
  let text: string;
  try {
    text = platform.readTextFile(path);
  } catch (e) {
    throw new Error(`Cannot read --config ${path}: ${(e as Error).message}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new Error(`Cannot parse --config ${path}: ${(e as Error).message}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new Error(`Cannot use --config ${path}: expected a JSON object`);
  }
  for (const k of Object.keys(data)) {
    if (k === "tenants") {
      // config file only: tenants created at start, each as the admin API takes it
      const v = (data as Record<string, unknown>)[k];
      if (!Array.isArray(v)) throw new Error(`Key "tenants" in ${path} must be a list of tenant objects`);
      v.forEach((spec, i) => {
        try {
          validateSpec(spec);
        } catch (e) {
          throw new Error(`Tenant ${i + 1} in ${path}: ${(e as Error).message}`);
        }
      });
      continue;
    }
    if (!(k in SERVE_OPTIONS)) {
      throw new Error(`Unknown key "${k}" in ${path}; keys are the serve flag names`);
    }
    const opt = SERVE_OPTIONS[k as keyof typeof SERVE_OPTIONS];
    const v = (data as Record<string, unknown>)[k];
    // one secret file as a plain string stays valid (a rotation lists two)
    if ("multiple" in opt && !Array.isArray(v) && !(k === "token-secret-file" && typeof v === "string")) {
      throw new Error(`Key "${k}" in ${path} must be a list`);
    }
  }
  return data as ServeFlags;
}

/** A flag that must be a positive integer when given. */
function positiveInt(flag: string, v: string | number | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`Invalid ${flag} "${v}": must be a positive integer`);
  return n;
}

async function tokenCommand(args: string[]): Promise<number> {
  if (args[0] !== "create") {
    throw new Error("Usage: slirp-relay token create --tenant ID --ttl 1h --token-secret-file FILE");
  }
  const { values } = parseArgs({
    args: args.slice(1),
    options: {
      tenant: { type: "string" },
      ttl: { type: "string", default: "1h" },
      "token-secret-file": { type: "string" },
      policy: { type: "string" },
      quotas: { type: "string" },
    },
    strict: true,
  });
  if (!values.tenant) throw new Error("token create needs --tenant ID");
  if (!values["token-secret-file"]) throw new Error("token create needs --token-secret-file FILE");
  const secret = readSecretFile(values["token-secret-file"]);
  const parseJson = (flag: string, text?: string) => {
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`${flag} must be JSON, e.g. --policy '{"allow":["127.0.0.1/32:8080"]}'`);
    }
  };
  const policy = parseJson("--policy", values.policy);
  const quotas = parseJson("--quotas", values.quotas);
  validateSpec({ id: values.tenant, policy, quotas });
  const exp = Math.floor(Date.now() / 1000) + parseDuration(values.ttl!);
  console.log(await createToken(secret, { tenant: values.tenant, exp, policy, quotas }));
  return 0;
}

/** What `serve ARGS` runs: the relay its flags describe (not started yet), and what the start-up lines say. */
export interface ServeSetup {
  relay: Relay | RelayFront;
  log: Logger;
  stack: StackConfig;
  multi: boolean;
  workers: number;
  drainMs: number;
  adminToken: string | undefined;
  generatedAdminToken: boolean;
  adminTokenFile: string | undefined;
  socketDir: string | undefined;
  dgram: string[] | undefined;
}

/**
 * The relay `serve ARGS` would run, built from the same flags and config file (throws a clear error for a bad
 * one): the CLI starts it, and tests run it in-process from the very command line a user would type.
 */
export function relayFromServeArgs(
  args: string[],
  testHooks: { faults?: RelayOptions["faults"]; logTo?: (line: string) => void } = {},
): ServeSetup {
  const { values } = parseArgs({ args, options: SERVE_OPTIONS, strict: true, allowPositionals: false });
  const fromFile = values.config ? readConfigFile(values.config) : {};
  const merged: ServeFlags = { ...fromFile };
  for (const [k, v] of Object.entries(values)) {
    if (v !== undefined) (merged as Record<string, unknown>)[k] = v;
  }
  const cfg = buildServeConfig(merged);
  const log = jsonLogger(cfg.logLevel, testHooks.logTo);
  const multi = merged["multi-tenant"] === true;
  const readText = (flag: string, p: string) => {
    try {
      return platform.readTextFile(p).trim();
    } catch (e) {
      throw new Error(`Cannot read ${flag} ${p}: ${(e as Error).message}`);
    }
  };
  let adminToken = merged["admin-token-file"]
    ? readText("--admin-token-file", merged["admin-token-file"])
    : undefined;
  if (merged["admin-token-file"] && !adminToken) {
    throw new Error(`--admin-token-file ${merged["admin-token-file"]} is empty`);
  }
  // no token file: generate one for this run and print it, so the API is never open
  const generatedAdminToken = Boolean(merged.admin && !adminToken);
  if (generatedAdminToken) {
    adminToken = Array.from(
      crypto.getRandomValues(new Uint8Array(24)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
  }
  if (multi && cfg.stack.hostfwd.length > 0) {
    throw new Error(
      '--hostfwd is for single-user mode; in multi-tenant mode give each tenant its own "hostfwd"',
    );
  }
  const secretFiles = [merged["token-secret-file"] ?? []].flat();
  // during a rotation two secrets verify (old tokens stay valid until they expire); `token create` signs
  // with the first
  const tokenSecret = secretFiles.length > 0 ? secretFiles.map(readSecretFile) : undefined;
  const socketDir = merged["tenant-socket-dir"] ?? (multi ? defaultSocketDir() : undefined);
  if (socketDir) prepareSocketDir(socketDir);
  const dup = merged["duplicate-guest"] ?? "replace";
  if (dup !== "replace" && dup !== "refuse") {
    throw new Error(`Invalid --duplicate-guest "${dup}": replace or refuse`);
  }
  const grace = merged["tenant-grace"] !== undefined ? Number(merged["tenant-grace"]) : 30;
  if (!(grace >= 0)) throw new Error(`Invalid --tenant-grace "${merged["tenant-grace"]}"`);
  const wispCredentialText = merged["wisp-credentials"]
    ? readText("--wisp-credentials", merged["wisp-credentials"])
    : undefined;
  if (wispCredentialText !== undefined) {
    try {
      wispCredentials(wispCredentialText); // refused at start, with the file's name
    } catch (e) {
      throw new Error(`Invalid --wisp-credentials ${merged["wisp-credentials"]}: ${(e as Error).message}`);
    }
  }
  const dgram = merged["listen-dgram"]?.length ? merged["listen-dgram"] : undefined;
  for (const url of dgram ?? []) datagramPath(url);
  const relayOptions: RelayOptions = {
    // the default listeners only when no guest listener was named
    listenQemu: merged["listen-qemu"] || (!multi && !dgram && !merged["listen-ws"]) ? cfg.listen : [],
    listenDgram: dgram,
    listenWs: merged["listen-ws"] ?? (!merged["listen-qemu"] && !dgram && !multi ? [DEFAULT_LISTEN_WS] : []),
    admin: merged.admin,
    adminToken,
    stack: cfg.stack,
    log,
    multiTenant: multi,
    tokenSecret,
    tenantSocketDir: socketDir,
    tenants: (merged.tenants ?? []) as TenantSpec[],
    duplicateGuest: dup,
    graceMs: grace * 1000,
    captureDir: merged["capture-dir"],
    pcap: merged.pcap,
    wispMotd: merged["wisp-motd"],
    wispCredentials: wispCredentialText,
    instance: merged.instance,
    parseForward: parseHostForward,
    wsAllowOrigin: merged["ws-allow-origin"]?.map(checkAllowedOrigin),
    maxTenants: positiveInt("--max-tenants", merged["max-tenants"]),
    maxFlows: positiveInt("--max-flows", merged["max-flows"]),
    faults: testHooks.faults,
  };
  const workers = dataPlaneWorkers(merged.workers);
  const drainSec = merged["drain-timeout"] === undefined ? 0 : Number(merged["drain-timeout"]);
  if (!Number.isFinite(drainSec) || drainSec < 0 || drainSec > 86400) {
    throw new Error(`Invalid --drain-timeout "${merged["drain-timeout"]}": seconds, 0..86400`);
  }
  const drainMs = drainSec * 1000;
  if (workers === 0 && !epollAvailable()) {
    log(
      "warn",
      "no socket loop of our own here (needs Linux and --allow-ffi): every guest runs on the runtime's sockets on the main thread",
    );
  }
  const relay = workers > 0
    ? new RelayFront({
      ...relayOptions,
      workerUrl: new URL("./data_plane_worker.ts", import.meta.url),
      logLevel: cfg.logLevel,
      workers,
    })
    : new Relay(relayOptions);
  return {
    relay,
    log,
    stack: cfg.stack,
    multi,
    workers,
    drainMs,
    adminToken,
    generatedAdminToken,
    adminTokenFile: merged["admin-token-file"],
    socketDir,
    dgram,
  };
}

async function serve(args: string[]): Promise<number> {
  const {
    relay,
    log,
    stack,
    multi,
    workers,
    drainMs,
    adminToken,
    generatedAdminToken,
    adminTokenFile,
    socketDir,
    dgram,
  } = relayFromServeArgs(args);
  installLastResortGuards(log);
  const urls = await relay.start();
  // single-user mode runs on one worker whatever --workers says (its guests share one tenant table)
  const runtime = runtimeSummary(multi ? workers : Math.min(workers, 1), stack.dnsUpstreams);
  const lines = [
    `slirp-relay ${VERSION} serving guests on ${stack.net} (gateway ${stack.gateway}, DNS ${stack.dns})` +
    (multi ? " — multi-tenant mode" : ""),
    `  ${runtime.line}`,
  ];
  for (const u of urls) {
    lines.push(`  listening on ${u}; connect QEMU with:`);
    for (const q of qemuLines(u)) lines.push(`    qemu-system-x86_64 ... ${q}`);
  }
  for (const u of dgram ?? []) {
    const path = datagramPath(u);
    lines.push(`  datagram socket at ${path}; connect QEMU with:`);
    lines.push(
      `    qemu-system-x86_64 ... -netdev dgram,id=net0,local.type=unix,local.path=${path}.guest,` +
        `remote.type=unix,remote.path=${path} -device virtio-net-pci,netdev=net0`,
    );
  }
  for (const u of relay.wsUrls) {
    lines.push(
      multi
        ? `  WebSocket on ${u}/v1/tenants/<id>/ws?token=<token>`
        : `  WebSocket on ${u}/ — v86: net_device: { type: "ne2k", relay_url: "${u}/" }`,
    );
  }
  if (relay.adminUrl) {
    lines.push(
      generatedAdminToken
        ? `  admin API on ${relay.adminUrl} (Authorization: Bearer ${adminToken} — generated for this run; --admin-token-file sets one)`
        : `  admin API on ${relay.adminUrl} (Authorization: Bearer <token from ${adminTokenFile}>)`,
    );
  }
  if (multi) {
    lines.push(
      `  tenant stream sockets in ${socketDir}/<id>.sock, datagram sockets in ${socketDir}/<id>.dgram.sock`,
    );
  }
  // the handlers come before the lines that say the relay is up: a SIGTERM sent on reading them is a clean stop
  const stopped = new Promise<void>((resolve) => {
    let stopping = false;
    const stop = async () => {
      if (stopping) return;
      stopping = true;
      if (drainMs > 0) {
        // readiness goes false at once; live guests get up to --drain-timeout to finish, then RSTs
        const deadline = Date.now() + drainMs;
        let guests = await relay.drain();
        log("info", "draining before shutdown", { guests, timeoutSec: drainMs / 1000 });
        while (guests > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
          guests = await relay.drain();
        }
      }
      log("info", "shutting down");
      await relay.stop();
      resolve();
    };
    platform.onSignal("SIGINT", stop);
    platform.onSignal("SIGTERM", stop);
  });
  console.log(lines.join("\n"));
  log("info", "relay started", {
    ...runtime.fields,
    listen: urls,
    websocket: relay.wsUrls,
    admin: relay.adminUrl,
    multiTenant: multi,
    maxTenants: relay.maxTenants,
    maxFlows: relay.flowLimit.max || "unlimited",
  });
  await stopped;
  return 0;
}

/**
 * What the relay runs on, in one line: the socket backend, the data-plane workers, whether ICMP echo can leave
 * (and how to allow it where it cannot), and the DNS upstreams in use.
 */
function runtimeSummary(
  workers: number,
  upstreams: string[],
): { line: string; fields: Record<string, unknown> } {
  const backend = epollAvailable() ? "own epoll loop" : "runtime sockets";
  const ping = IcmpSocket.open();
  ping.socket?.close();
  const icmp = ping.socket
    ? "ICMP echo through ping sockets"
    : 'no ICMP echo beyond the gateway (allow ping sockets: sysctl -w net.ipv4.ping_group_range="0 2147483647")';
  const dns = upstreams.length > 0 ? upstreams : new NodeHost().systemResolvers();
  const dnsText = dns.length > 0
    ? `DNS upstreams ${dns.join(", ")}`
    : "no DNS upstream (guests get SERVFAIL)";
  return {
    line: `${backend}, ${workers} data-plane worker${workers === 1 ? "" : "s"}, ${icmp}, ${dnsText}` +
      (upstreams.length > 0 ? "" : " (from /etc/resolv.conf)"),
    fields: {
      sockets: backend,
      workers,
      icmpEcho: ping.socket ? "available" : ping.reason,
      dnsUpstreams: dns,
      runtime: platform.name,
    },
  };
}

/** `--workers`: the count asked for, or one per core where our socket loop can run (Linux, FFI), else 0. */
function dataPlaneWorkers(flag: string | number | undefined): number {
  if (flag === undefined) return epollAvailable() ? Math.max(1, navigator.hardwareConcurrency || 1) : 0;
  const n = Number(flag);
  if (!Number.isInteger(n) || n < 0 || n > 256) throw new Error(`Invalid --workers "${flag}": 0..256`);
  if (n > 0 && !epollAvailable()) {
    throw new Error("--workers needs a socket loop of our own (Linux and --allow-ffi); use --workers 0");
  }
  return n;
}

/** `slirp-relay health URL`: 0 when URL answers 200 within 2 s, else 1 (with the reason on stderr). */
async function healthCommand(url: string | undefined): Promise<number> {
  if (!url || !/^https?:\/\//.test(url)) {
    throw new Error("health needs a URL: slirp-relay health http://HOST:PORT/healthz");
  }
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.body?.cancel();
    if (res.status === 200) return 0;
    console.error(`slirp-relay: ${url} answered ${res.status}`);
  } catch (e) {
    console.error(`slirp-relay: ${url}: ${(e as Error).message}`);
  }
  return 1;
}

export async function main(args: string[]): Promise<number> {
  if (args.includes("--version") || args[0] === "version") {
    // the runtime too: a compiled binary carries its own (e.g. "0.1.0 (bun 1.4.5)")
    console.log(`${VERSION} (${platform.name})`);
    return 0;
  }
  const wantsHelp = args.includes("--help") || args.includes("-h");
  if (wantsHelp && (args[0] === "serve" || args[0] === "token")) {
    console.log(args[0] === "serve" ? SERVE_HELP : TOKEN_HELP);
    return 0;
  }
  if (args.length === 0 || wantsHelp || args[0] === "help") {
    console.log(HELP);
    return 0;
  }
  try {
    if (args[0] === "serve") return await serve(args.slice(1));
    if (args[0] === "token") return await tokenCommand(args.slice(1));
    if (args[0] === "health") return await healthCommand(args[1]);
  } catch (e) {
    console.error(`slirp-relay: ${(e as Error).message}`);
    return 2;
  }
  console.error(`slirp-relay: unknown command "${args[0]}". Run slirp-relay --help`);
  return 2;
}

if (import.meta.main) platform.exit(await main(platform.args()));
