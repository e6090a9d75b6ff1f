import assert from "node:assert/strict";
import { readPcap } from "../src/relay/pcap.ts";
import { dissect } from "./_dissect.ts";
import { rng } from "./_rng.ts";
import { parseDhcp } from "../src/wire/dhcp.ts";
import { parseDns } from "../src/wire/dns.ts";
import { parseTcp } from "../src/wire/tcp.ts";
import { parseIpv6 } from "../src/wire/ipv6.ts";
import { ndpLinkLayerOption, parseIcmpv6 } from "../src/wire/icmpv6.ts";
import { parseDhcpv6 } from "../src/wire/dhcpv6.ts";
import { isWireError } from "../src/wire/bytes.ts";

const frames = [
  ...readPcap(await Deno.readFile(new URL("./fixtures/linux.pcap", import.meta.url))).packets,
  ...readPcap(await Deno.readFile(new URL("./fixtures/linux_ipv6.pcap", import.meta.url))).packets,
].map((p) => p.data);

/** The IPv6 parsers a guest's packet reaches, driven at `off`. */
function parseIpv6Layers(f: Uint8Array, off: number, pseudo: number): void {
  const ip = parseIpv6(f, off, f.length);
  if (!isWireError(ip)) {
    parseIcmpv6(f, ip.payloadOffset, ip.payloadEnd, pseudo);
    ndpLinkLayerOption(f, ip.payloadOffset, ip.payloadEnd, 1);
  }
  ndpLinkLayerOption(f, off, f.length, 2);
  parseDhcpv6(f, off, f.length);
}

Deno.test("fuzz: mutated and truncated fixture frames never make a parser throw", () => {
  const seed = Date.now() >>> 0;
  const next = rng(seed);
  const deadline = performance.now() + 3000;
  let runs = 0;
  for (; runs < 200_000 && performance.now() < deadline; runs++) {
    const src = frames[next() % frames.length];
    const f = src.slice(0, 1 + (next() % (src.length + 8)));
    const flips = next() % 8;
    for (let k = 0; k < flips; k++) f[next() % f.length] = next() & 0xff;
    try {
      dissect(f);
      // also drive the deep parsers directly at arbitrary offsets, where headers were not checked first
      const off = next() % f.length;
      parseDhcp(f, off, f.length);
      parseDns(f, off, f.length);
      parseTcp(f, off, f.length, next() & 0xffff);
      parseIpv6Layers(f, 14, next() & 0xffff);
      parseIpv6Layers(f, off, -1);
    } catch (e) {
      assert.fail(`seed ${seed} run ${runs}: ${e}\nframe ${Array.from(f).join(",")}`);
    }
  }
  assert.ok(runs > 1000);
});

Deno.test("fuzz: random bytes never make a parser throw", () => {
  const seed = (Date.now() ^ 0x5a5a5a5a) >>> 0;
  const next = rng(seed);
  for (let runs = 0; runs < 50_000; runs++) {
    const f = new Uint8Array(next() % 600);
    for (let i = 0; i < f.length; i++) f[i] = next() & 0xff;
    // bias towards IPv4 and IPv6 so deeper layers are reached
    const bias = next() % 3;
    if (f.length > 14 && bias === 1) {
      f[12] = 8;
      f[13] = 0;
      f[14] = 0x45;
    } else if (f.length > 60 && bias === 2) {
      f[12] = 0x86;
      f[13] = 0xdd;
      f[14] = 0x60;
      f[18] = 0;
      f[19] = Math.min(255, f.length - 54);
    }
    try {
      dissect(f);
      parseIpv6Layers(f, 14, -1);
      parseDns(f, 0, f.length);
      parseDhcp(f, 0, f.length);
    } catch (e) {
      assert.fail(`seed ${seed} run ${runs}: ${e}`);
    }
  }
});
