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
 *   every second full segment — the segments of one read of the guest's link counting as one, as a GRO
 *   unit does for Linux — and immediately for out-of-order data (RFC 5681 §4.2), with SACK blocks.
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
import { rangeView } from "../../wire/bytes.ts";
import { TCP_ACK_FLAG, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type TcpHeader } from "../../wire/tcp.ts";
import type { HostIcmpError, TcpHandlers } from "../../host/host.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "./seq.ts";
import { Reassembly } from "./reassembly.ts";
import {
  CONNECT_TIMEOUT_MS,
  DEFAULT_MSS,
  DELAYED_ACK_MS,
  FIN_WAIT_2_TIMEOUT_MS,
  FIRST_HOST_READ,
  GRO_MAX_BYTES,
  GUARANTEED_RING,
  HOST_READ_BYTES,
  MIN_HOST_READ,
  MIN_SEND_BUFFER,
  MIN_SND_MSS,
  OUR_WSCALE,
  TcpState,
  TIME_WAIT_MS,
} from "./state.ts";

import { TcpSender } from "./tcp_sender.ts";
import { contained } from "../containment.ts";
import { INITIAL_WINDOW_SEGMENTS } from "./congestion.ts";

export class TcpConn extends TcpSender implements TcpHandlers {
  #guestMss = DEFAULT_MSS;
  #hostClosed = false;
  #hostPaused = false;

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
    if (this.tsOk) this.tsRecent = seg.tsVal;
    this.#updateMss();
    // the window in a SYN is never scaled (RFC 7323 §2.2)
    this.sndWnd = seg.window;
    this.sndWl1 = seg.seq;
    this.sndWl2 = seg.ack;
  }

  #updateMss(): void {
    const ours = this.stack.plan.mtu - this.path.ipHeaderLength - 20;
    this.mss = Math.max(MIN_SND_MSS, Math.min(this.#guestMss, ours) - (this.tsOk ? 12 : 0));
    this.cc.mss = this.mss;
    if (this.cc.cwnd < this.mss) this.cc.setWindow(this.mss);
  }

  /** Bounds the host dial: the guest gets a reset after {@linkcode CONNECT_TIMEOUT_MS}. */
  startConnectTimer(): void {
    this.armRto(CONNECT_TIMEOUT_MS);
  }

  /** Host dial succeeded: answer the guest's SYN. */
  onConnect(): void {
    if (this.state !== TcpState.CONNECTING) return;
    this.state = TcpState.SYN_RECEIVED;
    this.cc.setWindow(INITIAL_WINDOW_SEGMENTS * this.mss);
    this.sendSyn(true);
    this.armRto(this.rtt.current());
  }

  /** Port forward: send our SYN to the guest. */
  startActiveOpen(): void {
    this.state = TcpState.SYN_SENT;
    this.sendSyn(false);
    this.armRto(this.rtt.current());
  }

  protected sendSyn(withAck: boolean): void {
    const h = this.owner.outHeader;
    h.mss = this.stack.plan.mtu - this.path.ipHeaderLength - 20;
    if (withAck) {
      h.windowScale = this.sndWscale > 0 || this.rcvWscale > 0 ? this.rcvWscale : -1;
      h.sackPermitted = this.sackOk;
      h.hasTimestamps = this.tsOk;
    } else {
      h.windowScale = OUR_WSCALE;
      h.sackPermitted = true;
      h.hasTimestamps = true;
    }
    this.emit(TCP_SYN | (withAck ? TCP_ACK_FLAG : 0), this.iss, 0, 0, true);
    this.sndNxt = seqAdd(this.iss, 1);
    // the handshake is the first RTT sample, as in Linux: without it a busy relay's first flight runs
    // on the 1 s initial RTO; Karn's rule excludes a retransmitted SYN
    this.timing = this.retries === 0;
    this.timedSeq = this.iss;
    this.timedAt = this.stack.wheel.now;
  }

  /** RTT sample from the handshake, if its SYN was not retransmitted (RFC 6298 §3, Karn). */
  #sampleHandshake(): void {
    if (this.timing) this.rtt.sample(this.stack.wheel.now - this.timedAt);
    this.timing = false;
  }

  // ───────────────────────── segment arrival ─────────────────────────

  /** A segment for this connection (RFC 9293 §3.10.7). `buf` holds the payload at seg.payloadOffset. */
  input(seg: TcpHeader, buf: Uint8Array): void {
    if (this.isFreed) return;
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
    const wnd = this.receiveWindow();
    if (this.#inputPredicted(seg, buf, payloadLen, wnd)) return;
    const segLen = payloadLen + (f & TCP_SYN ? 1 : 0) + (f & TCP_FIN ? 1 : 0);
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
        this.sendAck();
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
      } else this.sendAck();
      return;
    }
    // fourth: SYN in a synchronized state → challenge ACK (RFC 5961 §4); in SYN-RECEIVED a
    // retransmitted SYN means our SYN-ACK was lost
    if (f & TCP_SYN) {
      if (this.state === TcpState.SYN_RECEIVED && seg.seq === this.irs) {
        this.stack.counters.tcpSynAckRetransmits++;
        this.sendSyn(true);
      } else this.sendAck();
      return;
    }
    // fifth: ACK
    if (!(f & TCP_ACK_FLAG)) return;
    if (this.tsOk && seg.hasTimestamps && seqLe(seg.seq, this.lastAckSent)) this.tsRecent = seg.tsVal;
    if (this.state === TcpState.SYN_RECEIVED) {
      if (seqGt(seg.ack, this.sndUna) && seqLe(seg.ack, this.sndNxt)) {
        this.state = TcpState.ESTABLISHED;
        this.sndUna = seg.ack;
        this.sndWnd = seg.window << this.sndWscale;
        this.sndWl1 = seg.seq;
        this.sndWl2 = seg.ack;
        this.rtoDone();
        this.#sampleHandshake();
        this.retries = 0;
      } else {
        this.#resetFor(seg);
        return;
      }
    }
    if (seqGt(seg.ack, this.sndMax)) {
      // acknowledges something not yet sent
      this.sendAck();
      return;
    }
    this.#processAck(seg, segLen);
    if (this.isFreed) return;
    // seventh: segment text, in ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2
    if (
      payloadLen > 0 && !stale &&
      (this.state === TcpState.ESTABLISHED || this.state === TcpState.FIN_WAIT_1 ||
        this.state === TcpState.FIN_WAIT_2)
    ) {
      // no PSH, no FIN: the guest's write goes on in the next segments (RFC 9293 §3.9.1.2)
      const more = (f & (TCP_PSH | TCP_FIN)) === 0;
      this.#receiveData(seg.seq, rangeView(buf, seg.payloadOffset, seg.payloadEnd), wnd, more);
    } else if (stale) {
      this.sendAck();
    }
    // eighth: FIN, only once everything before it has arrived
    if ((f & TCP_FIN) && !stale && seqAdd(seg.seq, payloadLen) === this.rcvNxt) this.#receiveFin();
    this.trySend();
  }

  /**
   * Header prediction (Jacobson's, as Linux's `tcp_rcv_established` fast path): the next in-order data
   * segment of an established flow — ACK and maybe PSH, acknowledging nothing new, the same window, no
   * SACK, nothing out of order held — passes every check of RFC 9293 §3.10.7.4 and changes only the
   * receive side and the window-update marks. Only that runs; anything else, false, takes the full path.
   */
  #inputPredicted(seg: TcpHeader, buf: Uint8Array, payloadLen: number, wnd: number): boolean {
    if (
      this.state !== TcpState.ESTABLISHED || (seg.flags & ~TCP_PSH) !== TCP_ACK_FLAG ||
      seg.seq !== this.rcvNxt || seg.ack !== this.sndUna || seg.sackCount > 0 || payloadLen === 0 ||
      payloadLen > wnd || (seg.window << this.sndWscale) !== this.sndWnd || this.cc.inRecovery ||
      (this.ooo !== null && !this.ooo.empty)
    ) return false;
    if (this.tsOk && seg.hasTimestamps && seqLe(seg.seq, this.lastAckSent)) this.tsRecent = seg.tsVal;
    // the window update's marks (fifth check): SND.WL1 ≤ SEG.SEQ = RCV.NXT and SND.WL2 ≤ SEG.ACK = SND.UNA
    this.sndWl1 = seg.seq;
    this.sndWl2 = seg.ack;
    this.#receiveData(
      seg.seq,
      rangeView(buf, seg.payloadOffset, seg.payloadEnd),
      wnd,
      (seg.flags & TCP_PSH) === 0,
    );
    // nothing acknowledged, no new window: only data waiting (or the host's end) may have a send to make
    if (this.queue.length > 0 || this.hostEof) this.trySend();
    return true;
  }

  /** The reset RFC 9293 §3.10.7 prescribes in answer to an unacceptable segment. */
  #resetFor(seg: TcpHeader): void {
    this.owner.reset(
      this.path,
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
    this.rtoDone();
    this.#sampleHandshake();
    this.retries = 0;
    this.sendAck();
    this.#resumeHost();
    this.trySend();
  }

  #processAck(seg: TcpHeader, segLen: number): void {
    const ack = seg.ack;
    const newWnd = seg.window << this.sndWscale;
    const flight = seqDiff(this.sndNxt, this.sndUna);
    if (this.sackOk && seg.sackCount > 0) this.sack.record(seg, this.sndUna, this.sndMax);
    if (seqGt(ack, this.sndUna)) {
      const acked = seqDiff(ack, this.sndUna);
      let dataAcked = acked;
      if (this.finSent && seqGt(ack, this.finSeq)) dataAcked--; // the FIN's sequence number
      this.queue.consume(dataAcked);
      this.sndUna = ack;
      if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
      // RTT: timestamps when both sides use them (RFC 7323 §4.1), else one timed segment (Karn)
      if (this.tsOk && seg.hasTimestamps && seg.tsEcr !== 0) {
        this.rtt.sample(((this.tsNow() - seg.tsEcr) >>> 0) & 0x7fffffff);
      } else if (this.timing && seqGt(ack, this.timedSeq)) {
        this.rtt.sample(this.stack.wheel.now - this.timedAt);
        this.timing = false;
      }
      if (this.judgeTimeoutOnAck(seg, acked)) {
        // the window is set by the timeout's judgement (RFC 4015 §3.2, RFC 5682 §2)
      } else if (this.cc.inRecovery) {
        if (seqGe(ack, this.cc.recover)) this.cc.exitRecovery(seqDiff(this.sndNxt, this.sndUna));
        else {
          this.cc.onPartialAck(acked);
          this.retransmit(this.sndUna);
        }
      } else this.cc.onAck(acked);
      this.dupAcks = 0;
      this.retries = 0;
      this.persistBackoff = 0;
      this.sack.prune(this.sndUna);
      if (this.sndUna === this.sndNxt) this.rtoDone();
      else this.armRetransmitTimer();
      this.#ackedFin();
      if (this.isFreed) return;
    } else if (ack === this.sndUna && segLen === 0 && flight > 0 && !this.#finOnlyInFlight()) {
      // RFC 5681 §2 duplicate ACK; with SACK, a window change does not disqualify it (the SACK
      // blocks prove new data arrived)
      const duplicate = newWnd === this.sndWnd || seg.sackCount > 0;
      if (duplicate) this.dupAcks++;
      if (duplicate && this.judgeTimeoutOnDuplicateAck()) {
        // F-RTO found the timeout real: resent from SND.UNA in slow start (RFC 5682 §2 step 3a)
      } else if (!this.cc.inRecovery && this.#lossDetected()) {
        this.cc.enterRecovery(flight, this.sndNxt);
        this.highRxt = this.sndUna;
        this.retransmit(this.sndUna);
      } else if (this.cc.inRecovery) {
        this.cc.onDupAckInRecovery();
        // RFC 8985 (RACK) in spirit: the guest keeps SACKing newer data but not the hole we resent a
        // reordering window ago, so that retransmission was lost too: send it again instead of waiting
        // for a 200 ms RTO
        if (this.sackOk && this.stack.host.now() - this.rxtAt > Math.max(2 * this.rtt.srtt, 4)) {
          this.retransmit(this.sndUna);
        }
      }
    }
    // RFC 6675-style: in recovery, each ACK lets us fill holes the guest's SACK blocks reveal
    if (this.cc.inRecovery && this.sackOk) this.retransmitHoles(2);
    // window update (RFC 9293 §3.10.7.4, fifth check)
    if (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack))) {
      this.sndWnd = newWnd;
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
    }
    // room in the queue: acknowledged data left it, or a larger window raised its limit (the first scaled
    // window after the SYN's unscaled one, RFC 7323 §2.2)
    if (this.#hostPaused && this.queue.length < this.#sendLimit() / 2 && !this.#outOfBudget()) {
      this.#resumeHost();
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
      (this.finSent && seqGt(this.sndNxt, this.finSeq) ? 1 : 0);
    const canSendNew = this.queue.length > sentData &&
      Math.min(this.sndWnd, this.cc.cwnd) > seqDiff(this.sndNxt, this.sndUna);
    const threshold = outstanding < 4 && !canSendNew ? Math.max(1, outstanding - 1) : 3;
    if (this.dupAcks >= threshold) return true;
    if (!this.sackOk || this.sack.empty) return false;
    return Math.ceil(this.sack.bytes / this.mss) >= threshold;
  }

  #finOnlyInFlight(): boolean {
    return this.finSent && seqDiff(this.sndNxt, this.sndUna) === 1;
  }

  /** State changes once our FIN is acknowledged. */
  #ackedFin(): void {
    if (!this.finSent || !seqGt(this.sndUna, this.finSeq)) return;
    switch (this.state) {
      case TcpState.FIN_WAIT_1:
        this.state = TcpState.FIN_WAIT_2;
        this.armRto(FIN_WAIT_2_TIMEOUT_MS);
        break;
      case TcpState.CLOSING:
        this.#enterTimeWait();
        break;
      case TcpState.LAST_ACK:
        this.free(false);
        break;
    }
  }

  #receiveData(seq: number, data: Uint8Array, wnd: number, more: boolean): void {
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
      this.#deliver(data, more);
      this.rcvNxt = seqAdd(this.rcvNxt, data.length);
      if (this.ooo && !this.ooo.empty) {
        this.rcvNxt = this.ooo.drain(this.rcvNxt, (d) => this.#deliver(d, false));
        this.sendAck(); // RFC 5681 §4.2: ACK at once when a hole is filled
        return;
      }
      // RFC 9293 §3.8.6.3 / RFC 5681 §4.2: ACK at least every second full-sized segment — counted as Linux
      // counts them behind GRO: the in-order segments of one read of the guest's link are one receive unit,
      // acknowledged once when the read has been processed, and at least every GRO_MAX_BYTES (the largest unit
      // GRO builds). One ACK per two segments of a 64-frame read made the guest handle 32 ACKs where Linux
      // would send one or two; each costs the guest a receive and a transmit of two segments
      if (++this.pendingAcks >= 2) {
        if (seqDiff(this.rcvNxt, this.lastAckSent) >= GRO_MAX_BYTES) this.sendAck();
        else if (!this.#ackAfterRead) {
          this.#ackAfterRead = true;
          queueMicrotask(this.#ackReadUnit);
        }
      } else if (!this.ackTimer.armed) {
        this.stack.wheel.arm(this.ackTimer, this.stack.wheel.now + DELAYED_ACK_MS);
      }
      return;
    }
    // out of order: hold it and send a duplicate ACK with SACK at once
    this.ooo ??= new Reassembly(this.receiveBuffer, 64, this.stack.memory);
    if (!this.ooo.insert(this.rcvNxt, seq, data)) this.stack.counters.drop("tcp-reassembly-full");
    this.sendAck();
  }

  /**
   * A read of the guest's link has been processed (a microtask after it): its segments are acknowledged.
   * A microtask is an entry point of its own: it runs inside this flow's containment boundary.
   */
  readonly #ackReadUnit = (): void => {
    this.#ackAfterRead = false;
    if (this.pendingAcks >= 2) contained(this, "tcp.ackReadUnit", this.#sendAck);
  };
  readonly #sendAck = (): void => this.sendAck();
  #ackAfterRead = false;

  /** `more`: the guest's write continues in the next segments, so the host write may wait to gather them. */
  #deliver(data: Uint8Array, more: boolean): void {
    if (!this.host || this.#hostClosed) return;
    this.stack.counters.tcpBytesFromGuest += data.length;
    this.host.write(data, more);
    this.chargeHostBacklog();
  }

  /** Keeps the tenant's budget charged for the guest's bytes still waiting in the host socket's queue. */
  protected chargeHostBacklog(): void {
    const now = this.host && !this.#hostClosed ? this.host.bufferedAmount : 0;
    const d = now - this.hostCharged;
    if (d > 0) this.stack.memory.charge(d);
    else if (d < 0) this.stack.memory.credit(-d);
    this.hostCharged = now;
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
    this.sendAck();
  }

  #enterTimeWait(): void {
    this.state = TcpState.TIME_WAIT;
    this.stack.wheel.cancel(this.ackTimer);
    this.armRto(TIME_WAIT_MS);
  }

  // ───────────────────────── host side (TcpHandlers) ─────────────────────────

  onData(data: Uint8Array): void {
    if (this.isFreed) return;
    this.queue.push(data);
    this.#received(data.length);
  }

  /**
   * The send queue's free space: the host socket reads straight into it. Near the end of the tenant's
   * budget a read asks for only what is left (a little more at least, so a read is worth its call).
   */
  readBuffer(): Uint8Array {
    // the ring grows only while the tenant's budget has room for it
    const room = this.queue.writable(
      this.stack.memory.available >= this.#readWant ? this.#readWant : MIN_HOST_READ,
    );
    this.#offered = room.length;
    return room;
  }

  onRead(n: number): void {
    if (this.isFreed) return;
    this.queue.commit(n);
    // a read that filled its room asks for twice as much next time: a short answer never costs a 64 KiB ring
    // (glibc maps those on their own pages: an mmap, page faults and an munmap per connection), a download
    // reaches full-size reads after two
    if (n === this.#offered && this.#readWant < HOST_READ_BYTES) this.#readWant *= 2;
    this.#received(n);
  }
  /** Room the next host read asks for (see onRead), and what the last one was offered. */
  #readWant = FIRST_HOST_READ;
  #offered = 0;

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
    if (this.isFreed || !this.#hostPaused) return;
    if (this.#outOfBudget()) this.#waitForBudget();
    else if (this.queue.length < this.#sendLimit()) this.#resumeHost();
  }

  /**
   * Host data held before reads pause: two of the guest's windows (one in flight, one ready to go), as
   * Linux sizes its send buffer from the window; a fixed 1 MiB per flow would hold a gigabyte for a
   * thousand guests with 64 KiB windows, and the GC pauses of such a heap stall every tenant.
   */
  #sendLimit(): number {
    return Math.min(this.sendBuffer, Math.max(2 * this.sndWnd, MIN_SEND_BUFFER));
  }

  onEnd(): void {
    if (this.isFreed) return;
    this.hostEof = true;
    this.trySend();
  }

  onError(code: string, icmp?: HostIcmpError): void {
    if (this.isFreed) return;
    this.#hostClosed = true;
    if (this.state === TcpState.CONNECTING) {
      this.owner.connectFailed(this, code, icmp);
      return;
    }
    this.stack.log("debug", "host socket error", { tenant: this.stack.tenant, code, state: this.stateName });
    // a host reset (or any failure) becomes a reset toward the guest
    this.free(true);
  }

  onClose(): void {
    this.#hostClosed = true;
    if (this.isFreed) return;
    if (this.state === TcpState.CONNECTING || this.state === TcpState.SYN_SENT) this.free(true);
    else if (!this.hostEof) {
      // closed without FIN or error: treat as EOF
      this.hostEof = true;
      this.trySend();
    }
  }

  onDrain(): void {
    if (this.isFreed) return;
    // the host took our backlog: tell the guest its window reopened
    this.chargeHostBacklog();
    this.sendAck();
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
    this.free(true);
  }

  protected free(reset: boolean): void {
    if (this.isFreed) return;
    if (reset && this.state !== TcpState.CLOSED && this.state !== TcpState.TIME_WAIT) {
      if (this.state === TcpState.CONNECTING) {
        this.owner.reset(
          this.path,
          this.guestPort,
          this.localPort,
          seqAdd(this.irs, 0),
          0,
          TCP_SYN,
          0,
        );
      } else if (this.state !== TcpState.SYN_SENT) {
        this.emit(TCP_RST | TCP_ACK_FLAG, this.sndNxt, 0, 0, false);
      }
    }
    this.isFreed = true;
    this.state = TcpState.CLOSED;
    this.stack.wheel.cancel(this.rtoTimer);
    this.stack.wheel.cancel(this.ackTimer);
    if (this.host && !this.#hostClosed) this.host.destroy(reset);
    this.#hostClosed = true;
    this.stack.memory.credit(this.hostCharged);
    this.hostCharged = 0;
    this.queue.clear();
    this.ooo?.clear();
    this.owner.connectionFreed(this);
  }

  /** What `ss -ti` would show of this connection (admin API's flows, debugging). */
  inspect(): Record<string, unknown> {
    return {
      state: this.stateName,
      family: this.path.family === 4 ? "ipv4" : "ipv6",
      guest: endpointText(this.path.guestText(), this.guestPort, this.path.family),
      remote: endpointText(this.path.localText(), this.localPort, this.path.family),
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
      retries: this.retries,
      timerArmed: this.rtoTimer.armed,
      reassemblyBytes: this.ooo?.bytes ?? 0,
      hostPaused: this.#hostPaused,
      hostEof: this.hostEof,
      finSent: this.finSent,
      hostClosed: this.#hostClosed,
    };
  }

  /** A throw in this connection's code (a host callback, a timer): this connection alone is reset. */
  onFault(err: unknown, where: string): void {
    this.stack.flowFault(this, err, where);
  }

  /** Aborts from outside (tenant closing, shutdown): RST to the guest, host socket destroyed. */
  abort(): void {
    this.free(true);
  }

  /**
   * Forgets a dial that a router's ICMP error ended: the guest was told by that error, and a reset from the
   * destination would claim an answer the destination never gave.
   */
  forget(): void {
    this.free(false);
  }
}

/** "10.0.2.15:80" or "[fd00::15]:80" (RFC 5952 §6). */
function endpointText(address: string, port: number, family: 4 | 6): string {
  return family === 4 ? `${address}:${port}` : `[${address}]:${port}`;
}
