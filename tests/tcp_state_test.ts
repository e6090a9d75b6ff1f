/**
 * The TCP state machine, scripted: a guest that is segments in and segments out, a host peer driven by hand
 * (`FakeHost`), and the manual clock — no root, no real socket, no wall clock. Each test names the RFC
 * behaviour it pins down.
 */
import assert from "node:assert/strict";
import { ip, StackHarness, tcpFrame } from "./_frames.ts";
import { FakeHost, type FakeTcpSocket } from "./_fake_host.ts";
import { TCP_ACK_FLAG, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type TcpHeader } from "../src/wire/tcp.ts";
import type { Dissection } from "./_dissect.ts";
import { TIME_WAIT_MS } from "../src/stack/tcp/state.ts";
import { internetChecksum } from "../src/wire/checksum.ts";

const MAC = 0x02000000000d;
const GUEST = ip("10.0.2.15");
const GATEWAY = ip("10.0.2.2");
const PORT = 8080;

interface GuestOptions {
  mss?: number;
  wscale?: number;
  sack?: boolean;
  /** Timestamps on every segment (RFC 7323): TSval the guest's clock, TSecr as `send` is told. */
  timestamps?: boolean;
}

/** A segment the relay sent to the guest, with its payload. */
interface Sent {
  tcp: TcpHeader;
  data: Uint8Array;
}

/** One guest connection to 10.0.2.2:8080 on a fresh stack whose host is a FakeHost. */
class ScriptedGuest {
  readonly h: StackHarness;
  host!: FakeHost;
  /** The guest's next sequence number, and what it acknowledges of the relay's. */
  seq = 1000;
  ack = 0;
  relayIss = 0;
  window = 65535;
  static #port = 40000;
  readonly sport = ScriptedGuest.#port++;

  constructor(readonly opts: GuestOptions = {}) {
    this.h = new StackHarness(() => {}, (clock) => (this.host = new FakeHost(clock)));
  }

  get conns() {
    return this.h.stack.tcp.connections();
  }
  get state(): string | undefined {
    return this.conns[0]?.stateName;
  }
  get socket(): FakeTcpSocket {
    return this.host.sockets[0];
  }

  /** Sends one segment; by default at the guest's current seq/ack, with the ACK flag when `ack` is known. */
  send(
    flags: number,
    payload = new Uint8Array(0),
    o: { seq?: number; ack?: number; window?: number; sack?: [number, number][]; tsEcr?: number } = {},
  ): Sent[] {
    return this.input(this.frame(flags, payload, o));
  }

  /** The frame `send` would send, to be altered before `input`. */
  frame(
    flags: number,
    payload = new Uint8Array(0),
    o: { seq?: number; ack?: number; window?: number; sack?: [number, number][]; tsEcr?: number } = {},
  ): Uint8Array {
    return tcpFrame(
      {
        srcMac: MAC,
        src: GUEST,
        dst: GATEWAY,
        sport: this.sport,
        dport: PORT,
        seq: o.seq ?? this.seq,
        ack: o.ack ?? this.ack,
        flags,
      },
      payload,
      (t) => {
        t.window = o.window ?? this.window;
        if (flags & TCP_SYN) {
          t.mss = this.opts.mss ?? 1460;
          if (this.opts.wscale !== undefined) t.windowScale = this.opts.wscale;
          t.sackPermitted = this.opts.sack ?? false;
        }
        if (this.opts.timestamps) {
          t.hasTimestamps = true;
          t.tsVal = this.h.now >>> 0;
          t.tsEcr = o.tsEcr ?? 0;
        }
        if (o.sack) {
          t.sackCount = o.sack.length;
          o.sack.forEach(([l, r], i) => {
            t.sackBlocks[2 * i] = l;
            t.sackBlocks[2 * i + 1] = r;
          });
        }
      },
    );
  }

  /** Hands a whole frame to the stack; what it sent the guest in answer. */
  input(frame: Uint8Array): Sent[] {
    const before = this.h.out.length;
    this.h.stack.input(frame);
    return this.sentSince(before);
  }

  /** Segments to the guest from output index `from` on. */
  sentSince(from: number): Sent[] {
    const out: Sent[] = [];
    for (let i = from; i < this.h.out.length; i++) {
      const d: Dissection = this.h.out[i];
      if (!d.tcp || d.tcp.dstPort !== this.sport) continue;
      out.push({ tcp: d.tcp, data: this.h.raw[i].slice(d.tcp.payloadOffset, d.tcp.payloadEnd) });
    }
    return out;
  }

  /** The host writes `data`: the data segments the relay sent the guest at once. */
  hostSends(data: Uint8Array): Sent[] {
    const before = this.h.out.length;
    this.socket.send(data);
    return this.sentSince(before).filter((s) => s.data.length > 0);
  }

  /** Acknowledges each segment of `flight` in turn; the data segments the relay sent meanwhile. */
  ackEach(flight: Sent[]): Sent[] {
    const before = this.h.out.length;
    for (const s of flight) {
      this.ack = (s.tcp.seq + s.data.length) >>> 0;
      this.send(TCP_ACK_FLAG);
    }
    return this.sentSince(before).filter((s) => s.data.length > 0);
  }

  /** SYN, the host accepts, SYN-ACK, ACK: ESTABLISHED. Returns the SYN-ACK. */
  open(): TcpHeader {
    assert.deepEqual(
      this.send(TCP_SYN, undefined, { ack: 0 }),
      [],
      "no answer before the host dial succeeds",
    );
    assert.equal(this.state, "CONNECTING");
    assert.equal(this.socket.remoteAddress, "127.0.0.1");
    const before = this.h.out.length;
    this.socket.accept();
    const [synAck] = this.sentSince(before);
    assert.equal(synAck.tcp.flags, TCP_SYN | TCP_ACK_FLAG);
    assert.equal(synAck.tcp.ack, 1001, "SYN-ACK acknowledges the guest's SYN");
    this.relayIss = synAck.tcp.seq;
    this.seq = 1001;
    this.ack = (synAck.tcp.seq + 1) >>> 0;
    this.send(TCP_ACK_FLAG);
    assert.equal(this.state, "ESTABLISHED");
    return synAck.tcp;
  }

