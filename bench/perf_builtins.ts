/**
 * Names the V8 builtins in a `perf record -g` profile of the relay on a stripped Deno (not a test).
 *
 * Deno remaps V8's embedded builtins (TypedArray constructors, Map lookups, write barriers, IC handlers) from
 * its own binary into the code range, so perf books their samples on the `deno` file with no symbol — a
 * sixth of the data-plane thread's samples at MTU 1500, unnamed. The relay's `--perf-basic-prof` map
 * (/tmp/perf-PID.map) lists every builtin at its remapped address; the profile's mmap events give the file
 * offset each remapped copy came from. Together they turn a `deno` file offset into a builtin's name.
 *
 *   SLIRP_PROFILE=perf SLIRP_RELAY_ARGS="--workers 1" SLIRP_RELAY_V8_FLAGS=--perf-basic-prof \
 *     deno run -A bench/profile_tcp.ts up 1500
 *   deno run -A bench/perf_builtins.ts /tmp/slirp-prof/perf.data [--comm worker-1] [--top 15]
 *
 * Prints each builtin's share of the thread's samples and the JavaScript functions that called it most.
 */
import { parseArgs } from "node:util";

const { values: flags, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: { comm: { type: "string", default: "worker-1" }, top: { type: "string", default: "15" } },
});
const data = positionals[0] ?? "/tmp/slirp-prof/perf.data";

function perfScript(args: string[]): string {
  const out = new Deno.Command("perf", {
    args: ["script", "-i", data, ...args],
    stdout: "piped",
    stderr: "null",
  })
    .outputSync();
  return new TextDecoder().decode(out.stdout);
}

// the remapped copies of the embedded blob: mappings of the deno binary itself, each with its file offset
const remapped: { pid: number; start: number; size: number; fileOffset: number }[] = [];
for (const line of perfScript(["--show-mmap-events"]).split("\n")) {
  const m =
    /PERF_RECORD_MMAP2 (\d+)\/\d+: \[0x([0-9a-f]+)\(0x([0-9a-f]+)\) @ 0x([0-9a-f]+) .*r-xp (\S+\/deno)$/
      .exec(line);
  if (!m) continue;
  remapped.push({
    pid: Number(m[1]),
    start: parseInt(m[2], 16),
    size: parseInt(m[3], 16),
    fileOffset: parseInt(m[4], 16),
  });
  if (remapped.length > 8) break;
}
// the binary's main text is the largest mapping; the blob copies are the others, all of one size
const text = remapped.reduce((a, b) => (b.size > a.size ? b : a), remapped[0]);
const blobs = remapped.filter((r) => r !== text);
if (!blobs.length) throw new Error("no remapped builtins in the profile's mmap events");
const { pid, fileOffset: blobOffset, size: blobSize } = blobs[0];

// builtins by offset within the blob, from the first remapped copy listed in the perf map
const builtins: { at: number; size: number; name: string }[] = [];
for (const line of Deno.readTextFileSync(`/tmp/perf-${pid}.map`).split("\n")) {
  const [addr, size, ...name] = line.split(" ");
  if (!name[0]?.startsWith("Builtin:")) continue;
  const at = parseInt(addr, 16) - blobs[0].start;
  if (at >= 0 && at < blobSize) {
    builtins.push({ at, size: parseInt(size, 16), name: name.join(" ").slice(8) });
  }
}
builtins.sort((a, b) => a.at - b.at);

function builtinAt(offset: number): string | null {
  let lo = 0, hi = builtins.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (builtins[mid].at <= offset) lo = mid + 1;
    else hi = mid - 1;
  }
  const b = builtins[hi];
  return b && offset < b.at + b.size ? b.name : null;
}

// leaf of every sample of the thread: a builtin, other code of the deno binary, or as perf named it
const leaves = new Map<string, { n: number; callers: Map<string, number> }>();
let samples = 0;
for (const block of perfScript(["--comm", flags.comm!, "-F", "ip,sym,dso"]).split("\n\n")) {
  const frames = block.split("\n").map((l) => l.trim()).filter(Boolean);
  if (!frames.length) continue;
  samples++;
  const [ip] = frames[0].split(/\s+/);
  let leaf: string;
  if (frames[0].endsWith("/deno)")) {
    const offset = parseInt(ip, 16) - blobOffset;
    leaf = (offset >= 0 && offset < blobSize && builtinAt(offset)) || "(deno native code)";
  } else leaf = frames[0].replace(/^\S+\s+/, "").replace(/ \(.*\)$/, "");
  const caller = frames.slice(1).find((f) =>
    f.includes("JS:")
  )?.replace(/^\S+\s+/, "").replace(/ \(.*\)$/, "") ??
    "(no JavaScript caller)";
  const e = leaves.get(leaf) ?? { n: 0, callers: new Map<string, number>() };
  e.n++;
  e.callers.set(caller, (e.callers.get(caller) ?? 0) + 1);
  leaves.set(leaf, e);
}
console.log(`${samples} samples of ${flags.comm}; ${builtins.length} builtins known`);
const builtinNames = new Set(builtins.map((b) => b.name));
const named = [...leaves].filter(([k]) => builtinNames.has(k) || k === "(deno native code)");
for (const [name, e] of named.sort((a, b) => b[1].n - a[1].n).slice(0, Number(flags.top))) {
  console.log(`${(100 * e.n / samples).toFixed(2).padStart(6)} %  ${name}`);
  for (const [c, n] of [...e.callers].sort((a, b) => b[1] - a[1]).slice(0, 2)) {
    console.log(`            ${n} × ${c}`);
  }
}
