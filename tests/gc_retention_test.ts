/**
 * What a finished connection leaves to the garbage collector. A short connection's objects should die young:
 * once anything of it reaches the old generation, every scavenge copies it twice and only a full collection
 * frees it (bench/RESULTS.md, "A closure assigned to a property").
 */
import assert from "node:assert/strict";
import { epollAvailable } from "../src/host/epoll_loop.ts";

/** Bytes each scavenge moved to the old generation, from V8's `--trace-gc-nvp` lines. */
function promotedPerScavenge(trace: string): number[] {
  const promoted: number[] = [];
  for (const line of trace.split("\n")) {
    const at = line.indexOf('{"pause"');
    if (at < 0) continue;
    let gc: { gc: string; promoted: number };
    try {
      gc = JSON.parse(line.slice(at));
    } catch {
      continue; // a line another write cut in two
    }
    if (gc.gc === "s") promoted.push(gc.promoted);
  }
  return promoted;
}

Deno.test({
  name:
    "short connections through the stack and the epoll host leave nothing for the old generation: the scavenges after start-up promote under 512 bytes per connection",
  ignore: !epollAvailable(),
  async fn() {
    const connections = 3000;
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        // the relay's young generation (npm start) and the collector's own account of every collection
        "--v8-flags=--max-semi-space-size=1,--trace-gc-nvp",
        new URL("./fixtures/short_connections.ts", import.meta.url).pathname,
        String(connections),
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(120_000),
    }).output();
    const out = new TextDecoder().decode(run.stdout);
    assert.ok(run.success, new TextDecoder().decode(run.stderr).slice(-2000));
    assert.match(new TextDecoder().decode(run.stderr), new RegExp(`connections ${connections}`));
    const promoted = promotedPerScavenge(out);
    // start-up (modules, the first code) promotes what lives for good: leave its scavenges out
    const START_UP = 20;
    assert.ok(promoted.length > START_UP * 2, `only ${promoted.length} scavenges`);
    const steady = promoted.slice(START_UP);
    const perConnection = steady.reduce((a, b) => a + b, 0) /
      (connections * steady.length / promoted.length);
    // a connection's objects take ~3 KB: when they are kept past the young generation this is ~3,000
    assert.ok(
      perConnection < 512,
      `${perConnection.toFixed(0)} bytes promoted per connection over ${steady.length} scavenges`,
    );
  },
});
