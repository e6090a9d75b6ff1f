/**
 * Where a bulk transfer's CPU goes on the whole machine (not a test): one backend — the relay or passt — and a
 * netns Linux guest behind the C TAP bridge run iperf3 against `iperf3 -s` on 127.0.0.1, and for each run this
 * prints the machine's CPU-seconds per GB moved from /proc/stat (user, system, softirq, and idle: time no one
 * used), the backend's and the iperf3 server's own, and the guest's TCP segments in and out per GB. Idle time
 * while a transfer runs flat out means some stage waited on another (a buffer too small for a wake-up), not
 * that CPU ran short.
 *
 *   deno run -A bench/machine_share.ts relay|passt up|down [--mtu 1500] [--runs 2] [--seconds 4]
 *
 * passt copies this machine's address and gateway into the guest and maps that gateway to loopback for TCP;
 * it runs with --no-dhcp-dns --no-dhcp-search -4 and is only sent TCP to the gateway.
 */
import { parseArgs } from "node:util";
import { cpuOf, cTapBridge, spawnRelay, waitForSocket } from "./_harness.ts";
import { NetnsGuest } from "../tests/_netns_guest.ts";

const { values: flags, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    mtu: { type: "string", default: "1500" },
    runs: { type: "string", default: "2" },
    seconds: { type: "string", default: "4" },
  },
});
const [backend = "relay", direction = "up"] = positionals;
if (!["relay", "passt"].includes(backend) || !["up", "down"].includes(direction)) {
  console.error(
    "usage: deno run -A bench/machine_share.ts relay|passt up|down [--mtu N] [--runs N] [--seconds N]",
  );
  Deno.exit(2);
}

/** The machine's CPU time so far, in seconds, by kind (/proc/stat's first line). */
function machineCpu(): { user: number; system: number; softirq: number; idle: number; busy: number } {
  const f = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, _iowait, irq, softirq] = f.map((v) => v / 100);
  return { user: user + nice, system, softirq, idle, busy: user + nice + system + irq + softirq };
}

const dir = await Deno.makeTempDir();
await Deno.chmod(dir, 0o777);
const sock = `${dir}/backend.sock`;
const child = backend === "passt"
  ? new Deno.Command("passt", {
    args: ["-f", "-s", sock, "-m", flags.mtu, "--no-dhcp-dns", "--no-dhcp-search", "-4"],
    stdout: "null",
    stderr: "null",
  }).spawn()
  : spawnRelay(["--listen-qemu", `unix://${sock}`, "--mtu", flags.mtu, "--dns-upstream", "127.0.0.1:9"]);
await waitForSocket(sock);
const port = 5900 + Math.floor(Math.random() * 90);
const iperfd = new Deno.Command("iperf3", {
  args: ["-s", "-B", "127.0.0.1", "-p", String(port)],
  stdout: "null",
  stderr: "null",
}).spawn();
const guest = await NetnsGuest.create(`unix://${sock}`, { bridgeCommand: await cTapBridge() });
try {
  const gateway = (await guest.dhcp()).router.split(" ")[0];
  await new Promise((r) => setTimeout(r, 300));
  /** The guest's TCP segment counters (its own /proc/net/snmp). */
  const guestSegments = async () => {
    const snmp = (await guest.exec(["cat", "/proc/net/snmp"])).stdout.split("\n").filter((l) =>
      l.startsWith("Tcp:")
    );
    const names = snmp[0].split(/\s+/), values = snmp[1].split(/\s+/).map(Number);
    return { in: values[names.indexOf("InSegs")], out: values[names.indexOf("OutSegs")] };
  };
  for (let i = 0; i < Number(flags.runs); i++) {
    const m0 = machineCpu(), b0 = cpuOf(child.pid), s0 = cpuOf(iperfd.pid), g0 = await guestSegments();
    const r = await guest.exec([
      ...["iperf3", "-c", gateway, "-p", String(port), "-t", flags.seconds, "-J"],
      ...(direction === "down" ? ["-R"] : []),
    ]);
    const m1 = machineCpu(), b1 = cpuOf(child.pid), s1 = cpuOf(iperfd.pid), g1 = await guestSegments();
    const end = JSON.parse(r.stdout).end;
    const gb = end.sum_received.bytes / 1e9;
    const perGb = (a: number, b: number) => ((b - a) / gb).toFixed(2);
    console.log(
      `${backend} ${direction} MTU ${flags.mtu}: ${
        (end.sum_received.bits_per_second / 1e9).toFixed(2)
      } Gbit/s; ` +
        `machine CPU-s/GB busy ${perGb(m0.busy, m1.busy)} (user ${perGb(m0.user, m1.user)}, system ${
          perGb(m0.system, m1.system)
        }, softirq ${perGb(m0.softirq, m1.softirq)}), idle ${perGb(m0.idle, m1.idle)}; ` +
        `${backend} ${perGb(b0, b1)}, iperf3 server ${perGb(s0, s1)}; guest TCP segments per GB in ${
          ((g1.in - g0.in) / gb).toFixed(0)
        } out ${((g1.out - g0.out) / gb).toFixed(0)}`,
    );
  }
} finally {
  await guest.close();
  iperfd.kill();
  child.kill("SIGTERM");
  await child.status;
  await iperfd.status;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
