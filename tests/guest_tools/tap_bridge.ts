/**
 * A TAP device bridged to a stream-protocol socket (length-prefixed frames), as its own process so that
 * benchmarks do not share the relay's thread. Usage:
 *   deno run -A tap_bridge.ts TAPNAME NETNS unix:///path|tcp://127.0.0.1:port
 * Creates TAPNAME, moves it into NETNS (which must exist), prints "ready", bridges until the socket closes.
 */
import { TapDevice } from "../../src/host/tap.ts";
import { FrameWriter, readFrames } from "../../src/transport/stream.ts";

const [name, ns, url] = Deno.args;
const tap = new TapDevice(name);
const mv = await new Deno.Command("ip", { args: ["link", "set", name, "netns", ns] }).output();
if (mv.code !== 0) throw new Error(`ip link set ${name} netns ${ns} failed`);
const conn = url.startsWith("unix://")
  ? await Deno.connect({ transport: "unix", path: url.slice(7) })
  : await Deno.connect({ hostname: "127.0.0.1", port: Number(url.split(":").pop()) });
const writer = new FrameWriter(conn, 8 * 1024 * 1024, () => tap.close());
console.log("ready");
const up = tap.readLoop((frame) => void writer.push(frame));
await readFrames(conn, 65536 + 4096, (b, off, len) => {
  tap.write(b.subarray(off, off + len));
}).catch(() => {});
tap.close();
await up;
