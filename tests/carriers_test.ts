/**
 * The carriers beyond QEMU's stream framing, each through a relay with a simulated guest built from our
 * wire codecs: gvforwarder (`POST /connect`, then u16 LE frames) on the ordinary stream sockets, the
 * WebSocket byte stream (container2wasm, emscripten QEMU) and datagram sockets (QEMU dgram, vfkit, libkrun).
 */
import assert from "node:assert/strict";
import { Relay, type RelayOptions } from "../src/relay/relay.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { jsonLogger } from "../src/relay/log.ts";
import { SimGuest } from "./_sim_guest.ts";

const LEASE = 0x0a00020f; // 10.0.2.15

/** A single-user relay (10.0.2.2 reaches 127.0.0.1) with the listeners `extra` names. */
async function relayWith(extra: Partial<RelayOptions>): Promise<Relay> {
  const stack = defaultStackConfig();
  stack.dnsUpstreams = ["127.0.0.1:9"];
  const relay = new Relay({ listenQemu: [], stack, log: jsonLogger("error"), ...extra });
  await relay.start();
  return relay;
}

/** A TCP echo server on 127.0.0.1. */
function echoServer(): { port: number; close(): void } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  (async () => {
    for await (const c of l) {
      conns.add(c);
      c.readable.pipeTo(c.writable).catch(() => {}).finally(() => conns.delete(c));
    }
  })().catch(() => {});
  return {
    port: (l.addr as Deno.NetAddr).port,
    close() {
      l.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

/** Leases an address, opens a TCP connection to the echo server through the gateway and checks the echo. */
export async function leaseAndEcho(g: SimGuest, echoPort: number, rounds = 8): Promise<void> {
  g.dhcp(1);
  await g.leased;
  assert.equal(g.ip, LEASE);
  g.receivedBytes = [];
  await g.open(echoPort, 40000 + g.index);
  const sent: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const chunk = new Uint8Array(1000 + i * 50).map((_, j) => (j * 7 + i) & 0xff);
    sent.push(...chunk);
    await g.request(chunk, chunk.length);
  }
  const got = g.receivedBytes.flatMap((b) => [...b]);
  assert.deepEqual(got, sent, "the echo comes back byte for byte");
}

Deno.test("gvforwarder: POST /connect, then u16 little-endian frames on an ordinary stream socket — a lease and a byte-exact TCP echo; a request for another path closes only that connection", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/relay.sock`;
  const relay = await relayWith({ listenQemu: [`unix://${path}`] });
  const echo = echoServer();
  const g = new SimGuest(0);
  try {
    await g.connect(path, "gvforwarder");
    await leaseAndEcho(g, echo.port);
    const t = [...relay.tenants.values()].find((t) => t.link);
    assert.equal(t?.link?.kind, "gvforwarder");

    // a request gvproxy would not hijack: the relay closes that connection and counts the error
    const bad = await Deno.connect({ transport: "unix", path });
    await bad.write(new TextEncoder().encode("POST /services/forwarder/all HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert.equal(await bad.read(new Uint8Array(16)), null, "closed by the relay");
    bad.close();
    assert.equal(relay.transportErrors, 1);
    // the first guest goes on
    await g.ping();
  } finally {
    g.close();
    echo.close();
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
