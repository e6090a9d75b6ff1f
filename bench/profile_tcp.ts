/**
 * Profiles the relay under one iperf3 run (not a test): the relay runs as its own process with
 * `--cpu-prof`, a netns guest behind the TAP bridge runs iperf3 against `iperf3 -s` on 127.0.0.1.
 *
 *   deno run -A bench/profile_tcp.ts up|down [MTU]     → profile in /tmp/slirp-prof/*.cpuprofile
 *
 * Summarise with Chrome DevTools or any .cpuprofile viewer (self time by function).
 */
import { iperfRig } from "./_harness.ts";

const direction = Deno.args[0] === "down" ? "down" : "up";
const mtu = Deno.args[1] ?? "1500";
const profDir = "/tmp/slirp-prof";
await Deno.mkdir(profDir, { recursive: true });
const rig = await iperfRig(["--mtu", mtu], {
  cpuProfDir: Deno.env.get("SLIRP_PROFILE") === "perf" ? undefined : profDir,
});
const relay = rig.relay;
try {
  // SLIRP_PROFILE=perf: `perf record -g` of the relay process (every thread, kernel included) instead
  const perf = Deno.env.get("SLIRP_PROFILE") === "perf"
    ? new Deno.Command("perf", {
      args: ["record", "-g", "-o", `${profDir}/perf.data`, "-p", String(relay.pid), "--", "sleep", "4"],
      stdout: "null",
      stderr: "null",
    }).spawn()
    : null;
  const r = await rig.iperf(5, direction === "down" ? ["-R"] : []);
  console.log(r.stdout.split("\n").filter((l) => /sender|receiver/.test(l)).join("\n"));
  await perf?.status;
} finally {
  await rig.close();
}
console.log(`profile written to ${profDir}`);
