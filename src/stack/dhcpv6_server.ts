/**
 * A DHCPv6 server for the guest (RFC 8415), beside SLAAC: stateless INFORMATION-REQUEST answered with the
 * DNS server (prefix::3) and the search list (RFC 3646) — the router advertisement's O flag says to ask —
 * and, for guests that insist on a stateful address (an IA_NA in SOLICIT/REQUEST), one address of the prefix
 * per client DUID, from prefix::100 up.
 *
 * Replies come from the router's link-local address to the client's, port 547 → 546 (§7.2). Messages that
 * name another server are ignored (§16); the server's DUID is DUID-LL of the gateway MAC (§11.4).
 *
 * @module
 */
import { WireError } from "../wire/bytes.ts";
import { put16, put32, putMac48 } from "../wire/bytes.ts";
import { pseudoHeaderSumV6 } from "../wire/checksum.ts";
import {
  DHCPV6_ADVERTISE,
  DHCPV6_CLIENT_PORT,
  DHCPV6_CONFIRM,
  DHCPV6_DECLINE,
  DHCPV6_INFORMATION_REQUEST,
  DHCPV6_OPT_CLIENTID,
  DHCPV6_OPT_DNS_SERVERS,
  DHCPV6_OPT_DOMAIN_LIST,
  DHCPV6_OPT_IA_NA,
  DHCPV6_OPT_IAADDR,
  DHCPV6_OPT_RAPID_COMMIT,
  DHCPV6_OPT_SERVERID,
  DHCPV6_OPT_STATUS_CODE,
  DHCPV6_REBIND,
  DHCPV6_RELEASE,
  DHCPV6_RENEW,
  DHCPV6_REPLY,
  DHCPV6_REQUEST,
  DHCPV6_SERVER_PORT,
  DHCPV6_SOLICIT,
  DHCPV6_STATUS_SUCCESS,
  type Dhcpv6Message,
  emitDhcpv6Header,
  emitDhcpv6Option,
  emitDhcpv6OptionHeader,
  parseDhcpv6,
} from "../wire/dhcpv6.ts";
import { encodeNames } from "../wire/dns.ts";
import { ETH_HEADER_LEN } from "../wire/ethernet.ts";
import { IPPROTO_UDP } from "../wire/ipv4.ts";
import { IPV6_HEADER_LEN, type Ipv6Header } from "../wire/ipv6.ts";
import { emitUdp, UDP_HEADER_LEN, type UdpHeader } from "../wire/udp.ts";
import type { Ipv6Plan } from "./config.ts";
import type { StackContext } from "./context.ts";

/** Stateful bindings kept per tenant (a guest LAN has few clients); the oldest gives way. */
const MAX_BINDINGS = 64;
/** The first stateful address: prefix::100. */
const FIRST_HOST = 0x100;
/** Preferred and valid lifetimes of a stateful address; T1 and T2 at half and 0.8 of preferred (§21.4). */
const PREFERRED_SEC = 3600;
const VALID_SEC = 7200;

export class Dhcpv6Server {
  #stack: StackContext;
  #plan: Ipv6Plan;
  /** DUID-LL of the gateway MAC. */
  #serverId = new Uint8Array(10);
  /** client DUID (hex) → host number under the prefix, oldest first. */
  #bindings = new Map<string, number>();
  #nextHost = FIRST_HOST;
  #domains: Uint8Array | null;

