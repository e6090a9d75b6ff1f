/**
 * Single-user mode's sessions: each guest that reaches a shared listener (stream, datagram, WebSocket `/`)
 * gets a tenant of its own, named `session-N`, with the relay's stack config and default quotas. The relay
 * (relay.ts) admits and wires them; this module makes, finds and forgets them.
 *
 * @module
 */
import { Tenant, type TenantDeps } from "./tenant.ts";
import type { StackConfig } from "../stack/config.ts";

/** What the sessions are made in: the relay's tenant table and what every tenant needs. */
export interface SingleUserDeps {
  tenants: Map<string, Tenant>;
  /** The relay-wide stack config each session copies. */
  stack: StackConfig;
  /** A tenant's dependencies, read when a session is made (the relay's capture starts after the constructor). */
  tenantDeps(): TenantDeps;
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

  /** The session a single-user port forward reaches: the most recently connected guest's. */
  latest(): Tenant | null {
    let last: Tenant | null = null;
    for (const t of this.#d.tenants.values()) if (t.link && t.ephemeral) last = t;
    return last;
  }
}
