/**
 * A short run of bench/hostile.ts in CI: the relay survives one tenant cycling through every attack, and
 * the well-behaved tenants keep moving data during and after it. The benchmark's targets (throughput and
 * latency ratios, RSS) are figures for bench/RESULTS.md, not assertions here.
 */
import assert from "node:assert/strict";

const BENCH = new URL("../bench/hostile.ts", import.meta.url).pathname;

Deno.test({
  name: "hostile tenant (bench/hostile.ts, short): the relay lives and the other tenants keep their traffic",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", BENCH, "--tenants", "3", "--seconds", "2", "--json"],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // a hang fails the test instead of the whole run
    const kill = setTimeout(() => child.kill("SIGKILL"), 120_000);
    const out = await child.output();
    clearTimeout(kill);
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, text + new TextDecoder().decode(out.stderr).slice(-4000));
    const line = text.split("\n").find((l) => l.startsWith("{"));
    assert.ok(line, text);
    const r = JSON.parse(line);
    assert.equal(r.alive, true);
    assert.ok(r.attackedMbit > 0 && r.afterMbit > 0, text);
    for (const m of r.attacked.mbitPerTenant) assert.ok(m > 0, "every good tenant moved data under attack");
    assert.ok(r.attacked.pings > 0);
    assert.equal(r.hostileCounters.faults, 0, "no internal error was needed to contain the attack");
    assert.ok(r.hostileCounters.framesIn > 1000, "the attack really ran");
  },
});