  constructor(stack: StackContext, plan: Ipv6Plan) {
    this.#stack = stack;
    this.#plan = plan;
    put16(this.#serverId, 0, 3); // DUID-LL
    put16(this.#serverId, 2, 1); // Ethernet
    putMac48(this.#serverId, 4, stack.plan.gatewayMac);
    const names = stack.config.searchDomains.length > 0 ? encodeNames(stack.config.searchDomains) : null;
    this.#domains = names instanceof WireError ? null : names;
  }

  /** Stateful addresses handed out. */
  get size(): number {
    return this.#bindings.size;
  }

  /** A client message, UDP 546 → 547 from the guest. */
  input(buf: Uint8Array, ip: Ipv6Header, udp: UdpHeader): void {
    const s = this.#stack;
    const m = parseDhcpv6(buf, udp.payloadOffset, udp.payloadEnd);
    if (m instanceof WireError) return s.drop("dhcpv6-malformed", m);
    const serverId = m.options.get(DHCPV6_OPT_SERVERID);
    const forUs = serverId !== undefined &&
      serverId.length === this.#serverId.length &&
      this.#serverId.every((b, i) => buf[serverId.offset + i] === b);
    // §16: these name their server; a message for another one is not ours to answer
    const needsServerId = m.type === DHCPV6_REQUEST || m.type === DHCPV6_RENEW || m.type === DHCPV6_RELEASE ||
      m.type === DHCPV6_DECLINE;
    if ((needsServerId && !forUs) || (serverId !== undefined && !forUs)) return s.drop("dhcpv6-other-server");
    const clientId = m.options.get(DHCPV6_OPT_CLIENTID);
    if (!clientId && m.type !== DHCPV6_INFORMATION_REQUEST) return s.drop("dhcpv6-no-client-id");
    switch (m.type) {
      case DHCPV6_INFORMATION_REQUEST:
        return this.#reply(buf, ip, m, DHCPV6_REPLY, -1);
      case DHCPV6_SOLICIT: {
        const rapid = m.options.has(DHCPV6_OPT_RAPID_COMMIT);
        return this.#reply(buf, ip, m, rapid ? DHCPV6_REPLY : DHCPV6_ADVERTISE, this.#hostFor(buf, m));
      }
      case DHCPV6_REQUEST:
      case DHCPV6_RENEW:
      case DHCPV6_REBIND:
        return this.#reply(buf, ip, m, DHCPV6_REPLY, this.#hostFor(buf, m));
      case DHCPV6_CONFIRM:
        return this.#reply(buf, ip, m, DHCPV6_REPLY, -1);
      case DHCPV6_RELEASE:
      case DHCPV6_DECLINE:
        this.#bindings.delete(hex(buf, clientId!.offset, clientId!.length));
        return this.#reply(buf, ip, m, DHCPV6_REPLY, -1);
      default:
        return s.drop("dhcpv6-type-ignored");
    }
  }

  /** The host number of the client's stateful address (a new one when it has none), or -1 without IA_NA. */
  #hostFor(buf: Uint8Array, m: Dhcpv6Message): number {
    if (!m.options.has(DHCPV6_OPT_IA_NA)) return -1;
    const id = m.options.get(DHCPV6_OPT_CLIENTID)!;
    const key = hex(buf, id.offset, id.length);
    const known = this.#bindings.get(key);
    if (known !== undefined) return known;
    if (this.#bindings.size >= MAX_BINDINGS) this.#bindings.delete(this.#bindings.keys().next().value!);
    const host = this.#nextHost;
    this.#nextHost = this.#nextHost >= 0xfffe ? FIRST_HOST : this.#nextHost + 1;
    this.#bindings.set(key, host);
    this.#stack.counters.dhcpLeases++;
    return host;
  }

  /** Builds and sends the answer: server and client ids, the address when `host` ≥ 0, DNS and search list. */
  #reply(buf: Uint8Array, ip: Ipv6Header, m: Dhcpv6Message, type: number, host: number): void {
    const s = this.#stack;
    const tx = s.tx;
    const l4 = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    const start = l4 + UDP_HEADER_LEN;
    let o = start + emitDhcpv6Header(tx, start, type, m.transactionId);
    o += emitDhcpv6Option(tx, o, DHCPV6_OPT_SERVERID, this.#serverId);
    const clientId = m.options.get(DHCPV6_OPT_CLIENTID);
    if (clientId) {
      o += emitDhcpv6Option(
        tx,
        o,
        DHCPV6_OPT_CLIENTID,
        buf.subarray(clientId.offset, clientId.offset + clientId.length),
      );
    }
    if (type === DHCPV6_REPLY && m.options.has(DHCPV6_OPT_RAPID_COMMIT) && m.type === DHCPV6_SOLICIT) {
      o += emitDhcpv6OptionHeader(tx, o, DHCPV6_OPT_RAPID_COMMIT, 0);
    }
    if (host >= 0) o += this.#emitIaNa(tx, o, buf, m, host);
    if (m.type !== DHCPV6_RELEASE && m.type !== DHCPV6_DECLINE && m.type !== DHCPV6_CONFIRM) {
      o += emitDhcpv6Option(tx, o, DHCPV6_OPT_DNS_SERVERS, this.#plan.dns);
      if (this.#domains) o += emitDhcpv6Option(tx, o, DHCPV6_OPT_DOMAIN_LIST, this.#domains);
    } else {
      o += emitStatus(tx, o, DHCPV6_STATUS_SUCCESS);
    }
    const len = o - l4;
    const p = this.#plan;
    emitUdp(
      tx,
      l4,
      DHCPV6_SERVER_PORT,
      DHCPV6_CLIENT_PORT,
      len - UDP_HEADER_LEN,
      pseudoHeaderSumV6(p.linkLocal, 0, buf, ip.srcOffset, IPPROTO_UDP, len),
    );
    s.sendIpv6In(tx, 0, p.linkLocal, 0, buf, ip.srcOffset, IPPROTO_UDP, len);
  }

  /** IA_NA (§21.4) with the client's IAID, T1/T2, and one IAADDR (§21.6). @returns bytes written */
  #emitIaNa(tx: Uint8Array, o: number, buf: Uint8Array, m: Dhcpv6Message, host: number): number {
    const ia = m.options.get(DHCPV6_OPT_IA_NA)!;
    const iaid = ia.length >= 4
      ? ((buf[ia.offset] << 24) | (buf[ia.offset + 1] << 16) | (buf[ia.offset + 2] << 8) |
        buf[ia.offset + 3]) >>> 0
      : 0;
    const start = o;
    emitDhcpv6OptionHeader(tx, o, DHCPV6_OPT_IA_NA, 12 + 4 + 24);
    put32(tx, o + 4, iaid);
    put32(tx, o + 8, PREFERRED_SEC / 2);
    put32(tx, o + 12, (PREFERRED_SEC * 4) / 5);
    o += 16;
    emitDhcpv6OptionHeader(tx, o, DHCPV6_OPT_IAADDR, 24);
    tx.set(this.#plan.prefix.subarray(0, 8), o + 4);
    tx.fill(0, o + 12, o + 18);
    put16(tx, o + 18, host);
    put32(tx, o + 20, PREFERRED_SEC);
    put32(tx, o + 24, VALID_SEC);
    o += 28;
    return o - start;
  }
}

function emitStatus(tx: Uint8Array, o: number, code: number): number {
  emitDhcpv6OptionHeader(tx, o, DHCPV6_OPT_STATUS_CODE, 2);
  put16(tx, o + 4, code);
  return 6;
}

function hex(buf: Uint8Array, off: number, len: number): string {
  let s = "";
  for (let i = 0; i < len; i++) s += buf[off + i].toString(16).padStart(2, "0");
  return s;
}
