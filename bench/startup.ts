/**
 * Cold start and idle memory of each way the relay ships: the source on Deno, the source on Bun, and the
 * compiled binary (build it first: `npx deno task build`). For each, N starts of `serve` in single-user mode
 * (one data-plane worker): milliseconds from spawn to the "relay started" log line, then RSS after 2 s idle.
 *
 *   ./tools/deno run -A bench/startup.ts [N]
 */
const N = Number(Deno.args[0] ?? 5);
const root = new URL("../", import.meta.url).pathname;
const ways: [string, string[]][] = [
  // as `npm start` runs it
  ["deno (source)", [
    `${root}tools/deno`,
    "run",
    "--v8-flags=--max-semi-space-size=1,--expose-gc",
    "-A",
    `${root}src/cli.ts`,
  ]],
  ["bun (source)", [`${root}node_modules/.bin/bun`, `${root}src/cli.ts`]],
  ["binary (bun)", [`${root}dist/slirp-relay`]],
];

function rssKiB(pid: number): number {
  // the process and its children (the Deno launcher execs; Bun's worker is a thread)
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log('| way | cold start to "relay started", ms (median of %d) | RSS idle, MiB (median) |', N);
console.log("| --- | --- | --- |");
for (const [name, cmd] of ways) {
  const starts: number[] = [], rss: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    const child = new Deno.Command(cmd[0], {
      args: [...cmd.slice(1), "serve", "--listen-qemu", "tcp://127.0.0.1:0", "--dns-upstream", "127.0.0.1:9"],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes('"relay started"')) {
      const r = await reader.read();
      if (r.done) throw new Error(`${name} exited before starting`);
      text += r.value;
    }
    starts.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 2000));
    rss.push(rssKiB(child.pid) / 1024);
    child.kill("SIGTERM");
    await child.status;
    reader.cancel().catch(() => {});
  }
  console.log(`| ${name} | ${median(starts).toFixed(0)} | ${median(rss).toFixed(1)} |`);
}
