/**
 * End-to-end TCP benchmark (not a test): a Linux guest in a network namespace, its TAP bridged by a
 * separate process to the stream socket of slirp-relay — and, in the same run, to passt behind the very
 * same harness. Measures iperf3 throughput both ways at MTU 1500 and 65520, guest connections per second,
 * and 1-byte request/response latency; prints a table with our/passt ratios.
 *
 * Needs root, iperf3, busybox and passt. All traffic stays on loopback and in the namespace. passt copies
 * this machine's address and gateway into the guest and maps that gateway to host loopback; the guest
 * only ever sends TCP to that gateway address (never ICMP), as the project brief requires.
 *
 * Per run: iperf3 both ways (with retransmits and each backend's CPU-seconds per GB moved, from
 * /proc/PID/stat), and at MTU 1500 ping to the gateway (not passt's), UDP round trips and 500 sequential
 * short connections — latency probes in Python with blocking sockets (bench/probe.py). The guest's TAP is
 * bridged by bench/tap_bridge.c. libslirp runs through bench/libslirp_driver.c where libslirp-dev is
 * installed.
 *
 * slirp-relay-dgram is the relay with the guest on a UNIX datagram socket (--listen-dgram, as QEMU's
 * -netdev dgram), bridged by the same C bridge in its datagram mode; slirp-relay-gvforwarder the same
 * stream socket spoken as gvforwarder does (POST /connect, u16 LE lengths); slirp-relay-ws a WebSocket
 * guest with one frame per message (v86), slirp-relay-wsbin one with QEMU's framing as a byte stream
 * (container2wasm) — both through the relay's main thread and the rings to its worker. slirp-relay-v6 is the relay measured
 * over IPv6: the guest takes fd00::/64 by SLAAC and every probe goes to fd00::2, the host's ::1.
 *
 *   deno run -A bench/e2e_tcp.ts [--seconds 5] [--targets slirp-relay,slirp-relay-v6,slirp-relay-w0,slirp-relay-dgram,slirp-relay-gvforwarder,slirp-relay-ws,slirp-relay-wsbin,passt,libslirp] [--cpu-prof]
 *     [--latency-only] [--warm-up 200] [--runs 1]   (see the options below)
 */
import { parseArgs } from "node:util";
import { NetnsGuest, run, which } from "../tests/_netns_guest.ts";
import {
  cTapBridge,
  libslirpAvailable,
  libslirpDriver,
  probeServer,
  quantile,
  spawnRelay,
  waitForSocket,
} from "./_harness.ts";
import { freePort } from "../tests/_services.ts";
import { connectionTimeline, type Timeline } from "./_conn_timeline.ts";
import { type CpuSplit, traceInside, traceWakes, type WakeFigures } from "./_wake_trace.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "5" },
    targets: { type: "string" },
    "cpu-prof": { type: "boolean", default: false },
    mtus: { type: "string", default: "1500,65520" },
    /** Only ping, UDP round trips and sequential connections (at MTU 1500): quick A/B runs of latency. */
    "latency-only": { type: "boolean", default: false },
    /**
     * Operations of each latency probe run before it is measured (the relay's JIT compiles a path only after
     * it has run a few thousand times: 200 measure a relay fresh from start, 3000 one that has served a while).
     */
    "warm-up": { type: "string", default: "200" },
    /**
     * Rounds of every target (interleaved: each round measures each target once, so a slow spell of the
     * machine hits all of them); the table gives each figure's median and range.
     */
    runs: { type: "string", default: "1" },
    /**
     * After the measured probes, 1000 more sequential connections under `tcpdump` in the guest's namespace:
     * prints each target's median time per step of a connection (bench/_conn_timeline.ts).
     */
    timeline: { type: "boolean", default: false },
    /**
     * After the measured probes, 20 more pings (not to passt's gateway), 500 UDP round trips and 1000
     * sequential connections with the backend's system calls recorded: prints each target's median µs from a
     * wake-up to its first write, the time it spends on a request inside its own process, and its busiest
     * thread's CPU time per round trip and per connection, inside system calls and between them
     * (bench/_wake_trace.ts).
     */
    inside: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  console.log(
    "deno run -A bench/e2e_tcp.ts [--seconds 5] [--mtus 1500,65520] [--targets slirp-relay,passt,libslirp,…] [--latency-only] [--warm-up 200] [--runs 1] [--timeline] [--inside] [--cpu-prof]",
  );
  Deno.exit(0);
}
const SECONDS = Number(flags.seconds);
const WARM_UP = String(Number(flags["warm-up"]));

