/**
 * gvforwarder's opening: gvisor-tap-vsock's in-guest agent (rootless Firecracker, any VMM with vsock) dials
 * the host, writes an HTTP request `POST /connect` and, without waiting for an answer, carries frames each
 * prefixed by a 2-byte little-endian length (gvproxy hijacks the HTTP connection and answers nothing).
 * The stream carrier serves it on the same sockets as QEMU's framing: a QEMU guest's first four bytes are
 * a frame length, and "POST" read that way (0x504f5354) is far above any frame, so the two never collide.
 *
 * @module
 */
import { FramingError } from "./framing.ts";

const POST = [0x50, 0x4f, 0x53, 0x54, 0x20]; // "POST "
/** Longest request accepted before the frames (Go's request is about 100 bytes). */
const MAX_REQUEST = 4096;
/** The path gvforwarder posts to (gvisor-tap-vsock `types.ConnectPath`). */
const CONNECT_PATH = "/connect";

/**
 * If `buf[0, filled)` begins with gvforwarder's request: its length in bytes once complete (null while
 * incomplete). 0 when the stream is not gvforwarder's. Throws {@linkcode FramingError} for a request that is
 * too long or posts somewhere else.
 */
export function gvforwarderRequestLength(buf: Uint8Array, filled: number): number | null {
  for (let i = 0; i < POST.length; i++) {
    if (i >= filled) return null; // so far a prefix of "POST ": wait for more
    if (buf[i] !== POST[i]) return 0;
  }
  const end = indexOfBlankLine(buf, filled);
  if (end < 0) {
    if (filled >= MAX_REQUEST) throw new FramingError(`gvforwarder request longer than ${MAX_REQUEST} bytes`);
    return null;
  }
  const lineEnd = buf.indexOf(0x0d);
  const line = new TextDecoder().decode(buf.subarray(0, lineEnd));
  const path = line.split(" ")[1] ?? "";
  if (path !== CONNECT_PATH) {
    throw new FramingError(`gvforwarder request for ${JSON.stringify(path)}, not ${CONNECT_PATH}`);
  }
  return end;
}

/** The offset just past the first "\r\n\r\n" in `buf[0, filled)`, or -1. */
function indexOfBlankLine(buf: Uint8Array, filled: number): number {
  for (let i = 3; i < filled && i < MAX_REQUEST; i++) {
    if (buf[i] === 0x0a && buf[i - 1] === 0x0d && buf[i - 2] === 0x0a && buf[i - 3] === 0x0d) return i + 1;
  }
  return -1;
}
