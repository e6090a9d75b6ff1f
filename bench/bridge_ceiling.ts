/**
 * The ceiling of the benchmarks' TAP bridge (bench/tap_bridge.c) with a null peer (bench/null_peer.py) in
 * place of a backend: how fast it carries frames each way when nothing behind it is slow. The end-to-end
 * figures are only meaningful well below this (the data-plane issue asks for at least 2× the fastest
 * backend).
 *
 *   toward the guest: the peer writes MTU-sized UDP frames as fast as the socket takes them; the guest's
 *     TAP counts what arrives (rx_bytes).
 *   from the guest: a Python sender in the guest blasts UDP datagrams (1472 bytes at MTU 1500, 65000 at
 *     65520) at a static neighbour; the peer counts what the bridge delivers.
 *
 *   deno run -A bench/bridge_ceiling.ts [--seconds 3]
 */
import { parseArgs } from "node:util";
import { NetnsGuest } from "../tests/_netns_guest.ts";
import { cTapBridge, waitForSocket } from "./_harness.ts";

const { values } = parseArgs({ args: Deno.args, options: { seconds: { type: "string", default: "3" } } });
const SECONDS = Number(values.seconds);
const PEER = new URL("./null_peer.py", import.meta.url).pathname;
const BLAST = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data = b"x" * int(sys.argv[1]); end = time.time() + float(sys.argv[2])
while time.time() < end:
    for _ in range(256):
        try: s.sendto(data, ("10.0.2.99", 9))
        except OSError: pass
`;

async function run(direction: "to-guest" | "from-guest", mtu: number): Promise<number> {
  const dir = await Deno.makeTempDir();
  const sock = `${dir}/peer.sock`;
  const peer = new Deno.Command("python3", {
    args: [PEER, sock, ...(direction === "to-guest" ? ["send", String(mtu + 14)] : [])],
    stdout: "piped",
  }).spawn();
  await waitForSocket(sock);
  const g = await NetnsGuest.create(`unix://${sock}`, { bridgeCommand: await cTapBridge() });
  try {
    const ip = (args: string[]) => g.exec(["ip", ...args]);
    await ip(["link", "set", g.ifname, "mtu", String(mtu)]);
    await ip(["addr", "add", "10.0.2.15/24", "dev", g.ifname]);
    await ip(["neigh", "add", "10.0.2.99", "lladdr", "52:55:0a:00:02:63", "dev", g.ifname]);
    const rx = async () =>
      Number((await g.exec(["cat", `/sys/class/net/${g.ifname}/statistics/rx_bytes`])).stdout);
    if (direction === "to-guest") {
      const before = await rx();
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, SECONDS * 1000));
      return ((await rx()) - before) * 8 / ((performance.now() - t0) / 1000) / 1e9;
    }
    await g.exec(["python3", "-c", BLAST, String(mtu === 1500 ? 1472 : 65000), String(SECONDS)], {
      timeoutMs: (SECONDS + 20) * 1000,
    });
    peer.kill("SIGTERM");
    const out = new TextDecoder().decode((await peer.output()).stdout);
    const counts = JSON.parse(out.trim().split("\n").pop()!);
    return counts.readBytes * 8 / SECONDS / 1e9;
  } finally {
    await g.close();
    try {
      peer.kill("SIGTERM");
    } catch { /* ended */ }
    await peer.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

console.log("| MTU | toward the guest Gbit/s | from the guest Gbit/s |\n| --- | --- | --- |");
for (const mtu of [1500, 65520]) {
  const to = await run("to-guest", mtu);
  const from = await run("from-guest", mtu);
  console.log(`| ${mtu} | ${to.toFixed(2)} | ${from.toFixed(2)} |`);
}
