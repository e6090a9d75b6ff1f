/**
 * What a carrier reports to, for a guest admitted to a tenant: the {@linkcode LinkPeer} of a frame carrier
 * (stream, datagram, WebSocket frames or byte stream, a ring from the front) and of a Wisp client. Every
 * carrier's guest is attached the same way — its link wired through the scheduler to the tenant's stack — so
 * the peers differ only in what they log.
 *
 * @module
 */
import type { Logger } from "../common/logger.ts";
import type { FrameFeed, GuestLink, LinkPeer } from "../transport/link.ts";
import { lossyLink, recordingFeed, recordingLink, shapedLink } from "../transport/link_wrappers.ts";
import type { WebSocketFramingKind } from "../transport/websocket_framing.ts";
import { mac48 } from "../wire/bytes.ts";
import { ETH_HEADER_LEN, ETH_SRC } from "../wire/ethernet.ts";
import type { Tenant } from "./tenant.ts";
import { type WispGuestDeps, wispPeer } from "./wisp_guest.ts";

/** What the peers need of the relay. */
export interface PeerContext {
  readonly log: Logger;
  /** Wires `link` to `t` through the scheduler; null when refused (a second guest under "refuse"). */
  attach(t: Tenant, link: GuestLink): FrameFeed | null;
  /** The link went away: the tenant's grace period starts. */
  detach(t: Tenant, link: GuestLink): void;
  /** Forgets a single-user tenant no guest attached to. */
  dropEphemeral(t: Tenant): void;
  /**
   * A single-user guest's first frame came from `mac`: the session it left earlier, to attach `link`'s
   * carrier to instead of `fresh` (which is gone then), or null.
   */
  resume(fresh: Tenant, link: GuestLink, mac: number): Tenant | null;
  /** Counts a guest connection closed for breaking its protocol. */
  protocolError(): void;
  /** The relay is shutting down (closes are expected, not logged). */
  readonly stopping: boolean;
  /** Fault injection (tests only): a share of guest-bound frames dropped. */
  readonly faults?: { guestBoundLoss?: number; seed?: number };
  /** What a Wisp client's session needs besides these. */
  readonly wisp: Omit<WispGuestDeps, "log" | "protocolError">;
}

/**
 * The peer of a frame carrier's guest of `t`; `logCloses`: a close with a reason is logged. The tenant sees
 * the carrier's link through the wrappers of link_wrappers.ts: its egress quota, faults (tests), capture.
 * A single-user session learns its guest's MAC from the first frame, and a guest coming back with that MAC
 * moves to the session it left ({@linkcode PeerContext.resume}): `t` is the guest's session from then on.
 */
export function framePeer(ctx: PeerContext, t: Tenant, logCloses: boolean): LinkPeer {
  let attached: GuestLink | null = null;
  const wrap = (link: GuestLink) => {
    const shaped = t.egress ? shapedLink(link, t.egress, peer, t.linkBacklogLimit) : link;
    return recordingLink(withFaults(ctx, t, shaped), t.recorder);
  };
  const peer: LinkPeer = {
    opened: (link) => {
      attached = wrap(link);
      const feed = ctx.attach(t, attached);
      if (!feed) {
        ctx.dropEphemeral(t);
        return null;
      }
      const recorded = recordingFeed(feed, t.recorder);
      if (!t.ephemeral) return recorded;
      // one more call per batch: the first frame picks the session, every later batch goes straight to it
      let current: FrameFeed = (buf, offs, lens, n) => {
        if (n === 0 || lens[0] < ETH_HEADER_LEN) return recorded(buf, offs, lens, n);
        const mac = mac48(buf, offs[0] + ETH_SRC);
        const earlier = ctx.resume(t, attached!, mac);
        if (earlier) {
          t = earlier;
          attached = wrap(link);
          const to = ctx.attach(t, attached);
          if (!to) return link.close();
          current = recordingFeed(to, t.recorder);
        } else {
          t.guestMac = mac;
          current = recorded;
        }
        return current(buf, offs, lens, n);
      };
      return (buf, offs, lens, n) => current(buf, offs, lens, n);
    },
    closed: (link, reason) => {
      if (reason && logCloses && !ctx.stopping) {
        ctx.log("info", "guest connection closed", { tenant: t.id, reason });
      }
      ctx.detach(t, attached ?? link);
    },
    protocolError: (reason, fields) => {
      ctx.protocolError();
      ctx.log("warn", `guest connection closed: ${reason}`, { tenant: t.id, ...fields });
    },
    dropped: (reason) => t.counters.drop(reason),
    drained: (link) => {
      if (t.link === (attached ?? link)) t.session.guestDrained();
    },
  };
  return peer;
}

/** The peer of a WebSocket guest of `t`: frames to the tenant's stack, or Wisp packets to a session. */
export function webSocketPeer(
  ctx: PeerContext,
  t: Tenant,
  framing: WebSocketFramingKind,
  wispVersion: 1 | 2 = 1,
): LinkPeer {
  if (framing === "wisp") {
    return wispPeer(t, wispVersion, { ...ctx.wisp, log: ctx.log, protocolError: () => ctx.protocolError() });
  }
  return framePeer(ctx, t, false);
}

/** The link, or a wrapper that drops a share of its guest-bound frames (`faults`, tests only). */
function withFaults(ctx: PeerContext, t: Tenant, link: GuestLink): GuestLink {
  const loss = ctx.faults?.guestBoundLoss ?? 0;
  if (loss <= 0) return link;
  return lossyLink(link, loss, ctx.faults?.seed ?? 0x9e3779b9, () => t.counters.drop("fault-injected"));
}
