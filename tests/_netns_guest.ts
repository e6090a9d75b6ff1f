/**
 * Test harness: a real Linux network stack as the guest. Creates a network namespace with a TAP
 * interface and bridges the TAP's frames to a relay stream listener (length-prefixed frames), exactly
 * as a VM's NIC would. All traffic stays inside the namespace and the relay.
 */
import { TapDevice } from "../src/host/tap.ts";
import { FrameWriter, readFrames } from "../src/transport/stream.ts";
import type { ByteStream } from "../src/host/host.ts";

/** Why end-to-end tests cannot run here, or null when they can. */
export function e2eMissing(extraCommands: string[] = []): string | null {
  if (Deno.build.os !== "linux") return "not Linux";
  if (Deno.uid() !== 0) return "not root (network namespaces and TAP devices need CAP_NET_ADMIN)";
  try {
    Deno.statSync("/dev/net/tun");
  } catch {
    return "/dev/net/tun missing";
  }
  for (const c of ["ip", "busybox", ...extraCommands]) {
    if (!which(c)) return `command "${c}" not installed (see .ci/run for the packages)`;
  }
  return null;
}

export function which(cmd: string): string | null {
  for (
    const dir of (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").concat([
      "/usr/sbin",
      "/sbin",
    ])
  ) {
    try {
      const p = `${dir}/${cmd}`;
      if (Deno.statSync(p).isFile) return p;
    } catch { /* next */ }
  }
  return null;
}

/**
 * Options for a Deno.test that needs root and tools: skipped with a message where they are missing,
 * except under SLIRP_E2E_REQUIRED=1 (CI), where the missing piece fails the test instead.
 */
