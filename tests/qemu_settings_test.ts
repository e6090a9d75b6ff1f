/**
 * The settings users of QEMU's `-netdev user` expect, through `slirp-relay serve` in its own process and a real
 * Linux guest (a network namespace behind a TAP, busybox udhcpc and curl): --domain, --dns-search,
 * --dhcp-host, --dhcp-start, --guestfwd and --restrict; and --pcap, which captures from the first frame. Every host service the guest could reach listens on
 * 127.0.0.1 and was started by the test.
 */
import assert from "node:assert/strict";
import { dhcpFrame } from "./_frames.ts";
import { RelayProcess, StreamGuest } from "./_relay_process.ts";
import { freePort, listenTcp, replyThroughForward, startDnsResponder, startUdpEcho } from "./_services.ts";
import { e2eTest, NetnsGuest } from "./_netns_guest.ts";
import { DhcpMessageType, dhcpMessageType } from "../src/wire/dhcp.ts";
import { readPcap } from "../src/relay/pcap.ts";
import { dissect } from "./_dissect.ts";

const STATIC_MAC = "02:00:00:00:00:99";

e2eTest(
  "QEMU-style settings: --domain, --dns-search, --dhcp-host, --dhcp-start; --guestfwd reaches a host service and --restrict stops everything else",
  ["curl", "nc", "ping", "dig"],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "slirp-settings-" });
    const dns = await startDnsResponder({ "www.example.test": "192.0.2.10" });
    const echo = await startUdpEcho();
    let direct = 0;
    const service = await listenTcp((s) => {
      s.end("hello from the guestfwd service");
      s.on("error", () => {});
    });
    const other = await listenTcp((s) => {
      direct++;
      s.end("must not be reached");
      s.on("error", () => {});
    });
    const forwardPort = freePort();
    const relay = await RelayProcess.start([
      "--listen-qemu",
      `unix://${dir}/relay.sock`,
      "--dns-upstream",
      `127.0.0.1:${dns.port}`,
      "--domain",
      "guest.test",
      "--dns-search",
      "a.test",
      "--dns-search",
      "b.test",
      "--dhcp-start",
      "10.0.2.30",
      "--dhcp-host",
      `${STATIC_MAC}=10.0.2.9,builder`,
      "--guestfwd",
      `tcp:10.0.2.100:80-127.0.0.1:${service.port}`,
      "--restrict",
      "--hostfwd",
      `tcp:127.0.0.1:${forwardPort}-:5001`,
      "--workers",
      "0",
      "--pcap",
      `${dir}/boot.pcap`,
    ]);
    const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
    try {
      await guest.exec(["ip", "link", "set", "dev", guest.ifname, "address", STATIC_MAC]);
      const lease = await guest.dhcp();
      assert.equal(lease.ip, "10.0.2.9", "the static lease for the guest's MAC");
      assert.equal(lease.domain, "guest.test");
      assert.equal(lease.search, "a.test b.test");

      // the guestfwd address answers ARP and its port reaches the host service, restricted or not
      const fwd = await guest.exec(["curl", "-sS", "-m", "5", "--http0.9", "http://10.0.2.100/"]);
      assert.equal(fwd.stdout, "hello from the guestfwd service", fwd.stderr);

      // --restrict: the relay's own services answer (DNS, echo to the gateway)…
      const dig = await guest.exec(["dig", "+short", "+tries=1", "+time=3", "@10.0.2.3", "www.example.test"]);
      assert.equal(dig.stdout.trim(), "192.0.2.10", dig.stderr);
      const ping = await guest.exec(["ping", "-c", "1", "-W", "2", "10.0.2.2"]);
      assert.equal(ping.code, 0, ping.stdout);
      // …nothing else does: the host's loopback over TCP and UDP
      const tcp = await guest.exec(["curl", "-sS", "-m", "3", `http://10.0.2.2:${other.port}/`]);
      assert.notEqual(tcp.code, 0, "a restricted guest must not reach the host");
      const udp = await guest.exec(["nc", "-u", "-w", "2", "10.0.2.2", String(echo.port)], { stdin: "x\n" });
      assert.doesNotMatch(udp.stdout, /echo:/);
      assert.equal(direct, 0);
      assert.equal(echo.received, 0);

      // a port forward into a restricted guest still works
      const listening = guest.exec(["sh", "-c", "echo from-the-guest | nc -l -N 5001"], {
        timeoutMs: 20_000,
      });
      assert.equal(await replyThroughForward("127.0.0.1", forwardPort), "from-the-guest");
      await listening;

      // --dhcp-start: a guest without a static lease gets the first address from there
      const other2 = await StreamGuest.connect({ path: `${dir}/relay.sock` });
      try {
        await other2.send(dhcpFrame(0x020000000077, 1));
        const offer = await other2.waitFor((d) => d.dhcp !== undefined);
        assert.equal(dhcpMessageType(offer.dhcp!), DhcpMessageType.OFFER);
        assert.equal(offer.dhcp!.yiaddr, 0x0a00021e, "10.0.2.30");
      } finally {
        other2.close();
      }
      await guest.close();
      await relay.stop();
      // --pcap captured from the first frame: the guest's DHCP DISCOVER is in it, timed to the microsecond
      const capture = readPcap(await Deno.readFile(`${dir}/boot.pcap`));
      const frames = capture.packets.map((p) => dissect(p.data));
      const firstDhcp = frames.find((d) => d.dhcp !== undefined);
      assert.ok(firstDhcp, "a DHCP message in the capture");
      assert.equal(
        dhcpMessageType(firstDhcp.dhcp!),
        DhcpMessageType.DISCOVER,
        "the first DHCP is the DISCOVER",
      );
      assert.ok(
        capture.packets.some((p) => Math.round(p.timeMs * 1000) % 1000 !== 0),
        "timestamps carry microseconds",
      );
    } finally {
      await guest.close();
      await relay.stop();
      dns.close();
      echo.close();
      service.close();
      other.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
