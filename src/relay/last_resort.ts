/**
 * The last line of containment: a throw or rejection that escaped every tenant's boundary (a relay bug,
 * not a guest's doing) is logged and counted instead of ending the process with every tenant in it.
 *
 * @module
 */
import type { Logger } from "../common/logger.ts";

/** Throws and rejections that reached the top, since {@linkcode installLastResortGuards}. */
export const uncaught = { errors: 0, rejections: 0 };

let installed = false;

/** Installs the process-wide `error` and `unhandledrejection` handlers (once). */
export function installLastResortGuards(log: Logger): void {
  if (installed) return;
  installed = true;
  globalThis.addEventListener("error", (e: ErrorEvent) => {
    e.preventDefault();
    const n = ++uncaught.errors;
    // the first with its stack, then at every power of ten: a loop that throws must not flood the log
    if (n === 1 || Number.isInteger(Math.log10(n))) {
      log("error", "uncaught exception contained at the top", {
        count: n,
        error: describe(e.error ?? e.message),
      });
    }
  });
  globalThis.addEventListener("unhandledrejection", (e: PromiseRejectionEvent) => {
    e.preventDefault();
    const n = ++uncaught.rejections;
    if (n === 1 || Number.isInteger(Math.log10(n))) {
      log("error", "unhandled rejection contained at the top", { count: n, error: describe(e.reason) });
    }
  });
}

function describe(err: unknown): string {
  return (err as Error)?.stack ?? String(err);
}
