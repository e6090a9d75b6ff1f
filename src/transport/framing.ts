/**
 * Length-prefixed framing, shared by the carriers that cut a byte stream into Ethernet frames: QEMU's
 * 4-byte big-endian prefix (stream sockets, the WebSocket byte stream) and gvproxy's 2-byte little-endian
 * one (gvforwarder).
 *
 * @module
 */

/** Minimum acceptable frame: an Ethernet header. */
export const MIN_FRAME = 14;

/** A protocol error: the connection is closed, nothing else is harmed. */
export class FramingError extends Error {}

/** How a carrier writes a frame's length before it. */
export interface LengthPrefix {
  readonly size: 2 | 4;
  /** The largest length the prefix can say. */
  readonly max: number;
  read(buf: Uint8Array, pos: number): number;
  write(buf: Uint8Array, pos: number, len: number): void;
}

/** QEMU's `-netdev stream`/`socket` and passt: a 4-byte big-endian length. */
export const U32_BE: LengthPrefix = {
  size: 4,
  max: 0xffff_ffff,
  read: (b, p) => ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0,
  write(b, p, n) {
    b[p] = n >>> 24;
    b[p + 1] = n >>> 16;
    b[p + 2] = n >>> 8;
    b[p + 3] = n;
  },
};

/** gvproxy's `/connect` (the gvforwarder agent), "stdio" and vfkit-over-stream: a 2-byte little-endian length. */
export const U16_LE: LengthPrefix = {
  size: 2,
  max: 0xffff,
  read: (b, p) => b[p] | (b[p + 1] << 8),
  write(b, p, n) {
    b[p] = n;
    b[p + 1] = n >>> 8;
  },
};

/**
 * Splits length-prefixed frames out of `buf[from, filled)`, calling `onFrame(buf, off, len)` for each whole
 * frame; returns the offset after the last whole frame. Throws {@linkcode FramingError} on a zero, short or
 * oversize length.
 */
export function splitFrames(
  buf: Uint8Array,
  filled: number,
  maxFrame: number,
  onFrame: (buf: Uint8Array, off: number, len: number) => void,
  prefix: LengthPrefix = U32_BE,
  from = 0,
): number {
  const size = prefix.size;
  let pos = from;
  while (filled - pos >= size) {
    const len = prefix.read(buf, pos);
    if (len === 0 || len > maxFrame) throw new FramingError(`Frame length ${len} is outside 1..${maxFrame}`);
    if (len < MIN_FRAME) throw new FramingError(`Frame length ${len} is shorter than an Ethernet header`);
    if (filled - pos - size < len) break;
    onFrame(buf, pos + size, len);
    pos += size + len;
  }
  return pos;
}