  /** Offset of a relay sequence number from the start of its data. */
  off(seq: number): number {
    return (seq - this.relayIss - 1) >>> 0;
  }

  close(): void {
    this.h.close();
  }
}

const bytes = (n: number, seed = 1) => new Uint8Array(n).map((_, i) => (i * 7 + seed) & 0xff);

function guest(opts?: GuestOptions): ScriptedGuest {
  return new ScriptedGuest(opts);
}

Deno.test("TCP handshake: the SYN is answered only once the host dial succeeds; a refused dial is a RST (RFC 9293 §3.5)", () => {
  const g = guest({ wscale: 7, sack: true });
  try {
    const synAck = g.open();
    assert.equal(synAck.mss, 1460, "MSS = MTU − 40");
    assert.ok(
      synAck.windowScale >= 0,
      "window scale offered back to a guest that offered it (RFC 7323 §2.2)",
    );
    assert.equal(synAck.sackPermitted, true);
  } finally {
    g.close();
  }
  const r = guest();
  try {
    r.send(TCP_SYN, undefined, { ack: 0 });
    const before = r.h.out.length;
    r.socket.fail("ECONNREFUSED");
    const [rst] = r.sentSince(before);
    assert.equal(rst.tcp.flags & TCP_RST, TCP_RST);
    assert.equal(rst.tcp.ack, 1001, "the reset acknowledges the SYN so the guest accepts it");
    assert.equal(r.conns.length, 0);
  } finally {
    r.close();
  }
});

Deno.test("TCP data both ways, exact; half-close from the guest keeps the host's direction open", () => {
  const g = guest();
  try {
    g.open();
    const up = bytes(3000);
    g.send(TCP_ACK_FLAG, up.subarray(0, 1460));
    g.seq += 1460;
    g.send(TCP_ACK_FLAG, up.subarray(1460));
    g.seq += 3000 - 1460;
    assert.deepEqual(g.socket.written, up, "guest bytes reach the host exactly");
    // the guest closes its direction (RFC 9293 §3.6): the host sees EOF, the relay still delivers
    const fin = g.send(TCP_FIN | TCP_ACK_FLAG);
    g.seq += 1;
    assert.equal(fin.at(-1)!.tcp.ack, 1001 + 3000 + 1, "FIN acknowledged");
    assert.equal(g.socket.ended, true);
    assert.equal(g.state, "CLOSE_WAIT");
    const down = bytes(2000, 5);
    const segs = g.hostSends(down);
    const got = new Uint8Array(2000);
    for (const s of segs) got.set(s.data, g.off(s.tcp.seq));
    assert.deepEqual(got, down, "host bytes reach the guest exactly after its FIN");
    g.ack = (g.relayIss + 1 + 2000) >>> 0;
    g.send(TCP_ACK_FLAG);
    // the host closes too: FIN to the guest, LAST-ACK, freed on the guest's ACK
    const b2 = g.h.out.length;
    g.socket.finish();
    const [ourFin] = g.sentSince(b2);
    assert.equal(ourFin.tcp.flags & TCP_FIN, TCP_FIN);
    assert.equal(g.state, "LAST_ACK");
    g.ack = (g.ack + 1) >>> 0;
    g.send(TCP_ACK_FLAG);
    assert.equal(g.conns.length, 0, "LAST-ACK acknowledged: the flow is gone");
  } finally {
    g.close();
  }
});

Deno.test("TCP simultaneous close: FINs cross, both are acknowledged, TIME-WAIT ends on the wheel (RFC 9293 §3.6)", () => {
  const g = guest();
  try {
    g.open();
    const before = g.h.out.length;
    g.socket.finish(); // the host's FIN goes out...
    const [ourFin] = g.sentSince(before);
    assert.equal(ourFin.tcp.flags & TCP_FIN, TCP_FIN);
    assert.equal(g.state, "FIN_WAIT_1");
    // ...while the guest's FIN, not yet acknowledging ours, crosses it
    const reply = g.send(TCP_FIN | TCP_ACK_FLAG);
    g.seq += 1;
    assert.equal(reply.at(-1)!.tcp.ack, 1002, "the guest's FIN is acknowledged");
    assert.equal(g.state, "CLOSING");
    g.ack = (g.ack + 1) >>> 0;
    g.send(TCP_ACK_FLAG);
    assert.equal(g.state, "TIME_WAIT");
    g.h.advance(TIME_WAIT_MS + 10);
    assert.equal(g.conns.length, 0);
  } finally {
    g.close();
  }
});

