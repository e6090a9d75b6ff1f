/**
 * Prometheus text exposition (format 0.0.4) of the relay and every tenant.
 * @module
 */
import type { Counters } from "../stack/counters.ts";
import type { RelayView } from "./relay_view.ts";
import { uncaught } from "./last_resort.ts";
import { platform } from "../platform/current.ts";

function esc(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

export function renderMetrics(r: RelayView): string {
  const out: string[] = [];
  const family = (
    name: string,
    type: "counter" | "gauge",
    help: string,
    samples: [Record<string, string>, number][],
  ) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) {
      // every series names its relay, so that one Prometheus scrapes a fleet
      const l = [`relay="${esc(r.instance)}"`, ...Object.entries(labels).map(([k, x]) => `${k}="${esc(x)}"`)]
        .join(",");
      out.push(`${name}${l ? `{${l}}` : ""} ${Number.isFinite(v) ? v : 0}`);
    }
  };
  const tenants = [...r.tenants.values()];
  family("slirp_tenants", "gauge", "Tenants that exist.", [[{}, tenants.length]]);
  family("slirp_guests_connected", "gauge", "Tenants with a connected guest (frames or Wisp).", [[
    {},
    tenants.filter((t) => t.hasGuest).length,
  ]]);
  family("slirp_relay_flows", "gauge", "TCP and UDP flows open across every tenant.", [[
    {},
    r.flowLimit.open,
  ]]);
  family("slirp_relay_flows_limit", "gauge", "The relay-wide flow limit (--max-flows; 0 = none).", [[
    {},
    r.flowLimit.max,
  ]]);
  family("slirp_relay_tenants_limit", "gauge", "The relay-wide tenant limit (--max-tenants).", [[
    {},
    r.maxTenants,
  ]]);
  family("slirp_transport_errors_total", "counter", "Guest connections closed for protocol errors.", [[
    {},
    r.transportErrors,
  ]]);
  const per = (f: (t: (typeof tenants)[number]) => number) =>
    tenants.map((t) => [{ tenant: t.id }, f(t)] as [Record<string, string>, number]);
  const dir = (fin: (t: (typeof tenants)[number]) => number, fout: (t: (typeof tenants)[number]) => number) =>
    tenants.flatMap((t) =>
      [[{ tenant: t.id, direction: "from_guest" }, fin(t)], [
        { tenant: t.id, direction: "to_guest" },
        fout(t),
      ]] as [Record<string, string>, number][]
    );
  family(
    "slirp_uncaught_errors_total",
    "counter",
    "Throws and rejections that escaped every tenant's boundary and were contained at the top.",
    [[{ kind: "exception" }, uncaught.errors], [{ kind: "rejection" }, uncaught.rejections]],
  );
  // relay-wide totals: live tenants plus those that have left (single-user mode makes a tenant per guest
  // connection, so the per-tenant series alone lose everything a departed guest did)
  const total = (get: (c: Counters) => number) =>
    tenants.reduce((n, t) => n + get(t.counters), get(r.retiredCounters));
  family("slirp_frames_total", "counter", "Ethernet frames by direction, every tenant ever served.", [
    [{ direction: "from_guest" }, total((c) => c.framesIn)],
    [{ direction: "to_guest" }, total((c) => c.framesOut)],
  ]);
  family("slirp_bytes_total", "counter", "Frame bytes by direction, every tenant ever served.", [
    [{ direction: "from_guest" }, total((c) => c.bytesIn)],
    [{ direction: "to_guest" }, total((c) => c.bytesOut)],
  ]);
  family("slirp_flows_opened_total", "counter", "Flows opened by protocol, every tenant ever served.", [
    [{ protocol: "tcp" }, total((c) => c.tcpFlowsOpened)],
    [{ protocol: "udp" }, total((c) => c.udpFlowsOpened)],
  ]);
  family(
    "slirp_tcp_retransmits_total",
    "counter",
    "TCP segments retransmitted toward guests, every tenant ever served.",
    [[{}, total((c) => c.tcpRetransmits)]],
  );
  family(
    "slirp_tcp_syn_ack_retransmits_total",
    "counter",
    "SYN-ACKs sent again toward guests (a lost handshake, or a guest that does not answer).",
    [[{}, total((c) => c.tcpSynAckRetransmits)]],
  );
  family(
    "slirp_tenant_faults_total",
    "counter",
    "Internal errors contained inside a tenant (each reset one flow or the tenant's stack).",
    per((t) => t.counters.faults),
  );
  family(
    "slirp_tenant_frames_total",
    "counter",
    "Ethernet frames per tenant and direction.",
    dir((t) => t.counters.framesIn, (t) => t.counters.framesOut),
  );
  family(
    "slirp_tenant_bytes_total",
    "counter",
    "Frame bytes per tenant and direction.",
    dir((t) => t.counters.bytesIn, (t) => t.counters.bytesOut),
  );
  family(
    "slirp_tenant_tcp_flows",
    "gauge",
    "Open TCP connections per tenant.",
    per((t) => t.stack?.flowCounts.tcp ?? 0),
  );
  family(
    "slirp_tenant_udp_flows",
    "gauge",
    "Open UDP flows per tenant.",
    per((t) => t.stack?.flowCounts.udp ?? 0),
  );
  family(
    "slirp_tenant_tcp_flows_opened_total",
    "counter",
    "TCP connections opened per tenant.",
    per((t) => t.counters.tcpFlowsOpened),
  );
  family(
    "slirp_tenant_udp_flows_opened_total",
    "counter",
    "UDP flows opened per tenant.",
    per((t) => t.counters.udpFlowsOpened),
  );
  family(
    "slirp_tenant_udp_flows_reclaimed_total",
    "counter",
    "UDP flows a tenant's full table gave up to a new one (the least recently active, quiet for a second).",
    per((t) => t.counters.udpFlowsReclaimed),
  );
  family(
    "slirp_tenant_ipv6_flows_opened_total",
    "counter",
    "Of the flows opened per tenant, those over IPv6, by protocol.",
    tenants.flatMap((t) => [
      [{ tenant: t.id, protocol: "tcp" }, t.counters.tcpFlowsOpened6] as [Record<string, string>, number],
      [{ tenant: t.id, protocol: "udp" }, t.counters.udpFlowsOpened6] as [Record<string, string>, number],
    ]),
  );
  family(
    "slirp_tenant_ipv6_packets_total",
    "counter",
    "IPv6 packets from the guest per tenant (its services' traffic included).",
    per((t) => t.counters.ipv6PacketsIn),
  );
  family(
    "slirp_tenant_tcp_retransmits_total",
    "counter",
    "TCP segments retransmitted toward the guest.",
    per((t) => t.counters.tcpRetransmits),
  );
  family(
    "slirp_tenant_tcp_timeouts_total",
    "counter",
    "TCP retransmission timeouts toward the guest (each one collapses that flow's congestion window).",
    per((t) => t.counters.tcpTimeouts),
  );
  family(
    "slirp_tenant_tcp_spurious_timeouts_total",
    "counter",
    "Of those, timeouts found spurious — by the guest's timestamps (RFC 3522) or by the ACKs after them (F-RTO, RFC 5682): nothing was lost, the window was restored.",
    per((t) => t.counters.tcpSpuriousTimeouts),
  );
  family(
    "slirp_tenant_drops_total",
    "counter",
    "Frames or flows dropped or refused, by reason.",
    tenants.flatMap((t) =>
      [...t.counters.drops].map(([reason, n]) =>
        [{ tenant: t.id, reason }, n] as [Record<string, string>, number]
      )
    ),
  );
  family(
    "slirp_scheduler_lane_frames",
    "gauge",
    "Guest frames waiting in the scheduler per tenant (ring occupancy).",
    per((t) => t.lane?.pending ?? 0),
  );
  family(
    "slirp_tenant_guest_backlog_bytes",
    "gauge",
    "Bytes queued toward the guest per tenant.",
    per((t) => t.link?.backlog ?? 0),
  );
  const mem = platform.memory();
  family("process_resident_memory_bytes", "gauge", "Resident set size.", [[{}, mem.rss]]);
  family("slirp_heap_used_bytes", "gauge", "V8 heap in use.", [[{}, mem.heapUsed]]);
  family("slirp_heap_total_bytes", "gauge", "V8 heap reserved.", [[{}, mem.heapTotal]]);
  family("slirp_external_memory_bytes", "gauge", "Memory outside the V8 heap held by JS objects (buffers).", [
    [
      {},
      mem.external,
    ],
  ]);
  family("process_cpu_seconds_total", "counter", "User and system CPU time of the process.", [[
    {},
    platform.cpuSeconds(),
  ]]);
  const fds = platform.openFds();
  if (fds !== null) family("process_open_fds", "gauge", "Open file descriptors.", [[{}, fds]]);
  family("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.", [[
    {},
    Math.floor(r.startedAt / 1000),
  ]]);
  return out.join("\n") + "\n";
}