export function e2eTest(
  name: string,
  extraCommands: string[],
  fn: () => Promise<void>,
  timeoutNote = "",
): void {
  const missing = e2eMissing(extraCommands);
  const required = Deno.env.get("SLIRP_E2E_REQUIRED") === "1";
  if (missing && !required) {
    Deno.test({ name: `${name} (skipped: ${missing})`, ignore: true, fn() {} });
    return;
  }
  Deno.test({
    name: name + timeoutNote,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      if (missing) throw new Error(`End-to-end prerequisites missing under SLIRP_E2E_REQUIRED=1: ${missing}`);
      await fn();
    },
  });
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function run(
  cmd: string[],
  opts: { timeoutMs?: number; stdin?: string } = {},
): Promise<ExecResult> {
  const c = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
    stdin: opts.stdin !== undefined ? "piped" : "null",
  });
  const child = c.spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, opts.timeoutMs ?? 30_000);
  const out = await child.output();
  clearTimeout(timer);
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Runs a command and throws with its output when it fails. */
export async function must(
  cmd: string[],
  opts: { timeoutMs?: number; stdin?: string } = {},
): Promise<string> {
  const r = await run(cmd, opts);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

let serial = 0;

const UDHCPC_SCRIPT = `#!/bin/sh
# udhcpc hook: configure the interface as a distribution's script would, and record what was offered.
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    env | grep -E '^(ip|mask|subnet|router|dns|mtu|lease|serverid|domain|search|broadcast|siaddr|boot_file|bootfile)=' > "$LEASE_FILE"
    ;;
esac
exit 0
`;

/**
 * Impairment of the guest's outgoing frames applied in the bridge — netem's loss, reorder and
 * duplicate, for kernels built without sch_netem.
 */
export interface Impairment {
  loss: number;
  reorder: number;
  duplicate: number;
  seed?: number;
}

/** Whether this kernel has tc netem (CONFIG_NET_SCH_NETEM). */
export async function netemAvailable(): Promise<boolean> {
  const ns = `srnetem${crypto.randomUUID().slice(0, 8)}`;
  await run(["ip", "netns", "add", ns]);
  try {
    await run(["ip", "-n", ns, "link", "add", "nv0", "type", "veth", "peer", "name", "nv1"]);
    const r = await run([
      "ip",
      "netns",
      "exec",
      ns,
      "tc",
      "qdisc",
      "add",
      "dev",
      "nv0",
      "root",
      "netem",
      "loss",
      "1%",
    ]);
    return r.code === 0;
  } finally {
    await run(["ip", "netns", "del", ns]);
  }
}

/** A network namespace whose TAP interface is wired to a relay stream listener. */
export class NetnsGuest {
  readonly ns: string;
  readonly ifname: string;
  readonly dir: string;
  #tap: TapDevice | null;
  #conn: ByteStream | null;
  #writer: Pick<FrameWriter, "push"> | null;
  #done: Promise<void>[] = [];
  #impair: Impairment | null = null;
  /** Frames the impairment dropped, duplicated and reordered. */
  readonly impaired = { dropped: 0, duplicated: 0, reordered: 0 };

  private constructor(
    ns: string,
    ifname: string,
    dir: string,
    tap: TapDevice | null,
    conn: ByteStream | null,
  ) {
    this.ns = ns;
    this.ifname = ifname;
    this.dir = dir;
    this.#tap = tap;
    this.#conn = conn;
    this.#writer = conn ? new FrameWriter(conn, 4 * 1024 * 1024, () => {}) : null;
  }

  /**
   * @param relay "unix:///path" or "tcp://127.0.0.1:port" of a relay stream listener
   */
  /**
   * @param opts.separateProcess run the TAP bridge as its own process (benchmarks: keeps the relay's
   *   thread to itself)
   * @param opts.bridgeCommand that process: a program taking `TAPNAME NETNS URL` (default: the Deno bridge,
   *   guest_tools/tap_bridge.ts; benchmarks use the C one, bench/tap_bridge.c)
   */
  static async create(
    relay: string,
    opts: { impair?: Impairment; separateProcess?: boolean; bridgeCommand?: string[] } = {},
  ): Promise<NetnsGuest> {
    if (opts.separateProcess || opts.bridgeCommand) {
      return await NetnsGuest.#createExternal(relay, opts.bridgeCommand);
    }
    const id = `${(serial++).toString(36)}${crypto.randomUUID().slice(0, 7)}`;
    const ns = `srg${id}`;
    const ifname = `srt${id}`;
    const dir = await Deno.makeTempDir({ prefix: "slirp-guest-" });
    await must(["ip", "netns", "add", ns]);
    let tap: TapDevice | null = null;
    try {
      tap = new TapDevice(ifname);
      await must(["ip", "link", "set", ifname, "netns", ns]);
      await must(["ip", "-n", ns, "link", "set", "lo", "up"]);
      await must(["ip", "-n", ns, "link", "set", ifname, "up"]);
      if (relay.startsWith("ws://")) {
        const ws = new WebSocket(relay);
        ws.binaryType = "arraybuffer";
        await new Promise<void>((resolve, reject) => {
          ws.onopen = () => resolve();
          ws.onerror = () => reject(new Error(`WebSocket to ${relay} failed`));
        });
        const g = new NetnsGuest(ns, ifname, dir, tap, null);
        g.#ws = ws;
        await Deno.writeTextFile(`${dir}/udhcpc.sh`, UDHCPC_SCRIPT, { mode: 0o755 });
        const t = tap;
        ws.onmessage = (e) => {
          if (typeof e.data !== "string") t.write(new Uint8Array(e.data as ArrayBuffer));
        };
        g.#done.push(t.readLoop((frame) => {
          if (ws.readyState === WebSocket.OPEN) ws.send(frame.slice());
        }));
        return g;
      }
      const conn = await NetnsGuest.#dial(relay);
      const g = new NetnsGuest(ns, ifname, dir, tap, conn);
      g.#impair = opts.impair ?? null;
      await Deno.writeTextFile(`${dir}/udhcpc.sh`, UDHCPC_SCRIPT, { mode: 0o755 });
      g.#start();
      return g;
    } catch (e) {
      tap?.close();
      await run(["ip", "netns", "del", ns]);
      throw e;
    }
  }

  static async #createExternal(relay: string, bridge?: string[]): Promise<NetnsGuest> {
    const id = `${(serial++).toString(36)}${crypto.randomUUID().slice(0, 7)}`;
    const ns = `srg${id}`;
    const ifname = `srt${id}`;
    const dir = await Deno.makeTempDir({ prefix: "slirp-guest-" });
    await must(["ip", "netns", "add", ns]);
    const tool = new URL("./guest_tools/tap_bridge.ts", import.meta.url).pathname;
    const argv = bridge ?? [Deno.execPath(), "run", "-A", tool];
    const child = new Deno.Command(argv[0], {
      args: [...argv.slice(1), ifname, ns, relay],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.getReader();
    const first = await reader.read();
    if (!first.value || !new TextDecoder().decode(first.value).includes("ready")) {
      child.kill();
      await run(["ip", "netns", "del", ns]);
      throw new Error("TAP bridge process did not start");
    }
    reader.releaseLock();
    child.stdout.cancel();
    const g = new NetnsGuest(ns, ifname, dir, null, null);
    g.#child = child;
    try {
      await must(["ip", "-n", ns, "link", "set", "lo", "up"]);
      // A virtio NIC holds the guest back when the backend reads late; a TAP drops past its queue
      // (tx_dropped), so with the default 1000 frames a backend that reads in bursts (passt) lost frames
      // to the harness and fell to 0.1-1 Gbit/s with thousands of retransmits in some runs. 10000 frames
      // absorb those bursts: no drops measured since, passt's upload 4.6-5.2 Gbit/s every run.
      await must(["ip", "-n", ns, "link", "set", ifname, "txqueuelen", "10000", "up"]);
      await Deno.writeTextFile(`${dir}/udhcpc.sh`, UDHCPC_SCRIPT, { mode: 0o755 });
    } catch (e) {
      await g.close(); // the bridge process and the namespace go with the failure
      throw e;
    }
    return g;
  }

  #child: Deno.ChildProcess | null = null;
  #ws: WebSocket | null = null;

  #start(): void {
    const tap = this.#tap!;
    const imp = this.#impair;
    // the writer of the moment: reconnect() swaps it under the TAP's read loop
    const writer = { push: (f: Uint8Array) => this.#writer!.push(f) };
    if (!imp) {
      this.#done.push(tap.readLoop((frame) => void writer.push(frame)));
    } else {
      let x = (imp.seed ?? 7) >>> 0 || 1;
      const rand = () => {
        x ^= x << 13;
        x >>>= 0;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        return x / 0x1_0000_0000;
      };
      let held: Uint8Array | null = null;
      this.#done.push(tap.readLoop((frame) => {
        if (rand() < imp.loss) {
          this.impaired.dropped++;
          return;
        }
        if (held === null && rand() < imp.reorder) {
          // hold this frame back until the next one has gone (swap order)
          held = frame.slice();
          this.impaired.reordered++;
          return;
        }
        writer.push(frame);
        if (rand() < imp.duplicate) {
          writer.push(frame);
          this.impaired.duplicated++;
        }
        if (held) {
          writer.push(held);
          held = null;
        }
      }));
    }
    this.#readFromRelay();
  }

  /** Frames from the relay's stream to the TAP, until the stream ends. */
  #readFromRelay(): void {
    const tap = this.#tap!;
    this.#done.push(
      readFrames(this.#conn!, 65536 + 4096, (b, off, len) => {
        tap.write(b.subarray(off, off + len));
      }).catch(() => {}),
    );
  }

  /**
   * Breaks the link to the relay and, `downMs` later, connects again to `relay` (a stream listener), as a
   * VM's NIC backend with `reconnect` does: the namespace, its addresses and its sockets stay as they are. Frames the guest
   * sends in between are lost, as they would be.
   */
  async reconnect(relay: string, downMs = 0): Promise<void> {
    if (!this.#tap || !this.#conn) throw new Error("reconnect: only the in-process stream bridge reconnects");
    this.#writer = { push: () => false };
    this.#conn.close();
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    const conn = await NetnsGuest.#dial(relay);
    this.#conn = conn;
    this.#writer = new FrameWriter(conn, 4 * 1024 * 1024, () => {});
    this.#readFromRelay();
  }

  static #dial(relay: string): Promise<ByteStream> {
    return relay.startsWith("unix://")
      ? Deno.connect({ transport: "unix", path: relay.slice("unix://".length) })
      : Deno.connect({ hostname: "127.0.0.1", port: Number(relay.split(":").pop()) });
  }

  /** Runs a command inside the namespace. */
  exec(cmd: string[], opts: { timeoutMs?: number; stdin?: string } = {}): Promise<ExecResult> {
    return run(["ip", "netns", "exec", this.ns, ...cmd], opts);
  }

  /** Runs busybox udhcpc and returns the variables the lease set (ip, router, dns, mtu, …). */
  async dhcp(extraOptions: string[] = []): Promise<Record<string, string>> {
    const leaseFile = `${this.dir}/lease.env`;
    const r = await run([
      "ip",
      "netns",
      "exec",
      this.ns,
      "env",
      `LEASE_FILE=${leaseFile}`,
      "busybox",
      "udhcpc",
      "-i",
      this.ifname,
      "-n",
      "-q",
      "-f",
      "-t",
      "5",
      "-T",
      "1",
      "-s",
      `${this.dir}/udhcpc.sh`,
      "-O",
      "mtu",
      "-O",
      "search",
      "-O",
      "broadcast",
      ...extraOptions,
    ], { timeoutMs: 20_000 });
    if (r.code !== 0) throw new Error(`udhcpc failed (${r.code}): ${r.stderr}`);
    const vars: Record<string, string> = {};
    for (const line of (await Deno.readTextFile(leaseFile)).split("\n")) {
      const i = line.indexOf("=");
      if (i > 0) vars[line.slice(0, i)] = line.slice(i + 1);
    }
    return vars;
  }

  /**
   * Waits until the kernel has configured a global address in `prefix` (e.g. "fd00::") from a router
   * advertisement and finished its duplicate address detection; returns the address.
   */
  async slaac(prefix = "fd00::", timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await this.exec(["ip", "-6", "addr", "show", "dev", this.ifname, "scope", "global"]);
      const m = new RegExp(`inet6 (${prefix.replace(/::$/, ":")}[0-9a-f:]+)/64 .*dynamic`).exec(r.stdout);
      if (m && !/tentative/.test(r.stdout)) return m[1];
      await new Promise((r) => setTimeout(r, 100));
    }
    const all = await this.exec(["ip", "-6", "addr"]);
    throw new Error(`no SLAAC address in ${prefix}/64 after ${timeoutMs} ms:\n${all.stdout}`);
  }

  async close(): Promise<void> {
    if (this.#child) {
      try {
        this.#child.kill("SIGTERM");
      } catch { /* exited */ }
      await this.#child.status;
      await run(["ip", "netns", "del", this.ns]);
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
      return;
    }
    this.#tap?.close();
    try {
      this.#ws?.close();
      this.#conn?.close();
    } catch { /* closed */ }
    await Promise.allSettled(this.#done);
    await run(["ip", "netns", "del", this.ns]);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

const TCP_TOOL = new URL("./guest_tools/tcp_tool.ts", import.meta.url).pathname;

/**
 * Runs guest_tools/tcp_tool.ts MODE ARGS inside `guest`'s namespace and returns the JSON line it printed
 * last; throws with its output when there is none.
 */
export async function guestTool(
  guest: NetnsGuest,
  args: string[],
  timeoutMs = 120_000,
): Promise<Record<string, unknown>> {
  const r = await guest.exec([Deno.execPath(), "run", "-A", "--quiet", TCP_TOOL, ...args], { timeoutMs });
  try {
    return JSON.parse(r.stdout.trim().split("\n").pop()!);
  } catch {
    throw new Error(`tool ${args[0]} failed: ${r.stdout} ${r.stderr}`);
  }
}
