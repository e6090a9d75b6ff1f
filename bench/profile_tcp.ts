/**
 * Profiles the relay under one iperf3 run (not a test): the relay runs as its own process with
 * `--cpu-prof`, a netns guest behind the TAP bridge runs iperf3 against `iperf3 -s` on 127.0.0.1.
 *
 *   deno run -A bench/profile_tcp.ts up|down [MTU]     → profile in /tmp/slirp-prof/*.cpuprofile
 *   deno run -A bench/profile_tcp.ts seq               → the same under sequential connections instead
 *                                                        (SLIRP_SEQ_CONNECTIONS of them, 4000 unless told)
 *                                                        (probe.py seq-conn: connect, 1 byte each way, close)
 *
 * Summarise with Chrome DevTools or any .cpuprofile viewer (self time by function). `SLIRP_PROFILE=perf`
 * records every thread with `perf record -g` instead (bench/perf_builtins.ts names the V8 builtins in it);
 * `SLIRP_PROFILE=stat` prints `perf stat --per-thread` counts for 4 s of the run — system calls, context
 * switches, CPU time, or the events in `SLIRP_PERF_EVENTS` (e.g. `syscalls:sys_enter_sendto,…`).
 * `SLIRP_PROFILE_AFTER_MS` starts either recording that long into the workload (past warm-up and tier-up).
 */
import { iperfRig, probeServer } from "./_harness.ts";

const direction = Deno.args[0] === "down" || Deno.args[0] === "seq" ? Deno.args[0] : "up";
const mtu = Deno.args[1] ?? "1500";
const profDir = "/tmp/slirp-prof";
await Deno.mkdir(profDir, { recursive: true });
const rig = await iperfRig(["--mtu", mtu], {
  cpuProfDir: Deno.env.get("SLIRP_PROFILE") ? undefined : profDir,
});
const relay = rig.relay;

/** The workload under the recording: sequential connections or one iperf3 run. */
async function run(): Promise<void> {
  if (direction === "seq") {
    const answer = await probeServer("tcp-answer-server", "127.0.0.1");
    const probe = new URL("./probe.py", import.meta.url).pathname;
    const r = await rig.guest.exec([
      "python3",
      probe,
      "seq-conn",
      "10.0.2.2",
      String(answer.port),
      Deno.env.get("SLIRP_SEQ_CONNECTIONS") ?? "4000",
    ], {
      timeoutMs: 120_000,
    });
    console.log(r.stdout.trim());
    answer.child.kill();
    await answer.child.status;
  } else {
    const r = await rig.iperf(5, direction === "down" ? ["-R"] : []);
    console.log(r.stdout.split("\n").filter((l) => /sender|receiver/.test(l)).join("\n"));
  }
}
try {
  const workload = run();
  // SLIRP_PROFILE_AFTER_MS: the recording starts this long into the workload (past warm-up and tier-up)
  await new Promise((r) => setTimeout(r, Number(Deno.env.get("SLIRP_PROFILE_AFTER_MS") ?? 0)));
  // SLIRP_PROFILE=perf: `perf record -g` of the relay process (every thread, kernel included) instead
  const perf = Deno.env.get("SLIRP_PROFILE") === "perf"
    ? new Deno.Command("perf", {
      args: ["record", "-g", "-o", `${profDir}/perf.data`, "-p", String(relay.pid), "--", "sleep", "4"],
      stdout: "null",
      stderr: "null",
    }).spawn()
    : null;
  // SLIRP_PROFILE=stat: system calls, context switches and CPU time per thread (`perf stat --per-thread`)
  const stat = Deno.env.get("SLIRP_PROFILE") === "stat"
    ? new Deno.Command("perf", {
      args: [
        "stat",
        "--per-thread",
        "-e",
        Deno.env.get("SLIRP_PERF_EVENTS") ?? "raw_syscalls:sys_enter,context-switches,task-clock",
        "-p",
        String(relay.pid),
        "--",
        "sleep",
        "4",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn()
    : null;
  await workload;
  await perf?.status;
  if (stat) console.log(new TextDecoder().decode((await stat.output()).stderr));
} finally {
  await rig.close();
}
console.log(`profile written to ${profDir}`);
