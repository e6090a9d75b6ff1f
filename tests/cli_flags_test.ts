/**
 * Every `serve` flag through a real command line: `slirp-relay serve` in its own process, each flag's effect
 * observed from outside — what a guest is told, what the admin API and metrics say, what the relay refuses.
 * Everything it could dial is on 127.0.0.1 (a DNS responder and an echo the test started).
 */
import assert from "node:assert/strict";
import { arpFrame, dhcpFrame, ip, tcpFrame, udpFrame } from "./_frames.ts";
import { RelayProcess, StreamGuest, wsUpgradeStatus } from "./_relay_process.ts";
import { startDnsResponder, startUdpEcho } from "./_services.ts";
import { parsePrometheus, sample } from "./_relay_api.ts";
import { DhcpMessageType, DhcpOption, dhcpOption } from "../src/wire/dhcp.ts";
import { TCP_SYN } from "../src/wire/tcp.ts";
import { createToken } from "../src/relay/tokens.ts";
import { ICMP_DEST_UNREACHABLE } from "../src/wire/icmpv4.ts";

const MAC = 0x02000000000e;

/** A DNS query for `name` (type A), id 0x4242. */
function dnsQuery(name: string): Uint8Array {
  const labels = name.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  return Uint8Array.of(0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...labels, 0, 0, 1, 0, 1);
}

function adminOf(relay: RelayProcess): string {
  const m = /admin API on (http:\/\/127\.0\.0\.1:\d+)/.exec(relay.stdout);
  assert.ok(m, relay.stdout);
  return m[1];
}

function wsPortOf(relay: RelayProcess): number {
  const m = /WebSocket on ws:\/\/127\.0\.0\.1:(\d+)/.exec(relay.stdout);
  assert.ok(m, relay.stdout);
  return Number(m[1]);
}

