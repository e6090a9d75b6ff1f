/**
 * The relay service: listeners (stream over TCP/UNIX, WebSocket), the tenant registry and its admission
 * (tokens), the frame scheduler, the timer driver, port forwards, and shutdown.
 *
 * Single-user mode (default): every guest connection is a fresh anonymous tenant with the base config
 * (10.0.2.2 reaches the host's loopback, as libslirp). Multi-tenant mode: tenants are named, created by
 * the admin API, the config file, or a valid token; each has its own stream socket
 * `<tenantSocketDir>/<id>.sock` and WebSocket path `/v1/tenants/<id>/ws`; the default egress policy
 * denies loopback, private, link-local and reserved ranges.
 *
 * @module
 */
import type { Logger } from "../common/logger.ts";
import { resolvePlan, type StackConfig } from "../stack/config.ts";
import { TimerWheel } from "../stack/timer_wheel.ts";
import { EpollHost } from "../host/epoll_host.ts";
import { deferUntilIdle, epollAvailable, EpollSocket } from "../host/epoll.ts";
import { NodeHost } from "../host/node_host.ts";
import { IcmpSocket } from "../host/icmp_socket.ts";
import { listenStream, type StreamListener } from "../host/stream_listener.ts";
import type { ByteStream } from "../host/host.ts";
import { carryStream, QEMU_MAX_FRAME } from "../transport/stream.ts";
import type { HostIcmpEcho } from "../host/host.ts";
import type { HostForwardConfig } from "../stack/config.ts";
import { FrameScheduler } from "./scheduler.ts";
import { Tenant } from "./tenant.ts";
import { bindForward, type BoundForward } from "./port_forward.ts";
import { type FrameFeed, type GuestLink, lossyLink } from "../transport/link.ts";
import { carryWebSocket } from "../transport/websocket.ts";
import {
  compilePolicy,
  parseStreamTcp,
  type TenantSpec,
  tenantStackConfig,
  validateSpec,
} from "./tenant_config.ts";
import { claimsMatch, type TokenClaims, verifyToken } from "./tokens.ts";
import { AdminApi, json } from "./admin.ts";
import type { RelayView } from "./relay_view.ts";
import { hostAllowed, originAllowed } from "./web_origin.ts";
import { HostAddresses } from "./host_addresses.ts";
import { descriptorLimit, FlowLimit } from "../stack/flow_limit.ts";
import { mapLargeBuffersOnOwnPages, openFileLimit, releaseFreedMemory } from "../host/libc.ts";

/** The relay is at one of its relay-wide limits: the request may succeed later (HTTP 503). */
export class RelayFullError extends Error {}

export interface RelayOptions {
  /** Stream listeners: tcp://HOST:PORT, unix:///PATH. */
  listenQemu: string[];
  /** WebSocket listeners: http://HOST:PORT. */
  listenWs?: string[];
  /** Admin API listener http://HOST:PORT, with its bearer token. */
  admin?: string;
  adminToken?: string;
  /** Base stack config every tenant starts from. */
  stack: StackConfig;
  log: Logger;
  multiTenant?: boolean;
  /** HMAC secret for tenant tokens (multi-tenant mode). */
  tokenSecret?: Uint8Array;
  /** Directory for per-tenant stream sockets (multi-tenant mode). */
  tenantSocketDir?: string;
  /** Tenants created at start. */
  tenants?: TenantSpec[];
  /** A second guest for a connected tenant: "replace" the first (default) or "refuse" it. */
  duplicateGuest?: "replace" | "refuse";
  /** How long a named tenant keeps its flows after its guest left. */
  graceMs?: number;
  /** Where pcap captures are written. */
  captureDir?: string;
  /** Largest frame accepted from a guest. */
  maxFrame?: number;
  /** Test-only fault injection: drop this fraction (0..1) of guest-bound frames, pseudo-randomly. */
  faults?: { guestBoundLoss?: number; seed?: number };
  /** Parses QEMU hostfwd strings (the CLI's parser). */
  parseForward?: (s: string) => HostForwardConfig;
  /**
   * Browser origins besides loopback pages that may open a WebSocket (`*` for all). Single-user mode
   * checks `Origin` and `Host` always; multi-tenant mode (token-authenticated) checks `Origin` only when
   * this is given.
   */
  wsAllowOrigin?: string[];
  /** Tenants at once (named and single-user sessions); beyond it new ones are refused. Default 4096. */
  maxTenants?: number;
  /**
   * TCP and UDP flows at once across every tenant (each holds a descriptor). Default: the descriptor limit
   * less {@linkcode DESCRIPTOR_RESERVE} for guest connections, listeners and DNS.
   */
  maxFlows?: number;
}

