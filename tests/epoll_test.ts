/** The relay's own socket loop (src/host/epoll_loop.ts, epoll.ts) against the kernel's TCP and UNIX sockets. */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { connectTcp, EpollListener, type EpollSocket } from "../src/host/epoll.ts";
import { epollAvailable, SocketError } from "../src/host/epoll_loop.ts";
import { EpollUdpSocket } from "../src/host/epoll_udp.ts";
import { within } from "./_relay_api.ts";
import { FrameWriter } from "../src/transport/stream.ts";

const skip = !epollAvailable();

// CI (SLIRP_E2E_REQUIRED=1) must exercise the production socket loop: its absence fails, it does not skip
Deno.test({
  name: "epoll sockets are available where the end-to-end suite is required",
  ignore: Deno.env.get("SLIRP_E2E_REQUIRED") !== "1" || Deno.env.get("SLIRP_SOCKETS") === "runtime",
  fn() {
    assert.ok(!skip, "epoll through FFI is unavailable: the relay would fall back to the runtime's sockets");
  },
});

async function readAll(s: { read(p: Uint8Array): Promise<number | null> }, into: number[]): Promise<void> {
  const buf = new Uint8Array(7000); // odd size: many partial reads
  for (;;) {
    const n = await s.read(buf);
    if (n === null) return;
    for (let i = 0; i < n; i++) into.push(buf[i]);
  }
}

/** The socket seen through the promise methods alone (what the runtime's sockets offer), not on the loop's turn. */
function promisesOnly(
  s: EpollSocket,
): { read(p: Uint8Array): Promise<number | null>; write(p: Uint8Array): Promise<number>; close(): void } {
  return { read: (p) => s.read(p), write: (p) => s.write(p), close: () => s.close() };
}

async function writeAll(s: { write(p: Uint8Array): Promise<number> }, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await s.write(data.subarray(off));
}

/** A connected loopback pair on the epoll loop: `s` the accepted side, `c` the client; close all three. */
async function loopbackPair(): Promise<{ s: EpollSocket; c: EpollSocket; l: EpollListener }> {
  const pair = await new Promise<{ s: EpollSocket; c: EpollSocket; l: EpollListener }>((resolve) => {
    const l = EpollListener.tcp("127.0.0.1", 0, (s) => resolve({ s, c, l }));
    const c = connectTcp("127.0.0.1", l.port);
  });
  await pair.c.waitConnected();
  return pair;
}

/**
 * `s` as the reader of guest frames sees it: read on the loop's turn (`onTurn`) or by promises only;
 * `onRead` hears the size of every read that got bytes.
 */
function frameSource(s: EpollSocket, onTurn: boolean, onRead: (n: number) => void = () => {}) {
  const counted = <T extends number | null>(n: T): T => {
    if (n) onRead(n);
    return n;
  };
  return onTurn
    ? {
      read: (p: Uint8Array) => s.read(p),
      write: (p: Uint8Array) => s.write(p),
      close: () => s.close(),
      watch: (f: (() => void) | null) => s.watch(f),
      readNow: (p: Uint8Array) => counted(s.readNow(p)),
    }
    : { ...promisesOnly(s), read: async (p: Uint8Array) => counted(await s.read(p)) };
}

/** `count` frames of `size` bytes behind QEMU's 4-byte lengths. */
function framesOnTheWire(count: number, size: number): Uint8Array {
  const wire = new Uint8Array(count * (4 + size));
  for (let i = 0; i < count; i++) new DataView(wire.buffer).setUint32(i * (4 + size), size);
  return wire;
}

