/**
 * tools/closure_rules.ts: per-flow code keeps no function literal assigned to a property (V8 allocates those
 * in the old generation, and their context keeps each flow alive; see the tool's header).
 */
import assert from "node:assert/strict";

const TOOL = new URL("../tools/closure_rules.ts", import.meta.url).pathname;

async function rules(...dirs: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", TOOL, ...dirs],
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("closure rules: src/stack and src/host pass", async () => {
  const r = await rules();
  assert.equal(r.code, 0, r.stderr);
});

Deno.test("closure rules: each refused shape is named with its line; the kept shapes pass", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/refused.ts`,
      [
        "export function dial(s: { onGone?: () => void }, x: { close(): void }) {",
        "  s.onGone = () => x.close();", // line 2
        "}",
        "export class Flow {",
        "  #timer = (): void => this.fire();", // line 5: moved into the constructor by the emit
        "  constructor(readonly owner: object) {}",
        "  fire(): void {",
        "    this.owner.toString = function () { return ''; };", // line 8
        "  }",
        "}",
      ].join("\n"),
    );
    await Deno.writeTextFile(
      `${dir}/kept.ts`,
      [
        "// s.onGone = () => x.close(); in a comment is fine",
        "export function dial(s: { onGone?: () => void }, x: { close(): void }) {",
        "  const gone = () => x.close();",
        "  s.onGone = gone;",
        "}",
        "export class Flow {",
        "  #timer = (): void => this.fire();", // no parameter properties: stays a class field
        "  constructor(owner: object) { this.owner = owner; }",
        "  owner: object;",
        "  fire(): void {}",
        "}",
      ].join("\n"),
    );
    const r = await rules(dir);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refused\.ts:2: a function literal assigned to a property: s\.onGone = \(\) =>/);
    assert.match(
      r.stderr,
      /refused\.ts:5: a field initialized with a function literal in a class with parameter/,
    );
    assert.match(
      r.stderr,
      /refused\.ts:8: a function literal assigned to a property: this\.owner\.toString = function/,
    );
    assert.doesNotMatch(r.stderr, /kept\.ts/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