/**
 * Families that describe the whole process or the relay-wide limits: every data-plane worker reports the
 * same value, taken once. Every other sample is a worker's share and is summed (tenants live on one
 * worker each, so their samples appear once anyway; heaps are one per worker).
 */
const ONCE = new Set([
  "process_cpu_seconds_total",
  "process_open_fds",
  "process_resident_memory_bytes",
  "process_start_time_seconds",
  "slirp_relay_flows",
  "slirp_relay_flows_limit",
  "slirp_relay_tenants_limit",
]);

/** One exposition from the expositions of every data-plane worker (same families, same order). */
export function mergeMetrics(texts: string[]): string {
  const order: string[] = [];
  const header = new Map<string, string[]>();
  const samples = new Map<string, Map<string, number>>();
  for (const text of texts) {
    let family = "";
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const meta = /^# (HELP|TYPE) (\S+)/.exec(line);
      if (meta) {
        family = meta[2];
        if (!header.has(family)) {
          header.set(family, []);
          samples.set(family, new Map());
          order.push(family);
        }
        const h = header.get(family)!;
        if (h.length < 2) h.push(line);
        continue;
      }
      const i = line.lastIndexOf(" ");
      const key = line.slice(0, i), v = Number(line.slice(i + 1));
      const m = samples.get(family)!;
      const had = m.get(key);
      m.set(key, had === undefined ? v : ONCE.has(family) ? had : had + v);
    }
  }
  const out: string[] = [];
  for (const f of order) {
    out.push(...header.get(f)!);
    for (const [k, v] of samples.get(f)!) out.push(`${k} ${v}`);
  }
  return out.join("\n") + "\n";
}