interface Row {
  target: string;
  mtu: number;
  /** iperf3 Gbit/s, retransmits and backend CPU-seconds per GB moved, each way. */
  up: number;
  upRetr: number;
  upCpuPerGB: number;
  down: number;
  downRetr: number;
  downCpuPerGB: number;
  pingMs?: number;
  udpP50us?: number;
  seqConnPerSecond?: number;
  /** Backend CPU-milliseconds per sequential connection (what it competes with the guest and server for). */
  seqConnCpuMs?: number;
  /** With --timeline: the steps of a sequential connection as the guest saw them. */
  timeline?: Timeline;
  /** With --inside: from a wake-up to the backend's first write, during pings and UDP round trips. */
  inside?: { ping?: WakeFigures; udp: WakeFigures & { cpu: CpuSplit }; seq: CpuSplit };
}

const PROBE = new URL("./probe.py", import.meta.url).pathname;

async function startTarget(
  target: string,
  mtu: number,
  sock: string,
  profDir: string,
  wsPort: number,
): Promise<Deno.ChildProcess> {
  await Deno.remove(sock).catch(() => {});
  let child: Deno.ChildProcess;
  if (target.startsWith("slirp-relay")) {
    child = spawnRelay([
      target === "slirp-relay-dgram" ? "--listen-dgram" : "--listen-qemu",
      `unix://${sock}`,
      ...(target.startsWith("slirp-relay-ws") ? ["--listen-ws", `http://127.0.0.1:${wsPort}`] : []),
      "--mtu",
      String(mtu),
      "--dns-upstream",
      "127.0.0.1:9",
      ...(target === "slirp-relay-w0" ? ["--workers", "0"] : []),
    ], {
      cpuProfDir: flags["cpu-prof"] ? profDir : undefined,
    });
  } else if (target === "libslirp") {
    child = new Deno.Command(await libslirpDriver(), {
      args: [sock, String(mtu)],
      stdout: "null",
      stderr: "inherit",
    }).spawn();
  } else {
    child = new Deno.Command("passt", {
      args: ["-f", "-s", sock, "-m", String(mtu), "--no-dhcp-dns", "--no-dhcp-search", "-4"],
      stdout: "null",
      stderr: "null",
    }).spawn();
  }
  await waitForSocket(sock);
  return child;
}

/** CPU-seconds (user + system) a process has used, from /proc/PID/stat (every thread counted). */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields 14 and 15 (utime, stime) are the 12th and 13th after the command name, in clock ticks (100/s)
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function iperf(
  guest: NetnsGuest,
  gw: string,
  port: number,
  reverse: boolean,
  pid: number,
): Promise<{ gbps: number; retransmits: number; cpuPerGB: number }> {
  const cpu0 = await cpuSeconds(pid);
  const r = await guest.exec([
    "iperf3",
    "-c",
    gw,
    "-p",
    String(port),
    "-t",
    String(SECONDS),
    "-J",
    ...(reverse ? ["-R"] : []),
  ], {
    timeoutMs: (SECONDS + 30) * 1000,
  });
  const cpu = (await cpuSeconds(pid)) - cpu0;
  const j = JSON.parse(r.stdout);
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  const bytes = j.end.sum_received.bytes;
  return {
    gbps: j.end.sum_received.bits_per_second / 1e9,
    retransmits: j.end.sum_sent.retransmits ?? 0,
    cpuPerGB: cpu / (bytes / 1e9),
  };
}

