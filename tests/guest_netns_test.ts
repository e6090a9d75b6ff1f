/**
 * A real Linux network stack (a network namespace behind a TAP device) as the guest: DHCP, ARP, ping,
 * DNS and UDP through the relay, all on loopback and inside namespaces this test makes.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { e2eTest, must, NetnsGuest } from "./_netns_guest.ts";
import { freePort, startDnsResponder, startUdpEcho } from "./_services.ts";
import { startTestRelay } from "./_test_relay.ts";
import { within } from "./_relay_api.ts";
import { PrivateNetns, RelayProcess } from "./_relay_process.ts";

e2eTest("netns Linux guest: DHCP lease, ping gateway, DNS via 10.0.2.3, UDP to a host service", [
  "dig",
  "nc",
  "ping",
], async () => {
  const dns = await startDnsResponder({
    "www.example.test": "192.0.2.10",
    // an answer of ~2.5 KB: past the 1400-byte MTU
    "many.example.test": Array.from({ length: 150 }, (_, i) => `192.0.2.${i + 1}`).join(","),
  });
  const echo = await startUdpEcho();
  const dir = await Deno.makeTempDir();
  const relay = await startTestRelay([
    ...[
      "--listen-qemu",
      `unix://${dir}/relay.sock`,
      "--dns-upstream",
      `127.0.0.1:${dns.port}`,
      "--mtu",
      "1400",
    ],
    ...["--domain", "guest.test", "--dns-search", "guest.test", "--dns-search", "example.test"],
    ...["--workers", "0", "--log-level", "warn"],
  ]);
  const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
  try {
    const lease = await guest.dhcp();
    assert.equal(lease.ip, "10.0.2.15");
    assert.equal(lease.router, "10.0.2.2");
    assert.equal(lease.dns, "10.0.2.3");
    assert.equal(lease.mtu, "1400");
    assert.equal(lease.subnet, "255.255.255.0");
    assert.equal(lease.serverid, "10.0.2.2");
    assert.equal(lease.domain, "guest.test");
    assert.equal(lease.search, "guest.test example.test");
    const link = await guest.exec(["ip", "link", "show", guest.ifname]);
    assert.match(link.stdout, /mtu 1400/);

    const ping = await guest.exec(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.2.2"]);
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    assert.match(ping.stdout, /3 received/);
    const pingDns = await guest.exec(["ping", "-c", "1", "-W", "2", "10.0.2.3"]);
    assert.equal(pingDns.code, 0, pingDns.stdout);

    // dig at the relay's DNS address, one try of 3 s
    const dig = (...args: string[]) => guest.exec(["dig", "+tries=1", "+time=3", "@10.0.2.3", ...args]);
    const byUdp = await dig("+short", "www.example.test", "A");
    assert.equal(byUdp.stdout.trim(), "192.0.2.10", byUdp.stdout + byUdp.stderr);
    // DNS over TCP to 10.0.2.3 reaches the same upstream (what a guest does after a truncated answer)
    const digTcp = await dig("+tcp", "+short", "www.example.test", "A");
    assert.equal(digTcp.stdout.trim(), "192.0.2.10", digTcp.stdout + digTcp.stderr);
    // an answer past the MTU arrives whole over UDP, in fragments (no TC bit: +ignore would show it)
    const big = await dig("+bufsize=4096", "+ignore", "many.example.test", "A");
    assert.doesNotMatch(big.stdout, /flags:[^;]*\btc\b/, big.stdout);
    assert.match(big.stdout, /ANSWER: 150,/, big.stdout);
    assert.match(big.stdout, /192\.0\.2\.150/, big.stdout);
    const nx = await dig("missing.example.test", "A");
    assert.match(nx.stdout, /status: NXDOMAIN/);
    // a static record is answered by the relay itself
    const local = await dig("+short", "host.slirp.internal");
    assert.equal(local.stdout.trim(), "10.0.2.2");

    const udp = await guest.exec(["nc", "-u", "-w", "2", "10.0.2.2", String(echo.port)], {
      stdin: "ping-over-udp\n",
    });
    assert.match(udp.stdout, /echo:ping-over-udp/, udp.stderr);

    // no host sits at 10.0.2.77: the gateway must not answer ARP for it (RFC 5227: free means silent)
    await guest.exec(["nc", "-u", "-w", "1", "10.0.2.77", "9"], { stdin: "x\n" });
    const neigh = await guest.exec(["ip", "neigh", "show", "10.0.2.77"]);
    assert.doesNotMatch(neigh.stdout, /lladdr/);
    const gw = await guest.exec(["ip", "neigh", "show", "10.0.2.2"]);
    assert.match(gw.stdout, /lladdr 52:55:0a:00:02:02/);
    assert.equal((await relay.tenant()).counters.dhcpLeases, 1);
  } finally {
    await guest.close();
    await relay.stop();
    dns.close();
    echo.close();
    await Deno.remove(dir, { recursive: true });
  }
});

e2eTest(
  "netns Linux guest: ping an address of the relay host over IPv4 and IPv6 through its unprivileged ICMP sockets (relay in a private netns)",
  ["ping", "sysctl"],
  async () => {
    // the relay runs in a private namespace of its own, where ping sockets are allowed: no host-wide
    // setting changes, and the echo it sends to its "host loopback" stays inside that namespace
    const ns = await PrivateNetns.create({ "net.ipv4.ping_group_range": "0 2147483647" });
    // an address of the relay's host, inside its private namespace: only its ICMP socket can answer
    await must(["ip", "-n", ns.name, "addr", "add", "198.51.100.1/32", "dev", "lo"]);
    await must(["ip", "-n", ns.name, "addr", "add", "2001:db8:ffff::1/128", "dev", "lo", "nodad"]);
    const dir = await Deno.makeTempDir();
    await Deno.writeTextFile(
      `${dir}/relay.json`,
      JSON.stringify({ "listen-qemu": [`unix://${dir}/relay.sock`], "dns-upstream": ["127.0.0.1:9"] }),
    );
    // (echo to 10.0.2.2 is answered by the gateway itself, and 127.0.0.1 is the guest's own loopback)
    const relay = await RelayProcess.start(["--config", `${dir}/relay.json`, "--log-level", "warn"], {
      netns: ns,
    });
    const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
    try {
      await guest.dhcp();
      const ping = await guest.exec(["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.1"]);
      assert.equal(ping.code, 0, ping.stdout + ping.stderr);
      assert.match(ping.stdout, /3 received/);
      assert.equal(relay.logs(/ICMP echo to the outside is unavailable/).length, 0, relay.stderr.join("\n"));
      // and over IPv6, through the relay's IPv6 ping socket
      await guest.slaac();
      const ping6 = await guest.exec(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "2001:db8:ffff::1"]);
      assert.equal(ping6.code, 0, ping6.stdout + ping6.stderr);
      assert.match(ping6.stdout, /3 received/);
    } finally {
      await guest.close();
      await relay.stop();
      await ns.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

e2eTest(
  "netns Linux guest: a UDP port forward carries a host client's datagrams to the guest and the replies back",
  [],
  async () => {
    const dir = await Deno.makeTempDir();
    const port = freePort(); // free for TCP, and as good as certainly for UDP
    const relay = await startTestRelay([
      ...["--listen-qemu", `unix://${dir}/relay.sock`, "--dns-upstream", "127.0.0.1:9"],
      ...["--hostfwd", `udp:127.0.0.1:${port}-:7777`, "--workers", "0", "--log-level", "warn"],
    ]);
    const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
    const client = dgram.createSocket("udp4");
    try {
      await guest.dhcp();
      // a UDP echo server inside the guest, answering "guest:" + what it got once, then exiting
      const server = guest.exec([
        "python3",
        "-c",
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 7777))\nprint('ready', flush=True)\n" +
        "d, a = s.recvfrom(65535)\ns.sendto(b'guest:' + d, a)\n",
      ], { timeoutMs: 20_000 });
      await new Promise<void>((r) => client.bind(0, "127.0.0.1", () => r()));
      const replies: { text: string; from: number }[] = [];
      client.on("message", (m, r) => replies.push({ text: new TextDecoder().decode(m), from: r.port }));
      for (let i = 0; i < 50 && replies.length === 0; i++) {
        client.send(new TextEncoder().encode("hello"), port, "127.0.0.1");
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(replies.length >= 1, "no reply through the UDP forward");
      assert.equal(replies[0].text, "guest:hello");
      assert.equal(replies[0].from, port, "the reply comes from the forward's own port");
      await server;
    } finally {
      client.close();
      await guest.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/** Guest side: a TCP and a UDP echo on argv port, "guest:" + what came; prints "ready" once both listen. */
