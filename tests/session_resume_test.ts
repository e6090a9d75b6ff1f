/**
 * Single-user mode: a guest whose link breaks and comes back (QEMU's `reconnect`, a browser VM's WebSocket)
 * with the same MAC within the grace period gets its session back — lease and open TCP connections — over
 * the same carrier or another; any other guest gets a session of its own, and a session waiting for its guest
 * never keeps a new guest out at the tenant limit.
 */
import assert from "node:assert/strict";
import type * as net from "node:net";
import { SimGuest } from "./_sim_guest.ts";
import { within } from "./_relay_api.ts";
import { startTestRelay, type TestRelay } from "./_test_relay.ts";
import { listenTcp } from "./_services.ts";
import { e2eTest, NetnsGuest } from "./_netns_guest.ts";

/** A single-user relay on a UNIX stream socket and a WebSocket listener, plus `extra` flags. */
async function singleUserRelay(dir: string, extra: string[] = []): Promise<TestRelay> {
  return await startTestRelay([
    ...["--listen-qemu", `unix://${dir}/relay.sock`, "--listen-ws", "http://127.0.0.1:0"],
    ...["--dns-upstream", "127.0.0.1:9", "--log-level", "error", ...extra],
  ]);
}

/** A TCP server on 127.0.0.1 (or `host`) running `serve` per connection; `close` ends them all with it. */
async function tcpServer(
  serve: (s: net.Socket) => void,
  host?: string,
): Promise<{ port: number; close(): void }> {
  const open = new Set<net.Socket>();
  const server = await listenTcp((s) => {
    open.add(s);
    s.on("error", () => {});
    s.on("close", () => open.delete(s));
    serve(s);
  }, host);
  return {
    port: server.port,
    close() {
      for (const s of open) s.destroy();
      server.close();
    },
  };
}

/** A TCP echo server on 127.0.0.1. */
const echoServer = () => tcpServer((s) => s.pipe(s));

/** Connects `g` over a WebSocket, one frame per message (v86's carrier). */
async function overWebSocket(g: SimGuest, url: string): Promise<void> {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await within(new Promise((r, j) => ((ws.onopen = r), (ws.onerror = j))), 5000, "WebSocket open");
  ws.onmessage = (e) => g.receive(new Uint8Array(e.data as ArrayBuffer));
  g.attach({ send: (f) => (ws.send(f.slice()), true), backlog: 0, close: () => ws.close() });
}

/** Sends `n` bytes on `g`'s open connection and waits for them to come back. */
function echo(g: SimGuest, n: number): Promise<void> {
  const data = new Uint8Array(n).map((_, i) => (i * 7) & 0xff);
  return within(g.request(data, n), 10_000, `echo of ${n} bytes`);
}

/** Sessions the admin API lists, by id → whether a guest is connected. */
async function sessions(relay: TestRelay): Promise<Record<string, boolean>> {
  const list = await (await relay.api("/v1/tenants")).json() as { id: string; connected: boolean }[];
  return Object.fromEntries(list.map((t) => [t.id, t.connected]));
}

