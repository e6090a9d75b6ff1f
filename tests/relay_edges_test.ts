/**
 * The relay's edges against a hostile guest or client, over real sockets: frames over the MTU, WebSocket
 * origins and hosts, admin API input, configuration that cannot work. Relays start from their command line
 * (tests/_test_relay.ts), on whatever runtime SLIRP_RELAY_COMMAND says.
 */
import assert from "node:assert/strict";
import { arpFrame, ip } from "./_frames.ts";
import { StreamGuest, wsUpgradeStatus } from "./_relay_process.ts";
import { buildServeConfig } from "../src/cli.ts";
import { startTestRelay, TEST_SECRET_FILE, type TestRelay } from "./_test_relay.ts";
import { prepareSocketDir } from "../src/relay/socket_dir.ts";
import { parseUpstream } from "../src/stack/config.ts";
import { parseResolvConf } from "../src/host/node_host.ts";

const MAC = 0x02000000000c;

/**
 * A single-user relay on a UNIX socket in a fresh directory (main-thread socket loop, debug logs) with
 * `flags` besides.
 */
async function startRelay(
  flags: string[] = [],
): Promise<{ relay: TestRelay; dir: string; sock: string; stop(): Promise<void> }> {
  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay([
    ...["--listen-qemu", `unix://${dir}/r.sock`, "--dns-upstream", "127.0.0.1:9"],
    ...["--workers", "0", "--log-level", "debug", ...flags],
  ]);
  return {
    relay,
    dir,
    sock: `${dir}/r.sock`,
    async stop() {
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** The port of a relay's first WebSocket listener. */
const wsPort = (r: TestRelay) => Number(/:(\d+)$/.exec(r.wsUrls[0])![1]);

Deno.test("relay: a frame larger than the MTU is dropped and counted; the guest's link stays up", async () => {
  const r = await startRelay(["--mtu", "1500"]);
  const g = await StreamGuest.connect({ path: r.sock });
  try {
    const big = new Uint8Array(1600);
    big.set(arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
    await g.send(big, arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
    await g.waitFor((d) => d.arp !== undefined);
    assert.equal(g.out.filter((d) => d.arp).length, 1, "only the honest frame was answered");
    assert.equal((await r.relay.tenant()).counters.drops["frame-over-mtu"], 1);
    assert.ok(!g.closed);
  } finally {
    g.close();
    await r.stop();
  }
});

Deno.test("WebSocket (single-user): pages from other sites and rebinding names are refused with 403; loopback pages and non-browsers get 101", async () => {
  const r = await startRelay(["--listen-ws", "http://127.0.0.1:0"]);
  try {
    const port = wsPort(r.relay);
    const host = `127.0.0.1:${port}`;
    const cases: [Record<string, string>, number, string][] = [
      [{ Host: host }, 101, "no Origin: not a browser"],
      [{ Host: host, Origin: "http://localhost:5173" }, 101, "a page served from localhost"],
      [{ Host: host, Origin: "http://127.0.0.1:8000" }, 101, "a page served from 127.0.0.1"],
      [{ Host: `localhost:${port}`, Origin: "http://[::1]:3000" }, 101, "a page served from [::1]"],
      [{ Host: host, Origin: "https://evil.example" }, 403, "a page on another site"],
      [{ Host: host, Origin: "http://localhost.evil.example" }, 403, "a look-alike origin"],
      [{ Host: host, Origin: "null" }, 403, "an opaque origin (sandboxed iframe, file://)"],
      [{ Host: `rebind.evil.example:${port}` }, 403, "a DNS name that resolves here (rebinding)"],
    ];
    for (const [headers, want, why] of cases) {
      assert.equal(await wsUpgradeStatus(port, "/", headers), want, why);
    }
    assert.ok(
      r.relay.logs().some((l) => /WebSocket refused: origin https:\/\/evil\.example/.test(l)),
      "refusals are logged",
    );
    assert.equal(
      await wsUpgradeStatus(port, "/v1/tenants/%E0%A4%A/ws", { Host: host }),
      400,
      "bad %-encoding",
    );
  } finally {
    await r.stop();
  }
});

Deno.test("WebSocket: --ws-allow-origin admits a named origin (exact or any port), and * admits all", async () => {
  const ws = ["--listen-ws", "http://127.0.0.1:0"];
  const r = await startRelay([
    ...ws,
    ...["--ws-allow-origin", "https://vm.example", "--ws-allow-origin", "http://lab.example:*"],
  ]);
  const all = await startRelay([...ws, "--ws-allow-origin", "*"]);
  try {
    const port = wsPort(r.relay);
    const h = { Host: `127.0.0.1:${port}` };
    assert.equal(await wsUpgradeStatus(port, "/", { ...h, Origin: "https://vm.example" }), 101);
    assert.equal(await wsUpgradeStatus(port, "/", { ...h, Origin: "https://vm.example:8443" }), 403);
    assert.equal(await wsUpgradeStatus(port, "/", { ...h, Origin: "http://lab.example:9000" }), 101);
    assert.equal(
      await wsUpgradeStatus(port, "/", { ...h, Origin: "https://lab.example:9000" }),
      403,
      "scheme differs",
    );
    assert.equal(await wsUpgradeStatus(port, "/", { ...h, Origin: "https://evil.example" }), 403);
    const p2 = wsPort(all.relay);
    assert.equal(
      await wsUpgradeStatus(p2, "/", { Host: `127.0.0.1:${p2}`, Origin: "https://evil.example" }),
      101,
    );
  } finally {
    await r.stop();
    await all.stop();
  }
});

Deno.test("admin API: forwards as objects are validated like strings; captures stay inside --capture-dir; bad %-encoding is a 400", async () => {
  const captures = await Deno.makeTempDir();
  const elsewhere = await Deno.makeTempDir();
  const sockets = await Deno.makeTempDir();
  const relay = await startTestRelay([
    ...["--multi-tenant", "--token-secret-file", TEST_SECRET_FILE, "--tenant-socket-dir", sockets],
    ...["--capture-dir", captures, "--dns-upstream", "127.0.0.1:9", "--log-level", "error"],
  ]);
  const url = relay.adminUrl;
  try {
    const bad: [unknown, RegExp][] = [
      [
        { protocol: "sctp", hostAddress: "127.0.0.1", hostPort: 0, guestAddress: "", guestPort: 22 },
        /protocol/,
      ],
      [
        { protocol: "tcp", hostAddress: "evil;rm", hostPort: 0, guestAddress: "", guestPort: 22 },
        /hostAddress/,
      ],
      [
        { protocol: "tcp", hostAddress: "127.0.0.1", hostPort: 70000, guestAddress: "", guestPort: 22 },
        /hostPort/,
      ],
      [
        { protocol: "tcp", hostAddress: "127.0.0.1", hostPort: 0, guestAddress: "", guestPort: 0 },
        /guestPort/,
      ],
      [
        { protocol: "tcp", hostAddress: "127.0.0.1", hostPort: 0, guestAddress: "x", guestPort: 22 },
        /guestAddress/,
      ],
      ["tcp::0-:0", /guestPort/],
      [42, /object or a string/],
    ];
    for (const [f, why] of bad) {
      const res = await relay.request("POST", "/v1/tenants", { id: "fwd", hostfwd: [f] });
      assert.equal(res.status, 400, JSON.stringify(f));
      assert.match((await res.json()).error, why);
    }
    const ok = await relay.request("POST", "/v1/tenants", {
      id: "fwd",
      hostfwd: [{ protocol: "tcp", hostAddress: "127.0.0.1", hostPort: 0, guestAddress: "", guestPort: 22 }],
    });
    assert.equal(ok.status, 201, await ok.clone().text());
    assert.equal((await ok.json()).forwards.length, 1);

    // captures: a name lands in the capture dir; a path elsewhere, or through "..", is refused
    const named = await relay.request("POST", "/v1/tenants/fwd/capture", { path: "boot.pcap" });
    assert.equal(named.status, 201);
    assert.equal((await named.json()).path, `${Deno.realPathSync(captures)}/boot.pcap`);
    await relay.request("DELETE", "/v1/tenants/fwd/capture");
    for (const p of [`${elsewhere}/x.pcap`, `${captures}/../x.pcap`, "/etc/passwd", "../x.pcap", ".hidden"]) {
      const res = await relay.request("POST", "/v1/tenants/fwd/capture", { path: p });
      assert.equal(res.status, 400, p);
      await res.body?.cancel();
    }
    // an existing file or a planted symlink is never opened (exclusive create)
    await Deno.symlink("/etc/passwd", `${captures}/planted.pcap`);
    const planted = await relay.request("POST", "/v1/tenants/fwd/capture", { path: "planted.pcap" });
    assert.equal(planted.status, 409);
    await planted.body?.cancel();
    const again = await relay.request("POST", "/v1/tenants/fwd/capture", { path: "boot.pcap" });
    assert.equal(again.status, 409, "an existing capture is not overwritten");
    await again.body?.cancel();
    assert.deepEqual([...Deno.readDirSync(elsewhere)], []);

    // bad %-encoding: 400 with the token, 401 without; never a 500
    const enc = await relay.request("GET", "/v1/tenants/%E0%A4%A");
    assert.equal(enc.status, 400);
    await enc.body?.cancel();
    const anon = await fetch(`${url}/v1/tenants/%E0%A4%A`);
    assert.equal(anon.status, 401);
    await anon.body?.cancel();
  } finally {
    await relay.stop();
    await Deno.remove(captures, { recursive: true });
    await Deno.remove(elsewhere, { recursive: true });
    await Deno.remove(sockets, { recursive: true });
  }
});

Deno.test("config: a --dns-upstream that is not IPv4[:PORT], IPv6 or [IPv6]:PORT is refused at start", () => {
  for (
    const u of ["not-an-ip", "1.2.3.4:99999", "1.2.3.4:0", "fe80::1%eth0", "[::1]:0", "::1]:53", "[::g]"]
  ) {
    assert.throws(() => buildServeConfig({ "dns-upstream": [u] }), /Invalid DNS upstream/, u);
  }
  const ok = ["127.0.0.1:5353", "::1", "[fd00::53]:5353"];
  assert.deepEqual(buildServeConfig({ "dns-upstream": ok }).stack.dnsUpstreams, ok);
  assert.deepEqual(ok.map(parseUpstream), [
    { address: "127.0.0.1", port: 5353, family: 4 },
    { address: "::1", port: 53, family: 6 },
    { address: "fd00::53", port: 5353, family: 6 },
  ]);
});

Deno.test("resolv.conf: IPv4 and IPv6 nameservers, text after the address ignored, zoned link-local skipped", () => {
  const text = [
    "# generated",
    "nameserver 192.0.2.53 # the office resolver",
    "nameserver 2001:db8::53",
    "nameserver fe80::1%eth0",
    "nameserver not-an-address",
    "search example.test",
    "options edns0",
  ].join("\n");
  assert.deepEqual(parseResolvConf(text), ["192.0.2.53:53", "[2001:db8::53]:53"]);
});

Deno.test("tenant socket dir: created 0700; refused when writable by others or owned by another user", async () => {
  const base = await Deno.makeTempDir();
  try {
    const fresh = prepareSocketDir(`${base}/fresh`);
    assert.equal(Deno.statSync(fresh).mode! & 0o777, 0o700);
    Deno.mkdirSync(`${base}/open`);
    Deno.chmodSync(`${base}/open`, 0o777);
    assert.throws(() => prepareSocketDir(`${base}/open`), /writable by others/);
    Deno.mkdirSync(`${base}/group`);
    Deno.chmodSync(`${base}/group`, 0o770);
    assert.throws(() => prepareSocketDir(`${base}/group`), /writable by its group/);
    if (Deno.uid() === 0) {
      Deno.mkdirSync(`${base}/theirs`, { mode: 0o700 });
      Deno.chownSync(`${base}/theirs`, 65534, 65534);
      assert.throws(() => prepareSocketDir(`${base}/theirs`), /belongs to uid 65534/);
    }
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("relay: at --max-tenants a new single-user guest is refused (stream closed, WebSocket 503); a freed place is reused", async () => {
  const r = await startRelay(["--max-tenants", "2", "--listen-ws", "http://127.0.0.1:0"]);
  try {
    const a = await StreamGuest.connect({ path: r.sock });
    const b = await StreamGuest.connect({ path: r.sock });
    for (const g of [a, b]) {
      await g.send(arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
      await g.waitFor((d) => d.arp !== undefined);
    }
    const c = await StreamGuest.connect({ path: r.sock });
    await c.waitClosed();
    const port = wsPort(r.relay);
    assert.equal(await wsUpgradeStatus(port, "/", { Host: `127.0.0.1:${port}` }), 503);
    assert.ok(r.relay.logs().some((l) => /at its tenant limit/.test(l)));
    a.close();
    const sessions = async () => (await (await r.relay.api("/v1/tenants")).json()).length;
    for (let i = 0; i < 100 && await sessions() > 1; i++) await new Promise((res) => setTimeout(res, 10));
    const d = await StreamGuest.connect({ path: r.sock });
    await d.send(arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
    await d.waitFor((x) => x.arp !== undefined);
    b.close();
    d.close();
  } finally {
    await r.stop();
  }
});
