/**
 * gvproxy's forwarder API on the admin listener (what podman machine and CRC call): expose a guest port on
 * the host, list it, unexpose it — with a real Linux guest (network namespace) answering on its port. Single-
 * user mode at the top of the API, multi-tenant mode under the tenant's path.
 */
import assert from "node:assert/strict";
import { e2eTest, NetnsGuest } from "./_netns_guest.ts";
import { multiTenantArgs, startTestRelay } from "./_test_relay.ts";
import { freePort, replyThroughForward } from "./_services.ts";

/** Reads what the guest's one-shot listener on `guestPort` says to a client of host port `port`. */
async function throughForward(guest: NetnsGuest, guestPort: number, port: number): Promise<string> {
  const listening = guest.exec(["sh", "-c", `echo hello-via-gvproxy-api | nc -l -N ${guestPort}`], {
    timeoutMs: 20_000,
  });
  const reply = await replyThroughForward("127.0.0.1", port);
  await listening;
  return reply;
}

e2eTest("gvproxy forwarder API, single-user: expose reaches the guest, all lists it, unexpose closes it", [
  "nc",
], async () => {
  const dir = await Deno.makeTempDir({ prefix: "slirp-gvapi-" });
  const relay = await startTestRelay([
    ...["--listen-qemu", `unix://${dir}/relay.sock`, "--dns-upstream", "127.0.0.1:9", "--log-level", "warn"],
  ]);
  const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
  try {
    const lease = await guest.dhcp();
    const port = freePort();
    const expose = await relay.request("POST", "/services/forwarder/expose", {
      local: `127.0.0.1:${port}`,
      remote: `${lease.ip}:5001`,
      protocol: "tcp",
    });
    assert.equal(expose.status, 200, await expose.text());
    assert.equal(await throughForward(guest, 5001, port), "hello-via-gvproxy-api");
    const all = await (await relay.request("GET", "/services/forwarder/all")).json();
    assert.deepEqual(all, [{ local: `127.0.0.1:${port}`, remote: `${lease.ip}:5001`, protocol: "tcp" }]);
    assert.equal(
      (await relay.request("POST", "/services/forwarder/unexpose", {
        local: `127.0.0.1:${port}`,
        protocol: "tcp",
      })).status,
      200,
    );
    assert.deepEqual(await (await relay.request("GET", "/services/forwarder/all")).json(), []);
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }), "the host port is closed again");
    const bad = await relay.request("POST", "/services/forwarder/expose", {
      local: "nonsense",
      remote: "10.0.2.15:22",
    });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error, /"local" must be "HOST:PORT"/);
  } finally {
    await guest.close();
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

e2eTest(
  "gvproxy forwarder API, multi-tenant: under the tenant's path, absent at the top",
  ["nc"],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "slirp-gvapi-mt-" });
    const relay = await startTestRelay(multiTenantArgs(dir));
    try {
      assert.equal((await relay.request("POST", "/v1/tenants", { id: "pm" })).status, 201);
      assert.equal((await relay.request("GET", "/services/forwarder/all")).status, 404);
      const guest = await NetnsGuest.create(`unix://${dir}/pm.sock`);
      try {
        const lease = await guest.dhcp();
        const port = freePort();
        const expose = await relay.request("POST", "/v1/tenants/pm/services/forwarder/expose", {
          local: `:${port}`,
          remote: `${lease.ip}:5002`,
        });
        assert.equal(expose.status, 200, await expose.text());
        assert.equal(await throughForward(guest, 5002, port), "hello-via-gvproxy-api");
        const all = await (await relay.request("GET", "/v1/tenants/pm/services/forwarder/all")).json();
        assert.deepEqual(all, [{ local: `127.0.0.1:${port}`, remote: `${lease.ip}:5002`, protocol: "tcp" }]);
      } finally {
        await guest.close();
      }
    } finally {
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