Deno.test("TCP RST in every state: an exact RST frees the flow and resets the host; in-window draws a challenge ACK (RFC 5961 §3.2)", () => {
  const states: [string, (g: ScriptedGuest) => void][] = [
    ["SYN_RECEIVED", (g) => {
      g.send(TCP_SYN, undefined, { ack: 0 });
      g.socket.accept();
      g.seq = 1001;
    }],
    ["ESTABLISHED", (g) => g.open()],
    ["CLOSE_WAIT", (g) => {
      g.open();
      g.send(TCP_FIN | TCP_ACK_FLAG);
      g.seq += 1;
    }],
    ["LAST_ACK", (g) => {
      g.open();
      g.send(TCP_FIN | TCP_ACK_FLAG);
      g.seq += 1;
      g.socket.finish();
    }],
    ["FIN_WAIT_1", (g) => {
      g.open();
      g.socket.finish();
    }],
    ["FIN_WAIT_2", (g) => {
      g.open();
      g.socket.finish();
      g.ack = (g.ack + 1) >>> 0;
      g.send(TCP_ACK_FLAG);
    }],
  ];
  for (const [state, reach] of states) {
    const g = guest();
    try {
      reach(g);
      assert.equal(g.state, state);
      // in the window but not at its left edge: maybe forged; answer with an ACK, keep the flow
      const challenge = g.send(TCP_RST, undefined, { seq: g.seq + 100 });
      assert.equal(challenge.length, 1, `${state}: challenge ACK`);
      assert.equal(challenge[0].tcp.flags, TCP_ACK_FLAG);
      assert.equal(challenge[0].tcp.ack, g.seq >>> 0);
      assert.equal(g.state, state, `${state}: the in-window RST is not obeyed`);
      // outside the window: ignored
      assert.deepEqual(g.send(TCP_RST, undefined, { seq: g.seq + 10_000_000 }), []);
      assert.equal(g.state, state);
      // exact: the flow is gone and the host peer gets a reset
      assert.deepEqual(g.send(TCP_RST), [], `${state}: no answer to a reset`);
      assert.equal(g.conns.length, 0, `${state}: flow freed`);
      assert.equal(g.socket.destroyed && g.socket.resetSent, true, `${state}: host socket reset`);
    } finally {
      g.close();
    }
  }
});

Deno.test("TCP retransmission: RTO fires on the wheel and backs off exponentially (RFC 6298 §5.5); an ACK ends it", () => {
  const g = guest();
  try {
    g.open();
    const before = g.h.out.length;
    g.socket.send(bytes(1000));
    const [first] = g.sentSince(before);
    assert.equal(first.data.length, 1000);
    const times: number[] = [];
    const start = g.h.now;
    for (let t = 0; t < 8000 && times.length < 3; t += 10) {
      const b = g.h.out.length;
      g.h.advance(10);
      for (const s of g.sentSince(b)) {
        if (s.tcp.seq === first.tcp.seq && s.data.length > 0) times.push(g.h.now - start);
      }
    }
    assert.equal(times.length, 3, "three retransmissions in 8 s");
    const [a, b, c] = times;
    assert.ok(
      b - a >= 1.9 * a - 20 && c - b >= 1.9 * (b - a) - 20,
      `backoff doubles: ${times.join(", ")} ms`,
    );
    const k = g.h.stack.counters;
    assert.equal(k.tcpTimeouts + k.tcpTailProbes, 3, "each counted as a timeout or a tail-loss probe");
    g.ack = (g.ack + 1000) >>> 0;
    g.send(TCP_ACK_FLAG);
    const after = g.h.out.length;
    g.h.advance(10_000);
    assert.equal(g.sentSince(after).filter((s) => s.data.length > 0).length, 0, "nothing left to retransmit");
    assert.equal(g.state, "ESTABLISHED");
  } finally {
    g.close();
  }
});

Deno.test("TCP fast retransmit with SACK: three duplicate ACKs resend the hole before any timer (RFC 6675 §5)", () => {
  const g = guest({ sack: true });
  try {
    g.open();
    const flight = g.hostSends(bytes(10 * 1460));
    assert.equal(flight.length, 10, "the initial window of ten segments (RFC 6928)");
    const hole = flight[0].tcp.seq;
    // segments 2..4 arrive, 1 is lost: the guest repeats its ACK with growing SACK blocks
    const retransmitted: Sent[] = [];
    for (let i = 1; i <= 3; i++) {
      const right = (flight[i].tcp.seq + 1460) >>> 0;
      retransmitted.push(...g.send(TCP_ACK_FLAG, undefined, { sack: [[flight[1].tcp.seq, right]] }));
    }
    const resent = retransmitted.filter((s) => s.tcp.seq === hole && s.data.length > 0);
    assert.equal(resent.length, 1, "the hole is resent once, without waiting for the RTO");
    assert.deepEqual(resent[0].data, flight[0].data);
    assert.ok(g.h.stack.counters.tcpRetransmits >= 1);
    assert.equal(g.h.stack.counters.tcpTimeouts, 0);
  } finally {
    g.close();
  }
});

Deno.test("TCP zero window: the relay stops, probes on the timer, and resumes when the window opens (RFC 9293 §3.8.6.1)", () => {
  const g = guest();
  try {
    g.open();
    g.send(TCP_ACK_FLAG, undefined, { window: 0 });
    const before = g.h.out.length;
    g.socket.send(bytes(4000));
    assert.equal(
      g.sentSince(before).filter((s) => s.data.length > 0).length,
      0,
      "no data into a zero window",
    );
    const b2 = g.h.out.length;
    g.h.advance(3000);
    const probes = g.sentSince(b2);
    assert.ok(probes.length >= 1, "a window probe is sent");
    assert.ok(probes.every((p) => p.data.length <= 1), "probes carry at most one byte");
    assert.equal(g.state, "ESTABLISHED", "a closed window is not a dead peer");
    const b3 = g.h.out.length;
    g.send(TCP_ACK_FLAG, undefined, { window: 65535 });
    const sent = g.sentSince(b3).filter((s) => s.data.length > 0);
    assert.ok(sent.reduce((n, s) => n + s.data.length, 0) >= 3999, "the window opened: data flows");
  } finally {
    g.close();
  }
});

