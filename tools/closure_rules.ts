/**
 * No function literal assigned to a property in per-flow code (`src/stack/`, `src/host/`; CI runs this in
 * `deno task verify`).
 *
 * V8's parser marks a function literal that is assigned to a property (`o.f = () => …`, `this.#g = function
 * …`) for allocation in the old generation. Its context is young and holds what the function uses — the
 * connection, often through `this` — and an old object's pointer into the young generation keeps that
 * alive through every scavenge: each short connection's objects were promoted and lived until a full
 * collection (bench/RESULTS.md, session 24; tests/gc_retention_test.ts measures it on the TCP path). A
 * function kept in a local first (`const f = () => …; o.f = f;`), a bound method (`o.f = this.m.bind(this)`)
 * or a class field initialized in place is allocated young. Refused:
 *   - `x.y = <function literal>` anywhere in those rooms;
 *   - a class field initialized with a function literal in a class whose constructor has parameter
 *     properties (`constructor(readonly a: A)`): the TypeScript emit moves every field initializer into the
 *     constructor as `this.field = …`, the shape above.
 * The transport room's few such assignments run once per guest link, not per flow, and are left alone.
 *
 *   ./tools/deno run --allow-read tools/closure_rules.ts [DIR …]   (default: src/stack src/host)
 */
const ROOT = new URL("../", import.meta.url).pathname;
const dirs = Deno.args.length > 0 ? Deno.args : [`${ROOT}src/stack`, `${ROOT}src/host`];

/** A function literal: `function`, `async function`, `(…) =>` (with an optional return type), `a =>`. */
const FUNCTION_LITERAL = String
  .raw`(?:async\s+)?(?:function\b|\([^()]*(?:\([^()]*\)[^()]*)*\)\s*(?::\s*[^=;{]+?)?\s*=>|[\w$]+\s*=>)`;
const ASSIGNED_TO_PROPERTY = new RegExp(
  String.raw`(?:[\w$#]+|[\])])(?:\s*\.\s*#?[\w$]+)+\s*=\s*` + FUNCTION_LITERAL,
  "g",
);
const FIELD_INITIALIZER = new RegExp(
  String.raw`^\s+(?:(?:readonly|private|protected|public|static|override)\s+)*#?[\w$]+\s*(?::[^=;]+)?=\s*` +
    FUNCTION_LITERAL,
  "gm",
);
const PARAMETER_PROPERTY = /constructor\s*\(\s*(?:[^()]*?,\s*)?(?:readonly|private|protected|public)\s/s;

function walk(dir: string, out: string[] = []): string[] {
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) walk(p, out);
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) out.push(p);
  }
  return out;
}

/** Drops comments, keeping line breaks (so line numbers hold): a comment may quote the refused shape. */
function withoutComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, (c) => c.replace(/[^\n]/g, " "));
}

const problems: string[] = [];
let files = 0;
for (const dir of dirs) {
  for (const f of walk(dir.replace(/\/$/, "")).sort()) {
    files++;
    const text = withoutComments(Deno.readTextFileSync(f));
    const lineOf = (i: number) => text.slice(0, i).split("\n").length;
    const where = f.startsWith(ROOT) ? f.slice(ROOT.length) : f;
    for (const m of text.matchAll(ASSIGNED_TO_PROPERTY)) {
      problems.push(`${where}:${lineOf(m.index)}: a function literal assigned to a property: ${m[0].trim()}`);
    }
    if (!PARAMETER_PROPERTY.test(text)) continue;
    for (const m of text.matchAll(FIELD_INITIALIZER)) {
      problems.push(
        `${where}:${
          lineOf(m.index)
        }: a field initialized with a function literal in a class with parameter ` +
          `properties (the emit assigns it in the constructor): ${m[0].trim()}`,
      );
    }
  }
}

if (problems.length > 0) {
  console.error(problems.join("\n"));
  console.error(
    "keep the function in a local first (`const f = …; o.f = f;`), or make it a method: V8 allocates a " +
      "function literal assigned to a property in the old generation, and its context keeps the flow alive",
  );
  Deno.exit(1);
}
console.log(`closure rules: ${files} files, no function literal assigned to a property`);
