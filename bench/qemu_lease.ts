/**
 * Time from QEMU start to the guest's DHCP lease through the relay (not a test): Debian kernel + busybox
 * initramfs under TCG, NIC on `-netdev stream`. Prints the wall time until the guest prints its lease.
 *
 *   deno run -A bench/qemu_lease.ts [--runs 3]
 */
import { parseArgs } from "node:util";
import { Relay } from "../src/relay/relay.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { jsonLogger } from "../src/relay/log.ts";
import { qemuMissing, startGuest } from "../tests/_qemu.ts";

const { values } = parseArgs({ args: Deno.args, options: { runs: { type: "string", default: "3" } } });
const missing = qemuMissing();
if (missing) {
  console.error(`bench/qemu_lease.ts: ${missing}`);
  Deno.exit(2);
}
const stack = defaultStackConfig();
stack.dnsUpstreams = ["127.0.0.1:9"];
const relay = new Relay({ listenQemu: ["tcp://127.0.0.1:0"], stack, log: jsonLogger("warn") });
const [url] = await relay.start();
const times: number[] = [];
try {
  for (let i = 0; i < Number(values.runs); i++) {
    const t0 = performance.now();
    const g = await startGuest(
      `stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=${url.split(":").pop()}`,
      "udhcpc -i eth0 -n -q -f -t 10 -T 2 -s /udhcpc.sh\nsleep 60\n",
    );
    try {
      await g.waitFor(/RESULT lease ip=/);
      times.push(performance.now() - t0);
    } finally {
      await g.kill();
    }
  }
} finally {
  await relay.stop();
}
times.sort((a, b) => a - b);
console.log(
  `QEMU start → DHCP lease through slirp-relay, ${times.length} runs: ${
    times.map((t) => (t / 1000).toFixed(2) + " s").join(", ")
  } (median ${(times[Math.floor(times.length / 2)] / 1000).toFixed(2)} s)`,
);
