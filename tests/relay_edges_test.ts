/**
 * The relay's edges against a hostile guest or client, in-process over real sockets: frames over the MTU,
 * WebSocket origins and hosts, admin API input, configuration that cannot work.
 */
import assert from "node:assert/strict";
import { Relay, type RelayOptions } from "../src/relay/relay.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { jsonLogger } from "../src/relay/log.ts";
import { arpFrame, ip } from "./_frames.ts";
import { StreamGuest } from "./_relay_process.ts";
import { parseHostForward } from "../src/cli.ts";

const MAC = 0x02000000000c;

/** A relay on a UNIX socket in a fresh directory, with `patch` applied to its options. */
export async function startRelay(
  patch: (o: RelayOptions) => void = () => {},
): Promise<{ relay: Relay; dir: string; sock: string; logs: string[]; stop(): Promise<void> }> {
  const dir = await Deno.makeTempDir();
  const stack = defaultStackConfig();
  stack.dnsUpstreams = ["127.0.0.1:9"];
  const logs: string[] = [];
  const opts: RelayOptions = {
    listenQemu: [`unix://${dir}/r.sock`],
    stack,
    log: jsonLogger("debug", (l) => logs.push(l)),
    parseForward: parseHostForward,
  };
  patch(opts);
  const relay = new Relay(opts);
  await relay.start();
  return {
    relay,
    dir,
    sock: `${dir}/r.sock`,
    logs,
    async stop() {
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("relay: a frame larger than the MTU is dropped and counted; the guest's link stays up", async () => {
  const r = await startRelay((o) => (o.stack.mtu = 1500));
  const g = await StreamGuest.connect({ path: r.sock });
  try {
    const big = new Uint8Array(1600);
    big.set(arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
    await g.send(big, arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
    await g.waitFor((d) => d.arp !== undefined);
    assert.equal(g.out.filter((d) => d.arp).length, 1, "only the honest frame was answered");
    const t = [...r.relay.tenants.values()][0];
    assert.equal(t.counters.drops.get("frame-over-mtu"), 1);
    assert.ok(!g.closed);
  } finally {
    g.close();
    await r.stop();
  }
});

/** Sends a WebSocket upgrade with the given headers over a raw TCP socket; resolves with the status. */
async function upgradeStatus(port: number, path: string, headers: Record<string, string>): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const lines = [
      `GET ${path} HTTP/1.1`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 13",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      "",
      "",
    ];
    await conn.write(new TextEncoder().encode(lines.join("\r\n")));
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    const status = /^HTTP\/1\.1 (\d{3})/.exec(new TextDecoder().decode(buf.subarray(0, n ?? 0)));
    return status ? Number(status[1]) : 0;
  } finally {
    conn.close();
  }
}

Deno.test("WebSocket (single-user): pages from other sites and rebinding names are refused with 403; loopback pages and non-browsers get 101", async () => {
  const r = await startRelay((o) => {
    o.listenQemu = [];
    o.listenWs = ["http://127.0.0.1:0"];
  });
  try {
    const port = Number(/:(\d+)$/.exec(r.relay.wsUrls[0])![1]);
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
      assert.equal(await upgradeStatus(port, "/", headers), want, why);
    }
    assert.ok(
      r.logs.some((l) => /WebSocket refused: origin https:\/\/evil\.example/.test(l)),
      "refusals are logged",
    );
    assert.equal(await upgradeStatus(port, "/v1/tenants/%E0%A4%A/ws", { Host: host }), 400, "bad %-encoding");
  } finally {
    await r.stop();
  }
});

Deno.test("WebSocket: --ws-allow-origin admits a named origin (exact or any port), and * admits all", async () => {
  const r = await startRelay((o) => {
    o.listenQemu = [];
    o.listenWs = ["http://127.0.0.1:0"];
    o.wsAllowOrigin = ["https://vm.example", "http://lab.example:*"];
  });
  const all = await startRelay((o) => {
    o.listenQemu = [];
    o.listenWs = ["http://127.0.0.1:0"];
    o.wsAllowOrigin = ["*"];
  });
  try {
    const port = Number(/:(\d+)$/.exec(r.relay.wsUrls[0])![1]);
    const h = { Host: `127.0.0.1:${port}` };
    assert.equal(await upgradeStatus(port, "/", { ...h, Origin: "https://vm.example" }), 101);
    assert.equal(await upgradeStatus(port, "/", { ...h, Origin: "https://vm.example:8443" }), 403);
    assert.equal(await upgradeStatus(port, "/", { ...h, Origin: "http://lab.example:9000" }), 101);
    assert.equal(
      await upgradeStatus(port, "/", { ...h, Origin: "https://lab.example:9000" }),
      403,
      "scheme differs",
    );
    assert.equal(await upgradeStatus(port, "/", { ...h, Origin: "https://evil.example" }), 403);
    const p2 = Number(/:(\d+)$/.exec(all.relay.wsUrls[0])![1]);
    assert.equal(
      await upgradeStatus(p2, "/", { Host: `127.0.0.1:${p2}`, Origin: "https://evil.example" }),
      101,
    );
  } finally {
    await r.stop();
    await all.stop();
  }
});