async function waitUntil(ok: () => Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

Deno.test("single-user: a guest that reconnects with its MAC resumes its session — the same TCP connection echoes on, over a stream socket and then a WebSocket; another MAC gets a session of its own", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await singleUserRelay(dir);
  const server = await echoServer();
  const g = new SimGuest(1);
  const other = new SimGuest(2);
  try {
    await g.connect(`${dir}/relay.sock`);
    g.dhcp(1);
    await within(g.leased, 10_000, "DHCP");
    await within(g.open(server.port, 40100), 10_000, "TCP handshake");
    await echo(g, 1000);
    const [first] = Object.keys(await sessions(relay));

    // the link breaks; the TCP connection inside it does not
    g.close();
    await waitUntil(async () => (await sessions(relay))[first] === false, "the session waits for its guest");
    await g.connect(`${dir}/relay.sock`);
    await echo(g, 1200);
    assert.deepEqual(await sessions(relay), { [first]: true }, "the guest is back in its session");
    assert.equal(g.resets, 0);

    // and again, over the other carrier
    g.close();
    await waitUntil(async () => (await sessions(relay))[first] === false, "the session waits again");
    await overWebSocket(g, `${relay.wsUrls[0]}/`);
    await echo(g, 800);
    assert.deepEqual(await sessions(relay), { [first]: true });
    assert.equal((await relay.tenant(first)).transport, "websocket");

    // a guest of another MAC is not this one: a fresh session (and its own lease) beside it
    await other.connect(`${dir}/relay.sock`);
    other.dhcp(1);
    await within(other.leased, 10_000, "DHCP of the other guest");
    const now = await sessions(relay);
    assert.equal(Object.keys(now).length, 2);
    assert.equal(Object.values(now).filter(Boolean).length, 2, "both connected");
    assert.equal(g.resets, 0);
  } finally {
    g.close();
    other.close();
    server.close();
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/** A TCP server on 127.0.0.1 that echoes what it got only when `release()` is called. */
async function heldEchoServer(): Promise<
  { port: number; got: () => number; release(): void; close(): void }
> {
  const held: { s: net.Socket; data: Uint8Array }[] = [];
  let got = 0;
  const server = await tcpServer((s) => {
    s.on("data", (d: Uint8Array) => {
      got += d.length;
      held.push({ s, data: d });
    });
  });
  return {
    ...server,
    got: () => got,
    release() {
      for (const { s, data } of held.splice(0)) s.write(data);
    },
  };
}

Deno.test("single-user: an answer that came while the guest was away reaches it once it is back — the relay asks for the guest on the new connection and sends its flight again at once", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await singleUserRelay(dir);
  const server = await heldEchoServer();
  const g = new SimGuest(1);
  try {
    await g.connect(`${dir}/relay.sock`);
    g.dhcp(1);
    await within(g.leased, 10_000, "DHCP");
    await within(g.open(server.port, 40300), 10_000, "TCP handshake");
    const answered = g.request(new Uint8Array(1000).fill(7), 1000);
    await waitUntil(() => Promise.resolve(server.got() === 1000), "the request at the host");
    const [session] = Object.keys(await sessions(relay));
    g.close();
    await waitUntil(
      async () => (await sessions(relay))[session] === false,
      "the session waits for its guest",
    );
    // the answer meets no link: lost, and the relay's RTO backs off
    server.release();
    await waitUntil(
      async () => (await relay.tenant(session)).counters.tcpTimeouts >= 1,
      "a retransmission timeout while the guest is away",
    );
    // back: the guest says nothing first; it answers the relay's ARP request, and the answer follows
    await g.connect(`${dir}/relay.sock`);
    await within(answered, 10_000, "the answer after the guest came back");
    const counters = (await relay.tenant(session)).counters;
    assert.equal(counters.tcpResentOnLinkReturn, 1, "the flight sent again when the link came back");
    assert.deepEqual(await sessions(relay), { [session]: true });
  } finally {
    g.close();
    server.close();
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("single-user with --tenant-grace 0: a guest that reconnects finds its session gone — its TCP connection is reset", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await singleUserRelay(dir, ["--tenant-grace", "0"]);
  const server = await echoServer();
  const g = new SimGuest(1);
  try {
    await g.connect(`${dir}/relay.sock`);
    g.dhcp(1);
    await within(g.leased, 10_000, "DHCP");
    await within(g.open(server.port, 40200), 10_000, "TCP handshake");
    await echo(g, 500);
    g.close();
    await waitUntil(async () => Object.keys(await sessions(relay)).length === 0, "the session gone");
    await g.connect(`${dir}/relay.sock`);
    void g.request(new Uint8Array(100), 100);
    await waitUntil(() => Promise.resolve(g.resets > 0), "a reset for the unknown connection");
  } finally {
    g.close();
    server.close();
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("single-user at --max-tenants 1: a session waiting for its guest makes room for a new guest", async () => {
  const dir = await Deno.makeTempDir();
  const relay = await singleUserRelay(dir, ["--max-tenants", "1"]);
  const a = new SimGuest(1);
  const b = new SimGuest(2);
  try {
    await a.connect(`${dir}/relay.sock`);
    a.dhcp(1);
    await within(a.leased, 10_000, "DHCP of the first guest");
    a.close();
    await waitUntil(async () => Object.values(await sessions(relay)).includes(false), "the session waits");
    await b.connect(`${dir}/relay.sock`);
    b.dhcp(1);
    await within(b.leased, 10_000, "DHCP of the second guest (admitted)");
    const now = await sessions(relay);
    assert.equal(Object.keys(now).length, 1);
    assert.equal(Object.values(now)[0], true);
  } finally {
    a.close();
    b.close();
    await relay.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * The guest's side (python3), one TCP connection to HOST:PORT. `echo TOTAL MARK`: sends TOTAL bytes in 16 KiB
 * writes while a thread reads the echo, prints "echo match" when it comes back byte for byte. `download MARK`:
 * reads to EOF, prints the byte count and SHA-256. Either writes MARK once a tenth has come in.
 */
const GUEST_CLIENT = `
import hashlib, socket, sys, threading
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((host, port), timeout=20)
got = hashlib.sha256()
def read(expected, mark):
    n, marked = 0, False
    while True:
        b = s.recv(65536)
        if not b: break
        got.update(b); n += len(b)
        if not marked and n >= expected // 10:
            open(mark, "w").close(); marked = True
        if n == expected: break
    return n
if mode == "download":
    n = read(int(sys.argv[4]), sys.argv[5])
    print("download", n, got.hexdigest())
else:
    total = int(sys.argv[4])
    r = threading.Thread(target=lambda: print("echoed", read(total, sys.argv[5])))
    r.start()
    sent, chunk = hashlib.sha256(), bytes(range(256)) * 64
    for i in range(total // len(chunk)):
        c = chunk[i % 256:] + chunk[:i % 256]
        s.sendall(c); sent.update(c)
    r.join()
    print("echo", "match" if sent.digest() == got.digest() else "MISMATCH")
`;

/** A TCP server on 127.0.0.1 (or `host`) that sends `data` to each client, then closes. */
const sourceServer = (data: Uint8Array, host?: string) => tcpServer((s) => s.end(data), host);

e2eTest(
  "netns Linux guest, single-user: its stream link breaks for a second in the middle of an 8 MB download (over IPv4, then IPv6 alone) and of a 4 MB TCP echo; every connection goes on, byte for byte, in the same session",
  ["python3"],
  async () => {
    const dir = await Deno.makeTempDir();
    const relay = await singleUserRelay(dir, ["--workers", "0"]);
    const file = new Uint8Array(8 << 20).map((_, i) => (i * 31 + (i >> 12)) & 0xff);
    const source = await sourceServer(file);
    const source6 = await sourceServer(file, "::1");
    const echoes = await echoServer();
    const url = `unix://${dir}/relay.sock`;
    const guest = await NetnsGuest.create(url);
    try {
      // IPv4 alone: a guest still configuring IPv6 sends reports and solicitations that would end its
      // silence by chance
      await guest.exec(["sysctl", "-q", "-w", `net.ipv6.conf.${guest.ifname}.disable_ipv6=1`]);
      const lease = await guest.dhcp();
      assert.equal(lease.ip, "10.0.2.15");
      await Deno.writeTextFile(`${dir}/client.py`, GUEST_CLIENT);
      const [session] = Object.keys(await sessions(relay));
      /** Runs the client with `args`, breaking the guest's link for a second once a tenth has come in. */
      let runs = 0;
      const acrossABreak = async (args: string[]) => {
        const mark = `${dir}/tenth-${runs++}`;
        const client = guest.exec(["python3", `${dir}/client.py`, ...args, mark], { timeoutMs: 60_000 });
        await waitUntil(
          () => Deno.stat(mark).then(() => true, () => false),
          `${args[0]}: a tenth in`,
          30_000,
        );
        await guest.reconnect(url, 1000);
        const r = await client;
        assert.equal(r.code, 0, r.stdout + r.stderr);
        return r.stdout;
      };
      // the guest only acknowledges a download: nothing of its own would come to resume the session with
      const sha = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", file)))
        .map((b) => b.toString(16).padStart(2, "0")).join("");
      const download = await acrossABreak(["download", "10.0.2.2", String(source.port), String(file.length)]);
      assert.equal(download.trim(), `download ${file.length} ${sha}`);
      const echo = await acrossABreak(["echo", "10.0.2.2", String(echoes.port), String(4 << 20)]);
      assert.match(echo, /^echoed 4194304$/m);
      assert.match(echo, /^echo match$/m);
      // IPv6 alone: without its IPv4 address the guest answers no ARP request, only a Neighbor Solicitation
      await guest.exec(["ip", "-4", "addr", "flush", "dev", guest.ifname]);
      await guest.exec(["sysctl", "-q", "-w", `net.ipv6.conf.${guest.ifname}.disable_ipv6=0`]);
      await guest.slaac();
      await new Promise((r) => setTimeout(r, 3000)); // its reports and solicitations for new addresses end
      const download6 = await acrossABreak([
        "download",
        "fd00::2",
        String(source6.port),
        String(file.length),
      ]);
      assert.equal(download6.trim(), `download ${file.length} ${sha}`);
      assert.deepEqual(await sessions(relay), { [session]: true }, "the same session, its guest back");
    } finally {
      await guest.close();
      source.close();
      source6.close();
      echoes.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
