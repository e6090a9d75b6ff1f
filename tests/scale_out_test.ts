/**
 * Scale-out with an ordinary balancer (issue #15): two relay processes sharing a token secret behind HAProxy
 * configured as deploy/haproxy.cfg ships (its servers pointed at loopback ports). A tenant's connections
 * stick to one relay; a token minted once admits on every relay; a relay that drains (POST /v1/drain)
 * leaves the balancer's rotation while the tenants on the other relay keep their guests.
 * Everything listens on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { multiTenantConfig, RelayProcess } from "./_relay_process.ts";
import { e2eTest, must } from "./_netns_guest.ts";
import { createToken } from "../src/relay/tokens.ts";

const SECRET = "0123456789abcdef0123456789abcdef"; // what multiTenantConfig writes
const ADMIN = "scale-out-admin-token";
const SHIPPED = new URL("../deploy/haproxy.cfg", import.meta.url).pathname;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

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

e2eTest(
  "scale-out behind HAProxy: sticky by tenant, one token for every relay, a draining relay leaves the rotation",
  ["haproxy"],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "slirp-fleet-" });
    await Deno.mkdir(`${dir}/a`);
    await Deno.mkdir(`${dir}/b`);
    const relays = [await startRelay(`${dir}/a`, "relay-a"), await startRelay(`${dir}/b`, "relay-b")];
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
    const open: WebSocket[] = [];
    try {
      await new Promise((r) => setTimeout(r, 1000)); // the first health checks
      const exp = Math.floor(Date.now() / 1000) + 600;
      const secret = new TextEncoder().encode(SECRET);
      const ids = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"];
      const tokens = new Map<string, string>();
      for (const id of ids) tokens.set(id, await createToken(secret, { tenant: id, exp }));
      // every tenant through the balancer, twice: the second connection lands where the first did
      const where = new Map<string, string>();
      for (const id of ids) {
        const ws = await guest(port, id, tokens.get(id)!);
        const first = await holder(relays, id);
        assert.ok(first, `${id} was admitted somewhere`);
        where.set(id, first);
        ws.close();
      }
      for (const id of ids) {
        const ws = await guest(port, id, tokens.get(id)!);
        open.push(ws);
        assert.equal(await holder(relays, id), where.get(id), `${id} reconnected to the same relay`);
      }
      // a token minted once admits on every relay (no state shared between them but the secret)
      const probe = await createToken(secret, { tenant: "anywhere", exp });
      for (const r of relays) (await guest(r.ws, "anywhere", probe)).close();

      // relay-a drains: the balancer stops sending to it; relay-b's tenants keep their guests
      const onA = ids.filter((id) => where.get(id) === "relay-a");
      const onB = ids.filter((id) => where.get(id) === "relay-b");
      const drain = await fetch(`http://127.0.0.1:${relays[0].admin}/v1/drain`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      assert.equal(drain.status, 202);
      await drain.body?.cancel();
      await new Promise((r) => setTimeout(r, 1000)); // health checks see 503
      const fresh = await createToken(secret, { tenant: "after-drain", exp });
      (await guest(port, "after-drain", fresh)).close();
      assert.equal(await holder(relays, "after-drain"), "relay-b", "a new tenant goes to the ready relay");
      for (const id of onB) {
        const ws = open[ids.indexOf(id)];
        assert.equal(ws.readyState, WebSocket.OPEN, `${id}'s guest on relay-b is still connected`);
      }
      console.log(`tenants on relay-a: ${onA.length}, on relay-b: ${onB.length}`);
    } finally {
      for (const ws of open) ws.close();
      try {
        proxy.kill("SIGTERM");
      } catch { /* ended */ }
      await proxy.status;
      for (const r of relays) await r.process.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
