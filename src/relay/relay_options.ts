/**
 * What a {@linkcode Relay} is built from: listeners, the base stack config every tenant starts from, mode,
 * limits and the few test hooks. The CLI fills it from flags; a data-plane worker gets it over postMessage.
 *
 * @module
 */
import type { Logger } from "../common/logger.ts";
import type { HostForwardConfig, StackConfig } from "../stack/config.ts";
import type { SharedRelayBuffers } from "./shared_state.ts";
import type { TenantSpec } from "./tenant_config.ts";

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
  tokenSecret?: Uint8Array | Uint8Array[];
  /** Directory for per-tenant stream sockets (multi-tenant mode). */
  tenantSocketDir?: string;
  /** UNIX datagram sockets (`unix:///path`) for guests that send one frame per datagram (QEMU dgram, vfkit, libkrun). */
  listenDgram?: string[];
  /** Tenants created at start. */
  tenants?: TenantSpec[];
  /** A second guest for a connected tenant: "replace" the first (default) or "refuse" it. */
  duplicateGuest?: "replace" | "refuse";
  /** How long a named tenant keeps its flows after its guest left. */
  graceMs?: number;
  /** Where pcap captures are written. */
  captureDir?: string;
  /** This relay's name in a fleet (the metrics' `relay` label); default: the host name. */
  instance?: string;
  /** Single-user mode: capture every guest's frames into this file from the start (`--pcap`). */
  pcap?: string;
  /** Wisp v2: the message of the day (`--wisp-motd`). */
  wispMotd?: string;
  /**
   * Wisp: `username:password` lines (`--wisp-credentials` file's text); set, every Wisp client must pass the
   * password extension. Text, not a function, so that it crosses to the data-plane workers.
   */
  wispCredentials?: string;
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
  /**
   * The thread's socket loop is the relay's own (a data-plane worker): it drives the timer wheel, so no
   * runtime interval ticks it.
   */
  ownedLoop?: boolean;
  /**
   * Shared with the relay's other data-plane workers: relay-wide tenant and flow counts, and the host
   * ports every worker's tenants hold (see shared_state.ts).
   */
  shared?: { buffers: SharedRelayBuffers; worker: number };
  /** Ports of this host's relay listeners that live elsewhere (the main thread's WebSocket and admin). */
  ownPorts?: number[];
  /** Tenants at once (named and single-user sessions); beyond it new ones are refused. Default 4096. */
  maxTenants?: number;
  /**
   * TCP and UDP flows at once across every tenant (each holds a descriptor). Default: the descriptor limit
   * less `DESCRIPTOR_RESERVE` (relay.ts) for guest connections, listeners and DNS.
   */
  maxFlows?: number;
}
