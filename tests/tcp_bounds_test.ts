/**
 * TCP input bounds against a scripted hostile guest: a tiny announced MSS, and a host peer that speaks
 * first. The host side is real (a loopback server); the guest is segments in, segments out.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { ip, StackHarness, tcpFrame } from "./_frames.ts";
import { TCP_ACK_FLAG, TCP_SYN, type TcpHeader } from "../src/wire/tcp.ts";
import { MIN_SND_MSS } from "../src/stack/tcp/state.ts";

const MAC = 0x02000000000b;
const GUEST = ip("10.0.2.15");

/** A loopback server that writes `banner` to every client at once. */
async function bannerServer(banner: Uint8Array): Promise<{ port: number; close(): void }> {
  const srv = net.createServer((s) => {
    s.on("error", () => {});
    s.write(banner);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  return { port: (srv.address() as net.AddressInfo).port, close: () => srv.close() };
}

/** Guest SYN with `opts`, then the ACK of our SYN-ACK; returns the SYN-ACK's header. */
async function handshake(
  h: StackHarness,
  port: number,
  opts: (t: TcpHeader) => void,
): Promise<{ synAck: TcpHeader; seg: (flags: number, ack: number, window?: number) => Uint8Array }> {
  const base = { srcMac: MAC, src: GUEST, dst: ip("10.0.2.2"), sport: 41000, dport: port };
  h.send(tcpFrame({ ...base, seq: 5000, ack: 0, flags: TCP_SYN }, undefined, opts));
  const synAck = (await h.waitFor((d) => d.tcp !== undefined && (d.tcp.flags & TCP_SYN) !== 0)).tcp!;
  const seg = (flags: number, ack: number, window = 65535) =>
    tcpFrame({ ...base, seq: 5001, ack, flags }, undefined, (t) => {
      t.window = window;
      if (synAck.hasTimestamps) {
        t.hasTimestamps = true;
        t.tsVal = 6;
        t.tsEcr = synAck.tsVal;
      }
    });
  h.send(seg(TCP_ACK_FLAG, (synAck.seq + 1) >>> 0));
  return { synAck, seg };
}

Deno.test("TCP: a guest announcing MSS 12 with timestamps gets segments of at least 48 bytes, never empty ones", async () => {
  const banner = new Uint8Array(4000).map((_, i) => i & 0xff);
  const srv = await bannerServer(banner);
  const h = new StackHarness();
  try {
    const { synAck, seg } = await handshake(h, srv.port, (t) => {
      t.mss = 12;
      t.hasTimestamps = true;
      t.tsVal = 5;
    });
    const data = () =>
      h.out.filter((d) => d.tcp && d.tcp.payloadEnd > d.tcp.payloadOffset && d.tcp.srcPort === srv.port);
    // acknowledge whatever arrives until the whole banner is in
    let got = 0;
    const deadline = Date.now() + 5000;
    while (got < banner.length && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
      const segs = data();
      const end = segs.reduce(
        (m, d) => Math.max(m, (d.tcp!.seq - synAck.seq - 1 + d.tcp!.payloadEnd - d.tcp!.payloadOffset) >>> 0),
        0,
      );
      if (end > got) {
        got = end;
        h.send(seg(TCP_ACK_FLAG, (synAck.seq + 1 + got) >>> 0));
      }
      h.advance(5);
    }
    assert.equal(got, banner.length, "the whole banner arrived");
    const tcpOut = h.out.filter((d) => d.tcp && d.tcp.srcPort === srv.port);
    for (const d of tcpOut.slice(1)) {
      const len = d.tcp!.payloadEnd - d.tcp!.payloadOffset;
      if (len > 0) assert.ok(len <= MIN_SND_MSS, `segment of ${len} bytes`);
    }
    const segments = data().length;
    assert.ok(segments >= banner.length / MIN_SND_MSS, `${segments} data segments`);
    assert.ok(
      segments <= 2 * Math.ceil(banner.length / MIN_SND_MSS),
      `${segments} data segments for 4000 bytes`,
    );
    assert.ok(tcpOut.length < 400, `${tcpOut.length} segments in all: no flood of empty ones`);
  } finally {
    h.close();
    srv.close();
  }
});

Deno.test("TCP: a host peer that speaks first (a banner) gets exactly one SYN-ACK to the guest, no retry spent", async () => {
  const srv = await bannerServer(new TextEncoder().encode("SSH-2.0-test\r\n"));
  const h = new StackHarness();
  try {
    const base = { srcMac: MAC, src: GUEST, dst: ip("10.0.2.2"), sport: 41001, dport: srv.port };
    h.send(tcpFrame({ ...base, seq: 7000, ack: 0, flags: TCP_SYN }, undefined, (t) => {
      t.mss = 1460;
      t.hasTimestamps = true;
      t.tsVal = 5;
      t.sackPermitted = true;
      t.windowScale = 7;
    }));
    await h.waitFor((d) => d.tcp !== undefined && (d.tcp.flags & TCP_SYN) !== 0);
    // the banner reaches the relay while the guest has not answered yet; time passes on the wheel
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 40; i++) {
      h.advance(5);
      await new Promise((r) => setTimeout(r, 1));
    }
    const synAcks = h.out.filter((d) => d.tcp && (d.tcp.flags & TCP_SYN) !== 0);
    assert.equal(synAcks.length, 1, "one SYN-ACK within 200 ms (the RTO is 1 s)");
    const c = h.stack.tcp.connections()[0];
    assert.equal(c.inspect().retries, 0);
    assert.equal(c.inspect().bytesQueued, 14, "the banner waits for the handshake");
  } finally {
    h.close();
    srv.close();
  }
});

Deno.test("TCP: a connection holds 32 full segments before host reads pause at MTU 65520, 1 MiB at MTU 1500", async () => {
  for (const mtu of [65520, 1500]) {
    // the host peer writes 4 MiB once the test says so (after the handshake: the window is known then)
    let peer: net.Socket | null = null;
    const srv = net.createServer((s) => {
      s.on("error", () => {});
      peer = s;
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    const h = new StackHarness((c) => (c.mtu = mtu));
    try {
      await handshake(h, (srv.address() as net.AddressInfo).port, (t) => {
        t.mss = mtu - 40;
        t.windowScale = 7; // an 8 MiB window: the guest's window is never the limit here
      });
      const c = h.stack.tcp.connections()[0];
      for (let i = 0; i < 500 && (!peer || c.inspect().state !== "ESTABLISHED"); i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      (peer as net.Socket | null)?.write(new Uint8Array(4 * 1024 * 1024));
      // the guest acknowledges nothing: the connection reads until its send buffer is full, then pauses
      const deadline = Date.now() + 5000;
      while (!c.inspect().hostPaused && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      const { bytesQueued, hostPaused } = c.inspect() as { bytesQueued: number; hostPaused: boolean };
      assert.ok(hostPaused, `MTU ${mtu}: host reads paused (${bytesQueued} bytes held)`);
      const limit = Math.max(1024 * 1024, 32 * (mtu - 40));
      assert.ok(
        bytesQueued >= limit && bytesQueued < limit + 64 * 1024,
        `MTU ${mtu}: ${bytesQueued} bytes held, expected ${limit} and at most one host read more`,
      );
    } finally {
      h.close();
      (peer as net.Socket | null)?.destroy();
      srv.close();
    }
  }
});
