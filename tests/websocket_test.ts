/**
 * The WebSocket transport at frame level with a real WebSocket client (no root needed), the relay started
 * from its command line (tests/_test_relay.ts: in this process on Deno, its own process on Bun/the binary).
 */
import assert from "node:assert/strict";
import { createToken } from "../src/relay/tokens.ts";
import { multiTenantArgs, startTestRelay } from "./_test_relay.ts";
import { SECRET } from "./_relay_api.ts";
import { dhcpFrame } from "./_frames.ts";
import { dissect } from "./_dissect.ts";
import { DhcpMessageType, dhcpMessageType } from "../src/wire/dhcp.ts";

function open(url: string, protocols?: string[]): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`WebSocket ${url} failed`));
  });
}

function nextFrame(ws: WebSocket): Promise<Uint8Array> {
  return new Promise((resolve) => {
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") resolve(new Uint8Array(e.data as ArrayBuffer));
    };
  });
}

function closed(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => (ws.onclose = (e) => resolve(e.code)));
}

Deno.test("WebSocket: an anonymous single-user guest gets a DHCP offer; text is ignored; oversize closes only that socket", async () => {
  const relay = await startTestRelay([
    ...["--listen-ws", "http://127.0.0.1:0", "--listen-qemu", "tcp://127.0.0.1:0"],
    ...["--dns-upstream", "127.0.0.1:9", "--log-level", "error"],
  ]);
  try {
    const a = await open(`${relay.wsUrls[0]}/`);
    const b = await open(`${relay.wsUrls[0]}/`);
    a.send("hello, this text is ignored");
    const offer = nextFrame(a);
    a.send(dhcpFrame(0x020000000001, DhcpMessageType.DISCOVER));
    const d = dissect(await offer);
    assert.equal(dhcpMessageType(d.dhcp!), DhcpMessageType.OFFER);
    assert.equal((await (await relay.api("/v1/tenants")).json()).length, 2, "two anonymous tenants");
    const bClosed = closed(b);
    b.send(new Uint8Array(70_000));
    assert.equal(await bClosed, 1009);
    // a is unaffected
    const again = nextFrame(a);
    a.send(dhcpFrame(0x020000000001, DhcpMessageType.DISCOVER));
    assert.equal(dhcpMessageType(dissect(await again).dhcp!), DhcpMessageType.OFFER);
    const aClosed = closed(a);
    a.close();
    await aClosed;
  } finally {
    await relay.stop();
  }
});

Deno.test("WebSocket: multi-tenant guest admitted by a token in Sec-WebSocket-Protocol; a duplicate guest is refused when configured", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay([...multiTenantArgs(dir), "--duplicate-guest", "refuse"]);
  try {
    const token = await createToken(SECRET, { tenant: "v86-1", exp: Math.floor(Date.now() / 1000) + 60 });
    const ws = await open(`${relay.wsUrls[0]}/v1/tenants/v86-1/ws`, [token]);
    assert.equal(ws.protocol, token, "the token protocol is echoed, as browsers require");
    const offer = nextFrame(ws);
    ws.send(dhcpFrame(0x020000000002, DhcpMessageType.DISCOVER));
    assert.equal(dhcpMessageType(dissect(await offer).dhcp!), DhcpMessageType.OFFER);
    assert.equal((await relay.tenant("v86-1")).transport, "websocket");
    const second = await open(`${relay.wsUrls[0]}/v1/tenants/v86-1/ws?token=${token}`);
    assert.equal(await closed(second), 4409, "second guest refused");
    assert.equal((await relay.tenant("v86-1")).transport, "websocket", "first guest still attached");
    const c = closed(ws);
    ws.close();
    await c;
  } finally {
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
