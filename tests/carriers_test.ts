/**
 * The carriers beyond QEMU's stream framing, each through a relay with a simulated guest built from our
 * wire codecs: gvforwarder (`POST /connect`, then u16 LE frames) on the ordinary stream sockets, the
 * WebSocket byte stream (container2wasm, emscripten QEMU) and datagram sockets (QEMU dgram, vfkit, libkrun).
 * The relay starts from its command line (tests/_test_relay.ts), on whatever runtime SLIRP_RELAY_COMMAND says.
 */
import assert from "node:assert/strict";
import { type FrameChannel, SimGuest } from "./_sim_guest.ts";
import { rng } from "./_rng.ts";
import { epollAvailable } from "../src/host/epoll_loop.ts";
import { bindUnixDatagram } from "../src/host/unix_datagram.ts";
import { parsePrometheus, sample, within } from "./_relay_api.ts";
import { multiTenantArgs, startTestRelay, type TestRelay } from "./_test_relay.ts";

const LEASE = 0x0a00020f; // 10.0.2.15

/**
 * A single-user relay (10.0.2.2 reaches 127.0.0.1) with the listeners `listeners` names, on the main thread's
 * socket loop unless `workers` says otherwise.
 */
function relayWith(listeners: string[], workers = 0): Promise<TestRelay> {
  return startTestRelay([
    ...listeners,
    ...["--dns-upstream", "127.0.0.1:9", "--workers", String(workers), "--log-level", "error"],
  ]);
}

/** Guest connections the relay closed for breaking their protocol (the metric). */
async function transportErrors(relay: TestRelay): Promise<number> {
  const text = await (await relay.api("/metrics")).text();
  parsePrometheus(text);
  return sample(text, "slirp_transport_errors_total", {}) ?? 0;
}