/** Descriptors kept back from flows for guest connections, listeners and DNS queries. */
export const DESCRIPTOR_RESERVE = 512;
export const DEFAULT_MAX_TENANTS = 4096;

/** Connected guests (for tests and stats): one per tenant with a link. */
export interface GuestSession {
  tenant: Tenant;
  stack: NonNullable<Tenant["stack"]>;
}

/** How long an admitted WebSocket has to complete its upgrade and attach. */
const UPGRADE_WAIT_MS = 10_000;

export class Relay implements RelayView {
  readonly wheel: TimerWheel;
  readonly host: NodeHost;
  readonly scheduler = new FrameScheduler();
  readonly tenants: Map<string, Tenant> = new Map();
  readonly startedAt = Date.now();
  #opts: RelayOptions;
  #listeners: StreamListener[] = [];
  #servers: Deno.HttpServer[] = [];
  #wsUrls: string[] = [];
  #adminUrl: string | null = null;
  #tick: ReturnType<typeof setInterval> | undefined;
  #memoryRelease: ReturnType<typeof setTimeout> | undefined;
  #nextSession = 1;
  #icmp: IcmpSocket | null = null;
  #forwards: BoundForward[] = [];
  #stopping = false;
  #hostAddresses = new HostAddresses();
  /** Open flows across every tenant. */
  readonly flowLimit: FlowLimit;
  /** Frames refused at the transport (framing errors, oversize WebSocket messages). */
  transportErrors = 0;

  constructor(opts: RelayOptions) {
    resolvePlan(opts.stack); // refuse a bad plan before binding anything
    if (opts.multiTenant && !opts.tokenSecret && !opts.admin) {
      throw new Error("Multi-tenant mode needs --token-secret-file or --admin to create tenants");
    }
    this.#opts = opts;
    mapLargeBuffersOnOwnPages();
    const fds = openFileLimit() ?? descriptorLimit();
    this.flowLimit = new FlowLimit(
      opts.maxFlows ?? (fds === null ? 0 : Math.max(64, Math.min(1 << 20, fds - DESCRIPTOR_RESERVE))),
    );
    this.wheel = new TimerWheel(performance.now());
    this.wheel.onWake = () => this.#startTicking();
    this.host = epollAvailable()
      ? new EpollHost(() => this.#openIcmp())
      : new NodeHost(() => this.#openIcmp());
  }

  get multiTenant(): boolean {
    return this.#opts.multiTenant === true;
  }

  get log(): Logger {
    return this.#opts.log;
  }

  /** Connected guests. */
  get sessions(): Set<GuestSession> {
    const out = new Set<GuestSession>();
    for (const t of this.tenants.values()) if (t.link && t.stack) out.add({ tenant: t, stack: t.stack });
    return out;
  }

  /**
   * A tenant's flows, rings and sockets have gone: once their buffers are collected, give the pages back to the
   * system (one release per second at most, whatever the number of tenants leaving).
   */
  #releaseMemorySoon(): void {
    if (this.#memoryRelease !== undefined) return;
    this.#memoryRelease = setTimeout(() => {
      this.#memoryRelease = undefined;
      releaseFreedMemory();
    }, 1000);
    Deno.unrefTimer(this.#memoryRelease);
  }

  #openIcmp(): HostIcmpEcho | null {
    const r = IcmpSocket.open();
    if (!r.socket) this.#opts.log("warn", "ICMP echo to the outside is unavailable", { reason: r.reason });
    this.#icmp = r.socket;
    return r.socket;
  }

