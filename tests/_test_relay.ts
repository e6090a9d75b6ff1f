/**
 * A relay for an end-to-end test, described by the command line a user would type (`serve` flags): on Deno
 * it runs in this process from those flags (`relayFromServeArgs`, the CLI's own parser), and when
 * SLIRP_RELAY_COMMAND names another way it ships (Bun, the compiled binary) it runs as that process. Either
 * way the test sees it through its listeners and its admin API — never through its objects — so one test
 * body proves every runtime.
 */
import { relayFromServeArgs } from "../src/cli.ts";
import type { Relay, RelayOptions } from "../src/relay/relay.ts";
import type { RelayFront } from "../src/relay/front.ts";
import { relayFromElsewhere, RelayProcess } from "./_relay_process.ts";
import { SECRET } from "./_relay_api.ts";

/** What the admin API says of a tenant (`GET /v1/tenants/<id>`; the fields the tests read). */
export interface TenantState {
  id: string;
  connected: boolean;
  /** The carrier of its guest ("stream", "websocket", …), or null. */
  transport: string | null;
  /** Its own TCP stream listener (tcp://HOST:PORT), or null. */
  streamTcp: string | null;
  /** Where its guest connected from, or null. */
  remote: string | null;
  /** Its own UNIX datagram socket (multi-tenant mode), or null. */
  datagramSocket: string | null;
  /** Wisp clients' sessions on its stack. */
  wispSessions: number;
  /** Its limits (the defaults, its spec's, or its token's claims). */
  quotas: Record<string, number>;
  tcpFlows: number;
  udpFlows: number;
  dhcpLeases: number;
  dhcp6Leases: number;
  /** Bytes its flows hold against its `bufferedBytes` quota. */
  bufferedBytesUsed: number;
  forwards: { protocol: string; hostAddress: string; hostPort: number; guestPort: number }[];
  counters: Record<string, number> & { drops: Record<string, number> };
}

export interface TestRelay {
  /** Stream listeners (`tcp://…`, `unix://…`), as the relay printed them. */
  readonly streamUrls: string[];
  /** WebSocket listeners (`ws://HOST:PORT`). */
  readonly wsUrls: string[];
  readonly adminUrl: string;
  /** The relay itself when it runs in this process (Deno); null when it is its own process. */
  readonly local: Relay | RelayFront | null;
  /**
   * The relay's log lines (JSON) so far: its stderr, or in this process what its main thread logged (a
   * data-plane worker's lines go to stderr: tests that read logs use `--workers 0`).
   */
  logs(): string[];
  /** An admin API request (the bearer token added). */
  api(path: string, init?: RequestInit): Promise<Response>;
  /** An admin API request with a JSON body (a string is sent as it is). */
  request(method: string, path: string, body?: unknown): Promise<Response>;
  /** A tenant's state; without `id` the only tenant (single-user mode's guest session). */
  tenant(id?: string): Promise<TenantState>;
  /** The tenant whose guest is connected (single-user mode: the live session among closed ones). */
  connectedTenant(): Promise<TenantState>;
  /** Until `ok(state)` holds for the tenant (polled), or throws after `ms` with the last state. */
  waitForTenant(ok: (t: TenantState) => boolean, ms?: number, id?: string): Promise<TenantState>;
  stop(): Promise<void>;
}

const ADMIN_TOKEN = "test-admin-token";
/** A `--token-secret-file` value that stands for the tests' secret (SECRET), written where the relay's own files go. */
export const TEST_SECRET_FILE = "@test-secret";

/**
 * Starts `slirp-relay serve ARGS` (plus an admin API on a free port) and waits until it listens.
 * `inProcessHooks` (fault injection) exist only in this process: a test that needs them runs on Deno alone.
 */
