/**
 * What a wake-up from idle costs the data plane's loop alone, against a blocking Python server (not a test):
 * UDP echo round trips from one client on 127.0.0.1 to a worker whose socket loop is its own, as a data-plane
 * worker's is, with nothing behind it (tests/fixtures/owned_loop_worker.ts), and to `bench/probe.py
 * udp-echo-server` — back to back and with 2, 20 and 50 ms between requests. Prints the median of each.
 *
 *   deno run -A bench/cold_echo.ts
 *
 * Set beside a gateway ping through the relay (bench/e2e_tcp.ts) it tells the loop and runtime's share of a
 * lone request from the share of the relay code the request runs through.
 */
import dgram from "node:dgram";
import { probeServer } from "./_harness.ts";

const client = dgram.createSocket("udp4");
await new Promise<void>((r) => client.bind(0, "127.0.0.1", r));
let arrived: () => void = () => {};
client.on("message", () => arrived());

/** Median round trip in µs of `n` echoes to `port`, `gapMs` apart. */
async function medianRoundTrip(port: number, gapMs: number, n: number): Promise<number> {
  const us: number[] = [];
  for (let i = 0; i < n; i++) {
    if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    const t0 = performance.now();
    const answered = new Promise<void>((r) => arrived = r);
    client.send("echo", port, "127.0.0.1");
    await answered;
    us.push((performance.now() - t0) * 1000);
  }
  us.sort((a, b) => a - b);
  return us[us.length >> 1];
}

const worker = new Worker(new URL("../tests/fixtures/owned_loop_worker.ts", import.meta.url), {
  type: "module",
});
const loopPort = await new Promise<number>((r) => worker.onmessage = (e) => r(e.data));
const { port: pythonPort, child: python } = await probeServer("udp-echo-server", "127.0.0.1");
try {
  for (const gapMs of [0, 2, 20, 50]) {
    const n = gapMs >= 20 ? 40 : 300;
    // warm both first: the figures should not depend on which ran before
    await medianRoundTrip(loopPort, 0, 300);
    await medianRoundTrip(pythonPort, 0, 300);
    const loop = await medianRoundTrip(loopPort, gapMs, n);
    const py = await medianRoundTrip(pythonPort, gapMs, n);
    console.log(
      `${gapMs} ms apart: owned loop ${loop.toFixed(0)} µs, python ${py.toFixed(0)} µs (medians of ${n})`,
    );
  }
} finally {
  worker.terminate();
  python.kill();
  client.close();
}
