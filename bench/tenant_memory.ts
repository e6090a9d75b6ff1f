/**
 * Where an idle tenant's memory goes (not a test): 1000 tenants in this process, measured after each
 * stage — created (its own stream socket listening), connected (guest link, scheduler lane, stack), and
 * after one DHCP exchange. The guests' side runs in a subprocess so its memory does not count.
 *
 *   deno run -A --v8-flags=--expose-gc bench/tenant_memory.ts
 */
import { Relay } from "../src/relay/relay.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { jsonLogger } from "../src/relay/log.ts";
import { parseHostForward } from "../src/cli.ts";
import { dhcpFrame } from "../tests/_frames.ts";

const N = 1000;
const dir = await Deno.makeTempDir();
const stack = defaultStackConfig();
stack.dnsUpstreams = ["127.0.0.1:9"];
const relay = new Relay({
  listenQemu: [],
  stack,
  log: jsonLogger("error"),
  multiTenant: true,
  tokenSecret: new TextEncoder().encode("x".repeat(20)),
  tenantSocketDir: dir,
  parseForward: parseHostForward,
});
await relay.start();
const gc = () => {
  for (let i = 0; i < 3; i++) (globalThis as { gc?: () => void }).gc?.();
};
const stage = (label: string, prev?: Deno.MemoryUsage): Deno.MemoryUsage => {
  gc();
  const m = Deno.memoryUsage();
  if (prev) {
    const kib = (a: number, b: number) => ((a - b) / N / 1024).toFixed(1);
    console.log(
      `| ${label} | ${kib(m.rss, prev.rss)} | ${kib(m.heapUsed, prev.heapUsed)} | ${
        kib(m.external, prev.external)
      } |`,
    );
  }
  return m;
};
console.log(
  `| stage (${N} tenants) | RSS KiB/tenant | JS heap KiB/tenant | external KiB/tenant |\n| --- | --- | --- | --- |`,
);
let m = stage("start");
for (let i = 0; i < N; i++) await relay.createTenant({ id: `t${i}` });
m = stage("created (tenant + its listening socket)", m);
const f = dhcpFrame(0x020000000001, 1);
const client = new Deno.Command(Deno.execPath(), {
  args: [
    "eval",
    `
const conns = [];
for (let i = 0; i < ${N}; i++) conns.push(await Deno.connect({ transport: "unix", path: "${dir}/t" + i + ".sock" }));
await new Promise((r) => setTimeout(r, 1500));
const f = new Uint8Array(${JSON.stringify(Array.from(f))});
const msg = new Uint8Array(4 + f.length); new DataView(msg.buffer).setUint32(0, f.length); msg.set(f, 4);
for (const c of conns) await c.write(msg);
const b = new Uint8Array(4096); for (const c of conns) await c.read(b);
await new Promise((r) => setTimeout(r, 3000));
`,
  ],
}).spawn();
await new Promise((r) => setTimeout(r, 1200));
m = stage("connected (link, lane, stack)", m);
await new Promise((r) => setTimeout(r, 1500));
stage("after one DHCP discover/offer", m);
// SLIRP_HEAP_SNAPSHOT=path: what the idle tenants' heap is made of (open in Chrome DevTools)
const snapshot = Deno.env.get("SLIRP_HEAP_SNAPSHOT");
if (snapshot) (await import("node:v8")).writeHeapSnapshot(snapshot);
await client.status;
await relay.stop();
await Deno.remove(dir, { recursive: true });
