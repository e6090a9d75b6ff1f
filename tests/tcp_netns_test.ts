/**
 * TCP through the relay with a real Linux guest (network namespace behind a TAP): byte-exact bulk
 * transfers both ways, under netem impairment and injected loss, many concurrent connections,
 * half-close, refusal and reset. All host servers listen on 127.0.0.1; the guest reaches them as 10.0.2.2.
 * The relay starts from its command line (tests/_test_relay.ts): in this process on Deno, as its own process
 * on Bun and the binary.
 */
import assert from "node:assert/strict";
import type { RelayOptions } from "../src/relay/relay.ts";
import { freePort, listenTcp, randomFile, startHashServer } from "./_services.ts";
import { multiTenantArgs, startTestRelay, type TestRelay } from "./_test_relay.ts";
import { relayFromElsewhere } from "./_relay_process.ts";
import { e2eTest, type Impairment, must, netemAvailable, NetnsGuest } from "./_netns_guest.ts";
import { CONNECT_TIMEOUT_MS } from "../src/stack/tcp/state.ts";

const TOOL = new URL("./guest_tools/tcp_tool.ts", import.meta.url).pathname;
const MiB = 1024 * 1024;
const BULK = Number(Deno.env.get("SLIRP_TEST_BULK_MIB") ?? 256) * MiB;

const listen = listenTcp;

/** Registered but not run (a test that needs what only the relay in this process has). */
function ignoredTest(name: string): void {
  Deno.test({ name: `${name} (skipped: needs the relay in this process)`, ignore: true, fn() {} });
}
const hashServer = startHashServer;

const echoServer = () =>
  listen((s) => {
    s.pipe(s);
    s.on("error", () => {});
  });

/** Replies only after the client's EOF: proves half-close carries each direction separately. */
const halfCloseServer = () =>
  listen((s) => {
    let n = 0;
    s.on("data", (d) => (n += d.length));
    s.on("end", () => s.end(`reply-after-eof:${n}`));
    s.on("error", () => {});
  });

/** Sends 1 MiB, then resets the connection. */
const resetServer = () =>
  listen((s) => {
    s.on("error", () => {});
    s.write(new Uint8Array(MiB), () => setTimeout(() => s.resetAndDestroy(), 50));
  });

interface Env {
  relay: TestRelay;
  guest: NetnsGuest;
  dir: string;
  tool(args: string[], timeoutMs?: number): Promise<Record<string, unknown>>;
  forwardPort: number;
  close(): Promise<void>;
}

/**
 * A relay (the runtime's sockets on one thread, `--workers 0`) with a port forward into the guest's port
 * 5001, and a netns Linux guest with its lease. `bufferedBytes`: the guest is a tenant of a multi-tenant
 * relay with that memory quota (a single-user relay has no flag for it), allowed to reach 127.0.0.1.
 */
