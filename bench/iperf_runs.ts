/**
 * Repeated iperf3 runs through one relay (not a test): for A/B comparisons on a machine whose speed drifts,
 * run two builds alternately and compare the spreads. A netns Linux guest behind the C TAP bridge runs
 * iperf3 against `iperf3 -s` on 127.0.0.1; prints each run's Gbit/s and the relay's CPU-seconds per GB
 * (utime+stime of its process, from /proc/PID/stat).
 *
 *   deno run -A bench/iperf_runs.ts up|down [--mtu 1500] [--runs 3] [--seconds 3] [--rate 800M]
 *
 * `--rate` caps iperf3's send rate: CPU per GB at a fixed rate is steadier than the peak on a busy host.
 */
import { parseArgs } from "node:util";
import { cpuOf, iperfRig } from "./_harness.ts";

const { values: flags, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    mtu: { type: "string", default: "1500" },
    runs: { type: "string", default: "3" },
    seconds: { type: "string", default: "3" },
    rate: { type: "string" },
  },
});
const down = positionals[0] === "down";
const rig = await iperfRig(["--mtu", flags.mtu]);
try {
  const runs: string[] = [];
  for (let i = 0; i < Number(flags.runs); i++) {
    const before = cpuOf(rig.relay.pid);
    const r = await rig.iperf(flags.seconds, [
      "-J",
      ...(flags.rate ? ["-b", flags.rate] : []),
      ...(down ? ["-R"] : []),
    ]);
    const end = JSON.parse(r.stdout).end.sum_received;
    runs.push(
      `${(end.bits_per_second / 1e9).toFixed(2)} Gbit/s ${
        ((cpuOf(rig.relay.pid) - before) / (end.bytes / 1e9)).toFixed(2)
      } CPU-s/GB`,
    );
  }
  console.log(`${down ? "host→guest" : "guest→host"} MTU ${flags.mtu}: ${runs.join(" | ")}`);
} finally {
  await rig.close();
}
