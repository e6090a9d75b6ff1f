/**
 * Why the relay has its own socket loop (not a test): N connections download from one source as fast as
 * they can, read by (a) Deno's own sockets, (b) node:net in Deno, (c) src/host/epoll.ts. Prints, per
 * reader, the throughput, Jain's fairness index across connections and how many got no byte at all.
 *
 *   deno run -A bench/socket_fairness.ts [--connections 1000] [--seconds 3]
 *
 * The source and each reader run in processes of their own (this script, re-run with --role).
 */
import net from "node:net";
import { parseArgs } from "node:util";
import { connectTcp } from "../src/host/epoll.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    connections: { type: "string", default: "1000" },
    seconds: { type: "string", default: "3" },
    role: { type: "string" },
    port: { type: "string" },
  },
});
const N = Number(flags.connections);
const SECONDS = Number(flags.seconds);

if (flags.role === "source") {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(l.addr.port);
  const chunk = new Uint8Array(64 * 1024);
  for await (const c of l) {
    (async () => {
      try {
        for (;;) await c.write(chunk);
      } catch { /* reader gone */ }
    })();
  }
} else if (flags.role) {
  const port = Number(flags.port);
  const got = new Array<number>(N).fill(0);
  /** Reads `c` to its end, counting bytes for connection `i`. */
  const drain = (c: { read(p: Uint8Array): Promise<number | null> }, i: number) => {
    const buf = new Uint8Array(64 * 1024);
    (async () => {
      for (;;) {
        const n = await c.read(buf);
        if (n === null) return;
        got[i] += n;
      }
    })().catch(() => {});
  };
  if (flags.role === "deno") {
    for (let i = 0; i < N; i++) drain(await Deno.connect({ hostname: "127.0.0.1", port }), i);
  } else if (flags.role === "node") {
    for (let i = 0; i < N; i++) {
      const c = net.connect(port, "127.0.0.1");
      c.on("data", (d: Uint8Array) => (got[i] += d.length));
      c.on("error", () => {});
    }
  } else {
    for (let i = 0; i < N; i++) {
      const c = connectTcp("127.0.0.1", port);
      await c.waitConnected();
      drain(c, i);
    }
  }
  await new Promise((r) => setTimeout(r, 1000));
  const base = [...got];
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const secs = (performance.now() - t0) / 1000;
  const d = got.map((g, i) => g - base[i]);
  const sum = d.reduce((a, b) => a + b, 0);
  const jain = sum === 0 ? 0 : (sum * sum) / (N * d.reduce((a, b) => a + b * b, 0));
  console.log(JSON.stringify({ gbps: (sum * 8) / secs / 1e9, jain, zeros: d.filter((x) => x === 0).length }));
  Deno.exit(0);
} else {
  const self = new URL(import.meta.url).pathname;
  const source = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", self, "--role", "source"],
    stdout: "piped",
  }).spawn();
  const reader = source.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) line += (await reader.read()).value ?? "";
  const port = line.trim();
  console.log(`socket fairness, ${new Date().toISOString()}, ${N} connections, ${SECONDS} s`);
  console.log("| reader | Gbit/s | Jain index | connections with 0 bytes |");
  console.log("| --- | --- | --- | --- |");
  for (
    const [role, label] of [["deno", "Deno.connect + read()"], ["node", "node:net in Deno"], [
      "epoll",
      "src/host/epoll.ts (FFI)",
    ]]
  ) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        self,
        "--role",
        role,
        "--port",
        port,
        "--connections",
        String(N),
        "--seconds",
        String(SECONDS),
      ],
      stderr: "inherit",
    }).output();
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    console.log(`| ${label} | ${r.gbps.toFixed(2)} | ${r.jain.toFixed(3)} | ${r.zeros} of ${N} |`);
  }
  source.kill("SIGTERM");
  await source.status;
}
