/**
 * The sending half of a guest TCP connection, the base of {@linkcode TcpConn}: its state, the send path
 * toward the guest (window, congestion control, SACK-steered retransmission) and the timers that drive it
 * (RTO with backoff, tail-loss probes, zero-window probes, delayed ACKs). Segment arrival, the host side and
 * teardown are in tcp_conn.ts.
 *
 * @module
 */
import {
  emitTcp,
  TCP_ACK_FLAG,
  TCP_FIN,
  TCP_PSH,
  TCP_SYN,
  type TcpHeader,
  tcpHeaderLength,
} from "../../wire/tcp.ts";
import { IPPROTO_TCP } from "../../wire/ipv4.ts";
import type { HostIcmpError, HostTcpSocket } from "../../host/host.ts";
import { Timer } from "../timer_wheel.ts";
import type { FaultOwner } from "../containment.ts";
import type { GuestPath } from "../guest_path.ts";
import type { StackContext } from "../context.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqLt } from "./seq.ts";
import { SendQueue } from "./send_queue.ts";
import type { Reassembly } from "./reassembly.ts";
import { RttEstimator } from "./rtt.ts";
import { type CongestionControl, NewReno } from "./congestion.ts";
import { SackScoreboard } from "./sack_scoreboard.ts";
import {
  DEFAULT_RECEIVE_BUFFER,
  DEFAULT_SEND_BUFFER,
  ETH_PAD_ROOM,
  GUARANTEED_RING,
  MAX_RETRIES,
  MAX_SYN_RETRIES,
  SEND_BUFFER_SEGMENTS,
  STATE_NAMES,
  type TcpEndpoints,
  TcpState,
  type TcpStateValue,
} from "./state.ts";

/** Segments of this many payload bytes or more are built in the stack's tx buffer (see `emit`). */
const BUILD_IN_TX_FROM = 8 * 1024;

/** What a connection needs of its tenant's TCP service (TcpService implements it). */
export interface TcpConnOwner {
  /** Reused header for every segment a connection emits. */
  readonly outHeader: TcpHeader;
  /** Sends the RST that answers a segment (RFC 9293 §3.10.7.1). */
  reset(
    path: GuestPath,
    guestPort: number,
    localPort: number,
    seq: number,
    ack: number,
    flags: number,
    dataLen: number,
  ): void;
  /**
   * The host dial failed: answer the guest's SYN (with `icmp`, the router's error that ended a path probe)
   * and forget the connection.
   */
  connectFailed(c: TcpSender, code: string, icmp?: HostIcmpError): void;
  /** `c` was freed (once, from its `free`): the service drops it from its table. */
  connectionFreed(c: TcpSender): void;
  /** True when the transport toward the guest holds enough; senders join `blocked`. */
  outputCongested(): boolean;
  readonly blocked: Set<TcpSender>;
  /** Connections paused until the tenant's memory budget has room. */
  readonly budgetBlocked: Set<TcpSender>;
}

/** RFC 8985 §7.2's WCDelAckT: the longest a receiver may delay an ACK (RFC 9293 §3.8.6.3: under 0.5 s). */
const DELAYED_ACK_WORST_MS = 200;

export abstract class TcpSender implements FaultOwner {
  readonly stack: StackContext;
  /** The network layer toward the guest: addresses, family, how a segment is wrapped and sent. */
  readonly path: GuestPath;
  readonly guestPort: number;
  readonly localPort: number;
  state: TcpStateValue;
  host: HostTcpSocket | null = null;
  /** Whether this connection holds a slot of the relay-wide flow limit (the service releases it). */
  holdsRelaySlot = false;

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
  tsOk = false;
  protected tsRecent = 0;
  protected lastAckSent = 0;
  sackOk = false;
  /** What the guest reported holding with SACK. */
  protected readonly sack = new SackScoreboard();
  protected highRxt = 0;
  /** Wall time of the last retransmission of SND.UNA's segment (lost-retransmission detection). */
  protected rxtAt = 0;
  /**
   * Eifel detection (RFC 3522) of the current run of timeouts, with timestamps: the TSval of its first
   * retransmission and max(FlightSize, ssthresh) before it (RFC 4015's pipe_prev). Unset when no timeout
   * awaits judgement.
   */
  #timeoutRetransmitTs = 0;
  #timeoutPipePrev = 0;
  #timeoutJudged = true;
  /** Timeouts in the run awaiting judgement (backoffs included). */
  #timeoutsInRun = 0;
  /**
   * F-RTO (RFC 5682 §2), the detection without timestamps (Windows guests by default): the step that the next
   * ACK after the timeout takes — 2 for the first, 3 for the second — or 0 when F-RTO is not under way.
   */
  #frtoStep = 0;
  /** RFC 5682 §2 step 1's "recover": SND.MAX when the timer fired. */
  #frtoRecover = 0;
  /** End of what the timeout retransmitted. */
  #frtoRetransmitEnd = 0;
  /** A duplicate ACK or a SACK hole had reported a loss in the flight when the timer fired. */
  #frtoLossReported = false;
  /** The armed timer is a tail loss probe, not the RTO. */
  #probeArmed = false;
  /** Wheel time of the last new data segment sent (RFC 5681 §4.1's idle test). */
  #lastSendAt = 0;

