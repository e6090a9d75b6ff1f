/**
 * The relay as it ships, in its own process: by default this source tree on Deno; with SLIRP_RELAY_COMMAND
 * the same tree on Bun (`node_modules/.bin/bun src/cli.ts`) or the compiled binary (`dist/slirp-relay`).
 * CI runs this file once each way (tools/e2e_shipped.sh), so every way the relay ships carries real guests:
 * a QEMU machine over `-netdev stream`, a Linux network namespace over WebSocket (v86's framing) and over
 * IPv6, and token-admitted tenants side by side.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { e2eTest, guestTool as tool, NetnsGuest } from "./_netns_guest.ts";
import { qemuMissing, startGuest } from "./_qemu.ts";
import { RelayProcess } from "./_relay_process.ts";
import { freePort, listenTcp, randomFile, startDnsResponder, startHashServer } from "./_services.ts";
import { parsePrometheus } from "./_relay_api.ts";
import { createToken } from "../src/relay/tokens.ts";

const MiB = 1024 * 1024;

/** Waits until something in `guest` listens on TCP `port`. */
async function listening(guest: NetnsGuest, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await guest.exec(["ss", "-Hltn", `sport = :${port}`])).stdout.trim() !== "") return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`nothing listens on ${port} in the guest`);
}

/** Sends `data` to 127.0.0.1:`port` and closes. */
async function sendTo(port: number, data: Uint8Array): Promise<void> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  for (let off = 0; off < data.length;) off += await c.write(data.subarray(off, off + 256 * 1024));
  c.close();
}

e2eTest(
  "shipped relay: a QEMU guest over -netdev stream gets a lease, resolves a name and fetches a file from the host byte-exact",
  ["qemu-system-x86_64", "cpio"],
  async () => {
    const missing = qemuMissing();
    if (missing) throw new Error(missing);
    const dns = await startDnsResponder({ "files.example.test": "10.0.2.2" });
    const payload = new Uint8Array(4 * MiB);
    for (let i = 0; i < payload.length; i += 65536) crypto.getRandomValues(payload.subarray(i, i + 65536));
    const md5 = createHash("md5").update(payload).digest("hex");
    const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(payload));
    const relay = await RelayProcess.start([
      "--listen-qemu",
      "tcp://127.0.0.1:0",
      "--dns-upstream",
      `127.0.0.1:${dns.port}`,
      "--log-level",
      "warn",
    ]);
    const port = /listening on tcp:\/\/127\.0\.0\.1:(\d+)/.exec(relay.stdout)![1];
    const guest = await startGuest(
      `stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=${port}`,
      `
udhcpc -i eth0 -n -q -f -t 10 -T 2 -s /udhcpc.sh
echo "RESULT dhcp_rc $?"
# the DNS server the lease named (asserted below)
mkdir -p /etc; echo "nameserver 10.0.2.3" > /etc/resolv.conf
wget -q -O /tmp/payload http://files.example.test:${http.addr.port}/payload
echo "RESULT wget $? $(md5sum /tmp/payload | cut -d' ' -f1)"
`,
    );
    try {
      assert.match(await guest.waitFor(/RESULT dhcp_rc/), /RESULT dhcp_rc 0/);
      // printed by the prelude's udhcpc script
      assert.match(
        await guest.waitFor(/RESULT lease/),
        /RESULT lease ip=10\.0\.2\.15 router=10\.0\.2\.2 dns=10\.0\.2\.3/,
      );
      assert.match(
        await guest.waitFor(/RESULT wget/),
        new RegExp(`RESULT wget 0 ${md5}`),
        guest.output().slice(-1500),
      );
    } finally {
      await guest.kill();
      await relay.stop();
      await http.shutdown();
      dns.close();
    }
  },
);