async function setup(
  opts: { mtu?: number; impair?: Impairment; bufferedBytes?: number; faults?: RelayOptions["faults"] } = {},
): Promise<Env> {
  const dir = await Deno.makeTempDir({ prefix: "slirp-tcp-" });
  const forwardPort = freePort();
  const common = ["--mtu", String(opts.mtu ?? 1500), "--workers", "0", "--log-level", "warn"];
  let relay: TestRelay, socket: string;
  if (opts.bufferedBytes === undefined) {
    relay = await startTestRelay([
      ...["--listen-qemu", `unix://${dir}/relay.sock`, "--dns-upstream", "127.0.0.1:9"],
      ...["--hostfwd", `tcp:127.0.0.1:${forwardPort}-:5001`, ...common],
    ], opts.faults ? { faults: opts.faults } : undefined);
    socket = `${dir}/relay.sock`;
  } else {
    relay = await startTestRelay([...multiTenantArgs(dir), ...common]);
    const created = await relay.request("POST", "/v1/tenants", {
      id: "guest",
      policy: { allow: ["127.0.0.1/32"] },
      // the single-user relay this test had has no new-flow rate: 500 at once must pass
      quotas: { bufferedBytes: opts.bufferedBytes, newFlowsPerSecond: 1000 },
      hostfwd: [`tcp:127.0.0.1:${forwardPort}-:5001`],
    });
    assert.equal(created.status, 201, await created.text());
    socket = `${dir}/guest.sock`;
  }
  const guest = await NetnsGuest.create(`unix://${socket}`, { impair: opts.impair });
  await guest.dhcp();
  const tool = async (args: string[], timeoutMs = 300_000) => {
    const r = await guest.exec([Deno.execPath(), "run", "-A", "--quiet", TOOL, ...args], { timeoutMs });
    const last = r.stdout.trim().split("\n").pop() ?? "";
    try {
      return JSON.parse(last);
    } catch {
      throw new Error(`guest tool ${args[0]} printed no result (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
    }
  };
  return {
    relay,
    guest,
    dir,
    tool,
    forwardPort,
    async close() {
      await guest.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Sends `file` from the host to the guest through the port forward; returns what the guest hashed. */
async function hostToGuest(env: Env, file: string): Promise<Record<string, unknown>> {
  const listening = env.tool(["listen", "5001"]);
  // the guest prints {"listening":…} before accepting; give it a moment, then retry connects
  let sock: Deno.Conn | null = null;
  for (let i = 0; i < 100 && !sock; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const c = await Deno.connect({ hostname: "127.0.0.1", port: env.forwardPort });
    // a forward whose guest port is not yet open is reset by the guest: probe with a read timeout longer
    // than the first SYN retransmission (1 s, RFC 6298 §2.1), since the impaired runs lose 3% of SYNs
    // too and the reset may come only after the retry
    const probe = await Promise.race([
      c.read(new Uint8Array(1)).catch(() => null),
      new Promise((r) => setTimeout(() => r("open"), 2500)),
    ]);
    if (probe === "open") sock = c;
    else c.close();
  }
  if (!sock) throw new Error("port forward never reached the guest listener");
  const f = await Deno.open(file);
  await f.readable.pipeTo(sock.writable);
  return await listening;
}

async function bulkBothWays(env: Env, label: string): Promise<void> {
  const file = await randomFile(env.dir, BULK);
  const hs = await hashServer();
  try {
    const up = await env.tool(["send", "10.0.2.2", String(hs.port), file.path]);
    assert.equal(up.sent, BULK, `${label}: guest→host sent`);
    assert.equal(up.reply, file.sha256, `${label}: guest→host SHA-256`);
    const down = await hostToGuest(env, file.path);
    assert.equal(down.bytes, BULK, `${label}: host→guest bytes`);
    assert.equal(down.sha256, file.sha256, `${label}: host→guest SHA-256`);
    const mbit = (ms: unknown) => Math.round((BULK * 8) / (Number(ms) / 1000) / 1e6);
    console.log(
      `${label}: guest→host ${mbit(up.ms)} Mbit/s, host→guest ${mbit(down.ms)} Mbit/s (${
        BULK / MiB
      } MiB each)`,
    );
  } finally {
    hs.close();
  }
}

e2eTest(
  "TCP: HTTP fetch via 10.0.2.2, and 256 MiB each way byte-exact (guest→host, host→guest via hostfwd)",
  ["curl"],
  async () => {
    const env = await setup();
    const http = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req) => new Response(`hello from ${new URL(req.url).pathname}`),
    );
    try {
      const r = await env.guest.exec([
        "curl",
        "-sS",
        "-m",
        "10",
        `http://10.0.2.2:${http.addr.port}/index.html`,
      ]);
      assert.equal(r.stdout, "hello from /index.html", r.stderr);
      await bulkBothWays(env, "clean");
    } finally {
      await http.shutdown();
      await env.close();
    }
  },
);

