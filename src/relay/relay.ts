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
import type { RelayOptions } from "./relay_options.ts";
import type { Logger } from "../common/logger.ts";
import { after, type CancelTimer } from "../common/timers.ts";
import { resolvePlan } from "../stack/config.ts";
import { TimerWheel } from "../stack/timer_wheel.ts";
import { type HostSockets, hostSockets } from "../host/sockets.ts";
import { IcmpSocket } from "../host/icmp_socket.ts";
import { datagramPath, type StreamListener } from "../host/stream_listener.ts";
import { carryStream, QEMU_MAX_FRAME } from "../transport/stream.ts";
import type { ByteStream, HostDatagramSocket, HostIcmpEcho, HostNet } from "../host/host.ts";
import type { HostForwardConfig } from "../stack/config.ts";
import { FrameScheduler } from "./scheduler.ts";
import { Tenant } from "./tenant.ts";
import { SingleUserSessions } from "./single_user_sessions.ts";
import { bindForward, type BoundForward } from "./port_forward.ts";
import type { FrameFeed, GuestLink, LinkPeer } from "../transport/link.ts";
import { carryWebSocket } from "../transport/websocket.ts";
import { carryDatagrams } from "../transport/datagram.ts";
import { framePeer, type PeerContext, webSocketPeer } from "./guest_peers.ts";
import { wispCredentials } from "./wisp_guest.ts";
import type { WebSocketFramingKind } from "../transport/websocket_framing.ts";
import { compilePolicy, parseStreamTcp, tenantStackConfig, validateSpec } from "./tenant_config.ts";
import { AdminApi, json } from "./admin.ts";
import { listenHttp } from "./http_listen.ts";
import { Admission, endAtExpiry, RelayFullError, type WebSocketAdmission } from "./admission.ts";
import { carryRing, type RingCarrier } from "../transport/ring.ts";
import type { FrameRing } from "../common/frame_ring.ts";
import type { RelayView } from "./relay_view.ts";
import { Counters } from "../stack/counters.ts";
import { PcapCapture } from "./pcap_capture.ts";
import { HostAddresses } from "./host_addresses.ts";
import type { ForwardOwner } from "./gvproxy_forwarder.ts";
import { LOOPBACK_V4 } from "../stack/translation.ts";
import { descriptorLimit, FlowLimit } from "../stack/flow_limit.ts";
import { platform } from "../platform/current.ts";
import type { HttpServer } from "../platform/platform.ts";
import { SharedRelayState } from "./shared_state.ts";
import { mapLargeBuffersOnOwnPages, openFileLimit, releaseFreedMemory } from "../host/libc.ts";

export type { RelayOptions } from "./relay_options.ts";

/** Descriptors kept back from flows for guest connections, listeners and DNS queries. */
export const DESCRIPTOR_RESERVE = 512;
export const DEFAULT_MAX_TENANTS = 4096;
/** Quiet time after the last tenant left before its memory is handed back. */
const MEMORY_RELEASE_QUIET_MS = 5_000;

/** The tenant registry of a worker that shares the relay-wide tenant count with the others. */
class CountedTenants extends Map<string, Tenant> {
  constructor(readonly shared: SharedRelayState) {
    super();
  }

  override set(id: string, t: Tenant): this {
    if (!this.has(id)) this.shared.addTenants(1);
    return super.set(id, t);
  }

  override delete(id: string): boolean {
    const had = super.delete(id);
    if (had) this.shared.addTenants(-1);
    return had;
  }
}

/** Connected guests (for tests and stats): one per tenant with a link. */
export interface GuestSession {
  tenant: Tenant;
  stack: NonNullable<Tenant["stack"]>;
}

export class Relay implements RelayView {
  readonly wheel: TimerWheel;
  readonly host: HostNet;
  readonly #sockets: HostSockets;
  readonly scheduler = new FrameScheduler();
  readonly tenants: Map<string, Tenant>;
  readonly #shared: SharedRelayState | null;
  readonly startedAt = Date.now();
  #opts: RelayOptions;
  #listeners: StreamListener[] = [];
  #datagramSockets: HostDatagramSocket[] = [];
  #servers: HttpServer[] = [];
  #wsUrls: string[] = [];
  #adminUrl: string | null = null;
  #tick: ReturnType<typeof setInterval> | undefined;
  #memoryRelease: CancelTimer | undefined;
  /** RSS right after the last compacting release (0: none yet). */
  #rssAfterRelease = 0;
  #singleUser: SingleUserSessions;
  #icmp: IcmpSocket | null = null;
  #forwards: BoundForward[] = [];
  #stopping = false;
  #draining = false;
  #hostAddresses = new HostAddresses();
  #adminApi: AdminApi | null = null;
  /** Guests whose WebSocket lives on another thread. */
  #rings = new Set<RingCarrier>();
  #admission: Admission;
  /** Open flows across every tenant. */
  readonly flowLimit: FlowLimit;
  /** What deleted tenants had counted (the relay-wide totals of the metrics keep it). */
  readonly retiredCounters: Counters = new Counters();
  /** `--pcap`: every single-user guest's frames, from the first. */
  #pcap: PcapCapture | null = null;
  /** Frames refused at the transport (framing errors, oversize WebSocket messages). */
  transportErrors = 0;
  /** What carriers' peers report to (guest_peers.ts). */
  readonly #peers: PeerContext;

