/**
 * Where a sequential connection's time goes, seen from the guest: `tcpdump` in the guest's namespace while
 * probe.py's `seq-conn` runs, then for each step of a connection (SYN, SYN-ACK, ACK, request, answer, FIN …)
 * the median time since the step before it. Two backends' timelines side by side say which step of theirs is
 * slower — the backend's share of a step is its time between the guest's frame and its answer
 * (`bench/e2e_tcp.ts --timeline`).
 *
 * @module
 */
import { quantile } from "./_harness.ts";

/** One packet on the guest's interface, as `tcpdump -tt -nn` prints it. */
interface Packet {
  at: number;
  /** tcpdump's flag letters without the dots (S, S., ., P., F. …), then `+N` when it carries N bytes. */
  step: string;
  guestPort: number;
}

/** Time, source port, destination port, flags, payload length. */
const LINE = /^(\d+\.\d+) .*IP6? \S+\.(\d+) > \S+\.(\d+): Flags \[([^\]]*)\].* length (\d+)/;

/** The packets to and from `serverPort` in `tcpdump -tt -nn` text output. */
function parse(text: string, serverPort: number): Packet[] {
  const out: Packet[] = [];
  for (const line of text.split("\n")) {
    const m = LINE.exec(line);
    if (!m) continue;
    const src = Number(m[2]), dst = Number(m[3]);
    if (src !== serverPort && dst !== serverPort) continue;
    const fromGuest = dst === serverPort;
    const len = Number(m[5]);
    out.push({
      at: Number(m[1]),
      step: `${fromGuest ? "guest" : "backend"} ${m[4].replaceAll(".", "A")}${len > 0 ? `+${len}` : ""}`,
      guestPort: fromGuest ? src : dst,
    });
  }
  return out;
}

/** A connection's steps: the commonest sequence, and each step's median µs since the one before. */
export interface Timeline {
  connections: number;
  /** Connections whose packets followed the commonest sequence (only those are timed). */
  typical: number;
  steps: { step: string; medianUs: number }[];
  /** Median µs from one connection's SYN to the next one's. */
  synToSynUs: number;
}

const median = (xs: number[]) => (xs.length === 0 ? NaN : quantile(xs, 0.5));

/** The timeline of the connections to `serverPort` in a `tcpdump -tt -nn` capture. */
export function connectionTimeline(tcpdumpText: string, serverPort: number): Timeline {
  const byConn = Map.groupBy(parse(tcpdumpText, serverPort), (p) => p.guestPort);
  // only connections seen from their SYN on (the capture starts and ends mid-stream)
  const conns = [...byConn.values()].filter((ps) => ps[0].step === "guest S");
  const shapes = Map.groupBy(conns, (ps) => ps.map((p) => p.step).join(","));
  const typical = [...shapes.values()].sort((a, b) => b.length - a.length)[0] ?? [];
  const steps = (typical[0] ?? []).map((p, i) => ({
    step: p.step,
    medianUs: i === 0 ? 0 : median(typical.map((ps) => (ps[i].at - ps[i - 1].at) * 1e6)),
  }));
  const starts = conns.map((ps) => ps[0].at).sort((a, b) => a - b);
  return {
    connections: conns.length,
    typical: typical.length,
    steps,
    synToSynUs: median(starts.slice(1).map((t, i) => (t - starts[i]) * 1e6)),
  };
}
