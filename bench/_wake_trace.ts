/**
 * How long a backend takes to answer once the kernel has woken it, seen from inside its process: its system
 * calls are recorded (`perf record -e raw_syscalls:*`, tracepoints: no PMU needed) while a probe runs, and for
 * every wake-up — a wait call (epoll_wait, poll …) returning events — the time until its first write (send,
 * sendto, sendmsg, writev …). A ping to the gateway is one wake-up and one write; a UDP round trip two
 * (guest→host, host→guest). The guest's and the bridge's share of a round trip is not in it: two backends'
 * figures side by side are their own difference (`bench/e2e_tcp.ts --inside`).
 *
 * The same recording with the scheduler's switch-outs splits a thread's CPU time during a run of sequential
 * connections into time inside system calls (the kernel's work: the same calls cost the same in any backend)
 * and time between them (the backend's own code), per connection ({@linkcode traceCpuSplit}).
 *
 * @module
 */
import { quantile } from "./_harness.ts";

// x86-64 system call numbers
const WAITS = new Set([7, 23, 232, 270, 271, 281, 441]); // poll select epoll_wait pselect6 ppoll epoll_pwait(2)
const WRITES = new Set([1, 20, 44, 46, 307]); // write writev sendto sendmsg sendmmsg

/** Per wake-up figures of the thread that wrote most (a relay's data-plane worker, passt's only thread). */
export interface WakeFigures {
  /** Wake-ups that wrote before waiting again. */
  wakes: number;
  /** Median µs from the wait's return to the first write. */
  toFirstWriteUs: number;
  p90Us: number;
}

/** `perf script -F tid,time,event,trace` lines: `tid time: raw_syscalls:sys_enter: NR n (…)` / `… sys_exit: NR n = r`. */
const LINE = /^\s*(\d+)\s+(\d+\.\d+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+)(?: = (-?\d+))?/;

/** The wake-up figures in a `perf script` text of raw_syscalls events. */
export function wakeFigures(text: string): WakeFigures {
  const byThread = new Map<number, { wokeAt: number; wrote: boolean; delays: number[] }>();
  for (const line of text.split("\n")) {
    const m = LINE.exec(line);
    if (!m) continue;
    const tid = Number(m[1]), at = Number(m[2]) * 1e6, nr = Number(m[4]);
    let t = byThread.get(tid);
    if (!t) byThread.set(tid, t = { wokeAt: -1, wrote: false, delays: [] });
    if (m[3] === "exit") {
      if (WAITS.has(nr) && Number(m[5]) > 0) (t.wokeAt = at), (t.wrote = false);
    } else if (WAITS.has(nr)) {
      t.wokeAt = -1;
    } else if (WRITES.has(nr) && t.wokeAt >= 0 && !t.wrote) {
      t.wrote = true;
      t.delays.push(at - t.wokeAt);
    }
  }
  const busiest = [...byThread.values()].reduce((a, b) => (b.delays.length > a.delays.length ? b : a), {
    delays: [] as number[],
  });
  // nothing recorded (perf did not attach in time): no figures rather than undefined ones
  const n = busiest.delays.length;
  return {
    wakes: n,
    toFirstWriteUs: n ? quantile(busiest.delays, 0.5) : NaN,
    p90Us: n ? quantile(busiest.delays, 0.9) : NaN,
  };
}

/** Where the busiest thread's CPU time went, per unit of work (a connection): µs on the CPU in all. */
export interface CpuSplit {
  /** µs per unit inside system calls, on the CPU (a call's time asleep is not in it). */
  syscallUs: number;
  /** µs per unit between system calls: the backend's own code (and the calls' entry and exit). */
  userUs: number;
  /** System calls per unit. */
  calls: number;
}

/** `perf script -F tid,time,event,trace` lines of the scheduler's switches: `tid time: sched:sched_switch: …`. */
const SWITCH = /^\s*(\d+)\s+(\d+\.\d+):\s+sched:sched_switch:/;

/**
 * The CPU split of the thread that made most system calls, over `units` units of work, from a `perf script`
 * text of raw_syscalls and sched_switch events recorded for its process. A switch-out (the thread blocked or
 * was preempted) ends its time on the CPU; its next event starts it again — a call's time asleep and a
 * preempted thread's wait count nowhere.
 */
export function cpuSplit(text: string, units: number): CpuSplit {
  const threads = new Map<
    number,
    { last: number; inCall: boolean; off: boolean; sys: number; user: number; calls: number }
  >();
  for (const line of text.split("\n")) {
    const sw = SWITCH.exec(line);
    const m = sw ? null : LINE.exec(line);
    if (!sw && !m) continue;
    const tid = Number((sw ?? m)![1]), at = Number((sw ?? m)![2]) * 1e6;
    let t = threads.get(tid);
    if (!t) threads.set(tid, t = { last: -1, inCall: false, off: true, sys: 0, user: 0, calls: 0 });
    // the time since the thread's last event, when it was on the CPU all along, is the kernel's inside a call
    // and its own between calls
    if (!t.off && t.last >= 0) {
      if (t.inCall) t.sys += at - t.last;
      else t.user += at - t.last;
    }
    t.last = at;
    if (sw) {
      t.off = true;
      continue;
    }
    t.off = false;
    t.inCall = m![3] === "enter";
    if (t.inCall) t.calls++;
  }
  const busiest = [...threads.values()].reduce((a, b) => (b.calls > a.calls ? b : a), {
    sys: 0,
    user: 0,
    calls: 0,
  });
  return { syscallUs: busiest.sys / units, userUs: busiest.user / units, calls: busiest.calls / units };
}

/** Records `pid`'s system calls (and `more` events) while `work` runs; returns the `perf script` text. */
async function recordSyscalls(
  pid: number,
  work: () => Promise<unknown>,
  more: string[] = [],
): Promise<string> {
  const file = await Deno.makeTempFile({ prefix: "slirp-wakes-", suffix: ".data" });
  try {
    const perf = new Deno.Command("perf", {
      args: [
        "record",
        "-q",
        "-e",
        ["raw_syscalls:sys_enter", "raw_syscalls:sys_exit", ...more].join(","),
        "-p",
        String(pid),
        "-o",
        file,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    await new Promise((r) => setTimeout(r, 500)); // perf attaches
    try {
      await work();
    } finally {
      perf.kill("SIGINT");
      await perf.status;
    }
    const script = await new Deno.Command("perf", {
      args: ["script", "-i", file, "-F", "tid,time,event,trace"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(script.stdout);
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}

/** Records `pid`'s system calls while `work` runs, then its wake-up figures. */
export async function traceWakes(pid: number, work: () => Promise<unknown>): Promise<WakeFigures> {
  return wakeFigures(await recordSyscalls(pid, work));
}

/**
 * Records `pid`'s system calls and switches while `work` runs `units` units of work (round trips,
 * connections): its wake-up figures and its CPU split per unit.
 */
export async function traceInside(
  pid: number,
  units: number,
  work: () => Promise<unknown>,
): Promise<WakeFigures & { cpu: CpuSplit }> {
  const text = await recordSyscalls(pid, work, ["sched:sched_switch"]);
  return { ...wakeFigures(text), cpu: cpuSplit(text, units) };
}
