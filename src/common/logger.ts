/**
 * The structured log line sink every room writes to (relay/log.ts prints it as JSON lines).
 *
 * @module
 */
export type Logger = (
  level: "debug" | "info" | "warn" | "error",
  msg: string,
  fields?: Record<string, unknown>,
) => void;