  constructor(opts: RelayOptions) {
    resolvePlan(opts.stack); // refuse a bad plan before binding anything
    if (opts.multiTenant && opts.pcap) {
      throw new Error(
        "--pcap captures single-user mode; in multi-tenant mode start a tenant's capture (admin API)",
      );
    }
    if (opts.multiTenant && !opts.tokenSecret && !opts.admin) {
      throw new Error("Multi-tenant mode needs --token-secret-file or --admin to create tenants");
    }
    this.#opts = opts;
    this.#shared = opts.shared ? new SharedRelayState(opts.shared.buffers, opts.shared.worker) : null;
    this.tenants = this.#shared ? new CountedTenants(this.#shared) : new Map();
    this.#singleUser = new SingleUserSessions({
      tenants: this.tenants,
      stack: opts.stack,
      tenantDeps: () => ({
        host: this.host,
        wheel: this.wheel,
        log: opts.log,
        flowLimit: this.flowLimit,
        relayCapture: this.#pcap,
        retired: this.retiredCounters,
      }),
      closeLane: (t) => {
        if (t.lane) this.scheduler.close(t.lane);
        t.lane = null;
      },
      log: opts.log,
    });
    this.#admission = new Admission({
      multiTenant: opts.multiTenant === true,
      tenants: this.tenants,
      noRoomForSession: () => this.atTenantLimit && !this.#singleUser.releaseOldestWaiting(),
      maxTenants: this.maxTenants,
      log: opts.log,
      tokenSecret: opts.tokenSecret,
      wsAllowOrigin: opts.wsAllowOrigin,
      graceMs: opts.graceMs ?? 30_000,
      ephemeralTenant: () => this.#singleUser.open(),
      createTenant: (raw, by) => this.createTenant(raw, by),
      deleteTenant: (id) => this.deleteTenant(id),
    });
    mapLargeBuffersOnOwnPages();
    const fds = openFileLimit() ?? descriptorLimit(() => platform.readTextFile("/proc/self/limits"));
    this.flowLimit = new FlowLimit(
      opts.maxFlows ?? (fds === null ? 0 : Math.max(64, Math.min(1 << 20, fds - DESCRIPTOR_RESERVE))),
      this.#shared?.flowCell,
    );
    this.wheel = new TimerWheel(performance.now());
    if (!opts.ownedLoop) this.wheel.onWake = () => this.#startTicking();
    this.#sockets = hostSockets(() => this.#openIcmp());
    this.host = this.#sockets.net;
    const isStopping = () => this.#stopping;
    this.#peers = {
      log: opts.log,
      attach: (t, link) => this.#attach(t, link),
      detach: (t, link) => this.#detach(t, link),
      dropEphemeral: (t) => this.#singleUser.drop(t),
      resume: (fresh, link, mac) => this.#singleUser.resume(fresh, link, mac),
      protocolError: () => this.transportErrors++,
      get stopping() {
        return isStopping();
      },
      faults: opts.faults,
      wisp: {
        tenants: this.tenants,
        deleteTenant: (id) => this.deleteTenant(id),
        graceMs: opts.graceMs ?? 30_000,
        motd: opts.wispMotd,
        authenticate: opts.wispCredentials ? wispCredentials(opts.wispCredentials) : undefined,
      },
    };
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
   * A tenant's flows, rings and sockets have gone: once no tenant has left for
   * {@linkcode MEMORY_RELEASE_QUIET_MS}, give the pages back to the system (compacting the heap only when the
   * process grew by a tenth since the last compaction).
   */
  #releaseMemorySoon(): void {
    // once tenants stop leaving for a while: a relay with churning tenants is not paused again and again
    this.#memoryRelease?.();
    this.#memoryRelease = after(MEMORY_RELEASE_QUIET_MS, () => {
      this.#memoryRelease = undefined;
      // compact only when the process has grown by a tenth since the last time: one tenant leaving among
      // a thousand does not pay for a stop of every tenant
      const rss = platform.memory().rss;
      const compact = rss > this.#rssAfterRelease * 1.1;
      releaseFreedMemory(compact);
      if (compact) this.#rssAfterRelease = platform.memory().rss;
    });
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
      if (this.#opts.pcap) this.#pcap = new PcapCapture(this.#opts.pcap, undefined, true);
      for (const url of this.#opts.listenQemu) {
        const l = this.#sockets.listenStream(url, (conn) => this.#serveStream(conn, conn.remote, null));
        this.#listeners.push(l);
      }
      for (const url of this.#opts.listenDgram ?? []) {
        const socket = this.#serveDatagrams(datagramPath(url), null);
        this.#datagramSockets.push(socket);
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
    const ports = new Set<number>(this.#opts.ownPorts ?? []);
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

  /**
   * Stops admitting: no new tenant, no new guest connection (stream, datagram, WebSocket, Wisp), readiness
   * false — the live guests carry on until they leave or the relay stops. Returns the guests still connected.
   */
  drain(): number {
    if (!this.#draining) this.#opts.log("info", "draining: no new tenants or guest connections");
    this.#draining = true;
    return this.guestsConnected;
  }

  /** Whether {@linkcode drain} was called. */
  get draining(): boolean {
    return this.#draining;
  }

  /** This relay's name in a fleet (the metrics' `relay` label). */
  get instance(): string {
    return this.#opts.instance ?? platform.hostname();
  }

  /** Tenants with a guest attached (frames or Wisp). */
  get guestsConnected(): number {
    let n = 0;
    for (const t of this.tenants.values()) if (t.hasGuest) n++;
    return n;
  }

  /** Creates a named tenant (admin API, config file, or token admission). Throws on a bad spec or a duplicate. */
  async createTenant(raw: unknown, admittedBy: "admin" | "token" = "admin"): Promise<Tenant> {
    if (this.#draining) throw new RelayFullError("The relay is draining: it admits no new tenants");
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
      // the host's own IPv6 addresses reach services bound on [::]: refused unless a rule of the tenant
      // allows them by name, and then never the ports of the relay or of other tenants (as for IPv4)
      egressGuard6: this.multiTenant
        ? (p, real, port, allowedByRule) =>
          !this.#hostAddresses.has6(real) || (allowedByRule && !this.#isForwardPort(p, LOOPBACK_V4, port))
        : undefined,
      flowLimit: this.flowLimit,
      retired: this.retiredCounters,
      portsChanged: () => this.#publishPorts(),
    }, admittedBy);
    this.tenants.set(t.id, t);
    try {
      for (const f of config.hostfwd) await t.addForward(f);
      if (this.#opts.tenantSocketDir) {
        const path = `${this.#opts.tenantSocketDir}/${t.id}.sock`;
        const l = this.#sockets.listenStream(
          `unix://${path}`,
          (conn) => this.#serveStream(conn, conn.remote, t),
        );
        t.socketPath = path;
        t.closers.push(() => l.close());
        if (this.#sockets.kind === "epoll") {
          const dgram = this.#serveDatagrams(`${this.#opts.tenantSocketDir}/${t.id}.dgram.sock`, t);
          t.datagramSocketPath = dgram.path;
          t.closers.push(() => dgram.close());
        }
      }
      if (spec.streamTcp !== undefined) {
        const { host, port } = parseStreamTcp(spec.streamTcp);
        const url = `tcp://${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;
        const l = this.#sockets.listenStream(url, (conn) => this.#serveStream(conn, conn.remote, t));
        t.streamTcpUrl = l.url;
        t.streamTcpPort = Number(/:(\d+)$/.exec(l.url)?.[1] ?? 0);
        t.closers.push(() => l.close());
      }
    } catch (e) {
      this.deleteTenant(t.id);
      throw e;
    }
    this.#publishPorts();
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
    return (this.#shared?.tenants ?? this.tenants.size) >= this.maxTenants;
  }

  /**
   * Whether `real:port` is, on this host (any of its addresses), a port of the relay itself or of some
   * tenant: a port forward or a tenant's stream port would make the guest another tenant's client or
   * guest, and the relay's own listeners are not for guests.
   */
  #isForwardPort(protocol: "tcp" | "udp", real: number, port: number): boolean {
    if (!this.#hostAddresses.has(real)) return false;
    if (protocol === "tcp" && this.#ownPorts().has(port)) return true;
    // tenants of the other data-plane workers (this worker's own are published there too)
    if (this.#shared?.portHeld(protocol, port)) return true;
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
    this.#publishPorts();
    this.#opts.log("info", "tenant deleted", { tenant: id });
    this.#releaseMemorySoon();
    return true;
  }

  /** Tells the other data-plane workers which host ports this one's tenants hold. */
  #publishPorts(): void {
    if (!this.#shared) return;
    const tcp: number[] = [], udp: number[] = [];
    for (const t of this.tenants.values()) {
      if (t.streamTcpPort) tcp.push(t.streamTcpPort);
      for (const f of t.forwards) (f.config.protocol === "tcp" ? tcp : udp).push(f.config.hostPort);
    }
    this.#shared.publishPorts(tcp, udp);
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
    if (t.ephemeral && t.guestMac === null) this.#singleUser.callWaitingGuests(t);
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

  /**
   * The peer of a frame carrier whose guest reached `tenant`'s own socket (null: a shared listener of
   * single-user mode), or null when admission refuses it.
   */
  #framePeer(
    tenant: Tenant | null,
    remote: string,
  ): LinkPeer & { backlogLimit: number; largestFrameToGuest: number } | null {
    if (this.#stopping) return null;
    if (this.#draining) {
      this.#opts.log("info", "guest connection refused: the relay is draining", { remote });
      return null;
    }
    const t = this.#admission.stream(tenant, remote);
    if (typeof t === "string") {
      this.transportErrors++;
      return null;
    }
    return {
      ...framePeer(this.#peers, t, true),
      backlogLimit: t.linkBacklogLimit,
      largestFrameToGuest: t.largestFrameToGuest,
    };
  }

  async #serveStream(conn: ByteStream, remote: string, tenant: Tenant | null): Promise<void> {
    const peer = this.#framePeer(tenant, remote);
    if (!peer) return conn.close();
    await carryStream(conn, {
      remote,
      maxFrame: this.#opts.maxFrame ?? QEMU_MAX_FRAME,
      backlogLimit: peer.backlogLimit,
      schedule: this.#sockets.flushSchedule,
      largestFrameToGuest: peer.largestFrameToGuest,
    }, peer);
  }

  /** Carries the guests that send frames to the UNIX datagram socket at `path`. */
  #serveDatagrams(path: string, tenant: Tenant | null): HostDatagramSocket {
    const socket = this.#sockets.bindDatagram(path);
    carryDatagrams(
      socket,
      Math.min(this.#opts.maxFrame ?? QEMU_MAX_FRAME, 65535 + 14),
      (remote) => this.#framePeer(tenant, remote),
    );
    return socket;
  }

  // ───────────────────────── WebSocket transport ─────────────────────────

  #serveWs(url: string): string {
    const server = listenHttp(url, "--listen-ws", (req, host) => this.#wsRequest(req, host), "http|ws");
    this.#servers.push(server);
    return `ws://${server.hostname}:${server.port}`;
  }

  async #wsRequest(req: Request, listenHost: string): Promise<Response> {
    // read every header before the first await: the request may not be readable afterwards
    const remote = req.headers.get("x-forwarded-for") ?? "websocket";
    if (this.#stopping || this.#draining) return new Response("shutting down\n", { status: 503 });
    const admitted = await this.#admission.webSocket(req, listenHost);
    if (admitted instanceof Response) return admitted;
    const { tenant, protocol } = admitted;
    let upgrade: { socket: WebSocket; response: Response };
    try {
      upgrade = platform.upgradeWebSocket(req, protocol);
    } catch (e) {
      // e.g. "Upgrade: websocket" without "Connection: Upgrade" or a key: the client's mistake, not ours
      this.#singleUser.drop(tenant);
      return json(400, { error: `Bad WebSocket upgrade: ${(e as Error).message}` });
    }
    const { socket, response } = upgrade;
    socket.binaryType = "arraybuffer";
    this.#serveWsSocket(socket, tenant, remote, admitted);
    return response;
  }

  #serveWsSocket(ws: WebSocket, t: Tenant, remote: string, admitted: WebSocketAdmission): void {
    const peer = webSocketPeer(this.#peers, t, admitted.framing, admitted.wispVersion);
    let stopExpiry = () => {};
    carryWebSocket(ws, {
      remote,
      maxFrame: Math.min(this.#opts.maxFrame ?? QEMU_MAX_FRAME, 65535 + 14),
      backlogLimit: t.linkBacklogLimit,
      framing: admitted.framing,
    }, {
      ...peer,
      opened: (link) => {
        const feed = peer.opened(link);
        if (feed) {
          stopExpiry = endAtExpiry(
            ws,
            admitted.expiresAt,
            () => this.#opts.log("info", "guest session ended: its token expired", { tenant: t.id }),
          );
        }
        return feed;
      },
      closed: (link, reason) => {
        stopExpiry();
        peer.closed(link, reason);
      },
    });
  }

  // ───────────────────────── guests of another thread (data-plane worker) ─────────────────────────

  /** Answers an admin request forwarded from the thread that holds the listener. */
  handleAdmin(req: Request): Promise<Response> {
    this.#adminApi ??= new AdminApi(this, this.#opts.adminToken ?? "");
    return this.#adminApi.handle(req);
  }

  /** Admits a WebSocket request whose socket lives on another thread (see {@linkcode carryRing}). */
  admitWebSocket(req: Request, listenHost: string): Promise<WebSocketAdmission | Response> {
    if (this.#stopping || this.#draining) {
      return Promise.resolve(new Response("shutting down\n", { status: 503 }));
    }
    return this.#admission.webSocket(req, listenHost);
  }

  /** The thread holding an admitted WebSocket could not upgrade it: forget a tenant made for it. */
  abandonWebSocket(tenantId: string): void {
    const t = this.tenants.get(tenantId);
    if (t) this.#singleUser.drop(t);
  }

  /**
   * Carries an admitted tenant's guest whose WebSocket lives on another thread, over two frame rings.
   * False when the tenant is gone or refuses a second guest (`toMain` is closed either way).
   */
  carryRing(
    tenantId: string,
    guest: { remote: string; framing: WebSocketFramingKind; wispVersion?: 1 | 2 },
    toWorker: FrameRing,
    toMain: FrameRing,
    ringBell: () => void,
  ): boolean {
    const t = this.tenants.get(tenantId);
    if (!t || this.#stopping) {
      toMain.close();
      ringBell();
      return false;
    }
    const peer = webSocketPeer(this.#peers, t, guest.framing, guest.wispVersion);
    let refused = false;
    const options = { ...guest, backlogLimit: t.linkBacklogLimit, ringBell };
    const carrier = carryRing(toWorker, toMain, options, {
      ...peer,
      opened: (link) => {
        const feed = peer.opened(link);
        if (!feed) refused = true;
        return feed;
      },
      closed: (link, reason) => {
        this.#rings.delete(carrier);
        peer.closed(link, reason);
      },
    });
    if (refused) return false;
    this.#rings.add(carrier);
    carrier.service();
    return true;
  }

  /** Another thread woke this one: ring links may have frames, room or a close. */
  serviceRings(): void {
    for (const c of this.#rings) c.service();
  }

  // ───────────────────────── single-user forwards ─────────────────────────

  async #bindSingleUserForward(f: HostForwardConfig): Promise<BoundForward> {
    const target = () => this.#singleUser.latest()?.session.forwardTarget ?? null;
    const refused = () =>
      this.#opts.log("info", "port forward client refused: no guest connected", { port: f.hostPort });
    const b = await bindForward(this.host, f, target, this.#opts.log, "single-user", refused);
    this.#forwards.push(b);
    return b;
  }

  /**
   * Single-user mode's port forwards as the admin API changes them (gvproxy's forwarder API): they reach
   * the latest guest, as `--hostfwd` does. Null in multi-tenant mode, where each tenant holds its own.
   */
  get singleUserForwards(): ForwardOwner | null {
    if (this.multiTenant) return null;
    return {
      forwards: this.#forwards,
      addForward: (f) => this.#bindSingleUserForward(f),
      removeForward: (b) => {
        b.close();
        this.#forwards = this.#forwards.filter((x) => x !== b);
      },
    };
  }

  /** Where pcap captures go. */
  get captureDir(): string {
    return this.#opts.captureDir ?? platform.env("TMPDIR") ?? "/tmp";
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
    this.#pcap?.stop();
    for (const l of this.#listeners) l.close();
    this.#listeners = [];
    for (const d of this.#datagramSockets) d.close();
    this.#datagramSockets = [];
    for (const t of [...this.tenants.values()]) {
      t.stack?.resetAllTcp(); // RSTs go out through the still-open link
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
    this.#memoryRelease?.();
    this.#memoryRelease = undefined;
    this.#icmp?.close();
  }
}
