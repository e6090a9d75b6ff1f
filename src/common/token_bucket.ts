/**
 * A token bucket (RFC 2697's single-rate shape): `rate` tokens per second, at most `burst` stored.
 * Time is passed in, so it runs on the timer wheel's clock or a test's.
 *
 * @module
 */
export class TokenBucket {
  #tokens: number;
  #last: number;

  /**
   * @param rate tokens per second; 0 means unlimited
   * @param burst bucket size (default: one second's worth)
   */
  constructor(readonly rate: number, readonly burst = rate, now = 0) {
    this.#tokens = burst;
    this.#last = now;
  }

  get unlimited(): boolean {
    return this.rate <= 0;
  }

  #refill(now: number): void {
    if (now > this.#last) {
      this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) / 1000) * this.rate);
      this.#last = now;
    }
  }

  /** Takes `n` tokens if there are that many; returns whether it did. */
  take(n: number, now: number): boolean {
    if (this.rate <= 0) return true;
    this.#refill(now);
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }

  /** Takes `n` tokens even into debt (for byte shaping: a frame is never split). */
  spend(n: number, now: number): void {
    if (this.rate <= 0) return;
    this.#refill(now);
    this.#tokens -= n;
  }

  /** Tokens available now (negative while in debt). */
  available(now: number): number {
    if (this.rate <= 0) return Infinity;
    this.#refill(now);
    return this.#tokens;
  }

  /** Milliseconds until at least `n` tokens are available. */
  waitMs(n: number, now: number): number {
    if (this.rate <= 0) return 0;
    this.#refill(now);
    return this.#tokens >= n ? 0 : ((n - this.#tokens) / this.rate) * 1000;
  }
}