Deno.test("TCP window scaling: the guest's window field is shifted by its scale (RFC 7323 §2.3)", () => {
  const g = guest({ wscale: 7 });
  try {
    g.open();
    g.send(TCP_ACK_FLAG, undefined, { window: 4 }); // 4 << 7 = 512 bytes
    const before = g.h.out.length;
    g.socket.send(bytes(5000));
    const sent = g.sentSince(before).reduce((n, s) => n + s.data.length, 0);
    assert.equal(sent, 512, "exactly the scaled window is sent");
  } finally {
    g.close();
  }
});

Deno.test("TCP out-of-order and overlapping guest data reach the host once, in order; SACK reports the island (RFC 2018)", () => {
  const g = guest({ sack: true });
  try {
    g.open();
    const data = bytes(3000, 9);
    // the second part first: held, and SACKed
    const sack = g.send(TCP_ACK_FLAG, data.subarray(1000, 2000), { seq: 1001 + 1000 });
    assert.equal(g.socket.written.length, 0, "nothing delivered across a hole");
    assert.equal(sack[0].tcp.ack, 1001, "duplicate ACK for the hole");
    assert.equal(sack[0].tcp.sackCount, 1);
    assert.deepEqual([sack[0].tcp.sackBlocks[0], sack[0].tcp.sackBlocks[1]], [2001, 3001]);
    // the first part, overlapping the island by 500 bytes
    g.send(TCP_ACK_FLAG, data.subarray(0, 1500), { seq: 1001 });
    assert.deepEqual(g.socket.written, data.subarray(0, 2000), "hole filled, island delivered, overlap once");
    // an old retransmission of delivered bytes plus 1000 new ones
    const before = g.h.out.length;
    g.send(TCP_ACK_FLAG, data.subarray(1500, 3000), { seq: 1001 + 1500 });
    assert.deepEqual(g.socket.written, data);
    g.h.advance(500); // a delayed ACK is due within 500 ms (RFC 9293 §3.8.6.3)
    assert.equal(g.sentSince(before).at(-1)?.tcp.ack, 1001 + 3000);
  } finally {
    g.close();
  }
});

Deno.test("TCP acknowledgments: the in-order segments of one read are acknowledged once after it and at least every 64 KiB; segments read apart, every second one (RFC 9293 §3.8.6.3)", async () => {
  const g = guest({ wscale: 7 });
  const afterTheRead = () => new Promise((r) => setTimeout(r, 0));
  try {
    g.open();
    const acksIn = (sent: Sent[]) => sent.filter((s) => s.data.length === 0 && s.tcp.flags === TCP_ACK_FLAG);
    // `n` full segments handed to the stack in one synchronous run, as the frames of one read are
    const read = (n: number) => {
      for (let i = 0; i < n; i++) {
        g.send(TCP_ACK_FLAG, bytes(1460, i));
        g.seq = (g.seq + 1460) >>> 0;
      }
    };
    let before = g.h.out.length;
    read(10);
    assert.equal(acksIn(g.sentSince(before)).length, 0, "no ACK while the read is processed");
    await afterTheRead();
    let acks = acksIn(g.sentSince(before));
    assert.equal(acks.length, 1, "one ACK for the ten segments of one read, as Linux sends for a GRO unit");
    assert.equal(acks[0].tcp.ack, g.seq, "it acknowledges all of them");
    // 60 segments (87,600 bytes) in one read: an ACK as soon as 64 KiB are unacknowledged, one after the read
    before = g.h.out.length;
    read(60);
    acks = acksIn(g.sentSince(before));
    assert.equal(acks.length, 1, "one ACK within the read, at 64 KiB");
    assert.ok(acks[0].tcp.ack - (g.seq - 60 * 1460) >= 64 * 1024, "after at least 64 KiB");
    await afterTheRead();
    acks = acksIn(g.sentSince(before));
    assert.equal(acks.length, 2);
    assert.equal(acks[1].tcp.ack, g.seq);
    // one segment per read (an interactive guest, or one that sends as fast as it is read): every second one
    before = g.h.out.length;
    for (let i = 0; i < 6; i++) {
      read(1);
      await afterTheRead();
    }
    acks = acksIn(g.sentSince(before));
    assert.deepEqual(acks.map((a) => a.tcp.ack), [2, 4, 6].map((k) => (g.seq - (6 - k) * 1460) >>> 0));
    assert.equal(g.socket.written.length, 76 * 1460, "every byte reached the host");
  } finally {
    g.close();
  }
});

Deno.test("TCP host reset: the guest gets a RST and the flow is freed", () => {
  const g = guest();
  try {
    g.open();
    const before = g.h.out.length;
    g.socket.fail("ECONNRESET");
    const [rst] = g.sentSince(before);
    assert.equal(rst.tcp.flags & TCP_RST, TCP_RST);
    assert.equal(g.conns.length, 0);
  } finally {
    g.close();
  }
});

Deno.test("SYN-RECEIVED: an unanswered SYN-ACK is sent again after the RTO (RFC 6298 §2.1: 1 s) and counted", () => {
  const g = new ScriptedGuest();
  try {
    g.send(TCP_SYN, undefined, { ack: 0 });
    g.socket.accept();
    const [first] = g.sentSince(0);
    assert.equal(first.tcp.flags, TCP_SYN | TCP_ACK_FLAG);
    const before = g.h.out.length;
    g.h.advance(999);
    assert.equal(g.sentSince(before).length, 0, "nothing before the RTO");
    g.h.advance(2);
    const [again] = g.sentSince(before);
    assert.equal(again.tcp.flags, TCP_SYN | TCP_ACK_FLAG);
    assert.equal(again.tcp.seq, first.tcp.seq, "the same SYN-ACK");
    assert.equal(g.h.stack.counters.tcpSynAckRetransmits, 1);
    // a retransmitted SYN from the guest (our SYN-ACK lost) is answered with the SYN-ACK again, counted too
    g.send(TCP_SYN, undefined, { ack: 0 });
    assert.equal(g.h.stack.counters.tcpSynAckRetransmits, 2);
  } finally {
    g.close();
  }
});

