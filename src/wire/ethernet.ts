/**
 * Ethernet II frames (IEEE 802.3 with EtherType), tolerating 802.1Q / 802.1ad VLAN tags.
 *
 * ```
 *  0                   6                   12      14 (or 18 with one 802.1Q tag)
 * +-------------------+-------------------+-------+------------------
 * | destination MAC   | source MAC        | type  | payload (46..MTU; guests may pad to 60 bytes total)
 * +-------------------+-------------------+-------+------------------
 * ```
 * The frame length is never trusted for payload length: guests (v86 especially) zero-pad short frames,
 * so upper layers take lengths from their own headers.
 *
 * @module
 */
import { mac48, put16, putMac48, u16, WireError } from "./bytes.ts";

export const ETH_DST = 0;
export const ETH_SRC = 6;
export const ETH_TYPE = 12;
/** Length of an untagged Ethernet II header. */
export const ETH_HEADER_LEN = 14;
/** Minimum frame length without FCS (IEEE 802.3 §3.2.8): shorter frames are padded by the sender. */
export const ETH_MIN_FRAME = 60;

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_QINQ = 0x88a8;

/** A parsed Ethernet header. `payloadOffset` is absolute in the buffer. */
export interface EthernetHeader {
  dst: number;
  src: number;
  /** EtherType after any VLAN tags. Values below 0x0600 are 802.3 lengths (LLC), reported as is. */
  etherType: number;
  /** VLAN id of the outermost 802.1Q/802.1ad tag, or -1 when untagged. */
  vlanId: number;
  /** Number of VLAN tags skipped. */
  vlanTags: number;
  payloadOffset: number;
}

/** A fresh header object, for callers that reuse one across frames. */
export function newEthernetHeader(): EthernetHeader {
  return { dst: 0, src: 0, etherType: 0, vlanId: -1, vlanTags: 0, payloadOffset: 0 };
}

/**
 * Parses the Ethernet header of `buf[off, end)`.
 *
 * @param out reused to avoid an allocation per frame
 * @returns the header, or a {@linkcode WireError} when the frame is too short
 */
export function parseEthernet(
  buf: Uint8Array,
  off: number,
  end: number,
  out: EthernetHeader = newEthernetHeader(),
): EthernetHeader | WireError {
  if (end - off < ETH_HEADER_LEN) {
    return new WireError("ethernet", `Frame of ${end - off} bytes is shorter than 14`);
  }
  out.dst = mac48(buf, off + ETH_DST);
  out.src = mac48(buf, off + ETH_SRC);
  let type = u16(buf, off + ETH_TYPE);
  let p = off + ETH_HEADER_LEN;
  out.vlanId = -1;
  out.vlanTags = 0;
  // 802.1Q/802.1ad: a 4-byte tag (TCI + inner type) per level; bound the depth against hostile stacking
  while (type === ETHERTYPE_VLAN || type === ETHERTYPE_QINQ) {
    if (out.vlanTags === 2) return new WireError("ethernet", "More than two VLAN tags");
    if (end - p < 4) return new WireError("ethernet", "Truncated VLAN tag");
    if (out.vlanId < 0) out.vlanId = u16(buf, p) & 0x0fff;
    type = u16(buf, p + 2);
    p += 4;
    out.vlanTags++;
  }
  out.etherType = type;
  out.payloadOffset = p;
  return out;
}

/** Writes an untagged Ethernet II header at `off`; returns 14. */
export function emitEthernet(
  buf: Uint8Array,
  off: number,
  dst: number,
  src: number,
  etherType: number,
): number {
  putMac48(buf, off + ETH_DST, dst);
  putMac48(buf, off + ETH_SRC, src);
  put16(buf, off + ETH_TYPE, etherType);
  return ETH_HEADER_LEN;
}
