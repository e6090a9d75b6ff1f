/**
 * A tenant: one isolated virtual network with its own {@linkcode Stack}, policy, quotas, port forwards,
 * counters and (in multi-tenant mode) its own stream socket. At most one guest link is attached at a
 * time. When the guest goes away the stack lives on for a grace period (a v86 guest reconnects every
 * few seconds), then every flow and host socket of the tenant is released.
 *
 * @module
 */
import type { WispSession } from "../stack/wisp_service.ts";
import type { Stack } from "../stack/stack.ts";
import { EthernetSession } from "./ethernet_session.ts";
import type { GuestLink } from "../transport/link.ts";
import type { FrameRecorder } from "../transport/link_wrappers.ts";
import type { Logger } from "../common/logger.ts";
import type { HostForwardConfig, StackConfig } from "../stack/config.ts";
import { Counters } from "../stack/counters.ts";
import type { FlowLimit } from "../stack/flow_limit.ts";
import type { TimerWheel } from "../stack/timer_wheel.ts";
import { TokenBucket } from "../common/token_bucket.ts";
import type { HostNet } from "../host/host.ts";
import { ReadOnlyDir } from "../host/read_only_dir.ts";
import type { Lane } from "./scheduler.ts";
import { PcapCapture } from "./pcap_capture.ts";
import { bindForward, type BoundForward } from "./port_forward.ts";
import { ETH_HEADER_LEN } from "../wire/ethernet.ts";
import { DEFAULT_QUOTAS, LINK_BACKLOG_MAX, type TenantQuotas, type TenantSpec } from "./tenant_config.ts";

/** What a tenant needs from the relay. */
export interface TenantDeps {
  host: HostNet;
  wheel: TimerWheel;
  log: Logger;
  egressGuard?: (protocol: "tcp" | "udp", real: number, port: number) => boolean;
  /** The IPv6 twin: false refuses an IPv6 destination (multi-tenant: the relay host's own addresses). */
  egressGuard6?: (protocol: "tcp" | "udp", real: Uint8Array, port: number, allowedByRule: boolean) => boolean;
  /** The relay-wide bound on open flows. */
  flowLimit?: FlowLimit;
  /** The tenant's host ports changed (a forward bound or closed). */
  portsChanged?: () => void;
  /** A relay-wide capture (`--pcap`) that records every tenant's frames from the first. */
  relayCapture?: PcapCapture | null;
  /** Where a deleted tenant's counts go, so that the relay-wide totals keep them. */
  retired?: Counters;
}

export class Tenant {
  readonly id: string;
  spec: TenantSpec;
  readonly config: StackConfig;
  /** Anonymous single-user session: removed once its guest has left (and not come back within the grace). */
  readonly ephemeral: boolean;
  /**
   * A single-user session's guest: the source MAC of the first frame its guest sent (48 bits), null before.
   * A guest that reconnects and sends from it within the grace period resumes the session.
   */
  guestMac: number | null = null;
  readonly counters: Counters = new Counters();
  readonly quotas: Required<TenantQuotas>;
  readonly ingress: TokenBucket | null;
  readonly egress: TokenBucket | null;
  readonly createdAt = Date.now();
  /** The guest's frames, the stack and the grace period. */
  readonly session: EthernetSession;
  forwards: BoundForward[] = [];
  capture: PcapCapture | null = null;
  /** The tenant's own stream socket (multi-tenant mode). */
  socketPath: string | null = null;
  /** Wisp clients' sessions (L4 streams, no frames) on this tenant's stack. */
  readonly wispSessions: Set<WispSession> = new Set();
  /** Its own UNIX datagram socket (one frame per datagram), beside the stream socket. */
  datagramSocketPath: string | null = null;
  /** Its own TCP stream port (spec.streamTcp), as a URL, and the port. */
  streamTcpUrl: string | null = null;
  streamTcpPort = 0;
  /** Closes the tenant's own listeners (UNIX socket, TCP port). */
  readonly closers: (() => void)[] = [];
  #deps: TenantDeps;
  #deleted = false;

  /** Who created it: an operator (admin API, config file) or a guest's token (removed when unused). */
  readonly admittedBy: "admin" | "token";

  constructor(
    spec: TenantSpec,
    config: StackConfig,
    ephemeral: boolean,
    deps: TenantDeps,
    admittedBy: "admin" | "token" = "admin",
  ) {
    this.admittedBy = admittedBy;
    this.id = spec.id;
    this.spec = spec;
    this.config = config;
    this.ephemeral = ephemeral;
    this.#deps = deps;
    this.quotas = { ...DEFAULT_QUOTAS, ...spec.quotas };
    const now = performance.now();
    this.ingress = this.quotas.ingressBytesPerSecond > 0
      ? new TokenBucket(this.quotas.ingressBytesPerSecond, this.quotas.ingressBytesPerSecond, now)
      : null;
    this.egress = this.quotas.egressBytesPerSecond > 0
      ? new TokenBucket(this.quotas.egressBytesPerSecond, this.quotas.egressBytesPerSecond, now)
      : null;
    const { host, wheel, log, egressGuard, egressGuard6, flowLimit } = deps;
    this.#retired = deps.retired ?? null;
    this.session = new EthernetSession({
      stack: {
        host,
        wheel,
        log,
        egressGuard,
        egressGuard6,
        flowLimit,
        tenant: this.id,
        tftpFiles: config.tftp ? new ReadOnlyDir(config.tftp) : undefined,
      },
      config,
      counters: this.counters,
    });
  }