/** Sets the IPv4 header checksum of `frame` (Ethernet, then the IPv4 header) after an edit. */
function refreshIpChecksum(frame: Uint8Array): Uint8Array {
  frame[24] = frame[25] = 0;
  const c = internetChecksum(frame, 14, (frame[14] & 0x0f) * 4);
  frame[24] = c >> 8;
  frame[25] = c & 0xff;
  return frame;
}

/** `frame` with four bytes of IPv4 options (three NOPs and an end of list, RFC 791) after its header. */
function withIpOptions(frame: Uint8Array): Uint8Array {
  const f = new Uint8Array(frame.length + 4);
  f.set(frame.subarray(0, 34));
  f.set([1, 1, 1, 0], 34);
  f.set(frame.subarray(34), 38);
  f[14] = 0x46;
  const total = ((f[16] << 8) | f[17]) + 4;
  f[16] = total >> 8;
  f[17] = total & 0xff;
  return refreshIpChecksum(f);
}

Deno.test("header prediction: an upload's segments skip the Ethernet and IPv4 parse; a frame that differs in anything is judged in full", () => {
  const g = guest();
  try {
    g.open();
    const counters = g.h.stack.counters;
    const up = bytes(4 * 1000);
    const deliver = (i: number) => {
      g.send(TCP_ACK_FLAG, up.subarray(i * 1000, (i + 1) * 1000));
      g.seq += 1000;
    };
    deliver(0);
    deliver(1);
    assert.equal(counters.tcpSegmentsPredicted, 2, "segments after the handshake's ACK repeat its headers");
    assert.deepEqual(g.socket.written, up.subarray(0, 2000));
    const next = up.subarray(2000, 3000);
    const written = () => g.socket.written.length;
    // each altered copy of the next segment must meet the full path's verdict, not reach the connection
    const ipSum = g.frame(TCP_ACK_FLAG, next);
    ipSum[24] ^= 0xff;
    g.input(ipSum);
    assert.equal(g.h.drops("ipv4-malformed"), 1, "a bad IPv4 header checksum is a drop");
    const tcpSum = g.frame(TCP_ACK_FLAG, next);
    tcpSum[34 + 16] ^= 0xff;
    g.input(tcpSum);
    assert.equal(g.h.drops("tcp-malformed"), 1, "a bad TCP checksum is a drop");
    const otherMac = g.frame(TCP_ACK_FLAG, next);
    otherMac[5] ^= 0x01;
    g.input(otherMac);
    assert.equal(g.h.drops("not-for-gateway-mac"), 1, "a frame for another MAC is not ours");
    const fragment = g.frame(TCP_ACK_FLAG, next);
    fragment[20] |= 0x20; // more fragments
    g.input(refreshIpChecksum(fragment));
    const shortIp = g.frame(TCP_ACK_FLAG, next);
    shortIp[16] = 0; // total length 0x00xx: shorter than its own headers
    g.input(refreshIpChecksum(shortIp));
    assert.equal(g.h.drops("ipv4-malformed"), 2, "a total length below the headers is a drop");
    assert.equal(written(), 2000, "none of them reached the host");
    assert.equal(counters.tcpSegmentsPredicted, 2);
    // an IPv4 header with options is parsed in full and delivered all the same; the segment after it is
    // parsed in full too (one with options is not remembered), and predicted again from then on
    g.input(withIpOptions(g.frame(TCP_ACK_FLAG, next)));
    g.seq += 1000;
    assert.deepEqual(g.socket.written, up.subarray(0, 3000));
    assert.equal(counters.tcpSegmentsPredicted, 2);
    g.send(TCP_ACK_FLAG);
    g.send(TCP_ACK_FLAG);
    assert.equal(counters.tcpSegmentsPredicted, 3);
    // the guest resets the flow: the next segment of its four-tuple meets no connection, not the freed one
    g.send(TCP_RST);
    assert.equal(g.conns.length, 0);
    const [rst] = g.send(TCP_ACK_FLAG, up.subarray(3000, 4000));
    assert.equal(rst.tcp.flags & TCP_RST, TCP_RST, "a segment for no connection draws a reset");
    assert.equal(g.h.drops("tcp-no-connection"), 1);
    assert.equal(written(), 3000);
  } finally {
    g.close();
  }
});

Deno.test("TCP congestion window: a connection that never fills its window does not grow it; one that does, doubles per round (draft-ietf-ccwg-ratelimited-increase §3)", () => {
  const g = guest({ wscale: 7 });
  try {
    g.open();
    g.window = 0xffff; // 8 MiB with the scale: the guest's window is never the limit
    const cwnd = () => g.conns[0].inspect().cwnd as number;
    const initial = cwnd();
    assert.equal(initial, 10 * 1460, "the initial window (RFC 6928)");
    // a request/response connection: one segment out, acknowledged, a thousand times over
    for (let i = 0; i < 1000; i++) {
      const [seg] = g.hostSends(bytes(1460, i));
      g.ack = (seg.tcp.seq + seg.data.length) >>> 0;
      g.send(TCP_ACK_FLAG);
    }
    assert.equal(cwnd(), initial, "a flight of one segment never earns a larger window");
    // the next bulk answer leaves as the initial window, not as a thousand segments at once
    let flight = g.hostSends(bytes(200 * 1460));
    assert.equal(flight.length, 10, "one initial window's worth");
    // a window-limited sender grows: each round's ACKs double what the next round may send
    for (const expected of [20, 40, 80]) {
      flight = g.ackEach(flight);
      assert.equal(flight.length, expected, `slow start: ${expected} segments in the next round`);
    }
  } finally {
    g.close();
  }
});