e2eTest(
  "TCP: byte-exact with the guest's frames impaired (loss 3%, reorder 10%, duplicate 1%)",
  ["tc"],
  async () => {
    // tc netem where the kernel has it; otherwise the same impairment applied by the TAP bridge
    const netem = await netemAvailable();
    const impair = netem ? undefined : { loss: 0.03, reorder: 0.1, duplicate: 0.01, seed: 99 };
    const env = await setup({ impair });
    try {
      if (netem) {
        await must([
          "ip",
          "netns",
          "exec",
          env.guest.ns,
          "tc",
          "qdisc",
          "add",
          "dev",
          env.guest.ifname,
          "root",
          "netem",
          "delay",
          "1ms",
          "loss",
          "3%",
          "reorder",
          "10%",
          "duplicate",
          "1%",
        ]);
      }
      await bulkBothWays(env, netem ? "netem" : "bridge-impaired");
      if (!netem) assert.ok(env.guest.impaired.dropped > 100 && env.guest.impaired.reordered > 100);
    } finally {
      await env.close();
    }
  },
);

// fault injection is a hook of the relay in this process, not a flag: this one runs on Deno alone
(relayFromElsewhere ? ignoredTest : e2eTest)(
  "TCP: byte-exact with 3% of the relay's guest-bound frames dropped",
  [],
  async () => {
    const env = await setup({ faults: { guestBoundLoss: 0.03, seed: 12345 } });
    try {
      await bulkBothWays(env, "relay-loss");
      const { counters } = await env.relay.tenant();
      assert.ok((counters.drops["fault-injected"] ?? 0) > 1000, "loss was really injected");
      assert.ok(counters.tcpRetransmits > 0);
    } finally {
      await env.close();
    }
  },
);

e2eTest("TCP: 500 concurrent connections each echo 64 KiB; half-close; refusal; host reset", [], async () => {
  const env = await setup();
  const echo = await echoServer();
  const half = await halfCloseServer();
  const rst = await resetServer();
  try {
    const many = await env.tool(["many", "10.0.2.2", String(echo.port), "500", String(64 * 1024)]);
    assert.deepEqual(many, { ok: 500, errors: [] });
    const hc = await env.tool(["halfclose", "10.0.2.2", String(half.port)]);
    assert.equal(hc.reply, "reply-after-eof:18");
    // a port nobody listens on: the host refuses, the guest must see ECONNREFUSED at once
    const closed = await listen(() => {});
    const closedPort = closed.port;
    closed.close();
    const dialsBefore = (await env.relay.tenant()).counters.tcpFlowsOpened;
    const refused = await env.tool(["refused", "10.0.2.2", String(closedPort)]);
    assert.equal(refused.error, "ConnectionRefused");
    console.log(`refused connect took ${Number(refused.ms).toFixed(1)} ms`);
    // refused at the first SYN: a guest that had to retransmit it (1 s later) would have dialled twice
    const dials = (await env.relay.tenant()).counters.tcpFlowsOpened - dialsBefore;
    assert.equal(dials, 1, "one SYN, one dial, one RST");
    // ...and not the reset of a dial left hanging until the relay's connect timeout (20 s)
    assert.ok(Number(refused.ms) < CONNECT_TIMEOUT_MS / 2, `refused after ${refused.ms} ms`);
    const reset = await env.tool(["reset", "10.0.2.2", String(rst.port)]);
    assert.equal(reset.error, "ConnectionReset");
    // every flow was freed
    await env.relay.waitForTenant((t) => t.tcpFlows === 0, 5000);
  } finally {
    echo.close();
    half.close();
    rst.close();
    await env.close();
  }
});

e2eTest(
  "TCP: 500 concurrent echoes under a 1 MiB memory budget all finish (every flow keeps a small ring and window)",
  [],
  async () => {
    const env = await setup({ bufferedBytes: 1024 * 1024 });
    const echo = await echoServer();
    try {
      const many = await env.tool(["many", "10.0.2.2", String(echo.port), "500", String(64 * 1024)]);
      assert.deepEqual(many, { ok: 500, errors: [] });
    } finally {
      echo.close();
      await env.close();
    }
  },
);
