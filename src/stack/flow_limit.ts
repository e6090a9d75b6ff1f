/**
 * A relay-wide bound on open flows (each holds a host socket, so a descriptor): per-tenant quotas bound
 * one tenant, this bounds them all together, so that a thousand tenants each under quota cannot run the
 * process out of descriptors and stop every guest. Shared by every tenant's stack.
 *
 * @module
 */
export class FlowLimit {
  /** The count: a cell of its own, or one shared by the relay's data-plane workers (Atomics). */
  readonly #cells: Int32Array;
  readonly #i: number;

  /**
   * @param max flows open at once across the relay; 0 means no limit
   * @param shared a count in shared memory, when several threads hold flows
   */
  constructor(readonly max: number, shared?: { cells: Int32Array; index: number }) {
    this.#cells = shared?.cells ?? new Int32Array(1);
    this.#i = shared?.index ?? 0;
  }

  get open(): number {
    return Atomics.load(this.#cells, this.#i);
  }

  /** Takes a slot for a new flow; false when the relay is full (the caller refuses the flow). */
  tryOpen(): boolean {
    const was = Atomics.add(this.#cells, this.#i, 1);
    if (this.max > 0 && was >= this.max) {
      Atomics.sub(this.#cells, this.#i, 1);
      return false;
    }
    return true;
  }

  /** A flow ended. */
  release(): void {
    if (Atomics.sub(this.#cells, this.#i, 1) <= 0) Atomics.add(this.#cells, this.#i, 1);
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
