/**
 * Test helpers: a multi-tenant relay in the test's process (admin API, WebSocket listener, tenant sockets in
 * a temporary directory), its admin API, and its Prometheus exposition read back.
 */
import assert from "node:assert/strict";
import { Relay, type RelayOptions } from "../src/relay/relay.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { jsonLogger } from "../src/relay/log.ts";
import { parseHostForward } from "../src/cli.ts";

export const SECRET = new TextEncoder().encode("test-secret-of-at-least-16-bytes");
export const ADMIN = "admin-test-token";

/** A multi-tenant relay's options: listeners on free loopback ports, tenant sockets and captures in `dir`. */
export function multiTenantOptions(dir: string, extra: Partial<RelayOptions> = {}): RelayOptions {
  const stack = defaultStackConfig();
  stack.dnsUpstreams = ["127.0.0.1:9"];
  return {
    listenQemu: [],
    listenWs: ["http://127.0.0.1:0"],
    admin: "http://127.0.0.1:0",
    adminToken: ADMIN,
    stack,
    log: jsonLogger("error"),
    multiTenant: true,
    tokenSecret: SECRET,
    tenantSocketDir: dir,
    captureDir: dir,
    parseForward: parseHostForward,
    graceMs: 0,
    ...extra,
  };
}

export async function multiRelay(dir: string, extra: Partial<RelayOptions> = {}): Promise<Relay> {
  const relay = new Relay(multiTenantOptions(dir, extra));
  await relay.start();
  return relay;
}

export function api(
  relay: Relay,
  method: string,
  path: string,
  body?: unknown,
  token = ADMIN,
): Promise<Response> {
  return fetch(`${relay.adminUrl}${path}`, {
    method,
    headers: token ? { authorization: `Bearer ${token}`, "content-type": "application/json" } : {},
    body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
  });
}

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

/** The value of one sample (`name` with exactly `labels`), or undefined when absent. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const l = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(",");
  const key = l ? `${name}{${l}} ` : `${name} `;
  const line = text.split("\n").find((x) => x.startsWith(key));
  return line === undefined ? undefined : Number(line.slice(key.length));
}
