/**
 * A relay-wide bound on open flows (each holds a host socket, so a descriptor): per-tenant quotas bound
 * one tenant, this bounds them all together, so that a thousand tenants each under quota cannot run the
 * process out of descriptors and stop every guest. Shared by every tenant's stack.
 *
 * @module
 */
export class FlowLimit {
  #open = 0;

  /** @param max flows open at once across the relay; 0 means no limit */
  constructor(readonly max: number) {}

  get open(): number {
    return this.#open;
  }

  /** Takes a slot for a new flow; false when the relay is full (the caller refuses the flow). */
  tryOpen(): boolean {
    if (this.max > 0 && this.#open >= this.max) return false;
    this.#open++;
    return true;
  }

  /** A flow ended. */
  release(): void {
    if (this.#open > 0) this.#open--;
  }
}

/** No relay-wide bound (a stack on its own, in tests and benchmarks). */
export const UNLIMITED_FLOWS: FlowLimit = new FlowLimit(0);

/**
 * The soft limit on open descriptors (RLIMIT_NOFILE) from the text of /proc/self/limits that `read`
 * returns; null where it cannot be read (not Linux, no permission).
 */
export function descriptorLimit(read: () => string): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(read());
    if (!m) return null;
    return m[1] === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return null;
  }
}
