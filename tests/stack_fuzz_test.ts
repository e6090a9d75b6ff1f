/**
 * A hostile guest: mutated frames whose checksums are fixed up afterwards, so the garbage reaches the
 * ARP, DHCP, DNS, ICMP, UDP and TCP handlers (over IPv4 and IPv6, NDP included) instead of stopping at
 * checksum checks. The stack must never
 * throw and must still answer afterwards. Egress policy denies everything, so no mutated frame can make
 * the relay send anything beyond loopback.
 */
import assert from "node:assert/strict";
import { readPcap } from "../src/relay/pcap.ts";
import { arpFrame, dhcpFrame, GW_MAC, ip, pingFrame, StackHarness, tcpFrame, udpFrame } from "./_frames.ts";
import { rng } from "./_rng.ts";
import { listenTcp } from "./_services.ts";
import { isWireError, putMac48, u16 } from "../src/wire/bytes.ts";
import { internetChecksum, pseudoHeaderSumV4, pseudoHeaderSumV6 } from "../src/wire/checksum.ts";
import { parseIpv6 } from "../src/wire/ipv6.ts";
import { ARP_OP_REPLY } from "../src/wire/arp.ts";
import { TCP_ACK_FLAG, TCP_SYN, type TcpHeader } from "../src/wire/tcp.ts";

const GUEST_MAC = 0x020000000001;
const GUEST = ip("10.0.2.15");

/** Recomputes the IPv4 header checksum and the UDP/TCP/ICMP checksum of an untagged frame in place. */
function fixChecksums(f: Uint8Array): void {
  if (f.length < 34 || u16(f, 12) !== 0x0800 || f[14] >> 4 !== 4) return;
  const hl = (f[14] & 0xf) * 4;
  const total = Math.min(u16(f, 16), f.length - 14);
  if (hl < 20 || total < hl) return;
  f[24] = f[25] = 0;
  const c = internetChecksum(f, 14, hl);
  f[24] = c >> 8;
  f[25] = c & 0xff;
  const l4 = 14 + hl, len = total - hl, proto = f[23];
  const src = ((f[26] << 24) | (f[27] << 16) | (f[28] << 8) | f[29]) >>> 0;
  const dst = ((f[30] << 24) | (f[31] << 16) | (f[32] << 8) | f[33]) >>> 0;
  const at = proto === 6 ? 16 : proto === 17 ? 6 : proto === 1 ? 2 : -1;
  if (at < 0 || len < at + 2) return;
  f[l4 + at] = f[l4 + at + 1] = 0;
  const ck = internetChecksum(f, l4, len, proto === 1 ? 0 : pseudoHeaderSumV4(src, dst, proto, len));
  f[l4 + at] = ck >> 8;
  f[l4 + at + 1] = ck & 0xff;
}

/** The same for an IPv6 frame: the upper layer's checksum over the IPv6 pseudo-header (ICMPv6 included). */
function fixChecksums6(f: Uint8Array): void {
  if (f.length < 54 || u16(f, 12) !== 0x86dd) return;
  const ip = parseIpv6(f, 14, f.length);
  if (isWireError(ip)) return;
  const l4 = ip.payloadOffset, len = ip.payloadEnd - l4, proto = ip.protocol;
  const at = proto === 6 ? 16 : proto === 17 ? 6 : proto === 58 ? 2 : -1;
  if (at < 0 || len < at + 2) return;
  f[l4 + at] = f[l4 + at + 1] = 0;
  const ck = internetChecksum(f, l4, len, pseudoHeaderSumV6(f, ip.srcOffset, f, ip.dstOffset, proto, len));
  f[l4 + at] = ck >> 8;
  f[l4 + at + 1] = ck & 0xff;
}

function tcpSyn(dport: number): Uint8Array {
  return tcpFrame(
    {
      srcMac: GUEST_MAC,
      src: GUEST,
      dst: ip("10.0.2.2"),
      sport: 40000,
      dport,
      seq: 1,
      ack: 0,
      flags: TCP_SYN,
    },
    undefined,
    (t) =>
      Object.assign(t, { mss: 1460, windowScale: 7, sackPermitted: true, hasTimestamps: true, tsVal: 1 }),
  );
}

