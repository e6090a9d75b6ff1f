/**
 * What the relay's data-plane workers share, in SharedArrayBuffers (no locks; Atomics): the relay-wide
 * counts that limits are checked against (tenants, flows) and, per worker, which host ports its tenants
 * hold (port forwards, tenant stream ports) — so that the egress guard of a tenant on one worker refuses
 * another worker's tenants' ports as it refuses its own.
 *
 * @module
 */

const TENANTS = 0, FLOWS = 1;
/** Bits per protocol per worker: one per port. */
const PORT_WORDS = 65536 / 32;

/** The buffers, as they cross to a worker. */
export interface SharedRelayBuffers {
  counts: SharedArrayBuffer;
  /** workers × 2 protocols × 65536 bits. */
  ports: SharedArrayBuffer;
  workers: number;
}

export function newSharedRelayBuffers(workers: number): SharedRelayBuffers {
  return {
    counts: new SharedArrayBuffer(8),
    ports: new SharedArrayBuffer(workers * 2 * PORT_WORDS * 4),
    workers,
  };
}

export class SharedRelayState {
  readonly #counts: Int32Array;
  readonly #ports: Int32Array;
  readonly #workers: number;

  constructor(b: SharedRelayBuffers, readonly worker: number) {
    this.#counts = new Int32Array(b.counts);
    this.#ports = new Int32Array(b.ports);
    this.#workers = b.workers;
  }

  get tenants(): number {
    return Atomics.load(this.#counts, TENANTS);
  }

  addTenants(n: number): void {
    Atomics.add(this.#counts, TENANTS, n);
  }

  /** The relay-wide flow count, for a FlowLimit shared by every worker. */
  get flowCell(): { cells: Int32Array; index: number } {
    return { cells: this.#counts, index: FLOWS };
  }

  /** Publishes this worker's tenants' ports (the whole set, replacing what it published before). */
  publishPorts(tcp: Iterable<number>, udp: Iterable<number>): void {
    const base = this.worker * 2 * PORT_WORDS;
    const next = new Int32Array(2 * PORT_WORDS);
    for (const p of tcp) next[p >>> 5] |= 1 << (p & 31);
    for (const p of udp) next[PORT_WORDS + (p >>> 5)] |= 1 << (p & 31);
    for (let i = 0; i < next.length; i++) Atomics.store(this.#ports, base + i, next[i]);
  }

  /** Whether a tenant on any worker holds `port`. */
  portHeld(protocol: "tcp" | "udp", port: number): boolean {
    const word = (protocol === "udp" ? PORT_WORDS : 0) + (port >>> 5);
    for (let w = 0; w < this.#workers; w++) {
      if (Atomics.load(this.#ports, w * 2 * PORT_WORDS + word) & (1 << (port & 31))) return true;
    }
    return false;
  }
}

/** The worker that holds tenant `id`: a tenant lives on one worker for its whole life (FNV-1a of its id). */
export function workerOf(id: string, workers: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % workers;
}
