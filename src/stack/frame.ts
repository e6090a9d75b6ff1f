/**
 * Layout of frames the stack builds in its scratch buffer: untagged Ethernet II, IPv4 without options.
 * @module
 */
import { ETH_HEADER_LEN } from "../wire/ethernet.ts";
import { IPV4_HEADER_LEN } from "../wire/ipv4.ts";

/** Offset of the transport header in a frame built by the stack. */
export const L4_OFFSET = ETH_HEADER_LEN + IPV4_HEADER_LEN;
