/**
 * One guest TCP connection, terminated here and spliced to a host socket.
 *
 * Theory of operation
 * - Guest-initiated: the guest's SYN creates the connection in CONNECTING while the host socket
 *   dials; only when the host answers do we send SYN-ACK (gvisor-tap-vsock's order), so a refused host
 *   port becomes an RST and the guest sees ECONNREFUSED at once. Port forwards start in SYN-SENT: we
 *   send the SYN and the accepted host socket stays paused until the guest answers.
 * - Guest → host: in-order payload is written to the host socket at once; out-of-order segments wait in
 *   a bounded {@linkcode Reassembly}. The window we advertise is the room left toward the host socket
 *   (`rcvBuffer` minus its unwritten bytes minus held segments), so a slow host peer shrinks the guest's
 *   window instead of growing our memory. ACKs are delayed by {@linkcode DELAYED_ACK_MS} or sent at
 *   every second full segment, and immediately for out-of-order data (RFC 5681 §4.2), with SACK blocks.
 * - Host → guest: bytes read from the host wait in a {@linkcode SendQueue} until acknowledged; at most
 *   min(cwnd, guest window) is in flight (NewReno, RFC 5681/6582), retransmitted on RTO (RFC 6298, Karn's
 *   rule, exponential backoff) or on three duplicate ACKs; SACK blocks from the guest steer which hole is
 *   retransmitted in recovery. Reading from the host pauses while the queue is full.
 * - Close: each side's FIN is carried separately (half-close); RST crosses both ways; TIME-WAIT is short
 *   because the guest side of a relay needs no 2*MSL protection from the host network.
 * - Timers: one retransmission/persist/close timer and one delayed-ACK timer per connection, both on the
 *   shared wheel.
 *
 * @module
 */
import {
  emitTcp,
  TCP_ACK_FLAG,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  type TcpHeader,
  tcpHeaderLength,
} from "../../wire/tcp.ts";
import { ipv4ToString } from "../../wire/bytes.ts";
import { IPPROTO_TCP } from "../../wire/ipv4.ts";
import { pseudoHeaderSumV4 } from "../../wire/checksum.ts";
import type { HostTcpSocket, TcpHandlers } from "../../host/host.ts";
import { Timer } from "../timer_wheel.ts";
import type { FaultOwner } from "../containment.ts";
import { L4_OFFSET } from "../frame.ts";
import type { StackContext } from "../context.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "./seq.ts";
import { SendQueue } from "./send_queue.ts";
import { Reassembly } from "./reassembly.ts";
import { RttEstimator } from "./rtt.ts";
import { NewReno } from "./congestion.ts";
import { SackScoreboard } from "./sack_scoreboard.ts";
import {
  CONNECT_TIMEOUT_MS,
  DEFAULT_MSS,
  DEFAULT_RECEIVE_BUFFER,
  DEFAULT_SEND_BUFFER,
  DELAYED_ACK_MS,
  ETH_PAD_ROOM,
  FIN_WAIT_2_TIMEOUT_MS,
  GUARANTEED_RING,
  HOST_READ_BYTES,
  MAX_RETRIES,
  MAX_SYN_RETRIES,
  MIN_HOST_READ,
  MIN_SEND_BUFFER,
  MIN_SND_MSS,
  OUR_WSCALE,
  STATE_NAMES,
  type TcpEndpoints,
  TcpState,
  type TcpStateValue,
  TIME_WAIT_MS,
} from "./state.ts";

/** What a connection needs of its tenant's TCP service (TcpService implements it). */
export interface TcpConnOwner {
  /** Reused header for every segment a connection emits. */
  readonly outHeader: TcpHeader;
  /** Sends the RST that answers a segment (RFC 9293 §3.10.7.1). */
  reset(
    guestIp: number,
    localIp: number,
    guestPort: number,
    localPort: number,
    seq: number,
    ack: number,
    flags: number,
    dataLen: number,
  ): void;
  /** The host dial failed: answer the guest's SYN and forget the connection. */
  connectFailed(c: TcpConn, code: string): void;
  /** True when the transport toward the guest holds enough; senders join `blocked`. */
  outputCongested(): boolean;
  readonly blocked: Set<TcpConn>;
  /** Connections paused until the tenant's memory budget has room. */
  readonly budgetBlocked: Set<TcpConn>;
}

export class TcpConn implements TcpHandlers, FaultOwner {
  readonly stack: StackContext;
  readonly guestIp: number;
  readonly guestPort: number;
  readonly localIp: number;
  readonly localPort: number;
  state: TcpStateValue;
  host: HostTcpSocket | null = null;
  /** Whether this connection holds a slot of the relay-wide flow limit (the service releases it). */
  holdsRelaySlot = false;
  /** Called once when the connection is freed (the service removes it from its table). */
  onFree: (c: TcpConn) => void = () => {};

  // RFC 9293 send sequence variables (toward the guest)
  iss: number;
  sndUna: number;
  sndNxt: number;
  /** Highest sequence number sent so far: SND.NXT moves back on go-back-N retransmission, this never does. */
  sndMax: number;
  sndWnd = 0;
  sndWl1 = 0;
  sndWl2 = 0;
  /** Guest's window scale shift, 0 when not negotiated. */
  sndWscale = 0;
  // receive sequence variables (from the guest)
  irs = 0;
  rcvNxt = 0;
  /** Our scale shift, 0 when not negotiated. */
  rcvWscale = 0;
  /** Right edge of the window last advertised: never moved left (RFC 9293 §3.8.6.2.2). */
  #rcvAdvertisedEnd = 0;

  /** Largest payload per segment toward the guest (options included in the header budget). */
  mss: number;
  #guestMss = DEFAULT_MSS;
  tsOk = false;
  #tsRecent = 0;
  #lastAckSent = 0;
  sackOk = false;
  /** What the guest reported holding with SACK. */
  readonly #sack = new SackScoreboard();
  #highRxt = 0;
  /** Wall time of the last retransmission of SND.UNA's segment (lost-retransmission detection). */
  #rxtAt = 0;
  /** The armed timer is a tail loss probe, not the RTO. */
  #probeArmed = false;