const GUEST_ECHOES = `
import socket, sys, threading
port = int(sys.argv[1])
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", port)); t.listen(8)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
def udp():
    while True:
        d, a = u.recvfrom(65535); u.sendto(b"guest:" + d, a)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = t.accept(); c.sendall(b"guest:" + c.recv(100)); c.close()
`;

e2eTest(
  "port forwards reach a Linux guest that took no DHCP lease: the address it was heard from, else the first DHCP address",
  ["python3"],
  async () => {
    const dir = await Deno.makeTempDir();
    const [tcpPort, udpPort] = [freePort(), freePort()];
    const relay = await startTestRelay([
      ...["--listen-qemu", `unix://${dir}/relay.sock`, "--dns-upstream", "127.0.0.1:9"],
      ...["--hostfwd", `tcp:127.0.0.1:${tcpPort}-:7777`, "--hostfwd", `udp:127.0.0.1:${udpPort}-:7777`],
      ...["--workers", "1", "--log-level", "warn"],
    ]);
    const client = dgram.createSocket("udp4");
    const viaTcp = async () => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort });
      try {
        await c.write(new TextEncoder().encode("tcp"));
        const b = new Uint8Array(100);
        // the first SYN may wait on ARP: it is sent again after 1 s (RFC 6298 §2.1)
        const n = await within(c.read(b), 8000, "an answer through the TCP forward");
        return new TextDecoder().decode(b.subarray(0, n ?? 0));
      } finally {
        c.close();
      }
    };
    const viaUdp = async () => {
      const reply = new Promise<string>((r) => client.once("message", (m) => r(new TextDecoder().decode(m))));
      // the first datagram may only teach the relay the guest's MAC (ARP): send until one is answered
      for (let i = 0; i < 20; i++) {
        client.send(new TextEncoder().encode("udp"), udpPort, "127.0.0.1");
        const r = await Promise.race([reply, new Promise<null>((r) => setTimeout(() => r(null), 250))]);
        if (r !== null) return r;
      }
      return "no answer";
    };
    const listening = async (g: NetnsGuest) => {
      for (let i = 0; i < 100; i++) {
        if ((await g.exec(["ss", "-Hltn", "sport", "7777"])).stdout.includes("7777")) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error("the guest's echo never listened");
    };
    await new Promise<void>((r) => client.bind(0, "127.0.0.1", () => r()));
    // a guest set up by hand at 10.0.2.20 (as after a relay restart: the lease is the guest's, not ours)
    const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
    try {
      await must(["ip", "-n", guest.ns, "addr", "add", "10.0.2.20/24", "dev", guest.ifname]);
      await must(["ip", "-n", guest.ns, "route", "add", "default", "via", "10.0.2.2"]);
      const server = guest.exec(["python3", "-c", GUEST_ECHOES, "7777"], { timeoutMs: 60_000 });
      await listening(guest);
      const ping = await guest.exec(["ping", "-c", "1", "-W", "2", "10.0.2.2"]); // the relay hears 10.0.2.20
      assert.equal(ping.code, 0, ping.stdout);
      assert.equal(await viaTcp(), "guest:tcp");
      assert.equal(await viaUdp(), "guest:udp");
      void server.catch(() => {});
    } finally {
      await guest.close();
    }
    // a silent guest at 10.0.2.15, never heard from: the forward tries the first DHCP address, as libslirp
    const silent = await NetnsGuest.create(`unix://${dir}/relay.sock`);
    try {
      await must(["ip", "-n", silent.ns, "addr", "add", "10.0.2.15/24", "dev", silent.ifname]);
      const server = silent.exec(["python3", "-c", GUEST_ECHOES, "7777"], { timeoutMs: 60_000 });
      await listening(silent);
      assert.equal(await viaTcp(), "guest:tcp");
      assert.equal(await viaUdp(), "guest:udp");
      void server.catch(() => {});
    } finally {
      client.close();
      await silent.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/** Guest side: a connected UDP socket sends one datagram to argv host:port and prints what came back. */
const UDP_TO_CLOSED_PORT = `
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"x")
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("silence")
`;

e2eTest(
  "UDP to a closed host port: a Linux guest is refused at once (the host's ICMP port unreachable, carried back by the socket loop), over IPv4 and IPv6",
  ["python3"],
  async () => {
    const dir = await Deno.makeTempDir();
    const relay = await startTestRelay([
      ...["--listen-qemu", `unix://${dir}/relay.sock`, "--dns-upstream", "127.0.0.1:9"],
      ...["--workers", "1", "--log-level", "warn"],
    ]);
    const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
    try {
      await guest.dhcp();
      await guest.slaac();
      for (const host of ["10.0.2.2", "fd00::2"]) {
        const closed = freePort(); // bound and released: nothing listens there
        const r = await guest.exec(["python3", "-c", UDP_TO_CLOSED_PORT, host, String(closed)]);
        assert.equal(r.stdout.trim(), "refused", `${host}:${closed} ${r.stdout}${r.stderr}`);
      }
      const { counters } = await relay.tenant();
      assert.equal(counters.drops["udp-host-error-ECONNREFUSED"], 2);
    } finally {
      await guest.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

e2eTest(
  "TFTP and PXE settings: a Linux guest's DHCP names the boot file and its server, and curl and busybox download it from the gateway over IPv4 and IPv6",
  ["curl"],
  async () => {
    const dir = await Deno.makeTempDir();
    const root = `${dir}/tftp`;
    await Deno.mkdir(`${root}/sub`, { recursive: true });
    // 3 MB: 5860 blocks of 512 bytes, lock-step; 1024 bytes: two full blocks, so the transfer ends with an
    // empty third
    const boot = crypto.getRandomValues(new Uint8Array(65536)).slice();
    const bootFile = new Uint8Array(3_000_000);
    for (let i = 0; i < bootFile.length; i += boot.length) {
      bootFile.set(boot.subarray(0, bootFile.length - i), i);
    }
    await Deno.writeFile(`${root}/boot.bin`, bootFile);
    await Deno.writeFile(`${root}/sub/exact`, boot.subarray(0, 1024));
    await Deno.writeTextFile(`${dir}/secret`, "outside the root\n");
    await Deno.symlink(`${dir}/secret`, `${root}/link-out`);
    const relay = await startTestRelay([
      ...["--listen-qemu", `unix://${dir}/relay.sock`, "--dns-upstream", "127.0.0.1:9"],
      ...["--tftp", root, "--bootfile", "boot.bin", "--workers", "1", "--log-level", "warn"],
    ]);
    const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
    try {
      const lease = await guest.dhcp(["-O", "bootfile"]);
      assert.equal(lease.bootfile, "boot.bin", "DHCP option 67");
      assert.equal(lease.boot_file, "boot.bin", "BOOTP's file field");
      assert.equal(lease.siaddr, "10.0.2.2", "the boot server (siaddr)");
      const get = async (url: string, ...args: string[]) => {
        const out = `${dir}/got`;
        await Deno.remove(out).catch(() => {});
        const r = await guest.exec(["curl", "-s", "--max-time", "30", ...args, "-o", out, url]);
        return { code: r.code, data: r.code === 0 ? await Deno.readFile(out) : null };
      };
      const same = (a: Uint8Array | null, b: Uint8Array) =>
        a !== null && a.length === b.length && a.every((x, i) => x === b[i]);
      const whole = await get(`tftp://10.0.2.2/${lease.bootfile}`);
      assert.ok(same(whole.data, bootFile), `boot.bin over IPv4: curl ${whole.code}`);
      const big = await get("tftp://10.0.2.2/boot.bin", "--tftp-blksize", "1400");
      assert.ok(same(big.data, bootFile), `boot.bin with 1400-byte blocks: curl ${big.code}`);
      const exact = await get("tftp://10.0.2.2/sub/exact");
      assert.ok(same(exact.data, boot.subarray(0, 1024)), `a file of two full blocks: curl ${exact.code}`);
      // busybox asks without options: 512-byte blocks, 5860 of them
      const bb = await guest.exec([
        "busybox",
        "tftp",
        "-g",
        "-r",
        "/boot.bin",
        "-l",
        `${dir}/bb`,
        "10.0.2.2",
      ]);
      assert.equal(bb.code, 0, bb.stderr);
      assert.ok(same(await Deno.readFile(`${dir}/bb`), bootFile), "busybox tftp");
      const put = await guest.exec(["busybox", "tftp", "-p", "-r", "up", "-l", `${dir}/bb`, "10.0.2.2"]);
      assert.notEqual(put.code, 0, "a write is refused");
      assert.match(put.stderr, /read-only/);
      assert.equal((await get("tftp://10.0.2.2/missing")).code, 68, "file not found");
      assert.equal(
        (await get("tftp://10.0.2.2/link-out")).code,
        69,
        "a link out of the root: access violation",
      );
      await guest.slaac();
      const v6 = await get("tftp://[fd00::2]/boot.bin");
      assert.ok(same(v6.data, bootFile), `boot.bin over IPv6: curl ${v6.code}`);
      assert.equal((await relay.tenant()).counters.tftpTransfers, 5, "five downloads started, two refused");
    } finally {
      await guest.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
