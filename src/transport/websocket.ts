/**
 * The WebSocket carrier: one Ethernet frame per binary message each way (v86's raw mode), or QEMU's stream
 * framing carried as a byte stream (container2wasm, emscripten QEMU) — see websocket_framing.ts. Text
 * messages are ignored. Accepting the upgrade is the relay's (HTTP, origins, tokens); carrying frames is
 * this file's.
 *
 * @module
 */
import type { FrameFeed, GuestLink, LinkPeer } from "./link.ts";
import { linkKindOf, messageFraming, type WebSocketFramingKind } from "./websocket_framing.ts";

/** How often a link with a backlog checks whether it drained (WebSocket has no drain event). */
const DRAIN_POLL_MS = 2;

export interface WebSocketLinkOptions {
  remote: string;
  /** Largest frame accepted from the guest; a larger message closes the link (1009). */
  maxFrame: number;
  /** Bytes allowed to wait each way: toward the guest (then frames are refused) and toward the stack. */
  backlogLimit: number;
  framing: WebSocketFramingKind;
}

/**
 * Carries frames over an accepted WebSocket `ws` (binaryType "arraybuffer") and reports to `peer`. Returns
 * the link at once; `peer.opened` runs when the socket opens.
 */
export function carryWebSocket(ws: WebSocket, opts: WebSocketLinkOptions, peer: LinkPeer): GuestLink {
  const limit = opts.backlogLimit;
  let drainTimer: ReturnType<typeof setTimeout> | undefined;
  const watchDrain = () => {
    if (drainTimer !== undefined) return;
    drainTimer = setTimeout(() => {
      drainTimer = undefined;
      if (ws.bufferedAmount > 0) watchDrain();
      peer.drained(link);
    }, DRAIN_POLL_MS);
  };
  const framing = messageFraming(opts.framing, opts.maxFrame);
  const link: GuestLink = {
    kind: linkKindOf(opts.framing),
    remote: opts.remote,
    send: (f) => {
      if (ws.readyState !== WebSocket.OPEN) return false;
      if (ws.bufferedAmount + f.length > limit) return false;
      ws.send(framing.toGuest(f));
      if (ws.bufferedAmount > 0) watchDrain();
      return true;
    },
    get backlog() {
      return ws.bufferedAmount;
    },
    close: () => {
      try {
        ws.close(1000);
      } catch { /* closed */ }
    },
  };

  let feed: FrameFeed | null = null;
  // frames waiting for the stack: bounded; a guest that outruns it loses frames (counted)
  const queue: Uint8Array[] = [];
  let queuedBytes = 0;
  let pumping = false;
  const offs = [0], lens = [0];
  const pump = async () => {
    pumping = true;
    while (queue.length > 0 && feed) {
      const f = queue.shift()!;
      queuedBytes -= f.length;
      lens[0] = f.length;
      const held = feed(f, offs, lens, 1);
      if (held) await held;
    }
    pumping = false;
  };
  ws.onopen = () => {
    feed = peer.opened(link);
    if (!feed) ws.close(4409, "tenant already has a guest");
  };
  const take = (frame: Uint8Array) => {
    if (queuedBytes + frame.length > limit) return peer.dropped("ws-ingress-overflow");
    queue.push(frame);
    queuedBytes += frame.length;
  };
  ws.onmessage = (e) => {
    if (typeof e.data === "string") return;
    const broken = framing.fromGuest(new Uint8Array(e.data as ArrayBuffer), take);
    if (broken) {
      peer.protocolError(broken, {});
      ws.close(1009, "frame size out of range");
      return;
    }
    if (!pumping && queue.length > 0) pump();
  };
  ws.onclose = () => {
    feed = null;
    if (drainTimer !== undefined) clearTimeout(drainTimer);
    peer.closed(link);
  };
  ws.onerror = () => {};
  return link;
}
