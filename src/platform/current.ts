/**
 * The platform this process runs on: the one place the runtime is chosen (Deno today; Bun joins here).
 *
 * @module
 */
import type { Platform } from "./platform.ts";
import { denoPlatform } from "./deno.ts";

export const platform: Platform = denoPlatform;
