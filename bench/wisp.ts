/**
 * Wisp benchmark (not a test): the relay as its own process (default workers), MercuryWorkshop's wisp-js
 * client in this one, host servers in a third. Measures through one WebSocket:
 *   - streams/s: open a TCP stream, one 64-byte request and its echo, close — one after another
 *   - download: one stream reading an endless source for --seconds, Gbit/s
 *   - upload: one stream writing 64 KiB DATA packets to an echo server (credit-paced), echoed bytes/s
 * Prints JSON lines and a table row for bench/RESULTS.md.
 *
 *   deno run -A bench/wisp.ts [--seconds 5] [--streams 500] [--version 2]
 */
import { parseArgs } from "node:util";
import { client as wisp } from "@mercuryworkshop/wisp-js/client";
import { spawnRelay, spawnServers } from "./_harness.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "5" },
    streams: { type: "string", default: "500" },
    version: { type: "string", default: "2" },
  },
});
const SECONDS = Number(flags.seconds);
const version = Number(flags.version) as 1 | 2;

type Conn = InstanceType<typeof wisp.ClientConnection>;

const { echoPort, sourcePort, proc: servers } = await spawnServers();
const wsPort = 18000 + Math.floor(Math.random() * 2000);
const relay = spawnRelay(["--listen-ws", `http://127.0.0.1:${wsPort}`, "--dns-upstream", "127.0.0.1:9"]);
const url = `ws://127.0.0.1:${wsPort}/wisp/`;

async function connect(): Promise<Conn> {
  for (let i = 0; i < 100; i++) {
    try {
      return await new Promise<Conn>((resolve, reject) => {
        const c = new wisp.ClientConnection(url, { wisp_version: version });
        c.onopen = () => resolve(c);
        c.onerror = () => reject(new Error("no relay yet"));
      });
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error("the relay never accepted a Wisp connection");
}

const conn = await connect();

// streams per second: each one opened, used once and closed before the next
const n = Number(flags.streams);
const request = new Uint8Array(64);
let t0 = performance.now();
for (let i = 0; i < n; i++) {
  const s = conn.create_stream("127.0.0.1", echoPort);
  await new Promise<void>((resolve, reject) => {
    let got = 0;
    s.onmessage = (d: Uint8Array) => {
      got += d.length;
      if (got >= request.length) resolve();
    };
    s.onclose = (r: number) => reject(new Error(`stream ${i} closed: 0x${r.toString(16)}`));
    s.send(request);
  });
  s.close();
}
const streamsPerSecond = n / ((performance.now() - t0) / 1000);

// download: one stream from the endless source
const down = conn.create_stream("127.0.0.1", sourcePort);
let downBytes = 0;
down.onmessage = (d: Uint8Array) => (downBytes += d.length);
down.send(new Uint8Array(1));
await new Promise((r) => setTimeout(r, 500));
downBytes = 0;
t0 = performance.now();
await new Promise((r) => setTimeout(r, SECONDS * 1000));
const downGbps = downBytes * 8 / ((performance.now() - t0) / 1000) / 1e9;
down.close();

// upload: 64 KiB DATA packets to the echo server, as fast as CONTINUE credit allows
const up = conn.create_stream("127.0.0.1", echoPort);
let echoed = 0;
up.onmessage = (d: Uint8Array) => (echoed += d.length);
up.onclose = (r: number) => console.error(`upload stream closed: 0x${r.toString(16)}`);
const chunk = new Uint8Array(65536);
const end = performance.now() + SECONDS * 1000;
t0 = performance.now();
while (performance.now() < end) {
  // wisp-js holds packets past the credit itself; keep its queue short so the clock means something
  if (up.send_buffer.length < 16) up.send(chunk);
  else await new Promise((r) => setTimeout(r, 1));
}
const upGbps = echoed * 8 / ((performance.now() - t0) / 1000) / 1e9;
up.close();

const result = { version, streamsPerSecond, downGbps, upGbps };
console.log(JSON.stringify(result));
console.log(
  `| wisp v${version} | ${streamsPerSecond.toFixed(0)} | ${downGbps.toFixed(2)} | ${upGbps.toFixed(2)} |`,
);
conn.close();
relay.kill("SIGTERM");
await relay.status;
servers.kill();
await servers.status;
Deno.exit(0);
