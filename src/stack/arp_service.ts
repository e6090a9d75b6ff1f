/**
 * ARP on the virtual LAN (RFC 826): the gateway answers for its own addresses (gateway, DNS, translated
 * addresses) and learns the guest's. Probes (RFC 5227 §2.1.1: sender IP 0.0.0.0) are answered only for
 * addresses that really are ours — a free address gets no reply, so the guest may take it.
 *
 * @module
 */
import { MAC_BROADCAST, WireError } from "../wire/bytes.ts";
import { ARP_LEN, ARP_OP_REPLY, ARP_OP_REQUEST, emitArp, parseArp } from "../wire/arp.ts";
import { emitEthernet, ETH_HEADER_LEN, ETHERTYPE_ARP } from "../wire/ethernet.ts";
import type { StackContext } from "./context.ts";

/** Do not repeat an ARP request for the same address more often than this. */
const REQUEST_INTERVAL_MS = 1000;

export class ArpService {
  #stack: StackContext;
  #lastRequest = new Map<number, number>();

  constructor(stack: StackContext) {
    this.#stack = stack;
  }

  /** Whether the gateway owns `ip` on the virtual LAN. */
  isOurs(ip: number): boolean {
    const p = this.#stack.plan;
    return ip === p.gateway || ip === p.dns || this.#stack.translation.has(ip);
  }

  input(buf: Uint8Array, off: number, end: number, frameSrcMac: number): void {
    const s = this.#stack;
    const a = parseArp(buf, off, end);
    if (a instanceof WireError) return s.drop("arp-malformed", a);
    if (a.senderMac !== frameSrcMac) return s.drop("arp-sender-mismatch");
    const probe = a.senderIp === 0;
    // RFC 5227 §2.4: a guest announcing or using one of our addresses is a conflict: never learn it
    if (!probe && this.isOurs(a.senderIp)) return s.drop("arp-claims-gateway-address");
    s.learnSource(a.senderIp, a.senderMac); // a probe's sender is 0.0.0.0: nothing to learn
    if (a.op !== ARP_OP_REQUEST) return;
    // gratuitous ARP (sender = target) only announces; answer requests for our addresses only
    if (a.senderIp === a.targetIp || !this.isOurs(a.targetIp)) return;
    const tx = s.tx;
    emitEthernet(tx, 0, a.senderMac, s.plan.gatewayMac, ETHERTYPE_ARP);
    emitArp(
      // a probe is answered to its sender's MAC with target IP 0, as Linux does
      {
        op: ARP_OP_REPLY,
        senderMac: s.plan.gatewayMac,
        senderIp: a.targetIp,
        targetMac: a.senderMac,
        targetIp: a.senderIp,
      },
      tx,
      ETH_HEADER_LEN,
    );
    s.sendFrame(ETH_HEADER_LEN + ARP_LEN);
  }

  /** Broadcasts a request for `ip` (rate-limited per address). */
  request(ip: number): void {
    const now = this.#stack.wheel.now;
    const last = this.#lastRequest.get(ip);
    if (last !== undefined && now - last < REQUEST_INTERVAL_MS) return;
    if (this.#lastRequest.size > 256) this.#lastRequest.clear();
    this.#lastRequest.set(ip, now);
    this.#emitRequest(ip, MAC_BROADCAST);
  }

  /**
   * Asks the host at `mac` whether it still holds `ip`, unicast (RFC 1122 §2.3.2.1's poll): only that host
   * answers, and its answer comes from its MAC.
   */
  poll(ip: number, mac: number): void {
    this.#emitRequest(ip, mac);
  }

  #emitRequest(ip: number, to: number): void {
    const s = this.#stack;
    const tx = s.tx;
    emitEthernet(tx, 0, to, s.plan.gatewayMac, ETHERTYPE_ARP);
    emitArp(
      {
        op: ARP_OP_REQUEST,
        senderMac: s.plan.gatewayMac,
        senderIp: s.plan.gateway,
        targetMac: 0,
        targetIp: ip,
      },
      tx,
      ETH_HEADER_LEN,
    );
    s.sendFrame(ETH_HEADER_LEN + ARP_LEN);
  }
}
