/**
 * The gateway's TFTP server at the stack's door, on the harness's manual clock: lock-step retransmission,
 * the duplicate ACK that must not double the transfer, block numbers past 65535, options, bounds. A real
 * guest's curl and busybox downloads are in guest_netns_test.ts.
 */
import assert from "node:assert/strict";
import { ip, StackHarness, udpFrame } from "./_frames.ts";
import type { Dissection } from "./_dissect.ts";
import type { HostFile, HostFiles } from "../src/host/host.ts";
import { MAX_TRANSFERS } from "../src/stack/tftp_service.ts";
import { FlowLimit } from "../src/stack/flow_limit.ts";
import { ReadOnlyDir } from "../src/host/read_only_dir.ts";
import { TftpOpcode } from "../src/wire/tftp.ts";

const MAC = 0x02000000000f;
const GUEST = ip("10.0.2.15");
const GW = ip("10.0.2.2");

/** Files in memory; counts what is open. */
function memoryFiles(files: Record<string, Uint8Array>): HostFiles & { open_: number } {
  const dir = {
    open_: 0,
    open(name: string): HostFile | "missing" | "refused" {
      const data = files[name.replace(/^\//, "")];
      if (!data) return "missing";
      dir.open_++;
      return {
        size: data.length,
        readAt(buf: Uint8Array, position: number) {
          const n = Math.max(0, Math.min(buf.length, data.length - position));
          buf.set(data.subarray(position, position + n));
          return n;
        },
        close: () => dir.open_--,
      };
    },
  };
  return dir;
}

const enc = new TextEncoder();
function rrq(
  name: string,
  options: Record<string, string> = {},
  opcode: number = TftpOpcode.RRQ,
): Uint8Array {
  const parts = [name, "octet", ...Object.entries(options).flat()];
  const body = enc.encode(parts.map((p) => p + "\0").join(""));
  return Uint8Array.of(0, opcode, ...body);
}
const ack = (block: number) => Uint8Array.of(0, TftpOpcode.ACK, (block >> 8) & 0xff, block & 0xff);

/** The TFTP bytes of a frame to the guest's `port`. */
function tftpOf(h: StackHarness, d: Dissection): Uint8Array {
  return h.raw[h.out.indexOf(d)].subarray(d.udp!.payloadOffset, d.udp!.payloadEnd);
}

function setup(files: Record<string, Uint8Array>, mtu = 1500, flowLimit?: FlowLimit) {
  const dir = memoryFiles(files);
  const h = new StackHarness(
    (c) => {
      c.mtu = mtu;
    },
    undefined,
    { tftpFiles: dir, flowLimit },
  );
  const send = (port: number, payload: Uint8Array) => {
    const out = h.send(udpFrame(MAC, GUEST, GW, port, 69, payload));
    return out.filter((d) => d.udp?.dstPort === port).map((d) => tftpOf(h, d));
  };
  return { h, dir, send };
}

Deno.test("TFTP: lock-step download; a lost block is sent again after the timeout, a duplicate ACK is not answered", () => {
  const file = crypto.getRandomValues(new Uint8Array(1300));
  const { h, dir, send } = setup({ "boot.bin": file });
  const [d1] = send(1000, rrq("boot.bin"));
  assert.deepEqual([...d1.subarray(0, 4)], [0, 3, 0, 1], "DATA 1 at once, from port 69");
  assert.deepEqual(d1.subarray(4), file.subarray(0, 512));
  // the ACK of block 1 is lost: block 1 again after the 1 s timeout, and nothing before it
  h.advance(900);
  assert.equal(h.out.length, 1);
  h.advance(200);
  assert.equal(h.out.length, 2, "block 1 sent again");
  const [d2] = send(1000, ack(1));
  assert.deepEqual([...d2.subarray(0, 4)], [0, 3, 0, 2]);
  // the retransmitted block 1's ACK arrives late: a duplicate, not answered (RFC 1123 §4.2.3.1)
  assert.deepEqual(send(1000, ack(1)), []);
  const [d3] = send(1000, ack(2));
  assert.equal(d3.length, 4 + 1300 - 1024, "the short last block");
  assert.deepEqual(d3.subarray(4), file.subarray(1024));
  assert.deepEqual(send(1000, ack(3)), [], "done");
  assert.equal(h.stack.tftp!.size, 0);
  assert.equal(dir.open_, 0, "the file was closed");
  const sent = h.out.length;
  h.advance(10_000);
  assert.equal(h.out.length, sent, "no timer left behind");
  h.close();
});

Deno.test("TFTP: options are answered with an OACK (blksize lowered to one frame, tsize); blocks roll past 65535", () => {
  const file = new Uint8Array(8 * 65537 + 3).map((_, i) => (i * 131 + (i >> 9)) & 0xff);
  const { h, send } = setup({ big: file, small: new Uint8Array(5000) }, 1500);
  const [oack] = send(2000, rrq("small", { blksize: "9000", tsize: "0", bogus: "1" }));
  assert.equal(oack[1], TftpOpcode.OACK);
  const fields = new TextDecoder().decode(oack.subarray(2)).split("\0");
  assert.deepEqual(fields.slice(0, 4), ["blksize", "1468", "tsize", "5000"], "1500 − 20 − 8 − 4; the size");
  const [first] = send(2000, ack(0));
  assert.equal(first.length, 4 + 1468);

  const [o] = send(2001, rrq("big", { blksize: "8" }));
  assert.equal(o[1], TftpOpcode.OACK);
  const got = new Uint8Array(file.length);
  let at = 0, block = 0;
  for (let i = 0; i < 70_000; i++) {
    const [d] = send(2001, ack(block & 0xffff));
    if (!d) break;
    block = (d[2] << 8) | d[3];
    got.set(d.subarray(4), at);
    at += d.length - 4;
    h.out.length = 0; // keep the harness's record small
    h.raw.length = 0;
  }
  assert.equal(at, file.length);
  assert.deepEqual(got, file);
  assert.equal(block, 65538 & 0xffff, "the last block's number wrapped");
  h.close();
});

Deno.test("TFTP: writes, other modes, missing files and a ninth transfer are refused with an error; a client's ERROR ends its transfer", () => {
  const { h, dir, send } = setup({ a: new Uint8Array(10_000) });
  const code = (p: Uint8Array) => p[1] === TftpOpcode.ERROR ? (p[2] << 8) | p[3] : -1;
  assert.equal(code(send(3000, rrq("a", {}, TftpOpcode.WRQ))[0]), 2);
  const netascii = Uint8Array.of(0, 1, ...enc.encode("a\0netascii\0"));
  assert.equal(code(send(3001, netascii)[0]), 4);
  assert.equal(code(send(3002, rrq("nope"))[0]), 1);
  for (let i = 0; i < MAX_TRANSFERS; i++) assert.equal(send(3100 + i, rrq("a"))[0][1], TftpOpcode.DATA);
  assert.equal(code(send(3200, rrq("a"))[0]), 0, "past the bound");
  assert.equal(h.stack.tftp!.size, MAX_TRANSFERS);
  send(3100, Uint8Array.of(0, TftpOpcode.ERROR, 0, 0, 0));
  assert.equal(h.stack.tftp!.size, MAX_TRANSFERS - 1);
  // the rest time out after five sends each
  h.advance(5 * 1000 + 100);
  for (let i = 0; i < 5; i++) h.advance(1000);
  assert.equal(h.stack.tftp!.size, 0);
  assert.equal(dir.open_, 0);
  assert.equal(h.stack.counters.drops.get("tftp-transfer-timeout"), MAX_TRANSFERS - 1);
  h.close();
});

Deno.test("TFTP: an open file counts against the relay's flow bound, and is given back when its transfer ends", () => {
  const limit = new FlowLimit(2);
  const { h, send } = setup({ a: new Uint8Array(100) }, 1500, limit);
  assert.equal(send(5000, rrq("a"))[0][1], TftpOpcode.DATA);
  assert.equal(send(5001, rrq("a"))[0][1], TftpOpcode.DATA);
  const busy = send(5002, rrq("a"))[0];
  assert.equal(busy[1], TftpOpcode.ERROR, "past the relay's bound");
  assert.equal(h.drops("relay-flow-limit"), 1);
  assert.equal(send(5003, rrq("missing"))[0][1], TftpOpcode.ERROR);
  assert.deepEqual(send(5000, ack(1)), [], "the one-block file is done");
  assert.equal(send(5004, rrq("a"))[0][1], TftpOpcode.DATA, "its place was given back");
  h.close();
  assert.equal(h.stack.tftp!.size, 0);
  assert.equal(send(5005, rrq("a")).length, 0);
});

Deno.test("TFTP: without a TFTP directory, port 69 on the gateway is an ordinary UDP destination", () => {
  const h = new StackHarness();
  assert.equal(h.stack.tftp, null);
  h.send(udpFrame(MAC, GUEST, GW, 4000, 69, rrq("a")));
  assert.equal(h.stack.counters.udpFlowsOpened, 1, "went to the host's 127.0.0.1:69 through the NAT");
  h.close();
});

Deno.test("TFTP root: a name reaches a file inside the directory and nothing outside it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/root/sub`, { recursive: true });
    await Deno.writeTextFile(`${dir}/root/sub/f`, "inside");
    await Deno.writeTextFile(`${dir}/outside`, "secret");
    await Deno.symlink(`${dir}/outside`, `${dir}/root/out`);
    await Deno.symlink(`${dir}/root/sub/f`, `${dir}/root/in`);
    const root = new ReadOnlyDir(`${dir}/root`);
    const text = (name: string) => {
      const f = root.open(name);
      if (typeof f === "string") return f;
      const b = new Uint8Array(f.size);
      f.readAt(b, 0);
      f.close();
      return new TextDecoder().decode(b);
    };
    assert.equal(text("sub/f"), "inside");
    assert.equal(text("/sub/f"), "inside", "an absolute name is relative to the root");
    assert.equal(text("\\sub\\f"), "inside", "Windows PXE clients' separators");
    assert.equal(text("in"), "inside", "a link that stays inside");
    assert.equal(text("out"), "refused", "a link that leaves the root");
    assert.equal(text("../outside"), "refused");
    assert.equal(text("sub/../../outside"), "refused");
    assert.equal(text("sub"), "refused", "a directory");
    assert.equal(text("nope"), "missing");
    assert.throws(() => ReadOnlyDir.check(`${dir}/outside`), /not a directory/);
    assert.throws(() => ReadOnlyDir.check(`${dir}/nowhere`));
    // the directory is looked up at each request: gone, its files are missing, not an error of the tenant
    await Deno.rename(`${dir}/root`, `${dir}/moved`);
    assert.equal(text("sub/f"), "missing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
