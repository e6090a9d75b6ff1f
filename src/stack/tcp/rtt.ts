/**
 * Retransmission timeout per RFC 6298.
 *
 * @module
 */

/** RFC 6298 (2.1): before any RTT sample, RTO is 1 second. */
export const INITIAL_RTO_MS = 1000;
/**
 * RFC 6298 (2.4) asks for at least 1 s; Linux uses 200 ms (TCP_RTO_MIN), and on a virtual LAN of
 * sub-millisecond RTTs 1 s would stall every loss recovery. If Linux does it, we do too.
 */
export const MIN_RTO_MS = 200;
/** RFC 6298 (2.5): a maximum of at least 60 seconds. */
export const MAX_RTO_MS = 60_000;
/** Clock granularity G of (2.3): the timer wheel tick. */
const G_MS = 5;

export class RttEstimator {
  srtt = 0;
  rttvar = 0;
  rto = INITIAL_RTO_MS;
  #hasSample = false;
  get hasSample(): boolean {
    return this.#hasSample;
  }

  /** Consecutive backoffs (RFC 6298 (5.5)). */
  backoff = 0;

  /** Feeds one RTT measurement (ms); per Karn's rule the caller never samples a retransmitted segment. */
  sample(r: number): void {
    r = Math.max(r, 0);
    if (!this.#hasSample) {
      // (2.2)
      this.srtt = r;
      this.rttvar = r / 2;
      this.#hasSample = true;
    } else {
      // (2.3) with alpha = 1/8, beta = 1/4
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.backoff = 0;
    this.rto = Math.min(MAX_RTO_MS, Math.max(MIN_RTO_MS, this.srtt + Math.max(G_MS, 4 * this.rttvar)));
  }

  /** The timer to arm now: RTO doubled per consecutive timeout (5.5), capped. */
  current(): number {
    return Math.min(MAX_RTO_MS, this.rto * (1 << this.backoff));
  }

  /** Records a timeout (5.5). */
  onTimeout(): void {
    if (this.rto * (1 << this.backoff) < MAX_RTO_MS) this.backoff++;
  }
}
