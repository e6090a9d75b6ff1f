/**
 * The guest-link contract: what a tenant needs of the carrier that brings its guest's frames (a stream
 * socket, a WebSocket, …), and what a carrier tells its owner. A new carrier is a new file in this folder
 * that returns a {@linkcode GuestLink} and calls a {@linkcode LinkPeer}; the relay does not change. What is
 * done to every carrier's frames alike (capture, shaping, fault injection) wraps a link: link_wrappers.ts.
 *
 * @module
 */

/** Which carrier a guest came by (shown in the tenant's state and the logs). */
export type GuestLinkKind = "stream" | "gvforwarder" | "websocket" | "websocket-stream" | "datagram" | "wisp";

/** Frames toward the guest, and the carrier's state. */
export interface GuestLink {
  readonly kind: GuestLinkKind;
  readonly remote: string;
  /**
   * The guest's NIC offloads (libkrun): its frames may be up to 64 KiB, their TCP/UDP checksums unfinished;
   * the tenant takes them as they are.
   */
  readonly offloads?: boolean;
  /** Queues a copy of `frame` toward the guest; false when dropped (backlog full or closed). */
  send(frame: Uint8Array): boolean;
  /** Bytes queued toward the guest (the carrier tells its peer when it drained). */
  readonly backlog: number;
  close(): void;
}

/**
 * A batch of guest frames `buf[offs[i], offs[i]+lens[i])`, i < n. Returns nothing when the frames were taken
 * before it returned (the usual case: no promise per read), else a promise that resolves when they were; the
 * carrier must not reuse `buf` before then.
 */
export type FrameFeed = (buf: Uint8Array, offs: number[], lens: number[], n: number) => Promise<void> | void;

/** What a carrier reports to its owner. */
export interface LinkPeer {
  /** The link is up: where its frames go, or null to refuse it (the carrier then closes). */
  opened(link: GuestLink): FrameFeed | null;
  /** The link went down (either side); `reason` when a socket error ended it. */
  closed(link: GuestLink, reason?: string): void;
  /** The guest broke the carrier's protocol; the carrier closes the link after this. */
  protocolError(reason: string, fields: Record<string, unknown>): void;
  /** A guest frame was dropped (counted under `reason`). */
  dropped(reason: string): void;
  /** The backlog toward the guest drained: senders paced on it may go on. */
  drained(link: GuestLink): void;
}