Deno.test("TCP host reads paused under the SYN's unscaled window resume when the guest's scaled window arrives (RFC 7323 §2.2)", () => {
  const g = guest({ wscale: 7 });
  try {
    g.send(TCP_SYN, undefined, { ack: 0 });
    const before = g.h.out.length;
    g.socket.accept();
    const [synAck] = g.sentSince(before);
    // a host that speaks first fills the queue the SYN's window allows (2 × 64 KiB) before the handshake ends
    g.socket.send(bytes(200 * 1024));
    assert.ok(g.socket.paused, "the host's reads wait while only the SYN's 64 KiB window is known");
    g.seq = 1001;
    g.ack = (synAck.tcp.seq + 1) >>> 0;
    g.window = 0xffff; // 8 MiB with the scale
    g.send(TCP_ACK_FLAG);
    assert.equal(g.state, "ESTABLISHED");
    assert.ok(
      !g.socket.paused,
      "the scaled window makes room: the host's reads go on before any data is acknowledged",
    );
  } finally {
    g.close();
  }
});

Deno.test("TCP restart after idle: a connection silent for longer than the RTO sends again from the initial window (RFC 5681 §4.1)", () => {
  const g = guest({ wscale: 7 });
  try {
    g.open();
    g.window = 0xffff; // 8 MiB with the scale
    let flight = g.hostSends(bytes(150 * 1460));
    while (flight.length > 0) flight = g.ackEach(flight); // 10, 20, 40, 80: all of it acknowledged
    const grown = g.conns[0].inspect().cwnd as number;
    assert.ok(grown >= 80 * 1460, `slow start grew the window: ${grown}`);
    // a short pause keeps what was learnt
    g.h.advance(20);
    flight = g.hostSends(bytes(100 * 1460));
    const sum = (f: Sent[]) => f.reduce((n, s) => n + s.data.length, 0);
    assert.equal(sum(flight), 100 * 1460, "20 ms idle: all of it at once (the grown window)");
    while (flight.length > 0) flight = g.ackEach(flight);
    // longer than the RTO (1 s before any RTT sample was long): the initial window again
    g.h.advance(3000);
    flight = g.hostSends(bytes(100 * 1460));
    assert.equal(flight.length, 10, "3 s idle: ten segments (RFC 6928's initial window)");
    assert.equal(sum(flight), 10 * flight[0].data.length);
    assert.equal(g.ackEach(flight).length, 20, "slow start again, toward the old window");
  } finally {
    g.close();
  }
});

Deno.test("TCP header prediction: the guest's in-order data still carries its ACKs and windows — a data segment that opens the window or acknowledges data takes effect", () => {
  const g = guest();
  try {
    g.open();
    const c = g.conns[0];
    // the window closes on a pure ACK; host data waits for it
    g.send(TCP_ACK_FLAG, undefined, { window: 0 });
    g.socket.send(bytes(3000));
    assert.equal(c.inspect().bytesInFlight, 0, "nothing into a zero window");
    // in-order data from the guest that also opens its window (SEG.ACK = SND.UNA, new SEG.WND)
    const reopened = g.send(TCP_ACK_FLAG | TCP_PSH, bytes(100), { window: 65535 });
    g.seq += 100;
    assert.equal(c.inspect().guestWindow, 65535, "the data segment's window is taken");
    const sent = reopened.filter((s) => s.data.length > 0);
    assert.equal(sent.reduce((n, s) => n + s.data.length, 0), 3000, "the waiting host data is sent at once");
    // in-order data that acknowledges all of it (SEG.ACK > SND.UNA)
    g.ack = (sent.at(-1)!.tcp.seq + sent.at(-1)!.data.length) >>> 0;
    g.send(TCP_ACK_FLAG | TCP_PSH, bytes(100, 3));
    g.seq += 100;
    assert.equal(c.inspect().bytesInFlight, 0, "the data segment's ACK is taken");
    assert.equal(c.inspect().timerArmed, false, "nothing left to retransmit");
    // then plain in-order data: the predicted path, the bytes reach the host exactly
    for (let i = 0; i < 4; i++) {
      g.send(TCP_ACK_FLAG, bytes(1000, 10 + i));
      g.seq += 1000;
    }
    const want = [bytes(100), bytes(100, 3), ...[0, 1, 2, 3].map((i) => bytes(1000, 10 + i))];
    assert.deepEqual(g.socket.written, new Uint8Array(want.flatMap((b) => [...b])));
    assert.equal(c.inspect().bytesFromGuest, 4200);
  } finally {
    g.close();
  }
});

Deno.test("TCP receive window: a guest may have 3 MiB in flight toward a host that takes every byte — the guest's queues and its link's socket buffers hold that much before we read it (RFC 7323 §2)", () => {
  const g = guest({ wscale: 7 });
  try {
    g.open();
    const data = bytes(3 * 1024 * 1024, 5);
    // the first ACK after the handshake already offers it (the SYN-ACK's window is unscaled, RFC 7323 §2.2)
    const before = g.h.out.length;
    g.send(TCP_ACK_FLAG | TCP_PSH, data.subarray(0, 1));
    g.h.advance(500); // the delayed ACK (RFC 9293 §3.8.6.3)
    const offer = g.sentSince(before).at(-1);
    assert.ok(offer && offer.tcp.ack === 1002, "the first byte is acknowledged");
    assert.ok(offer.tcp.window << 7 >= data.length - 1, `offered ${offer.tcp.window << 7} bytes`);
    // the rest without waiting for an ACK, in 60000-byte segments
    for (let off = 1; off < data.length; off += 60000) {
      const end = Math.min(off + 60000, data.length);
      g.send(TCP_ACK_FLAG, data.subarray(off, end), { seq: 1001 + off });
    }
    assert.equal(g.socket.written.length, data.length, "no byte was beyond the window");
    assert.deepEqual(g.socket.written, data);
  } finally {
    g.close();
  }
});

