/**
 * Wisp through the relay with MercuryWorkshop's own client (`@mercuryworkshop/wisp-js`, v1 and v2): TCP
 * and UDP streams to loopback servers, hostnames through the tenant's DNS, flow control past one window,
 * CLOSE reasons, and the multi-tenant rules (policy, tokens). The relay starts from its command line
 * (tests/_test_relay.ts), on whatever runtime SLIRP_RELAY_COMMAND says.
 */
import assert from "node:assert/strict";
import { client as wisp, extensions as wispExtensions } from "@mercuryworkshop/wisp-js/client";
import { createToken } from "../src/relay/tokens.ts";
import { freePort, listenTcp, startDnsResponder, startUdpEcho } from "./_services.ts";
import { RelayProcess, wsUpgradeStatus } from "./_relay_process.ts";
import { parsePrometheus, sample, SECRET, within } from "./_relay_api.ts";
import { multiTenantArgs, startTestRelay, type TestRelay } from "./_test_relay.ts";

type Conn = InstanceType<typeof wisp.ClientConnection>;
type Stream = ReturnType<Conn["create_stream"]>;

/** Echoes a connection; a reset (the relay closed a stream with data unread) ends it quietly. */
function echoConnection(s: import("node:net").Socket): void {
  s.on("error", () => s.destroy());
  s.pipe(s);
}

function connect(
  url: string,
  version: 1 | 2,
  credentials?: { username: string; password: string },
): Promise<Conn> {
  const { UDPExtension, MOTDExtension, PasswordAuthExtension } = wispExtensions;
  // wisp-js offers UDP and MOTD by itself; credentials need the list spelled out
  const wisp_extensions = credentials
    ? [
      new UDPExtension({ client_config: {} }),
      new MOTDExtension({ client_config: {} }),
      new PasswordAuthExtension({ client_config: credentials }),
    ]
    : undefined;
  const conn = new wisp.ClientConnection(url, { wisp_version: version, wisp_extensions });
  return within(
    new Promise((resolve, reject) => {
      conn.onopen = () => resolve(conn);
      conn.onerror = () => reject(new Error(`Wisp connection to ${url} failed`));
    }),
    10_000,
    "Wisp handshake",
  );
}

/** Collects a stream's DATA until `bytes` arrived (or it closed). */
function collect(stream: Stream, bytes: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let got = 0;
  return within(
    new Promise((resolve, reject) => {
      stream.onmessage = (d: Uint8Array) => {
        parts.push(d.slice());
        got += d.length;
        if (got >= bytes) {
          const all = new Uint8Array(got);
          let o = 0;
          for (const p of parts) o += (all.set(p, o), p.length);
          resolve(all);
        }
      };
      stream.onclose = (reason: number) =>
        reject(new Error(`stream closed (0x${reason.toString(16)}) after ${got} bytes`));
    }),
    20_000,
    `${bytes} bytes`,
  );
}

function closeReason(stream: Stream): Promise<number> {
  return within(new Promise((resolve) => (stream.onclose = resolve)), 10_000, "CLOSE");
}

/** An echo of 1.5 MB in 4 KiB DATA packets: far past one 128-packet window, so CONTINUE must flow. */
async function tcpEcho(conn: Conn, host: string, port: number): Promise<void> {
  const stream = conn.create_stream(host, port);
  const total = 384 * 4096;
  const sent = new Uint8Array(total);
  for (let i = 0; i < total; i += 65536) crypto.getRandomValues(sent.subarray(i, Math.min(total, i + 65536)));
  const echoed = collect(stream, total);
  for (let off = 0; off < total; off += 4096) stream.send(sent.slice(off, off + 4096));
  const got = await echoed;
  assert.equal(got.length, total);
  assert.ok(got.every((b, i) => b === sent[i]), "the echo is byte-exact");
  stream.close();
}

