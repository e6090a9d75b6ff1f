/**
 * How Ethernet frames ride WebSocket messages. Two conventions exist:
 *   - **one frame per message** (v86's `network_relay_url`, websockproxy): a binary message is a frame;
 *   - **byte stream** (container2wasm, every emscripten-built QEMU, whose socket layer turns `-netdev socket`
 *     into a WebSocket offering the `binary` subprotocol): QEMU's stream framing — a u32 big-endian length,
 *     then the frame — where message boundaries mean nothing from the guest (a message may hold part of a
 *     frame or several); toward the guest one length-prefixed frame per message.
 * Both carriers of a WebSocket guest (`websocket.ts` on the data plane's own thread, the front's bridge to a
 * worker's rings) cut and wrap frames here.
 *
 * @module
 */
import { FramingError, MIN_FRAME, splitFrames, U32_BE } from "./framing.ts";
import type { GuestLinkKind } from "./link.ts";

/** "wisp": not frames but Wisp packets, one per message, passed on whole (the tenant's Wisp session reads them). */
export type WebSocketFramingKind = "frame-per-message" | "byte-stream" | "wisp";

/** Largest Wisp packet taken from a client: a 64 KiB DATA payload and its header. */
export const MAX_WISP_MESSAGE = 65536 + 5;

/** One guest's messages into frames and frames into messages. */
export interface MessageFraming {
  /**
   * Hands each whole frame in the guest's message `msg` to `onFrame` (a view that stays valid: neither
   * `msg` nor a joined buffer is reused). Returns null, or why the guest broke the protocol.
   */
  fromGuest(msg: Uint8Array, onFrame: (frame: Uint8Array) => void): string | null;
  /** A message of its own (a fresh buffer the sender may keep) carrying `frame` to the guest. */
  toGuest(frame: Uint8Array): Uint8Array;
}

/** Emscripten's first datagram on a socket tells the peer its port: `FF FF FF FF 'p' 'o' 'r' 't' u16`. */
const PORT_HANDSHAKE = [0xff, 0xff, 0xff, 0xff, 0x70, 0x6f, 0x72, 0x74];

/** What a WebSocket guest's link is called, by how its messages carry frames. */
export function linkKindOf(framing: WebSocketFramingKind): GuestLinkKind {
  return framing === "byte-stream" ? "websocket-stream" : framing === "wisp" ? "wisp" : "websocket";
}

export function messageFraming(kind: WebSocketFramingKind, maxFrame: number): MessageFraming {
  if (kind === "byte-stream") return new ByteStreamFraming(maxFrame);
  if (kind === "wisp") return new WispMessages();
  return new FramePerMessage(maxFrame);
}

class WispMessages implements MessageFraming {
  fromGuest(msg: Uint8Array, onPacket: (packet: Uint8Array) => void): string | null {
    if (msg.length > MAX_WISP_MESSAGE || msg.length < 5) {
      return `Wisp packet of ${msg.length} bytes out of range`;
    }
    onPacket(msg);
    return null;
  }

  toGuest(packet: Uint8Array): Uint8Array {
    return packet.slice();
  }
}

class FramePerMessage implements MessageFraming {
  constructor(readonly maxFrame: number) {}

  fromGuest(msg: Uint8Array, onFrame: (frame: Uint8Array) => void): string | null {
    if (msg.length > this.maxFrame || msg.length < MIN_FRAME) return `frame size ${msg.length} out of range`;
    onFrame(msg);
    return null;
  }

  toGuest(frame: Uint8Array): Uint8Array {
    return frame.slice();
  }
}

class ByteStreamFraming implements MessageFraming {
  /** The start of a frame the guest's next messages complete (at most a prefix and one frame). */
  #partial: Uint8Array | null = null;
  #first = true;

  constructor(readonly maxFrame: number) {}

  fromGuest(msg: Uint8Array, onFrame: (frame: Uint8Array) => void): string | null {
    if (this.#first) {
      this.#first = false;
      if (msg.length === 10 && PORT_HANDSHAKE.every((b, i) => msg[i] === b)) return null;
    }
    let buf = msg;
    if (this.#partial) {
      buf = new Uint8Array(this.#partial.length + msg.length);
      buf.set(this.#partial);
      buf.set(msg, this.#partial.length);
    }
    let used: number;
    try {
      used = splitFrames(
        buf,
        buf.length,
        this.maxFrame,
        (b, off, len) => onFrame(b.subarray(off, off + len)),
      );
    } catch (e) {
      if (e instanceof FramingError) return e.message;
      throw e;
    }
    // bounded: splitFrames refused any length over maxFrame, so this is under a prefix and one frame
    this.#partial = used < buf.length ? buf.slice(used) : null;
    return null;
  }

  toGuest(frame: Uint8Array): Uint8Array {
    const m = new Uint8Array(4 + frame.length);
    U32_BE.write(m, 0, frame.length);
    m.set(frame, 4);
    return m;
  }
}