Deno.test("TCP tail loss probe: with SACK a silent guest gets the flight's last segment again after 2·SRTT, before the RTO; without SACK, or with one segment in flight, the RTO resends the first (RFC 8985 §7)", () => {
  for (const [sack, segments] of [[true, 5], [false, 5], [true, 1]] as const) {
    const g = guest({ sack });
    try {
      g.open();
      const flight = g.hostSends(bytes(segments * 1460));
      assert.equal(flight.length, segments);
      const start = g.h.now;
      let resent: Sent | undefined;
      while (!resent && g.h.now - start < 3000) {
        const b = g.h.out.length;
        g.h.advance(5);
        resent = g.sentSince(b).find((s) => s.data.length > 0);
      }
      const after = g.h.now - start;
      const k = g.h.stack.counters;
      const label = `SACK ${sack}, ${segments} segment(s): resent at ${after} ms, seq offset ${
        g.off(resent!.tcp.seq)
      }`;
      if (sack && segments > 1) {
        assert.ok(after < 200, `a probe before the RTO: ${label}`);
        assert.equal(resent!.tcp.seq, flight.at(-1)!.tcp.seq, `the last segment: ${label}`);
        assert.deepEqual([k.tcpTailProbes, k.tcpTimeouts], [1, 0], label);
      } else {
        assert.ok(after >= 200, `no probe, the RTO: ${label}`);
        assert.equal(resent!.tcp.seq, flight[0].tcp.seq, `the first segment: ${label}`);
        assert.deepEqual([k.tcpTailProbes, k.tcpTimeouts], [0, 1], label);
      }
    } finally {
      g.close();
    }
  }
});

Deno.test("TCP spurious timeout without timestamps: F-RTO sends new data after the first ACK and judges by the second — original data acknowledged undoes the timeout, a duplicate ACK resends from SND.UNA (RFC 5682 §2)", () => {
  for (
    const second of [
      "advances",
      "duplicate",
      "first is duplicate",
      "all at once",
      "all at once after a backoff",
      "all at once after a hole",
    ] as const
  ) {
    const g = guest();
    try {
      g.open();
      const flight = g.hostSends(bytes(40 * 1460));
      assert.equal(flight.length, 10, "the initial window");
      const mss = flight[0].data.length;
      if (second === "all at once after a hole") g.send(TCP_ACK_FLAG); // a duplicate ACK: a segment missing
      // the guest falls silent past the RTO
      let before = g.h.out.length;
      const timeouts = second === "all at once after a backoff" ? 2 : 1;
      for (let t = 0; t < 3000 && g.h.stack.counters.tcpTimeouts < timeouts; t += 10) g.h.advance(10);
      assert.equal(g.h.stack.counters.tcpTimeouts, timeouts);
      const sentBefore = g.sentSince(before).filter((s) => s.data.length > 0);
      const sndMax = Math.max(...[...flight, ...sentBefore].map((s) => g.off(s.tcp.seq) + s.data.length));
      if (second.startsWith("all at once")) {
        // one ACK for everything sent, past the retransmitted segment: no second ACK can follow. Without a
        // duplicate ACK before, no hole was there (RFC 5681 §4.2): the guest was late
        const ssthresh = g.conns[0].inspect().ssthresh as number;
        g.ack = (g.relayIss + 1 + sndMax) >>> 0;
        const next = g.send(TCP_ACK_FLAG).filter((s) => s.data.length > 0);
        assert.ok(next.length > 0 && g.off(next[0].tcp.seq) === sndMax, "data goes on after what was sent");
        const after = g.conns[0].inspect();
        if (second !== "all at once after a hole") {
          assert.equal(g.h.stack.counters.tcpSpuriousTimeouts, timeouts, "judged spurious, each timeout");
          assert.equal(after.ssthresh, null, "ssthresh as before the timeout: none yet");
          assert.ok((after.cwnd as number) >= 10 * mss, `cwnd back to the initial window: ${after.cwnd}`);
        } else {
          assert.equal(g.h.stack.counters.tcpSpuriousTimeouts, 0, "a reported hole: the timeout stands");
          assert.equal(after.ssthresh, ssthresh, "ssthresh stays halved");
        }
        continue;
      }
      if (second === "first is duplicate") {
        // step 2a: a duplicate ACK first — the timeout stands, go-back-N goes on
        g.send(TCP_ACK_FLAG);
        g.ack = (flight[0].tcp.seq + mss) >>> 0;
        const next = g.send(TCP_ACK_FLAG).filter((s) => s.data.length > 0);
        assert.equal(g.h.stack.counters.tcpSpuriousTimeouts, 0);
        assert.ok(
          next.length > 0 && g.off(next[0].tcp.seq) === mss,
          "go-back-N: the second segment again",
        );
        continue;
      }
      // step 2b: the first segment acknowledged — up to two segments never sent before, nothing resent
      g.ack = (flight[0].tcp.seq + mss) >>> 0;
      before = g.h.out.length;
      const fresh = g.send(TCP_ACK_FLAG).filter((s) => s.data.length > 0);
      assert.deepEqual(
        fresh.map((s) => g.off(s.tcp.seq)),
        [sndMax, sndMax + mss],
        "two new segments after what was sent",
      );
      if (second === "advances") {
        // step 3b: the second segment, never retransmitted, acknowledged: the timeout was spurious
        g.ack = (flight[1].tcp.seq + mss) >>> 0;
        const next = g.send(TCP_ACK_FLAG).filter((s) => s.data.length > 0);
        assert.equal(g.h.stack.counters.tcpSpuriousTimeouts, 1, "judged spurious");
        assert.ok(
          next.every((s) => g.off(s.tcp.seq) >= sndMax + 2 * mss),
          `nothing the guest holds is sent again: offsets ${next.map((s) => g.off(s.tcp.seq)).join(", ")}`,
        );
        const cwnd = g.conns[0].inspect().cwnd as number;
        assert.ok(cwnd >= sndMax, `the window is what is in flight again: ${cwnd}`);
      } else {
        // step 3a: a duplicate ACK — the loss was real: resend from SND.UNA in slow start
        const next = g.send(TCP_ACK_FLAG).filter((s) => s.data.length > 0);
        assert.equal(g.h.stack.counters.tcpSpuriousTimeouts, 0, "a real loss stays a timeout");
        assert.ok(next.length > 0 && g.off(next[0].tcp.seq) === mss, "go-back-N from SND.UNA");
        assert.ok((g.conns[0].inspect().cwnd as number) <= 3 * mss, "cwnd at most 3 SMSS");
      }
    } finally {
      g.close();
    }
  }
});

