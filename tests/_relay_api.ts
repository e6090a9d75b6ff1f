/**
 * Test helpers: a multi-tenant relay in the test's process (admin API, WebSocket listener, tenant sockets in
 * a temporary directory), its admin API, and its Prometheus exposition read back.
 */
import assert from "node:assert/strict";
import { Relay, type RelayOptions } from "../src/relay/relay.ts";
import { defaultStackConfig } from "../src/stack/config.ts";
import { jsonLogger } from "../src/relay/log.ts";
import { parseHostForward } from "../src/cli.ts";
import { RelayFront } from "../src/relay/front.ts";

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

/**
 * A started single-user relay as the CLI runs it — the main thread's front and one data-plane worker — with a
 * WebSocket listener on a free port, forwarding DNS to `dnsUpstream`.
 */
export async function singleUserFront(dnsUpstream = "127.0.0.1:9"): Promise<RelayFront> {
  const stack = defaultStackConfig();
  stack.dnsUpstreams = [dnsUpstream];
  const front = new RelayFront({
    listenQemu: [],
    listenWs: ["http://127.0.0.1:0"],
    stack,
    log: jsonLogger("error"),
    logLevel: "error",
    workerUrl: new URL("../src/data_plane_worker.ts", import.meta.url),
    workers: 1,
  });
  await front.start();
  return front;
}

/** `p`, or a rejection after `ms` naming `what`: a lost frame or packet fails a test instead of hanging it. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing in ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