  /** Host data until the guest acknowledges it; its buffer is charged to the tenant's memory budget. */
  readonly queue: SendQueue;
  protected ooo: Reassembly | null = null;
  readonly rtt = new RttEstimator();
  readonly cc: CongestionControl;
  protected dupAcks = 0;
  protected timing = false;
  protected timedSeq = 0;
  protected timedAt = 0;
  protected retries = 0;
  protected persistBackoff = 0;

  protected hostEof = false;
  protected finSent = false;
  protected finSeq = 0;
  protected pendingAcks = 0;
  protected isFreed = false;
  /** Bytes of the host socket's write queue charged to the tenant's budget. */
  protected hostCharged = 0;
  protected readonly sendBuffer: number;
  protected readonly receiveBuffer: number;
  protected readonly rtoTimer: Timer;
  protected readonly ackTimer: Timer;

  constructor(
    stack: StackContext,
    readonly owner: TcpConnOwner,
    ep: TcpEndpoints,
    state: TcpStateValue,
    opts: { sendBuffer?: number; receiveBuffer?: number } = {},
  ) {
    this.stack = stack;
    this.path = ep.path;
    this.guestPort = ep.guestPort;
    this.localPort = ep.localPort;
    this.state = state;
    const memory = stack.memory;
    this.queue = new SendQueue((d) => (d > 0 ? memory.charge(d) : memory.credit(-d)));
    this.iss = (Math.random() * 0x1_0000_0000) >>> 0;
    this.sndUna = this.iss;
    this.sndNxt = this.iss;
    this.sndMax = this.iss;
    this.mss = stack.plan.mtu - ep.path.ipHeaderLength - 20;
    this.sendBuffer = opts.sendBuffer ?? Math.max(DEFAULT_SEND_BUFFER, SEND_BUFFER_SEGMENTS * this.mss);
    this.receiveBuffer = opts.receiveBuffer ?? DEFAULT_RECEIVE_BUFFER;
    this.cc = new NewReno(this.mss);
    // the largest frame: headers with options, and a full segment
    this.queue.frameRoomWanted = ep.path.l4Offset + 60 + this.mss;
    this.rtoTimer = new Timer((now) => this.#onTimer(now), this);
    this.ackTimer = new Timer(() => this.sendAck(), this);
  }

  get freed(): boolean {
    return this.isFreed;
  }

  /** The RFC 9293 state's name. */
  get stateName(): string {
    return STATE_NAMES[this.state];
  }

  // ───────────────────────── sending ─────────────────────────

  /** Sends what the windows, the congestion window and the transport allow. */
  trySend(): void {
    if (this.isFreed) return;
    const s = this.state;
    if (
      s !== TcpState.ESTABLISHED && s !== TcpState.CLOSE_WAIT && s !== TcpState.FIN_WAIT_1 &&
      s !== TcpState.CLOSING &&
      s !== TcpState.LAST_ACK
    ) return;
    const tcp = this.owner;
    for (;;) {
      const sentData = seqDiff(this.sndNxt, this.sndUna) -
        (this.finSent && seqGt(this.sndNxt, this.finSeq) ? 1 : 0);
      const unsent = this.queue.length - sentData;
      if (unsent <= 0) break;
      if (tcp.outputCongested()) {
        tcp.blocked.add(this);
        this.cc.noteFlight(seqDiff(this.sndNxt, this.sndUna));
        return;
      }
      const inFlight = seqDiff(this.sndNxt, this.sndUna);
      // RFC 5681 §4.1: nothing sent for longer than the RTO restarts from the initial window
      if (inFlight === 0 && this.stack.wheel.now - this.#lastSendAt > this.rtt.current()) {
        this.cc.restartAfterIdle();
      }
      const can = Math.min(this.sndWnd, this.cc.cwnd) - inFlight;
      if (can <= 0) break;
      let len = Math.min(this.mss, unsent, can);
      // sender-side silly window avoidance (RFC 9293 §3.8.6.2.1): no small segment while a full one
      // could follow and data is in flight
      if (len < this.mss && len < unsent && inFlight > 0) break;
      if (this.#skipSacked(this.sndNxt)) continue;
      len = this.sack.until(this.sndNxt, len);
      if (len <= 0) break; // never a data segment without data
      this.#sendData(this.sndNxt, len, len === unsent);
      if (!this.timing && !this.tsOk) {
        this.timing = true;
        this.timedSeq = this.sndNxt;
        this.timedAt = this.stack.wheel.now;
      }
      this.sndNxt = seqAdd(this.sndNxt, len);
      if (!this.rtoTimer.armed) this.armRetransmitTimer();
    }
    this.cc.noteFlight(seqDiff(this.sndNxt, this.sndUna));
    const sentData = seqDiff(this.sndNxt, this.sndUna) -
      (this.finSent && seqGt(this.sndNxt, this.finSeq) ? 1 : 0);
    if (this.hostEof && !this.finSent && sentData >= this.queue.length) this.#sendFin();
    else if (
      this.hostEof && this.finSent && this.sndNxt === this.finSeq && sentData >= this.queue.length
    ) this.#sendFin(); // retransmitting the FIN after go-back-N
    // zero window with data waiting and nothing in flight: persist (RFC 9293 §3.8.6.1)
    if (this.sndWnd === 0 && this.queue.length > 0 && this.sndNxt === this.sndUna && !this.rtoTimer.armed) {
      this.armRto(Math.min(this.rtt.current() * 2 ** this.persistBackoff, 60_000));
    }
  }

  #sendFin(): void {
    if (this.state === TcpState.ESTABLISHED) this.state = TcpState.FIN_WAIT_1;
    else if (this.state === TcpState.CLOSE_WAIT) this.state = TcpState.LAST_ACK;
    this.finSent = true;
    this.finSeq = this.sndNxt;
    this.emit(TCP_FIN | TCP_ACK_FLAG, this.sndNxt, 0, 0, false);
    this.sndNxt = seqAdd(this.sndNxt, 1);
    if (!this.rtoTimer.armed) this.armRto(this.rtt.current());
  }

  /** Sends new data (retransmissions go through `retransmit`) and notes when, for the idle test. */
  #sendData(seq: number, len: number, push: boolean): void {
    this.#lastSendAt = this.stack.wheel.now;
    this.emit(TCP_ACK_FLAG | (push ? TCP_PSH : 0), seq, seqDiff(seq, this.sndUna), len, false);
  }