async function udpEcho(conn: Conn, port: number, host = "127.0.0.1"): Promise<void> {
  const stream = conn.create_stream(host, port, "udp");
  const reply = collect(stream, 9);
  stream.send(new TextEncoder().encode("ping"));
  assert.equal(new TextDecoder().decode(await reply), "echo:ping");
  stream.close();
}

/** A single-user relay with a WebSocket listener, resolving through a test DNS responder. */
async function singleUserRelay(
  workers = 0,
): Promise<{ relay: TestRelay; dns: { port: number; close(): void } }> {
  const dns = await startDnsResponder({ "upstream.test": "127.0.0.1" });
  const relay = await startTestRelay([
    ...["--listen-ws", "http://127.0.0.1:0", "--listen-qemu", "tcp://127.0.0.1:0"],
    ...["--dns-upstream", `127.0.0.1:${dns.port}`, "--dns-record", "static.test=127.0.0.1"],
    ...["--workers", String(workers), "--log-level", "error"],
  ]);
  return { relay, dns };
}

for (const version of [1, 2] as const) {
  Deno.test(`Wisp v${version} (wisp-js client): TCP echo past the flow-control window, UDP, names from static records and the upstream, CLOSE reasons`, async () => {
    const { relay, dns } = await singleUserRelay();
    const echo = await listenTcp(echoConnection);
    const echo6 = await listenTcp(echoConnection, "::1");
    const udp = await startUdpEcho();
    const udp6 = await startUdpEcho("::1");
    const closedPort = await listenTcp(() => {});
    closedPort.close();
    const conn = await connect(`${relay.wsUrls[0]}/wisp/`, version);
    try {
      await tcpEcho(conn, "127.0.0.1", echo.port);
      await tcpEcho(conn, "static.test", echo.port);
      await tcpEcho(conn, "upstream.test", echo.port);
      await udpEcho(conn, udp.port);
      // an IPv6 literal goes through the tenant's IPv6 policy to the host's ::1
      await tcpEcho(conn, "::1", echo6.port);
      await udpEcho(conn, udp6.port, "::1");
      assert.equal(await closeReason(conn.create_stream("127.0.0.1", closedPort.port)), 0x44, "refused");
      assert.equal(await closeReason(conn.create_stream("nowhere.test", echo.port)), 0x42, "unresolvable");
      const t = await relay.tenant();
      assert.equal(t.wispSessions, 1);
      assert.equal(t.connected, false, "no frame guest");
      const text = await (await relay.api("/metrics")).text();
      parsePrometheus(text);
      assert.equal(sample(text, "slirp_guests_connected"), 1, "a Wisp client counts as the tenant's guest");
    } finally {
      conn.close();
      echo.close();
      echo6.close();
      udp.close();
      udp6.close();
      dns.close();
      await relay.stop();
    }
  });
}

Deno.test("Wisp through a data-plane worker: the front carries Wisp packets in the rings, none lost under flow control", async () => {
  const { relay: front, dns } = await singleUserRelay(1);
  const echo = await listenTcp(echoConnection);
  const udp = await startUdpEcho();
  const conn = await connect(`${front.wsUrls[0]}/wisp/`, 2);
  try {
    await Promise.all([tcpEcho(conn, "127.0.0.1", echo.port), tcpEcho(conn, "127.0.0.1", echo.port)]);
    await udpEcho(conn, udp.port);
  } finally {
    conn.close();
    echo.close();
    udp.close();
    dns.close();
    await front.stop();
  }
});

