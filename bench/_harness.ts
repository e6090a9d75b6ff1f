/** Shared pieces of the end-to-end benchmarks. */

/** The relay's CLI entry point (SLIRP_RELAY_ENTRY substitutes a wrapper such as bench/_relay_alloc.ts). */
export const CLI = Deno.env.get("SLIRP_RELAY_ENTRY") ?? new URL("../src/cli.ts", import.meta.url).pathname;

/** Starts `slirp-relay serve` with `args` as its own process (optionally under --cpu-prof). */
export function spawnRelay(args: string[], opts: { cpuProfDir?: string } = {}): Deno.ChildProcess {
  const prof = opts.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`] : [];
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...prof,
      ...(Deno.env.get("SLIRP_RELAY_V8_FLAGS") ? [`--v8-flags=${Deno.env.get("SLIRP_RELAY_V8_FLAGS")}`] : []),
      CLI,
      "serve",
      "--log-level",
      "warn",
      ...args,
    ],
    // --v8-flags such as --trace-gc print on stdout
    stdout: Deno.env.get("SLIRP_RELAY_V8_FLAGS") ? "inherit" : "null",
    stderr: "inherit",
  }).spawn();
}

/** Resolves once a UNIX socket exists at `path` (a relay or passt finished starting). */
export async function waitForSocket(path: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      if (Deno.statSync(path).isSocket) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${path} never appeared`);
}
