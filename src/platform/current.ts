/**
 * The platform this process runs on: the one place the runtime is chosen — Bun when the `Bun` global is
 * there, else Deno. Each implementation is loaded only under its own runtime.
 *
 * @module
 */
import type { Platform } from "./platform.ts";

export const platform: Platform = "Bun" in globalThis
  ? (await import("./bun.ts")).bunPlatform
  : (await import("./deno.ts")).denoPlatform;
