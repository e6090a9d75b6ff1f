/**
 * Gateway services through the relay (not a test): ping RTT to 10.0.2.2 (median of 20) and DNS
 * queries per second through 10.0.2.3 — answered locally (static record) and forwarded to a responder
 * on 127.0.0.1 — from a netns Linux guest behind the TAP bridge.
 *
 *   deno run -A bench/e2e_gateway.ts [--seconds 3]
 */
import { parseArgs } from "node:util";
import { NetnsGuest } from "../tests/_netns_guest.ts";
import { startDnsResponder } from "../tests/_services.ts";
import { cTapBridge, spawnRelay, waitForSocket } from "./_harness.ts";

const { values } = parseArgs({ args: Deno.args, options: { seconds: { type: "string", default: "3" } } });
const dns = await startDnsResponder({ "www.example.test": "192.0.2.10" });
const dir = await Deno.makeTempDir();
const tool = new URL("../tests/guest_tools/tcp_tool.ts", import.meta.url).pathname;
const relay = spawnRelay([
  "--listen-qemu",
  `unix://${dir}/r.sock`,
  "--dns-upstream",
  `127.0.0.1:${dns.port}`,
]);
await waitForSocket(`${dir}/r.sock`);
const g = await NetnsGuest.create(`unix://${dir}/r.sock`, { bridgeCommand: await cTapBridge() });
try {
  await g.dhcp();
  const ping = await g.exec(["ping", "-c", "20", "-i", "0.05", "10.0.2.2"]);
  const rtts = [...ping.stdout.matchAll(/time=([0-9.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  const median = rtts.length ? (rtts[9] + rtts[10]) / 2 : NaN;
  const q = async (name: string) =>
    JSON.parse(
      (await g.exec([
        Deno.execPath(),
        "run",
        "-A",
        "--quiet",
        tool,
        "dnsqps",
        "10.0.2.3",
        name,
        values.seconds!,
        "8",
      ])).stdout.trim(),
    );
  const local = await q("host.slirp.internal");
  const fwd = await q("www.example.test");
  console.log(`gateway benchmark, ${new Date().toISOString()}, ${navigator.hardwareConcurrency} cores`);
  console.log(`| metric | value |\n| --- | --- |`);
  console.log(
    `| ping 10.0.2.2 RTT, median of ${rtts.length} (min / max) | ${median.toFixed(3)} ms (${rtts[0]} / ${
      rtts.at(-1)
    } ms) |`,
  );
  console.log(
    `| DNS answered by the relay (static record), 8 in flight | ${Math.round(local.perSecond)} queries/s |`,
  );
  console.log(
    `| DNS forwarded to a 127.0.0.1 responder, 8 in flight | ${Math.round(fwd.perSecond)} queries/s |`,
  );
} finally {
  await g.close();
  relay.kill("SIGTERM");
  await relay.status;
  dns.close();
  await Deno.remove(dir, { recursive: true });
}