Deno.test({
  name:
    "epoll sockets: TCP both ways byte-exact through full socket buffers, half-close, then the loop stops",
  ignore: skip,
  async fn() {
    const accepted: EpollSocket[] = [];
    let onAccept: (s: EpollSocket) => void = (s) => accepted.push(s);
    const l = EpollListener.tcp("127.0.0.1", 0, (s) => onAccept(s));
    const gotServer = new Promise<EpollSocket>((r) => (onAccept = r));
    const c = connectTcp("127.0.0.1", l.port);
    await c.waitConnected();
    const s = await gotServer;
    assert.equal(s.remoteAddress, "127.0.0.1");
    // 8 MiB each way at once: both sides' buffers fill, so writes wait for EPOLLOUT
    const big = Uint8Array.from({ length: 8 << 20 }, (_, i) => (i * 7 + (i >> 11)) & 0xff);
    const atServer: number[] = [], atClient: number[] = [];
    const serverReads = readAll(s, atServer);
    const clientReads = readAll(c, atClient);
    await Promise.all([writeAll(c, big), writeAll(s, big.subarray(0, 3 << 20))]);
    // half-close: the client's FIN ends the server's reads, the server can still answer
    await c.closeWrite();
    await serverReads;
    assert.equal(atServer.length, big.length);
    assert.ok(atServer.every((b, i) => b === big[i]), "client → server byte-exact");
    await writeAll(s, Uint8Array.of(1, 2, 3));
    await s.closeWrite();
    await clientReads;
    assert.equal(atClient.length, (3 << 20) + 3);
    assert.ok(atClient.slice(0, 3 << 20).every((b, i) => b === big[i]), "server → client byte-exact");
    assert.deepEqual(atClient.slice(3 << 20), [1, 2, 3]);
    c.close();
    s.close();
    l.close();
    // with every socket closed the loop leaves no call pending (the test's op sanitizer checks it)
  },
});

Deno.test({
  name: "epoll sockets: refused connect, reset seen by the peer, UNIX listener",
  ignore: skip,
  async fn() {
    // a port nothing listens on: connect fails with ECONNREFUSED
    const probe = EpollListener.tcp("127.0.0.1", 0, () => {});
    const closedPort = probe.port;
    probe.close();
    const refused = connectTcp("127.0.0.1", closedPort);
    await assert.rejects(
      refused.waitConnected(),
      (e) => e instanceof SocketError && e.code === "ECONNREFUSED",
    );
    refused.close();

    // reset(): the peer's next read fails with ECONNRESET (SO_LINGER 0), not a clean EOF
    const peer = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const c = connectTcp("127.0.0.1", peer.addr.port);
    await c.waitConnected();
    const p = await peer.accept();
    c.reset();
    await assert.rejects(p.read(new Uint8Array(10)), (e) => (e as { code?: string }).code === "ECONNRESET");
    p.close();
    peer.close();

    // a UNIX listener: a Deno client's bytes arrive, EOF ends the read
    const dir = await Deno.makeTempDir();
    const got = new Promise<number[]>((resolve) => {
      const ul = EpollListener.unix(`${dir}/s.sock`, (s) => {
        const into: number[] = [];
        readAll(s, into).then(() => {
          s.close();
          ul.close();
          resolve(into);
        });
      });
    });
    const uc = await Deno.connect({ transport: "unix", path: `${dir}/s.sock` });
    await uc.write(Uint8Array.of(9, 8, 7));
    uc.close();
    assert.deepEqual(await got, [9, 8, 7]);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "epoll sockets: connects in a row reach the port and family each asked for; a bad address is refused",
  ignore: skip,
  async fn() {
    // the sockaddr is parsed once per host in a row: the port and the family must still follow each call
    const a = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const b = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const v6 = Deno.listen({ hostname: "::1", port: 0 });
    const order: [Deno.Listener, string, number][] = [
      [a, "127.0.0.1", 1],
      [b, "127.0.0.1", 2],
      [v6, "::1", 3],
      [a, "127.0.0.1", 4],
    ];
    // a connect that lands on the wrong listener must fail the test, not leave the loop waiting forever
    const open: EpollSocket[] = [];
    try {
      for (const [listener, host, mark] of order) {
        const c = connectTcp(host, (listener.addr as Deno.NetAddr).port);
        open.push(c);
        await c.waitConnected();
        await c.write(Uint8Array.of(mark));
        let timer: ReturnType<typeof setTimeout> | undefined;
        const peer = await Promise.race([
          listener.accept(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`connect ${mark} did not reach ${host}`)), 2000);
          }),
        ]);
        clearTimeout(timer);
        const got = new Uint8Array(1);
        assert.equal(await peer.read(got), 1);
        assert.equal(got[0], mark);
        peer.close();
      }
    } finally {
      for (const c of open) c.close();
      for (const l of [a, b, v6]) l.close();
    }
    assert.throws(
      () => connectTcp("127.0.0.300", 80),
      (e) => e instanceof SocketError && e.code === "EINVAL",
    );
    assert.throws(
      () => connectTcp("not-an-address", 80),
      (e) => e instanceof SocketError && e.code === "EINVAL",
    );
  },
});

