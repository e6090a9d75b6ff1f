/**
 * Command line: `slirp-relay serve [flags]`, `slirp-relay --version`, `slirp-relay --help`.
 * @module
 */
import { VERSION } from "./version.ts";

const HELP = `slirp-relay ${VERSION} — a user-mode network stack for virtual machines

Usage:
  slirp-relay serve [flags]      start the relay
  slirp-relay --version | --help
`;

export function main(args: string[]): number {
  if (args.includes("--version")) {
    console.log(VERSION);
    return 0;
  }
  if (args.length === 0 || args.includes("--help") || args[0] === "help") {
    console.log(HELP);
    return 0;
  }
  if (args[0] === "serve") {
    console.log("slirp-relay serve: the packet engine is not built yet; nothing to serve. Exiting.");
    return 0;
  }
  console.error(`Unknown command "${args[0]}". Run slirp-relay --help`);
  return 2;
}

if (import.meta.main) Deno.exit(main(Deno.args));
