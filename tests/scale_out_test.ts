/**
 * Scale-out with an ordinary balancer (issue #15): three relay processes sharing a token secret behind HAProxy
 * configured as deploy/haproxy.cfg ships (its servers pointed at loopback ports). Tenants spread and stick to
 * one relay; a token minted once admits on every relay; a SIGKILLed relay leaves another's transfer
 * byte-exact; a relay drained by SIGTERM leaves the balancer's rotation while its own guest finishes.
 * Everything listens on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { multiTenantConfig, RelayProcess } from "./_relay_process.ts";
import { e2eTest, must } from "./_netns_guest.ts";
import { createToken } from "../src/relay/tokens.ts";
import { client as wisp } from "@mercuryworkshop/wisp-js/client";
import { freePort, listenTcp } from "./_services.ts";

const SECRET = "0123456789abcdef0123456789abcdef"; // what multiTenantConfig writes
const ADMIN = "scale-out-admin-token";
const SHIPPED = new URL("../deploy/haproxy.cfg", import.meta.url).pathname;

interface RelayNode {
  name: string;
  process: RelayProcess;
  ws: number;
  admin: number;
}

async function startRelay(dir: string, name: string): Promise<RelayNode> {
  const config = await multiTenantConfig(`${dir}`, []);
  await Deno.writeTextFile(`${dir}/admin-token`, ADMIN);
  const process = await RelayProcess.start([
    "--config",
    config,
    "--listen-ws",
    "http://127.0.0.1:0",
    "--admin",
    "http://127.0.0.1:0",
    "--admin-token-file",
    `${dir}/admin-token`,
    "--instance",
    name,
    "--drain-timeout",
    "20",
    "--workers",
    "0",
  ], { ready: /admin API on http:\/\/127\.0\.0\.1:\d+/ });
  const ws = Number(/WebSocket on ws:\/\/127\.0\.0\.1:(\d+)/.exec(process.stdout)![1]);
  const admin = Number(/admin API on http:\/\/127\.0\.0\.1:(\d+)/.exec(process.stdout)![1]);
  return { name, process, ws, admin };
}

/** The relay that holds tenant `id`, by asking each admin API. */
async function holder(relays: RelayNode[], id: string): Promise<string | null> {
  for (const r of relays) {
    const res = await fetch(`http://127.0.0.1:${r.admin}/v1/tenants/${id}`, {
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    await res.body?.cancel();
    if (res.status === 200) return r.name;
  }
  return null;
}

/** Opens a frame-per-message WebSocket guest for tenant `id` at `port`; resolves once open. */
function guest(port: number, id: string, token: string): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/tenants/${id}/ws?token=${token}`);
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`WebSocket for ${id} failed`));
  });
}

/** A Wisp connection to `url` (v2), open. */
function wispConnect(url: string): Promise<InstanceType<typeof wisp.ClientConnection>> {
  const conn = new wisp.ClientConnection(url, { wisp_version: 2 });
  return new Promise((resolve, reject) => {
    conn.onopen = () => resolve(conn);
    conn.onerror = () => reject(new Error(`Wisp connection to ${url} failed`));
  });
}

/** Sends `data` through a Wisp TCP stream to an echo server and resolves with what came back. */
function echoThrough(
  conn: InstanceType<typeof wisp.ClientConnection>,
  port: number,
  data: Uint8Array,
  midway: () => void,
) {
  const stream = conn.create_stream("127.0.0.1", port);
  const parts: Uint8Array[] = [];
  let got = 0, fired = false;
  const done = new Promise<Uint8Array>((resolve, reject) => {
    stream.onmessage = (d: Uint8Array) => {
      parts.push(d.slice());
      got += d.length;
      if (!fired && got >= data.length / 2) {
        fired = true;
        midway();
      }
      if (got >= data.length) {
        const all = new Uint8Array(got);
        let o = 0;
        for (const p of parts) o += (all.set(p, o), p.length);
        resolve(all);
      }
    };
    stream.onclose = (reason: number) =>
      reject(new Error(`the stream closed (0x${reason.toString(16)}) at ${got} bytes`));
  });
  for (let off = 0; off < data.length; off += 16384) stream.send(data.slice(off, off + 16384));
  return done;
}

e2eTest(
  "scale-out behind HAProxy: tenants spread and stick; a SIGKILLed relay leaves the others' transfers byte-exact; a SIGTERM-drained relay takes no new tenants while its guest finishes",
  ["haproxy"],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "slirp-fleet-" });
    const names = ["relay-a", "relay-b", "relay-c"];
    const relays: RelayNode[] = [];
    for (const name of names) {
      await Deno.mkdir(`${dir}/${name}`);
      relays.push(await startRelay(`${dir}/${name}`, name));
    }
    const byName = (n: string) => relays.find((r) => r.name === n)!;
    // the shipped configuration, its servers pointed at this test's relays and its bind at a free port
    const port = freePort();
    const shipped = await Deno.readTextFile(SHIPPED);
    const cfg = shipped
      .replace(/^ {4}server .*\n/gm, "")
      .replace(/bind 127\.0\.0\.1:8088/, `bind 127.0.0.1:${port}`)
      .replace(/default-server inter 2s/, "default-server inter 200ms") +
      relays.map((r) => `    server ${r.name} 127.0.0.1:${r.ws} check port ${r.admin}\n`).join("");
    await Deno.writeTextFile(`${dir}/haproxy.cfg`, cfg);
    await must(["haproxy", "-c", "-f", SHIPPED]);
    await must(["haproxy", "-c", "-f", `${dir}/haproxy.cfg`]);
    const proxy = new Deno.Command("haproxy", {
      args: ["-db", "-f", `${dir}/haproxy.cfg`],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const echo = await listenTcp((s) => {
      s.on("error", () => s.destroy());
      s.pipe(s);
    });
    const open: WebSocket[] = [];
    const wisps: { close(): void }[] = [];
    try {
      await new Promise((r) => setTimeout(r, 1000)); // the first health checks
      const exp = Math.floor(Date.now() / 1000) + 600;
      const secret = new TextEncoder().encode(SECRET);
      const token = (tenant: string) =>
        createToken(secret, { tenant, exp, policy: { allow: ["127.0.0.1/32"] } });
      // spread and stick: every tenant through the balancer, twice; the second lands where the first did
      const ids = Array.from({ length: 12 }, (_, i) => `t${i}`);
      const where = new Map<string, string>();
      for (const id of ids) {
        (await guest(port, id, await token(id))).close();
        const first = await holder(relays, id);
        assert.ok(first, `${id} was admitted somewhere`);
        where.set(id, first);
      }
      for (const id of ids) {
        open.push(await guest(port, id, await token(id)));
        assert.equal(await holder(relays, id), where.get(id), `${id} reconnected to the same relay`);
      }
      const spread = new Set(where.values());
      assert.ok(spread.size >= 2, `12 tenants spread over ${spread.size} relay(s)`);
      // a token minted once admits on every relay (no state shared between them but the secret)
      const anywhere = await token("anywhere");
      for (const r of relays) (await guest(r.ws, "anywhere", anywhere)).close();

      // SIGKILL one relay in the middle of another relay's transfer: the transfer finishes byte-exact
      let bulk = "", conn!: InstanceType<typeof wisp.ClientConnection>;
      for (let k = 0; k < 40 && !bulk; k++) {
        const id = `bulk${k}`;
        const c = await wispConnect(`ws://127.0.0.1:${port}/v1/tenants/${id}/wisp/${await token(id)}/`);
        const h = await holder(relays, id);
        if (h === "relay-b") [bulk, conn] = [id, c];
        else c.close();
      }
      assert.ok(bulk, "a tenant on relay-b");
      wisps.push(conn);
      const victim = byName("relay-c");
      const data = new Uint8Array(16 * 1024 * 1024);
      for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
      const back = await echoThrough(conn, echo.port, data, () => victim.process.child.kill("SIGKILL"));
      assert.equal(back.length, data.length);
      assert.ok(
        back.every((b, i) => b === data[i]),
        "relay-b's transfer is byte-exact across relay-c's death",
      );
      await victim.process.child.status;
      for (const id of ids.filter((id) => where.get(id) === "relay-b")) {
        assert.equal(open[ids.indexOf(id)].readyState, WebSocket.OPEN, `${id} on relay-b is still connected`);
      }

      // SIGTERM with --drain-timeout: relay-a stops taking new tenants while its guest stays connected
      const drained = byName("relay-a");
      const live = ids.find((id) => where.get(id) === "relay-a");
      drained.process.child.kill("SIGTERM");
      await new Promise((r) => setTimeout(r, 1000)); // health checks see its /readyz 503
      for (let k = 0; k < 6; k++) {
        const id = `late${k}`;
        (await guest(port, id, await token(id))).close();
        assert.equal(
          await holder([byName("relay-b")], id),
          "relay-b",
          `${id}: only the ready relay takes new tenants`,
        );
      }
      if (live) {
        assert.equal(
          open[ids.indexOf(live)].readyState,
          WebSocket.OPEN,
          `${live}'s guest on the draining relay`,
        );
        assert.equal(drained.process.exited, false, "the draining relay waits for its guests");
      }
      for (const id of ids.filter((id) => where.get(id) === "relay-a")) open[ids.indexOf(id)].close();
      for (let i = 0; i < 100 && !drained.process.exited; i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(drained.process.exited, "the drained relay exits once its guests left");
    } finally {
      for (const ws of open) ws.close();
      for (const w of wisps) w.close();
      echo.close();
      try {
        proxy.kill("SIGTERM");
      } catch { /* ended */ }
      await proxy.status;
      for (const r of relays) await r.process.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
