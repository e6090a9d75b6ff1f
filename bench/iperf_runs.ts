/**
 * Repeated iperf3 runs through one relay (not a test): for A/B comparisons on a machine whose speed drifts,
 * run two builds alternately and compare the spreads. A netns Linux guest behind the C TAP bridge runs
 * iperf3 against `iperf3 -s` on 127.0.0.1; prints each run's Gbit/s and the relay's CPU-seconds per GB
 * (utime+stime of its process, from /proc/PID/stat).
 *
 *   deno run -A bench/iperf_runs.ts up|down [--mtu 1500] [--runs 3] [--seconds 3] [--rate 800M] [--udp]
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
    /** UDP datagrams at --rate (iperf3 -u) instead of TCP; prints the loss as well. */
    udp: { type: "boolean", default: false },
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
      ...(flags.udp ? ["-u", "-b", flags.rate ?? "100M"] : flags.rate ? ["-b", flags.rate] : []),
      ...(down ? ["-R"] : []),
    ]);
    const j = JSON.parse(r.stdout).end;
    // UDP: what the receiver counted (iperf3 reports it in `sum`, with the datagrams lost)
    const end = flags.udp ? j.sum : j.sum_received;
    const received = flags.udp ? end.bytes * (1 - end.lost_percent / 100) : end.bytes;
    runs.push(
      `${(end.bits_per_second * received / end.bytes / 1e9).toFixed(2)} Gbit/s ${
        ((cpuOf(rig.relay.pid) - before) / (received / 1e9)).toFixed(2)
      } CPU-s/GB${flags.udp ? ` ${end.lost_percent.toFixed(2)} % lost` : ""}`,
    );
  }
  console.log(
    `${down ? "host→guest" : "guest→host"}${flags.udp ? " UDP" : ""} MTU ${flags.mtu}: ${runs.join(" | ")}`,
  );
} finally {
  await rig.close();
}