  get stack(): Stack | null {
    return this.session.stack;
  }

  get link(): GuestLink | null {
    return this.session.link;
  }

  get lane(): Lane | null {
    return this.session.lane;
  }

  set lane(l: Lane | null) {
    this.session.lane = l;
  }

  /** Bytes of frames that may wait toward the guest. */
  get linkBacklogLimit(): number {
    const b = this.quotas.bufferedBytes;
    return b > 0 ? Math.min(b, LINK_BACKLOG_MAX) : LINK_BACKLOG_MAX;
  }

  /** The largest frame its stack sends toward the guest: an Ethernet header and the MTU. */
  get largestFrameToGuest(): number {
    return ETH_HEADER_LEN + this.config.mtu;
  }

  get deleted(): boolean {
    return this.#deleted;
  }

  /** The tenant's stack, created on first use. */
  ensureStack(): Stack {
    return this.session.ensureStack();
  }

  /** Frames from the guest enter here (through the scheduler). */
  input(buf: Uint8Array, off: number, len: number): void {
    this.session.input(buf, off, len);
  }

  /** Attaches a guest link; the previous one, if any, is closed (the caller decides replace vs refuse). */
  attach(link: GuestLink): void {
    this.session.attach(link);
  }

  /**
   * The guest link went away: keep state for `graceMs`, then release every flow. A single-user session
   * whose guest never sent a frame cannot be resumed, so it goes at once.
   */
  detach(link: GuestLink, graceMs: number, onExpire: () => void): void {
    this.session.detach(link, this.ephemeral && this.guestMac === null ? 0 : graceMs, () => {
      if (!this.ephemeral) {
        this.#deps.log("info", "tenant idle past its grace period; flows released", { tenant: this.id });
      }
      onExpire();
    });
  }

  /** Binds a port forward for this tenant. */
  async addForward(f: HostForwardConfig): Promise<BoundForward> {
    const bound = await bindForward(
      this.#deps.host,
      f,
      () => this.session.forwardTarget,
      this.#deps.log,
      this.id,
      () => this.counters.drop("forward-no-guest"),
    );
    this.forwards.push(bound);
    this.#deps.portsChanged?.();
    return bound;
  }

  removeForward(b: BoundForward): void {
    b.close();
    this.forwards = this.forwards.filter((x) => x !== b);
    this.#deps.portsChanged?.();
  }

  startCapture(path: string): PcapCapture {
    this.capture?.stop();
    this.capture = new PcapCapture(path);
    return this.capture;
  }

  stopCapture(): PcapCapture | null {
    const c = this.capture;
    c?.stop();
    this.capture = null;
    return c;
  }

  /** Where the guest's frames are recorded right now: this tenant's capture, the relay's `--pcap`, both, or null. */
  readonly recorder = (): FrameRecorder | null => {
    const own = this.capture, relay = this.#deps.relayCapture ?? null;
    return own && relay ? this.#bothCaptures : own ?? relay;
  };
  readonly #bothCaptures: FrameRecorder = {
    record: (f) => {
      this.capture?.record(f);
      this.#deps.relayCapture?.record(f);
    },
  };

  /** Everything an operator wants to see. */
  stats(): Record<string, unknown> {
    const s = this.stack;
    return {
      id: this.id,
      connected: this.link !== null,
      wispSessions: this.wispSessions.size,
      transport: this.link?.kind ?? null,
      remote: this.link?.remote ?? null,
      socket: this.socketPath,
      datagramSocket: this.datagramSocketPath,
      streamTcp: this.streamTcpUrl,
      forwards: this.forwards.map((f) => f.config),
      quotas: this.quotas,
      tcpFlows: s?.flowCounts.tcp ?? 0,
      udpFlows: s?.flowCounts.udp ?? 0,
      dhcpLeases: s?.flowCounts.dhcpLeases ?? 0,
      dhcp6Leases: s?.flowCounts.dhcp6Leases ?? 0,
      // what its flows hold against its bufferedBytes quota (data for the host or the guest, out-of-order)
      bufferedBytesUsed: s?.memory.used ?? 0,
      laneQueuedFrames: this.lane?.pending ?? 0,
      laneHoldsBatch: this.lane?.holding ?? false,
      guestBacklogBytes: this.link?.backlog ?? 0,
      capture: this.capture ? { path: this.capture.path, frames: this.capture.frames } : null,
      counters: this.counters.snapshot(),
    };
  }

  /** Releases everything: link, stack, forwards, socket, capture. */
  /** A frame guest or a Wisp client is connected. */
  get hasGuest(): boolean {
    return this.link !== null || this.wispSessions.size > 0;
  }

  #retired: Counters | null;

  delete(): void {
    if (this.#deleted) return;
    this.#deleted = true;
    this.#retired?.absorb(this.counters);
    for (const w of [...this.wispSessions]) w.close();
    this.session.close();
    for (const f of this.forwards) f.close();
    this.forwards = [];
    for (const close of this.closers) close();
    this.capture?.stop();
  }
}
