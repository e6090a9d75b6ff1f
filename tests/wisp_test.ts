/**
 * Wisp through the relay with MercuryWorkshop's own client (`@mercuryworkshop/wisp-js`, v1 and v2): TCP
 * and UDP streams to loopback servers, hostnames through the tenant's DNS, flow control past one window,
 * CLOSE reasons, and the multi-tenant rules (policy, tokens).
 */
import assert from "node:assert/strict";
import { client as wisp } from "@mercuryworkshop/wisp-js/client";
import { Relay, type RelayOptions } from "../src/relay/relay.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { jsonLogger } from "../src/relay/log.ts";
import { createToken } from "../src/relay/tokens.ts";
import { listenTcp, startDnsResponder, startUdpEcho } from "./_services.ts";
import { wsUpgradeStatus } from "./_relay_process.ts";
import { multiTenantOptions, SECRET, singleUserFront, within } from "./_relay_api.ts";

type Conn = InstanceType<typeof wisp.ClientConnection>;
type Stream = ReturnType<Conn["create_stream"]>;

/** Echoes a connection; a reset (the relay closed a stream with data unread) ends it quietly. */
function echoConnection(s: import("node:net").Socket): void {
  s.on("error", () => s.destroy());
  s.pipe(s);
}

function connect(url: string, version: 1 | 2): Promise<Conn> {
  const conn = new wisp.ClientConnection(url, { wisp_version: version });
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

async function singleUserRelay(
  extra: Partial<RelayOptions> = {},
): Promise<{ relay: Relay; dns: { close(): void } }> {
  const dns = await startDnsResponder({ "upstream.test": "127.0.0.1" });
  const stack = defaultStackConfig();
  stack.dnsUpstreams = [`127.0.0.1:${dns.port}`];
  stack.dnsRecords = [{ name: "static.test", address: "127.0.0.1" }];
  const relay = new Relay({
    listenQemu: [],
    listenWs: ["http://127.0.0.1:0"],
    stack,
    log: jsonLogger("error"),
    ...extra,
  });
  await relay.start();
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
      const t = [...relay.tenants.values()][0];
      assert.equal(t.wispSessions.size, 1);
      assert.equal(t.stats().connected, false, "no frame guest");
      assert.equal(t.hasGuest, true, "a Wisp client counts as the tenant's guest");
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
  const dns = await startDnsResponder({});
  const front = await singleUserFront(`127.0.0.1:${dns.port}`);
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
  const relay = new Relay({ ...multiTenantOptions(dir), listenWs: ["http://127.0.0.1:0"] });
  await relay.start();
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
      assert.equal(relay.tenants.get("w1")?.wispSessions.size, 1);
    } finally {
      conn.close();
    }
  } finally {
    echo.close();
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
