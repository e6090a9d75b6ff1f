/**
 * The relay with its data plane in two workers (relay/front.ts + src/data_plane_worker.ts), as the CLI runs
 * it: tenants on different workers are one relay to the admin API and the metrics, share the relay-wide
 * limits, and never reach each other's ports; a WebSocket guest's frames cross to its worker in rings.
 */
import assert from "node:assert/strict";
import { workerOf } from "../src/relay/shared_state.ts";
import { createToken } from "../src/relay/tokens.ts";
import { parsePrometheus, sample, SECRET } from "./_relay_api.ts";
import { multiTenantArgs, startTestRelay, type TestRelay } from "./_test_relay.ts";
import { e2eTest, guestTool, NetnsGuest } from "./_netns_guest.ts";

const tool = (guest: NetnsGuest, args: string[]) => guestTool(guest, args, 60_000);
import { listenTcp, randomFile, startHashServer } from "./_services.ts";

const WORKERS = 2;

/** A tenant id that lives on worker `w`. */
function idOn(w: number, prefix: string): string {
  for (let i = 0;; i++) if (workerOf(`${prefix}-${i}`, WORKERS) === w) return `${prefix}-${i}`;
}

/** A multi-tenant relay with two data-plane workers, as `serve --workers 2` runs it. */
async function front(dir: string, maxTenants = 16): Promise<TestRelay> {
  return await startTestRelay([
    ...multiTenantArgs(dir),
    ...["--workers", String(WORKERS), "--max-tenants", String(maxTenants)],
  ]);
}

Deno.test("workers: one admin API and one exposition over tenants on two workers; relay-wide tenant limit", async () => {
  const dir = await Deno.makeTempDir();
  const f = await front(dir, 2);
  try {
    const a = idOn(0, "a"), b = idOn(1, "b");
    assert.equal((await f.request("POST", "/v1/tenants", { id: a })).status, 201);
    assert.equal((await f.request("POST", "/v1/tenants", { id: b })).status, 201);
    assert.equal((await f.request("POST", "/v1/tenants", { id: b })).status, 409, "duplicate, on its worker");
    // the limit counts both workers' tenants, whichever worker the third would land on
    for (const w of [0, 1]) {
      const r = await f.request("POST", "/v1/tenants", { id: idOn(w, "c") });
      assert.equal(r.status, 503, `third tenant on worker ${w} refused at the relay-wide limit of 2`);
      await r.body?.cancel();
    }
    const list = await (await f.request("GET", "/v1/tenants")).json();
    assert.deepEqual(list.map((t: { id: string }) => t.id).sort(), [a, b].sort());
    const one = await f.request("GET", `/v1/tenants/${b}`);
    assert.equal((await one.json()).id, b, "a named tenant's request reaches its worker");
    const text = await (await f.request("GET", "/metrics")).text();
    parsePrometheus(text);
    assert.equal(sample(text, "slirp_tenants"), 2, "each worker's tenants, summed");
    assert.equal(sample(text, "slirp_relay_tenants_limit"), 2, "a relay-wide figure, taken once");
    assert.equal(text.split("\n").filter((l) => l.startsWith("slirp_relay_tenants_limit{")).length, 1);
    for (const id of [a, b]) {
      assert.equal(sample(text, "slirp_tenant_tcp_flows", { tenant: id }), 0, `${id} in the exposition`);
    }
    assert.equal((await f.request("DELETE", `/v1/tenants/${a}`)).status, 204);
    const again = await f.request("POST", "/v1/tenants", { id: idOn(1, "d") });
    assert.equal(again.status, 201, "a deleted tenant frees its place relay-wide");
    await again.body?.cancel();
  } finally {
    await f.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

e2eTest(
  "workers: a tenant on one worker never reaches another worker's tenant's ports; a WebSocket guest on the other transfers byte-exact",
  [],
  async () => {
    const dir = await Deno.makeTempDir();
    await Deno.chmod(dir, 0o755);
    const f = await front(dir);
    const hs = await startHashServer();
    const other = await listenTcp((s) => s.end("loopback-secret"));
    try {
      const a = idOn(0, "a"), b = idOn(1, "b");
      await (await f.request("POST", "/v1/tenants", { id: a, policy: { allow: ["127.0.0.1/32"] } })).body
        ?.cancel();
      const bInfo = await (await f.request("POST", "/v1/tenants", {
        id: b,
        policy: { allow: [`127.0.0.1/32:${hs.port}`] },
        hostfwd: ["tcp:127.0.0.1:0-:5001"],
        streamTcp: "127.0.0.1:0",
      })).json();
      const bForward = bInfo.forwards[0].hostPort;
      const bStream = Number(/:(\d+)$/.exec(bInfo.streamTcp)![1]);
      const token = await createToken(SECRET, { tenant: b, exp: Math.floor(Date.now() / 1000) + 600 });
      const ga = await NetnsGuest.create(`unix://${dir}/${a}.sock`);
      const gb = await NetnsGuest.create(`${f.wsUrls[0]}/v1/tenants/${b}/ws?token=${token}`);
      try {
        await Promise.all([ga.dhcp(), gb.dhcp()]);
        for (const port of [bForward, bStream]) {
          const r = await tool(ga, ["refused", "10.0.2.2", String(port)]);
          assert.notEqual(
            r.error,
            null,
            `the tenant on worker 0 reached port ${port} of the one on worker 1`,
          );
        }
        const allowed = await tool(ga, ["halfclose", "10.0.2.2", String(other.port)]);
        assert.equal(allowed.reply, "loopback-secret", "an ordinary allowed loopback server is reached");
        const file = await randomFile(dir, 8 * 1024 * 1024, "b.bin");
        const sent = await tool(gb, ["send", "10.0.2.2", String(hs.port), file.path]);
        assert.equal(sent.reply, file.sha256, "the WebSocket guest's bytes crossed the rings intact");
      } finally {
        await ga.close();
        await gb.close();
      }
    } finally {
      hs.close();
      other.close();
      await f.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
