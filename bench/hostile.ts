/**
 * Hostile-tenant benchmark (not a test). The relay runs in multi-tenant mode as its own process; N
 * well-behaved tenants (simulated guests over their stream sockets) each download from a host server and
 * ping the gateway, first alone, then while one hostile tenant — driven from a process of its own — cycles
 * through SYN floods, UDP floods, DHCP exhaustion, garbage and oversized frames, a tiny MSS, zero windows,
 * connections it never acknowledges, fragment storms and oversized pings. Prints: whether the relay lived,
 * the well-behaved tenants' throughput and ping p99 in both phases, and the relay's RSS before the attack
 * and after the hostile tenant left.
 *
 *   deno run -A bench/hostile.ts [--tenants 8] [--seconds 10] [--json]
 *
 * Everything stays on loopback: the host servers listen on 127.0.0.1 and every tenant's policy allows
 * only 127.0.0.1.
 */
import { parseArgs } from "node:util";
import { FrameWriter } from "../src/transport/stream.ts";
import { IPPROTO_ICMP, IPPROTO_UDP } from "../src/wire/ipv4.ts";
import { TCP_SYN, type TcpHeader } from "../src/wire/tcp.ts";
import { DhcpMessageType, optU8 } from "../src/wire/dhcp.ts";
import { SimGuest } from "../tests/_sim_guest.ts";
import { dhcpFrame, fragmentFrames, icmpEchoMessage, ip, tcpFrame, udpFrame } from "../tests/_frames.ts";
import { quantile, rssOf, spawnRelay, spawnServers } from "./_harness.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    tenants: { type: "string", default: "8" },
    seconds: { type: "string", default: "10" },
    json: { type: "boolean", default: false },
    // write the relay's CPU profile (deno --cpu-prof) into this directory
    "cpu-prof-dir": { type: "string" },
    // only these attacks (comma-separated names), to study one
    attacks: { type: "string" },
    // internal: run only the hostile guest against this socket, for this many ms
    "hostile-client": { type: "string" },
    ms: { type: "string" },
    "echo-port": { type: "string" },
    "source-port": { type: "string" },
  },
});

const GUEST = ip("10.0.2.15");
const GW = ip("10.0.2.2");

/** Eight SYNs from random ports to `port`, each shaped by `mutate`. */
function synsToSource(w: FrameWriter, mac: number, port: number, mutate?: (t: TcpHeader) => void): void {
  for (let i = 0; i < 8; i++) {
    const sport = 1024 + Math.floor(Math.random() * 60000);
    w.push(
      tcpFrame(
        { srcMac: mac, src: GUEST, dst: GW, sport, dport: port, seq: 1, ack: 0, flags: TCP_SYN },
        undefined,
        mutate,
      ),
    );
  }
}

/** The attacks, each run for a slice of the hostile phase, in turn, again and again. */
const ATTACKS: Record<
  string,
  (w: FrameWriter, mac: number, ports: { echo: number; source: number }) => void
> = {
  "syn-flood": (w, mac, p) => {
    for (let i = 0; i < 64; i++) {
      const sport = 1024 + Math.floor(Math.random() * 60000);
      w.push(
        tcpFrame({ srcMac: mac, src: GUEST, dst: GW, sport, dport: p.echo, seq: 1, ack: 0, flags: TCP_SYN }),
      );
    }
  },
  "udp-flood": (w, mac) => {
    const data = new Uint8Array(512);
    for (let i = 0; i < 64; i++) {
      const sport = 1024 + Math.floor(Math.random() * 60000);
      w.push(udpFrame(mac, GUEST, GW, sport, 9, data));
    }
  },
  "dhcp-exhaustion": (w) => {
    for (let i = 0; i < 32; i++) {
      const m = 0x020000000000 + Math.floor(Math.random() * 0xffffffff);
      w.push(dhcpFrame(m, DhcpMessageType.DISCOVER, [[61, optU8(i)]]));
    }
  },
  "garbage": (w, mac) => {
    for (let i = 0; i < 32; i++) {
      const f = crypto.getRandomValues(new Uint8Array(60 + Math.floor(Math.random() * 1400)));
      if (i % 2) f.set([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02, mac / 2 ** 40, 0, 0, 0, 0, 1, 0x08, 0x00]);
      w.push(f);
    }
  },
  "oversized-frames": (w) => {
    for (let i = 0; i < 8; i++) w.push(new Uint8Array(9000 + i));
  },
  // SYNs to the endless source: with MSS 12, with a zero window, and plain ones whose SYN-ACK (and every
  // byte after it) is never acknowledged
  "tiny-mss": (w, mac, p) =>
    synsToSource(w, mac, p.source, (t) => {
      t.mss = 12;
      t.hasTimestamps = true;
      t.tsVal = 1;
    }),
  "zero-window": (w, mac, p) => synsToSource(w, mac, p.source, (t) => (t.window = 0)),
  "never-ack": (w, mac, p) => synsToSource(w, mac, p.source),
  "fragment-storm": (w, mac) => {
    for (let i = 0; i < 16; i++) {
      const id = Math.floor(Math.random() * 0xffff);
      // the first half of a datagram cut into 8-byte fragments: held until it times out
      const frags = fragmentFrames(mac, GUEST, GW, IPPROTO_UDP, new Uint8Array(2048), 28, id);
      for (const f of frags.slice(0, 100)) w.push(f);
    }
  },
  "oversized-ping": (w, mac) => {
    const data = new Uint8Array(65000);
    const frags = fragmentFrames(mac, GUEST, GW, IPPROTO_ICMP, icmpEchoMessage(7, 1, data), 1500, 0x7777);
    for (const f of frags) w.push(f);
  },
};

