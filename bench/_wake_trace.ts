/**
 * How long a backend takes to answer once the kernel has woken it, seen from inside its process: its system
 * calls are recorded (`perf record -e raw_syscalls:*`, tracepoints: no PMU needed) while a probe runs, and for
 * every wake-up — a wait call (epoll_wait, poll …) returning events — the time until its first write (send,
 * sendto, sendmsg, writev …). A ping to the gateway is one wake-up and one write; a UDP round trip two
 * (guest→host, host→guest). The guest's and the bridge's share of a round trip is not in it: two backends'
 * figures side by side are their own difference (`bench/e2e_tcp.ts --inside`).
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

/** Records `pid`'s system calls while `work` runs, then its wake-up figures. */
export async function traceWakes(pid: number, work: () => Promise<unknown>): Promise<WakeFigures> {
  const file = await Deno.makeTempFile({ prefix: "slirp-wakes-", suffix: ".data" });
  try {
    const perf = new Deno.Command("perf", {
      args: [
        "record",
        "-q",
        "-e",
        "raw_syscalls:sys_enter,raw_syscalls:sys_exit",
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
    return wakeFigures(new TextDecoder().decode(script.stdout));
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}
