/**
 * Do the tests notice? Applies one-line breakages ("mutants") of promises the README makes to a copy of the
 * tree, runs the tests that should catch each, and prints which were caught. Every mutant must be caught: a
 * surviving one is a promise without a test. The list is tools/mutants.ts.
 *
 *   ./tools/deno run -A tools/mutation_check.ts            # every mutant, its listed test files
 *   ./tools/deno run -A tools/mutation_check.ts grace flows  # the mutants whose name contains a word
 *   ./tools/deno run -A tools/mutation_check.ts --all-tests  # each mutant against the whole suite (slow)
 *
 * The tests run once unbroken first: a test that fails there (another fault, a missing tool) catches no
 * mutant, so a breakage counts as caught only when a test that passed without it fails with it.
 *
 * Exit status 1 when a mutant survives or a breakage no longer applies (the code it edits moved).
 */
import { parseArgs } from "node:util";
import { type Mutant, MUTANTS } from "./mutants.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: { "all-tests": { type: "boolean", default: false } },
  allowPositionals: true,
});
const root = new URL("..", import.meta.url).pathname;
const chosen = MUTANTS.filter((m) => positionals.length === 0 || positionals.some((w) => m.name.includes(w)));

async function run(cmd: string[], cwd: string): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd[0], { args: cmd.slice(1), cwd, stdout: "piped", stderr: "piped" })
    .output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr) };
}

/** The names of the tests `deno test` reported FAILED. */
function failedTests(out: string): string[] {
  const plain = out.replace(new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g"), "");
  return [...plain.matchAll(/^(.+?) \.\.\. .*FAILED/gm)].map((x) => x[1]);
}

const work = await Deno.makeTempDir({ prefix: "slirp-mutants-" });
let failures = 0;
try {
  // a copy of the tree as it is on disk (uncommitted changes included); node_modules shared
  for (const e of Deno.readDirSync(root)) {
    if (e.name === ".git" || e.name === "node_modules") continue;
    await run(["cp", "-a", `${root}${e.name}`, `${work}/`], root);
  }
  await Deno.symlink(`${root}node_modules`, `${work}/node_modules`);
  const deno = `${root}node_modules/deno/deno`;
  const testsOf = (m: Mutant) => values["all-tests"] ? ["tests/", "src/"] : m.tests;
  const baselineFiles = [...new Set(chosen.flatMap(testsOf))];
  const baseline = await run([deno, "test", "-A", "--parallel", "--no-check", ...baselineFiles], work);
  const failingUnbroken = new Set(failedTests(baseline.out));
  if (baseline.code !== 0) {
    console.log(
      `Without any breakage ${failingUnbroken.size} test(s) already fail; they catch nothing: ${
        [...failingUnbroken].join("; ") ||
        "(no test named: a file failed to load)\n" + baseline.out.slice(-2000)
      }\n`,
    );
  }
  console.log("| breakage | caught by | result |\n| --- | --- | --- |");
  for (const m of chosen) {
    const path = `${work}/${m.file}`;
    const original = await Deno.readTextFile(path);
    const at = original.indexOf(m.from);
    if (at < 0 || original.indexOf(m.from, at + 1) >= 0) {
      console.log(`| ${m.name} | ${m.file} | ✗ the breakage no longer applies (edit the mutant) |`);
      failures++;
      continue;
    }
    await Deno.writeTextFile(path, original.slice(0, at) + m.to + original.slice(at + m.from.length));
    const files = testsOf(m);
    const r = await run([deno, "test", "-A", "--parallel", "--no-check", ...files], work);
    await Deno.writeTextFile(path, original);
    const failed = failedTests(r.out).filter((t) => !failingUnbroken.has(t));
    // a non-zero exit with no test named failing is a file that no longer loads: the breakage did that
    const caught = r.code !== 0 && (failed.length > 0 || failedTests(r.out).length === 0);
    if (!caught) failures++;
    console.log(
      `| ${m.name} | ${files.join(", ")} | ${
        caught ? `caught (${failed.length} failing: ${failed.slice(0, 2).join("; ")})` : "✗ survived"
      } |`,
    );
  }
} finally {
  await Deno.remove(work, { recursive: true });
}
Deno.exit(failures === 0 ? 0 : 1);
