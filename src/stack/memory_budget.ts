/**
 * A tenant's memory budget (quota `bufferedBytes`): every byte its flows hold — host data waiting for the
 * guest's ACK, guest data waiting for the host socket, out-of-order segments — is charged here, so a
 * tenant's memory is bounded by its quota whatever its flow count, and no tenant can take another's.
 *
 * @module
 */
export class MemoryBudget {
  #used = 0;
  /** Called when bytes are given back while someone waits for room (see {@linkcode waiting}). */
  readonly #onRoom: () => void;
  /** Whether a flow paused for lack of budget and wants {@linkcode MemoryBudget.credit} to say so. */
  waiting = false;

  /**
   * @param limit bytes the tenant may hold; 0 means no limit
   * @param onRoom runs when bytes come back after {@linkcode waiting} was set (it is cleared first)
   */
  constructor(readonly limit: number, onRoom: () => void = () => {}) {
    this.#onRoom = onRoom;
  }

  get used(): number {
    return this.#used;
  }

  /** Bytes that may still be charged (Infinity without a limit). */
  get available(): number {
    return this.limit > 0 ? this.limit - this.#used : Infinity;
  }

  /** Takes `n` bytes if they fit; returns whether it did. */
  tryCharge(n: number): boolean {
    if (this.limit > 0 && this.#used + n > this.limit) return false;
    this.#used += n;
    return true;
  }

  /** Takes `n` bytes unconditionally (bytes already held: the caller checked {@linkcode available}). */
  charge(n: number): void {
    this.#used += n;
  }

  /** Gives back `n` bytes. */
  credit(n: number): void {
    if (n <= 0) return;
    this.#used -= n;
    if (this.waiting && this.available > 0) {
      this.waiting = false;
      this.#onRoom();
    }
  }
}
