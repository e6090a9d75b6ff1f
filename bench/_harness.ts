/** Shared pieces of the end-to-end benchmarks. */

/** The relay's CLI entry point (SLIRP_RELAY_ENTRY substitutes a wrapper such as bench/_relay_alloc.ts). */
export const CLI = Deno.env.get("SLIRP_RELAY_ENTRY") ?? new URL("../src/cli.ts", import.meta.url).pathname;

/** Starts `slirp-relay serve` with `args` as its own process (optionally under --cpu-prof). */
/**
 * The V8 flags of deno.json's start task, so that benchmarks measure the relay users run: a 1 MiB young
 * generation (it grows to 16 MiB under an attacker's allocation rate and stays) and `gc()` for the release of
 * a deleted tenant's memory (src/host/libc.ts releaseFreedMemory). SLIRP_RELAY_V8_FLAGS adds more.
 */
export const RELAY_V8_FLAGS = "--max-semi-space-size=1,--expose-gc";

export function spawnRelay(args: string[], opts: { cpuProfDir?: string } = {}): Deno.ChildProcess {
  const prof = opts.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`] : [];
  // SLIRP_RELAY_CPUS=0 pins the relay to CPU 0 (taskset execs it: the pid stays the relay's), to tell the
  // relay's own latency from contention with the benchmark's load generators on the same cores
  const cpus = Deno.env.get("SLIRP_RELAY_CPUS");
  const pin = cpus ? ["taskset", "-c", cpus] : [];
  return new Deno.Command(pin[0] ?? Deno.execPath(), {
    args: [
      ...pin.slice(1),
      ...(pin.length ? [Deno.execPath()] : []),
      "run",
      "-A",
      ...prof,
      `--v8-flags=${RELAY_V8_FLAGS}${
        Deno.env.get("SLIRP_RELAY_V8_FLAGS") ? `,${Deno.env.get("SLIRP_RELAY_V8_FLAGS")}` : ""
      }`,
      CLI,
      "serve",
      "--log-level",
      "warn",
      ...args,
      // SLIRP_RELAY_ARGS="--workers 0" and the like: the same benchmark against another setting
      ...(Deno.env.get("SLIRP_RELAY_ARGS")?.split(/\s+/).filter(Boolean) ?? []),
    ],
    // --v8-flags such as --trace-gc print on stdout
    stdout: Deno.env.get("SLIRP_RELAY_V8_FLAGS") ? "inherit" : "null",
    stderr: "inherit",
  }).spawn();
}

/** Resolves once a UNIX socket exists at `path` (a relay or passt finished starting). */
export async function waitForSocket(path: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      if (Deno.statSync(path).isSocket) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${path} never appeared`);
}

/** Resident memory of process `pid`, bytes. */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) * 1024 : 0;
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuOf(pid: number | "self"): number {
  const f = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/**
 * Host-side servers: an echo server (requests) and an endless source (downloads), on Deno's own sockets
 * (node:net on Deno serves a thousand busy sockets unevenly; it would skew the fairness measured here).
 */
/** The host servers in a process of their own (bench/_servers.ts); kill `proc` when done. */
export async function spawnServers(): Promise<
  { echoPort: number; sourcePort: number; proc: Deno.ChildProcess }
> {
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_servers.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const out = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await out.read();
    if (done) throw new Error("host servers did not start");
    line += value;
  }
  return { ...JSON.parse(line), proc };
}

export function startServers(): { echoPort: number; sourcePort: number } {
  const serve = (handle: (c: Deno.TcpConn) => Promise<void>) => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    (async () => {
      for await (const c of l) {
        c.setNoDelay(true);
        handle(c).catch(() => {}).finally(() => {
          try {
            c.close();
          } catch { /* closed */ }
        });
      }
    })();
    return l.addr.port;
  };
  const echoPort = serve(async (c) => {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await c.read(buf);
      if (n === null) return;
      for (let off = 0; off < n;) off += await c.write(buf.subarray(off, n));
    }
  });
  const chunk = new Uint8Array(64 * 1024);
  const sourcePort = serve(async (c) => {
    if (await c.read(new Uint8Array(1)) === null) return; // the request starts the stream
    for (;;) await c.write(chunk);
  });
  return { echoPort, sourcePort };
}

