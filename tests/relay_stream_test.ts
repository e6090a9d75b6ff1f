/** The stream transport over real sockets: framing, coalescing, and protocol errors confined to one guest. */
import assert from "node:assert/strict";
import { startTestRelay } from "./_test_relay.ts";
import { arpFrame, ip } from "./_frames.ts";
import { FramingError, splitFrames } from "../src/transport/framing.ts";
import { readFrames } from "../src/transport/stream.ts";
import { parseArp } from "../src/wire/arp.ts";
import { isWireError } from "../src/wire/bytes.ts";
import { which } from "./_netns_guest.ts";

function prefixed(...frames: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(frames.reduce((s, f) => s + 4 + f.length, 0));
  let p = 0;
  for (const f of frames) {
    new DataView(out.buffer).setUint32(p, f.length);
    out.set(f, p + 4);
    p += 4 + f.length;
  }
  return out;
}

Deno.test("splitFrames: whole frames out, partial frame kept, bad lengths refused", () => {
  const f = arpFrame(2, 1, 2);
  const buf = prefixed(f, f);
  const got: number[] = [];
  assert.equal(splitFrames(buf, buf.length - 3, 70000, (_b, off, len) => got.push(off, len)), 64);
  assert.deepEqual(got, [4, 60]);
  for (const len of [0, 13, 70001]) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setUint32(0, len);
    assert.throws(() => splitFrames(b, 8, 70000, () => {}), FramingError, `length ${len}`);
  }
});

Deno.test("relay: frames in both directions over TCP; a broken guest is closed without touching another", async () => {
  const relay = await startTestRelay([
    ...["--listen-qemu", "tcp://127.0.0.1:0", "--dns-upstream", "127.0.0.1:9", "--log-level", "error"],
  ]);
  const port = Number(relay.streamUrls[0].split(":").pop());
  const good = await Deno.connect({ hostname: "127.0.0.1", port });
  const bad = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    // two ARP requests in one write (coalesced input), two replies back
    await good.write(
      prefixed(
        arpFrame(0x020000000001, ip("10.0.2.15"), ip("10.0.2.2")),
        arpFrame(0x020000000001, ip("10.0.2.15"), ip("10.0.2.3")),
      ),
    );
    const replies: number[] = [];
    const reading = readFrames(good, 70000, (b, off, len) => {
      const a = parseArp(b, off + 14, off + len);
      if (!isWireError(a)) replies.push(a.senderIp);
    });
    // the bad guest announces a zero-length frame: protocol error
    await bad.write(Uint8Array.of(0, 0, 0, 0));
    const n = await bad.read(new Uint8Array(16));
    assert.equal(n, null, "the relay closed the bad connection");
    await good.write(prefixed(arpFrame(0x020000000001, ip("10.0.2.15"), ip("10.0.2.2"))));
    for (let i = 0; i < 200 && replies.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(replies, [ip("10.0.2.2"), ip("10.0.2.3"), ip("10.0.2.2")]);
    const sessions = await (await relay.api("/v1/tenants")).json();
    assert.equal(sessions.length, 1, "the bad guest's session is gone, the good one's stays");
    good.close();
    await reading.catch(() => {});
  } finally {
    await relay.stop();
    try {
      bad.close();
    } catch { /* closed */ }
  }
});

/** The relay's end of a UNIX guest link at `path`, as `ss` reports it: its kernel send buffer (skmem tb), or null. */
async function relaySendBuffer(path: string): Promise<number | null> {
  const args = ["-x", "-m", "-a", "src", path];
  const out = new TextDecoder().decode(
    (await new Deno.Command("ss", { args, stdout: "piped" }).output()).stdout,
  );
  // the accepted socket: ESTAB, its local address the listener's
  return Number(/ESTAB[^\n]*?tb(\d+)/.exec(out)?.[1] ?? NaN) || null;
}

Deno.test({
  name:
    "relay: a jumbo-frame guest's UNIX link gets a kernel buffer for 16 frames; at MTU 1500 the kernel's own stays",
  // the relay's own socket loop sizes the buffer; the runtime's sockets (the fallback) leave it to the kernel
  ignore: !which("ss") || Deno.env.get("SLIRP_SOCKETS") === "runtime",
  async fn() {
    const wmemMax = Number(await Deno.readTextFile("/proc/sys/net/core/wmem_max"));
    const wmemDefault = Number(await Deno.readTextFile("/proc/sys/net/core/wmem_default"));
    for (const mtu of [65520, 1500]) {
      const dir = await Deno.makeTempDir();
      const path = `${dir}/r.sock`;
      const relay = await startTestRelay([
        ...["--listen-qemu", `unix://${path}`, "--mtu", String(mtu)],
        ...["--dns-upstream", "127.0.0.1:9", "--log-level", "error"],
      ]);
      try {
        const guest = await Deno.connect({ transport: "unix", path });
        // the link is opened (and its buffer asked for) in the turn the relay lists the guest as connected
        await relay.waitForTenant((t) => t.connected, 10_000);
        // socket(7): the kernel doubles what is asked (its bookkeeping), after capping it at wmem_max
        const wanted = 16 * (14 + mtu + 4);
        const expected = 2 * wanted > wmemDefault ? 2 * Math.min(wanted, wmemMax) : wmemDefault;
        assert.equal(await relaySendBuffer(path), expected, `MTU ${mtu}: the link's kernel buffer`);
        guest.close();
      } finally {
        await relay.stop();
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    }
  },
});