  /** Host data until the guest acknowledges it; its buffer is charged to the tenant's memory budget. */
  readonly queue: SendQueue;
  #ooo: Reassembly | null = null;
  readonly rtt = new RttEstimator();
  readonly cc: NewReno;
  #dupAcks = 0;
  #timing = false;
  #timedSeq = 0;
  #timedAt = 0;
  #retries = 0;
  #persistBackoff = 0;

  #hostEof = false;
  #finSent = false;
  #finSeq = 0;
  #hostPaused = false;
  #hostClosed = false;
  #pendingAcks = 0;
  #freed = false;
  /** Bytes of the host socket's write queue charged to the tenant's budget. */
  #hostCharged = 0;
  readonly #sendBuffer: number;
  readonly #receiveBuffer: number;
  readonly #rtoTimer: Timer;
  readonly #ackTimer: Timer;

  constructor(
    stack: StackContext,
    readonly owner: TcpConnOwner,
    ep: TcpEndpoints,
    state: TcpStateValue,
    opts: { sendBuffer?: number; receiveBuffer?: number } = {},
  ) {
    this.stack = stack;
    this.guestIp = ep.guestIp;
    this.guestPort = ep.guestPort;
    this.localIp = ep.localIp;
    this.localPort = ep.localPort;
    this.state = state;
    const memory = stack.memory;
    this.queue = new SendQueue((d) => (d > 0 ? memory.charge(d) : memory.credit(-d)));
    this.iss = (Math.random() * 0x1_0000_0000) >>> 0;
    this.sndUna = this.iss;
    this.sndNxt = this.iss;
    this.sndMax = this.iss;
    this.#sendBuffer = opts.sendBuffer ?? DEFAULT_SEND_BUFFER;
    this.#receiveBuffer = opts.receiveBuffer ?? DEFAULT_RECEIVE_BUFFER;
    this.mss = stack.plan.mtu - 40;
    this.cc = new NewReno(this.mss);
    // the largest frame: headers with options, and a full segment
    this.queue.frameRoomWanted = L4_OFFSET + 60 + this.mss;
    this.#rtoTimer = new Timer((now) => this.#onTimer(now), this);
    this.#ackTimer = new Timer(() => this.#sendAck(), this);
  }

  get freed(): boolean {
    return this.#freed;
  }

  /** The RFC 9293 state's name. */
  get stateName(): string {
    return STATE_NAMES[this.state];
  }

  // ───────────────────────── handshake ─────────────────────────

  /** Records the options of the guest's SYN (RFC 9293 §3.7.1, RFC 7323, RFC 2018). */
  acceptSynOptions(seg: TcpHeader): void {
    this.irs = seg.seq;
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.#guestMss = seg.mss > 0 ? seg.mss : DEFAULT_MSS;
    if (seg.windowScale >= 0) {
      // RFC 7323 §2.3: a shift above 14 is treated as 14
      this.sndWscale = Math.min(seg.windowScale, 14);
      this.rcvWscale = OUR_WSCALE;
    } else {
      this.sndWscale = 0;
      this.rcvWscale = 0;
    }
    this.sackOk = seg.sackPermitted;
    this.tsOk = seg.hasTimestamps;
    if (this.tsOk) this.#tsRecent = seg.tsVal;
    this.#updateMss();
    // the window in a SYN is never scaled (RFC 7323 §2.2)
    this.sndWnd = seg.window;
    this.sndWl1 = seg.seq;
    this.sndWl2 = seg.ack;
  }

  #updateMss(): void {
    const ours = this.stack.plan.mtu - 40;
    this.mss = Math.max(MIN_SND_MSS, Math.min(this.#guestMss, ours) - (this.tsOk ? 12 : 0));
    this.cc.mss = this.mss;
    if (this.cc.cwnd < this.mss) this.cc.cwnd = this.mss;
  }

  /** Bounds the host dial: the guest gets a reset after {@linkcode CONNECT_TIMEOUT_MS}. */
  startConnectTimer(): void {
    this.#armRto(CONNECT_TIMEOUT_MS);
  }

  /** Host dial succeeded: answer the guest's SYN. */
  onConnect(): void {
    if (this.state !== TcpState.CONNECTING) return;
    this.state = TcpState.SYN_RECEIVED;
    this.cc.cwnd = 10 * this.mss;
    this.#sendSyn(true);
    this.#armRto(this.rtt.current());
  }

  /** Port forward: send our SYN to the guest. */
  startActiveOpen(): void {
    this.state = TcpState.SYN_SENT;
    this.#sendSyn(false);
    this.#armRto(this.rtt.current());
  }

  #sendSyn(withAck: boolean): void {
    const h = this.owner.outHeader;
    h.mss = this.stack.plan.mtu - 40;
    if (withAck) {
      h.windowScale = this.sndWscale > 0 || this.rcvWscale > 0 ? this.rcvWscale : -1;
      h.sackPermitted = this.sackOk;
      h.hasTimestamps = this.tsOk;
    } else {
      h.windowScale = OUR_WSCALE;
      h.sackPermitted = true;
      h.hasTimestamps = true;
    }
    this.#emit(TCP_SYN | (withAck ? TCP_ACK_FLAG : 0), this.iss, 0, 0, true);
    this.sndNxt = seqAdd(this.iss, 1);
    // the handshake is the first RTT sample, as in Linux: without it a busy relay's first flight runs
    // on the 1 s initial RTO; Karn's rule excludes a retransmitted SYN
    this.#timing = this.#retries === 0;
    this.#timedSeq = this.iss;
    this.#timedAt = this.stack.wheel.now;
  }

  /** RTT sample from the handshake, if its SYN was not retransmitted (RFC 6298 §3, Karn). */
  #sampleHandshake(): void {
    if (this.#timing) this.rtt.sample(this.stack.wheel.now - this.#timedAt);
    this.#timing = false;
  }

  // ───────────────────────── segment arrival ─────────────────────────

