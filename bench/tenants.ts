/**
 * Many-tenant benchmark (not a test). Starts the relay in multi-tenant mode as its own process, creates
 * N tenants through the admin API, and drives one simulated guest per tenant over the tenant's stream
 * socket: DHCP, then one TCP connection to a host server through 10.0.2.2. The simulated guest is a
 * minimal TCP receiver built from the project's wire codecs (in-order, one cumulative ACK per read, no SACK
 * and no timestamps — as a Windows guest by default — 64 KiB window). Measures:
 *   - resident memory per idle tenant (relay RSS after N tenants connected and leased, minus before)
 *   - small request/response latency p50/p99 across tenants
 *   - aggregate host→guest throughput with every tenant downloading, and Jain's fairness index
 *   - a quiet tenant's p99 latency with and without one tenant flooding (--quiet-seconds each: a request
 *     every 10 ms, so 15 s gives ~1400 requests and a p99 of the 14th-worst, not of 4 as in 5 s)
 *
 *   deno run -A bench/tenants.ts [--tenants 1000] [--seconds 5] [--quiet-seconds 15] [--diagnose]
 */
import { parseArgs } from "node:util";
import { SimGuest } from "../tests/_sim_guest.ts";
import { cpuOf, quantile, rssOf, spawnRelay, spawnServers, startServers } from "./_harness.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    tenants: { type: "string", default: "1000" },
    seconds: { type: "string", default: "5" },
    "quiet-seconds": { type: "string", default: "15" },
    // print the slowest downloaders' TCP state and unread socket queues (ss -x), twice, a second apart
    diagnose: { type: "boolean", default: false },
    // internal: run only the quiet tenant's client (its own process, so the load generator's busy event
    // loop does not add to the latency it measures)
    "quiet-client": { type: "string" },
    phases: { type: "string" },
  },
});
const N = Number(flags.tenants);
const SECONDS = Number(flags.seconds);
const QUIET_SECONDS = Number(flags["quiet-seconds"]);
const ADMIN_TOKEN = "bench-admin-token";

if (flags["quiet-client"]) {
  // prints one JSON line per phase length given in --phases (ms, comma-separated) as each phase ends,
  // after reading a line on stdin that says "go"
  // its own echo server: a reply never waits behind the servers that feed the flooding tenants
  const own = startServers();
  const g = new SimGuest(0);
  await g.connect(flags["quiet-client"]);
  g.dhcp(1);
  await g.leased;
  await g.open(own.echoPort, 40000);
  const req = new Uint8Array(64);
  console.log(JSON.stringify({ ready: true }));
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  for (const ms of flags.phases!.split(",").map(Number)) {
    await lines.read();
    const xs: number[] = [];
    const end = performance.now() + ms;
    while (performance.now() < end) {
      const t = performance.now();
      await g.request(req, 64);
      xs.push((performance.now() - t) * 1000);
      await new Promise((r) => setTimeout(r, 10));
    }
    console.log(JSON.stringify({ p50: quantile(xs, 0.5), p99: quantile(xs, 0.99), n: xs.length }));
  }
  g.close();
  Deno.exit(0);
}

// ── host servers, as their own process: the load generator's busy event loop must not delay them ──
const { echoPort, sourcePort, proc: serversProc } = await spawnServers();

