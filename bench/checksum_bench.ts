/**
 * RFC 1071 sum variants on the sizes a relay sees: 20 B (IPv4 header), 64 B (small segment),
 * 1500 B (Ethernet MTU), 9000 B (jumbo), 64 KiB (max MTU frame). Run: `deno task bench`.
 */
import { SUM_VARIANTS } from "../src/wire/checksum_variants.ts";
import { checksumSum } from "../src/wire/checksum.ts";

const SIZES = [20, 64, 256, 1500, 9000, 65536];
const backing = new Uint8Array(65536 + 64);
for (let i = 0; i < backing.length; i++) backing[i] = (i * 2654435761) >>> 24;
// offset 14: where an IPv4 header starts in an Ethernet frame (2-byte aligned, not 4)
const OFF = 14;
let sink = 0;

for (const size of SIZES) {
  for (const [name, fn] of Object.entries(SUM_VARIANTS)) {
    if (name === "naive" && size > 9000) continue;
    Deno.bench({
      group: `${size} B`,
      name,
      baseline: name === "bytesUnrolled",
      n: size > 9000 ? 2000 : undefined,
      fn() {
        sink ^= fn(backing, OFF, size, 0);
      },
    });
  }
  Deno.bench({
    group: `${size} B`,
    name: "chosen (checksum.ts)",
    fn() {
      sink ^= checksumSum(backing, OFF, size, 0);
    },
  });
}
addEventListener("unload", () => {
  if (sink === -1) console.log(sink);
});