/** Datagrams an EpollUdpSocket bound to `address` receives, and a way to wait for `count` of them. */
function udpReceiver(address: string) {
  const got: { data: Uint8Array; address: string; port: number }[] = [];
  let wanted = 0, done = () => {};
  const socket = EpollUdpSocket.open(
    {
      onMessage: (data, from, port) => {
        got.push({ data, address: from, port });
        if (got.length >= wanted) done();
      },
      onError: (code) => {
        throw new Error(`UDP socket error ${code}`);
      },
    },
    address,
    0,
  );
  const arrived = (count: number) =>
    new Promise<void>((resolve, reject) => {
      // a timer left running would outlive the test
      const timer = setTimeout(() => reject(new Error(`${got.length} of ${count} datagrams arrived`)), 5000);
      wanted = count;
      done = () => {
        clearTimeout(timer);
        resolve();
      };
      if (got.length >= count) done();
    });
  return { socket, got, arrived };
}

/** A loopback UDP port nothing listens on (bound, then released). */
function closedUdpPort(host: string): number {
  const s = udpSender(host);
  const port = s.port;
  s.close();
  return port;
}

Deno.test({
  name:
    "epoll UDP sockets: the ICMP port unreachable for a datagram to a closed port is told once, with that destination, and does not eat the next send (both families)",
  ignore: skip,
  async fn() {
    for (const host of ["127.0.0.1", "::1"]) {
      const r = udpReceiver(host);
      const closed = closedUdpPort(host);
      const errors: { code: string; address?: string; port?: number }[] = [];
      let told = () => {};
      const s = EpollUdpSocket.open(
        {
          onMessage: () => {},
          onError: (code, address, port) => {
            errors.push({ code, address, port });
            told();
          },
        },
        host,
        0,
      );
      try {
        // loopback answers the first at once: its error is pending on the socket when the second is sent
        s.sendTo(Uint8Array.of(1), host, closed);
        s.sendTo(Uint8Array.of(2), host, r.socket.port);
        await r.arrived(1);
        assert.deepEqual(r.got[0].data, Uint8Array.of(2), "the send after the refused one went through");
        if (errors.length === 0) {
          await within(new Promise<void>((resolve) => told = resolve), 3000, "ICMP error");
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
        assert.deepEqual(errors, [{ code: "ECONNREFUSED", address: host, port: closed }], host);
      } finally {
        r.socket.close();
        s.close();
      }
    }
  },
});

/** A sender of datagrams in order (node:dgram under Deno may reorder a burst of sends). */
function udpSender(address: string): EpollUdpSocket {
  return EpollUdpSocket.open({ onMessage: () => {}, onError: () => {} }, address, 0);
}

Deno.test({
  name:
    "epoll UDP sockets: bursts larger than one receive batch arrive whole, in order, each with its sender; the largest datagram; IPv6",
  ignore: skip,
  async fn() {
    const r = udpReceiver("127.0.0.1");
    const a = udpSender("127.0.0.1"), b = udpSender("127.0.0.1");
    try {
      // 30 datagrams from two senders (more than a batch of 8 per system call), then the largest UDP payload
      const sent: { from: number; data: Uint8Array }[] = [];
      for (let i = 0; i < 30; i++) {
        const data = new Uint8Array(1 + i * 97).fill(i);
        const from = i % 3 === 0 ? b : a;
        sent.push({ from: from.port, data });
        from.sendTo(data, "127.0.0.1", r.socket.port);
      }
      const largest = new Uint8Array(65507).map((_, i) => i * 7);
      sent.push({ from: a.port, data: largest });
      a.sendTo(largest, "127.0.0.1", r.socket.port);
      await r.arrived(sent.length);
      // loopback keeps each sender's order; the two senders may interleave
      for (const port of [a.port, b.port]) {
        const want = sent.filter((x) => x.from === port).map((x) => x.data);
        const have = r.got.filter((x) => x.port === port);
        assert.equal(have.length, want.length);
        have.forEach((x, i) => {
          assert.equal(x.address, "127.0.0.1");
          assert.deepEqual(x.data, want[i]);
        });
      }
    } finally {
      r.socket.close();
      a.close();
      b.close();
    }

    const r6 = udpReceiver("::1");
    const c = udpSender("::1");
    try {
      for (let i = 0; i < 12; i++) c.sendTo(Uint8Array.of(i, i), "::1", r6.socket.port);
      await r6.arrived(12);
      r6.got.forEach((x, i) => {
        assert.equal(x.address, "::1");
        assert.equal(x.port, c.port);
        assert.deepEqual(x.data, Uint8Array.of(i, i));
      });
    } finally {
      r6.socket.close();
      c.close();
    }
  },
});

Deno.test({
  name:
    "epoll sockets: 300 connections with random writes, half-closes, resets and closes; no hang, loop ends",
  ignore: skip,
  async fn() {
    const { rng } = await import("./_rng.ts");
    const r = rng(0x5eed);
    // the far side: a Deno server that echoes until EOF, then closes
    const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const serving = (async () => {
      const echoes: Promise<void>[] = [];
      for (let i = 0; i < 300; i++) {
        let c: Deno.Conn;
        try {
          c = await server.accept();
        } catch {
          continue; // reset before Deno could accept it (ENOTCONN from accept)
        }
        echoes.push((async () => {
          const buf = new Uint8Array(4096);
          try {
            for (;;) {
              const n = await c.read(buf);
              if (n === null) break;
              for (let off = 0; off < n;) off += await c.write(buf.subarray(off, n));
            }
          } catch { /* reset by the client */ }
          try {
            c.close();
          } catch { /* closed */ }
        })());
      }
      await Promise.all(echoes);
    })();
    const outcomes = await Promise.all(Array.from({ length: 300 }, async () => {
      const c = connectTcp("127.0.0.1", (server.addr as Deno.NetAddr).port);
      await c.waitConnected();
      const sent = Uint8Array.from({ length: r() % 20000 }, () => r() & 0xff);
      const back: number[] = [];
      const reading = readAll(c, back).catch(() => "reset");
      const how = r() % 3;
      await writeAll(c, sent);
      if (how === 0) {
        // orderly: half-close, all bytes come back, then EOF
        await c.closeWrite();
        await reading;
        c.close();
        assert.deepEqual(back, [...sent]);
        return "echoed";
      }
      if (how === 1) c.reset();
      else c.close();
      await reading;
      return how === 1 ? "reset" : "closed";
    }));
    await serving;
    server.close();
    assert.equal(outcomes.length, 300);
    assert.ok(outcomes.includes("echoed") && outcomes.includes("reset") && outcomes.includes("closed"));
  },
});

Deno.test({
  name:
    "stream frames: split across odd reads they arrive whole and in order, a held batch stops reads until taken, EOF ends the reader — on the socket loop's turn and through promises alike",
  ignore: skip,
  async fn() {
    const { readFrameBatches } = await import("../src/transport/stream.ts");
    const { FramingError } = await import("../src/transport/framing.ts");
    const frames = Array.from({ length: 300 }, (_, i) => {
      const f = new Uint8Array(14 + ((i * 977) % 3000));
      for (let j = 0; j < f.length; j++) f[j] = (i + j * 31) & 0xff;
      return f;
    });
    const wire = new Uint8Array(frames.reduce((n, f) => n + 4 + f.length, 0));
    let pos = 0;
    for (const f of frames) {
      new DataView(wire.buffer).setUint32(pos, f.length);
      wire.set(f, pos + 4);
      pos += 4 + f.length;
    }
    for (const onTurn of [true, false]) {
      const server = await loopbackPair();
      const { s, c } = server;
      // the promise path: the same socket seen without its loop-turn reading
      const stream = onTurn ? s : promisesOnly(s);
      const got: Uint8Array[] = [];
      let holding = false, batches = 0, heldOnce = 0;
      const reading = readFrameBatches(stream, 70000, (buf, offs, lens, n) => {
        assert.ok(!holding, "no batch while the previous one is held");
        for (let i = 0; i < n; i++) got.push(buf.slice(offs[i], offs[i] + lens[i]));
        if (++batches % 3 !== 0) return;
        holding = true;
        heldOnce++;
        return new Promise<void>((r) => setTimeout(() => (holding = false, r()), 2));
      });
      // odd-sized writes with pauses: prefixes and frames split across reads
      for (let off = 0; off < wire.length;) {
        const n = Math.min(wire.length - off, 1 + ((off * 13) % 5000));
        await writeAll(c, wire.subarray(off, off + n));
        off += n;
        if (off % 7 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      await c.closeWrite();
      await reading;
      assert.ok(heldOnce > 0, "some batches were held");
      assert.equal(got.length, frames.length, `all frames (${onTurn ? "loop turn" : "promises"})`);
      for (let i = 0; i < frames.length; i++) assert.deepEqual(got[i], frames[i], `frame ${i}`);
      // a zero length breaks the framing: the reader fails with FramingError
      const bad = await loopbackPair();
      const broken = readFrameBatches(
        onTurn ? bad.s : promisesOnly(bad.s),
        70000,
        () => {},
      );
      await writeAll(bad.c, Uint8Array.of(0, 0, 0, 0));
      await assert.rejects(broken, FramingError);
      // closed by us while a batch is held (a tenant kicked its guest): the reader ends once the batch is taken
      const kicked = await loopbackPair();
      let release = () => {};
      const held = new Promise<void>((r) => (release = r));
      const kickedReader = readFrameBatches(
        onTurn ? kicked.s : promisesOnly(kicked.s),
        70000,
        () => held,
      );
      await writeAll(kicked.c, wire.subarray(0, 4 + frames[0].length));
      await new Promise((r) => setTimeout(r, 20));
      kicked.s.close();
      release();
      await assert.doesNotReject(
        Promise.race([
          kickedReader,
          new Promise((_, no) => setTimeout(() => no(new Error("reader hangs")), 2000)),
        ]),
      );
      for (const x of [c, s, bad.c, bad.s, kicked.c]) x.close();
      server.l.close();
      bad.l.close();
      kicked.l.close();
    }
  },
});

Deno.test({
  name:
    "stream frames: with many frames waiting, reads grow to take many at once — also when each read ends inside a frame",
  ignore: skip,
  async fn() {
    const { readFrameBatches } = await import("../src/transport/stream.ts");
    // 1514-byte frames behind a 4-byte length: no read size the buffer doubles through is a multiple of 1518,
    // so every full read leaves part of a frame behind (the case that once kept the buffer at one frame)
    const count = 2000, size = 1514;
    const wire = framesOnTheWire(count, size);
    for (const onTurn of [true, false]) {
      const { s, c, l } = await loopbackPair();
      const sizes: number[] = [];
      const counted = frameSource(s, onTurn, (n) => sizes.push(n));
      let frames = 0;
      const reading = readFrameBatches(counted, 70000, (_b, _o, _l, n) => {
        frames += n;
      });
      await writeAll(c, wire);
      await c.closeWrite();
      await reading;
      assert.equal(frames, count);
      // a writer far ahead of the reader: after the first few reads each one takes many frames
      const perRead = (wire.length / sizes.length).toFixed(0);
      assert.ok(
        sizes.length < count / 8,
        `${sizes.length} reads for ${count} frames (${perRead} bytes a read, ${
          onTurn ? "loop turn" : "promises"
        })`,
      );
      c.close();
      s.close();
      l.close();
    }
  },
});

Deno.test({
  name:
    "stream frames: a busy guest's reads land in a receive block (its checksums summed where they are), given back when the link ends",
  ignore: skip,
  async fn() {
    const { readFrameBatches } = await import("../src/transport/stream.ts");
    const { isReceiveBlock, returnReceiveBlock, takeReceiveBlock } = await import(
      "../src/wire/checksum_variants.ts"
    );
    const freeBlocks = () => {
      const all: Uint8Array[] = [];
      for (let b = takeReceiveBlock(); b !== null; b = takeReceiveBlock()) all.push(b);
      for (const b of all) returnReceiveBlock(b);
      return all.length;
    };
    const count = 2000, size = 1514;
    const wire = framesOnTheWire(count, size);
    const free = freeBlocks();
    assert.ok(free > 0);
    for (const onTurn of [true, false]) {
      const { s, c, l } = await loopbackPair();
      const stream = frameSource(s, onTurn);
      let inBlock = 0, frames = 0;
      const reading = readFrameBatches(stream, 70000, (buf, _o, _l, n) => {
        frames += n;
        if (isReceiveBlock(buf)) inBlock += n;
      });
      await writeAll(c, wire);
      await c.closeWrite();
      await reading;
      assert.equal(frames, count);
      assert.ok(inBlock > count / 2, `${inBlock} of ${count} frames read into a receive block`);
      assert.equal(freeBlocks(), free, "the block went back when the stream ended");
      c.close();
      s.close();
      l.close();
    }
  },
});

Deno.test({
  name:
    "epoll host TCP: a write buffer grown by a burst toward the host is let go once the flow goes quiet, every byte delivered",
  ignore: skip,
  async fn() {
    const { EpollHost } = await import("../src/host/epoll_host.ts");
    const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const received = (async () => {
      const conn = await server.accept();
      let n = 0;
      const buf = new Uint8Array(65536);
      for (let r = await conn.read(buf); r !== null; r = await conn.read(buf)) n += r;
      conn.close();
      return n;
    })();
    const connected = Promise.withResolvers<void>();
    const noop = () => {};
    const socket = new EpollHost().connectTcp("127.0.0.1", server.addr.port, {
      onConnect: () => connected.resolve(),
      onData: noop,
      onEnd: noop,
      onError: (code) => connected.reject(new Error(code)),
      onClose: noop,
      onDrain: noop,
    }) as unknown as { write(d: Uint8Array, more?: boolean): boolean; end(): void; writeBufferBytes: number };
    await connected.promise;
    // a guest's bulk write, segment by segment, as its TCP delivers it: the buffer grows past what an idle
    // flow may keep
    const segment = new Uint8Array(1448).fill(7);
    for (let i = 0; i < 200; i++) socket.write(segment, i < 199);
    assert.ok(socket.writeBufferBytes > 64 * 1024, `${socket.writeBufferBytes} bytes of write buffer`);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(socket.writeBufferBytes <= 64 * 1024, `${socket.writeBufferBytes} bytes kept by a quiet flow`);
    socket.end();
    assert.equal(await received, 200 * 1448);
    server.close();
  },
});

Deno.test({
  name:
    "an owned loop (a data-plane worker's) answers lone requests, and what its handlers leave to the runtime — an `after(0)`, a setImmediate, a promise chain 40 deep — runs within milliseconds, not at its next wake-up",
  ignore: skip,
  async fn() {
    const worker = new Worker(new URL("./fixtures/owned_loop_worker.ts", import.meta.url), {
      type: "module",
    });
    const client = dgram.createSocket("udp4");
    const replies: string[] = [];
    let arrived: () => void = () => {};
    client.on("message", (m) => {
      replies.push(new TextDecoder().decode(m));
      arrived();
    });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(e.message);
      });
      await new Promise<void>((r) => client.bind(0, "127.0.0.1", r));
      for (const what of ["echo", "after", "immediate", "chain"]) {
        const ms: number[] = [];
        // requests 15 ms apart: the loop sleeps between them, and most come while its last pass through the
        // runtime's event loop is recent — the turns that skip one
        for (let i = 0; i < 9; i++) {
          await new Promise((r) => setTimeout(r, 15));
          const t0 = performance.now();
          // a reply that never comes fails the test instead of holding the file (and a mutant's run) for good
          let late: ReturnType<typeof setTimeout> | undefined;
          const answered = new Promise<void>((resolve, reject) => {
            arrived = resolve;
            late = setTimeout(() => reject(new Error(`${what}: no reply in 5 s`)), 5000);
          });
          client.send(what, port, "127.0.0.1");
          await answered.finally(() => clearTimeout(late));
          ms.push(performance.now() - t0);
          assert.equal(replies.pop(), what);
        }
        ms.sort((a, b) => a - b);
        // the loop sleeps up to 100 ms when nothing is due; a skipped pass must end its sleep in ~10
        assert.ok(
          ms[4] < 50,
          `${what}: median ${ms[4].toFixed(1)} ms (${ms.map((x) => x.toFixed(1)).join(" ")})`,
        );
      }
    } finally {
      client.close();
      worker.terminate();
    }
  },
});

