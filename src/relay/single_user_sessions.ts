/**
 * Single-user mode's sessions: each guest that reaches a shared listener (stream, datagram, WebSocket `/`)
 * gets a tenant of its own, named `session-N`, with the relay's stack config and default quotas. The relay
 * (relay.ts) admits and wires them; this module makes, finds and forgets them.
 *
 * A session outlives its guest's connection by the grace period (`--tenant-grace`), as a named tenant does:
 * a guest whose link broke (QEMU's `reconnect`, a browser VM's WebSocket coming back) and whose first frame
 * on the new connection comes from the MAC of the old one gets its session back — its DHCP lease, its TCP
 * connections and UDP flows — as passt and gvproxy keep their one guest's flows across reconnects. Only a
 * session no guest holds is resumed, so two VMs with the same MAC (QEMU's default) connected at once still
 * get one session each.
 *
 * @module
 */
import { Tenant, type TenantDeps } from "./tenant.ts";
import type { StackConfig } from "../stack/config.ts";
import type { Logger } from "../common/logger.ts";
import type { GuestLink } from "../transport/link.ts";
import { macToString } from "../wire/bytes.ts";

/** What the sessions are made in: the relay's tenant table and what every tenant needs. */
export interface SingleUserDeps {
  tenants: Map<string, Tenant>;
  /** The relay-wide stack config each session copies. */
  stack: StackConfig;
  /** A tenant's dependencies, read when a session is made (the relay's capture starts after the constructor). */
  tenantDeps(): TenantDeps;
  /** Takes a session's lane out of the relay's frame scheduler. */
  closeLane(t: Tenant): void;
  log: Logger;
}

/** Polls (ARP, Neighbor Solicitation) a new connection sends at most, however many sessions wait. */
const MAX_CALLS = 16;

/** A single-user session whose guest left and may come back (its grace period runs). */
function waitsForGuest(t: Tenant): boolean {
  return t.ephemeral && t.guestMac !== null && !t.hasGuest && !t.deleted;
}

export class SingleUserSessions {
  #d: SingleUserDeps;
  #next = 1;

  constructor(deps: SingleUserDeps) {
    this.#d = deps;
  }

  /** A new session for a guest that just connected. */
  open(): Tenant {
    const id = `session-${this.#next++}`;
    const t = new Tenant({ id }, structuredClone(this.#d.stack), true, this.#d.tenantDeps());
    this.#d.tenants.set(id, t);
    return t;
  }

  /** Forgets a session no guest attached to (refused, or its upgrade failed). */
  drop(t: Tenant): void {
    if (t.ephemeral && !t.hasGuest) this.#d.tenants.delete(t.id);
  }

  /**
   * The first frame on `fresh`'s new connection came from `mac`: when a session waits for that guest (its
   * link gone, its grace running), `fresh` and its link part — `fresh` never carried a frame — and the
   * waiting session is returned, to be attached instead. Null: `fresh` stays the guest's session.
   */
  resume(fresh: Tenant, link: GuestLink, mac: number): Tenant | null {
    let waiting: Tenant | null = null;
    for (const t of this.#d.tenants.values()) if (t.guestMac === mac && waitsForGuest(t)) waiting = t;
    if (!waiting) return null;
    this.#d.closeLane(fresh);
    fresh.detach(link, 0, () => {});
    this.#d.tenants.delete(fresh.id);
    fresh.delete();
    this.#d.log("info", "guest came back: its session resumed", {
      tenant: waiting.id,
      mac: macToString(mac),
      remote: link.remote,
    });
    return waiting;
  }

  /**
   * A new connection, no frame on it yet: a guest coming back may stay silent for long (its TCP backed off
   * while its link was down, or it only waits for a download to go on), so each waiting session's guest is
   * asked for its addresses over the new link, unicast to its MAC (ARP, and Neighbor Solicitation for IPv6).
   * Only that guest answers, and its answer is the first frame that takes it back to its session.
   */
  callWaitingGuests(fresh: Tenant): void {
    const stack = fresh.stack;
    if (!stack) return;
    let asked = 0;
    for (const t of this.#d.tenants.values()) {
      if (!waitsForGuest(t) || !t.stack) continue;
      for (const [ip, mac] of t.stack.neighbours) {
        if (mac !== t.guestMac) continue;
        stack.arp.poll(ip, mac);
        if (++asked === MAX_CALLS) return;
      }
      for (const [address, mac] of t.stack.icmp6.neighbours()) {
        if (mac !== t.guestMac) continue;
        stack.icmp6.poll(address, mac);
        if (++asked === MAX_CALLS) return;
      }
    }
  }

  /**
   * Makes room for a new guest at the tenant limit: the oldest session that waits for its guest goes
   * early. False when every session has a guest.
   */
  releaseOldestWaiting(): boolean {
    for (const t of this.#d.tenants.values()) {
      if (!waitsForGuest(t)) continue;
      this.#d.tenants.delete(t.id);
      t.delete();
      this.#d.log("info", "session released early: the relay is at its tenant limit", { tenant: t.id });
      return true;
    }
    return false;
  }

  /**
   * The session a single-user port forward reaches: the most recently connected guest's — one that has
   * sent a frame, since a connection whose first frame is still to come may yet belong to a waiting session.
   */
  latest(): Tenant | null {
    let last: Tenant | null = null;
    for (const t of this.#d.tenants.values()) if (t.link && t.ephemeral && t.guestMac !== null) last = t;
    return last;
  }
}