  /** Retransmits one segment at `seq` (data, or the FIN). */
  protected retransmit(seq: number): void {
    this.timing = false; // Karn: never time a retransmitted segment
    const off = seqDiff(seq, this.sndUna);
    if (this.finSent && seq === this.finSeq) {
      this.emit(TCP_FIN | TCP_ACK_FLAG, seq, 0, 0, false);
      return;
    }
    const avail = this.queue.length - off;
    if (avail <= 0) return;
    const len = this.sack.until(seq, Math.min(this.mss, avail));
    this.emit(TCP_ACK_FLAG, seq, off, len, false);
    if (seq === this.sndUna) this.rxtAt = this.stack.host.now();
    this.stack.counters.tcpRetransmits++;
    if (seqGt(seqAdd(seq, len), this.highRxt)) this.highRxt = seqAdd(seq, len);
  }

  /** In SACK recovery: retransmit up to `n` segments from the holes after what was already retransmitted. */
  protected retransmitHoles(n: number): void {
    if (this.sack.empty) return;
    const highestSacked = this.sack.highest;
    let seq = seqGt(this.highRxt, this.sndUna) ? this.highRxt : this.sndUna;
    while (n > 0 && seqLt(seq, highestSacked) && seqLt(seq, this.sndNxt)) {
      if (this.#skipSacked(seq)) {
        seq = this.sack.endOfRangeAt(seq);
        continue;
      }
      this.retransmit(seq);
      seq = this.highRxt;
      n--;
    }
  }