e2eTest(
  "shipped relay: a Linux guest over WebSocket (one frame per message) sends and receives 32 MiB byte-exact over IPv4, and sends it over IPv6",
  [],
  async () => {
    const dir = await Deno.makeTempDir();
    const forward = freePort();
    const relay = await RelayProcess.start([
      "--listen-qemu",
      "tcp://127.0.0.1:0",
      "--hostfwd",
      `tcp:127.0.0.1:${forward}-:5001`,
      "--listen-ws",
      "http://127.0.0.1:0",
      "--dns-upstream",
      "127.0.0.1:9",
      "--log-level",
      "warn",
    ], { ready: /WebSocket on ws:/ });
    const ws = /WebSocket on (ws:\/\/127\.0\.0\.1:\d+\/)/.exec(relay.stdout)![1];
    const hs = await startHashServer();
    const hs6 = await startHashServer("::1");
    const guest = await NetnsGuest.create(ws);
    try {
      const lease = await guest.dhcp();
      assert.equal(lease.ip, "10.0.2.15");
      const up = await randomFile(dir, 32 * MiB);
      const sent = await tool(guest, ["send", "10.0.2.2", String(hs.port), up.path]);
      assert.equal(sent.reply, up.sha256, "guest → host byte-exact");

      // host → guest through a port forward: guest-bound bulk over the WebSocket, through the data-plane
      // worker's ring (a paced TCP sender once waited here for a wake-up that never came)
      const down = new Uint8Array(32 * MiB);
      for (let i = 0; i < down.length; i += 65536) crypto.getRandomValues(down.subarray(i, i + 65536));
      const receiver = tool(guest, ["listen", "5001"]);
      await listening(guest, 5001);
      await sendTo(forward, down);
      const got = await receiver;
      assert.equal(got.bytes, down.length);
      assert.equal(got.sha256, createHash("sha256").update(down).digest("hex"), "host → guest byte-exact");

      // IPv6: SLAAC from the relay's router advertisement, then the same upload to the host's ::1
      const v6 = await guest.slaac();
      assert.match(v6, /^fd00::/);
      const sent6 = await tool(guest, ["send", "fd00::2", String(hs6.port), up.path]);
      assert.equal(sent6.reply, up.sha256, "guest → host over IPv6 byte-exact");
    } finally {
      await guest.close();
      hs.close();
      hs6.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

e2eTest(
  "shipped relay, multi-tenant: a token tenant over WebSocket and an admin-made tenant over its stream socket transfer at once; neither reaches the other nor the host's loopback",
  [],
  async () => {
    const dir = await Deno.makeTempDir();
    await Deno.chmod(dir, 0o755);
    const secret = "0123456789abcdef0123456789abcdef";
    await Deno.writeTextFile(`${dir}/secret`, secret);
    await Deno.writeTextFile(`${dir}/admin`, "shipped-admin-token");
    const hs = await startHashServer();
    const loopbackSecret = await listenTcp((s) => s.end("loopback-secret"));
    const relay = await RelayProcess.start([
      "--multi-tenant",
      "--token-secret-file",
      `${dir}/secret`,
      "--admin",
      "http://127.0.0.1:0",
      "--admin-token-file",
      `${dir}/admin`,
      "--listen-ws",
      "http://127.0.0.1:0",
      "--tenant-socket-dir",
      `${dir}/t`,
      "--dns-upstream",
      "127.0.0.1:9",
      "--log-level",
      "warn",
    ], { ready: /admin API on http:/ });
    const admin = /admin API on (http:\/\/127\.0\.0\.1:\d+)/.exec(relay.stdout)![1];
    const wsBase = /WebSocket on (ws:\/\/127\.0\.0\.1:\d+)/.exec(relay.stdout)![1];
    const headers = { authorization: "Bearer shipped-admin-token" };
    const created = await fetch(`${admin}/v1/tenants`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        id: "stream-tenant",
        policy: { allow: [`127.0.0.1/32:${hs.port}`] },
        hostfwd: ["tcp:127.0.0.1:0-:5001"],
      }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    const info = await created.json();
    const streamForward = Number(info.forwards[0].hostPort);
    const token = await createToken(new TextEncoder().encode(secret), {
      tenant: "ws-tenant",
      exp: Math.floor(Date.now() / 1000) + 600,
      policy: { allow: [`127.0.0.1/32:${hs.port}`] },
    });
    const a = await NetnsGuest.create(`unix://${dir}/t/stream-tenant.sock`);
    const b = await NetnsGuest.create(`${wsBase}/v1/tenants/ws-tenant/ws?token=${token}`);
    try {
      const [la, lb] = await Promise.all([a.dhcp(), b.dhcp()]);
      assert.equal(la.ip, "10.0.2.15");
      assert.equal(lb.ip, "10.0.2.15");
      const fa = await randomFile(dir, 16 * MiB, "a.bin");
      const fb = await randomFile(dir, 16 * MiB, "b.bin");
      const [ra, rb] = await Promise.all([
        tool(a, ["send", "10.0.2.2", String(hs.port), fa.path]),
        tool(b, ["send", "10.0.2.2", String(hs.port), fb.path]),
      ]);
      assert.equal(ra.reply, fa.sha256, "stream tenant byte-exact");
      assert.equal(rb.reply, fb.sha256, "WebSocket tenant byte-exact");
      // the WebSocket tenant reaches neither the other tenant's forward nor a loopback port off its policy
      const toA = await tool(b, ["refused", "10.0.2.2", String(streamForward)]);
      assert.notEqual(toA.error, null, "the WebSocket tenant reached the stream tenant's forward");
      const toLoopback = await tool(b, ["refused", "10.0.2.2", String(loopbackSecret.port)]);
      assert.notEqual(toLoopback.error, null, "the WebSocket tenant reached the host's loopback");
      // both tenants are counted, each under its own name
      const metrics = await (await fetch(`${admin}/metrics`, { headers })).text();
      assert.ok(parsePrometheus(metrics).has("slirp_tenant_tcp_flows_opened_total"));
      for (const t of ["stream-tenant", "ws-tenant"]) {
        assert.match(
          metrics,
          new RegExp(`slirp_tenant_tcp_flows_opened_total\\{[^}]*tenant="${t}"[^}]*\\} [1-9]`),
        );
      }
    } finally {
      await a.close();
      await b.close();
      hs.close();
      loopbackSecret.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
