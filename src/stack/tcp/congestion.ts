/**
 * Congestion control toward the guest: NewReno (RFC 5681 slow start and congestion avoidance, fast
 * retransmit/recovery; RFC 6582 partial acknowledgments). Guests such as v86 have receive rings of a
 * handful of frames: bursting a whole advertised window loses most of it, so the window we may have in
 * flight is min(cwnd, the guest's window).
 *
 * @module
 */

/** RFC 5681 §3.1: IW = min(4*SMSS, max(2*SMSS, 4380 bytes)); RFC 6928 allows 10 segments, as Linux. */
export const INITIAL_WINDOW_SEGMENTS = 10;

/**
 * A congestion controller, as the connection drives it: a window in bytes, and the events of RFC 5681
 * that move it. NewReno implements it today; another controller (CUBIC, RFC 9438) plugs in here.
 */
export interface CongestionControl {
  /** Bytes that may be in flight (the connection also honours the guest's window). */
  readonly cwnd: number;
  /** Slow-start threshold (Number.MAX_SAFE_INTEGER before the first loss). */
  readonly ssthresh: number;
  readonly inRecovery: boolean;
  /** Recovery ends when SND.UNA passes this (RFC 6582 §3.2). */
  readonly recover: number;
  /** The segment size changed (options negotiated, PMTU). */
  mss: number;
  /** Bytes in flight after a sending pass (what the window was used for; see `NewReno.onAck`). */
  noteFlight(bytes: number): void;
  onAck(acked: number): void;
  /** Nothing was sent for longer than the RTO (see `NewReno.restartAfterIdle`). */
  restartAfterIdle(): void;
  enterRecovery(flight: number, sndNxt: number): void;
  onDupAckInRecovery(): void;
  onPartialAck(acked: number): void;
  exitRecovery(flight: number): void;
  /** A retransmission timeout with `flight` bytes outstanding and `sndMax` the highest sequence number sent. */
  onTimeout(flight: number, sndMax: number): void;
  /**
   * The last timeout was spurious (see `TcpSender.judgeTimeoutOnAck`): `flight` is in flight again,
   * `acked` was just acknowledged, `pipePrev` is max(FlightSize, ssthresh) from before the timeout.
   */
  undoTimeout(flight: number, acked: number, pipePrev: number): void;
  /** Sets the window outright (the handshake's initial window). */
  setWindow(bytes: number): void;
}

export class NewReno implements CongestionControl {
  cwnd: number;
  ssthresh = Number.MAX_SAFE_INTEGER;
  /** In fast recovery until SND.UNA passes `recover` (RFC 6582 §3.2). */
  inRecovery = false;
  recover = 0;
  #mss: number;
  /** Bytes acknowledged toward the next congestion-avoidance increment. */
  #acked = 0;
  /** maxFS: the largest flight since cwnd last shrank (draft-ietf-ccwg-ratelimited-increase §3). */
  #maxFlight = 0;

  constructor(mss: number) {
    this.#mss = mss;
    this.cwnd = INITIAL_WINDOW_SEGMENTS * mss;
  }

  get mss(): number {
    return this.#mss;
  }

  set mss(v: number) {
    this.#mss = v;
  }

  setWindow(bytes: number): void {
    this.cwnd = bytes;
  }

  noteFlight(bytes: number): void {
    if (bytes > this.#maxFlight) this.#maxFlight = bytes;
  }

  /**
   * New data acknowledged outside recovery (RFC 5681 §3.1). A sender that does not fill its window (the host
   * sends little, the guest's window is the limit) has not shown the path can carry more: cwnd grows only up to
   * twice the largest flight in slow start, one segment past it in congestion avoidance
   * (draft-ietf-ccwg-ratelimited-increase §3, as Linux's tcp_is_cwnd_limited; RFC 7661's intent). Without it an
   * idle keep-alive connection's cwnd climbed with every answer and the next bulk reply went out as one burst
   * of gigabytes' worth of window.
   */
  onAck(acked: number): void {
    const slowStart = this.cwnd < this.ssthresh;
    const limit = slowStart ? 2 * this.#maxFlight : this.#maxFlight + this.#mss;
    if (this.cwnd >= limit) return;
    if (slowStart) {
      // slow start: grow by at most SMSS per ACK (RFC 5681 (2)); RFC 3465 ABC with L = 2*SMSS
      this.cwnd = Math.min(this.cwnd + Math.min(acked, 2 * this.#mss), limit);
    } else {
      // congestion avoidance: one SMSS per cwnd of data acknowledged (RFC 5681 (3))
      this.#acked += acked;
      if (this.#acked >= this.cwnd) {
        this.#acked -= this.cwnd;
        this.cwnd = Math.min(this.cwnd + this.#mss, limit);
      }
    }
  }

  /**
   * RFC 5681 §4.1: after more than an RTO without sending, the window learnt before says nothing of the path
   * now; start again from the initial window (a guest with a small receive ring, such as v86's, would lose
   * most of a full-window burst). Most of the old window stays as ssthresh, so slow start regains it in a few
   * round trips (RFC 7661 §4.4.2, as Linux's tcp_cwnd_restart).
   */
  restartAfterIdle(): void {
    const initial = INITIAL_WINDOW_SEGMENTS * this.#mss;
    if (this.cwnd <= initial) return;
    this.ssthresh = Math.max(this.ssthresh, Math.floor((3 * this.cwnd) / 4));
    this.cwnd = initial;
    this.#maxFlight = 0;
  }

  /** Third duplicate ACK (RFC 5681 §3.2 steps 2–3; RFC 6582 §3.2 step 2). */
  enterRecovery(flight: number, sndNxt: number): void {
    this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.#mss);
    this.cwnd = this.ssthresh + 3 * this.#mss;
    this.#maxFlight = 0;
    this.inRecovery = true;
    this.recover = sndNxt;
  }

  /** Further duplicate ACK in recovery: inflate (RFC 5681 §3.2 step 4). */
  onDupAckInRecovery(): void {
    this.cwnd += this.#mss;
  }

  /** Partial ACK in recovery (RFC 6582 §3.2 step 5): deflate by the amount acked, add back one SMSS. */
  onPartialAck(acked: number): void {
    this.cwnd = Math.max(this.cwnd - acked + this.#mss, this.#mss);
  }

  /** Full ACK ends recovery (RFC 6582 §3.2 step 3, option 1). */
  exitRecovery(flight: number): void {
    this.cwnd = Math.min(this.ssthresh, Math.max(flight, this.#mss) + this.#mss);
    this.inRecovery = false;
  }

  /**
   * Retransmission timeout (RFC 5681 §3.1 (4), loss window of one segment). `recover` ← the highest sequence
   * number sent (RFC 6582 §3.2 step 4): the duplicate ACKs that go-back-N draws from a guest that already
   * held the data start no fast retransmit.
   */
  onTimeout(flight: number, sndMax: number): void {
    this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.#mss);
    this.cwnd = this.#mss;
    this.#maxFlight = 0;
    this.inRecovery = false;
    this.recover = sndMax;
    this.#acked = 0;
  }

  /**
   * RFC 4015 §3.2 (the Eifel response, step "reversing the congestion control state"): cwnd ← FlightSize +
   * min(bytes_acked, IW), ssthresh ← pipe_prev — no burst of the old window at once, and slow start back up
   * to where the connection was.
   */
  undoTimeout(flight: number, acked: number, pipePrev: number): void {
    this.cwnd = flight + Math.min(acked, INITIAL_WINDOW_SEGMENTS * this.#mss);
    this.ssthresh = pipePrev;
    this.#maxFlight = flight;
  }
}
