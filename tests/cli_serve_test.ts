/** The CLI as a user runs it: `serve` in its own process, a guest frame through it, SIGTERM shutdown. */
import assert from "node:assert/strict";
import { arpFrame, ip, tcpFrame } from "./_frames.ts";
import { dissect } from "./_dissect.ts";
import { listenTcp } from "./_services.ts";
import { TCP_ACK_FLAG, TCP_PSH, TCP_RST, TCP_SYN } from "../src/wire/tcp.ts";
import { readFrames } from "../src/transport/stream.ts";
import { parseArp } from "../src/wire/arp.ts";
import { isWireError } from "../src/wire/bytes.ts";
import { relayCommand, RelayProcess, StreamGuest } from "./_relay_process.ts";

/**
 * Starts `slirp-relay serve` with `args` (under `wrapper`, e.g. prlimit, when given) and waits for its
 * stream listener's line; returns the child, the port, what it printed so far and its stdout reader.
 */
async function startServe(args: string[], opts: { wrapper?: string[]; stderr?: "piped" | "null" } = {}) {
  const argv = [...relayCommand(), "serve", "--listen-qemu", "tcp://127.0.0.1:0", ...args];
  const [cmd, ...rest] = [...(opts.wrapper ?? []), ...argv];
  const child = new Deno.Command(cmd, { args: rest, stdout: "piped", stderr: opts.stderr ?? "piped" })
    .spawn();
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let port = 0;
  while (!port) {
    const { value, done } = await out.read();
    if (done) break;
    text += value;
    port = Number(/listening on tcp:\/\/127\.0\.0\.1:(\d+)/.exec(text)?.[1] ?? 0);
  }
  if (!port) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    assert.fail(`the relay did not start:\n${text}`);
  }
  return { child, port, text, out };
}

/**
 * Runs `fn` against a started relay; whatever happens in it, the relay process does not outlive the test
 * (the test may stop it itself, to check how it exits).
 */
async function withServe(
  args: string[],
  opts: { wrapper?: string[]; stderr?: "piped" | "null" },
  fn: (s: Awaited<ReturnType<typeof startServe>>) => Promise<void>,
): Promise<void> {
  const s = await startServe(args, opts);
  try {
    await fn(s);
  } finally {
    try {
      s.child.kill("SIGKILL");
    } catch { /* already exited */ }
    await s.child.status;
    await s.out.cancel().catch(() => {});
    if (opts.stderr !== "null") await s.child.stderr.cancel().catch(() => {});
  }
}

/** Writes one frame with its 4-byte length prefix (QEMU's stream protocol). */
function sendFrame(conn: Deno.Conn, f: Uint8Array): Promise<number> {
  const m = new Uint8Array(4 + f.length);
  new DataView(m.buffer).setUint32(0, f.length);
  m.set(f, 4);
  return conn.write(m);
}

