/**
 * The import rules of `src/`, checked over the import graph (CI runs this in `deno task verify`):
 *   - no import circle between files;
 *   - each room imports only from itself and the rooms below it:
 *       wire, common (small utilities every room uses) and platform (the runtime seam) → nothing;
 *       host → wire, common, platform; stack → wire, common and the host interface (host/host.ts);
 *       transport → wire, common and the host interface; relay → all of these; cli.ts → everything.
 * Type-only imports count: a circle of types is still a circle to a reader.
 *
 *   ./tools/deno run --allow-read tools/import_rules.ts
 */
const SRC = new URL("../src/", import.meta.url).pathname;

/** What each room may import, besides itself. */
const lowest = (t: string) => t.startsWith("wire/") || t.startsWith("common/");
const ALLOWED: Record<string, (target: string) => boolean> = {
  wire: () => false,
  common: () => false,
  platform: () => false,
  host: (t) => lowest(t) || t.startsWith("platform/"),
  stack: (t) => lowest(t) || t === "host/host.ts",
  transport: (t) => lowest(t) || t === "host/host.ts",
  relay: (t) => !t.startsWith("cli"),
  "(top)": () => true,
};

function roomOf(rel: string): string {
  return rel.includes("/") ? rel.slice(0, rel.indexOf("/")) : "(top)";
}

function walk(dir: string, out: string[] = []): string[] {
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}${e.name}`;
    if (e.isDirectory) walk(`${p}/`, out);
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) out.push(p.slice(SRC.length));
  }
  return out;
}

const files = walk(SRC).sort();
const edges = new Map<string, string[]>();
const problems: string[] = [];
for (const f of files) {
  const text = Deno.readTextFileSync(SRC + f);
  const targets: string[] = [];
  for (
    const m of text.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.[^"]+)"|^\s*import\s+"(\.[^"]+)"/gms)
  ) {
    const spec = m[1] ?? m[2];
    const abs = new URL(spec, `file://${SRC}${f}`).pathname;
    if (!abs.startsWith(SRC)) continue;
    const t = abs.slice(SRC.length);
    targets.push(t);
    const from = roomOf(f), to = roomOf(t);
    if (from !== to && !(ALLOWED[from] ?? (() => false))(t)) {
      problems.push(`${f} imports ${t}: ${from} may not import from ${to}`);
    }
  }
  edges.set(f, targets);
}

// Tarjan's strongly connected components: each with more than one file is a circle
let index = 0;
const idx = new Map<string, number>(), low = new Map<string, number>(), onStack = new Set<string>();
const stack: string[] = [];
function strong(v: string): void {
  idx.set(v, index);
  low.set(v, index++);
  stack.push(v);
  onStack.add(v);
  for (const w of edges.get(v) ?? []) {
    if (!edges.has(w)) continue;
    if (!idx.has(w)) {
      strong(w);
      low.set(v, Math.min(low.get(v)!, low.get(w)!));
    } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
  }
  if (low.get(v) === idx.get(v)) {
    const scc: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1) problems.push(`import circle: ${scc.sort().join(" ↔ ")}`);
  }
}
for (const f of files) if (!idx.has(f)) strong(f);

const MAX_LINES = 800;
for (const f of files) {
  const lines = Deno.readTextFileSync(SRC + f).split("\n").length;
  if (lines > MAX_LINES) problems.push(`${f} has ${lines} lines (at most ${MAX_LINES})`);
}

if (problems.length > 0) {
  console.error(problems.join("\n"));
  Deno.exit(1);
}
console.log(
  `import rules: ${files.length} files of src/, no circle, no import up a floor, none over ${MAX_LINES} lines`,
);
