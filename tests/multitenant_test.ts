/**
 * The multi-tenant relay: admin API, tokens, isolation between tenants, default-deny egress policy,
 * quotas, the WebSocket transport and pcap capture — over real sockets, with real Linux guests where a
 * guest is needed.
 */
import assert from "node:assert/strict";
import { parsePrometheus, SECRET } from "./_relay_api.ts";
import { createToken, verifyToken } from "../src/relay/tokens.ts";
import { e2eTest, guestTool as tool, NetnsGuest, run } from "./_netns_guest.ts";
import { listenTcp, randomFile, startHashServer } from "./_services.ts";
import { dhcpFrame } from "./_frames.ts";
import { readFrames } from "../src/transport/stream.ts";
import { multiTenantArgs, startTestRelay, type TestRelay } from "./_test_relay.ts";

/** Creates a tenant through the admin API, as an operator would. */
async function createTenant(relay: TestRelay, spec: Record<string, unknown>): Promise<void> {
  const r = await relay.request("POST", "/v1/tenants", spec);
  assert.equal(r.status, 201, await r.text());
}

const MiB = 1024 * 1024;

Deno.test("admin API: bearer token required; tenants created, listed, inspected, deleted; forwards; metrics", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay(multiTenantArgs(dir));
  try {
    assert.equal(await (await fetch(`${relay.adminUrl}/healthz`)).text(), "ok\n");
    const noAuth = await fetch(`${relay.adminUrl}/v1/tenants`);
    assert.equal(noAuth.status, 401);
    assert.match((await noAuth.json()).error, /bearer token/);
    const wrong = await fetch(`${relay.adminUrl}/v1/tenants`, { headers: { authorization: "Bearer wrong" } });
    await wrong.body?.cancel();
    assert.equal(wrong.status, 401);

    const created = await relay.request("POST", "/v1/tenants", {
      id: "ci-42",
      quotas: { maxTcpFlows: 10 },
      hostfwd: ["tcp:127.0.0.1:0-:22"],
      streamTcp: "127.0.0.1:0",
    });
    assert.equal(created.status, 201);
    const body = await created.json();
    assert.equal(body.socket, `${dir}/ci-42.sock`);
    // its own TCP stream port: a guest there is the tenant's guest (DHCP answered in its network)
    const streamPort = Number(/^tcp:\/\/127\.0\.0\.1:(\d+)$/.exec(body.streamTcp)?.[1]);
    assert.ok(streamPort > 0, body.streamTcp);
    const qemu = await Deno.connect({ hostname: "127.0.0.1", port: streamPort });
    const discover = dhcpFrame(0x020000000042, 1);
    const framed = new Uint8Array(4 + discover.length);
    new DataView(framed.buffer).setUint32(0, discover.length);
    framed.set(discover, 4);
    await qemu.write(framed);
    const offered = await new Promise<boolean>((resolve) => {
      readFrames(qemu, 70000, (b, off, len) => resolve(len > 300 && b[off + 12] === 0x08)).catch(() =>
        resolve(false)
      );
    });
    assert.ok(offered, "a DHCP offer came back over the tenant's TCP port");
    assert.equal((await relay.request("GET", "/v1/tenants/ci-42")).status, 200);
    assert.equal((await (await relay.request("GET", "/v1/tenants/ci-42")).json()).transport, "stream");
    qemu.close();
    // the relay notices the guest leaving
    for (
      let i = 0;
      i < 100 && (await (await relay.request("GET", "/v1/tenants/ci-42")).json()).connected;
      i++
    ) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(
      (await relay.request("POST", "/v1/tenants", { id: "bad-port", streamTcp: "nope:1" })).status,
      400,
    );
    assert.equal(body.websocketPath, "/v1/tenants/ci-42/ws");
    assert.equal(body.forwards[0].guestPort, 22);
    assert.ok(Deno.statSync(`${dir}/ci-42.sock`).isSocket);
    assert.equal((await relay.request("POST", "/v1/tenants", { id: "ci-42" })).status, 409);
    const bad = await relay.request("POST", "/v1/tenants", { id: "../etc" });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error, /Invalid tenant id/);
    assert.equal(
      (await relay.request("POST", "/v1/tenants", { id: "x", policy: { allow: ["nope"] } })).status,
      400,
    );

    const list = await (await relay.request("GET", "/v1/tenants")).json();
    assert.deepEqual(list.map((t: { id: string }) => t.id), ["ci-42"]);
    const one = await (await relay.request("GET", "/v1/tenants/ci-42")).json();
    assert.equal(one.connected, false);
    assert.equal(one.quotas.maxTcpFlows, 10);
    const fwd = await relay.request("POST", "/v1/tenants/ci-42/hostfwd", { rule: "udp:127.0.0.1:0-:53" });
    assert.equal(fwd.status, 201);
    const f = await fwd.json();
    assert.equal((await relay.request("DELETE", `/v1/tenants/ci-42/hostfwd/udp/${f.hostPort}`)).status, 204);
    assert.equal((await relay.request("DELETE", `/v1/tenants/ci-42/hostfwd/udp/${f.hostPort}`)).status, 404);

    const metrics = await (await relay.request("GET", "/metrics")).text();
    const names = parsePrometheus(metrics);
    for (
      const n of [
        "slirp_tenants",
        "slirp_tenant_frames_total",
        "slirp_tenant_drops_total",
        "slirp_scheduler_lane_frames",
        "process_resident_memory_bytes",
      ]
    ) {
      assert.ok(names.has(n) || metrics.includes(`# TYPE ${n} `), `metrics lack ${n}`);
    }
    assert.match(
      metrics,
      /slirp_tenant_frames_total\{relay="[^"]+",tenant="ci-42",direction="from_guest"\} 1\n/,
    );

    assert.equal((await relay.request("DELETE", "/v1/tenants/ci-42")).status, 204);
    assert.equal((await relay.request("GET", "/v1/tenants/ci-42")).status, 404);
    assert.throws(() => Deno.statSync(`${dir}/ci-42.sock`), "the tenant's socket is removed with it");
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port: streamPort }),
      "and its TCP port closed",
    );
  } finally {
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokens: signed claims verify; expired, forged and malformed tokens are refused with clear HTTP statuses", async () => {
  const now = Math.floor(Date.now() / 1000);
  const good = await createToken(SECRET, {
    tenant: "t1",
    exp: now + 60,
    policy: { allow: ["127.0.0.1/32:80"] },
  });
  const v = await verifyToken(SECRET, good);
  assert.ok(v.ok && v.claims.tenant === "t1" && v.claims.policy?.allow?.[0] === "127.0.0.1/32:80");
  const expired = await createToken(SECRET, { tenant: "t1", exp: now - 1 });
  assert.deepEqual(await verifyToken(SECRET, expired), { ok: false, reason: "Token has expired" });
  const forged = await createToken(new TextEncoder().encode("another-secret-of-16-bytes!"), {
    tenant: "t1",
    exp: now + 60,
  });
  assert.deepEqual(await verifyToken(SECRET, forged), { ok: false, reason: "Token signature is invalid" });
  // a rotation: both secrets verify, each its own tokens
  const rotated = [new TextEncoder().encode("another-secret-of-16-bytes!"), SECRET];
  assert.equal((await verifyToken(rotated, forged)).ok, true, "the new secret's token");
  assert.equal((await verifyToken(rotated, good)).ok, true, "the old secret's token");
  // a JWT: its header says HS256, its claims carry the tenant as sub
  const [header, body, sig] = good.split(".");
  const b64 = (o: unknown) =>
    btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  const unb64 = (t: string) => JSON.parse(atob(t.replace(/-/g, "+").replace(/_/g, "/")));
  assert.deepEqual(unb64(header), { alg: "HS256", typ: "JWT" });
  assert.equal(unb64(body).sub, "t1");
  // tampering with the claims breaks the signature
  const tampered = `${header}.${b64({ sub: "t2", exp: now + 60 })}.${sig}`;
  assert.deepEqual(await verifyToken(SECRET, tampered), { ok: false, reason: "Token signature is invalid" });
  // RFC 8725 §3.1: the token does not choose the algorithm — "none" and others are refused before any check
  for (const alg of ["none", "HS512", "RS256"]) {
    const r = await verifyToken(SECRET, `${b64({ alg, typ: "JWT" })}.${body}.${alg === "none" ? "" : sig}`);
    assert.equal(r.ok, false, alg);
    assert.match((r as { reason: string }).reason, /is not HS256/);
  }
  assert.match((await verifyToken(SECRET, "garbage") as { reason: string }).reason, /Token is malformed/);
  // any JWT library can mint one: Python's standard library, with claims in its own order
  const py = new Deno.Command("python3", {
    args: [
      "-c",
      `import base64,hmac,hashlib,json,sys
b=lambda x: base64.urlsafe_b64encode(x).rstrip(b"=")
h=b(json.dumps({"typ":"JWT","alg":"HS256"}).encode())
c=b(json.dumps({"quotas":{"maxTcpFlows":7},"exp":${now + 60},"sub":"from-python","nbf":${now - 5}}).encode())
s=b(hmac.new(sys.argv[1].encode(),h+b"."+c,hashlib.sha256).digest())
print((h+b"."+c+b"."+s).decode())`,
      new TextDecoder().decode(SECRET),
    ],
    stdout: "piped",
  });
  const minted = new TextDecoder().decode((await py.output()).stdout).trim();
  assert.deepEqual(await verifyToken(SECRET, minted), {
    ok: true,
    claims: { tenant: "from-python", exp: now + 60, quotas: { maxTcpFlows: 7 } },
  });

  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay(multiTenantArgs(dir));
  const base = relay.wsUrls[0].replace("ws://", "http://");
  try {
    const status = async (path: string, headers: Record<string, string> = {}) => {
      const r = await fetch(`${base}${path}`, { headers });
      await r.body?.cancel();
      return r.status;
    };
    assert.equal(await status("/v1/tenants/t1/ws"), 401, "no token");
    assert.equal(await status(`/v1/tenants/t1/ws?token=${expired}`), 401, "expired");
    assert.equal(await status(`/v1/tenants/t1/ws?token=${forged}`), 403, "forged");
    assert.equal(await status(`/v1/tenants/t1/ws?token=garbage`), 403, "malformed");
    assert.equal(await status(`/v1/tenants/t2/ws?token=${good}`), 403, "token for another tenant");
    assert.equal(
      await status("/v1/tenants/t1/ws", { authorization: `Bearer ${good}` }),
      426,
      "good token, but not a WebSocket",
    );
    assert.equal(await status("/"), 404, "no anonymous tenants in multi-tenant mode");
    assert.deepEqual(await (await relay.api("/v1/tenants")).json(), [], "refused requests create nothing");
  } finally {
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

const listen = listenTcp;
const hashServer = startHashServer;

e2eTest(
  "two tenants with the same 10.0.2.15 transfer at once byte-exact; isolation and default-deny egress",
  [],
  async () => {
    const dir = await Deno.makeTempDir();
    await Deno.chmod(dir, 0o755);
    const relay = await startTestRelay(multiTenantArgs(dir));
    const hs = await hashServer();
    const other = await listen((s) => s.end("loopback-secret"));
    try {
      // A may reach all of the host's loopback; B only the hash server's port
      await createTenant(relay, { id: "tenant-a", policy: { allow: ["127.0.0.1/32"] } });
      await createTenant(relay, {
        id: "tenant-b",
        policy: { allow: [`127.0.0.1/32:${hs.port}`] },
        hostfwd: ["tcp:127.0.0.1:0-:5001"],
        streamTcp: "127.0.0.1:0",
      });
      const a = await NetnsGuest.create(`unix://${dir}/tenant-a.sock`);
      const b = await NetnsGuest.create(`unix://${dir}/tenant-b.sock`);
      try {
        const [la, lb] = await Promise.all([a.dhcp(), b.dhcp()]);
        assert.equal(la.ip, "10.0.2.15");
        assert.equal(lb.ip, "10.0.2.15");
        const fa = await randomFile(dir, 32 * MiB, "a.bin");
        const fb = await randomFile(dir, 32 * MiB, "b.bin");
        const [ra, rb] = await Promise.all([
          tool(a, ["send", "10.0.2.2", String(hs.port), fa.path]),
          tool(b, ["send", "10.0.2.2", String(hs.port), fb.path]),
        ]);
        assert.equal(ra.reply, fa.sha256, "tenant A byte-exact");
        assert.equal(rb.reply, fb.sha256, "tenant B byte-exact");

        // A is allowed the loopback, but never another tenant's port forward
        const tenantB = await relay.tenant("tenant-b");
        const bForward = tenantB.forwards[0].hostPort;
        const toB = await tool(a, ["refused", "10.0.2.2", String(bForward)]);
        assert.notEqual(toB.error, null, "A reached B's forward");
        // ...nor its stream port (A's guest would become B's guest)
        const toBStream = await tool(a, [
          "refused",
          "10.0.2.2",
          tenantB.streamTcp!.split(":").pop()!,
        ]);
        assert.notEqual(toBStream.error, null, "A reached B's stream port");
        assert.ok(((await relay.tenant("tenant-a")).counters.drops["policy-denied-tcp"] ?? 0) >= 1);
        // ...while A does reach an ordinary loopback server (allow-listed)
        const allowed = await tool(a, ["halfclose", "10.0.2.2", String(other.port)]);
        assert.equal(allowed.reply, "loopback-secret");

        // B: the default policy denies the host's loopback off its allowed port (metadata and private ranges
        // are tested where nothing can leave: tests/policy_table_test.ts, tests/policy_netns_test.ts)
        const deniedB = async () => (await relay.tenant("tenant-b")).counters.drops["policy-denied-tcp"] ?? 0;
        const before = await deniedB();
        const r = await tool(b, ["refused", "10.0.2.2", String(other.port)]);
        assert.notEqual(r.error, null, "B reached a loopback port it is not allowed");
        assert.equal(await deniedB(), before + 1, "denied by policy");
      } finally {
        await a.close();
        await b.close();
      }
    } finally {
      hs.close();
      other.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

e2eTest("quotas: a rate-limited tenant stays under its rate while another tenant's transfer is unaffected", [
  "curl",
], async () => {
  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay(multiTenantArgs(dir));
  const payload = new Uint8Array(24 * MiB);
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(payload));
  const RATE = 2 * MiB;
  try {
    await createTenant(relay, {
      id: "slow",
      policy: { allow: ["127.0.0.1/32"] },
      quotas: { egressBytesPerSecond: RATE },
    });
    await createTenant(relay, { id: "fast", policy: { allow: ["127.0.0.1/32"] } });
    const slow = await NetnsGuest.create(`unix://${dir}/slow.sock`);
    const fast = await NetnsGuest.create(`unix://${dir}/fast.sock`);
    try {
      await Promise.all([slow.dhcp(), fast.dhcp()]);
      const url = `http://10.0.2.2:${http.addr.port}/`;
      const curl = (g: NetnsGuest, max: number) =>
        g.exec([
          "curl",
          "-sS",
          "-o",
          "/dev/null",
          "-m",
          String(max),
          "-w",
          "%{size_download} %{time_total}",
          url,
        ], { timeoutMs: 60_000 });
      const [rs, rf] = await Promise.all([curl(slow, 4), curl(fast, 30)]);
      const [slowBytes, slowSecs] = rs.stdout.split(" ").map(Number);
      const [fastBytes, fastSecs] = rf.stdout.split(" ").map(Number);
      const slowRate = slowBytes / slowSecs, fastRate = fastBytes / fastSecs;
      console.log(
        `quota tenant ${(slowRate / MiB).toFixed(2)} MiB/s (limit ${RATE / MiB}), other tenant ${
          (fastRate / MiB).toFixed(1)
        } MiB/s`,
      );
      assert.ok(slowRate <= RATE * 1.5, `limited tenant at ${slowRate} B/s`);
      assert.ok(slowBytes > RATE, "the limited tenant still makes progress");
      assert.equal(fastBytes, payload.length, "the other tenant completed its transfer");
      // relative to the limited tenant measured at the same time, not a wall-clock floor: a busy 2-core
      // runner slows both, the quota only one
      assert.ok(
        fastRate > 3 * slowRate,
        `the other tenant ran at ${fastRate} B/s, the limited one ${slowRate}`,
      );
    } finally {
      await slow.close();
      await fast.close();
    }
  } finally {
    await relay.stop();
    await http.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

e2eTest(
  "WebSocket transport: a guest gets DHCP and fetches over TCP through ws:// with a token; pcap shows the DHCP exchange",
  ["curl", "tshark"],
  async () => {
    const dir = await Deno.makeTempDir();
    await Deno.chmod(dir, 0o755);
    const relay = await startTestRelay(multiTenantArgs(dir));
    const http = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () => new Response("hello over websocket"),
    );
    try {
      const token = await createToken(SECRET, {
        tenant: "browser-1",
        exp: Math.floor(Date.now() / 1000) + 600,
        policy: { allow: [`127.0.0.1/32:${http.addr.port}`] },
      });
      // the tenant is admitted by its token alone (no admin call); capture starts once it exists
      const g = await NetnsGuest.create(`${relay.wsUrls[0]}/v1/tenants/browser-1/ws?token=${token}`);
      try {
        await relay.waitForTenant((t) => t.connected, 5000, "browser-1");
        const cap = await relay.request("POST", "/v1/tenants/browser-1/capture", {});
        assert.equal(cap.status, 201);
        const { path } = await cap.json();
        const lease = await g.dhcp();
        assert.equal(lease.ip, "10.0.2.15");
        const r = await g.exec(["curl", "-sS", "-m", "10", `http://10.0.2.2:${http.addr.port}/`]);
        assert.equal(r.stdout, "hello over websocket", r.stderr);
        const stopped = await (await relay.request("DELETE", "/v1/tenants/browser-1/capture")).json();
        assert.ok(stopped.frames > 4);
        const t = await run(["tshark", "-r", path, "-Y", "dhcp"], { timeoutMs: 60_000 });
        assert.equal(t.code, 0, t.stderr);
        for (const kind of ["DHCP Discover", "DHCP Offer", "DHCP Request", "DHCP ACK"]) {
          assert.match(
            t.stdout,
            new RegExp(kind),
          );
        }
        assert.equal((await relay.tenant("browser-1")).transport, "websocket");
      } finally {
        await g.close();
      }
    } finally {
      await relay.stop();
      await http.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