Deno.test("Wisp in multi-tenant mode: a token admits the client, the default policy blocks loopback (CLOSE 0x48), a token-less upgrade is 401", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay(multiTenantArgs(dir));
  const echo = await listenTcp(echoConnection);
  const port = Number(relay.wsUrls[0].split(":").pop());
  try {
    assert.equal(await wsUpgradeStatus(port, "/v1/tenants/w1/wisp/"), 401);
    const token = await createToken(SECRET, { tenant: "w1", exp: Math.floor(Date.now() / 1000) + 600 });
    const conn = await connect(`${relay.wsUrls[0]}/v1/tenants/w1/wisp/${token}/`, 2);
    try {
      assert.equal(await closeReason(conn.create_stream("127.0.0.1", echo.port)), 0x48);
      // the IPv6 default denials too: the host's ::1, ULA
      assert.equal(await closeReason(conn.create_stream("::1", echo.port)), 0x48);
      assert.equal(await closeReason(conn.create_stream("fd12::1", 80)), 0x48);
      assert.equal((await relay.tenant("w1")).wispSessions, 1);
    } finally {
      conn.close();
    }
  } finally {
    echo.close();
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A Wisp client written out by hand, for what wisp-js does not show (it ignores a CLOSE on stream 0): opens
 * `url` (v2 when `info` is given: it answers the server's INFO with those extension bytes) and returns every
 * packet the server sent until it closed the WebSocket.
 */
function rawWispSession(url: string, info?: Uint8Array): Promise<Uint8Array[]> {
  const ws = info ? new WebSocket(url, "wisp-v2") : new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const got: Uint8Array[] = [];
  return within(
    new Promise((resolve) => {
      ws.onmessage = (e) => {
        const p = new Uint8Array(e.data as ArrayBuffer);
        got.push(p);
        if (info && got.length === 1) ws.send(Uint8Array.of(0x05, 0, 0, 0, 0, 2, 0, ...info));
      };
      ws.onclose = () => resolve(got);
      ws.onerror = () => {};
    }),
    10_000,
    "the relay closing the Wisp session",
  );
}

/** The password extension's client bytes: id 0x02, u32 LE length, u8 username length, u16 LE password length. */
function passwordExtension(username: string, password: string): Uint8Array {
  const u = new TextEncoder().encode(username), p = new TextEncoder().encode(password);
  const len = 3 + u.length + p.length;
  return Uint8Array.of(
    0x02,
    len & 0xff,
    len >> 8,
    0,
    0,
    u.length,
    p.length & 0xff,
    p.length >> 8,
    ...u,
    ...p,
  );
}

Deno.test({
  name:
    "Wisp --wisp-credentials and --wisp-motd (the relay as a process, through its worker): the wisp-js client with the password extension gets the MOTD and echoes; a wrong password, none, or a v1 client get CLOSE 0xc0/0xc2 on stream 0 and no stream",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    await Deno.writeTextFile(`${dir}/users`, "# who may use Wisp\nalice:s3cret pass\n\nbob:a:colon\n");
    const port = freePort();
    const echo = await listenTcp(echoConnection);
    const relay = await RelayProcess.start([
      "--listen-ws",
      `http://127.0.0.1:${port}`,
      "--listen-qemu",
      `unix://${dir}/r.sock`,
      "--dns-upstream",
      "127.0.0.1:9",
      "--wisp-credentials",
      `${dir}/users`,
      "--wisp-motd",
      "welcome to the relay",
    ]);
    const url = `ws://127.0.0.1:${port}/wisp/`;
    try {
      for (const [username, password] of [["alice", "s3cret pass"], ["bob", "a:colon"]]) {
        const conn = await connect(url, 2, { username, password });
        try {
          assert.equal(conn.server_motd, "welcome to the relay");
          await tcpEcho(conn, "127.0.0.1", echo.port);
        } finally {
          conn.close();
        }
      }
      // the server's INFO offers the password extension as required (payload 1) beside UDP and the MOTD
      const CLOSE_0 = (reason: number) => [0x04, 0, 0, 0, 0, reason];
      const wrong = await rawWispSession(url, passwordExtension("alice", "guess"));
      assert.equal(wrong[0][0], 0x05, "INFO first");
      const offered = [...wrong[0].subarray(7)];
      assert.ok(
        offered.join(",").includes([0x02, 1, 0, 0, 0, 1].join(",")),
        `password extension required in ${offered}`,
      );
      assert.deepEqual(
        [...wrong.at(-1)!],
        CLOSE_0(0xc0),
        "a wrong password: CLOSE 0xc0, then the socket closes",
      );
      assert.equal(wrong.length, 2, "no CONTINUE: no stream may open");
      const stranger = await rawWispSession(url, passwordExtension("mallory", "s3cret pass"));
      assert.deepEqual([...stranger.at(-1)!], CLOSE_0(0xc0), "an unknown user: the same answer");
      const none = await rawWispSession(url, Uint8Array.of(0x01, 0, 0, 0, 0));
      assert.deepEqual([...none.at(-1)!], CLOSE_0(0xc2), "no credentials: CLOSE 0xc2");
      const v1 = await rawWispSession(url);
      assert.deepEqual(
        v1.map((p) => [...p]),
        [CLOSE_0(0xc2)],
        "a v1 client cannot authenticate: refused at once",
      );
      const refusals = relay.logs(/Wisp .*(credentials|authentication)/);
      assert.equal(refusals.length, 4, JSON.stringify(refusals));
      assert.ok(!relay.stderr.join("\n").includes("guess"), "passwords never reach the log");
    } finally {
      echo.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "Wisp --wisp-credentials: a file without a USERNAME:PASSWORD line stops the start with a clear error",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    await Deno.writeTextFile(`${dir}/users`, "alice\n");
    await assert.rejects(
      RelayProcess.start(["--listen-qemu", `unix://${dir}/r.sock`, "--wisp-credentials", `${dir}/users`]),
      /Invalid --wisp-credentials .*users: line 1: expected USERNAME:PASSWORD/,
    );
    await Deno.remove(dir, { recursive: true });
  },
});

/** The reference server (wisp-js's, under Node) on a loopback port, resolving through `dns`. */
async function startReferenceServer(dns: string): Promise<{ url: string; stop(): Promise<void> }> {
  const script = new URL("./guest_tools/wisp_js_server.mjs", import.meta.url).pathname;
  const child = new Deno.Command("node", { args: [script, dns], stdout: "piped", stderr: "inherit" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/ready \d+/.test(out)) {
    const r = await within(reader.read(), 10_000, "wisp-js server start");
    if (r.done) throw new Error(`wisp-js server did not start: ${out}`);
    out += r.value;
  }
  reader.cancel();
  return {
    url: `ws://127.0.0.1:${/ready (\d+)/.exec(out)![1]}/`,
    async stop() {
      child.kill();
      await child.status;
    },
  };
}

Deno.test({
  name:
    "Wisp differential: one wisp-js client script against the relay and against wisp-js's own server gives the same bytes (v1 and v2: TCP echo by IP and by name, UDP echo); both close refused and unresolvable streams",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { relay, dns } = await singleUserRelay();
    const reference = await startReferenceServer(`127.0.0.1:${dns.port}`);
    const echo = await listenTcp(echoConnection);
    const udp = await startUdpEcho();
    const closedPort = await listenTcp(() => {});
    closedPort.close();
    /** What the client sees, as a value two servers can be compared by. */
    const script = async (url: string, version: 1 | 2) => {
      const conn = await connect(url, version);
      try {
        const seen: Record<string, unknown> = {};
        for (const host of ["127.0.0.1", "upstream.test"]) {
          const stream = conn.create_stream(host, echo.port);
          const sent = new Uint8Array(256 * 1024).map((_, i) => (i * 7) ^ (i >> 8));
          const echoed = collect(stream, sent.length);
          for (let off = 0; off < sent.length; off += 8192) stream.send(sent.slice(off, off + 8192));
          const got = await echoed;
          seen[`tcp ${host}`] = got.length === sent.length && got.every((b, i) => b === sent[i]);
          stream.close();
        }
        const u = conn.create_stream("127.0.0.1", udp.port, "udp");
        const reply = collect(u, 9);
        u.send(new TextEncoder().encode("ping"));
        seen.udp = new TextDecoder().decode(await reply);
        u.close();
        const refused = await closeReason(conn.create_stream("127.0.0.1", closedPort.port));
        const unresolvable = await closeReason(conn.create_stream("nowhere.test", echo.port));
        return { seen, reasons: { refused, unresolvable } };
      } finally {
        conn.close();
      }
    };
    try {
      for (const version of [1, 2] as const) {
        const ours = await script(`${relay.wsUrls[0]}/wisp/`, version);
        const theirs = await script(reference.url, version);
        assert.deepEqual(ours.seen, theirs.seen, `v${version}: the same bytes through either server`);
        assert.deepEqual(ours.seen, { "tcp 127.0.0.1": true, "tcp upstream.test": true, udp: "echo:ping" });
        // the spec's reasons where wisp-js says only "network error" (0x03): both close, ours says why
        assert.deepEqual(ours.reasons, { refused: 0x44, unresolvable: 0x42 });
        assert.ok(
          theirs.reasons.refused > 0 && theirs.reasons.unresolvable > 0,
          JSON.stringify(theirs.reasons),
        );
        console.log(
          `v${version} close reasons: relay ${JSON.stringify(ours.reasons)}, wisp-js ${
            JSON.stringify(theirs.reasons)
          }`,
        );
      }
    } finally {
      echo.close();
      udp.close();
      dns.close();
      await reference.stop();
      await relay.stop();
    }
  },
});

Deno.test({
  name:
    "Wisp bytes held for a host that does not read count against the tenant's bufferedBytes: the admin API shows them, past the quota new streams get CLOSE 0x49, and once the host reads the stream finishes byte-exact",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    const relay = await startTestRelay(multiTenantArgs(dir));
    const QUOTA = 1024 * 1024;
    // a host service that takes the connection but reads nothing until told to
    let received = 0;
    const sockets: import("node:net").Socket[] = [];
    const sink = await listenTcp((s) => {
      s.pause();
      s.on("data", (d) => (received += d.length));
      s.on("error", () => {});
      sockets.push(s);
    });
    try {
      const created = await relay.request("POST", "/v1/tenants", {
        id: "w2",
        policy: { allow: ["127.0.0.1/32"] },
        quotas: { bufferedBytes: QUOTA },
      });
      assert.equal(created.status, 201);
      const token = await createToken(SECRET, { tenant: "w2", exp: Math.floor(Date.now() / 1000) + 600 });
      const conn = await connect(`${relay.wsUrls[0]}/v1/tenants/w2/wisp/${token}/`, 2);
      try {
        const stream = conn.create_stream("127.0.0.1", sink.port);
        let closedWith: number | null = null;
        stream.onclose = (r: number) => (closedWith = r);
        // far more than the kernel's loopback buffers and the quota together: bytes pile up in the relay
        const TOTAL = 48 * 1024 * 1024, PACKET = 64 * 1024;
        for (let off = 0; off < TOTAL; off += PACKET) {
          stream.send(new Uint8Array(PACKET).fill(off / PACKET & 0xff));
        }
        let used = 0;
        for (let i = 0; i < 40; i++) {
          await new Promise((r) => setTimeout(r, 100));
          used = (await relay.tenant("w2")).bufferedBytesUsed;
        }
        assert.equal(closedWith, null, "the stream is held back, not closed");
        // one grant of credit (128 packets of 64 KiB) may be in flight beyond the budget: no further grant
        assert.ok(used <= QUOTA + 128 * PACKET, `the tenant holds ${used} bytes for the host`);
        assert.ok(used > QUOTA / 2, `the budget was really reached (${used} bytes held)`);
        assert.equal(
          await closeReason(conn.create_stream("127.0.0.1", sink.port)),
          0x49,
          "no new stream while the budget is spent",
        );
        // the host reads: the bytes go, the budget comes back, the held stream gets its credit and finishes
        for (const s of sockets) s.resume();
        for (let i = 0; i < 300 && received < TOTAL; i++) await new Promise((r) => setTimeout(r, 100));
        assert.equal(received, TOTAL, "every byte reached the host");
        assert.equal(closedWith, null);
      } finally {
        conn.close();
      }
    } finally {
      for (const s of sockets) s.destroy();
      sink.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
