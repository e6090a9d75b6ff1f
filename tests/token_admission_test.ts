/**
 * Tenants admitted by token: the token's claims are applied or the admission refused, a session ends when
 * its token expires, and a token-created tenant with no guest leaves nothing behind.
 */
import assert from "node:assert/strict";
import { createToken, type TokenClaims } from "../src/relay/tokens.ts";
import { wsUpgradeStatus } from "./_relay_process.ts";
import { SECRET } from "./_relay_api.ts";
import { multiTenantArgs, startTestRelay, type TestRelay } from "./_test_relay.ts";

function token(tenant: string, extra: Partial<Omit<TokenClaims, "v" | "tenant">> = {}): Promise<string> {
  return createToken(SECRET, { tenant, exp: Math.floor(Date.now() / 1000) + 3600, ...extra });
}

/** Opens a guest WebSocket; resolves with it once open, or with the HTTP status of a refused upgrade. */
async function connect(relay: TestRelay, id: string, tok: string): Promise<WebSocket | number> {
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

async function tenantIds(relay: TestRelay): Promise<string[]> {
  return (await (await relay.api("/v1/tenants")).json() as { id: string }[]).map((t) => t.id);
}

async function maxTcpFlows(relay: TestRelay, id: string): Promise<number> {
  return (await relay.tenant(id)).quotas.maxTcpFlows;
}

async function until(pred: () => Promise<boolean>, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`Timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("token tenants: 50 distinct ids come and go and leave no tenant and no socket behind", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay(multiTenantArgs(dir));
  try {
    for (let i = 0; i < 50; i++) {
      const ws = await connect(relay, `guest-${i}`, await token(`guest-${i}`));
      assert.ok(ws instanceof WebSocket);
      const c = closed(ws);
      ws.close();
      await c;
    }
    await until(async () => (await tenantIds(relay)).length === 0, "every token tenant removed");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), []);
  } finally {
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("token tenants: the token's claims are applied; different claims are refused while a guest is live, applied once it left", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay(multiTenantArgs(dir));
  try {
    const ws = await connect(relay, "c1", await token("c1", { quotas: { maxTcpFlows: 7 } }));
    assert.ok(ws instanceof WebSocket);
    assert.equal(await maxTcpFlows(relay, "c1"), 7);
    // the same claims are fine (a v86 reconnect); other claims are not, while the guest is live
    assert.equal(await connect(relay, "c1", await token("c1", { quotas: { maxTcpFlows: 9 } })), 409);
    assert.equal(await maxTcpFlows(relay, "c1"), 7);
    const c = closed(ws);
    ws.close();
    await c;
    await until(async () => !(await tenantIds(relay)).includes("c1"), "c1 removed after its guest left");
    const ws2 = await connect(relay, "c1", await token("c1", { quotas: { maxTcpFlows: 9 } }));
    assert.ok(ws2 instanceof WebSocket);
    assert.equal(await maxTcpFlows(relay, "c1"), 9);
    const c2 = closed(ws2);
    ws2.close();
    await c2;
    // an operator's tenant: a token claiming nothing is admitted, one claiming other quotas is not
    assert.equal(
      (await relay.request("POST", "/v1/tenants", { id: "ops", quotas: { maxTcpFlows: 3 } })).status,
      201,
    );
    assert.equal(await connect(relay, "ops", await token("ops", { quotas: { maxTcpFlows: 300 } })), 409);
    const ws3 = await connect(relay, "ops", await token("ops"));
    assert.ok(ws3 instanceof WebSocket);
    assert.equal(await maxTcpFlows(relay, "ops"), 3);
    const c3 = closed(ws3);
    ws3.close();
    await c3;
    assert.ok((await tenantIds(relay)).includes("ops"), "an operator's tenant stays");
  } finally {
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("token tenants: the session ends when its token expires; the tenant goes with it", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay(multiTenantArgs(dir));
  try {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const ws = await connect(relay, "short", await token("short", { exp }));
    assert.ok(ws instanceof WebSocket);
    const code = await closed(ws);
    assert.equal(code, 4401);
    assert.ok(Date.now() >= (exp - 1) * 1000, "not before the token expired");
    await until(async () => !(await tenantIds(relay)).includes("short"), "the tenant removed");
  } finally {
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
