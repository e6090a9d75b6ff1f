/**
 * Readiness and drain (a rolling upgrade behind a balancer): `POST /v1/drain` and SIGTERM with
 * `--drain-timeout` stop admitting — readiness 503, new tenants, stream guests and WebSocket upgrades refused
 * — while the guests already connected carry on; SIGTERM then waits for them (bounded) before it exits.
 */
import assert from "node:assert/strict";
import { arpFrame, ip } from "./_frames.ts";
import { RelayProcess, StreamGuest, wsUpgradeStatus } from "./_relay_process.ts";
import { multiTenantArgs, startTestRelay } from "./_test_relay.ts";
import { ARP_OP_REPLY } from "../src/wire/arp.ts";
import { createToken } from "../src/relay/tokens.ts";

const MAC = 0x02000000000d;

Deno.test({
  name: "drain (admin API): readiness 503, nothing new admitted, the connected guest still served",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "slirp-drain-" });
    const relay = await startTestRelay(multiTenantArgs(dir));
    const ready = () => fetch(`${relay.adminUrl}/readyz`).then(async (r) => `${r.status} ${await r.text()}`);
    try {
      for (const id of ["live", "idle"]) {
        assert.equal((await relay.request("POST", "/v1/tenants", { id })).status, 201);
      }
      assert.equal(await ready(), "200 ready\n");
      const g = await StreamGuest.connect({ path: `${dir}/live.sock` });
      await g.send(arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
      await g.waitFor((d) => d.arp?.op === ARP_OP_REPLY);

      const drain = await relay.request("POST", "/v1/drain");
      assert.equal(drain.status, 202);
      assert.deepEqual(await drain.json(), { draining: true, guests: 1 });
      assert.equal(await ready(), "503 draining\n");
      assert.equal((await fetch(`${relay.adminUrl}/healthz`)).status, 200, "alive while draining");
      assert.equal((await relay.request("POST", "/v1/tenants", { id: "late" })).status, 503);
      // a new guest on another tenant's socket is closed at once
      const late = await Deno.connect({ transport: "unix", path: `${dir}/idle.sock` });
      const n = await Promise.race([
        late.read(new Uint8Array(1)).catch(() => null),
        new Promise((r) => setTimeout(() => r("open"), 3000)),
      ]);
      assert.equal(n, null, "the stream connection was closed");
      late.close();
      const port = Number(relay.wsUrls[0].split(":").pop());
      assert.equal(await wsUpgradeStatus(port, "/v1/tenants/idle/ws"), 503);
      // the connected guest is still answered
      const before = g.out.length;
      await g.send(arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
      await g.waitFor((d) => d.arp?.op === ARP_OP_REPLY, 3000, before);
      g.close();
    } finally {
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "SIGTERM with --drain-timeout: readiness false at once, the exit waits for the connected guest (bounded)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "slirp-drain-cli-" });
    const relay = await RelayProcess.start([
      "--listen-qemu",
      `unix://${dir}/relay.sock`,
      "--admin",
      "http://127.0.0.1:0",
      "--dns-upstream",
      "127.0.0.1:9",
      "--drain-timeout",
      "20",
    ], { ready: /admin API on http:\/\/127\.0\.0\.1:\d+/ });
    const admin = /admin API on (http:\/\/127\.0\.0\.1:\d+)/.exec(relay.stdout)![1];
    try {
      const g = await StreamGuest.connect({ path: `${dir}/relay.sock` });
      await g.send(arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
      await g.waitFor((d) => d.arp?.op === ARP_OP_REPLY);
      relay.child.kill("SIGTERM");
      let readyz = 0;
      for (let i = 0; i < 50 && readyz !== 503; i++) {
        await new Promise((r) => setTimeout(r, 100));
        readyz = (await fetch(`${admin}/readyz`).then((r) => (r.body?.cancel(), r.status))).valueOf();
      }
      assert.equal(readyz, 503, "readiness false once draining");
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(relay.exited, false, "still serving its connected guest");
      const t0 = Date.now();
      g.close();
      for (let i = 0; i < 100 && !relay.exited; i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(relay.exited, "exits once its last guest left");
      assert.ok(Date.now() - t0 < 5000, `exit took ${Date.now() - t0} ms after the guest left`);
    } finally {
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "secret rotation, last step: a relay given only the new secret refuses the old secret's tokens",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "slirp-rotate-" });
    await Deno.writeTextFile(`${dir}/new-secret`, "the-new-secret-after-rotation-01");
    const relay = await RelayProcess.start([
      "--multi-tenant",
      "--token-secret-file",
      `${dir}/new-secret`,
      "--tenant-socket-dir",
      `${dir}/t`,
      "--listen-ws",
      "http://127.0.0.1:0",
      "--dns-upstream",
      "127.0.0.1:9",
      "--workers",
      "0",
    ], { ready: /WebSocket on ws:\/\/127\.0\.0\.1:\d+/ });
    try {
      const ws = Number(/WebSocket on ws:\/\/127\.0\.0\.1:(\d+)/.exec(relay.stdout)![1]);
      const exp = Math.floor(Date.now() / 1000) + 600;
      const enc = (t: string) => new TextEncoder().encode(t);
      const oldToken = await createToken(enc("the-old-secret-before-rotation-1"), { tenant: "r", exp });
      const newToken = await createToken(enc("the-new-secret-after-rotation-01"), { tenant: "r", exp });
      assert.equal(
        await wsUpgradeStatus(ws, `/v1/tenants/r/ws?token=${oldToken}`),
        403,
        "old secret refused",
      );
      assert.equal(
        await wsUpgradeStatus(ws, `/v1/tenants/r/ws?token=${newToken}`),
        101,
        "new secret admitted",
      );
    } finally {
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