Deno.test("hostile guest: mutated frames with valid checksums never make the stack throw, and it keeps serving", () => {
  const h = new StackHarness((c) => {
    c.policy = { defaultAction: "deny", rules: [] };
    c.dnsRecords = [{ name: "host.slirp.internal", address: "10.0.2.2" }];
  });
  const fixtures = ["linux.pcap", "linux_ipv6.pcap"].flatMap((name) =>
    readPcap(Deno.readFileSync(new URL(`./fixtures/${name}`, import.meta.url))).packets.map((p) => {
      const f = p.data.slice();
      putMac48(f, 0, GW_MAC); // aim captured frames at our gateway
      return f;
    })
  );
  const dnsQuery = Uint8Array.of(
    0x12,
    0x34,
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
    4,
    104,
    111,
    115,
    116,
    0,
    0,
    1,
    0,
    1,
  );
  const bases = [
    ...fixtures,
    arpFrame(GUEST_MAC, GUEST, ip("10.0.2.2")),
    dhcpFrame(GUEST_MAC, 1),
    dhcpFrame(GUEST_MAC, 3),
    pingFrame(GUEST_MAC, GUEST, ip("10.0.2.2"), 1, 1, new Uint8Array(32)),
    udpFrame(GUEST_MAC, GUEST, ip("10.0.2.3"), 5353, 53, dnsQuery),
    udpFrame(GUEST_MAC, GUEST, ip("10.0.2.2"), 5353, 9999, new Uint8Array(20)),
    tcpSyn(80),
  ];
  const seed = Date.now() >>> 0;
  const next = rng(seed);
  const deadline = performance.now() + 3000;
  let runs = 0;
  for (; runs < 300_000 && performance.now() < deadline; runs++) {
    const base = bases[next() % bases.length];
    const f = base.slice(0, Math.max(14, base.length - (next() % 3 === 0 ? next() % base.length : 0)));
    const flips = 1 + (next() % 6);
    for (let k = 0; k < flips; k++) {
      // mostly beyond the Ethernet header, so the frame still reaches the IP handlers
      const at = 14 + (next() % Math.max(1, f.length - 14));
      if (at < f.length) f[at] = next() & 0xff;
    }
    if (next() % 4 !== 0) {
      fixChecksums(f);
      fixChecksums6(f);
    }
    try {
      h.stack.input(f);
      if (runs % 97 === 0) h.advance(next() % 3000); // let timers fire in between
    } catch (e) {
      assert.fail(`seed ${seed} run ${runs}: ${(e as Error).stack}\nframe ${Array.from(f).join(",")}`);
    }
  }
  assert.ok(runs > 1000);
  assert.ok(h.stack.tcp.size === 0 && h.stack.udp.size === 0, "deny-all policy opened no host flow");
  const [reply] = h.send(arpFrame(GUEST_MAC, GUEST, ip("10.0.2.2")));
  assert.equal(reply.arp!.op, ARP_OP_REPLY, "still answering after the barrage");
  assert.ok(h.stack.counters.drops.size > 5, "the garbage was counted by reason");
  h.close();
});

Deno.test("hostile guest: random segments on an established TCP connection never make the stack throw", async () => {
  const echo = await listenTcp((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  const h = new StackHarness((
    c,
  ) => (c.policy = {
    defaultAction: "deny",
    rules: [{ action: "allow", cidr: "127.0.0.1/32", ports: String(echo.port) }],
  }));
  try {
    h.send(arpFrame(GUEST_MAC, GUEST, ip("10.0.2.2")));
    const seg = (
      flags: number,
      seq: number,
      ack: number,
      payload = new Uint8Array(0),
      mutate?: (t: TcpHeader) => void,
    ) =>
      tcpFrame(
        {
          srcMac: GUEST_MAC,
          src: GUEST,
          dst: ip("10.0.2.2"),
          sport: 40001,
          dport: echo.port,
          seq,
          ack,
          flags,
        },
        payload,
        mutate,
      );
    h.send(
      seg(
        TCP_SYN,
        1000,
        0,
        undefined,
        (t) => Object.assign(t, { mss: 1460, windowScale: 7, sackPermitted: true }),
      ),
    );
    const synAck = await h.waitFor((d) => d.tcp !== undefined && (d.tcp.flags & TCP_SYN) !== 0);
    let ourSeq = 1001;
    const theirSeq = (synAck.tcp!.seq + 1) >>> 0;
    h.send(seg(TCP_ACK_FLAG, ourSeq, theirSeq));
    assert.equal(h.stack.tcp.connections()[0]?.stateName, "ESTABLISHED");
    const seed = Date.now() >>> 0;
    const next = rng(seed);
    for (let i = 0; i < 20_000; i++) {
      const around = (x: number) => (x + (next() % 200_000) - 100_000) >>> 0;
      const payload = new Uint8Array(next() % 3 === 0 ? next() % 1400 : 0);
      const flags = next() % 10 === 0 ? next() & 0x1ff : TCP_ACK_FLAG | (next() % 8 === 0 ? 0x01 : 0);
      const f = seg(
        flags & ~0x04, /* RSTs below, rarely */
        next() % 4 === 0 ? around(ourSeq) : ourSeq,
        next() % 3 === 0 ? around(theirSeq) : theirSeq,
        payload,
        (t) => {
          t.window = next() & 0xffff;
          if (next() % 5 === 0) {
            t.sackCount = 1 + (next() % 4);
            for (let k = 0; k < 8; k++) t.sackBlocks[k] = around(theirSeq);
          }
          if (next() % 7 === 0) Object.assign(t, { hasTimestamps: true, tsVal: next(), tsEcr: next() });
        },
      );
      try {
        h.stack.input(f);
        if (i % 50 === 0) h.advance(next() % 500);
      } catch (e) {
        assert.fail(`seed ${seed} segment ${i}: ${(e as Error).stack}`);
      }
      if ((flags & TCP_ACK_FLAG) && payload.length > 0 && next() % 2 === 0) {
        ourSeq = (ourSeq + payload.length) >>> 0;
      }
      if (i % 5000 === 4999) await new Promise((r) => setTimeout(r, 1)); // let host I/O run
    }
    // a RST in window ends it; the relay frees the flow and still serves ARP
    h.send(seg(0x04, ourSeq, 0));
    const [reply] = h.send(arpFrame(GUEST_MAC, GUEST, ip("10.0.2.2")));
    assert.equal(reply.arp!.op, ARP_OP_REPLY);
  } finally {
    h.close();
    echo.close();
  }
});
