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
 *   deno run -A bench/e2e_tcp.ts [--seconds 5] [--only slirp-relay|passt] [--cpu-prof]
 */
import net from "node:net";
import { parseArgs } from "node:util";
import { NetnsGuest, run, which } from "../tests/_netns_guest.ts";
import { spawnRelay, waitForSocket } from "./_harness.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "5" },
    only: { type: "string" },
    "cpu-prof": { type: "boolean", default: false },
    mtus: { type: "string", default: "1500,65520" },
  },
});
const SECONDS = Number(flags.seconds);
const TOOL = new URL("../tests/guest_tools/tcp_tool.ts", import.meta.url).pathname;

interface Row {
  target: string;
  mtu: number;
  up: number;
  down: number;
  cps?: number;
  rrP50?: number;
  rrP99?: number;
}

async function startTarget(
  target: string,
  mtu: number,
  sock: string,
  profDir: string,
): Promise<Deno.ChildProcess> {
  await Deno.remove(sock).catch(() => {});
  let child: Deno.ChildProcess;
  if (target === "slirp-relay") {
    child = spawnRelay([
      "--listen-qemu",
      `unix://${sock}`,
      "--mtu",
      String(mtu),
      "--dns-upstream",
      "127.0.0.1:9",
    ], {
      cpuProfDir: flags["cpu-prof"] ? profDir : undefined,
    });
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

async function iperf(guest: NetnsGuest, gw: string, port: number, reverse: boolean): Promise<number> {
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
  const j = JSON.parse(r.stdout);
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  return j.end.sum_received.bits_per_second / 1e9;
}

async function tool(guest: NetnsGuest, args: string[]): Promise<Record<string, number>> {
  const r = await guest.exec([Deno.execPath(), "run", "-A", "--quiet", TOOL, ...args], {
    timeoutMs: 120_000,
  });
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

function server(handler: (s: net.Socket) => void): Promise<{ port: number; close(): void }> {
  const srv = net.createServer(handler);
  return new Promise((resolve) =>
    srv.listen(
      0,
      "127.0.0.1",
      () => resolve({ port: (srv.address() as net.AddressInfo).port, close: () => srv.close() }),
    )
  );
}

async function measure(target: string, mtu: number, dir: string): Promise<Row> {
  const sock = `${dir}/${target}.sock`;
  const child = await startTarget(target, mtu, sock, dir);
  const iperfPort = 5201 + Math.floor(Math.random() * 1000);
  const iperfd = new Deno.Command("iperf3", {
    args: ["-s", "-B", "127.0.0.1", "-p", String(iperfPort)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const closer = await server((s) => {
    s.on("error", () => {});
    s.on("end", () => s.end());
    s.resume();
  });
  const echo = await server((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  const guest = await NetnsGuest.create(`unix://${sock}`, { separateProcess: true });
  try {
    const lease = await guest.dhcp();
    const gw = lease.router.split(" ")[0];
    await new Promise((r) => setTimeout(r, 300));
    const up = await iperf(guest, gw, iperfPort, false);
    const down = await iperf(guest, gw, iperfPort, true);
    const row: Row = { target, mtu, up, down };
    if (mtu === 1500) {
      row.cps = (await tool(guest, ["cps", gw, String(closer.port), String(SECONDS), "16"])).perSecond;
      const rr = await tool(guest, ["rr", gw, String(echo.port), "3000"]);
      row.rrP50 = rr.p50us;
      row.rrP99 = rr.p99us;
    }
    return row;
  } finally {
    await guest.close();
    iperfd.kill();
    await iperfd.status;
    closer.close();
    echo.close();
    child.kill("SIGTERM");
    await child.status;
  }
}

if (Deno.uid() !== 0 || !which("iperf3")) {
  console.error("bench/e2e_tcp.ts needs root and iperf3 (apt-get install iperf3 passt busybox-static)");
  Deno.exit(2);
}
const targets = flags.only ? [flags.only] : which("passt") ? ["slirp-relay", "passt"] : ["slirp-relay"];
const mtus = flags.mtus!.split(",").map(Number);
const dir = await Deno.makeTempDir({ prefix: "slirp-bench-" });
// passt drops root privileges to nobody and must be able to create its socket here
await Deno.chmod(dir, 0o777);
const rows: Row[] = [];
for (const mtu of mtus) {
  for (const t of targets) {
    const row = await measure(t, mtu, dir);
    rows.push(row);
    console.error(JSON.stringify(row));
  }
}
const fmt = (x: number | undefined, d = 2) => (x === undefined ? "-" : x.toFixed(d));
const lines = [
  `| target | MTU | guest→host Gbit/s | host→guest Gbit/s | connections/s | RR p50 µs | RR p99 µs |`,
  `| --- | --- | --- | --- | --- | --- | --- |`,
];
for (const r of rows) {
  lines.push(
    `| ${r.target} | ${r.mtu} | ${fmt(r.up)} | ${fmt(r.down)} | ${fmt(r.cps, 0)} | ${fmt(r.rrP50, 0)} | ${
      fmt(r.rrP99, 0)
    } |`,
  );
}
for (const mtu of mtus) {
  const ours = rows.find((r) => r.target === "slirp-relay" && r.mtu === mtu);
  const passt = rows.find((r) => r.target === "passt" && r.mtu === mtu);
  if (ours && passt) {
    lines.push(
      `| ours/passt | ${mtu} | ${fmt(ours.up / passt.up)} | ${fmt(ours.down / passt.down)} | ${
        ours.cps && passt.cps ? fmt(ours.cps / passt.cps) : "-"
      } | ${ours.rrP50 && passt.rrP50 ? fmt(ours.rrP50 / passt.rrP50) : "-"} | ${
        ours.rrP99 && passt.rrP99 ? fmt(ours.rrP99 / passt.rrP99) : "-"
      } |`,
    );
  }
}
console.log(
  `e2e TCP benchmark, ${
    new Date().toISOString()
  }, ${Deno.build.os} ${Deno.build.arch}, ${navigator.hardwareConcurrency} cores, iperf3 -t ${SECONDS}`,
);
console.log(lines.join("\n"));
if (flags["cpu-prof"]) console.log(`CPU profiles in ${dir}`);
else await Deno.remove(dir, { recursive: true }).catch(() => {});
await run(["true"]);
