/**
 * Cost of one guest→host TCP data segment through a tenant's stack, sockets aside: a full 1514-byte frame
 * (1448 bytes of payload, timestamps on, as Linux sends them) enters `Stack.input` from a receive block, as
 * the stream transport hands it over, and its payload reaches the host socket's `write`; the stack's
 * acknowledgements to the guest are counted and dropped. What an upload costs per frame in user space on
 * top of the system calls. Run: `deno task bench` (or `deno bench -A bench/stack_bench.ts`).
 *
 * `deno run -A bench/stack_bench.ts [frames]` runs the same path in a plain loop and prints ns per frame,
 * for `--cpu-prof`; `--after-idle` times a few segments after the thread slept (see `afterIdle`);
 * `--connections [n]` times a whole short connection instead (see `shortConnections`).
 */
import { StackHarness, tcpFrame } from "../tests/_frames.ts";
import { FakeHost, FakeTcpSocket } from "../tests/_fake_host.ts";
import { TCP_ACK_FLAG, TCP_FIN, TCP_PSH, TCP_SYN } from "../src/wire/tcp.ts";
import { put32, u16, u32 } from "../src/wire/bytes.ts";
import { checksumUpdate16 } from "../src/wire/checksum.ts";
import { takeReceiveBlock } from "../src/wire/checksum_variants.ts";
import type { HostTcpSocket, TcpHandlers } from "../src/host/host.ts";
import { Timer, TimerWheel } from "../src/stack/timer_wheel.ts";

const GUEST = 0x0a00020f;
const GATEWAY = 0x0a000202;
const MAC = 0x02000000000d;
const PAYLOAD = 1448;
/** Where the TCP header starts in the frame (Ethernet 14 + IPv4 20). */
const TCP_AT = 34;

/** A host socket that takes every byte at once and keeps none (a fast, always-writable peer). */
class SinkSocket extends FakeTcpSocket {
  bytes = 0;
  override write(data: Uint8Array): boolean {
    this.bytes += data.length;
    return true;
  }
}

class SinkHost extends FakeHost {
  override connectTcp(address: string, port: number, handlers: TcpHandlers): HostTcpSocket {
    const s = new SinkSocket(handlers, address, port);
    this.sockets.push(s);
    return s;
  }
}

/** One established guest connection, and a data segment that `next()` moves along the sequence space. */
function establishedUpload(): { next: () => void; acks: () => number; written: () => number } {
  let host!: SinkHost;
  let acks = 0;
  const h = new StackHarness(() => {}, (clock) => (host = new SinkHost(clock)));
  const header = { srcMac: MAC, src: GUEST, dst: GATEWAY, sport: 40000, dport: 8080, ack: 0 };
  h.stack.input(
    tcpFrame({ ...header, seq: 1000, flags: TCP_SYN }, undefined, (t) => {
      t.mss = 1460;
      t.windowScale = 7;
      t.sackPermitted = true;
      t.hasTimestamps = true;
    }),
  );
  host.sockets[0].accept();
  const synAck = h.raw.at(-1)!;
  const relayIss = u32(synAck, TCP_AT + 4);
  // from here on only count what the stack sends the guest: dissecting every ACK would be the benchmark
  // deno-lint-ignore no-explicit-any
  (h.stack as any).output = () => acks++;
  const stamp = (t: { hasTimestamps: boolean; tsVal: number; tsEcr: number }) => {
    t.hasTimestamps = true;
    t.tsVal = 1;
    t.tsEcr = 1;
  };
  h.stack.input(tcpFrame({ ...header, seq: 1001, ack: relayIss + 1, flags: TCP_ACK_FLAG }, undefined, stamp));
  const block = takeReceiveBlock()!;
  const built = tcpFrame(
    { ...header, seq: 1001, ack: relayIss + 1, flags: TCP_ACK_FLAG },
    new Uint8Array(PAYLOAD).fill(0x5a),
    stamp,
  );
  const frame = block.subarray(0, built.length);
  frame.set(built);
  let seq = 1001;
  return {
    next() {
      h.stack.input(block, 0, frame.length);
      // then the next segment in sequence: seq moves, the checksum follows (RFC 1624), the rest stays
      const old = seq;
      seq = (seq + PAYLOAD) >>> 0;
      put32(frame, TCP_AT + 4, seq);
      let ck = u16(frame, TCP_AT + 16);
      ck = checksumUpdate16(ck, old >>> 16, seq >>> 16);
      ck = checksumUpdate16(ck, old & 0xffff, seq & 0xffff);
      frame[TCP_AT + 16] = ck >> 8;
      frame[TCP_AT + 17] = ck & 0xff;
    },
    acks: () => acks,
    written: () => (host.sockets[0] as SinkSocket).bytes,
  };
}

/**
 * `--after-idle`: the same few segments after the thread slept a while, as a lone request finds the relay.
 * On this 2-vCPU VM four segments took 1.4–3.2 µs back to back, 4–22 µs after 2 ms asleep and 17–37 µs
 * after 5 ms (cold caches, five runs): what a wake-up from idle costs grows with everything it touches.
 */
function afterIdle(): void {
  const up = establishedUpload();
  for (let i = 0; i < 200_000; i++) up.next();
  const asleep = new Int32Array(new SharedArrayBuffer(4));
  for (const idleMs of [0, 0.1, 0.5, 1, 2, 5]) {
    const us: number[] = [];
    for (let r = 0; r < 400; r++) {
      if (idleMs > 0) Atomics.wait(asleep, 0, 0, idleMs);
      const t0 = performance.now();
      for (let i = 0; i < 4; i++) up.next();
      us.push((performance.now() - t0) * 1000);
    }
    us.sort((a, b) => a - b);
    console.log(
      `after ${idleMs} ms asleep: 4 segments in ${us[200].toFixed(1)} µs (p90 ${us[360].toFixed(1)})`,
    );
  }
}