if (flags["hostile-client"]) {
  const mac = 0x02aa00000001;
  const ports = { echo: Number(flags["echo-port"]), source: Number(flags["source-port"]) };
  const end = performance.now() + Number(flags.ms);
  const names = flags.attacks ? flags.attacks.split(",") : Object.keys(ATTACKS);
  for (const n of names) {
    if (!ATTACKS[n]) throw new Error(`No attack "${n}": ${Object.keys(ATTACKS).join(", ")}`);
  }
  const sent: Record<string, number> = {};
  /** When each attack's slice began (Date.now(), comparable across processes): pings are matched to it. */
  const phases: [string, number][] = [];
  let reconnects = 0;
  while (performance.now() < end) {
    // a protocol error (an oversized frame) closes the connection: the attacker just comes back
    let conn: Deno.UnixConn;
    try {
      conn = await Deno.connect({ transport: "unix", path: flags["hostile-client"] });
    } catch {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    let broken = false;
    const w = new FrameWriter(conn, 8 << 20, () => (broken = true));
    (async () => {
      const buf = new Uint8Array(1 << 16);
      try {
        while ((await conn.read(buf)) !== null) { /* ignore what the relay answers */ }
      } catch { /* closed */ }
      broken = true;
    })();
    reconnects++;
    while (!broken && performance.now() < end) {
      for (const name of names) {
        const sliceEnd = performance.now() + 150;
        phases.push([name, Date.now()]);
        while (!broken && performance.now() < sliceEnd) {
          ATTACKS[name](w, mac, ports);
          sent[name] = (sent[name] ?? 0) + 1;
          await new Promise((r) => setTimeout(r, 1));
        }
      }
    }
    try {
      conn.close();
    } catch { /* closed */ }
  }
  console.log(JSON.stringify({ sent, reconnects, phases }));
  Deno.exit(0);
}

const N = Number(flags.tenants);
const SECONDS = Number(flags.seconds);
const ADMIN_TOKEN = "hostile-bench-admin-token";
// the host servers in their own process: the attack's connection storms land there, not in the process
// that times the pings
const { echoPort, sourcePort, proc: serversProc } = await spawnServers();
const dir = await Deno.makeTempDir({ prefix: "slirp-hostile-" });
await Deno.writeTextFile(`${dir}/admin`, ADMIN_TOKEN);
await Deno.writeTextFile(`${dir}/secret`, "hostile-secret-0123456789abcdef");
const adminPort = 18300 + Math.floor(Math.random() * 500);
const admin = `http://127.0.0.1:${adminPort}`;
const relay = spawnRelay([
  "--multi-tenant",
  "--admin",
  admin,
  "--admin-token-file",
  `${dir}/admin`,
  "--token-secret-file",
  `${dir}/secret`,
  "--tenant-socket-dir",
  `${dir}/sockets`,
  "--dns-upstream",
  "127.0.0.1:9",
  "--tenant-grace",
  "0",
], { cpuProfDir: flags["cpu-prof-dir"] });
const alive = () => {
  try {
    return !/State:\s+Z/.test(Deno.readTextFileSync(`/proc/${relay.pid}/status`));
  } catch {
    return false;
  }
};
for (let i = 0; i < 100; i++) {
  try {
    if ((await fetch(`${admin}/healthz`)).ok) break;
  } catch { /* starting */ }
  await new Promise((r) => setTimeout(r, 100));
}
const api = async (method: string, path: string, body?: unknown) => {
  const r = await fetch(`${admin}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text;
};

/** One unlabelled sample of the relay's /metrics. */
async function metric(name: string): Promise<number> {
  const text = await api("GET", "/metrics");
  return Number(new RegExp(`^${name}(?:\\{relay="[^"]*"\\})? (\\d+)`, "m").exec(text)?.[1] ?? 0);
}

/** The relay's V8 heap in use. */
function heapUsed(): Promise<number> {
  return metric("slirp_heap_used_bytes");
}

interface Phase {
  mbitPerTenant: number[];
  pingP50: number;
  pingP99: number;
  pings: number;
  /** [Date.now() when sent, round trip µs] of every ping. */
  samples: [number, number][];
}

/** Every good guest downloads and pings for `ms`; returns each one's throughput and the ping spread. */
async function measure(guests: SimGuest[], ms: number): Promise<Phase> {
  const start = guests.map((g) => g.received);
  const rtts: number[] = [];
  const samples: [number, number][] = [];
  const end = performance.now() + ms;
  await Promise.all(guests.map(async (g) => {
    while (performance.now() < end) {
      const t = performance.now();
      const sentAt = Date.now();
      const timeout = new Promise<"lost">((r) => setTimeout(() => r("lost"), 1000));
      if (await Promise.race([g.ping(), timeout]) === "lost") rtts.push(1000_000);
      else rtts.push((performance.now() - t) * 1000);
      samples.push([sentAt, rtts[rtts.length - 1]]);
      await new Promise((r) => setTimeout(r, 20));
    }
  }));
  return {
    mbitPerTenant: guests.map((g, i) => ((g.received - start[i]) * 8) / (ms / 1000) / 1e6),
    pingP50: quantile(rtts, 0.5),
    pingP99: quantile(rtts, 0.99),
    pings: rtts.length,
    samples,
  };
}

const guests: SimGuest[] = [];
let hostileOut = "";
let result: Record<string, unknown> = {};
try {
  for (let i = 0; i < N; i++) {
    await api("POST", "/v1/tenants", { id: `good${i}`, policy: { allow: ["127.0.0.1/32"] } });
  }
  for (let i = 0; i < N; i++) {
    const g = new SimGuest(i);
    await g.connect(`${dir}/sockets/good${i}.sock`);
    g.dhcp(1);
    guests.push(g);
  }
  await Promise.all(guests.map((g) => g.leased));
  await Promise.all(guests.map((g, i) => g.open(sourcePort, 40000 + i)));
  // the download starts with one byte of request; the endless source answers forever
  for (const g of guests) void g.request(new Uint8Array(1), Number.MAX_SAFE_INTEGER);
  await new Promise((r) => setTimeout(r, 1000)); // past slow start
  const rssStart = rssOf(relay.pid);
  const alone = await measure(guests, SECONDS * 1000);
  // the relay's steady state with the good tenants downloading: the figure the attack is compared with
  const rssBefore = rssOf(relay.pid);
  const heapBefore = await heapUsed();
  const externalBefore = await metric("slirp_external_memory_bytes");

  await api("POST", "/v1/tenants", { id: "hostile", policy: { allow: ["127.0.0.1/32"] } });
  const hostile = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--hostile-client",
      `${dir}/sockets/hostile.sock`,
      "--ms",
      String(SECONDS * 1000 + 500),
      "--echo-port",
      String(echoPort),
      "--source-port",
      String(sourcePort),
      ...(flags.attacks ? ["--attacks", flags.attacks] : []),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  await new Promise((r) => setTimeout(r, 250));
  const rssAttack0 = rssOf(relay.pid);
  const attacked = await measure(guests, SECONDS * 1000);
  const rssUnderAttack = rssOf(relay.pid);
  const heapUnderAttack = await heapUsed();
  hostileOut = new TextDecoder().decode((await hostile.output()).stdout).trim();
  const hostileStats = JSON.parse(await api("GET", "/v1/tenants/hostile/stats"));
  await api("DELETE", "/v1/tenants/hostile");
  // let the hostile tenant's flows, timers and buffers go, and the relay hand its memory back (5 s after the
  // last tenant left, src/relay/relay.ts)
  await new Promise((r) => setTimeout(r, 8000));
  const rssAfter = rssOf(relay.pid);
  const heapAfter = await heapUsed();
  const externalAfter = await metric("slirp_external_memory_bytes");
  const after = await measure(guests, 2000);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  result = {
    alive: alive(),
    tenants: N,
    seconds: SECONDS,
    aloneMbit: sum(alone.mbitPerTenant),
    attackedMbit: sum(attacked.mbitPerTenant),
    afterMbit: sum(after.mbitPerTenant),
    worstTenantRatio: Math.max(
      ...alone.mbitPerTenant.map((a, i) => a / Math.max(attacked.mbitPerTenant[i], 1e-9)),
    ),
    alone,
    attacked,
    rssBefore,
    rssAttack0,
    rssUnderAttack,
    rssAfter,
    rssStart,
    externalBefore,
    externalAfter,
    heapBefore,
    heapUnderAttack,
    heapAfter,
    hostileSent: JSON.parse(hostileOut || "{}"),
    hostileCounters: hostileStats.counters,
  };
} finally {
  for (const g of guests) g.close();
  try {
    relay.kill("SIGTERM");
  } catch { /* gone */ }
  await relay.status;
  serversProc.kill("SIGTERM");
  await serversProc.status;
  await Deno.remove(dir, { recursive: true });
}

const r = result as {
  alive: boolean;
  aloneMbit: number;
  attackedMbit: number;
  afterMbit: number;
  worstTenantRatio: number;
  alone: Phase;
  attacked: Phase;
  rssBefore: number;
  rssAfter: number;
  rssUnderAttack: number;
  heapBefore: number;
  rssStart: number;
  externalBefore: number;
  externalAfter: number;
  heapUnderAttack: number;
  heapAfter: number;
  hostileSent: { sent?: Record<string, number>; reconnects?: number; phases?: [string, number][] };
  hostileCounters: { framesIn: number; drops: Record<string, number>; faults: number };
};
if (flags.json) console.log(JSON.stringify(result));
const MiB = (b: number) => (b / 1048576).toFixed(1);
const x = (a: number, b: number) => `×${(a / b).toFixed(2)}`;
console.log(
  `hostile-tenant benchmark, ${new Date().toISOString()}, ${N} good tenants, ${SECONDS} s per phase`,
);
console.log("| | figure | target |\n| --- | --- | --- |");
console.log(`| relay alive after the attack | ${r.alive ? "yes" : "NO"} | yes |`);
console.log(
  `| good tenants' download, alone / attacked / after | ${r.aloneMbit.toFixed(0)} / ${
    r.attackedMbit.toFixed(0)
  } / ${r.afterMbit.toFixed(0)} Mbit/s (${x(r.aloneMbit, r.attackedMbit)} lower attacked) | < ×2 |`,
);
console.log(`| worst single tenant's download, alone ÷ attacked | ${x(r.worstTenantRatio, 1)} | < ×2 |`);
console.log(
  `| gateway ping p50 / p99, alone | ${(r.alone.pingP50 / 1000).toFixed(2)} / ${
    (r.alone.pingP99 / 1000).toFixed(2)
  } ms (${r.alone.pings} pings) | |`,
);
console.log(
  `| gateway ping p50 / p99, attacked | ${(r.attacked.pingP50 / 1000).toFixed(2)} / ${
    (r.attacked.pingP99 / 1000).toFixed(2)
  } ms (${r.attacked.pings} pings; p99 ${x(r.attacked.pingP99, r.alone.pingP99)}) | p99 < ×2 |`,
);
console.log(
  `| relay RSS before / under attack / after the hostile tenant left | ${MiB(r.rssBefore)} / ${
    MiB(r.rssUnderAttack)
  } / ${MiB(r.rssAfter)} MiB (${(100 * (r.rssAfter / r.rssBefore - 1)).toFixed(1)} %) | within 10 % |`,
);
console.log(
  `| relay V8 heap in use, before / under attack / after | ${MiB(r.heapBefore)} / ${
    MiB(r.heapUnderAttack)
  } / ${MiB(r.heapAfter)} MiB; buffers ${MiB(r.externalBefore)} / ${
    MiB(r.externalAfter)
  } MiB; RSS at the start ${MiB(r.rssStart)} MiB | |`,
);
console.log(
  `| hostile tenant: frames in, reconnects, faults | ${r.hostileCounters.framesIn}, ${
    r.hostileSent.reconnects ?? 0
  }, ${r.hostileCounters.faults} | |`,
);
// which attack was running when the slow pings were sent: each attacked ping belongs to the latest phase
// that began before it
const phases = r.hostileSent.phases ?? [];
const byPhase = new Map<string, number[]>();
for (const [at, rtt] of r.attacked.samples) {
  let name = "";
  for (const [n, t] of phases) if (t <= at) name = n;
  if (!name) continue;
  if (!byPhase.has(name)) byPhase.set(name, []);
  byPhase.get(name)!.push(rtt);
}
const perPhase = [...byPhase].map(([n, xs]) => [n, quantile(xs, 0.99), xs.length] as const)
  .sort((a, b) => b[1] - a[1]);
console.log(
  `| gateway ping p99 by the attack running when it was sent | ${
    perPhase.map(([n, p, c]) => `${n} ${(p / 1000).toFixed(2)} ms (${c})`).join(", ")
  } | |`,
);
const drops = Object.entries(r.hostileCounters.drops).sort((a, b) => b[1] - a[1]).slice(0, 12);
console.log(`| hostile tenant's top drops | ${drops.map(([k, v]) => `${k} ${v}`).join(", ")} | |`);
// the host servers would keep the process alive
Deno.exit(r.alive ? 0 : 1);
