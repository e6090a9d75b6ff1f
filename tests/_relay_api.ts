/**
 * Test helpers around a relay's APIs: the tests' token secret, the Prometheus exposition read back, and a
 * bound on a promise. The relays themselves start from a command line: tests/_test_relay.ts.
 */
import assert from "node:assert/strict";

/** The token secret of the tests' multi-tenant relays (tests/_test_relay.ts writes it for them). */
export const SECRET = new TextEncoder().encode("test-secret-of-at-least-16-bytes");

/** Checks every line of a Prometheus text exposition; returns the sample names seen. */
export function parsePrometheus(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
    const m =
      /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$/
        .exec(line);
    assert.ok(m, `not a Prometheus sample line: ${JSON.stringify(line)}`);
    names.add(m[1]);
  }
  return names;
}

/**
 * The value of one sample (`name` with exactly `labels`, besides the `relay` label every series carries), or
 * undefined when absent.
 */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const l = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(",");
  const key = l ? `${name}{${l}} ` : `${name} `;
  const line = text.split("\n").map((x) => x.replace(/\{relay="(?:[^"\\]|\\.)*",?/, "{").replace("{}", ""))
    .find((x) => x.startsWith(key));
  return line === undefined ? undefined : Number(line.slice(key.length));
}

/** `p`, or a rejection after `ms` naming `what`: a lost frame or packet fails a test instead of hanging it. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing in ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
