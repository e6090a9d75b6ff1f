/**
 * What the admin API and the metrics see of the relay: its tenants, limits and counters, and the few
 * operations an operator may ask for. `Relay` implements it; admin.ts and metrics.ts import only this.
 *
 * @module
 */
import type { Logger } from "../common/logger.ts";
import type { HostForwardConfig } from "../stack/config.ts";
import type { FlowLimit } from "../stack/flow_limit.ts";
import type { Tenant } from "./tenant.ts";
import type { Counters } from "../stack/counters.ts";
import type { ForwardOwner } from "./gvproxy_forwarder.ts";

export interface RelayView {
  readonly tenants: ReadonlyMap<string, Tenant>;
  /** Date.now() at start. */
  readonly startedAt: number;
  /** Open flows across every tenant, and the relay-wide limit. */
  readonly flowLimit: FlowLimit;
  readonly maxTenants: number;
  readonly atTenantLimit: boolean;
  /** Guest connections closed for protocol errors. */
  readonly transportErrors: number;
  /** Where admin-started captures go, and only there. */
  readonly captureDir: string;
  readonly log: Logger;
  /** Creates a tenant from an operator's spec (validated; throws with the reason). */
  createTenant(raw: unknown): Promise<Tenant>;
  deleteTenant(id: string): boolean;
  /** Where a tenant is reached, for the admin API's replies. */
  tenantEndpoints(t: Tenant): Record<string, unknown>;
  parseForward(rule: string): HostForwardConfig;
  /** Stops admitting new tenants and guests; returns the guests still connected. */
  drain(): number;
  readonly draining: boolean;
  /** This relay's name in a fleet: the `relay` label of every series (`--instance`, default the host name). */
  readonly instance: string;
  /** What deleted tenants had counted. */
  readonly retiredCounters: Counters;
  /** Single-user mode's port forwards (null in multi-tenant mode). */
  readonly singleUserForwards: ForwardOwner | null;
}
