/**
 * The relay's edges against a hostile guest or client, in-process over real sockets: frames over the MTU,
 * WebSocket origins and hosts, admin API input, configuration that cannot work.
 */
import assert from "node:assert/strict";
import { Relay, type RelayOptions } from "../src/relay/relay.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { jsonLogger } from "../src/relay/log.ts";
import { arpFrame, ip } from "./_frames.ts";
import { StreamGuest } from "./_relay_process.ts";
import { parseHostForward } from "../src/cli.ts";

const MAC = 0x02000000000c;

/** A relay on a UNIX socket in a fresh directory, with `patch` applied to its options. */
export async function startRelay(
  patch: (o: RelayOptions) => void = () => {},
): Promise<{ relay: Relay; dir: string; sock: string; logs: string[]; stop(): Promise<void> }> {
  const dir = await Deno.makeTempDir();
  const stack = defaultStackConfig();
  stack.dnsUpstreams = ["127.0.0.1:9"];
  const logs: string[] = [];
  const opts: RelayOptions = {
    listenQemu: [`unix://${dir}/r.sock`],
    stack,
    log: jsonLogger("debug", (l) => logs.push(l)),
    parseForward: parseHostForward,
  };
  patch(opts);
  const relay = new Relay(opts);
  await relay.start();
  return {
    relay,
    dir,
    sock: `${dir}/r.sock`,
    logs,
    async stop() {
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("relay: a frame larger than the MTU is dropped and counted; the guest's link stays up", async () => {
  const r = await startRelay((o) => (o.stack.mtu = 1500));
  const g = await StreamGuest.connect({ path: r.sock });
  try {
    const big = new Uint8Array(1600);
    big.set(arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
    await g.send(big, arpFrame(MAC, ip("10.0.2.15"), ip("10.0.2.2")));
    await g.waitFor((d) => d.arp !== undefined);
    assert.equal(g.out.filter((d) => d.arp).length, 1, "only the honest frame was answered");
    const t = [...r.relay.tenants.values()][0];
    assert.equal(t.counters.drops.get("frame-over-mtu"), 1);
    assert.ok(!g.closed);
  } finally {
    g.close();
    await r.stop();
  }
});