/** A TCP echo server on 127.0.0.1. */
function echoServer(): { port: number; close(): void } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  (async () => {
    for await (const c of l) {
      conns.add(c);
      c.readable.pipeTo(c.writable).catch(() => {}).finally(() => conns.delete(c));
    }
  })().catch(() => {});
  return {
    port: (l.addr as Deno.NetAddr).port,
    close() {
      l.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** Leases an address, opens a TCP connection to the echo server through the gateway and checks the echo. */
export async function leaseAndEcho(g: SimGuest, echoPort: number, rounds = 8): Promise<void> {
  g.dhcp(1);
  await within(g.leased, 10_000, "DHCP");
  assert.equal(g.ip, LEASE);
  g.receivedBytes = [];
  await within(g.open(echoPort, 40000 + g.index), 10_000, "TCP handshake");
  const sent: number[] = [];
  for (let i = 0; i < rounds; i++) {
    // one segment each, under the MSS
    const chunk = new Uint8Array(1000 + i * 30).map((_, j) => (j * 7 + i) & 0xff);
    sent.push(...chunk);
    await within(g.request(chunk, chunk.length), 10_000, `echo ${i}`);
  }
  const got = g.receivedBytes.flatMap((b) => [...b]);
  assert.deepEqual(got, sent, "the echo comes back byte for byte");
}

Deno.test("gvforwarder: POST /connect, then u16 little-endian frames on an ordinary stream socket — a lease and a byte-exact TCP echo; a request for another path closes only that connection", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/relay.sock`;
  const relay = await relayWith(["--listen-qemu", `unix://${path}`]);
  const echo = echoServer();
  const g = new SimGuest(0);
  try {
    await g.connect(path, "gvforwarder");
    await leaseAndEcho(g, echo.port);
    assert.equal((await relay.connectedTenant()).transport, "gvforwarder");

    // a request gvproxy would not hijack: the relay closes that connection and counts the error
    const bad = await Deno.connect({ transport: "unix", path });
    await bad.write(new TextEncoder().encode("POST /services/forwarder/all HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert.equal(await bad.read(new Uint8Array(16)), null, "closed by the relay");
    bad.close();
    assert.equal(await transportErrors(relay), 1);
    // the first guest goes on
    await g.ping();
  } finally {
    g.close();
    echo.close();
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "TCP from the guest without PSH (a write that goes on in the next segments) reaches the host: held to gather the rest, never left behind — alone, in a run closed by PSH, and as the last bytes before silence",
  ignore: !epollAvailable(),
  async fn() {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/relay.sock`;
    // through a data-plane worker: its own loop holds such bytes until it is quiet
    const relay = await relayWith(["--listen-qemu", `unix://${path}`], 1);
    const echo = echoServer();
    const g = new SimGuest(2);
    try {
      await g.connect(path);
      g.dhcp(1);
      await within(g.leased, 10_000, "DHCP");
      g.receivedBytes = [];
      await within(g.open(echo.port, 41000), 10_000, "TCP handshake");
      const sent: number[] = [];
      const chunk = (i: number) => new Uint8Array(700 + i).map((_, j) => (j * 13 + i) & 0xff);
      // one segment without PSH, then nothing: it must not wait for a PSH that never comes
      const lone = chunk(0);
      sent.push(...lone);
      await within(g.request(lone, lone.length, false), 5_000, "a lone segment without PSH");
      // a run of segments without PSH closed by one with it, then more runs ending without it
      for (let run = 0; run < 3; run++) {
        const parts = Array.from({ length: 20 }, (_, i) => chunk(run * 20 + i + 1));
        const total = parts.reduce((n, p) => n + p.length, 0);
        // sent back to back; the last request counts every echoed byte of the run from here on
        let last: Promise<void> = Promise.resolve();
        parts.forEach((p, i) => {
          sent.push(...p);
          const end = i === parts.length - 1;
          last = g.request(p, end ? total : Infinity, run === 0 && end);
        });
        await within(last, 5_000, `run ${run}`);
      }
      const got = g.receivedBytes.flatMap((b) => [...b]);
      assert.deepEqual(got, sent, "every byte echoed, in order");
    } finally {
      g.close();
      echo.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * A WebSocket byte-stream guest's channel, as emscripten's socket layer behaves at worst: the length-prefixed
 * frames of one turn are cut into messages of random sizes (a message may hold part of a frame or several).
 * Each message from the relay must be exactly one length-prefixed frame.
 */
function byteStreamChannel(ws: WebSocket, g: SimGuest, seed: number, problems: string[]): FrameChannel {
  const next = rng(seed);
  let out: number[] = [];
  const flush = () => {
    const bytes = Uint8Array.from(out);
    out = [];
    for (let off = 0; off < bytes.length;) {
      const n = Math.min(bytes.length - off, 1 + (next() % 700));
      ws.send(bytes.slice(off, off + n));
      off += n;
    }
  };
  ws.onmessage = (e) => {
    const m = new Uint8Array(e.data as ArrayBuffer);
    const len = new DataView(m.buffer).getUint32(0);
    if (len !== m.length - 4) problems.push(`message of ${m.length} bytes says ${len}`);
    else g.receive(m.subarray(4));
  };
  return {
    send(frame) {
      if (out.length === 0) queueMicrotask(flush);
      out.push(
        frame.length >>> 24,
        (frame.length >>> 16) & 0xff,
        (frame.length >>> 8) & 0xff,
        frame.length & 0xff,
      );
      out.push(...frame);
      return true;
    },
    backlog: 0,
    close: () => ws.close(),
  };
}

function openWs(url: string, protocols?: string[]): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`WebSocket ${url} failed`));
  });
}

/** Runs a byte-stream guest against `wsUrl`: the emscripten port handshake first, then DHCP and an echo. */
async function byteStreamGuest(
  url: string,
  protocols: string[] | undefined,
  echoPort: number,
  guestIndex = 1,
): Promise<void> {
  const ws = await openWs(url, protocols);
  if (protocols) assert.equal(ws.protocol, "binary", "the subprotocol is echoed");
  const problems: string[] = [];
  const g = new SimGuest(guestIndex);
  g.attach(byteStreamChannel(ws, g, 0x5eed, problems));
  try {
    // emscripten's datagram-port handshake, which the relay drops
    ws.send(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x70, 0x6f, 0x72, 0x74, 0x1f, 0x90));
    await leaseAndEcho(g, echoPort, 12);
    assert.deepEqual(problems, []);
  } finally {
    const closed = new Promise((r) => (ws.onclose = r));
    ws.close();
    await within(closed, 10_000, "close");
  }
}

Deno.test("WebSocket byte stream: a guest that cuts its stream at random message boundaries gets a lease and a byte-exact TCP echo — by the binary subprotocol (echoed) and by path; a bad length closes it", async () => {
  const relay = await relayWith(["--listen-ws", "http://127.0.0.1:0", "--listen-qemu", "tcp://127.0.0.1:0"]);
  const echo = echoServer();
  try {
    await byteStreamGuest(`${relay.wsUrls[0]}/`, ["binary"], echo.port);
    // another guest (MAC): the same one would resume the first's session, its connection still open
    await byteStreamGuest(`${relay.wsUrls[0]}/stream`, undefined, echo.port, 2);
    const ws = await openWs(`${relay.wsUrls[0]}/stream`);
    const closed = new Promise<number>((r) => (ws.onclose = (e) => r(e.code)));
    ws.send(Uint8Array.of(0, 2, 0, 0, 1, 2)); // a 131072-byte frame: over the WebSocket maximum
    assert.equal(await within(closed, 10_000, "close"), 1009);
  } finally {
    echo.close();
    await relay.stop();
  }
});

Deno.test("WebSocket byte stream through a data-plane worker: the front cuts the stream into frames for the rings", async () => {
  const relay = await relayWith(
    ["--listen-ws", "http://127.0.0.1:0", "--listen-qemu", "tcp://127.0.0.1:0"],
    1,
  );
  const echo = echoServer();
  try {
    await byteStreamGuest(`${relay.wsUrls[0]}/`, ["binary"], echo.port);
  } finally {
    echo.close();
    await relay.stop();
  }
});

Deno.test({
  name:
    "datagram socket: a guest that says VFKT first, then one frame per datagram — a lease, a byte-exact TCP echo, and a 60 KiB segment with an unfinished checksum (libkrun's offloads) taken as it is",
  ignore: !epollAvailable(),
  async fn() {
    const dir = await Deno.makeTempDir();
    const relayPath = `${dir}/relay.dgram`;
    const relay = await relayWith(["--listen-dgram", `unix://${relayPath}`]);
    const echo = echoServer();
    // the guest's side: a datagram socket of its own, as QEMU's local.path or vfkit's socket
    const guestSocket = bindUnixDatagram(`${dir}/guest.dgram`);
    const g = new SimGuest(2);
    const rx = new Uint8Array(70000);
    guestSocket.watch(() => {
      for (let n; (n = guestSocket.receive(rx)) >= 0;) g.receive(rx.subarray(0, n));
    });
    g.attach({
      send: (f) => guestSocket.sendTo(f, relayPath) === null,
      backlog: 0,
      close: () => guestSocket.close(),
    });
    try {
      assert.equal(guestSocket.sendTo(new TextEncoder().encode("VFKT"), relayPath), null);
      await leaseAndEcho(g, echo.port);
      const t = await relay.connectedTenant();
      assert.equal(t.transport, "datagram");
      assert.equal(t.remote, `unixgram:${dir}/guest.dgram`);

      // one 60,000-byte segment in one frame, its checksum left to a NIC: echoed byte for byte
      g.partialChecksums = true;
      g.receivedBytes = [];
      const big = new Uint8Array(60_000).map((_, i) => (i * 13) & 0xff);
      await within(g.request(big, big.length), 10_000, "60 KiB echo");
      const got = new Uint8Array(big.length);
      let off = 0;
      for (const b of g.receivedBytes) off += (got.set(b, off), b.length);
      assert.equal(off, big.length);
      assert.deepEqual(got, big);
      assert.equal((await relay.tenant(t.id)).counters.drops["tcp-malformed"] ?? 0, 0);
    } finally {
      g.close();
      echo.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "datagram socket of a tenant (multi-tenant mode): DIR/ID.dgram.sock beside its stream socket leases the tenant's guest; gone with the tenant",
  ignore: !epollAvailable(),
  async fn() {
    const dir = await Deno.makeTempDir();
    const relay = await startTestRelay(multiTenantArgs(dir));
    const guestSocket = bindUnixDatagram(`${dir}/guest.dgram`);
    try {
      assert.equal((await relay.request("POST", "/v1/tenants", { id: "dg1" })).status, 201);
      const path = (await relay.tenant("dg1")).datagramSocket!;
      assert.equal(path, `${dir}/dg1.dgram.sock`);
      const g = new SimGuest(3);
      const rx = new Uint8Array(70000);
      guestSocket.watch(() => {
        for (let n; (n = guestSocket.receive(rx)) >= 0;) g.receive(rx.subarray(0, n));
      });
      g.attach({ send: (f) => guestSocket.sendTo(f, path) === null, backlog: 0, close: () => {} });
      g.dhcp(1);
      await within(g.leased, 10_000, "DHCP");
      assert.equal((await relay.tenant("dg1")).transport, "datagram");
      assert.equal((await relay.request("DELETE", "/v1/tenants/dg1")).status, 204);
      assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound);
    } finally {
      guestSocket.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
