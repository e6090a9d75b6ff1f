/**
 * Test helpers: `slirp-relay serve` as a user runs it, in its own process (optionally inside a private
 * network namespace the test made, so that whatever the relay dials stays there), and a guest that speaks
 * the stream protocol to it over a UNIX socket frame by frame.
 */
import assert from "node:assert/strict";
import { readFrames } from "../src/transport/stream.ts";
import { dissect, type Dissection } from "./_dissect.ts";
import { must, run } from "./_netns_guest.ts";

const CLI = new URL("../src/cli.ts", import.meta.url).pathname;

/**
 * The command that runs `slirp-relay` in these tests: the source tree on Deno, or what SLIRP_RELAY_COMMAND
 * names (space-separated) — `node_modules/.bin/bun src/cli.ts` for Bun, `dist/slirp-relay` for the compiled
 * binary — so that one suite proves each way the relay ships.
 */
export function relayCommand(): string[] {
  const chosen = Deno.env.get("SLIRP_RELAY_COMMAND")?.trim();
  return chosen ? chosen.split(/\s+/) : [Deno.execPath(), "run", "-A", CLI];
}

/** Whether the relay under test is something other than this source tree on Deno. */
export const relayFromElsewhere = Boolean(Deno.env.get("SLIRP_RELAY_COMMAND")?.trim());

/** A private network namespace with only `lo` (up): nothing sent inside it can leave the machine. */
export class PrivateNetns {
  static #serial = 0;
  private constructor(readonly name: string) {}

  static async create(sysctls: Record<string, string> = {}): Promise<PrivateNetns> {
    // test files run side by side in one process (deno test --parallel), each with its own copy of this
    // module: the pid and a counter alone would collide
    const tag = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
    const name = `slirp-priv-${Deno.pid}-${tag}-${PrivateNetns.#serial++}`;
    await must(["ip", "netns", "add", name]);
    const ns = new PrivateNetns(name);
    try {
      await must(["ip", "-n", name, "link", "set", "lo", "up"]);
      for (const [k, v] of Object.entries(sysctls)) await must(ns.wrap(["sysctl", "-q", "-w", `${k}=${v}`]));
    } catch (e) {
      await ns.close();
      throw e;
    }
    return ns;
  }

  /** `cmd` run inside the namespace. */
  wrap(cmd: string[]): string[] {
    return ["ip", "netns", "exec", this.name, ...cmd];
  }

  async close(): Promise<void> {
    await run(["ip", "netns", "del", this.name]);
  }
}

/**
 * Writes a multi-tenant relay's config file into `dir` (token secret, tenant sockets in `dir/t`, a DNS
 * upstream that answers nothing) with `tenants`; returns its path, for `serve --config`.
 */
export async function multiTenantConfig(dir: string, tenants: Record<string, unknown>[]): Promise<string> {
  await Deno.writeTextFile(`${dir}/secret`, "0123456789abcdef0123456789abcdef");
  await Deno.writeTextFile(
    `${dir}/relay.json`,
    JSON.stringify({
      "multi-tenant": true,
      "token-secret-file": `${dir}/secret`,
      "tenant-socket-dir": `${dir}/t`,
      "dns-upstream": ["127.0.0.1:9"],
      tenants,
    }),
  );
  return `${dir}/relay.json`;
}

/** A relay child process and what it printed. */
export class RelayProcess {
  readonly stderr: string[] = [];
  #stdout = "";
  #exit: Promise<Deno.CommandStatus>;
  exited = false;

