/**
 * Wisp (MercuryWorkshop's protocol: TCP and UDP streams multiplexed over one WebSocket, spoken by browser
 * VMs such as v86 and by browser proxies). One packet per binary message: `u8 type | u32 stream id (LE) |
 * payload`. Wisp v2 adds an INFO exchange on stream 0 carrying extensions, each `u8 id | u32 length (LE) |
 * payload`. Parse views, emit fresh packets (a packet is handed to the WebSocket whole).
 *
 * @module
 */
import { WireError } from "./bytes.ts";

export const WISP_CONNECT = 0x01;
export const WISP_DATA = 0x02;
export const WISP_CONTINUE = 0x03;
export const WISP_CLOSE = 0x04;
export const WISP_INFO = 0x05;

export const WISP_STREAM_TCP = 0x01;
export const WISP_STREAM_UDP = 0x02;

export const WISP_HEADER_LEN = 5;

/** CLOSE reasons (the spec's table). */
export const WispClose = {
  unknown: 0x01,
  voluntary: 0x02,
  networkError: 0x03,
  incompatibleExtensions: 0x04,
  invalid: 0x41,
  unreachable: 0x42,
  timeout: 0x43,
  refused: 0x44,
  transferTimeout: 0x47,
  blocked: 0x48,
  throttled: 0x49,
  clientError: 0x81,
  authBadPassword: 0xc0,
  authBadSignature: 0xc1,
  authMissingCredentials: 0xc2,
} as const;

export const WISP_EXT_UDP = 0x01;
export const WISP_EXT_PASSWORD = 0x02;
export const WISP_EXT_MOTD = 0x04;

export interface WispPacket {
  type: number;
  streamId: number;
  /** The payload is `buf[payloadOffset, payloadEnd)`. */
  payloadOffset: number;
  payloadEnd: number;
}

export function parseWisp(buf: Uint8Array, off: number, end: number): WispPacket | WireError {
  if (end - off < WISP_HEADER_LEN) {
    return new WireError("wisp", `Packet of ${end - off} bytes is shorter than 5`);
  }
  return {
    type: buf[off],
    streamId: (buf[off + 1] | (buf[off + 2] << 8) | (buf[off + 3] << 16) | (buf[off + 4] << 24)) >>> 0,
    payloadOffset: off + WISP_HEADER_LEN,
    payloadEnd: end,
  };
}

export interface WispConnect {
  streamType: number;
  port: number;
  hostname: string;
}

export function parseWispConnect(p: WispPacket, buf: Uint8Array): WispConnect | WireError {
  const o = p.payloadOffset;
  if (p.payloadEnd - o < 3) return new WireError("wisp", "CONNECT payload shorter than 3 bytes");
  if (p.payloadEnd - o - 3 > 253 + 2) return new WireError("wisp", "CONNECT hostname longer than a DNS name");
  return {
    streamType: buf[o],
    port: buf[o + 1] | (buf[o + 2] << 8),
    hostname: new TextDecoder().decode(buf.subarray(o + 3, p.payloadEnd)).trim(),
  };
}

/** A packet of `type` for `streamId` whose payload (`payloadLength` bytes) the caller writes at offset 5. */
export function wispPacket(type: number, streamId: number, payloadLength: number): Uint8Array {
  const b = new Uint8Array(WISP_HEADER_LEN + payloadLength);
  b[0] = type;
  b[1] = streamId;
  b[2] = streamId >>> 8;
  b[3] = streamId >>> 16;
  b[4] = streamId >>> 24;
  return b;
}

export function wispContinue(streamId: number, bufferRemaining: number): Uint8Array {
  const b = wispPacket(WISP_CONTINUE, streamId, 4);
  new DataView(b.buffer).setUint32(5, bufferRemaining, true);
  return b;
}

export function wispClose(streamId: number, reason: number): Uint8Array {
  const b = wispPacket(WISP_CLOSE, streamId, 1);
  b[5] = reason;
  return b;
}

export interface WispExtension {
  id: number;
  payload: Uint8Array;
}

/** INFO on stream 0: version `major.minor` and the extensions offered. */
export function wispInfo(major: number, minor: number, extensions: WispExtension[]): Uint8Array {
  const len = 2 + extensions.reduce((n, e) => n + 5 + e.payload.length, 0);
  const b = wispPacket(WISP_INFO, 0, len);
  b[5] = major;
  b[6] = minor;
  let o = 7;
  const v = new DataView(b.buffer);
  for (const e of extensions) {
    b[o] = e.id;
    v.setUint32(o + 1, e.payload.length, true);
    b.set(e.payload, o + 5);
    o += 5 + e.payload.length;
  }
  return b;
}

/** The version and extensions of an INFO packet. */
export function parseWispInfo(
  p: WispPacket,
  buf: Uint8Array,
): { major: number; minor: number; extensions: WispExtension[] } | WireError {
  let o = p.payloadOffset;
  if (p.payloadEnd - o < 2) return new WireError("wisp", "INFO payload shorter than 2 bytes");
  const major = buf[o], minor = buf[o + 1];
  o += 2;
  const extensions: WispExtension[] = [];
  while (o < p.payloadEnd) {
    if (p.payloadEnd - o < 5) return new WireError("wisp", "INFO extension header cut short");
    const len = (buf[o + 1] | (buf[o + 2] << 8) | (buf[o + 3] << 16) | (buf[o + 4] << 24)) >>> 0;
    if (len > p.payloadEnd - o - 5) {
      return new WireError("wisp", `INFO extension of ${len} bytes runs past the packet`);
    }
    extensions.push({ id: buf[o], payload: buf.subarray(o + 5, o + 5 + len) });
    o += 5 + len;
  }
  return { major, minor, extensions };
}

/**
 * The password extension's client payload: `u8 username length | u16 LE password length | username |
 * password` per the spec; some clients write the password length in one byte — both are taken, told apart
 * by which adds up to the payload's length.
 */
export function parseWispPassword(payload: Uint8Array): { username: string; password: string } | WireError {
  const dec = new TextDecoder();
  const n = payload.length;
  if (n >= 3) {
    const ul = payload[0], pl = payload[1] | (payload[2] << 8);
    if (3 + ul + pl === n) {
      return {
        username: dec.decode(payload.subarray(3, 3 + ul)),
        password: dec.decode(payload.subarray(3 + ul)),
      };
    }
  }
  if (n >= 2) {
    const ul = payload[0], pl = payload[1];
    if (2 + ul + pl === n) {
      return {
        username: dec.decode(payload.subarray(2, 2 + ul)),
        password: dec.decode(payload.subarray(2 + ul)),
      };
    }
  }
  return new WireError("wisp", "Password extension lengths do not add up to its payload");
}
