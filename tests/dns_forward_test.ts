/**
 * The DNS forwarder against an off-path forger: each forwarded query leaves from its own random source
 * port with a random id, and only the answer from the upstream it was sent to, on that socket, with that
 * id, reaches the guest.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { GW_MAC, ip, StackHarness, udpFrame } from "./_frames.ts";
import { DNS_RCODE_SERVFAIL, DNS_TYPE_A, emitDnsResponse } from "../src/wire/dns.ts";
import { FakeHost } from "./_fake_host.ts";
import type { HostUdpSocket, UdpHandlers } from "../src/host/host.ts";
import { e2eTest, NetnsGuest } from "./_netns_guest.ts";
import { RelayProcess } from "./_relay_process.ts";
import { startDnsResponder } from "./_services.ts";

const MAC = 0x02000000000e;
const GUEST = ip("10.0.2.15");

/** A DNS query for `name` (type A) with id `id`. */
function query(id: number, name: string): Uint8Array {
  const labels = name.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  return new Uint8Array([
    id >> 8,
    id & 0xff,
    1,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    ...labels,
    0,
    0,
    DNS_TYPE_A,
    0,
    1,
  ]);
}

Deno.test("DNS forwarding: a fresh source port and a random id per query; a forged or misdirected answer never reaches the guest", async () => {
  const seen: { port: number; id: number; msg: Uint8Array }[] = [];
  const upstream = dgram.createSocket("udp4");
  upstream.on(
    "message",
    (m, r) => seen.push({ port: r.port, id: (m[0] << 8) | m[1], msg: new Uint8Array(m) }),
  );
  await new Promise<void>((r) => upstream.bind(0, "127.0.0.1", () => r()));
  const upPort = upstream.address().port;
  const h = new StackHarness((c) => (c.dnsUpstreams = [`127.0.0.1:${upPort}`]));
  try {
    for (let i = 0; i < 20; i++) {
      h.send(udpFrame(MAC, GUEST, ip("10.0.2.3"), 30000 + i, 53, query(7, `q${i}.example.test`), GW_MAC));
    }
    for (let t = 0; t < 200 && seen.length < 20; t++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(seen.length, 20);
    assert.equal(new Set(seen.map((s) => s.port)).size, 20, "20 queries, 20 source ports");
    assert.equal(
      new Set(seen.map((s) => s.id)).size,
      20,
      "20 distinct ids although the guest used 7 each time",
    );
    const ids = seen.map((s) => s.id);
    const sequential = ids.every((id, i) => i === 0 || id === ((ids[i - 1] + 1) & 0xffff));
    assert.ok(!sequential, "ids are not a counter");
    // a forger answers the first query from another socket (wrong source port) and with a wrong id
    const first = seen[0];
    const forged = new Uint8Array(512);
    const n = emitDnsResponse(
      first.msg,
      0,
      first.msg.length,
      [{
        type: DNS_TYPE_A,
        ttl: 30,
        address: new Uint8Array([6, 6, 6, 6]),
      }],
      0,
      forged,
      0,
    ) as number;
    const forger = dgram.createSocket("udp4");
    await new Promise<void>((r) => forger.bind(0, "127.0.0.1", () => r()));
    forger.send(forged.subarray(0, n), first.port, "127.0.0.1"); // right id, wrong source
    const wrongId = forged.slice(0, n);
    wrongId[0] ^= 0xff;
    upstream.send(wrongId, first.port, "127.0.0.1"); // right source, wrong id
    await new Promise((r) => setTimeout(r, 100));
    forger.close();
    assert.equal(h.out.filter((d) => d.dns).length, 0, "nothing forged reached the guest");
    assert.equal(h.drops("dns-upstream-wrong-source"), 1);
    assert.equal(h.drops("dns-upstream-unmatched"), 1);
    // the real answer still does, with the guest's own id
    upstream.send(forged.subarray(0, n), first.port, "127.0.0.1");
    const answer = await h.waitFor((d) => d.dns !== undefined);
    assert.equal(answer.dns!.header.id, 7);
    assert.equal(answer.dns!.answers[0].value, "6.6.6.6");
    assert.equal(answer.udp!.dstPort, 30000);
  } finally {
    h.close();
    upstream.close();
  }
});

Deno.test("DNS forwarding: an upstream that refuses (ICMP port unreachable) hands the query to the next at once; when every one refused, SERVFAIL; the one that answered is asked first after", () => {
  const sent: string[] = [];
  const data: Uint8Array[] = [];
  const handlers: UdpHandlers[] = [];
  class RecordingHost extends FakeHost {
    override openUdp(h: UdpHandlers): HostUdpSocket {
      handlers.push(h);
      return {
        sendTo: (d, address, port) => {
          sent.push(`${address}:${port}`);
          data.push(d.slice());
        },
        close() {},
      };
    }
  }
  const h = new StackHarness(
    (c) => (c.dnsUpstreams = ["127.0.0.1:5301", "127.0.0.1:5302"]),
    (clock) => new RecordingHost(clock),
  );
  try {
    h.send(udpFrame(MAC, GUEST, ip("10.0.2.3"), 30500, 53, query(9, "refused.example.test"), GW_MAC));
    assert.deepEqual(sent, ["127.0.0.1:5301"]);
    handlers[0].onError("ECONNREFUSED", "127.0.0.1", 5301);
    assert.deepEqual(sent, ["127.0.0.1:5301", "127.0.0.1:5302"], "the next upstream, no timeout waited");
    // a second error about the first upstream changes nothing
    handlers[0].onError("ECONNREFUSED", "127.0.0.1", 5301);
    assert.equal(sent.length, 2);
    const before = h.out.length;
    handlers[0].onError("ECONNREFUSED", "127.0.0.1", 5302);
    const answer = h.raw.slice(before).find((f) => f.length > 42 + 12 && ((f[36] << 8) | f[37]) === 30500);
    assert.ok(answer, "the guest was answered");
    assert.equal(answer[42 + 3] & 0xf, DNS_RCODE_SERVFAIL);
    assert.equal(h.drops("dns-upstream-unreachable"), 2);

    // the second upstream answers a query: the next query, and DNS over TCP, start there
    h.send(udpFrame(MAC, GUEST, ip("10.0.2.3"), 30501, 53, query(10, "second.example.test"), GW_MAC));
    handlers.at(-1)!.onError("ECONNREFUSED", "127.0.0.1", 5301);
    assert.equal(sent.at(-1), "127.0.0.1:5302");
    const reply = data.at(-1)!.slice();
    reply[2] |= 0x80; // QR: an answer (no records; the id is what the forwarder checks)
    handlers.at(-1)!.onMessage(reply, "127.0.0.1", 5302);
    h.send(udpFrame(MAC, GUEST, ip("10.0.2.3"), 30502, 53, query(11, "third.example.test"), GW_MAC));
    assert.equal(sent.at(-1), "127.0.0.1:5302", "the upstream that answered is asked first");
    assert.deepEqual(h.stack.dns.tcpUpstream(), { address: "127.0.0.1", port: 5302 });
  } finally {
    h.close();
  }
});

e2eTest(
  "netns Linux guest: DNS through an IPv6 upstream, after an IPv4 one that refuses — over UDP and TCP, from IPv4 and IPv6",
  ["dig"],
  async () => {
    const dns = await startDnsResponder({ "www.example.test": "192.0.2.10" }, "::1");
    const dir = await Deno.makeTempDir({ prefix: "slirp-dns6-" });
    let relay: RelayProcess | null = null, guest: NetnsGuest | null = null;
    try {
      relay = await RelayProcess.start([
        ...["--listen-qemu", `unix://${dir}/relay.sock`, "--log-level", "warn"],
        // nothing listens on port 9: the first upstream refuses, and the query moves to the IPv6 one
        ...["--dns-upstream", "127.0.0.1:9", "--dns-upstream", `[::1]:${dns.port}`],
      ]);
      guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
      await guest.dhcp();
      await guest.slaac();
      for (const args of [["@10.0.2.3"], ["+tcp", "@10.0.2.3"], ["@fd00::3"], ["+tcp", "@fd00::3"]]) {
        const r = await guest.exec(["dig", "+short", "+tries=1", "+time=3", ...args, "www.example.test"]);
        assert.equal(r.stdout.trim(), "192.0.2.10", `dig ${args.join(" ")}: ${r.stdout}${r.stderr}`);
      }
      assert.ok(dns.received >= 2, "the IPv6 upstream answered over UDP");
    } finally {
      await guest?.close();
      await relay?.stop();
      dns.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