/**
 * `--connections`: the stack's own time for whole short connections, one after another, as a sequential
 * connection benchmark makes them (connect, one byte each way, the guest closes first): the guest's SYN,
 * the host's connect, the guest's ACK and request, the host's answer, the guest's ACK and FIN, the host's
 * FIN, the guest's last ACK — six guest frames and three host events, each timed on its own (frames are
 * built between the timings).
 * What a connection costs in the stack when its code is hot, against what it costs between the system
 * calls of a real run (`bench/e2e_tcp.ts --inside`).
 */
async function shortConnections(n: number): Promise<void> {
  let host!: FakeHost;
  let iss = 0;
  let frames = 0;
  const h = new StackHarness(() => {}, (clock) => (host = new FakeHost(clock)));
  // deno-lint-ignore no-explicit-any
  (h.stack as any).output = (f: Uint8Array) => {
    frames++;
    if (f[TCP_AT + 13] & TCP_SYN) iss = u32(f, TCP_AT + 4);
  };
  const stamp = (t: { hasTimestamps: boolean; tsVal: number; tsEcr: number }) => {
    t.hasTimestamps = true;
    t.tsVal = 1;
    t.tsEcr = 1;
  };
  const one = new Uint8Array([0x78]);
  let spent = 0;
  const timed = (fn: () => void) => {
    const t0 = performance.now();
    fn();
    spent += performance.now() - t0;
  };
  const run = async (count: number) => {
    spent = 0;
    for (let i = 0; i < count; i++) {
      const header = { srcMac: MAC, src: GUEST, dst: GATEWAY, sport: 20000 + (i % 40000), dport: 8080 };
      /** A guest segment after the handshake: `sent` bytes sent before it, `got` of the relay's acknowledged. */
      const segment = (sent: number, got: number, flags: number, payload?: Uint8Array) =>
        tcpFrame({ ...header, seq: 1001 + sent, ack: iss + 1 + got, flags }, payload, stamp);
      const syn = tcpFrame({ ...header, seq: 1000, ack: 0, flags: TCP_SYN }, undefined, (t) => {
        t.mss = 1460;
        t.windowScale = 7;
        t.sackPermitted = true;
        t.hasTimestamps = true;
      });
      timed(() => h.stack.input(syn));
      const socket = host.sockets.pop()!;
      timed(() => socket.accept());
      await null;
      const ack = segment(0, 0, TCP_ACK_FLAG), request = segment(0, 0, TCP_ACK_FLAG | TCP_PSH, one);
      timed(() => h.stack.input(ack));
      timed(() => h.stack.input(request));
      await null;
      timed(() => socket.send(one));
      await null;
      const ackAnswer = segment(1, 1, TCP_ACK_FLAG), fin = segment(1, 1, TCP_ACK_FLAG | TCP_FIN);
      timed(() => h.stack.input(ackAnswer));
      timed(() => h.stack.input(fin));
      await null;
      timed(() => socket.finish());
      await null;
      const last = segment(2, 2, TCP_ACK_FLAG);
      timed(() => h.stack.input(last));
      await null;
    }
  };
  await run(20_000); // past the JIT's tiers
  frames = 0;
  await run(n);
  const open = h.stack.flowCounts.tcp;
  if (open !== 0) throw new Error(`${open} connections still open`);
  // what nine pairs of clock readings cost by themselves
  const t0 = performance.now();
  for (let i = 0; i < 9 * n; i++) timed(() => {});
  const clockUs = (performance.now() - t0) * 1000 / n;
  console.log(
    `${(spent * 1000 / n).toFixed(2)} µs per connection in the stack (${
      (frames / n).toFixed(1)
    } frames to the guest; the clock readings around its nine steps cost ~${clockUs.toFixed(2)} µs)`,
  );
}

if (import.meta.main && Deno.args[0] === "--after-idle") {
  afterIdle();
} else if (import.meta.main && Deno.args[0] === "--connections") {
  await shortConnections(Number(Deno.args[1] ?? 20_000));
} else if (import.meta.main) {
  const frames = Number(Deno.args[0] ?? 2_000_000);
  const up = establishedUpload();
  for (let i = 0; i < 100_000; i++) up.next(); // past the JIT's tiers
  const t0 = performance.now();
  for (let i = 0; i < frames; i++) up.next();
  const ns = (performance.now() - t0) * 1e6 / frames;
  if (up.written() !== (frames + 100_000) * PAYLOAD) throw new Error(`host got ${up.written()} bytes`);
  console.log(
    `${ns.toFixed(0)} ns per 1448-byte segment, ${
      (up.acks() / (frames + 100_000)).toFixed(2)
    } ACKs per segment`,
  );
} else {
  const up = establishedUpload();
  Deno.bench({ name: "guest→host TCP segment (1448 B) through the stack", fn: up.next });
  // what the owned loop asks before every sleep; one timer 4 s (800 ticks) ahead, as an idle UDP flow's
  const wheel = new TimerWheel(0);
  wheel.arm(new Timer(() => {}), 4000);
  Deno.bench({
    name: "timer wheel: next deadline, one timer 800 ticks ahead",
    fn: () => void wheel.nextDeadline(),
  });
}