Deno.test("TCP spurious timeout: an ACK echoing the original transmission's timestamp undoes the timeout — no go-back-N resend, the window restored (RFC 3522 §3.2, RFC 4015 §3.2)", () => {
  for (const spurious of [true, false]) {
    const g = guest({ timestamps: true });
    try {
      g.open();
      const flight = g.hostSends(bytes(20 * 1460));
      assert.equal(flight.length, 10, "the initial window");
      const originalTs = flight[0].tcp.tsVal;
      const mss = flight[0].data.length; // 1448: the timestamps take 12 bytes of each segment
      // the guest falls silent (descheduled) past the RTO
      let before = g.h.out.length;
      for (let t = 0; t < 3000 && g.h.stack.counters.tcpTimeouts === 0; t += 10) g.h.advance(10);
      assert.equal(g.h.stack.counters.tcpTimeouts, 1);
      const resent = g.sentSince(before).filter((s) => s.data.length > 0 && s.tcp.seq === flight[0].tcp.seq);
      const retransmitTs = resent.at(-1)!.tcp.tsVal;
      assert.ok(retransmitTs > originalTs, `the retransmission's TSval ${retransmitTs} > ${originalTs}`);
      // the ACK of the first segment, sent for the original (late) or for the retransmission (the original lost)
      g.ack = (flight[0].tcp.seq + flight[0].data.length) >>> 0;
      before = g.h.out.length;
      g.send(TCP_ACK_FLAG, undefined, { tsEcr: spurious ? originalTs : retransmitTs });
      const next = g.sentSince(before).filter((s) => s.data.length > 0);
      assert.ok(next.length > 0, "data goes on after the ACK");
      if (spurious) {
        assert.equal(g.h.stack.counters.tcpSpuriousTimeouts, 1, "judged spurious");
        assert.ok(
          next.every((s) => g.off(s.tcp.seq) >= 10 * mss),
          `nothing the guest holds is sent again: offsets ${next.map((s) => g.off(s.tcp.seq)).join(", ")}`,
        );
        const cwnd = g.conns[0].inspect().cwnd as number;
        assert.ok(cwnd >= 10 * mss, `the window is what is in flight again: ${cwnd}`);
      } else {
        assert.equal(g.h.stack.counters.tcpSpuriousTimeouts, 0, "a real loss stays a timeout");
        assert.equal(next[0].tcp.seq, flight[1].tcp.seq, "go-back-N: the second segment again");
      }
    } finally {
      g.close();
    }
  }
});

Deno.test("TCP after the guest's link was down (a resumed session): what is in flight goes again at once, its backoff restarted, and an ACK echoing a timestamp from before the outage does not undo it (RFC 6298 §5.5, RFC 3522 §3.2)", () => {
  const g = guest({ timestamps: true });
  try {
    g.open();
    const flight = g.hostSends(bytes(20 * 1460));
    const originalTs = flight[0].tcp.tsVal;
    /** Ms until the first segment goes again, advancing the clock 10 ms at a time (-1: not within `ms`). */
    const nextResend = (ms: number) => {
      const before = g.h.out.length, start = g.h.now;
      for (let t = 0; t < ms; t += 10) {
        g.h.advance(10);
        if (g.sentSince(before).some((s) => s.tcp.seq === flight[0].tcp.seq && s.data.length > 0)) {
          return g.h.now - start;
        }
      }
      return -1;
    };
    assert.ok(nextResend(3000) > 0);
    // the link is gone for 10 s: every retransmission is lost, the RTO backs off
    for (let t = 0; t < 10_000; t += 10) g.h.advance(10);
    const backedOff = g.conns[0].inspect().rtoMs as number;
    const before = g.h.out.length;
    g.h.stack.guestReturned();
    const resent = g.sentSince(before).filter((s) => s.data.length > 0);
    assert.equal(resent[0]?.tcp.seq, flight[0].tcp.seq, "the first segment in flight, at once");
    const rto = g.conns[0].inspect().rtoMs as number;
    assert.ok(rto * 4 <= backedOff, `the backoff restarted: RTO ${rto} ms, ${backedOff} before`);
    // the guest had the first segment from before the outage: its ACK echoes that old timestamp
    g.ack = (flight[0].tcp.seq + flight[0].data.length) >>> 0;
    const afterAck = g.h.out.length;
    g.send(TCP_ACK_FLAG, undefined, { tsEcr: originalTs });
    const next = g.sentSince(afterAck).filter((s) => s.data.length > 0);
    assert.equal(g.h.stack.counters.tcpSpuriousTimeouts, 0, "the outage's losses are real");
    assert.equal(next[0]?.tcp.seq, flight[1].tcp.seq, "go-back-N: the second segment again");
  } finally {
    g.close();
  }
});