export async function startTestRelay(
  args: string[],
  inProcessHooks?: Pick<RelayOptions, "faults">,
): Promise<TestRelay> {
  if (inProcessHooks && relayFromElsewhere) throw new Error("test hooks need the relay in this process");
  const dir = await Deno.makeTempDir({ prefix: "slirp-test-relay-" });
  await Deno.writeTextFile(`${dir}/admin-token`, ADMIN_TOKEN);
  await Deno.writeFile(`${dir}/secret`, SECRET);
  const full = [
    ...args.map((a) => a === TEST_SECRET_FILE ? `${dir}/secret` : a),
    ...["--admin", "http://127.0.0.1:0", "--admin-token-file", `${dir}/admin-token`],
  ];
  let local: Relay | RelayFront | null = null;
  const localLogs: string[] = [];
  let proc: RelayProcess | null = null;
  let streamUrls: string[], wsUrls: string[], adminUrl: string;
  if (relayFromElsewhere) {
    proc = await RelayProcess.start(full, { ready: /admin API on \S+/ });
    const out = proc.stdout;
    streamUrls = [...out.matchAll(/listening on (\S+);/g)].map((m) => m[1]);
    wsUrls = [...out.matchAll(/WebSocket on (ws:\/\/[^/\s]+)/g)].map((m) => m[1]);
    adminUrl = /admin API on (\S+)/.exec(out)![1];
  } else {
    local = relayFromServeArgs(full, { ...inProcessHooks, logTo: (l) => localLogs.push(l) }).relay;
    streamUrls = await local.start();
    wsUrls = local.wsUrls;
    adminUrl = local.adminUrl!;
  }
  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${adminUrl}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(init.headers ?? {}) },
    });
  const tenant = async (id?: string): Promise<TenantState> => {
    if (id === undefined) {
      const list = await (await api("/v1/tenants")).json() as { id: string }[];
      if (list.length !== 1) throw new Error(`expected one tenant, the relay has ${list.length}`);
      id = list[0].id;
    }
    const r = await api(`/v1/tenants/${encodeURIComponent(id)}`);
    if (!r.ok) throw new Error(`GET /v1/tenants/${id}: ${r.status} ${await r.text()}`);
    return await r.json() as TenantState;
  };
  return {
    streamUrls,
    wsUrls,
    adminUrl,
    local,
    api,
    logs: () => proc ? proc.stderr : localLogs,
    request: (method, path, body) =>
      api(path, {
        method,
        headers: { "content-type": "application/json" },
        // a string goes as it is (a test of a malformed body), anything else as JSON
        body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      }),
    tenant,
    async connectedTenant() {
      const list = await (await api("/v1/tenants")).json() as { id: string; connected: boolean }[];
      const live = list.filter((t) => t.connected);
      if (live.length !== 1) throw new Error(`expected one connected tenant: ${JSON.stringify(list)}`);
      return await tenant(live[0].id);
    },
    async waitForTenant(ok, ms = 5000, id) {
      const deadline = Date.now() + ms;
      for (;;) {
        // the tenant may not be listed yet (its guest's link is still being opened): keep asking until the deadline
        const t = await tenant(id).catch((e: Error) => e);
        if (!(t instanceof Error) && ok(t)) return t;
        if (Date.now() > deadline) {
          throw new Error(`tenant state never came: ${t instanceof Error ? t.message : JSON.stringify(t)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (local) await local.stop();
      if (proc) await proc.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * The flags of a multi-tenant relay for tests: tenant sockets and captures in `dir` (nothing else goes
 * there), the tests' token secret (tests/_relay_api.ts SECRET), a WebSocket listener, no grace period, a DNS
 * upstream that answers nothing.
 */
export function multiTenantArgs(dir: string): string[] {
  return [
    ...["--multi-tenant", "--token-secret-file", TEST_SECRET_FILE, "--tenant-socket-dir", dir],
    ...["--capture-dir", dir, "--tenant-grace", "0", "--listen-ws", "http://127.0.0.1:0"],
    ...["--dns-upstream", "127.0.0.1:9", "--log-level", "error"],
  ];
}
