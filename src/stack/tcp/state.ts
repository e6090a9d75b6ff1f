/**
 * TCP connection states, the timing and sizing constants of a connection, shared by the files of one connection
 * and its service.
 *
 * @module
 */
import type { GuestPath } from "../guest_path.ts";

/** Connection states (RFC 9293 §3.3.2), plus CONNECTING: guest SYN held while the host socket dials. */
export const TcpState = {
  CONNECTING: 0,
  SYN_SENT: 1,
  SYN_RECEIVED: 2,
  ESTABLISHED: 3,
  FIN_WAIT_1: 4,
  FIN_WAIT_2: 5,
  CLOSE_WAIT: 6,
  CLOSING: 7,
  LAST_ACK: 8,
  TIME_WAIT: 9,
  CLOSED: 10,
} as const;
export type TcpStateValue = typeof TcpState[keyof typeof TcpState];

export const STATE_NAMES = Object.fromEntries(Object.entries(TcpState).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;

/** RFC 9293 §3.8.6.3 requires an ACK delay below 0.5 s; short, since a relay's RTTs are tiny. */
export const DELAYED_ACK_MS = 10;
/** The most in-order guest data one acknowledgment covers: GRO's largest receive unit (Linux, 64 KiB). */
export const GRO_MAX_BYTES = 64 * 1024;
/** TIME-WAIT on the guest side: long enough to re-ACK a retransmitted FIN, short enough to free ports. */
export const TIME_WAIT_MS = 1000;
/** How long the host may take to accept a dial before the guest gets a reset. */
export const CONNECT_TIMEOUT_MS = 20_000;
/** SYN / SYN-ACK retransmissions before giving up. */
export const MAX_SYN_RETRIES = 5;
/** Data retransmissions (consecutive timeouts) before the connection is aborted. */
export const MAX_RETRIES = 12;
/** FIN-WAIT-2 with nothing happening: give up (Linux tcp_fin_timeout). */
export const FIN_WAIT_2_TIMEOUT_MS = 60_000;
/** The window scale we offer (RFC 7323 §2.3): 2^7 covers an 8 MiB window. */
export const OUR_WSCALE = 7;
/** RFC 9293 §3.7.1: default send MSS when the peer sends none. */
export const DEFAULT_MSS = 536;
/**
 * Least payload per segment toward the guest, whatever MSS it announced: Linux's tcp_min_snd_mss (48,
 * after options). A guest announcing MSS 12 with timestamps would otherwise leave 0 bytes per segment —
 * one host byte became millions of empty segments — and below 12 the sequence space is corrupted.
 */
export const MIN_SND_MSS = 48;
/** Most guest-bound data held per connection before host reads pause (but see SEND_BUFFER_SEGMENTS). */
export const DEFAULT_SEND_BUFFER = 1024 * 1024;
/**
 * Full segments a connection may hold at least. Everything it holds is in flight once the guest link's kernel
 * buffer has room for 16 of the largest frames (transport/stream.ts): at MTU 65520 1 MiB was 16 segments,
 * all of them between the relay and the guest's ACK, and host→guest waited on every ACK (8.0–8.5 Gbit/s;
 * 9.1–12.4 with 32). Below ~32 KiB segments the default is more than this.
 */
export const SEND_BUFFER_SEGMENTS = 32;
/** Payload room that keeps a short frame's padding to 60 bytes inside the frame area. */
export const ETH_PAD_ROOM = 8;
/** Most room offered to a host read. */
export const HOST_READ_BYTES = 64 * 1024;
/** Room offered to a connection's first host read; it doubles after each read that fills it. */
export const FIRST_HOST_READ = 16 * 1024;
/** Least room offered to a host read near the end of the tenant's budget. */
export const MIN_HOST_READ = 2048;
/** Ring (and frame area) every connection may have whatever the budget says. */
export const GUARANTEED_RING = 8192;
/** Least of it: what a small-window guest needs queued behind its window. */
export const MIN_SEND_BUFFER = 64 * 1024;
/**
 * Bytes toward the host the guest may have outstanding (our receive window; what the host socket has not
 * taken yet comes off it, and the tenant's budget bounds it). The guest's frames wait in its own queues and
 * the guest link's socket buffers before we see them, and a window must cover those too: at 1 MiB a Linux
 * guest's upload at MTU 1500 was window-limited 18 % of the time (`ss -ti`: rwnd_limited, 0.9 MB unacked,
 * RTT 4.6 ms); at 4 MiB never. Linux's own receive buffer grows to 6 MiB (tcp_rmem), passt offers ~10 MB.
 */
export const DEFAULT_RECEIVE_BUFFER = 4 * 1024 * 1024;

/** Addresses and ports of both sides. The path's local address is the one the guest talks to (virtual). */
export interface TcpEndpoints {
  path: GuestPath;
  guestPort: number;
  localPort: number;
}
