/**
 * Header prediction at the stack's door. The frames of an upload are segments of one flow, one after
 * another, whose Ethernet and IPv4 headers repeat the last one's but for length, id and checksum (the
 * observation behind Van Jacobson's TCP header prediction and Linux's GRO flow match). The next frame is
 * compared with the last one the full path delivered to a connection — the same twelve MAC bytes, a plain
 * IPv4 header (20 bytes, no fragment, TCP) with a good checksum, the same addresses and ports — and when it
 * repeats them it goes to that connection without the Ethernet and IPv4 parse, the dispatch and the table
 * lookup. Only those layers are skipped: the TCP header is still parsed and checked in full, and the
 * connection runs every rule of RFC 9293 on it. A frame that differs in anything takes the full path,
 * which then remembers it instead.
 *
 * @module
 */
import { i32, mac48, u16 } from "../../wire/bytes.ts";
import { checksumSum } from "../../wire/checksum.ts";
import { ETH_HEADER_LEN, ETH_SRC, ETH_TYPE, ETHERTYPE_IPV4 } from "../../wire/ethernet.ts";
import {
  IPPROTO_TCP,
  IPV4_DST,
  IPV4_FLAGS_FRAG,
  IPV4_HEADER_LEN,
  IPV4_PROTOCOL,
  IPV4_SRC,
  IPV4_TOTAL_LEN,
  IPV4_VER_IHL,
  type Ipv4Header,
} from "../../wire/ipv4.ts";
import { TCP_HEADER_LEN } from "../../wire/tcp.ts";

/** The flow of the last segment the full path delivered, and the header words its frames repeat. */
export class SegmentPrediction<C> {
  #conn: C | null = null;
  /** Destination and source MAC, as three big-endian words. */
  #mac0 = 0;
  #mac1 = 0;
  #mac2 = 0;
  /** Guest and local address, ports (guest << 16 | local), all as signed words. */
  #src = 0;
  #dst = 0;
  #ports = 0;
  /** The source MAC as a number, for learning the guest's address as the full path does. */
  #guestMac = 0;

  /**
   * After the full path delivered the IPv4 segment `ip` in `buf` to `conn`: frames that repeat its headers
   * go to `conn` from now on. A frame with IP options, or one rebuilt from fragments (its Ethernet header
   * is gone), is not remembered.
   */
  remember(conn: C, buf: Uint8Array, ip: Ipv4Header): void {
    const frame = ip.payloadOffset - IPV4_HEADER_LEN - ETH_HEADER_LEN;
    if (ip.headerLength !== IPV4_HEADER_LEN || frame < 0 || u16(buf, frame + ETH_TYPE) !== ETHERTYPE_IPV4) {
      this.#conn = null;
      return;
    }
    this.#conn = conn;
    this.#mac0 = i32(buf, frame);
    this.#mac1 = i32(buf, frame + 4);
    this.#mac2 = i32(buf, frame + 8);
    this.#src = ip.src | 0;
    this.#dst = ip.dst | 0;
    this.#ports = i32(buf, ip.payloadOffset);
    this.#guestMac = mac48(buf, frame + ETH_SRC);
  }

  /** `conn` is gone (its owner must say so as it frees it): nothing is predicted for it any more. */
  forget(conn: C): void {
    if (this.#conn === conn) this.#conn = null;
  }

  /**
   * The connection the frame `buf[off, end)` belongs to when it repeats the remembered headers, else null.
   * A match is a frame the full path would have handed to the same connection: the same MACs (so the same
   * Ethernet checks pass), an IPv4 header of 20 bytes with the version, lengths and checksum RFC 1122
   * §3.2.1.1–3.2.1.2 asks for, no fragment, protocol TCP, the same addresses and ports.
   */
  match(buf: Uint8Array, off: number, end: number): C | null {
    const c = this.#conn;
    if (c === null || end - off < ETH_HEADER_LEN + IPV4_HEADER_LEN + TCP_HEADER_LEN) return null;
    const ip = off + ETH_HEADER_LEN;
    if (
      i32(buf, off) !== this.#mac0 || i32(buf, off + 4) !== this.#mac1 || i32(buf, off + 8) !== this.#mac2 ||
      // EtherType IPv4, then version 4 with a 20-byte header
      u16(buf, off + ETH_TYPE) !== ETHERTYPE_IPV4 || buf[ip + IPV4_VER_IHL] !== 0x45 ||
      buf[ip + IPV4_PROTOCOL] !== IPPROTO_TCP ||
      i32(buf, ip + IPV4_SRC) !== this.#src || i32(buf, ip + IPV4_DST) !== this.#dst ||
      i32(buf, ip + IPV4_HEADER_LEN) !== this.#ports ||
      // neither more fragments nor an offset
      (u16(buf, ip + IPV4_FLAGS_FRAG) & 0x3fff) !== 0
    ) return null;
    const total = u16(buf, ip + IPV4_TOTAL_LEN);
    if (total < IPV4_HEADER_LEN + TCP_HEADER_LEN || total > end - ip) return null;
    if (checksumSum(buf, ip, IPV4_HEADER_LEN) !== 0xffff) return null;
    return c;
  }

  /** The remembered guest address (unsigned), for the segment's pseudo-header. */
  get guest(): number {
    return this.#src >>> 0;
  }

  /** The remembered local address (unsigned). */
  get local(): number {
    return this.#dst >>> 0;
  }

  /** The remembered source MAC. */
  get guestMac(): number {
    return this.#guestMac;
  }
}