// ── the relay, as its own process ──
const dir = await Deno.makeTempDir({ prefix: "slirp-tenants-" });
await Deno.writeTextFile(`${dir}/admin`, ADMIN_TOKEN);
await Deno.writeTextFile(`${dir}/secret`, "bench-secret-0123456789abcdef");
const relay = spawnRelay([
  "--multi-tenant",
  "--admin",
  "http://127.0.0.1:18081",
  "--admin-token-file",
  `${dir}/admin`,
  "--token-secret-file",
  `${dir}/secret`,
  "--tenant-socket-dir",
  `${dir}/sockets`,
  "--dns-upstream",
  "127.0.0.1:9",
], { cpuProfDir: Deno.env.get("SLIRP_CPU_PROF_DIR") });
const admin = "http://127.0.0.1:18081";
for (let i = 0; i < 100; i++) {
  try {
    if ((await fetch(`${admin}/healthz`)).ok) break;
  } catch { /* starting */ }
  await new Promise((r) => setTimeout(r, 100));
}
await new Promise((r) => setTimeout(r, 500));
/** The relay's own view of its memory (from /metrics). */
async function relayMemory(): Promise<{ heapUsed: number; heapTotal: number; external: number }> {
  const text =
    await (await fetch(`${admin}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  const get = (name: string) =>
    Number(new RegExp(`^${name}(?:\\{relay="[^"]*"\\})? (\\d+)`, "m").exec(text)?.[1] ?? 0);
  return {
    heapUsed: get("slirp_heap_used_bytes"),
    heapTotal: get("slirp_heap_total_bytes"),
    external: get("slirp_external_memory_bytes"),
  };
}
const rssBase = rssOf(relay.pid);
const memBase = await relayMemory();

const guests: SimGuest[] = [];
try {
  // tenants arrive in two halves: the second half's cost is the marginal cost of an idle tenant, free
  // of the process-wide growth the first burst causes (V8's young generation grows to its maximum
  // under any allocation burst; with --max-semi-space-size=1 the fresh-process figure drops by half)
  const addTenants = async (from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const r = await fetch(`${admin}/v1/tenants`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        body: JSON.stringify({ id: `t${i}`, policy: { allow: ["127.0.0.1/32"] } }),
      });
      if (r.status !== 201) throw new Error(`create t${i}: ${r.status} ${await r.text()}`);
      await r.body?.cancel();
    }
    const added: SimGuest[] = [];
    for (let i = Math.max(from, 1); i < to; i++) {
      const g = new SimGuest(i);
      await g.connect(`${dir}/sockets/t${i}.sock`);
      added.push(g);
    }
    for (const g of added) g.dhcp(1);
    await Promise.all(added.map((g) => g.leased));
    guests.push(...added);
  };
  const half = Math.floor(N / 2);
  const t0 = performance.now();
  await addTenants(0, half);
  const firstHalfMs = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 2000));
  const rssHalf = rssOf(relay.pid);
  const t1 = performance.now();
  await addTenants(half, N);
  const setupMs = firstHalfMs + (performance.now() - t1);
  await new Promise((r) => setTimeout(r, 2000));
  const rssIdle = rssOf(relay.pid);
  const perTenantFresh = (rssIdle - rssBase) / N;
  const perTenant = (rssIdle - rssHalf) / (N - half);
  const memIdle = await relayMemory();
  const quietProc = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--quiet-client",
      `${dir}/sockets/t0.sock`,
      "--phases",
      `${QUIET_SECONDS * 1000},${QUIET_SECONDS * 1000},${SECONDS * 1000}`,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const quietOut = quietProc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const quietIn = quietProc.stdin.getWriter();
  let quietBuf = "";
  const quietLine = async (): Promise<Record<string, number>> => {
    for (;;) {
      const nl = quietBuf.indexOf("\n");
      if (nl >= 0) {
        const line = quietBuf.slice(0, nl);
        quietBuf = quietBuf.slice(nl + 1);
        return JSON.parse(line);
      }
      const { value, done } = await quietOut.read();
      if (done) throw new Error("quiet client ended");
      quietBuf += value;
    }
  };
  await quietLine(); // ready
  const measureQuiet = async () => {
    await quietIn.write(new TextEncoder().encode("go\n"));
    const r = await quietLine();
    quietP50s.push(r.p50);
    quietCounts.push(r.n);
    return r.p99;
  };
  // (the quiet client's own DHCP happens when it starts, above)

  // small request/response on one connection per tenant
  await Promise.all(guests.map((g) => g.open(echoPort, 40000)));
  const req = new Uint8Array(64);
  const lat: number[] = [];
  const until = performance.now() + SECONDS * 1000;
  await Promise.all(guests.map(async (g) => {
    while (performance.now() < until) {
      const t = performance.now();
      await g.request(req, 64);
      lat.push((performance.now() - t) * 1000);
      await new Promise((r) => setTimeout(r, 50));
    }
  }));
  const p50 = quantile(lat, 0.5), p99 = quantile(lat, 0.99);

  // the quiet tenant (t0, its own process) keeps its echo connection: p99 alone, with one flooder, with
  // everyone downloading. The flooder opens a download connection (its echo connection stays idle).
  const quietP50s: number[] = [], quietCounts: number[] = [];
  const quietBase = await measureQuiet();
  const flooder = guests[0];
  await flooder.open(sourcePort, 41000);
  void flooder.request(Uint8Array.of(1), Number.MAX_SAFE_INTEGER);
  const f0 = flooder.received;
  const tf = performance.now();
  const quietOneFlood = await measureQuiet();
  const floodGbps = ((flooder.received - f0) * 8) / ((performance.now() - tf) / 1000) / 1e9;

  // everyone else downloads too: aggregate throughput and fairness
  const downloaders = guests.slice(1);
  await Promise.all(downloaders.map((g) => g.open(sourcePort, 41000)));
  const base = downloaders.map((g) => g.received);
  const rampStart = performance.now();
  for (const g of downloaders) void g.request(Uint8Array.of(1), Number.MAX_SAFE_INTEGER);
  // fairness is about sharing once every flow runs: the window opens when each has 64 KiB (or after 20 s)
  while (performance.now() - rampStart < 20_000 && downloaders.some((g, i) => g.received - base[i] < 65536)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const rampSecs = (performance.now() - rampStart) / 1000;
  const rampAll = downloaders.every((g, i) => g.received - base[i] >= 65536);
  const startBytes = downloaders.map((g) => g.received);
  const floodStart = performance.now();
  const cpuRelay0 = cpuOf(relay.pid), cpuGen0 = cpuOf("self");
  const quietAll = await measureQuiet();
  await quietProc.status;
  const floodSecs = (performance.now() - floodStart) / 1000;
  const cpuRelay = (cpuOf(relay.pid) - cpuRelay0) / floodSecs, cpuGen = (cpuOf("self") - cpuGen0) / floodSecs;
  const got = downloaders.map((g, i) => g.received - startBytes[i]);
  const sum = got.reduce((a, b) => a + b, 0);
  const jain = sum === 0 ? 0 : (sum * sum) / (got.length * got.reduce((a, b) => a + b * b, 0));
  const gbps = (sum * 8) / floodSecs / 1e9;
  const rssLoaded = rssOf(relay.pid);
  // why throughput differs between tenants: the relay's own drop and retransmit counters
  const metrics =
    await (await fetch(`${admin}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
  const byReason = new Map<string, number>();
  let retransmits = 0, timeouts = 0, spurious = 0;
  for (const line of metrics.split("\n")) {
    const d = /^slirp_tenant_drops_total\{relay="[^"]*",tenant="[^"]*",reason="([^"]*)"\} (\d+)/.exec(line);
    if (d) byReason.set(d[1], (byReason.get(d[1]) ?? 0) + Number(d[2]));
    const r = /^slirp_tenant_tcp_retransmits_total\{[^}]*\} (\d+)/.exec(line);
    if (r) retransmits += Number(r[1]);
    const to = /^slirp_tenant_tcp_timeouts_total\{[^}]*\} (\d+)/.exec(line);
    if (to) timeouts += Number(to[1]);
    const sp = /^slirp_tenant_tcp_spurious_timeouts_total\{[^}]*\} (\d+)/.exec(line);
    if (sp) spurious += Number(sp[1]);
  }

  // with --diagnose: the TCP state of the slowest downloaders, to see why they are slow
  const slowest = got.map((b, i) => [b, i]).sort((a, b) => a[0] - b[0]).slice(0, 2);
  for (let round = 0; flags.diagnose && round < 2; round++) {
    for (const [b, i] of slowest) {
      const g = downloaders[i];
      const id = `t${g.index}`;
      const get = async (sub: string) =>
        await (await fetch(`${admin}/v1/tenants/${id}${sub}`, {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        })).json();
      const flows = (await get("/flows")).tcp.filter((f: { remote: string }) =>
        f.remote.endsWith(`:${sourcePort}`)
      );
      const st = await get("/stats");
      console.error(
        `slow tenant ${id} (${b} B): guest framesSent ${g.framesSent} rcvNxt ${g.rcvNxt} received ${g.received} writerBacklog ${g.channel.backlog}; relay lane ${st.laneQueuedFrames} ${st.laneHoldsBatch} backlog ${st.guestBacklogBytes} framesIn ${st.counters.framesIn} framesOut ${st.counters.framesOut}; ${
          JSON.stringify(flows)
        }`,
      );
    }
    const ss = new TextDecoder().decode((await new Deno.Command("ss", { args: ["-xpn"] }).output()).stdout);
    const stuck = (pid: number) =>
      ss.split("\n").filter((l) => l.includes(`pid=${pid},`) && Number(l.split(/\s+/)[2]) > 0);
    const r = stuck(relay.pid), gen = stuck(Deno.pid);
    console.error(`unix sockets with unread bytes: relay ${r.length}, generator ${gen.length}`);
    for (const l of r.slice(0, 3)) console.error(`  relay: ${l}`);
    for (const l of gen.slice(0, 3)) console.error(`  generator: ${l}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  console.log(
    `tenants benchmark, ${
      new Date().toISOString()
    }, ${navigator.hardwareConcurrency} cores, ${N} tenants, ${SECONDS}s phases (quiet tenant alone and beside one flooder ${QUIET_SECONDS}s each)`,
  );
  console.log(`| metric | value |`);
  console.log(`| --- | --- |`);
  console.log(`| setup: create ${N} tenants + connect + DHCP | ${(setupMs / 1000).toFixed(1)} s |`);
  console.log(`| relay RSS before tenants | ${(rssBase / 2 ** 20).toFixed(1)} MiB |`);
  console.log(
    `| relay RSS with ${half} / ${N} idle leased tenants | ${(rssHalf / 2 ** 20).toFixed(1)} / ${
      (rssIdle / 2 ** 20).toFixed(1)
    } MiB |`,
  );
  console.log(
    `| memory per idle tenant: marginal (second ${N - half}) / from an empty relay | ${
      (perTenant / 1024).toFixed(1)
    } / ${(perTenantFresh / 1024).toFixed(1)} KiB |`,
  );
  const kibPer = (a: number, b: number) => ((a - b) / N / 1024).toFixed(1);
  console.log(
    `| from an empty relay, V8 heap used / heap reserved / buffers, per tenant | ${
      kibPer(memIdle.heapUsed, memBase.heapUsed)
    } / ${kibPer(memIdle.heapTotal, memBase.heapTotal)} / ${
      kibPer(memIdle.external, memBase.external)
    } KiB |`,
  );
  console.log(
    `| request/response 64 B, all tenants: p50 / p99 | ${(p50 / 1000).toFixed(2)} ms / ${
      (p99 / 1000).toFixed(2)
    } ms (${lat.length} requests) |`,
  );
  console.log(`| one flooding tenant's download | ${floodGbps.toFixed(2)} Gbit/s |`);
  console.log(
    `| quiet tenant p99: alone / with one tenant flooding | ${(quietBase / 1000).toFixed(2)} ms / ${
      (quietOneFlood / 1000).toFixed(2)
    } ms (×${(quietOneFlood / quietBase).toFixed(2)}); p50 ${(quietP50s[0] / 1000).toFixed(2)} / ${
      (quietP50s[1] / 1000).toFixed(2)
    } ms; ${quietCounts[0]} / ${quietCounts[1]} requests |`,
  );
  console.log(
    `| aggregate host→guest, ${downloaders.length} tenants downloading | ${gbps.toFixed(2)} Gbit/s |`,
  );
  console.log(
    `| time until every downloader had 64 KiB | ${rampSecs.toFixed(2)} s${
      rampAll ? "" : " (some never did)"
    } |`,
  );
  console.log(`| Jain fairness index across downloading tenants | ${jain.toFixed(3)} |`);
  const mb = (x: number) => (x / 2 ** 20).toFixed(2);
  console.log(
    `| per-tenant MiB in the window: min / p10 / p50 / p90 / max; tenants at 0 | ${mb(quantile(got, 0))} / ${
      mb(quantile(got, 0.1))
    } / ${mb(quantile(got, 0.5))} / ${mb(quantile(got, 0.9))} / ${mb(quantile(got, 1))}; ${
      got.filter((x) => x === 0).length
    } |`,
  );
  console.log(
    `| quiet tenant p99 while ${downloaders.length} tenants download | ${(quietAll / 1000).toFixed(2)} ms (×${
      (quietAll / quietBase).toFixed(2)
    }) |`,
  );
  console.log(
    `| CPU while all download: relay / load generator | ${(cpuRelay * 100).toFixed(0)} % / ${
      (cpuGen * 100).toFixed(0)
    } % of a core |`,
  );
  console.log(`| relay RSS under load | ${(rssLoaded / 2 ** 20).toFixed(1)} MiB |`);
  console.log(
    `| relay TCP retransmissions; timeouts (of them spurious); drops by reason | ${retransmits}; ${timeouts} (${spurious}); ${
      JSON.stringify(Object.fromEntries(byReason))
    } |`,
  );
} finally {
  for (const g of guests) g.close();
  relay.kill("SIGTERM");
  await relay.status;
  serversProc.kill("SIGTERM");
  await serversProc.status;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