async function probe(guest: NetnsGuest, args: string[]): Promise<Record<string, number>> {
  const r = await guest.exec(["python3", PROBE, ...args], { timeoutMs: 120_000 });
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

/** 20 pings to `gw`, 50 ms apart: their round trips in ms. */
async function pings(guest: NetnsGuest, gw: string): Promise<number[]> {
  const ping = await guest.exec(["ping", "-c", "20", "-i", "0.05", gw]);
  return [...ping.stdout.matchAll(/time=([0-9.]+) ms/g)].map((m) => Number(m[1]));
}

/** 1000 sequential connections under tcpdump in the guest's namespace, as a timeline of their steps. */
async function timeline(guest: NetnsGuest, gw: string, port: number): Promise<Timeline> {
  // -l: line-buffered, so that what it saw before SIGINT is all printed
  const capture = ["tcpdump", "-i", guest.ifname, "-tt", "-nn", "-l", "tcp", "port", String(port)];
  const dump = new Deno.Command("ip", {
    args: ["netns", "exec", guest.ns, ...capture],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const text = new Response(dump.stdout).text();
  await new Promise((r) => setTimeout(r, 500)); // tcpdump attaches
  await probe(guest, ["seq-conn", gw, String(port), "1000"]);
  await new Promise((r) => setTimeout(r, 200));
  dump.kill("SIGINT");
  await dump.status;
  return connectionTimeline(await text, port);
}

async function measure(target: string, mtu: number, dir: string): Promise<Row> {
  const sock = `${dir}/${target}.sock`;
  const wsPort = freePort();
  const child = await startTarget(target, mtu, sock, dir, wsPort);
  const v6 = target === "slirp-relay-v6";
  const loopback = v6 ? "::1" : "127.0.0.1";
  const iperfPort = 5201 + Math.floor(Math.random() * 1000);
  const iperfd = new Deno.Command("iperf3", {
    args: ["-s", "-B", loopback, "-p", String(iperfPort)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const answer = await probeServer("tcp-answer-server", loopback);
  const udpEcho = await probeServer("udp-echo-server", loopback);
  const url = ({
    "slirp-relay-dgram": `unixgram://${sock}`,
    "slirp-relay-gvforwarder": `gvforwarder://${sock}`,
    "slirp-relay-ws": `ws://127.0.0.1:${wsPort}/`,
    "slirp-relay-wsbin": `wsbin://127.0.0.1:${wsPort}/stream`,
  } as Record<string, string>)[target] ?? `unix://${sock}`;
  const guest = await NetnsGuest.create(url, { bridgeCommand: await cTapBridge() });
  try {
    const lease = await guest.dhcp();
    const gw = v6 ? "fd00::2" : lease.router.split(" ")[0];
    if (v6) await guest.slaac();
    await new Promise((r) => setTimeout(r, 300));
    const skipped = { gbps: NaN, retransmits: NaN, cpuPerGB: NaN };
    const up = flags["latency-only"] ? skipped : await iperf(guest, gw, iperfPort, false, child.pid);
    const down = flags["latency-only"] ? skipped : await iperf(guest, gw, iperfPort, true, child.pid);
    const row: Row = {
      target,
      mtu,
      up: up.gbps,
      upRetr: up.retransmits,
      upCpuPerGB: up.cpuPerGB,
      down: down.gbps,
      downRetr: down.retransmits,
      downCpuPerGB: down.cpuPerGB,
    };
    if (mtu === 1500) {
      // each probe runs --warm-up times first: the figures should not depend on whether iperf3 ran before them,
      // and the relay's JIT compiles a path only after it has run a few thousand times
      await probe(guest, ["udp-rr", gw, String(udpEcho.port), WARM_UP]);
      await probe(guest, ["seq-conn", gw, String(answer.port), WARM_UP]);
      // passt's gateway may lead off this machine for ICMP: never ping it (the project brief)
      if (target !== "passt") {
        await guest.exec(["ping", "-c", WARM_UP, "-i", "0.002", "-q", gw], { timeoutMs: 120_000 });
        row.pingMs = quantile(await pings(guest, gw), 0.5);
      }
      row.udpP50us = (await probe(guest, ["udp-rr", gw, String(udpEcho.port), "500"])).p50us;
      const cpuBefore = await cpuSeconds(child.pid);
      row.seqConnPerSecond = (await probe(guest, ["seq-conn", gw, String(answer.port), "500"])).perSecond;
      row.seqConnCpuMs = (await cpuSeconds(child.pid) - cpuBefore) * 1000 / 500;
      if (flags.timeline) row.timeline = await timeline(guest, gw, answer.port);
      if (flags.inside) {
        row.inside = {
          ping: target === "passt" ? undefined : await traceWakes(child.pid, () => pings(guest, gw)),
          udp: await traceInside(
            child.pid,
            500,
            () => probe(guest, ["udp-rr", gw, String(udpEcho.port), "500"]),
          ),
          seq: (await traceInside(child.pid, 1000, () =>
            probe(guest, ["seq-conn", gw, String(answer.port), "1000"])))
            .cpu,
        };
      }
    }
    return row;
  } catch (e) {
    // say whether the backend itself died (the libslirp driver has, now and then, with no message)
    const ended = await Promise.race([
      child.status,
      new Promise<null>((r) => setTimeout(() => r(null), 100)),
    ]);
    if (!ended) throw e;
    const how = ended.signal ? `signal ${ended.signal}` : `exit code ${ended.code}`;
    throw new Error(`${(e as Error).message} (the ${target} process had ended: ${how})`);
  } finally {
    await guest.close();
    for (const c of [iperfd, answer.child, udpEcho.child]) {
      try {
        c.kill();
      } catch { /* ended already */ }
      await c.status;
    }
    try {
      child.kill("SIGTERM");
    } catch { /* the libslirp driver ends with its guest */ }
    await child.status;
  }
}

if (Deno.uid() !== 0 || !which("iperf3")) {
  console.error("bench/e2e_tcp.ts needs root and iperf3 (apt-get install iperf3 passt busybox-static)");
  Deno.exit(2);
}
if (flags.inside && !which("perf")) {
  console.error("bench/e2e_tcp.ts --inside records system calls with perf (apt-get install linux-perf)");
  Deno.exit(2);
}
const targets = flags.targets
  ? flags.targets.split(",")
  : ["slirp-relay", ...(which("passt") ? ["passt"] : []), ...(libslirpAvailable() ? ["libslirp"] : [])];
const mtus = flags["latency-only"] ? [1500] : flags.mtus!.split(",").map(Number);
const dir = await Deno.makeTempDir({ prefix: "slirp-bench-" });
// passt drops root privileges to nobody and must be able to create its socket here
await Deno.chmod(dir, 0o777);
const RUNS = Math.max(1, Number(flags.runs));
const rows: Row[] = [];
const failed: string[] = [];
for (let round = 0; round < RUNS; round++) {
  for (const mtu of mtus) {
    for (const t of targets) {
      // a backend that dies mid-run (the libslirp driver at MTU 65520 does) costs its row, not the table
      try {
        const row = await measure(t, mtu, dir);
        rows.push(row);
        console.error(JSON.stringify(row));
      } catch (e) {
        failed.push(`${t} at MTU ${mtu}${RUNS > 1 ? `, round ${round + 1}` : ""}: ${(e as Error).message}`);
        console.error(`${t} at MTU ${mtu} failed: ${(e as Error).message}`);
      }
    }
  }
}
const fmt = (x: number | undefined, d = 2) => (x === undefined || Number.isNaN(x) ? "-" : x.toFixed(d));
const measured = (values: (number | undefined)[]) =>
  values.filter((x): x is number => x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
/** One figure over the rounds: the value of a single round, else the median and the range. */
function figure(values: (number | undefined)[], d = 2): string {
  const xs = measured(values);
  if (xs.length <= 1) return fmt(xs[0], d);
  return `${fmt(xs[xs.length >> 1], d)} (${fmt(xs[0], d)}–${fmt(xs[xs.length - 1], d)})`;
}
/** The median alone (for the figures in parentheses). */
function median(values: (number | undefined)[], d = 2): string {
  const xs = measured(values);
  return fmt(xs[xs.length >> 1], d);
}
const lines = [
  "| target | MTU | guest→host Gbit/s (retr) | host→guest Gbit/s (retr) | CPU s/GB up / down | ping ms | UDP RR p50 µs | seq. conn/s (CPU ms each) |",
  "| --- | --- | --- | --- | --- | --- | --- | --- |",
];
const groups = new Map<string, Row[]>();
for (const r of rows) {
  const key = `${r.target} ${r.mtu}`;
  if (!groups.has(key)) groups.set(key, []);
  groups.get(key)!.push(r);
}
for (const g of groups.values()) {
  const of = (k: keyof Row) => g.map((r) => r[k] as number | undefined);
  const cpuMs = median(of("seqConnCpuMs"));
  lines.push(
    `| ${g[0].target}${g.length < RUNS ? ` (${g.length} of ${RUNS} rounds)` : ""} | ${g[0].mtu} | ${
      figure(of("up"))
    } (${median(of("upRetr"), 0)}) | ${figure(of("down"))} (${median(of("downRetr"), 0)}) | ${
      figure(of("upCpuPerGB"))
    } / ${figure(of("downCpuPerGB"))} | ${figure(of("pingMs"), 3)} | ${figure(of("udpP50us"), 0)} | ${
      figure(of("seqConnPerSecond"), 0)
    }${cpuMs === "-" ? "" : ` (${cpuMs})`} |`,
  );
}
console.log(
  `e2e TCP benchmark, ${
    new Date().toISOString()
  }, ${Deno.build.os} ${Deno.build.arch}, ${navigator.hardwareConcurrency} cores, iperf3 -t ${SECONDS}, ${WARM_UP} warm-up operations per latency probe${
    RUNS > 1 ? `, ${RUNS} interleaved rounds: median (range)` : ""
  }`,
);
console.log(lines.join("\n"));
if (flags.timeline) {
  // each target's last timeline: its steps, and its median µs per step
  console.log("\nA sequential connection seen from the guest: median µs since the step before");
  for (const g of groups.values()) {
    const t = g.findLast((r) => r.timeline)?.timeline;
    if (!t) continue;
    console.log(
      `${g[0].target}: ${t.typical} of ${t.connections} connections alike, SYN to SYN ${
        t.synToSynUs.toFixed(0)
      } µs`,
    );
    console.log(`  ${t.steps.map((s) => `${s.step} ${s.medianUs.toFixed(0)}`).join(" · ")}`);
  }
}
if (flags.inside) {
  // each target's last recording
  console.log("\nInside each backend (its last round): median (p90) µs from a wake-up to its first write");
  const us = (
    f?: WakeFigures,
  ) => (f ? `${f.toFirstWriteUs.toFixed(0)} (${f.p90Us.toFixed(0)}), ${f.wakes} wake-ups` : "-");
  const split = (c: CpuSplit) =>
    `${(c.userUs + c.syscallUs).toFixed(0)} µs on the CPU: ${c.syscallUs.toFixed(0)} in ${
      c.calls.toFixed(1)
    } system calls, ${c.userUs.toFixed(0)} between them`;
  for (const g of groups.values()) {
    const inside = g.findLast((r) => r.inside)?.inside;
    if (inside) console.log(`${g[0].target}: ping ${us(inside.ping)} · UDP round trip ${us(inside.udp)}`);
  }
  console.log(
    "\nInside each backend's busiest thread (its last round): CPU time per UDP round trip, per connection",
  );
  for (const g of groups.values()) {
    const inside = g.findLast((r) => r.inside)?.inside;
    if (inside) {
      console.log(
        `${g[0].target}: UDP round trip ${split(inside.udp.cpu)} · connection ${split(inside.seq)}`,
      );
    }
  }
}
for (const f of failed) console.log(`failed: ${f}`);
if (flags["cpu-prof"]) console.log(`CPU profiles in ${dir}`);
else await Deno.remove(dir, { recursive: true }).catch(() => {});
await run(["true"]);