/** bench/NAME.c compiled into bench/.build/NAME (again only when the source is newer); returns its path. */
async function compiled(name: string, libs: string[] = []): Promise<string> {
  const src = new URL(`./${name}.c`, import.meta.url).pathname;
  const out = new URL(`./.build/${name}`, import.meta.url).pathname;
  const fresh = await Promise.all([Deno.stat(src), Deno.stat(out).catch(() => null)])
    .then(([s, o]) => o !== null && (o.mtime?.getTime() ?? 0) >= (s.mtime?.getTime() ?? 0));
  if (!fresh) {
    await Deno.mkdir(new URL("./.build/", import.meta.url).pathname, { recursive: true });
    const cc = await new Deno.Command("cc", { args: ["-O2", "-Wall", "-o", out, src, ...libs] }).output();
    if (cc.code !== 0) throw new Error(`cc ${name}.c failed:\n${new TextDecoder().decode(cc.stderr)}`);
  }
  return out;
}

/** The C TAP bridge (bench/tap_bridge.c): the guest side of every backend in the end-to-end benchmarks. */
export async function cTapBridge(): Promise<string[]> {
  return [await compiled("tap_bridge")];
}

/** Whether libslirp's headers are installed (Debian: libslirp-dev), so the libslirp driver can be built. */
export function libslirpAvailable(): boolean {
  try {
    return Deno.statSync("/usr/include/slirp/libslirp.h").isFile;
  } catch {
    return false;
  }
}

/** libslirp behind a stream socket (bench/libslirp_driver.c): `driver SOCKPATH MTU`. */
export function libslirpDriver(): Promise<string> {
  return compiled("libslirp_driver", ["-lslirp"]);
}

/** A relay, an iperf3 server on 127.0.0.1 and a netns Linux guest leased through it (bench/iperf_runs.ts). */
export interface IperfRig {
  relay: Deno.ChildProcess;
  guest: import("../tests/_netns_guest.ts").NetnsGuest;
  /** The iperf3 server's port (the guest reaches it at 10.0.2.2). */
  port: string;
  /** Runs iperf3 in the guest against the server for `seconds`; `extra` adds flags (-R, -J, -b …). */
  iperf(seconds: number | string, extra?: string[]): Promise<{ stdout: string }>;
  close(): Promise<void>;
}

/**
 * Starts a relay on a fresh UNIX socket with `relayArgs` added (and `opts` as `spawnRelay` takes them), an
 * iperf3 server, and a netns guest behind the C TAP bridge that has its DHCP lease.
 */
export async function iperfRig(relayArgs: string[], opts: { cpuProfDir?: string } = {}): Promise<IperfRig> {
  const { NetnsGuest } = await import("../tests/_netns_guest.ts");
  const dir = await Deno.makeTempDir();
  await Deno.chmod(dir, 0o777);
  const relay = spawnRelay(
    ["--listen-qemu", `unix://${dir}/r.sock`, "--dns-upstream", "127.0.0.1:9", ...relayArgs],
    opts,
  );
  await waitForSocket(`${dir}/r.sock`);
  const port = String(5300 + Math.floor(Math.random() * 500));
  const iperfd = new Deno.Command("iperf3", {
    args: ["-s", "-B", "127.0.0.1", "-p", port],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const guest = await NetnsGuest.create(`unix://${dir}/r.sock`, { bridgeCommand: await cTapBridge() });
  await guest.dhcp();
  await new Promise((r) => setTimeout(r, 300));
  return {
    relay,
    guest,
    port,
    iperf: (seconds, extra = []) =>
      guest.exec(["iperf3", "-c", "10.0.2.2", "-p", port, "-t", String(seconds), ...extra]),
    async close() {
      await guest.close();
      iperfd.kill();
      relay.kill("SIGINT");
      await relay.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A probe.py server on a free port; resolves once it is bound. */
export async function probeServer(
  mode: string,
  host: string,
): Promise<{ port: number; child: Deno.ChildProcess }> {
  const child = new Deno.Command("python3", {
    args: [new URL("./probe.py", import.meta.url).pathname, mode, "0", host],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  // the line may arrive in pieces ("ready", then the port): read to its end
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    line += new TextDecoder().decode(value);
  }
  const port = Number(/ready (\d+)/.exec(line)?.[1]);
  if (!port) throw new Error(`probe ${mode} did not start: ${line}`);
  reader.releaseLock();
  child.stdout.cancel();
  return { port, child };
}
