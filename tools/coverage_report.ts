/**
 * Line and branch coverage of `src/` from a `deno test --coverage=DIR` run, per room and for the two groups
 * the project holds to a floor: the stack and wire codecs (≥ 90 % of lines) and everything else (≥ 80 %).
 * The floor fails the run only under SLIRP_E2E_REQUIRED=1 (CI), where every end-to-end test runs; a
 * developer's run without root skips those and only sees the figures.
 *
 *   ./tools/deno run --allow-read --allow-write --allow-run --allow-env tools/coverage_report.ts coverage/raw
 */
const FLOORS = { "stack + wire": 90, "everything else": 80 } as const;

const dir = Deno.args[0] ?? "coverage/raw";
const deno = Deno.execPath();
// a child process the tests killed (a relay, a guest tool) may have been writing its coverage: a truncated
// file would fail the whole report, so it is set aside with a note (its lines count as not run)
for (const e of Deno.readDirSync(dir)) {
  if (!e.name.endsWith(".json")) continue;
  const path = `${dir}/${e.name}`;
  try {
    JSON.parse(Deno.readTextFileSync(path));
  } catch {
    console.error(`coverage: skipping ${e.name}, truncated (a process killed while writing it)`);
    Deno.renameSync(path, `${path}.truncated`);
  }
}
const out = await new Deno.Command(deno, {
  args: ["coverage", dir, "--include=src/", "--lcov"],
  stdout: "piped",
  stderr: "inherit",
}).output();
if (!out.success) Deno.exit(1);

interface Tally {
  lines: number;
  linesHit: number;
  branches: number;
  branchesHit: number;
}
const tally = (): Tally => ({ lines: 0, linesHit: 0, branches: 0, branchesHit: 0 });
const rooms = new Map<string, Tally>();
const groups: Record<keyof typeof FLOORS, Tally> = { "stack + wire": tally(), "everything else": tally() };
let room = "";
let group: keyof typeof FLOORS = "everything else";
for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
  if (line.startsWith("SF:")) {
    const rel = line.slice(3).split("/src/").pop()!;
    room = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "(top)";
    group = /^(stack|wire)\//.test(rel) ? "stack + wire" : "everything else";
    if (!rooms.has(room)) rooms.set(room, tally());
    continue;
  }
  const m = /^(LF|LH|BRF|BRH):(\d+)$/.exec(line);
  if (!m) continue;
  const key = ({ LF: "lines", LH: "linesHit", BRF: "branches", BRH: "branchesHit" } as const)[
    m[1] as "LF" | "LH" | "BRF" | "BRH"
  ];
  rooms.get(room)![key] += Number(m[2]);
  groups[group][key] += Number(m[2]);
}
const pct = (hit: number, all: number) => (all === 0 ? 100 : (100 * hit) / all);
const row = (name: string, t: Tally, floor = "") =>
  `| ${name} | ${pct(t.linesHit, t.lines).toFixed(1)} | ${
    pct(t.branchesHit, t.branches).toFixed(1)
  } | ${floor} |`;
console.log("\n| src/ | lines % | branches % | floor (lines) |\n| --- | --- | --- | --- |");
for (const [name, t] of [...rooms].sort()) console.log(row(name, t));
let below = 0;
for (const [name, t] of Object.entries(groups) as [keyof typeof FLOORS, Tally][]) {
  const ok = pct(t.linesHit, t.lines) >= FLOORS[name];
  if (!ok) below++;
  console.log(row(`**${name}**`, t, `${FLOORS[name]} ${ok ? "✓" : "✗"}`));
}
if (below > 0 && Deno.env.get("SLIRP_E2E_REQUIRED") === "1") {
  console.error("Coverage fell below its floor (see the table above)");
  Deno.exit(1);
}
