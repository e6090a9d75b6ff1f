/**
 * Tenants admitted by token: the token's claims are applied or the admission refused, a session ends when
 * its token expires, and a token-created tenant with no guest leaves nothing behind.
 */
import assert from "node:assert/strict";
import { Relay } from "../src/relay/relay.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { jsonLogger } from "../src/relay/log.ts";
import { parseHostForward } from "../src/cli.ts";
import { createToken, type TokenClaims } from "../src/relay/tokens.ts";
import { wsUpgradeStatus } from "./_relay_process.ts";

const SECRET = new TextEncoder().encode("admission-secret-of-at-least-16");

async function tokenRelay(dir: string, graceMs = 0): Promise<Relay> {
  const stack = defaultStackConfig();
  stack.dnsUpstreams = ["127.0.0.1:9"];
  const relay = new Relay({
    listenQemu: [],
    listenWs: ["http://127.0.0.1:0"],
    stack,
    log: jsonLogger("error"),
    multiTenant: true,
    tokenSecret: SECRET,
    tenantSocketDir: dir,
    parseForward: parseHostForward,
    graceMs,
  });
  await relay.start();
  return relay;
}

function token(tenant: string, extra: Partial<Omit<TokenClaims, "v" | "tenant">> = {}): Promise<string> {
  return createToken(SECRET, { tenant, exp: Math.floor(Date.now() / 1000) + 3600, ...extra });
}

/** Opens a guest WebSocket; resolves with it once open, or with the HTTP status of a refused upgrade. */
async function connect(relay: Relay, id: string, tok: string): Promise<WebSocket | number> {
  const path = `/v1/tenants/${id}/ws?token=${tok}`;
  const ws = new WebSocket(`${relay.wsUrls[0]}${path}`);
  const opened = await new Promise<boolean>((resolve) => {
    ws.onopen = () => resolve(true);
    ws.onerror = () => resolve(false);
  });
  return opened ? ws : await wsUpgradeStatus(Number(/:(\d+)$/.exec(relay.wsUrls[0])![1]), path);
}

function closed(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve(0);
    ws.addEventListener("close", (e) => resolve(e.code));
  });
}

async function until(pred: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`Timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("token tenants: 50 distinct ids come and go and leave no tenant and no socket behind", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await tokenRelay(dir);
  try {
    for (let i = 0; i < 50; i++) {
      const ws = await connect(relay, `guest-${i}`, await token(`guest-${i}`));
      assert.ok(ws instanceof WebSocket);
      const c = closed(ws);
      ws.close();
      await c;
    }
    await until(() => relay.tenants.size === 0, "every token tenant removed");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), []);
  } finally {
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("token tenants: the token's claims are applied; different claims are refused while a guest is live, applied once it left", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await tokenRelay(dir);
  try {
    const ws = await connect(relay, "c1", await token("c1", { quotas: { maxTcpFlows: 7 } }));
    assert.ok(ws instanceof WebSocket);
    assert.equal(relay.tenants.get("c1")!.quotas.maxTcpFlows, 7);
    assert.equal(relay.tenants.get("c1")!.config.maxTcpFlows, 7);
    // the same claims are fine (a v86 reconnect); other claims are not, while the guest is live
    assert.equal(await connect(relay, "c1", await token("c1", { quotas: { maxTcpFlows: 9 } })), 409);
    assert.equal(relay.tenants.get("c1")!.quotas.maxTcpFlows, 7);
    const c = closed(ws);
    ws.close();
    await c;
    await until(() => !relay.tenants.has("c1"), "c1 removed after its guest left");
    const ws2 = await connect(relay, "c1", await token("c1", { quotas: { maxTcpFlows: 9 } }));
    assert.ok(ws2 instanceof WebSocket);
    assert.equal(relay.tenants.get("c1")!.quotas.maxTcpFlows, 9);
    const c2 = closed(ws2);
    ws2.close();
    await c2;
    // an operator's tenant: a token claiming nothing is admitted, one claiming other quotas is not
    await relay.createTenant({ id: "ops", quotas: { maxTcpFlows: 3 } });
    assert.equal(await connect(relay, "ops", await token("ops", { quotas: { maxTcpFlows: 300 } })), 409);
    const ws3 = await connect(relay, "ops", await token("ops"));
    assert.ok(ws3 instanceof WebSocket);
    assert.equal(relay.tenants.get("ops")!.quotas.maxTcpFlows, 3);
    const c3 = closed(ws3);
    ws3.close();
    await c3;
    assert.ok(relay.tenants.has("ops"), "an operator's tenant stays");
  } finally {
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("token tenants: the session ends when its token expires; the tenant goes with it", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await tokenRelay(dir);
  try {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const ws = await connect(relay, "short", await token("short", { exp }));
    assert.ok(ws instanceof WebSocket);
    const code = await closed(ws);
    assert.equal(code, 4401);
    assert.ok(Date.now() >= (exp - 1) * 1000, "not before the token expired");
    await until(() => !relay.tenants.has("short"), "the tenant removed");
  } finally {
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
