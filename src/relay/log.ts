/**
 * JSON log lines on stderr: `{"time":…,"level":"info","msg":"…",…fields}`.
 * @module
 */
import type { Logger } from "../common/logger.ts";

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LEVELS;

export function jsonLogger(
  min: LogLevel = "info",
  write: (line: string) => void = (l) => console.error(l),
): Logger {
  const threshold = LEVELS[min];
  return (level, msg, fields) => {
    if (LEVELS[level] < threshold) return;
    write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }));
  };
}