Deno.test({
  name:
    "serve flags, multi-tenant: network, MTU, DNS, admin token, limits, sockets, grace, duplicates, captures, origins",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dns = await startDnsResponder({ "upstream.test": "192.0.2.77" });
    const dir = await Deno.makeTempDir();
    await Deno.writeTextFile(`${dir}/admin`, "flag-admin-token\n");
    await Deno.writeTextFile(`${dir}/secret`, "0123456789abcdef0123456789abcdef");
    await Deno.writeTextFile(`${dir}/old-secret`, "the-secret-being-rotated-out-0001");
    await Deno.mkdir(`${dir}/captures`);
    const relay = await RelayProcess.start([
      "--multi-tenant",
      "--admin",
      "http://127.0.0.1:0",
      "--admin-token-file",
      `${dir}/admin`,
      "--token-secret-file",
      `${dir}/secret`,
      "--token-secret-file",
      `${dir}/old-secret`,
      "--instance",
      "relay-a",
      "--tenant-socket-dir",
      `${dir}/sockets`,
      "--tenant-grace",
      "1",
      "--duplicate-guest",
      "refuse",
      "--capture-dir",
      `${dir}/captures`,
      "--listen-ws",
      "http://127.0.0.1:0",
      "--ws-allow-origin",
      "https://app.example",
      "--max-tenants",
      "2",
      "--max-flows",
      "100",
      "--net",
      "10.9.0.0/24",
      "--mtu",
      "9000",
      "--dns-upstream",
      `127.0.0.1:${dns.port}`,
      "--dns-record",
      "pinned.test=198.51.100.9",
      "--log-level",
      "info",
    ], { ready: /tenant stream sockets/ });
    const admin = adminOf(relay);
    const api = (method: string, path: string, body?: unknown, token = "flag-admin-token") =>
      fetch(`${admin}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}` },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    try {
      // --admin-token-file: the file's token (trailing newline trimmed) and nothing else
      assert.equal((await api("GET", "/v1/tenants", undefined, "wrong")).status, 401);
      assert.equal((await api("GET", "/v1/tenants")).status, 200);
      // --max-flows, --max-tenants
      const metrics = await (await api("GET", "/metrics")).text();
      parsePrometheus(metrics);
      assert.equal(sample(metrics, "slirp_relay_flows_limit"), 100);
      assert.equal(sample(metrics, "slirp_relay_tenants_limit"), 2);
      // --instance: every series names this relay
      const series = metrics.split("\n").filter((l) => l !== "" && !l.startsWith("#"));
      assert.ok(series.length > 10 && series.every((l) => l.includes('{relay="relay-a"')), "relay label");
      assert.equal((await api("POST", "/v1/tenants", { id: "a" })).status, 201);
      assert.equal((await api("POST", "/v1/tenants", { id: "b" })).status, 201);
      assert.equal(
        (await api("POST", "/v1/tenants", { id: "c" })).status,
        503,
        "the third tenant is refused",
      );
      // --tenant-socket-dir, created 0700
      assert.equal(Deno.statSync(`${dir}/sockets`).mode! & 0o777, 0o700);
      const g = await StreamGuest.connect({ path: `${dir}/sockets/a.sock` });
      // --net and --mtu: what DHCP tells the guest
      await g.send(dhcpFrame(MAC, DhcpMessageType.DISCOVER));
      const offer = (await g.waitFor((d) => d.dhcp !== undefined)).dhcp!;
      assert.equal(dhcpOption(offer, DhcpOption.MESSAGE_TYPE)![0], DhcpMessageType.OFFER);
      assert.equal(offer.yiaddr, ip("10.9.0.15"));
      assert.deepEqual([...dhcpOption(offer, DhcpOption.ROUTER)!], [10, 9, 0, 2]);
      assert.deepEqual([...dhcpOption(offer, DhcpOption.INTERFACE_MTU)!], [0x23, 0x28]);
      // --dns-record answers locally; --dns-upstream gets the rest
      const guestIp = ip("10.9.0.15");
      await g.send(arpFrame(MAC, guestIp, ip("10.9.0.2")));
      await g.send(udpFrame(MAC, guestIp, ip("10.9.0.3"), 5353, 53, dnsQuery("pinned.test")));
      const pinned = (await g.waitFor((d) => d.dns?.answers[0]?.value !== undefined)).dns!;
      assert.equal(pinned.answers[0].value, "198.51.100.9");
      await g.send(udpFrame(MAC, guestIp, ip("10.9.0.3"), 5354, 53, dnsQuery("upstream.test")));
      const upstream = (await g.waitFor((d) => d.udp?.dstPort === 5354 && d.dns !== undefined)).dns!;
      assert.equal(upstream.answers[0].value, "192.0.2.77");
      // --duplicate-guest refuse
      const second = await StreamGuest.connect({ path: `${dir}/sockets/a.sock` });
      await second.waitClosed();
      // --capture-dir: captures land there, and only there
      const cap = await api("POST", "/v1/tenants/a/capture", {});
      assert.equal(cap.status, 201);
      assert.ok((await cap.json()).path.startsWith(`${dir}/captures/`));
      assert.equal((await api("POST", "/v1/tenants/a/capture", { path: "/etc/x.pcap" })).status, 400);
      await api("DELETE", "/v1/tenants/a/capture");
      // --tenant-grace 1: a second after the guest leaves, its flows are released (logged)
      g.close();
      const deadline = Date.now() + 10_000;
      while (relay.logs(/idle past its grace period/).length === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const left = relay.logs(/guest disconnected/)[0];
      const released = relay.logs(/idle past its grace period/)[0];
      assert.ok(left && released, "the grace period ended");
      const waited = Date.parse(String(released.time)) - Date.parse(String(left.time));
      assert.ok(waited >= 900, `released ${waited} ms after the guest left, not before the grace`);
      // --ws-allow-origin: the listed origin passes the origin check (then needs a token), another does not
      const ws = wsPortOf(relay);
      const host = { Host: `127.0.0.1:${ws}` };
      assert.equal(
        await wsUpgradeStatus(ws, "/v1/tenants/a/ws", { ...host, Origin: "https://app.example" }),
        401,
      );
      assert.equal(
        await wsUpgradeStatus(ws, "/v1/tenants/a/ws", { ...host, Origin: "https://evil.example" }),
        403,
      );
      // --token-secret-file twice (a rotation): a token signed with either secret is admitted, one signed
      // with neither is not
      const enc = (t: string) => new TextEncoder().encode(t);
      const exp = Math.floor(Date.now() / 1000) + 600;
      for (
        const [secret, status] of [["0123456789abcdef0123456789abcdef", 101], [
          "the-secret-being-rotated-out-0001",
          101,
        ], ["a-secret-nobody-configured-0002", 403]] as const
      ) {
        const token = await createToken(enc(secret), { tenant: "a", exp });
        const path = `/v1/tenants/a/ws?token=${token}`;
        assert.equal(
          await wsUpgradeStatus(ws, path, { ...host, Origin: "https://app.example" }),
          status,
          secret,
        );
      }
    } finally {
      await relay.stop();
      dns.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "serve flags, single-user: --no-host-loopback and --udp-idle, seen by the guest and the admin API",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const echo = await startUdpEcho();
    const dir = await Deno.makeTempDir();
    await Deno.writeTextFile(`${dir}/admin`, "t");
    const relay = await RelayProcess.start([
      "--listen-qemu",
      `unix://${dir}/r.sock`,
      "--admin",
      "http://127.0.0.1:0",
      "--admin-token-file",
      `${dir}/admin`,
      "--no-host-loopback",
      "--udp-idle",
      "1",
      "--dns-upstream",
      "127.0.0.1:9",
    ]);
    try {
      const g = await StreamGuest.connect({ path: `${dir}/r.sock` });
      const GUEST = ip("10.0.2.15");
      await g.send(arpFrame(MAC, GUEST, ip("10.0.2.2")));
      // the gateway no longer stands for the host's loopback: no SYN-ACK, an ICMP error
      await g.send(
        tcpFrame({
          srcMac: MAC,
          src: GUEST,
          dst: ip("10.0.2.2"),
          sport: 40100,
          dport: 22,
          seq: 1,
          ack: 0,
          flags: TCP_SYN,
        }),
      );
      const refused = await g.waitFor((d) => d.icmp !== undefined || d.tcp?.dstPort === 40100);
      assert.equal(refused.icmp?.type, ICMP_DEST_UNREACHABLE, "no TCP answer from 10.0.2.2");
      // a UDP flow to 127.0.0.1 directly is allowed in single-user mode, and expires after 1 s idle
      await g.send(udpFrame(MAC, GUEST, ip("127.0.0.1"), 40101, echo.port, new Uint8Array([7])));
      await g.waitFor((d) => d.udp?.dstPort === 40101);
      const admin = adminOf(relay);
      const stats = async () => {
        const list = await (await fetch(`${admin}/v1/tenants`, { headers: { authorization: "Bearer t" } }))
          .json();
        return list.length === 1
          ? await (await fetch(`${admin}/v1/tenants/${list[0].id}`, {
            headers: { authorization: "Bearer t" },
          }))
            .json()
          : null;
      };
      assert.equal((await stats())?.udpFlows, 1);
      const deadline = Date.now() + 10_000;
      let s = await stats();
      while (s?.udpFlows !== 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        s = await stats();
      }
      assert.equal(s?.udpFlows, 0, "the idle UDP flow expired");
      g.close();
    } finally {
      await relay.stop();
      echo.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