  #startTicking(): void {
    if (this.#tick !== undefined) return;
    this.#tick = setInterval(() => {
      this.wheel.advance(performance.now());
      if (this.wheel.size === 0) {
        clearInterval(this.#tick);
        this.#tick = undefined;
      }
    }, this.wheel.tickMs);
  }

  /** Binds every listener and forward, creates configured tenants; resolves with the stream listeners' URLs. */
  async start(): Promise<string[]> {
    try {
      for (const url of this.#opts.listenQemu) {
        const l = listenStream(url, (conn) => this.#serveStream(conn, conn.remote, null));
        this.#listeners.push(l);
      }
      for (const url of this.#opts.listenWs ?? []) this.#wsUrls.push(this.#serveWs(url));
      if (this.#opts.admin) {
        const api = new AdminApi(this, this.#opts.adminToken ?? "");
        const { server, url } = api.listen(this.#opts.admin);
        this.#servers.push(server);
        this.#adminUrl = url;
      }
      if (!this.multiTenant) {
        for (const f of this.#opts.stack.hostfwd) await this.#bindSingleUserForward(f);
      }
      for (const spec of this.#opts.tenants ?? []) await this.createTenant(spec);
    } catch (e) {
      await this.stop();
      throw e;
    }
    return this.#listeners.map((l) => l.url);
  }

  /** TCP ports the relay itself listens on (stream, WebSocket, admin). */
  #ownPorts(): Set<number> {
    const ports = new Set<number>();
    for (const u of [...this.urls, ...this.#wsUrls, this.#adminUrl ?? ""]) {
      const m = /^(?:tcp|ws|http):\/\/.*:(\d+)$/.exec(u);
      if (m) ports.add(Number(m[1]));
    }
    return ports;
  }

  get urls(): string[] {
    return this.#listeners.map((l) => l.url);
  }

  get wsUrls(): string[] {
    return this.#wsUrls;
  }

  get adminUrl(): string | null {
    return this.#adminUrl;
  }

  /** Single-user port forwards with their bound host ports. */
  get forwards(): HostForwardConfig[] {
    return this.#forwards.map((f) => f.config);
  }

  // ───────────────────────── tenants ─────────────────────────

  /** Creates a named tenant (admin API, config file, or token admission). Throws on a bad spec or a duplicate. */
  async createTenant(raw: unknown, admittedBy: "admin" | "token" = "admin"): Promise<Tenant> {
    const spec = validateSpec(raw);
    if (this.tenants.has(spec.id)) throw new Error(`Tenant "${spec.id}" already exists`);
    if (this.atTenantLimit) {
      throw new RelayFullError(`The relay is at its limit of ${this.maxTenants} tenants`);
    }
    const parse = this.#opts.parseForward ?? (() => {
      throw new Error("hostfwd strings need a parser");
    });
    const config = tenantStackConfig(spec, this.#opts.stack, this.multiTenant, parse);
    resolvePlan(config);
    compilePolicy(spec.policy, this.multiTenant);
    const t = new Tenant(spec, config, false, {
      host: this.host,
      wheel: this.wheel,
      log: this.#opts.log,
      egressGuard: this.multiTenant ? (p, real, port) => !this.#isForwardPort(p, real, port) : undefined,
      flowLimit: this.flowLimit,
    }, admittedBy);
    this.tenants.set(t.id, t);
    try {
      for (const f of config.hostfwd) await t.addForward(f);
      if (this.#opts.tenantSocketDir) {
        const path = `${this.#opts.tenantSocketDir}/${t.id}.sock`;
        const l = listenStream(`unix://${path}`, (conn) => this.#serveStream(conn, conn.remote, t));
        t.socketPath = path;
        t.closers.push(() => l.close());
      }
      if (spec.streamTcp !== undefined) {
        const { host, port } = parseStreamTcp(spec.streamTcp);
        const url = `tcp://${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;
        const l = listenStream(url, (conn) => this.#serveStream(conn, conn.remote, t));
        t.streamTcpUrl = l.url;
        t.streamTcpPort = Number(/:(\d+)$/.exec(l.url)?.[1] ?? 0);
        t.closers.push(() => l.close());
      }
    } catch (e) {
      this.deleteTenant(t.id);
      throw e;
    }
    const wildcard = (h: string) => h === "0.0.0.0" || h === "::" || h === "[::]";
    const open = [
      ...(spec.streamTcp !== undefined && wildcard(parseStreamTcp(spec.streamTcp).host) ? ["streamTcp"] : []),
      ...t.forwards.filter((f) => wildcard(f.config.hostAddress)).map((f) =>
        `hostfwd ${f.config.protocol}:${f.config.hostPort}`
      ),
    ];
    if (open.length > 0) {
      this.#opts.log(
        "warn",
        "tenant ports bound on every address: anyone who reaches this host reaches them",
        {
          tenant: t.id,
          ports: open,
        },
      );
    }
    this.#opts.log("info", "tenant created", {
      tenant: t.id,
      socket: t.socketPath,
      streamTcp: t.streamTcpUrl,
    });
    return t;
  }

  get maxTenants(): number {
    return this.#opts.maxTenants ?? DEFAULT_MAX_TENANTS;
  }

  /** Whether a new tenant (or single-user session) would exceed --max-tenants. */
  get atTenantLimit(): boolean {
    return this.tenants.size >= this.maxTenants;
  }

  /**
   * Whether `real:port` is, on this host (any of its addresses), a port of the relay itself or of some
   * tenant: a port forward or a tenant's stream port would make the guest another tenant's client or
   * guest, and the relay's own listeners are not for guests.
   */
  #isForwardPort(protocol: "tcp" | "udp", real: number, port: number): boolean {
    if (!this.#hostAddresses.has(real)) return false;
    if (protocol === "tcp" && this.#ownPorts().has(port)) return true;
    for (const t of this.tenants.values()) {
      // a tenant's own stream port would make the guest another tenant's guest
      if (protocol === "tcp" && t.streamTcpPort === port) return true;
      for (const f of t.forwards) {
        if (f.config.protocol === protocol && f.config.hostPort === port) return true;
      }
    }
    return false;
  }

  deleteTenant(id: string): boolean {
    const t = this.tenants.get(id);
    if (!t) return false;
    this.tenants.delete(id);
    if (t.lane) this.scheduler.close(t.lane);
    t.delete();
    this.#opts.log("info", "tenant deleted", { tenant: id });
    this.#releaseMemorySoon();
    return true;
  }

  /** Where a tenant is reached, for the admin API's replies. */
  tenantEndpoints(t: Tenant): Record<string, unknown> {
    return {
      id: t.id,
      socket: t.socketPath,
      streamTcp: t.streamTcpUrl,
      websocketPath: `/v1/tenants/${t.id}/ws`,
      forwards: t.forwards.map((f) => f.config),
    };
  }

  #ephemeralTenant(): Tenant {
    const id = `session-${this.#nextSession++}`;
    const spec: TenantSpec = { id };
    const config = structuredClone(this.#opts.stack);
    const t = new Tenant(spec, config, true, {
      host: this.host,
      wheel: this.wheel,
      log: this.#opts.log,
      flowLimit: this.flowLimit,
    });
    this.tenants.set(id, t);
    return t;
  }

  /**
   * Attaches `link` to `t`, wiring its frames through the scheduler. Returns the function that feeds a
   * batch of frames, or null when refused (duplicate guest with "refuse").
   */
  #attach(
    t: Tenant,
    link: GuestLink,
  ): FrameFeed | null {
    if (t.link && this.#opts.duplicateGuest === "refuse") {
      this.#opts.log("warn", "second guest for a connected tenant refused", {
        tenant: t.id,
        remote: link.remote,
      });
      return null;
    }
    if (t.lane) this.scheduler.close(t.lane);
    t.attach(link);
    const lane = this.scheduler.open(t.id, (b, off, len) => t.input(b, off, len), t.ingress);
    t.lane = lane;
    this.#opts.log("info", "guest connected", { tenant: t.id, transport: link.kind, remote: link.remote });
    return (buf, offs, lens, n) => this.scheduler.submit(lane, buf, offs, lens, n);
  }

  #detach(t: Tenant, link: GuestLink): void {
    if (t.link !== link) return;
    if (t.lane) this.scheduler.close(t.lane);
    t.lane = null;
    this.#opts.log("info", "guest disconnected", { tenant: t.id });
    t.detach(link, this.#opts.graceMs ?? 30_000, () => {
      if (t.ephemeral) {
        this.tenants.delete(t.id);
        t.delete();
        this.#releaseMemorySoon();
      } else if (t.admittedBy === "token" && this.tenants.get(t.id) === t) {
        // a token made it; nothing is kept once its guest is gone past the grace period
        this.deleteTenant(t.id);
      }
    });
  }

  // ───────────────────────── stream transport ─────────────────────────

  /** The link, or a wrapper that drops a share of its guest-bound frames (`faults`, tests only). */
  #withFaults(t: Tenant, link: GuestLink): GuestLink {
    const loss = this.#opts.faults?.guestBoundLoss ?? 0;
    if (loss <= 0) return link;
    return lossyLink(
      link,
      loss,
      this.#opts.faults?.seed ?? 0x9e3779b9,
      () => t.counters.drop("fault-injected"),
    );
  }

  async #serveStream(conn: ByteStream, remote: string, tenant: Tenant | null): Promise<void> {
    const log = this.#opts.log;
    if (this.#stopping) return conn.close();
    if (!tenant && this.multiTenant) {
      log("warn", "stream guest refused: in multi-tenant mode guests connect to their tenant's own socket", {
        remote,
      });
      this.transportErrors++;
      return conn.close();
    }
    if (!tenant && this.atTenantLimit) {
      log("warn", "stream guest refused: the relay is at its tenant limit", {
        remote,
        limit: this.maxTenants,
      });
      this.transportErrors++;
      return conn.close();
    }
    const t = tenant ?? this.#ephemeralTenant();
    let attached: GuestLink | null = null;
    await carryStream(conn, {
      remote,
      maxFrame: this.#opts.maxFrame ?? QEMU_MAX_FRAME,
      backlogLimit: t.linkBacklogLimit,
      schedule: conn instanceof EpollSocket ? deferUntilIdle : undefined,
    }, {
      opened: (link) => {
        attached = this.#withFaults(t, link);
        const feed = this.#attach(t, attached);
        if (!feed && t.ephemeral) this.tenants.delete(t.id);
        return feed;
      },
      closed: (link, reason) => {
        if (reason && !this.#stopping) log("info", "guest connection closed", { tenant: t.id, reason });
        this.#detach(t, attached ?? link);
      },
      protocolError: (reason) => {
        this.transportErrors++;
        log("warn", "guest connection closed: protocol error", { tenant: t.id, reason });
      },
      dropped: (reason) => t.counters.drop(reason),
    });
  }

  // ───────────────────────── WebSocket transport ─────────────────────────

  #serveWs(url: string): string {
    const m = /^(?:http|ws):\/\/(\[[^\]]+\]|[^:/]+):(\d{1,5})\/?$/.exec(url);
    if (!m) throw new Error(`Invalid --listen-ws "${url}": expected http://HOST:PORT`);
    let bound = "";
    const server = Deno.serve({
      hostname: m[1].replace(/^\[|\]$/g, ""),
      port: Number(m[2]),
      onListen: (a) => (bound = `ws://${a.hostname}:${a.port}`),
    }, (req) => this.#wsRequest(req, m[1]));
    this.#servers.push(server);
    const addr = server.addr as Deno.NetAddr;
    return bound || `ws://${addr.hostname}:${addr.port}`;
  }

  async #wsRequest(req: Request, listenHost: string): Promise<Response> {
    const log = this.#opts.log;
    const url = new URL(req.url);
    // read every header before the first await: the request may not be readable afterwards
    const remote = req.headers.get("x-forwarded-for") ?? "websocket";
    const isUpgrade = req.headers.get("upgrade")?.toLowerCase() === "websocket";
    if (this.#stopping) return new Response("shutting down\n", { status: 503 });
    const refusal = this.#refuseBrowser(req, listenHost);
    if (refusal) {
      log("warn", "WebSocket refused: " + refusal, {
        origin: req.headers.get("origin"),
        host: req.headers.get("host"),
        path: url.pathname,
      });
      return json(403, { error: `Refused: ${refusal}` });
    }
    let tenant: Tenant;
    let protocol: string | undefined;
    /** When the admitting token expires (ms since the epoch): the session ends then. */
    let expiresAt = Infinity;
    const named = /^\/v1\/tenants\/([^/]+)\/ws$/.exec(url.pathname);
    const notUpgrade = () =>
      new Response("slirp-relay: connect with a WebSocket (one Ethernet frame per binary message)\n", {
        status: 426,
      });
    if (url.pathname === "/" && !this.multiTenant) {
      if (!isUpgrade) return notUpgrade();
      if (this.atTenantLimit) {
        log("warn", "WebSocket refused: the relay is at its tenant limit", { limit: this.maxTenants });
        return json(503, { error: `The relay is at its limit of ${this.maxTenants} guests` });
      }
      tenant = this.#ephemeralTenant();
    } else if (named) {
      let id: string;
      try {
        id = decodeURIComponent(named[1]);
      } catch {
        return json(400, { error: "Bad %-encoding in the tenant id" });
      }
      if (!this.multiTenant) {
        const t = this.tenants.get(id);
        if (!t) return json(404, { error: `No tenant "${id}"` });
        if (!isUpgrade) return notUpgrade();
        tenant = t;
      } else {
        const offered = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((s) => s.trim())
          .filter(Boolean);
        const fromProto = offered.find((p) => p.includes("."));
        const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.get("authorization") ?? "")?.[1];
        const token = url.searchParams.get("token") ?? bearer ?? fromProto;
        if (!token) {
          log("warn", "WebSocket refused: no token", { tenant: id });
          return json(401, {
            error: "A token is required (?token=, Authorization: Bearer, or Sec-WebSocket-Protocol)",
          });
        }
        if (!this.#opts.tokenSecret) {
          return json(403, { error: "This relay admits no tokens (no --token-secret-file)" });
        }
        const check = await verifyToken(this.#opts.tokenSecret, token);
        if (!check.ok) {
          log("warn", "WebSocket refused: bad token", { tenant: id, reason: check.reason });
          return json(check.reason === "Token has expired" ? 401 : 403, { error: check.reason });
        }
        if (check.claims.tenant !== id) {
          log("warn", "WebSocket refused: token for another tenant", {
            tenant: id,
            tokenTenant: check.claims.tenant,
          });
          return json(403, { error: "Token is for another tenant" });
        }
        if (fromProto === token) protocol = token;
        // the token is good: only now does a non-WebSocket request learn it must upgrade
        if (!isUpgrade) return notUpgrade();
        const admitted = await this.#admitByToken(id, check.claims);
        if (admitted instanceof Response) return admitted;
        tenant = admitted;
        expiresAt = check.claims.exp * 1000;
      }
    } else {
      return json(404, {
        error: this.multiTenant ? "Use /v1/tenants/<id>/ws with a token" : "Use / or /v1/tenants/<id>/ws",
      });
    }
    let upgrade: Deno.WebSocketUpgrade;
    try {
      upgrade = Deno.upgradeWebSocket(req, protocol ? { protocol } : {});
    } catch (e) {
      // e.g. "Upgrade: websocket" without "Connection: Upgrade" or a key: the client's mistake, not ours
      if (tenant.ephemeral && !tenant.link) this.tenants.delete(tenant.id);
      return json(400, { error: `Bad WebSocket upgrade: ${(e as Error).message}` });
    }
    const { socket, response } = upgrade;
    socket.binaryType = "arraybuffer";
    this.#serveWsSocket(socket, tenant, remote, expiresAt);
    return response;
  }

  /**
   * The tenant a valid token admits, with the token's claims applied: created if absent; if it exists, its
   * policy and quotas must be the ones the token carries. A token-created tenant with no guest is
   * re-created under the new claims; a live one, or one an operator created, refuses a token that
   * claims something else (409) rather than run a guest under rules its token did not grant.
   */
  async #admitByToken(id: string, claims: TokenClaims): Promise<Tenant | Response> {
    let t = this.tenants.get(id);
    if (t && !claimsMatch(t.spec, claims, t.admittedBy === "token")) {
      if (t.admittedBy === "token" && !t.link) {
        this.deleteTenant(id);
        t = undefined;
      } else {
        this.#opts.log("warn", "WebSocket refused: token claims differ from the live tenant's", {
          tenant: id,
        });
        return json(409, { error: `Token claims (policy, quotas) differ from tenant "${id}"'s` });
      }
    }
    if (t) return t;
    try {
      t = await this.createTenant({ id, policy: claims.policy, quotas: claims.quotas }, "token");
    } catch (e) {
      return json(e instanceof RelayFullError ? 503 : 400, { error: (e as Error).message });
    }
    // admitted but no guest ever attached (the upgrade failed, the client went away): it goes after the grace
    this.#removeIfUnused(t);
    return t;
  }

  /**
   * Removes token-created tenant `t` unless a guest attached within the grace period (at least
   * {@linkcode UPGRADE_WAIT_MS}: the upgrade itself must have time to finish).
   */
  #removeIfUnused(t: Tenant): void {
    const timer = setTimeout(() => {
      if (!t.deleted && !t.link && this.tenants.get(t.id) === t) this.deleteTenant(t.id);
    }, Math.max(this.#opts.graceMs ?? 30_000, UPGRADE_WAIT_MS));
    t.closers.push(() => clearTimeout(timer));
  }

  /**
   * Why a browser's request may not open a guest link, or null when it may: a page from another site
   * (`Origin`), or a name that only resolves here (`Host`, DNS rebinding). See web_origin.ts.
   */
  #refuseBrowser(req: Request, listenHost: string): string | null {
    const allowed = this.#opts.wsAllowOrigin;
    if (this.multiTenant && allowed === undefined) return null; // tokens decide
    const origin = req.headers.get("origin");
    if (!originAllowed(origin, allowed ?? [])) return `origin ${origin} is not allowed (--ws-allow-origin)`;
    if (!this.multiTenant && !hostAllowed(req.headers.get("host"), listenHost)) {
      return `Host ${req.headers.get("host")} does not name this relay`;
    }
    return null;
  }

  #serveWsSocket(ws: WebSocket, t: Tenant, remote: string, expiresAt = Infinity): void {
    let expiry: ReturnType<typeof setTimeout> | undefined;
    const expireAt = () => {
      // setTimeout holds at most ~24.8 days: longer tokens are checked again then
      const left = expiresAt - Date.now();
      if (left <= 0) {
        this.#opts.log("info", "guest session ended: its token expired", { tenant: t.id });
        ws.close(4401, "token expired");
        return;
      }
      expiry = setTimeout(expireAt, Math.min(left, 0x7fffffff));
    };
    let attached: GuestLink | null = null;
    carryWebSocket(ws, {
      remote,
      maxFrame: Math.min(this.#opts.maxFrame ?? QEMU_MAX_FRAME, 65535 + 14),
      backlogLimit: t.linkBacklogLimit,
    }, {
      opened: (link) => {
        attached = this.#withFaults(t, link);
        const feed = this.#attach(t, attached);
        if (feed && expiresAt !== Infinity) expireAt();
        return feed;
      },
      closed: (link) => {
        if (expiry !== undefined) clearTimeout(expiry);
        this.#detach(t, attached ?? link);
      },
      protocolError: (reason, fields) => {
        this.transportErrors++;
        this.#opts.log("warn", `WebSocket guest closed: ${reason}`, { tenant: t.id, ...fields });
      },
      dropped: (reason) => t.counters.drop(reason),
    });
  }

  // ───────────────────────── single-user forwards ─────────────────────────

  /** The guest a single-user port forward reaches: the most recently connected one. */
  #currentSingleUser(): Tenant | null {
    let last: Tenant | null = null;
    for (const t of this.tenants.values()) if (t.link && t.ephemeral) last = t;
    return last;
  }

  async #bindSingleUserForward(f: HostForwardConfig): Promise<void> {
    const target = () => this.#currentSingleUser()?.forwardTarget() ?? null;
    const refused = () =>
      this.#opts.log("info", "port forward client refused: no guest connected", { port: f.hostPort });
    this.#forwards.push(await bindForward(this.host, f, target, this.#opts.log, "single-user", refused));
  }

  /** Where pcap captures go. */
  get captureDir(): string {
    return this.#opts.captureDir ?? Deno.env.get("TMPDIR") ?? "/tmp";
  }

  /** Parses a QEMU hostfwd string with the configured parser. */
  parseForward(s: string): HostForwardConfig {
    if (!this.#opts.parseForward) throw new Error("No hostfwd parser configured");
    return this.#opts.parseForward(s);
  }

  /**
   * Graceful shutdown: stop accepting, reset every guest TCP connection (RST rather than a hang), close
   * transports and listeners. Bounded: returns within about a second.
   */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const f of this.#forwards) f.close();
    this.#forwards = [];
    for (const l of this.#listeners) l.close();
    this.#listeners = [];
    for (const t of [...this.tenants.values()]) {
      t.stack?.tcp.close(); // RSTs go out through the still-open link
    }
    // let the resets reach the guests' sockets
    await new Promise((r) => setTimeout(r, 50));
    for (const id of [...this.tenants.keys()]) this.deleteTenant(id);
    await Promise.race([
      Promise.allSettled(this.#servers.map((s) => s.shutdown())),
      new Promise((r) => setTimeout(r, 1000)),
    ]);
    this.#servers = [];
    if (this.#tick !== undefined) clearInterval(this.#tick);
    this.#tick = undefined;
    clearTimeout(this.#memoryRelease);
    this.#memoryRelease = undefined;
    this.#icmp?.close();
  }
}
