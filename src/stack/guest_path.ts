/**
 * The address-family seam: a flow's network layer toward the guest, IPv4 or IPv6, behind one interface.
 * TCP connections, DNS answers and UDP flows hold a {@linkcode GuestPath} and build their transport header at
 * its `l4Offset`; the path adds the IP and Ethernet headers. Nothing above this file asks which family a flow
 * is in, except where the wire differs (ICMP errors, host addresses as text).
 *
 * @module
 */
import { ipv4ToString } from "../wire/bytes.ts";
import { pseudoHeaderSumV4, pseudoHeaderSumV6 } from "../wire/checksum.ts";
import { ETH_HEADER_LEN } from "../wire/ethernet.ts";
import { IPV4_HEADER_LEN } from "../wire/ipv4.ts";
import { IPV6_HEADER_LEN, ipv6Equal, ipv6ToString } from "../wire/ipv6.ts";

/**
 * The two ways to wrap transport bytes at `buf[base + l4Offset]` in IP and Ethernet toward the guest: what a
 * path needs of its stack (`StackContext` extends it). `dstMac` -1 looks the guest's MAC up.
 */
export interface PathSender {
  sendIpv4In(
    buf: Uint8Array,
    base: number,
    src: number,
    dst: number,
    protocol: number,
    l4Length: number,
    dstMac?: number,
    ttl?: number,
  ): boolean;
  sendIpv6In(
    buf: Uint8Array,
    base: number,
    src: Uint8Array,
    srcOff: number,
    dst: Uint8Array,
    dstOff: number,
    protocol: number,
    l4Length: number,
    dstMac?: number,
    hopLimit?: number,
  ): boolean;
}

/** One flow's network layer, either family; `family` tells them apart where the wire differs. */
export type GuestPath = Ipv4Path | Ipv6Path;

/** One flow's network layer: the guest's address and the address it talks to ("local"), one family. */
interface PathContract {
  readonly family: 4 | 6;
  /** Where the transport header starts in a frame built for this path (Ethernet + IP header). */
  readonly l4Offset: number;
  /** The IP header's length: MSS = MTU − this − 20. */
  readonly ipHeaderLength: number;
  /** Partial checksum of the pseudo-header for `l4Length` bytes of `protocol` (RFC 9293 §3.1, RFC 8200 §8.1). */
  pseudoSum(protocol: number, l4Length: number): number;
  /** Wraps the `l4Length` bytes at `buf[base + l4Offset]` in IP and Ethernet toward the guest and sends them. */
  send(buf: Uint8Array, base: number, protocol: number, l4Length: number): boolean;
  /** Whether an IPv4 packet from `guest` to `local` is on this path. */
  matchesV4(guest: number, local: number): boolean;
  /** Whether an IPv6 packet with these address offsets in `buf` is on this path. */
  matchesV6(buf: Uint8Array, guestOff: number, localOff: number): boolean;
  /** Whether `other` joins the same two addresses. */
  sameAs(other: GuestPath): boolean;
  /** The guest's address as text (for logs and the flows API). */
  guestText(): string;
  /** The address the guest talks to, as text. */
  localText(): string;
}

const V4_L4_OFFSET = ETH_HEADER_LEN + IPV4_HEADER_LEN;
const V6_L4_OFFSET = ETH_HEADER_LEN + IPV6_HEADER_LEN;

/** An IPv4 path; addresses as u32. */
export class Ipv4Path implements PathContract {
  readonly family = 4 as const;
  readonly l4Offset = V4_L4_OFFSET;
  readonly ipHeaderLength = IPV4_HEADER_LEN;

  constructor(readonly stack: PathSender, readonly guest: number, readonly local: number) {}

  pseudoSum(protocol: number, l4Length: number): number {
    return pseudoHeaderSumV4(this.local, this.guest, protocol, l4Length);
  }

  send(buf: Uint8Array, base: number, protocol: number, l4Length: number): boolean {
    return this.stack.sendIpv4In(buf, base, this.local, this.guest, protocol, l4Length);
  }

  matchesV4(guest: number, local: number): boolean {
    return guest === this.guest && local === this.local;
  }

  matchesV6(): boolean {
    return false;
  }

  sameAs(other: GuestPath): boolean {
    return other.matchesV4(this.guest, this.local);
  }

  guestText(): string {
    return ipv4ToString(this.guest);
  }

  localText(): string {
    return ipv4ToString(this.local);
  }
}

/** An IPv6 path; both addresses in one 32-byte array (guest, then local). */
export class Ipv6Path implements PathContract {
  readonly family = 6 as const;
  readonly l4Offset = V6_L4_OFFSET;
  readonly ipHeaderLength = IPV6_HEADER_LEN;
  /** guest address at 0, local address at 16. */
  readonly addresses = new Uint8Array(32);
  #pseudo = 0;

  /** Copies the addresses from `guest[guestOff]` and `local[localOff]`. */
  constructor(
    readonly stack: PathSender,
    guest: Uint8Array,
    guestOff: number,
    local: Uint8Array,
    localOff: number,
  ) {
    this.addresses.set(guest.subarray(guestOff, guestOff + 16), 0);
    this.addresses.set(local.subarray(localOff, localOff + 16), 16);
    // the address words of the pseudo-header are the same for every packet of the flow
    this.#pseudo = pseudoHeaderSumV6(this.addresses, 16, this.addresses, 0, 0, 0);
  }

  pseudoSum(protocol: number, l4Length: number): number {
    return this.#pseudo + protocol + (l4Length >>> 16) + (l4Length & 0xffff);
  }

  send(buf: Uint8Array, base: number, protocol: number, l4Length: number): boolean {
    const a = this.addresses;
    return this.stack.sendIpv6In(buf, base, a, 16, a, 0, protocol, l4Length);
  }

  matchesV4(): boolean {
    return false;
  }

  matchesV6(buf: Uint8Array, guestOff: number, localOff: number): boolean {
    return ipv6Equal(buf, guestOff, this.addresses, 0) && ipv6Equal(buf, localOff, this.addresses, 16);
  }

  sameAs(other: GuestPath): boolean {
    return other.matchesV6(this.addresses, 0, 16);
  }

  guestText(): string {
    return ipv6ToString(this.addresses, 0);
  }

  localText(): string {
    return ipv6ToString(this.addresses, 16);
  }
}