Deno.test("cli serve: --config file and flags, answers a guest over the stream protocol, exits cleanly on SIGTERM", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${dir}/relay.json`,
    JSON.stringify({ "net": "10.9.0.0/24", "dns-upstream": ["127.0.0.1:9"], "log-level": "warn" }),
  );
  await withServe(["--config", `${dir}/relay.json`], {}, async ({ child, port, text }) => {
    assert.match(text, /gateway 10\.9\.0\.2, DNS 10\.9\.0\.3/, "the config file's network is used");
    // one line says what the relay runs on: socket backend, workers, ICMP echo, DNS upstreams
    assert.match(
      text,
      /(own epoll loop|runtime sockets), 1 data-plane worker, (ICMP echo through ping sockets|no ICMP echo beyond the gateway \(allow ping sockets: sysctl -w net\.ipv4\.ping_group_range="0 2147483647"\)), DNS upstreams 127\.0\.0\.1:9\n/,
    );
    assert.match(text, /-netdev stream,id=net0,server=off,addr.type=inet,addr.host=127.0.0.1/);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await sendFrame(conn, arpFrame(0x020000000001, ip("10.9.0.15"), ip("10.9.0.2")));
    const reply = await new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("no ARP reply within 5 s")), 5000);
      readFrames(conn, 70000, (b, off, len) => {
        const a = parseArp(b, off + 14, off + len);
        if (isWireError(a)) return;
        clearTimeout(t);
        resolve(a.senderIp);
      }).catch(() => {});
    });
    assert.equal(reply, ip("10.9.0.2"));
    const t0 = performance.now();
    child.kill("SIGTERM");
    const status = await child.status;
    assert.equal(status.code, 0);
    assert.ok(performance.now() - t0 < 5000, "shutdown is bounded");
    conn.close();
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cli: bad flags exit 2 with a message; token create prints a token; --help lists the contract", async () => {
  const run = async (args: string[]) => {
    const [cmd, ...pre] = relayCommand();
    const r = await new Deno.Command(cmd, {
      args: [...pre, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: r.code, out: new TextDecoder().decode(r.stdout), err: new TextDecoder().decode(r.stderr) };
  };
  const bad = await run(["serve", "--mtu", "99999"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /Invalid MTU 99999/);
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  for (
    const flag of [
      "--listen-qemu",
      "--listen-ws",
      "--admin",
      "--net",
      "--mtu",
      "--dns-upstream",
      "--dns-record",
      "--hostfwd",
      "--multi-tenant",
      "--token-secret-file",
    ]
  ) {
    assert.ok(help.out.includes(flag), `--help lacks ${flag}`);
  }
  // each command prints its own help
  const serveHelp = await run(["serve", "--help"]);
  assert.equal(serveHelp.code, 0);
  assert.match(serveHelp.out, /^Usage: slirp-relay serve/);
  for (const flag of ["--guestfwd", "--restrict", "--dhcp-host", "--dns-search", "--net6", "--no-ipv6"]) {
    assert.ok(serveHelp.out.includes(flag), `serve --help lacks ${flag}`);
  }
  const tokenHelp = await run(["token", "--help"]);
  assert.equal(tokenHelp.code, 0);
  assert.match(tokenHelp.out, /^Usage: slirp-relay token create --tenant ID/);
  assert.doesNotMatch(tokenHelp.out, /--listen-qemu/);
  const badGuestfwd = await run(["serve", "--guestfwd", "tcp:10.0.2.2:80-127.0.0.1:8080"]);
  assert.equal(badGuestfwd.code, 2);
  assert.match(badGuestfwd.err, /guestfwd address 10.0.2.2: the gateway/);
  // of several forwards, the error names the one whose port is taken
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  const clash = await run([
    "serve",
    "--listen-qemu",
    "tcp://127.0.0.1:0",
    "--hostfwd",
    "tcp::0-:22",
    "--hostfwd",
    `tcp::${port}-:23`,
  ]).finally(() => taken.close());
  assert.equal(clash.code, 2);
  assert.match(clash.err, new RegExp(`port forward tcp:127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/secret`, "a-secret-that-is-long-enough");
  const tok = await run([
    "token",
    "create",
    "--tenant",
    "ci-42",
    "--ttl",
    "1h",
    "--token-secret-file",
    `${dir}/secret`,
  ]);
  assert.equal(tok.code, 0, tok.err);
  assert.match(tok.out.trim(), /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, "a JWT");
  assert.equal(
    (await run(["token", "create", "--tenant", "../x", "--token-secret-file", `${dir}/secret`])).code,
    2,
  );
  assert.match((await run(["--version"])).out, /^\d+\.\d+\.\d+ \((deno|bun) \d+\.\d+\.\d+\)/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cli serve: SIGTERM resets the guest's open TCP connections instead of leaving them hanging", async () => {
  const echo = await listenTcp((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  await withServe(
    ["--dns-upstream", "127.0.0.1:9", "--log-level", "error"],
    { stderr: "null" },
    async ({ child, port }) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const send = (f: Uint8Array) => sendFrame(conn, f);
      const seen: ReturnType<typeof dissect>[] = [];
      const reading = readFrames(
        conn,
        70000,
        (b, off, len) => void seen.push(dissect(b.slice(off, off + len))),
      )
        .catch(() => {});
      const waitFor = async (pred: (d: ReturnType<typeof dissect>) => boolean) => {
        for (let i = 0; i < 300; i++) {
          const d = seen.find(pred);
          if (d) {
            return d;
          }
          await new Promise((r) => setTimeout(r, 10));
        }
        throw new Error("frame never came");
      };
      const mac = 0x020000000001, me = ip("10.0.2.15"), gw = ip("10.0.2.2");
      const o = { srcMac: mac, src: me, dst: gw, sport: 41000, dport: echo.port };
      await send(arpFrame(mac, me, gw));
      await send(tcpFrame({ ...o, seq: 100, ack: 0, flags: TCP_SYN }));
      const synAck = await waitFor((d) => d.tcp !== undefined && (d.tcp.flags & TCP_SYN) !== 0);
      const theirs = (synAck.tcp!.seq + 1) >>> 0;
      await send(tcpFrame({ ...o, seq: 101, ack: theirs, flags: TCP_ACK_FLAG }));
      await send(
        tcpFrame(
          { ...o, seq: 101, ack: theirs, flags: TCP_ACK_FLAG | TCP_PSH },
          new TextEncoder().encode("ping"),
        ),
      );
      await waitFor((d) => d.tcp !== undefined && d.tcp.payloadEnd - d.tcp.payloadOffset === 4);
      child.kill("SIGTERM");
      const rst = await waitFor((d) => d.tcp !== undefined && (d.tcp.flags & TCP_RST) !== 0);
      assert.equal(rst.tcp!.srcPort, echo.port);
      assert.equal((await child.status).code, 0);
      await reading;
      conn.close();
    },
  );
  echo.close();
});

Deno.test("cli serve: out of file descriptors, the relay refuses for a moment and then serves again", async () => {
  // the relay under a 64-descriptor limit (prlimit, util-linux): guests past it cannot be accepted
  await withServe(
    ["--dns-upstream", "127.0.0.1:9"],
    { wrapper: ["prlimit", "--nofile=64"] },
    async ({ child, port }) => {
      const arp = (c: Deno.Conn) => sendFrame(c, arpFrame(0x020000000001, ip("10.0.2.15"), ip("10.0.2.2")));
      const answered = (c: Deno.Conn, ms: number) =>
        new Promise<boolean>((resolve) => {
          const t = setTimeout(() => resolve(false), ms);
          readFrames(c, 70000, () => {
            clearTimeout(t);
            resolve(true);
          }).catch(() => resolve(false));
        });
      // more guests than descriptors: the kernel completes the handshakes, the relay cannot accept them all
      const flood: Deno.Conn[] = [];
      for (let i = 0; i < 100; i++) flood.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      await new Promise((r) => setTimeout(r, 500));
      for (const c of flood) c.close();
      // once they are gone, a new guest is served
      const late = await Deno.connect({ hostname: "127.0.0.1", port });
      await arp(late);
      assert.ok(await answered(late, 5000), "a guest arriving after the flood is answered");
      late.close();
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0);
      const err = await new Response(child.stderr).text();
      assert.match(err, /accept failed \(EMFILE\); retrying in 100 ms/);
    },
  );
});

Deno.test({
  name: "cli serve: the default stream listener (127.0.0.1:8022) comes only when no guest listener was named",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const relay = await RelayProcess.start(
      ["--listen-ws", "http://127.0.0.1:0", "--dns-upstream", "127.0.0.1:9", "--workers", "0"],
      { ready: /WebSocket on ws:\/\/127\.0\.0\.1:\d+/ },
    );
    try {
      assert.doesNotMatch(
        relay.stdout,
        /listening on/,
        "a WebSocket listener alone: no stream listener beside it",
      );
    } finally {
      assert.equal((await relay.stop()).code, 0);
    }
  },
});

Deno.test({
  name:
    "cli serve under a CPU profiler (--cpu-prof: SIGPROF interrupts epoll_wait all the time): the worker's loop goes on and answers the guest",
  // the profiler flag is Deno's: the relay runs from this source tree on Deno here whatever the suite runs
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    const cli = new URL("../src/cli.ts", import.meta.url).pathname;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "-A", "--cpu-prof", `--cpu-prof-dir=${dir}/prof`, cli, "serve"],
        ...["--listen-qemu", `unix://${dir}/r.sock`, "--dns-upstream", "127.0.0.1:9", "--workers", "1"],
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const errors = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let stderr = "";
    const pump = (async () => {
      for (let r; !(r = await errors.read()).done;) stderr += r.value;
    })();
    try {
      const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      for (let text = ""; !text.includes("listening on");) {
        const r = await out.read();
        if (r.done) throw new Error(`relay did not start: ${stderr}`);
        text += r.value;
      }
      out.cancel();
      // a second of idle loop under the profiler: a hundred interrupted waits once killed the loop here
      await new Promise((r) => setTimeout(r, 1000));
      const g = await StreamGuest.connect({ path: `${dir}/r.sock` });
      try {
        await g.send(arpFrame(0x020000000001, ip("10.0.2.15"), ip("10.0.2.2")));
        await g.waitFor((d) => d.arp?.senderIp === ip("10.0.2.2"), 5000);
      } finally {
        g.close();
      }
      assert.doesNotMatch(stderr, /epoll_wait keeps failing/);
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await pump;
      await Deno.remove(dir, { recursive: true });
    }
  },
});
