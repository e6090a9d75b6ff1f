/**
 * Default-deny egress end to end: a multi-tenant relay process, run inside a private network namespace with
 * only `lo` so that a regressed policy could dial nothing real, refuses its guest's flows to metadata,
 * private, shared and loopback addresses over TCP, UDP and ICMP, counts them, and lets an allowed address
 * through. The stack-level table (every range × protocol) is tests/policy_table_test.ts.
 */
import assert from "node:assert/strict";
import { arpFrame, ip, pingFrame, tcpFrame, udpFrame } from "./_frames.ts";
import { TCP_RST, TCP_SYN } from "../src/wire/tcp.ts";
import { ICMP_DEST_UNREACHABLE, ICMP_UNREACH_ADMIN_PROHIBITED } from "../src/wire/icmpv4.ts";
import { e2eTest } from "./_netns_guest.ts";
import { multiTenantConfig, PrivateNetns, RelayProcess, StreamGuest } from "./_relay_process.ts";

const MAC = 0x02000000000b;
const GUEST = ip("10.0.2.15");

e2eTest(
  "policy: a multi-tenant guest is refused metadata, private and loopback over TCP, UDP and ICMP",
  [],
  async () => {
    const ns = await PrivateNetns.create();
    const dir = await Deno.makeTempDir();
    const config = await multiTenantConfig(dir, [{ id: "p", policy: { allow: ["127.0.0.2/32:9/tcp"] } }]);
    const relay = await RelayProcess.start(["--config", config], {
      netns: ns,
      ready: /tenant stream/,
    });
    try {
      const g = await StreamGuest.connect({ path: `${dir}/t/p.sock` });
      await g.send(arpFrame(MAC, GUEST, ip("10.0.2.2")));
      let sport = 41000;
      const cases = [
        ["169.254.169.254", "tcp", 80],
        ["169.254.169.254", "udp", 80],
        ["169.254.169.254", "icmp", 0],
        ["10.1.2.3", "tcp", 22],
        ["172.16.0.1", "udp", 53],
        ["192.168.1.1", "icmp", 0],
        ["100.64.0.1", "tcp", 443],
        ["10.0.2.2", "tcp", 9], // the host's loopback through the gateway
        ["127.0.0.2", "udp", 9], // allowed for TCP only
      ] as const;
      for (const [dst, protocol, port] of cases) {
        const s = ++sport;
        const frame = protocol === "tcp"
          ? tcpFrame({
            srcMac: MAC,
            src: GUEST,
            dst: ip(dst),
            sport: s,
            dport: port,
            seq: 1,
            ack: 0,
            flags: TCP_SYN,
          })
          : protocol === "udp"
          ? udpFrame(MAC, GUEST, ip(dst), s, port, new Uint8Array([1]))
          : pingFrame(MAC, GUEST, ip(dst), s, 1, new Uint8Array(8));
        const from = g.out.length;
        await g.send(frame);
        const answer = await g.waitFor((d) => d.icmp?.type === ICMP_DEST_UNREACHABLE, 5000, from);
        assert.equal(answer.icmp!.code, ICMP_UNREACH_ADMIN_PROHIBITED, `${protocol} to ${dst}:${port}`);
      }
      // control: the allowed loopback address is dialled (nothing listens on port 9: the host refuses, RST)
      await g.send(
        tcpFrame({
          srcMac: MAC,
          src: GUEST,
          dst: ip("127.0.0.2"),
          sport: 42000,
          dport: 9,
          seq: 1,
          ack: 0,
          flags: TCP_SYN,
        }),
      );
      const rst = await g.waitFor((d) => d.tcp?.dstPort === 42000);
      assert.ok(rst.tcp!.flags & TCP_RST, "an allowed address is dialled");
      g.close();
    } finally {
      await relay.stop();
      await ns.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