  /** True when `seq` lies inside a SACKed range; a new transmission then skips what the guest holds. */
  #skipSacked(seq: number): boolean {
    const end = this.sack.endOfRangeAt(seq);
    if (end < 0) return false;
    if (seq === this.sndNxt) this.sndNxt = end;
    return true;
  }

  /** Timestamp clock: milliseconds (RFC 7323 §5.4 allows 1 ms to 1 s per tick). */
  protected tsNow(): number {
    return Math.floor(this.stack.wheel.now) >>> 0;
  }

  /** The window to advertise now, in bytes (before scaling). */
  protected receiveWindow(): number {
    this.chargeHostBacklog();
    const buffered = this.hostCharged + (this.ooo?.bytes ?? 0);
    let wnd = Math.max(0, this.receiveBuffer - buffered);
    // the tenant's budget bounds what all its flows may be sent at once; a spent budget still leaves each
    // flow a small window, so that no flow waits forever for others that wait for it
    wnd = Math.min(wnd, Math.max(GUARANTEED_RING, this.stack.memory.available));
    wnd = Math.min(wnd, 65535 * (1 << this.rcvWscale));
    // never shrink the window already offered (RFC 9293 §3.8.6.2.2)
    const offered = seqDiff(this.#rcvAdvertisedEnd, this.rcvNxt);
    if (seqGt(this.#rcvAdvertisedEnd, this.rcvNxt) && offered > wnd) wnd = offered;
    return wnd;
  }

  protected sendAck(): void {
    if (this.isFreed) return;
    this.emit(TCP_ACK_FLAG, this.sndNxt, 0, 0, false);
  }

  /**
   * Builds and sends one segment: header fields from the connection, `len` payload bytes copied from
   * the send queue at `queueOffset` straight into the outgoing frame.
   */
  protected emit(flags: number, seq: number, queueOffset: number, len: number, syn: boolean): void {
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
      h.tsVal = this.tsNow();
      h.tsEcr = flags & TCP_ACK_FLAG ? this.tsRecent : 0;
    }
    h.sackCount = !syn && this.sackOk && this.ooo && !this.ooo.empty
      ? this.ooo.sackBlocks(h.sackBlocks, h.hasTimestamps ? 3 : 4)
      : 0;
    const wnd = syn ? Math.min(this.receiveWindow(), 65535) : this.receiveWindow();
    h.window = syn ? wnd : Math.min(65535, Math.floor(wnd / (1 << this.rcvWscale)));
    const right = seqAdd(this.rcvNxt, syn ? wnd : h.window * (1 << this.rcvWscale));
    if (seqGt(right, this.#rcvAdvertisedEnd) || this.#rcvAdvertisedEnd === 0) this.#rcvAdvertisedEnd = right;
    const hl = tcpHeaderLength(h);
    const path = this.path;
    const l4 = path.l4Offset;
    const pseudo = path.pseudoSum(IPPROTO_TCP, hl + len);
    // a data segment is built next to the send ring and its payload copied within that one buffer: the copy
    // into the shared tx buffer needs a view per segment, which was half of what the relay allocated. A large
    // one goes to the tx buffer all the same: that buffer lies in the checksum's wasm memory, so its sum needs
    // no copy of the segment (the view is nothing beside a 64 KiB memmove)
    const area = len > 0 && len < BUILD_IN_TX_FROM
      ? this.queue.frameArea(l4 + hl + Math.max(len, ETH_PAD_ROOM))
      : null;
    if (area) {
      const { buf, off } = area;
      this.queue.copyToFrame(queueOffset, len, off + l4 + hl);
      emitTcp(h, buf, off + l4, len, pseudo);
      path.send(buf, off, IPPROTO_TCP, hl + len);
    } else {
      if (len > 0) this.queue.copyOut(queueOffset, len, s.tx, l4 + hl);
      emitTcp(h, s.tx, l4, len, pseudo);
      path.send(s.tx, 0, IPPROTO_TCP, hl + len);
    }
    if (flags & TCP_ACK_FLAG) {
      this.lastAckSent = this.rcvNxt;
      this.pendingAcks = 0;
      if (this.ackTimer.armed) s.wheel.cancel(this.ackTimer);
    }
  }

  // ───────────────────────── timers ─────────────────────────

  protected armRto(ms: number): void {
    this.stack.wheel.arm(this.rtoTimer, this.stack.wheel.now + ms);
  }

  /**
   * Arms the timer for data in flight: a tail loss probe after PTO = 2·SRTT (RFC 8985 §7.2) when
   * possible — a loss at the end of a flight then draws SACKs and fast recovery instead of waiting a
   * full RTO — else the RTO. Only with SACK (RFC 8985 §7.1, as Linux): without, the probe's answer is a
   * duplicate ACK that tells nothing, and a late guest's flight is judged at the RTO (F-RTO). A flight of one
   * segment waits for a delayed ACK as well (WCDelAckT).
   */
  protected armRetransmitTimer(): void {
    if (this.sackOk && this.rtt.hasSample && this.retries === 0) {
      const flight = seqDiff(this.sndNxt, this.sndUna);
      // one segment in flight and no more to follow it: its ACK may be a delayed one
      const pto = Math.max(2 * this.rtt.srtt, 10) +
        (flight <= this.mss && this.queue.length <= flight ? DELAYED_ACK_WORST_MS : 0);
      this.#probeArmed = pto < this.rtt.current();
      this.armRto(Math.min(pto, this.rtt.current()));
    } else {
      this.#probeArmed = false;
      this.armRto(this.rtt.current());
    }
  }

  /** RFC 8985 §7.3: send one new segment if allowed, else retransmit the last one. */
  #sendProbe(): void {
    this.stack.counters.tcpTailProbes++;
    const sentData = seqDiff(this.sndNxt, this.sndUna) -
      (this.finSent && seqGt(this.sndNxt, this.finSeq) ? 1 : 0);
    const unsent = this.queue.length - sentData;
    if (unsent > 0 && this.sndWnd > seqDiff(this.sndNxt, this.sndUna) && !this.finSent) {
      const len = Math.min(this.mss, unsent);
      this.#sendData(this.sndNxt, len, len === unsent);
      this.sndNxt = seqAdd(this.sndNxt, len);
      return;
    }
    if (this.finSent && seqGt(this.sndNxt, this.finSeq)) {
      this.emit(TCP_FIN | TCP_ACK_FLAG, this.finSeq, 0, 0, false);
      return;
    }
    const last = seqDiff(this.sndNxt, this.sndUna);
    this.retransmit(seqAdd(this.sndUna, Math.max(0, last - Math.min(this.mss, last))));
  }

  /**
   * Judges the last run of timeouts on an ACK of new data after it (SND.UNA already moved): true when that
   * ACK's congestion response was made here. A spurious timeout is a guest that was slow while nothing was
   * lost (descheduled for longer than the RTO: an emulated CPU, a loaded host); then RFC 4015 §3.2:
   * transmission resumes after what was already sent (SND.NXT ← SND.MAX, no go-back-N resend of what the guest
   * holds) and the congestion state is restored. With timestamps, Eifel detection (RFC 3522 §3.2): the first
   * ACK echoes a TSval older than the retransmission's. Without, F-RTO (RFC 5682 §2) over two ACKs.
   */
  protected judgeTimeoutOnAck(seg: TcpHeader, acked: number): boolean {
    if (this.#timeoutJudged) return false;
    if (this.#frtoStep === 2) return this.#frtoFirstAck(acked, seg.window << this.sndWscale);
    this.#timeoutJudged = true;
    if (this.#frtoStep === 3) {
      // step 3b: data never retransmitted is acknowledged — it arrived, the timeout was spurious
      this.#frtoStep = 0;
      return this.#undoTimeout(acked);
    }
    if (
      !this.tsOk || !seg.hasTimestamps || seg.tsEcr === 0 ||
      ((seg.tsEcr - this.#timeoutRetransmitTs) | 0) >= 0
    ) return false;
    return this.#undoTimeout(acked);
  }

  /**
   * A duplicate ACK while F-RTO waits: the timeout was real (RFC 5682 §2 steps 2a and 3a). True when this
   * ACK's response was made here (step 3a: resend from SND.UNA in slow start, cwnd at most 3 SMSS).
   */
  protected judgeTimeoutOnDuplicateAck(): boolean {
    const step = this.#frtoStep;
    if (step === 0) return false;
    this.#frtoStep = 0;
    this.#timeoutJudged = true;
    if (step === 2) return false; // conventional recovery is under way since the timeout
    this.cc.setWindow(Math.min(this.cc.cwnd, 3 * this.mss));
    this.#resendFromUna();
    return true;
  }

  /** RFC 5682 §2 step 2, on the first ACK of new data after the timeout; `window` is the one it offers. */
  #frtoFirstAck(acked: number, window: number): boolean {
    this.#frtoStep = 0;
    const outstanding = seqDiff(this.sndMax, this.sndUna);
    if (
      seqGe(this.sndUna, this.#frtoRecover) && seqGt(this.sndUna, this.#frtoRetransmitEnd) &&
      !this.#frtoLossReported
    ) {
      // everything sent acknowledged at once, past the one segment retransmitted: step 2a would give up
      // here, as no second ACK can follow. But a hole that the retransmission filled would have drawn a
      // duplicate ACK for each later segment first (RFC 5681 §4.2) and none came: the originals arrived,
      // the guest was late (as Linux judges it: data never retransmitted acknowledged, tcp_process_loss)
      return this.#undoTimeout(acked);
    }
    // 2a: the retransmission is not all acknowledged, or everything sent is after a reported loss; 2b
    // without new data to send or window to send it in: conventional recovery goes on
    if (
      seqLt(this.sndUna, this.#frtoRetransmitEnd) || seqGe(this.sndUna, this.#frtoRecover) ||
      this.finSent || this.queue.length <= outstanding || window <= outstanding
    ) {
      this.#timeoutJudged = true;
      return false;
    }
    // 2b: up to two segments never sent before (trySend sends them); their ACK decides in step 3
    this.sndNxt = this.sndMax;
    this.cc.setWindow(outstanding + 2 * this.mss);
    this.#frtoStep = 3;
    return true;
  }

  /** The timeout was spurious: RFC 4015 §3.2's response. */
  #undoTimeout(acked: number): true {
    this.#timeoutJudged = true;
    this.stack.counters.tcpSpuriousTimeouts += this.#timeoutsInRun; // each timeout of the run (backoffs too)
    if (seqLt(this.sndNxt, this.sndMax)) this.sndNxt = this.sndMax;
    this.cc.undoTimeout(seqDiff(this.sndNxt, this.sndUna), acked, this.#timeoutPipePrev);
    return true;
  }

  /**
   * The guest's link is back after an outage (a resumed session): the RTO backed off while frames were lost
   * for want of a link, not on the path, so what is in flight goes again now, its backoff restarted
   * (RFC 6298 (5.5) doubled it for a path that was never tried).
   */
  linkReturned(): void {
    if (this.isFreed || !this.rtoTimer.armed || seqDiff(this.sndNxt, this.sndUna) === 0) return;
    this.stack.counters.tcpResentOnLinkReturn++;
    this.rtoDone();
    this.rtt.backoff = 0;
    this.#onTimer(0);
    // what was in flight met a missing link: the timeout is real, whatever the guest's echoed timestamps
    // say (Eifel would find it spurious on the first ACK, which acknowledges what arrived before the outage)
    this.#timeoutJudged = true;
    this.#frtoStep = 0;
  }

  protected rtoDone(): void {
    this.stack.wheel.cancel(this.rtoTimer);
  }

  #onTimer(_now: number): void {
    if (this.isFreed) return;
    switch (this.state) {
      case TcpState.CONNECTING:
        // the host never answered: the guest gets a reset after a bounded wait
        this.stack.log("info", "host connect timed out", { tenant: this.stack.tenant });
        this.free(true);
        return;
      case TcpState.SYN_RECEIVED:
      case TcpState.SYN_SENT:
        if (++this.retries > MAX_SYN_RETRIES) return this.free(true);
        this.rtt.onTimeout();
        if (this.state === TcpState.SYN_RECEIVED) this.stack.counters.tcpSynAckRetransmits++;
        this.sendSyn(this.state === TcpState.SYN_RECEIVED);
        this.armRto(this.rtt.current());
        return;
      case TcpState.TIME_WAIT:
      case TcpState.FIN_WAIT_2:
        return this.free(false);
    }
    const flight = seqDiff(this.sndNxt, this.sndUna);
    if (flight === 0) {
      if (this.sndWnd === 0 && this.queue.length > 0) {
        // zero-window probe, as Linux does: an old sequence number draws an ACK with the window
        this.emit(TCP_ACK_FLAG, seqAdd(this.sndUna, -1 >>> 0), 0, 0, false);
        this.persistBackoff = Math.min(this.persistBackoff + 1, 10);
        this.armRto(Math.min(this.rtt.current() * 2 ** this.persistBackoff, 60_000));
      }
      return;
    }
    if (this.#probeArmed) {
      this.#probeArmed = false;
      // in recovery the probe re-sends the hole at SND.UNA: its retransmission was probably lost and no
      // further ACK will say so (RFC 8985 §7: a probe instead of an RTO's cwnd collapse)
      if (this.cc.inRecovery) {
        this.stack.counters.tcpTailProbes++;
        this.retransmit(this.sndUna);
      } else this.#sendProbe();
      this.armRto(this.rtt.current());
      return;
    }
    // RFC 6298 (5.4)–(5.6) and RFC 5681 §3.1: back off, collapse cwnd, resend from SND.UNA
    if (++this.retries > MAX_RETRIES) {
      this.stack.log("info", "guest stopped acknowledging; connection aborted", {
        tenant: this.stack.tenant,
      });
      return this.free(true);
    }
    this.stack.counters.tcpTimeouts++;
    if (this.#timeoutJudged) {
      // the first timeout of a run: the retransmission below carries this TSval (RFC 3522 §3.2:
      // RetransmitTS); without timestamps F-RTO watches the next two ACKs (RFC 5682 §2 step 1), but not
      // after a loss that fast recovery already found
      this.#timeoutJudged = false;
      this.#timeoutsInRun = 0;
      this.#timeoutRetransmitTs = this.tsNow();
      this.#timeoutPipePrev = Math.max(flight, this.cc.ssthresh);
      this.#frtoStep = this.tsOk || this.cc.inRecovery ? 0 : 2;
      this.#frtoRecover = this.sndMax;
      this.#frtoLossReported = this.dupAcks > 0 || !this.sack.empty;
    } else if (this.#frtoStep === 3) this.#frtoStep = 0; // RFC 5682 §2: conventional recovery after 2b
    // a backoff while F-RTO awaits its first ACK keeps waiting for it, as Linux does: the guest may be late
    // for longer than one RTO, and the evidence it then gives is the same
    this.#timeoutsInRun++;
    this.rtt.onTimeout();
    this.cc.onTimeout(flight, this.sndMax);
    this.timing = false;
    this.#resendFromUna();
    this.#frtoRetransmitEnd = this.sndNxt;
    this.armRto(this.rtt.current());
  }

  /** Go-back-N (RFC 5681 §3.1): the segment at SND.UNA again, and what follows it as the window opens. */
  #resendFromUna(): void {
    this.dupAcks = 0;
    // the SACK scoreboard is kept (Linux does too): a receiver that reneges is rare, and resending
    // what the guest already holds would slow recovery after every timeout
    this.highRxt = this.sndUna;
    const finOutstanding = this.finSent && seqGe(this.finSeq, this.sndUna);
    this.sndNxt = this.sndUna;
    if (finOutstanding && this.sndUna === this.finSeq) {
      this.emit(TCP_FIN | TCP_ACK_FLAG, this.finSeq, 0, 0, false);
      this.sndNxt = seqAdd(this.finSeq, 1);
    } else {
      this.retransmit(this.sndUna);
      const sent = Math.min(this.mss, this.queue.length);
      this.sndNxt = seqAdd(this.sndUna, sent);
      if (finOutstanding && sent === this.queue.length) {
        // the FIN goes again once the data before it is out
        this.emit(TCP_FIN | TCP_ACK_FLAG, this.finSeq, 0, 0, false);
        this.sndNxt = seqAdd(this.finSeq, 1);
      }
    }
  }

  /** The host's unwritten bytes, charged to the tenant's budget (the receive window shrinks by them). */
  protected abstract chargeHostBacklog(): void;
  protected abstract free(reset: boolean): void;
  protected abstract sendSyn(withAck: boolean): void;
  abstract onFault(err: unknown, where: string): void;
  abstract abort(): void;
}