  private constructor(readonly child: Deno.ChildProcess) {
    this.#exit = child.status.then((s) => {
      this.exited = true;
      return s;
    });
  }

  /**
   * Starts `slirp-relay serve ARGS` (inside `netns` when given) and waits until it prints a listener line
   * matching `ready`.
   */
  static async start(
    args: string[],
    opts: { netns?: PrivateNetns; ready?: RegExp; timeoutMs?: number } = {},
  ): Promise<RelayProcess> {
    const argv = [...relayCommand(), "serve", ...args];
    const full = opts.netns ? opts.netns.wrap(argv) : argv;
    const child = new Deno.Command(full[0], { args: full.slice(1), stdout: "piped", stderr: "piped" })
      .spawn();
    const p = new RelayProcess(child);
    p.#pump(child.stderr, (t) => p.stderr.push(...t.split("\n").filter(Boolean)));
    const ready = opts.ready ?? /listening on /;
    const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
    const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    while (!ready.test(p.#stdout)) {
      const r = await Promise.race([
        out.read(),
        new Promise<null>((res) => setTimeout(() => res(null), Math.max(0, deadline - Date.now()))),
      ]);
      if (r === null || r.done) {
        await p.stop();
        throw new Error(`Relay did not start:\n${p.#stdout}\n${p.stderr.join("\n")}`);
      }
      p.#stdout += r.value;
    }
    (async () => {
      for (;;) {
        const r = await out.read().catch(() => ({ done: true, value: "" }));
        if (r.done) return;
        p.#stdout += r.value;
      }
    })();
    return p;
  }

  get stdout(): string {
    return this.#stdout;
  }

  #pump(stream: ReadableStream<Uint8Array>, sink: (text: string) => void): void {
    (async () => {
      const r = stream.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const x = await r.read().catch(() => ({ done: true, value: "" }));
        if (x.done) return;
        sink(x.value ?? "");
      }
    })();
  }

  /** Log lines (JSON) whose msg matches. */
  logs(msg: RegExp): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const l of this.stderr) {
      try {
        const j = JSON.parse(l);
        if (msg.test(String(j.msg))) out.push(j);
      } catch { /* not JSON */ }
    }
    return out;
  }

  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit status. */
  async stop(): Promise<Deno.CommandStatus> {
    if (!this.exited) {
      try {
        this.child.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          this.child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      const s = await this.#exit;
      clearTimeout(t);
      return s;
    }
    return await this.#exit;
  }
}

/** A guest speaking the stream protocol (u32 BE length + frame) over a UNIX or TCP socket. */
export class StreamGuest {
  readonly raw: Uint8Array[] = [];
  readonly out: Dissection[] = [];
  closed = false;
  #done: Promise<void>;

  private constructor(readonly conn: Deno.Conn) {
    this.#done = readFrames(conn, 70000, (b, off, len) => {
      const f = b.slice(off, off + len);
      this.raw.push(f);
      this.out.push(dissect(f));
    }).catch(() => {}).finally(() => (this.closed = true));
  }

  static async connect(addr: { path: string } | { port: number; hostname?: string }): Promise<StreamGuest> {
    const conn = "path" in addr
      ? await Deno.connect({ transport: "unix", path: addr.path })
      : await Deno.connect({ hostname: addr.hostname ?? "127.0.0.1", port: addr.port });
    return new StreamGuest(conn);
  }

  /** Writes frames, each with its length prefix, in one write. */
  async send(...frames: Uint8Array[]): Promise<void> {
    const total = frames.reduce((n, f) => n + 4 + f.length, 0);
    const m = new Uint8Array(total);
    let p = 0;
    for (const f of frames) {
      new DataView(m.buffer).setUint32(p, f.length);
      m.set(f, p + 4);
      p += 4 + f.length;
    }
    for (let off = 0; off < m.length;) off += await this.conn.write(m.subarray(off));
  }

  /** Waits for a frame (received from index `from` on) matching `pred`. */
  async waitFor(
    pred: (d: Dissection, i: number) => boolean,
    timeoutMs = 5000,
    from = 0,
  ): Promise<Dissection> {
    const deadline = Date.now() + timeoutMs;
    for (let seen = from;;) {
      for (; seen < this.out.length; seen++) if (pred(this.out[seen], seen)) return this.out[seen];
      if (Date.now() > deadline) {
        throw new Error(`Timed out waiting for a frame (${this.out.length} received)`);
      }
      if (this.closed) {
        throw new Error(`The relay closed the guest connection (${this.out.length} frames received)`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Waits until the relay closes the connection. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const r = await Promise.race([
      this.#done.then(() => true),
      new Promise<boolean>((res) => setTimeout(() => res(false), timeoutMs)),
    ]);
    assert.ok(r, "the relay did not close the guest connection");
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

/**
 * The HTTP status a WebSocket upgrade of `path` gets from the listener on 127.0.0.1:`port`, sent as a browser
 * would over a raw TCP socket, with `headers` (Host, Origin, …) added.
 */
export async function wsUpgradeStatus(
  port: number,
  path: string,
  headers: Record<string, string> = { Host: `127.0.0.1:${port}` },
): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const lines = [
      `GET ${path} HTTP/1.1`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 13",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      "",
      "",
    ];
    await conn.write(new TextEncoder().encode(lines.join("\r\n")));
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    const status = /^HTTP\/1\.1 (\d{3})/.exec(new TextDecoder().decode(buf.subarray(0, n ?? 0)));
    return status ? Number(status[1]) : 0;
  } finally {
    conn.close();
  }
}
