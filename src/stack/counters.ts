/**
 * Per-tenant counters: frames and bytes each way, flows, and drops by reason. Plain numbers so the hot
 * path only increments fields.
 *
 * @module
 */
export class Counters {
  framesIn = 0;
  bytesIn = 0;
  framesOut = 0;
  bytesOut = 0;
  udpFlowsOpened = 0;
  tcpFlowsOpened = 0;
  dnsQueries = 0;
  dhcpLeases = 0;
  icmpEchoes = 0;
  tcpRetransmits = 0;
  /** Of those, SYN-ACKs sent again (the guest did not complete the handshake in time, or lost ours). */
  tcpSynAckRetransmits = 0;
  /** UDP datagrams toward the guest sent in fragments (larger than its MTU), either family. */
  udpFragmentedDatagrams = 0;
  tcpTimeouts = 0;
  /** Timeouts found spurious afterwards (Eifel, RFC 3522; F-RTO, RFC 5682) and undone. */
  tcpSpuriousTimeouts = 0;
  tcpTailProbes = 0;
  /** Connections that sent their flight again at once when the guest's link came back (a resumed session). */
  tcpResentOnLinkReturn = 0;
  tcpBytesToGuest = 0;
  tcpBytesFromGuest = 0;
  /** Guest TCP segments whose Ethernet and IPv4 headers repeated the flow's last (segment_prediction.ts). */
  tcpSegmentsPredicted = 0;
  /** IPv6 packets from the guest (all of its traffic over v6, services included). */
  ipv6PacketsIn = 0;
  /** Of the flows opened, those over IPv6. */
  tcpFlowsOpened6 = 0;
  udpFlowsOpened6 = 0;
  /** UDP flows a full table gave up, the least recently active, to a new one (udp_nat.ts). */
  udpFlowsReclaimed = 0;
  /** TFTP downloads started (tftp_service.ts). */
  tftpTransfers = 0;
  /** Router solicitations answered (a guest configuring IPv6). */
  routerSolicitations = 0;
  /** Throws contained at the tenant's boundary (each reset a flow or the tenant's stack). */
  faults = 0;
  /** Drops keyed by reason, e.g. "ipv4-malformed". */
  readonly drops: Map<string, number> = new Map();

  drop(reason: string): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
  }

  /** Adds `other`'s counts to these (relay-wide totals keep what tenants that left had counted). */
  absorb(other: Counters): void {
    for (const [k, v] of Object.entries(other)) {
      if (typeof v === "number") (this as unknown as Record<string, number>)[k] += v;
    }
    for (const [reason, n] of other.drops) this.drops.set(reason, (this.drops.get(reason) ?? 0) + n);
  }

  /** A JSON-friendly snapshot. */
  snapshot(): Record<string, unknown> {
    return {
      framesIn: this.framesIn,
      bytesIn: this.bytesIn,
      framesOut: this.framesOut,
      bytesOut: this.bytesOut,
      udpFlowsOpened: this.udpFlowsOpened,
      tcpFlowsOpened: this.tcpFlowsOpened,
      dnsQueries: this.dnsQueries,
      dhcpLeases: this.dhcpLeases,
      icmpEchoes: this.icmpEchoes,
      tcpRetransmits: this.tcpRetransmits,
      tcpSynAckRetransmits: this.tcpSynAckRetransmits,
      udpFragmentedDatagrams: this.udpFragmentedDatagrams,
      tcpTimeouts: this.tcpTimeouts,
      tcpSpuriousTimeouts: this.tcpSpuriousTimeouts,
      tcpTailProbes: this.tcpTailProbes,
      tcpResentOnLinkReturn: this.tcpResentOnLinkReturn,
      tcpBytesToGuest: this.tcpBytesToGuest,
      tcpBytesFromGuest: this.tcpBytesFromGuest,
      tcpSegmentsPredicted: this.tcpSegmentsPredicted,
      ipv6PacketsIn: this.ipv6PacketsIn,
      tcpFlowsOpened6: this.tcpFlowsOpened6,
      udpFlowsOpened6: this.udpFlowsOpened6,
      udpFlowsReclaimed: this.udpFlowsReclaimed,
      tftpTransfers: this.tftpTransfers,
      routerSolicitations: this.routerSolicitations,
      faults: this.faults,
      drops: Object.fromEntries(this.drops),
    };
  }
}