  /** A segment for this connection (RFC 9293 §3.10.7). `buf` holds the payload at seg.payloadOffset. */
  input(seg: TcpHeader, buf: Uint8Array): void {
    if (this.#freed) return;
    const f = seg.flags;
    switch (this.state) {
      case TcpState.CONNECTING:
        // the host is still dialing: a retransmitted SYN is absorbed; a RST aborts the dial
        if (f & TCP_RST) this.#freeByGuestReset();
        return;
      case TcpState.SYN_SENT:
        return this.#inputSynSent(seg);
      case TcpState.CLOSED:
        return;
    }
    const payloadLen = seg.payloadEnd - seg.payloadOffset;
    const segLen = payloadLen + (f & TCP_SYN ? 1 : 0) + (f & TCP_FIN ? 1 : 0);
    const wnd = this.#receiveWindow();
    // RFC 9293 §3.10.7.4 first: sequence number acceptability (the four-case table)
    let acceptable: boolean;
    if (segLen === 0) {
      acceptable = wnd === 0
        ? seg.seq === this.rcvNxt
        : seqGe(seg.seq, this.rcvNxt) && seqLt(seg.seq, seqAdd(this.rcvNxt, wnd));
    } else {
      acceptable = wnd > 0 && (
        (seqGe(seg.seq, this.rcvNxt) && seqLt(seg.seq, seqAdd(this.rcvNxt, wnd))) ||
        (seqGe(seqAdd(seg.seq, segLen - 1), this.rcvNxt) &&
          seqLt(seqAdd(seg.seq, segLen - 1), seqAdd(this.rcvNxt, wnd)))
      );
    }
    // a retransmitted segment whose data we already have is still a valid ACK carrier
    const stale = !acceptable && segLen > 0 && seqLe(seqAdd(seg.seq, segLen), this.rcvNxt);
    if (!acceptable) {
      if (f & TCP_RST) return;
      // RFC 9293: "special allowance should be made to accept valid ACKs" at a zero window
      if (!(wnd === 0 && seg.seq === this.rcvNxt) && !stale) {
        this.#sendAck();
        return;
      }
    }
    // second: RST (RFC 5961 §3.2: exact match resets, in-window draws a challenge ACK)
    if (f & TCP_RST) {
      if (seg.seq === this.rcvNxt) {
        this.stack.log("debug", "guest reset connection", {
          tenant: this.stack.tenant,
          state: this.stateName,
        });
        this.#freeByGuestReset();
      } else this.#sendAck();
      return;
    }
    // fourth: SYN in a synchronized state → challenge ACK (RFC 5961 §4); in SYN-RECEIVED a
    // retransmitted SYN means our SYN-ACK was lost
    if (f & TCP_SYN) {
      if (this.state === TcpState.SYN_RECEIVED && seg.seq === this.irs) {
        this.#sendSyn(true);
      } else this.#sendAck();
      return;
    }
    // fifth: ACK
    if (!(f & TCP_ACK_FLAG)) return;
    if (this.tsOk && seg.hasTimestamps && seqLe(seg.seq, this.#lastAckSent)) this.#tsRecent = seg.tsVal;
    if (this.state === TcpState.SYN_RECEIVED) {
      if (seqGt(seg.ack, this.sndUna) && seqLe(seg.ack, this.sndNxt)) {
        this.state = TcpState.ESTABLISHED;
        this.sndUna = seg.ack;
        this.sndWnd = seg.window << this.sndWscale;
        this.sndWl1 = seg.seq;
        this.sndWl2 = seg.ack;
        this.#rtoDone();
        this.#sampleHandshake();
        this.#retries = 0;
      } else {
        this.#resetFor(seg);
        return;
      }
    }
    if (seqGt(seg.ack, this.sndMax)) {
      // acknowledges something not yet sent
      this.#sendAck();
      return;
    }
    this.#processAck(seg, segLen);
    if (this.#freed) return;
    // seventh: segment text, in ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2
    if (
      payloadLen > 0 && !stale &&
      (this.state === TcpState.ESTABLISHED || this.state === TcpState.FIN_WAIT_1 ||
        this.state === TcpState.FIN_WAIT_2)
    ) {
      this.#receiveData(seg.seq, buf.subarray(seg.payloadOffset, seg.payloadEnd), wnd);
    } else if (stale) {
      this.#sendAck();
    }
    // eighth: FIN, only once everything before it has arrived
    if ((f & TCP_FIN) && !stale && seqAdd(seg.seq, payloadLen) === this.rcvNxt) this.#receiveFin();
    this.trySend();
  }

  /** The reset RFC 9293 §3.10.7 prescribes in answer to an unacceptable segment. */
  #resetFor(seg: TcpHeader): void {
    this.owner.reset(
      this.guestIp,
      this.localIp,
      this.guestPort,
      this.localPort,
      seg.seq,
      seg.ack,
      seg.flags,
      seg.payloadEnd - seg.payloadOffset,
    );
  }

  #inputSynSent(seg: TcpHeader): void {
    const f = seg.flags;
    // RFC 9293 §3.10.7.3
    if (f & TCP_ACK_FLAG) {
      if (seqLe(seg.ack, this.iss) || seqGt(seg.ack, this.sndNxt)) {
        if (!(f & TCP_RST)) {
          this.#resetFor(seg);
        }
        return;
      }
    }
    if (f & TCP_RST) {
      if (f & TCP_ACK_FLAG) this.#freeByGuestReset(); // the guest refused the forwarded connection
      return;
    }
    if (!(f & TCP_SYN) || !(f & TCP_ACK_FLAG)) return; // simultaneous open is not offered to guests
    this.acceptSynOptions(seg);
    this.sndUna = seg.ack;
    this.sndWnd = seg.window << this.sndWscale;
    this.state = TcpState.ESTABLISHED;
    this.#rtoDone();
    this.#sampleHandshake();
    this.#retries = 0;
    this.#sendAck();
    this.#resumeHost();
    this.trySend();
  }

  #processAck(seg: TcpHeader, segLen: number): void {
    const ack = seg.ack;
    const newWnd = seg.window << this.sndWscale;
    const flight = seqDiff(this.sndNxt, this.sndUna);
    if (this.sackOk && seg.sackCount > 0) this.#sack.record(seg, this.sndUna, this.sndMax);
    if (seqGt(ack, this.sndUna)) {
      const acked = seqDiff(ack, this.sndUna);
      let dataAcked = acked;
      if (this.#finSent && seqGt(ack, this.#finSeq)) dataAcked--; // the FIN's sequence number
      this.queue.consume(dataAcked);
      this.sndUna = ack;
      if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
      // RTT: timestamps when both sides use them (RFC 7323 §4.1), else one timed segment (Karn)
      if (this.tsOk && seg.hasTimestamps && seg.tsEcr !== 0) {
        this.rtt.sample(((this.#tsNow() - seg.tsEcr) >>> 0) & 0x7fffffff);
      } else if (this.#timing && seqGt(ack, this.#timedSeq)) {
        this.rtt.sample(this.stack.wheel.now - this.#timedAt);
        this.#timing = false;
      }
      if (this.cc.inRecovery) {
        if (seqGe(ack, this.cc.recover)) this.cc.exitRecovery(seqDiff(this.sndNxt, this.sndUna));
        else {
          this.cc.onPartialAck(acked);
          this.#retransmit(this.sndUna);
        }
      } else this.cc.onAck(acked);
      this.#dupAcks = 0;
      this.#retries = 0;
      this.#persistBackoff = 0;
      this.#sack.prune(this.sndUna);
      if (this.sndUna === this.sndNxt) this.#rtoDone();
      else this.#armRetransmitTimer();
      this.#ackedFin();
      if (this.#freed) return;
      if (this.#hostPaused && this.queue.length < this.#sendLimit() / 2 && !this.#outOfBudget()) {
        this.#resumeHost();
      }
    } else if (ack === this.sndUna && segLen === 0 && flight > 0 && !this.#finOnlyInFlight()) {
      // RFC 5681 §2 duplicate ACK; with SACK, a window change does not disqualify it (the SACK
      // blocks prove new data arrived)
      if (newWnd === this.sndWnd || seg.sackCount > 0) this.#dupAcks++;
      if (!this.cc.inRecovery && this.#lossDetected()) {
        this.cc.enterRecovery(flight, this.sndNxt);
        this.#highRxt = this.sndUna;
        this.#retransmit(this.sndUna);
      } else if (this.cc.inRecovery) {
        this.cc.onDupAckInRecovery();
        // RFC 8985 (RACK) in spirit: the guest keeps SACKing newer data but not the hole we resent a
        // reordering window ago, so that retransmission was lost too: send it again instead of waiting
        // for a 200 ms RTO
        if (this.sackOk && this.stack.host.now() - this.#rxtAt > Math.max(2 * this.rtt.srtt, 4)) {
          this.#retransmit(this.sndUna);
        }
      }
    }
    // RFC 6675-style: in recovery, each ACK lets us fill holes the guest's SACK blocks reveal
    if (this.cc.inRecovery && this.sackOk) this.#retransmitHoles(2);
    // window update (RFC 9293 §3.10.7.4, fifth check)
    if (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack))) {
      this.sndWnd = newWnd;
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
    }
  }

  /**
   * Loss of SND.UNA's segment: three duplicate ACKs (RFC 5681 §3.2), or with SACK, at least three
   * segments' worth of data SACKed above it (RFC 6675 §4 IsLost with DupThresh = 3).
   */
  #lossDetected(): boolean {
    if (!seqGt(this.sndUna, this.cc.recover - 1) && this.cc.recover !== 0) {
      // RFC 6582 §3.2 step 1: no new recovery for losses of the previous window
      if (seqLt(this.sndUna, this.cc.recover)) return false;
    }
    // RFC 5827 early retransmit: with fewer than four segments outstanding and nothing new to send,
    // three duplicate ACKs can never come, so the threshold drops to (outstanding segments − 1)
    const outstanding = Math.ceil(seqDiff(this.sndNxt, this.sndUna) / this.mss);
    const sentData = seqDiff(this.sndNxt, this.sndUna) -
      (this.#finSent && seqGt(this.sndNxt, this.#finSeq) ? 1 : 0);
    const canSendNew = this.queue.length > sentData &&
      Math.min(this.sndWnd, this.cc.cwnd) > seqDiff(this.sndNxt, this.sndUna);
    const threshold = outstanding < 4 && !canSendNew ? Math.max(1, outstanding - 1) : 3;
    if (this.#dupAcks >= threshold) return true;
    if (!this.sackOk || this.#sack.empty) return false;
    return Math.ceil(this.#sack.bytes / this.mss) >= threshold;
  }

  #finOnlyInFlight(): boolean {
    return this.#finSent && seqDiff(this.sndNxt, this.sndUna) === 1;
  }

  /** State changes once our FIN is acknowledged. */
  #ackedFin(): void {
    if (!this.#finSent || !seqGt(this.sndUna, this.#finSeq)) return;
    switch (this.state) {
      case TcpState.FIN_WAIT_1:
        this.state = TcpState.FIN_WAIT_2;
        this.#armRto(FIN_WAIT_2_TIMEOUT_MS);
        break;
      case TcpState.CLOSING:
        this.#enterTimeWait();
        break;
      case TcpState.LAST_ACK:
        this.#free(false);
        break;
    }
  }

  #receiveData(seq: number, data: Uint8Array, wnd: number): void {
    // trim what we already have, and what lies beyond the window
    if (seqLt(seq, this.rcvNxt)) {
      const skip = seqDiff(this.rcvNxt, seq);
      data = data.subarray(skip);
      seq = this.rcvNxt;
    }
    const room = seqDiff(seqAdd(this.rcvNxt, wnd), seq);
    if (data.length > room) data = data.subarray(0, room);
    if (data.length === 0) return;
    if (seq === this.rcvNxt) {
      this.#deliver(data);
      this.rcvNxt = seqAdd(this.rcvNxt, data.length);
      if (this.#ooo && !this.#ooo.empty) {
        this.rcvNxt = this.#ooo.drain(this.rcvNxt, (d) => this.#deliver(d));
        this.#sendAck(); // RFC 5681 §4.2: ACK at once when a hole is filled
        return;
      }
      // RFC 9293 §3.8.6.3 / RFC 5681 §4.2: ACK at least every second full-sized segment
      if (++this.#pendingAcks >= 2) this.#sendAck();
      else if (!this.#ackTimer.armed) {
        this.stack.wheel.arm(this.#ackTimer, this.stack.wheel.now + DELAYED_ACK_MS);
      }
      return;
    }
    // out of order: hold it and send a duplicate ACK with SACK at once
    this.#ooo ??= new Reassembly(this.#receiveBuffer, 64, this.stack.memory);
    if (!this.#ooo.insert(this.rcvNxt, seq, data)) this.stack.counters.drop("tcp-reassembly-full");
    this.#sendAck();
  }

  #deliver(data: Uint8Array): void {
    if (!this.host || this.#hostClosed) return;
    this.stack.counters.tcpBytesFromGuest += data.length;
    this.host.write(data);
    this.#chargeHostBacklog();
  }

  /** Keeps the tenant's budget charged for the guest's bytes still waiting in the host socket's queue. */
  #chargeHostBacklog(): void {
    const now = this.host && !this.#hostClosed ? this.host.bufferedAmount : 0;
    const d = now - this.#hostCharged;
    if (d > 0) this.stack.memory.charge(d);
    else if (d < 0) this.stack.memory.credit(-d);
    this.#hostCharged = now;
  }

  #receiveFin(): void {
    this.rcvNxt = seqAdd(this.rcvNxt, 1);
    // the guest finished sending: half-close toward the host peer
    if (this.host && !this.#hostClosed) this.host.end();
    switch (this.state) {
      case TcpState.ESTABLISHED:
        this.state = TcpState.CLOSE_WAIT;
        break;
      case TcpState.FIN_WAIT_1:
        // our FIN not yet acknowledged (else #ackedFin moved us to FIN-WAIT-2)
        this.state = TcpState.CLOSING;
        break;
      case TcpState.FIN_WAIT_2:
        this.#enterTimeWait();
        break;
    }
    this.#sendAck();
  }

  #enterTimeWait(): void {
    this.state = TcpState.TIME_WAIT;
    this.stack.wheel.cancel(this.#ackTimer);
    this.#armRto(TIME_WAIT_MS);
  }

  // ───────────────────────── sending ─────────────────────────

  /** Sends what the windows, the congestion window and the transport allow. */
  trySend(): void {
    if (this.#freed) return;
    const s = this.state;
    if (
      s !== TcpState.ESTABLISHED && s !== TcpState.CLOSE_WAIT && s !== TcpState.FIN_WAIT_1 &&
      s !== TcpState.CLOSING &&
      s !== TcpState.LAST_ACK
    ) return;
    const tcp = this.owner;
    for (;;) {
      const sentData = seqDiff(this.sndNxt, this.sndUna) -
        (this.#finSent && seqGt(this.sndNxt, this.#finSeq) ? 1 : 0);
      const unsent = this.queue.length - sentData;
      if (unsent <= 0) break;
      if (tcp.outputCongested()) {
        tcp.blocked.add(this);
        return;
      }
      const inFlight = seqDiff(this.sndNxt, this.sndUna);
      const can = Math.min(this.sndWnd, this.cc.cwnd) - inFlight;
      if (can <= 0) break;
      let len = Math.min(this.mss, unsent, can);
      // sender-side silly window avoidance (RFC 9293 §3.8.6.2.1): no small segment while a full one
      // could follow and data is in flight
      if (len < this.mss && len < unsent && inFlight > 0) break;
      if (this.#skipSacked(this.sndNxt)) continue;
      len = this.#sack.until(this.sndNxt, len);
      if (len <= 0) break; // never a data segment without data
      this.#sendData(this.sndNxt, len, len === unsent);
      if (!this.#timing && !this.tsOk) {
        this.#timing = true;
        this.#timedSeq = this.sndNxt;
        this.#timedAt = this.stack.wheel.now;
      }
      this.sndNxt = seqAdd(this.sndNxt, len);
      if (!this.#rtoTimer.armed) this.#armRetransmitTimer();
    }
    const sentData = seqDiff(this.sndNxt, this.sndUna) -
      (this.#finSent && seqGt(this.sndNxt, this.#finSeq) ? 1 : 0);
    if (this.#hostEof && !this.#finSent && sentData >= this.queue.length) this.#sendFin();
    else if (
      this.#hostEof && this.#finSent && this.sndNxt === this.#finSeq && sentData >= this.queue.length
    ) this.#sendFin(); // retransmitting the FIN after go-back-N
    // zero window with data waiting and nothing in flight: persist (RFC 9293 §3.8.6.1)
    if (this.sndWnd === 0 && this.queue.length > 0 && this.sndNxt === this.sndUna && !this.#rtoTimer.armed) {
      this.#armRto(Math.min(this.rtt.current() * 2 ** this.#persistBackoff, 60_000));
    }
  }

  #sendFin(): void {
    if (this.state === TcpState.ESTABLISHED) this.state = TcpState.FIN_WAIT_1;
    else if (this.state === TcpState.CLOSE_WAIT) this.state = TcpState.LAST_ACK;
    this.#finSent = true;
    this.#finSeq = this.sndNxt;
    this.#emit(TCP_FIN | TCP_ACK_FLAG, this.sndNxt, 0, 0, false);
    this.sndNxt = seqAdd(this.sndNxt, 1);
    if (!this.#rtoTimer.armed) this.#armRto(this.rtt.current());
  }

  #sendData(seq: number, len: number, push: boolean): void {
    this.#emit(TCP_ACK_FLAG | (push ? TCP_PSH : 0), seq, seqDiff(seq, this.sndUna), len, false);
  }

  /** Retransmits one segment at `seq` (data, or the FIN). */
  #retransmit(seq: number): void {
    this.#timing = false; // Karn: never time a retransmitted segment
    const off = seqDiff(seq, this.sndUna);
    if (this.#finSent && seq === this.#finSeq) {
      this.#emit(TCP_FIN | TCP_ACK_FLAG, seq, 0, 0, false);
      return;
    }
    const avail = this.queue.length - off;
    if (avail <= 0) return;
    const len = this.#sack.until(seq, Math.min(this.mss, avail));
    this.#emit(TCP_ACK_FLAG, seq, off, len, false);
    if (seq === this.sndUna) this.#rxtAt = this.stack.host.now();
    this.stack.counters.tcpRetransmits++;
    if (seqGt(seqAdd(seq, len), this.#highRxt)) this.#highRxt = seqAdd(seq, len);
  }

  /** In SACK recovery: retransmit up to `n` segments from the holes after what was already retransmitted. */
  #retransmitHoles(n: number): void {
    if (this.#sack.empty) return;
    const highestSacked = this.#sack.highest;
    let seq = seqGt(this.#highRxt, this.sndUna) ? this.#highRxt : this.sndUna;
    while (n > 0 && seqLt(seq, highestSacked) && seqLt(seq, this.sndNxt)) {
      if (this.#skipSacked(seq)) {
        seq = this.#sack.endOfRangeAt(seq);
        continue;
      }
      this.#retransmit(seq);
      seq = this.#highRxt;
      n--;
    }
  }

  /** True when `seq` lies inside a SACKed range; a new transmission then skips what the guest holds. */
  #skipSacked(seq: number): boolean {
    const end = this.#sack.endOfRangeAt(seq);
    if (end < 0) return false;
    if (seq === this.sndNxt) this.sndNxt = end;
    return true;
  }

  /** Timestamp clock: milliseconds (RFC 7323 §5.4 allows 1 ms to 1 s per tick). */
  #tsNow(): number {
    return Math.floor(this.stack.wheel.now) >>> 0;
  }

  /** The window to advertise now, in bytes (before scaling). */
  #receiveWindow(): number {
    this.#chargeHostBacklog();
    const buffered = this.#hostCharged + (this.#ooo?.bytes ?? 0);
    let wnd = Math.max(0, this.#receiveBuffer - buffered);
    // the tenant's budget bounds what all its flows may be sent at once; a spent budget still leaves each
    // flow a small window, so that no flow waits forever for others that wait for it
    wnd = Math.min(wnd, Math.max(GUARANTEED_RING, this.stack.memory.available));
    wnd = Math.min(wnd, 65535 * 2 ** this.rcvWscale);
    // never shrink the window already offered (RFC 9293 §3.8.6.2.2)
    const offered = seqDiff(this.#rcvAdvertisedEnd, this.rcvNxt);
    if (seqGt(this.#rcvAdvertisedEnd, this.rcvNxt) && offered > wnd) wnd = offered;
    return wnd;
  }

  #sendAck(): void {
    if (this.#freed) return;
    this.#emit(TCP_ACK_FLAG, this.sndNxt, 0, 0, false);
  }

  /**
   * Builds and sends one segment: header fields from the connection, `len` payload bytes copied from
   * the send queue at `queueOffset` straight into the outgoing frame.
   */
  #emit(flags: number, seq: number, queueOffset: number, len: number, syn: boolean): void {
    const s = this.stack;
    const end = seqAdd(seq, len + (flags & (TCP_SYN | TCP_FIN) ? 1 : 0));
    if (seqGt(end, this.sndMax)) this.sndMax = end;
    const h = this.owner.outHeader;
    h.srcPort = this.localPort;
    h.dstPort = this.guestPort;
    h.seq = seq;
    h.ack = flags & TCP_ACK_FLAG ? this.rcvNxt : 0;
    h.flags = flags;
    h.urgent = 0;
    if (!syn) {
      h.mss = -1;
      h.windowScale = -1;
      h.sackPermitted = false;
      h.hasTimestamps = this.tsOk;
    }
    if (h.hasTimestamps) {
      h.tsVal = this.#tsNow();
      h.tsEcr = flags & TCP_ACK_FLAG ? this.#tsRecent : 0;
    }
    h.sackCount = !syn && this.sackOk && this.#ooo && !this.#ooo.empty
      ? this.#ooo.sackBlocks(h.sackBlocks, h.hasTimestamps ? 3 : 4)
      : 0;
    const wnd = syn ? Math.min(this.#receiveWindow(), 65535) : this.#receiveWindow();
    h.window = syn ? wnd : Math.min(65535, Math.floor(wnd / 2 ** this.rcvWscale));
    const right = seqAdd(this.rcvNxt, syn ? wnd : h.window * 2 ** this.rcvWscale);
    if (seqGt(right, this.#rcvAdvertisedEnd) || this.#rcvAdvertisedEnd === 0) this.#rcvAdvertisedEnd = right;
    const hl = tcpHeaderLength(h);
    const pseudo = pseudoHeaderSumV4(this.localIp, this.guestIp, IPPROTO_TCP, hl + len);
    // a data segment is built next to the send ring and its payload copied within that one buffer: the copy
    // into the shared tx buffer needs a view per segment, which was half of what the relay allocated
    const area = len > 0 ? this.queue.frameArea(L4_OFFSET + hl + Math.max(len, ETH_PAD_ROOM)) : null;
    if (area) {
      const { buf, off } = area;
      this.queue.copyToFrame(queueOffset, len, off + L4_OFFSET + hl);
      emitTcp(h, buf, off + L4_OFFSET, len, pseudo);
      s.sendIpv4In(buf, off, this.localIp, this.guestIp, IPPROTO_TCP, hl + len);
    } else {
      if (len > 0) this.queue.copyOut(queueOffset, len, s.tx, L4_OFFSET + hl);
      emitTcp(h, s.tx, L4_OFFSET, len, pseudo);
      s.sendIpv4(this.localIp, this.guestIp, IPPROTO_TCP, hl + len);
    }
    if (flags & TCP_ACK_FLAG) {
      this.#lastAckSent = this.rcvNxt;
      this.#pendingAcks = 0;
      if (this.#ackTimer.armed) s.wheel.cancel(this.#ackTimer);
    }
  }

  // ───────────────────────── timers ─────────────────────────

  #armRto(ms: number): void {
    this.stack.wheel.arm(this.#rtoTimer, this.stack.wheel.now + ms);
  }

  /**
   * Arms the timer for data in flight: a tail loss probe after PTO = 2·SRTT (RFC 8985 §7) when
   * possible — a loss at the end of a flight then draws SACKs and fast recovery instead of waiting a
   * full RTO — else the RTO.
   */
  #armRetransmitTimer(): void {
    if (this.rtt.hasSample && this.#retries === 0) {
      this.#probeArmed = true;
      this.#armRto(Math.min(Math.max(2 * this.rtt.srtt, 10), this.rtt.current()));
    } else {
      this.#probeArmed = false;
      this.#armRto(this.rtt.current());
    }
  }

  /** RFC 8985 §7.3: send one new segment if allowed, else retransmit the last one. */
  #sendProbe(): void {
    this.stack.counters.tcpTailProbes++;
    const sentData = seqDiff(this.sndNxt, this.sndUna) -
      (this.#finSent && seqGt(this.sndNxt, this.#finSeq) ? 1 : 0);
    const unsent = this.queue.length - sentData;
    if (unsent > 0 && this.sndWnd > seqDiff(this.sndNxt, this.sndUna) && !this.#finSent) {
      const len = Math.min(this.mss, unsent);
      this.#sendData(this.sndNxt, len, len === unsent);
      this.sndNxt = seqAdd(this.sndNxt, len);
      return;
    }
    if (this.#finSent && seqGt(this.sndNxt, this.#finSeq)) {
      this.#emit(TCP_FIN | TCP_ACK_FLAG, this.#finSeq, 0, 0, false);
      return;
    }
    const last = seqDiff(this.sndNxt, this.sndUna);
    this.#retransmit(seqAdd(this.sndUna, Math.max(0, last - Math.min(this.mss, last))));
  }

  #rtoDone(): void {
    this.stack.wheel.cancel(this.#rtoTimer);
  }

  #onTimer(_now: number): void {
    if (this.#freed) return;
    switch (this.state) {
      case TcpState.CONNECTING:
        // the host never answered: the guest gets a reset after a bounded wait
        this.stack.log("info", "host connect timed out", { tenant: this.stack.tenant });
        this.#free(true);
        return;
      case TcpState.SYN_RECEIVED:
      case TcpState.SYN_SENT:
        if (++this.#retries > MAX_SYN_RETRIES) return this.#free(true);
        this.rtt.onTimeout();
        this.#sendSyn(this.state === TcpState.SYN_RECEIVED);
        this.#armRto(this.rtt.current());
        return;
      case TcpState.TIME_WAIT:
      case TcpState.FIN_WAIT_2:
        return this.#free(false);
    }
    const flight = seqDiff(this.sndNxt, this.sndUna);
    if (flight === 0) {
      if (this.sndWnd === 0 && this.queue.length > 0) {
        // zero-window probe, as Linux does: an old sequence number draws an ACK with the window
        this.#emit(TCP_ACK_FLAG, seqAdd(this.sndUna, -1 >>> 0), 0, 0, false);
        this.#persistBackoff = Math.min(this.#persistBackoff + 1, 10);
        this.#armRto(Math.min(this.rtt.current() * 2 ** this.#persistBackoff, 60_000));
      }
      return;
    }
    if (this.#probeArmed) {
      this.#probeArmed = false;
      // in recovery the probe re-sends the hole at SND.UNA: its retransmission was probably lost and no
      // further ACK will say so (RFC 8985 §7: a probe instead of an RTO's cwnd collapse)
      if (this.cc.inRecovery) {
        this.stack.counters.tcpTailProbes++;
        this.#retransmit(this.sndUna);
      } else this.#sendProbe();
      this.#armRto(this.rtt.current());
      return;
    }
    // RFC 6298 (5.4)–(5.6) and RFC 5681 §3.1: back off, collapse cwnd, resend from SND.UNA
    if (++this.#retries > MAX_RETRIES) {
      this.stack.log("info", "guest stopped acknowledging; connection aborted", {
        tenant: this.stack.tenant,
      });
      return this.#free(true);
    }
    this.stack.counters.tcpTimeouts++;
    this.rtt.onTimeout();
    this.cc.onTimeout(flight);
    this.#dupAcks = 0;
    this.#timing = false;
    // the SACK scoreboard is kept (Linux does too): a receiver that reneges is rare, and resending
    // what the guest already holds would slow recovery after every timeout
    this.#highRxt = this.sndUna;
    const finOutstanding = this.#finSent && seqGe(this.#finSeq, this.sndUna);
    this.sndNxt = this.sndUna;
    if (finOutstanding && this.sndUna === this.#finSeq) {
      this.#emit(TCP_FIN | TCP_ACK_FLAG, this.#finSeq, 0, 0, false);
      this.sndNxt = seqAdd(this.#finSeq, 1);
    } else {
      this.#retransmit(this.sndUna);
      const sent = Math.min(this.mss, this.queue.length);
      this.sndNxt = seqAdd(this.sndUna, sent);
      if (finOutstanding && sent === this.queue.length) {
        // the FIN goes again once the data before it is out
        this.#emit(TCP_FIN | TCP_ACK_FLAG, this.#finSeq, 0, 0, false);
        this.sndNxt = seqAdd(this.#finSeq, 1);
      }
    }
    this.#armRto(this.rtt.current());
  }

  // ───────────────────────── host side (TcpHandlers) ─────────────────────────

  onData(data: Uint8Array): void {
    if (this.#freed) return;
    this.queue.push(data);
    this.#received(data.length);
  }

  /**
   * The send queue's free space: the host socket reads straight into it. Near the end of the tenant's
   * budget a read asks for only what is left (a little more at least, so a read is worth its call).
   */
  readBuffer(): Uint8Array {
    // the ring grows only while the tenant's budget has room for it
    return this.queue.writable(
      this.stack.memory.available >= HOST_READ_BYTES ? HOST_READ_BYTES : MIN_HOST_READ,
    );
  }

  onRead(n: number): void {
    if (this.#freed) return;
    this.queue.commit(n);
    this.#received(n);
  }

  #received(n: number): void {
    this.stack.counters.tcpBytesToGuest += n;
    if (!this.#hostPaused && (this.queue.length >= this.#sendLimit() || this.#outOfBudget())) {
      this.#hostPaused = true;
      this.host?.pause();
      if (this.#outOfBudget()) this.#waitForBudget();
    }
    this.trySend();
  }

  /**
   * The ring is (nearly) full and the tenant's budget cannot pay for it to grow. A ring below
   * {@linkcode GUARANTEED_RING} may always grow to it: every flow keeps moving (slowly) however many
   * others hold the budget, so the overshoot is bounded by the tenant's flow limit.
   */
  #outOfBudget(): boolean {
    return this.stack.memory.available <= 0 && this.queue.allocated >= GUARANTEED_RING &&
      this.queue.allocated - this.queue.length < MIN_HOST_READ;
  }

  /** Paused by the tenant's budget rather than this flow's own limit: ask to be told when room comes back. */
  #waitForBudget(): void {
    this.stack.memory.waiting = true;
    this.owner.budgetBlocked.add(this);
  }

  /** The tenant's budget has room again (see {@linkcode TcpService.budgetFreed}). */
  budgetRoom(): void {
    if (this.#freed || !this.#hostPaused) return;
    if (this.#outOfBudget()) this.#waitForBudget();
    else if (this.queue.length < this.#sendLimit()) this.#resumeHost();
  }

  /**
   * Host data held before reads pause: two of the guest's windows (one in flight, one ready to go), as
   * Linux sizes its send buffer from the window; a fixed 1 MiB per flow would hold a gigabyte for a
   * thousand guests with 64 KiB windows, and the GC pauses of such a heap stall every tenant.
   */
  #sendLimit(): number {
    return Math.min(this.#sendBuffer, Math.max(2 * this.sndWnd, MIN_SEND_BUFFER));
  }

  onEnd(): void {
    if (this.#freed) return;
    this.#hostEof = true;
    this.trySend();
  }

  onError(code: string): void {
    if (this.#freed) return;
    this.#hostClosed = true;
    if (this.state === TcpState.CONNECTING) {
      this.owner.connectFailed(this, code);
      return;
    }
    this.stack.log("debug", "host socket error", { tenant: this.stack.tenant, code, state: this.stateName });
    // a host reset (or any failure) becomes a reset toward the guest
    this.#free(true);
  }

  onClose(): void {
    this.#hostClosed = true;
    if (this.#freed) return;
    if (this.state === TcpState.CONNECTING || this.state === TcpState.SYN_SENT) this.#free(true);
    else if (!this.#hostEof) {
      // closed without FIN or error: treat as EOF
      this.#hostEof = true;
      this.trySend();
    }
  }

  onDrain(): void {
    if (this.#freed) return;
    // the host took our backlog: tell the guest its window reopened
    this.#chargeHostBacklog();
    this.#sendAck();
  }

  #resumeHost(): void {
    this.#hostPaused = false;
    this.host?.resume();
  }

  // ───────────────────────── teardown ─────────────────────────

  /**
   * Frees the connection. With `reset`, the guest gets a RST (when synchronized or connecting) and the
   * host peer a reset too.
   */
  /**
   * The guest reset the connection: the host peer gets a reset, the guest nothing — a reset is never
   * answered with a reset (RFC 9293 §3.10.7.4).
   */
  #freeByGuestReset(): void {
    this.state = TcpState.CLOSED;
    this.#free(true);
  }

  #free(reset: boolean): void {
    if (this.#freed) return;
    if (reset && this.state !== TcpState.CLOSED && this.state !== TcpState.TIME_WAIT) {
      if (this.state === TcpState.CONNECTING) {
        this.owner.reset(
          this.guestIp,
          this.localIp,
          this.guestPort,
          this.localPort,
          seqAdd(this.irs, 0),
          0,
          TCP_SYN,
          0,
        );
      } else if (this.state !== TcpState.SYN_SENT) {
        this.#emit(TCP_RST | TCP_ACK_FLAG, this.sndNxt, 0, 0, false);
      }
    }
    this.#freed = true;
    this.state = TcpState.CLOSED;
    this.stack.wheel.cancel(this.#rtoTimer);
    this.stack.wheel.cancel(this.#ackTimer);
    if (this.host && !this.#hostClosed) this.host.destroy(reset);
    this.#hostClosed = true;
    this.stack.memory.credit(this.#hostCharged);
    this.#hostCharged = 0;
    this.queue.clear();
    this.#ooo?.clear();
    this.onFree(this);
  }

  /** What `ss -ti` would show of this connection (admin API's flows, debugging). */
  inspect(): Record<string, unknown> {
    return {
      state: this.stateName,
      guest: `${ipv4ToString(this.guestIp)}:${this.guestPort}`,
      remote: `${ipv4ToString(this.localIp)}:${this.localPort}`,
      bytesFromGuest: this.rcvNxt === 0 ? 0 : seqDiff(this.rcvNxt, this.irs) - 1,
      hostBacklog: this.host?.bufferedAmount ?? 0,
      bytesInFlight: seqDiff(this.sndNxt, this.sndUna),
      sndMaxAhead: seqDiff(this.sndMax, this.sndUna),
      bytesQueued: this.queue.length,
      guestWindow: this.sndWnd,
      cwnd: this.cc.cwnd,
      ssthresh: this.cc.ssthresh === Number.MAX_SAFE_INTEGER ? null : this.cc.ssthresh,
      inRecovery: this.cc.inRecovery,
      srttMs: Math.round(this.rtt.srtt * 10) / 10,
      rtoMs: Math.round(this.rtt.current()),
      retries: this.#retries,
      timerArmed: this.#rtoTimer.armed,
      reassemblyBytes: this.#ooo?.bytes ?? 0,
      hostPaused: this.#hostPaused,
      hostEof: this.#hostEof,
      finSent: this.#finSent,
      hostClosed: this.#hostClosed,
    };
  }

  /** A throw in this connection's code (a host callback, a timer): this connection alone is reset. */
  onFault(err: unknown, where: string): void {
    this.stack.flowFault(this, err, where);
  }

  /** Aborts from outside (tenant closing, shutdown): RST to the guest, host socket destroyed. */
  abort(): void {
    this.#free(true);
  }
}
