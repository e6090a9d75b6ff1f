/**
 * slirp-relay: a user-mode network stack for virtual machines, served as a multi-tenant relay.
 *
 * The wire codecs are exported for tools and tests; each parses a view over a `Uint8Array` without
 * copying and emits into a caller's buffer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseEthernet, isWireError } from "./mod.ts";
 * const frame = new Uint8Array(60);
 * frame.set([0x08, 0x06], 12); // ARP
 * const eth = parseEthernet(frame, 0, frame.length);
 * assert.ok(!isWireError(eth) && eth.etherType === 0x0806);
 * ```
 * @module
 */
export * from "./src/wire/bytes.ts";
export * from "./src/wire/checksum.ts";
export * from "./src/wire/ethernet.ts";
export * from "./src/wire/arp.ts";
export * from "./src/wire/ipv4.ts";
export * from "./src/wire/icmpv4.ts";
export * from "./src/wire/udp.ts";
export * from "./src/wire/tcp.ts";
export * from "./src/wire/dhcp.ts";
export * from "./src/wire/dns.ts";
export { VERSION } from "./src/version.ts";