Deno.test({
  name:
    "an owned loop with more sockets ready than one epoll_wait returns reads them all before a due timer fires (a retransmission timer must not give up on an ACK still unread); its handlers read their turn's clock",
  ignore: skip,
  async fn() {
    const worker = new Worker(new URL("./fixtures/full_batch_worker.ts", import.meta.url), {
      type: "module",
    });
    try {
      const result = await within(
        new Promise<{ handledBeforeTimer: number; sockets: number; clockOfTheTurn: boolean }>(
          (resolve, reject) => {
            worker.onmessage = (e) => resolve(e.data);
            worker.onerror = (e) => reject(e.message);
          },
        ),
        10_000,
        "the worker's timer",
      );
      assert.equal(result.handledBeforeTimer, result.sockets);
      // what the handlers time (RTT samples, deadlines) reads their own turn's clock, fired or not
      assert.ok(result.clockOfTheTurn, "the handlers read the clock of an earlier turn");
    } finally {
      worker.terminate();
    }
  },
});

Deno.test({
  name:
    "guest writer: once a send finds the guest's socket full it waits for room, sending nothing more until then; every frame arrives",
  ignore: skip,
  async fn() {
    const dir = await Deno.makeTempDir();
    const accepted = Promise.withResolvers<EpollSocket>();
    const l = EpollListener.unix(`${dir}/g.sock`, (s) => accepted.resolve(s));
    // the guest's end, not read until the writer has filled the socket
    const guest = await Deno.connect({ transport: "unix", path: `${dir}/g.sock` });
    const s = await within(accepted.promise, 5000, "accept");
    /** Every send the writer asked for: how, how many bytes, how many the socket took (null: waited). */
    const calls: { how: string; asked: number; took: number | null }[] = [];
    const stream = {
      read: (p: Uint8Array) => s.read(p),
      close: () => s.close(),
      writeNow(p: Uint8Array): number {
        const n = s.writeNow(p);
        calls.push({ how: "writeNow", asked: p.length, took: n });
        return n;
      },
      write(p: Uint8Array): Promise<number> {
        calls.push({ how: "write", asked: p.length, took: null });
        return s.write(p);
      },
      async writeWhenRoom(p: Uint8Array): Promise<number> {
        const call = { how: "writeWhenRoom", asked: p.length, took: null as number | null };
        calls.push(call);
        return call.took = await s.writeWhenRoom(p);
      },
    };
    const drained = Promise.withResolvers<void>();
    const writer = new FrameWriter(stream, 8 * 1024 * 1024, (e) => drained.reject(e), {
      onDrain: () => drained.resolve(),
    });
    // 4 MB of frames: far more than a UNIX socket's buffer (~208 KiB by default)
    const FRAMES = 2800, SIZE = 1500;
    const frame = new Uint8Array(SIZE);
    for (let i = 0; i < FRAMES; i++) {
      frame.fill(i & 0xff);
      new DataView(frame.buffer).setUint32(0, i);
      assert.ok(writer.push(frame));
    }
    await new Promise((r) => setTimeout(r, 50)); // the flush ran and found the socket full
    const shown = () => calls.map((c) => `${c.how} ${c.took}/${c.asked}`).join(", ");
    assert.ok(calls.some((c) => c.took !== null && c.took < c.asked), `the socket never filled: ${shown()}`);
    assert.deepEqual(calls.at(-1), { how: "writeWhenRoom", asked: calls.at(-1)!.asked, took: null }, shown());
    const wire = new Uint8Array(FRAMES * (4 + SIZE));
    let got = 0;
    while (got < wire.length) {
      const n = await within(guest.read(wire.subarray(got)), 5000, `guest read after ${got} bytes`);
      assert.ok(n !== null, `the stream ended after ${got} of ${wire.length} bytes`);
      got += n;
    }
    await within(drained.promise, 5000, "writer drained");
    const view = new DataView(wire.buffer);
    for (let i = 0; i < FRAMES; i++) {
      const at = i * (4 + SIZE);
      assert.equal(view.getUint32(at), SIZE);
      assert.equal(view.getUint32(at + 4), i, `frame ${i} out of order`);
      assert.equal(wire[at + 4 + SIZE - 1], i & 0xff);
    }
    // a send that took less than it was given found the socket full: the next one waits for room
    calls.forEach((c, i) => {
      if (c.took !== null && c.took < c.asked && i + 1 < calls.length) {
        assert.equal(calls[i + 1].how, "writeWhenRoom", `call ${i + 1} of ${shown()}`);
      }
    });
    assert.ok(calls.length > 2, shown());
    writer.close();
    s.close();
    guest.close();
    l.close();
    await Deno.remove(dir, { recursive: true });
  },
});
