/**
 * Regression tests for what a hostile guest, tenant or web page did to the relay (issue "Hardening"),
 * each at the level where it was found: real frames over the relay's own listeners, the relay in its own
 * process, and where it dials anything, inside a private network namespace with only `lo`.
 */
import assert from "node:assert/strict";
import { arpFrame, fragmentFrames, icmpEchoMessage, ip, reassembleFrom, tcpFrame } from "./_frames.ts";
import { TCP_RST, TCP_SYN } from "../src/wire/tcp.ts";
import { ICMP_DEST_UNREACHABLE, ICMP_UNREACH_ADMIN_PROHIBITED } from "../src/wire/icmpv4.ts";
import { IPPROTO_ICMP } from "../src/wire/ipv4.ts";
import { ICMP_ECHO_REPLY, parseIcmpV4 } from "../src/wire/icmpv4.ts";
import { isWireError } from "../src/wire/bytes.ts";
import { e2eTest, must } from "./_netns_guest.ts";
import { multiTenantConfig, PrivateNetns, RelayProcess, StreamGuest } from "./_relay_process.ts";

const MAC = 0x02000000000a;
const GUEST = ip("10.0.2.15");

e2eTest(
  "hardening: a fragmented 1601-byte ping through the host's ping socket comes back in fragments; the relay lives",
  ["sysctl"],
  async () => {
    const ns = await PrivateNetns.create({ "net.ipv4.ping_group_range": "0 2147483647" });
    const dir = await Deno.makeTempDir();
    const relay = await RelayProcess.start(
      ["--listen-qemu", `unix://${dir}/r.sock`, "--dns-upstream", "127.0.0.1:9", "--log-level", "warn"],
      { netns: ns },
    );
    try {
      const g = await StreamGuest.connect({ path: `${dir}/r.sock` });
      const data = new Uint8Array(1601).map((_, i) => (i * 13) & 0xff);
      // 127.0.0.1 inside the private namespace answers through the relay's ping socket
      const frags = fragmentFrames(MAC, GUEST, ip("127.0.0.1"), IPPROTO_ICMP, icmpEchoMessage(9, 1, data));
      await g.send(...frags);
      await g.waitFor((d) =>
        d.ip?.protocol === IPPROTO_ICMP && !d.ip.moreFragments && d.ip.fragmentOffset > 0
      );
      const id = g.out.find((d) => d.ip?.protocol === IPPROTO_ICMP)!.ip!.id;
      const l4 = reassembleFrom(g.raw, id, 1500);
      assert.ok(l4, "the whole reply arrived");
      const m = parseIcmpV4(l4, 0, l4.length);
      assert.ok(!isWireError(m));
      assert.equal(m.type, ICMP_ECHO_REPLY);
      assert.deepEqual(l4.subarray(8), data);
      // the same to the gateway itself, many times: answered, and no stack trace on stderr
      for (let seq = 2; seq < 12; seq++) {
        await g.send(
          ...fragmentFrames(MAC, GUEST, ip("10.0.2.2"), IPPROTO_ICMP, icmpEchoMessage(9, seq, data)),
        );
      }
      await g.send(arpFrame(MAC, GUEST, ip("10.0.2.2")));
      await g.waitFor((d) => d.arp !== undefined);
      assert.ok(!relay.exited, "the relay is alive");
      assert.equal(
        relay.stderr.filter((l) => /RangeError|at .*\.ts:\d+/.test(l)).length,
        0,
        relay.stderr.join("\n"),
      );
      g.close();
    } finally {
      const status = await relay.stop();
      await ns.close();
      await Deno.remove(dir, { recursive: true });
      assert.equal(status.code, 0, `the relay exited with ${status.code}:\n${relay.stderr.join("\n")}`);
    }
  },
);

e2eTest(
  "hardening: a tenant allowed a host's own address cannot reach another tenant's stream port through it",
  [],
  async () => {
    const ns = await PrivateNetns.create();
    // an address of the relay host that is not loopback, inside the private namespace
    await must(["ip", "-n", ns.name, "addr", "add", "198.51.100.1/32", "dev", "lo"]);
    const dir = await Deno.makeTempDir();
    const config = await multiTenantConfig(dir, [
      { id: "a", policy: { allow: ["198.51.100.1/32"] } },
      { id: "b", streamTcp: "0.0.0.0:0" },
    ]);
    const relay = await RelayProcess.start(["--config", config], {
      netns: ns,
      ready: /tenant stream sockets/,
    });
    try {
      const created = relay.logs(/tenant created/).find((l) => l.tenant === "b");
      const bPort = Number(/:(\d+)$/.exec(String(created?.streamTcp))?.[1]);
      assert.ok(bPort > 0, relay.stderr.join("\n"));
      assert.equal(
        relay.logs(/tenant ports bound on every address/).length,
        1,
        "a warning names b's wildcard port",
      );
      const g = await StreamGuest.connect({ path: `${dir}/t/a.sock` });
      const o = { srcMac: MAC, src: GUEST, dst: ip("198.51.100.1"), seq: 1, ack: 0, flags: TCP_SYN };
      // control: the policy lets a reach that address (nothing listens on port 9: the host refuses)
      await g.send(tcpFrame({ ...o, sport: 40001, dport: 9 }));
      const refused = await g.waitFor((d) => d.tcp?.dstPort === 40001);
      assert.ok(refused.tcp!.flags & TCP_RST, "a closed port on the allowed address answers RST");
      // b's stream port on the same address is refused by the relay's guard before any dial
      await g.send(tcpFrame({ ...o, sport: 40002, dport: bPort }));
      const denied = await g.waitFor((d) => d.icmp !== undefined);
      assert.equal(denied.icmp!.type, ICMP_DEST_UNREACHABLE);
      assert.equal(denied.icmp!.code, ICMP_UNREACH_ADMIN_PROHIBITED);
      assert.equal(g.out.filter((d) => d.tcp?.dstPort === 40002).length, 0, "no SYN-ACK from b's port");
      assert.equal(relay.logs(/guest connected/).length, 1, "only a's own guest connected");
      g.close();
    } finally {
      await relay.stop();
      await ns.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
