/**
 * IPv6 with a real Linux guest (a network namespace behind a TAP, the kernel's own SLAAC): router
 * advertisement, neighbour discovery, ping to the router's addresses, TCP byte-exact both ways to a host
 * server on [::1], UDP echo over IPv6 (datagrams and echoes past the MTU too, in fragments both ways), DNS AAAA through prefix::3, and the multi-tenant policy refusing
 * the host's loopback and private IPv6 space. Every host service listens on ::1 or 127.0.0.1.
 */
import assert from "node:assert/strict";
import { e2eTest, NetnsGuest } from "./_netns_guest.ts";
import {
  freePort,
  listenTcp,
  randomFile,
  replyThroughForward,
  startDnsResponder,
  startHashServer,
  startUdpEcho,
} from "./_services.ts";
import { parsePrometheus, sample, within } from "./_relay_api.ts";
import { multiTenantArgs, startTestRelay } from "./_test_relay.ts";
import dgram from "node:dgram";

const TOOL = new URL("./guest_tools/tcp_tool.ts", import.meta.url).pathname;
const MiB = 1024 * 1024;
const BULK = Number(Deno.env.get("SLIRP_TEST_BULK_MIB") ?? 256) * MiB;

/**
 * Stops the dhclient that `-1` left running after its lease. Its parent exits before the forked
 * daemon writes the pid file, so the file may appear late or (when the run failed) never: wait for
 * it, bounded, and signal only that daemon's PID — `kill 0` would signal this whole process group (the
 * test runner and CI with it).
 */
async function stopDaemonizedDhclient(pidFile: string): Promise<void> {
  for (const deadline = Date.now() + 5000; Date.now() < deadline;) {
    const pid = Number((await Deno.readTextFile(pidFile).catch(() => "")).trim());
    // The PID must still be this test's dhclient (its command line names the pid file).
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
    if (Number.isInteger(pid) && pid > 1 && cmdline.includes(pidFile)) {
      try {
        Deno.kill(pid, "SIGTERM");
      } catch { /* already gone */ }
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Guest side of a large UDP exchange: argv host, port, sizes; prints "<size> ok" per echo that matched. */
const BIG_UDP6 = `
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
for n in map(int, sys.argv[3:]):
    data = bytes((i * 7) & 255 for i in range(n))
    s.sendto(data, (sys.argv[1], int(sys.argv[2])))
    reply = s.recv(65535)
    print(n, "ok" if reply == b"echo:" + data else "mismatch %d" % len(reply))
`;

/** A single-user relay on `dir/relay.sock` (the runtime's sockets on one thread, as before the workers). */
function startRelay(dir: string, extra: string[] = []) {
  return startTestRelay([
    ...["--listen-qemu", `unix://${dir}/relay.sock`, "--workers", "0", "--log-level", "warn"],
    ...(extra.includes("--dns-upstream") ? [] : ["--dns-upstream", "127.0.0.1:9"]),
    ...extra,
  ]);
}

e2eTest(
  "IPv6: a Linux guest configures itself by SLAAC, pings the router, reaches [::1] over TCP, UDP and DNS, and is reached by port forwards",
  ["ping", "dig", "nc", "curl"],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "slirp-v6-" });
    const dns = await startDnsResponder({
      "v6.example.test": "2001:db8::10",
      "v4.example.test": "192.0.2.10",
      // an answer of ~3 KB: past the 1400-byte MTU
      "many6.example.test": Array.from({ length: 100 }, (_, i) => `2001:db8::${i + 1}`).join(","),
    });
    const echo = await startUdpEcho("::1");
    // into the guest over IPv6: from the host's ::1, and from its 127.0.0.1 ([::] = the guest's address)
    const forwards = [
      { hostAddress: "::1", hostPort: freePort() },
      { hostAddress: "127.0.0.1", hostPort: freePort() },
      { hostAddress: "::1", hostPort: freePort() },
    ];
    const relay = await startRelay(dir, [
      ...["--dns-upstream", `127.0.0.1:${dns.port}`, "--dns-search", "example.test"],
      ...["--dns-record", "six.test=2001:db8::6", "--mtu", "1400"],
      ...["--hostfwd", `tcp:[::1]:${forwards[0].hostPort}-[::]:5001`],
      ...["--hostfwd", `tcp:127.0.0.1:${forwards[1].hostPort}-[::]:5002`],
      ...["--hostfwd", `udp:[::1]:${forwards[2].hostPort}-[::]:5003`],
    ]);
    const http = Deno.serve(
      { hostname: "::1", port: 0, onListen() {} },
      (req) => new Response(`hello over v6 from ${new URL(req.url).pathname}`),
    );
    const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
    try {
      const address = await guest.slaac();
      assert.match(address, /^fd00::/);
      // the router's link-local address is the default route (RFC 4861 §6.3.4), its MTU option taken
      const route = await guest.exec(["ip", "-6", "route", "show", "default"]);
      assert.match(route.stdout, /default via fe80::2 dev \S+ proto ra/, route.stdout);
      const link = await guest.exec(["cat", `/proc/sys/net/ipv6/conf/${guest.ifname}/mtu`]);
      assert.equal(link.stdout.trim(), "1400");

      for (const target of ["fd00::2", "fd00::3", "fe80::2%" + guest.ifname]) {
        const ping = await guest.exec(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", target]);
        assert.equal(ping.code, 0, `${target}: ${ping.stdout}${ping.stderr}`);
        assert.match(ping.stdout, /2 received/);
      }
      // neighbour discovery resolved the router to the gateway MAC
      const neigh = await guest.exec(["ip", "-6", "neigh", "show", "fd00::2"]);
      assert.match(neigh.stdout, /lladdr 52:55:0a:00:02:02/);

      // DNS through prefix::3 over IPv6 transport: AAAA and A from the upstream
      const dig = (...args: string[]) => guest.exec(["dig", "+tries=1", "+time=3", "@fd00::3", ...args]);
      const aaaa = await dig("+short", "v6.example.test", "AAAA");
      assert.equal(aaaa.stdout.trim(), "2001:db8::10", aaaa.stdout + aaaa.stderr);
      const a = await dig("+short", "v4.example.test", "A");
      assert.equal(a.stdout.trim(), "192.0.2.10", a.stdout + a.stderr);
      // static records: the host's name has its IPv6 face, a configured AAAA answers, its missing A is NODATA
      assert.equal((await dig("+short", "host.slirp.internal", "AAAA")).stdout.trim(), "fd00::2");
      assert.equal((await dig("+short", "host.slirp.internal", "A")).stdout.trim(), "10.0.2.2");
      assert.equal((await dig("+short", "six.test", "AAAA")).stdout.trim(), "2001:db8::6");
      const noA = await dig("six.test", "A");
      assert.match(noA.stdout, /status: NOERROR/);
      assert.match(noA.stdout, /ANSWER: 0/);
      // an answer past the MTU arrives whole over UDP, in fragments (no TC bit: +ignore would show it)
      const many = await dig("+bufsize=4096", "+ignore", "many6.example.test", "AAAA");
      assert.doesNotMatch(many.stdout, /flags:[^;]*\btc\b/, many.stdout);
      assert.match(many.stdout, /ANSWER: 100,/, many.stdout);
      assert.match(many.stdout, /2001:db8::64/, many.stdout);
      // DNS over TCP to prefix::3 reaches the same upstream
      const tcpDns = await dig("+tcp", "+short", "v6.example.test", "AAAA");
      assert.equal(tcpDns.stdout.trim(), "2001:db8::10", tcpDns.stdout + tcpDns.stderr);

      // UDP over IPv6 to a host service on ::1, reached as fd00::2
      const udp = await guest.exec(["nc", "-u", "-w", "2", "fd00::2", String(echo.port)], {
        stdin: "ping-over-udp6\n",
      });
      assert.match(udp.stdout, /echo:ping-over-udp6/, udp.stderr);
      // datagrams past the MTU: the guest's kernel sends them in fragments (RFC 8200 §4.5), the relay puts
      // them together, and the larger echo comes back in fragments the guest's kernel reassembles
      const big = await guest.exec([
        "python3",
        "-c",
        BIG_UDP6,
        "fd00::2",
        String(echo.port),
        "3000",
        "20000",
      ]);
      assert.equal(big.stdout.trim(), "3000 ok\n20000 ok", big.stdout + big.stderr);
      const bigPing = await guest.exec([
        "ping",
        "-6",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        "-s",
        "3000",
        "fd00::3",
      ]);
      assert.match(bigPing.stdout, /2 received/, bigPing.stdout + bigPing.stderr);

      // HTTP over IPv6 to a host server on ::1
      const r = await guest.exec(["curl", "-sS", "-m", "10", `http://[fd00::2]:${http.addr.port}/v6.html`]);
      assert.equal(r.stdout, "hello over v6 from /v6.html", r.stderr);

      // bulk, byte-exact both ways over one IPv6 connection each (guest→host and host→guest)
      const file = await randomFile(dir, BULK);
      const hs = await startHashServer("::1");
      const source = await listenTcp((s) => {
        s.on("error", () => {});
        Deno.open(file.path).then(async (f) => {
          for await (const chunk of f.readable) {
            if (!s.write(chunk)) await new Promise((r) => s.once("drain", r));
          }
          s.end();
        });
      }, "::1");
      try {
        const tool = async (args: string[]) => {
          const out = await guest.exec([Deno.execPath(), "run", "-A", "--quiet", TOOL, ...args], {
            timeoutMs: 300_000,
          });
          return JSON.parse(out.stdout.trim().split("\n").pop() ?? "{}");
        };
        const up = await tool(["send", "fd00::2", String(hs.port), file.path]);
        assert.equal(up.sent, BULK);
        assert.equal(up.reply, file.sha256, "guest→host SHA-256 over IPv6");
        const down = await guest.exec(
          ["sh", "-c", `curl -sS -m 300 --http0.9 http://[fd00::2]:${source.port}/ | sha256sum`],
          { timeoutMs: 300_000 },
        );
        assert.equal(down.stdout.split(" ")[0], file.sha256, `host→guest SHA-256 over IPv6: ${down.stderr}`);
        console.log(`IPv6 bulk: ${BULK / MiB} MiB each way byte-exact (guest→host ${up.ms} ms)`);
      } finally {
        hs.close();
        source.close();
      }
      // port forwards reach the guest's IPv6 address from either family of the host's loopback
      for (const [i, port] of [[0, 5001], [1, 5002]] as const) {
        const listening = guest.exec(["sh", "-c", `echo reply-from-guest-${port} | nc -6 -l -N ${port}`], {
          timeoutMs: 20_000,
        });
        const fwd = forwards[i];
        const reply = await replyThroughForward(fwd.hostAddress, fwd.hostPort);
        assert.equal(reply, `reply-from-guest-${port}`, `forward ${fwd.hostAddress}:${fwd.hostPort}`);
        await listening;
      }
      // a UDP forward: a host client's datagram reaches the guest over IPv6, the guest's answer comes back
      const udpFwd = forwards[2];
      const answering = guest.exec(["timeout", "8", "nc", "-6", "-u", "-l", "5003"], {
        stdin: "answer-over-udp6\n",
      });
      const client = dgram.createSocket("udp6");
      const got = new Promise<string>((resolve) =>
        client.on("message", (m) => resolve(new TextDecoder().decode(m)))
      );
      await new Promise((r) => client.bind(0, "::1", () => r(null)));
      const ask = setInterval(() => client.send("question\n", udpFwd.hostPort, "::1"), 300);
      try {
        assert.equal((await within(got, 8000, "the guest's UDP answer")).trim(), "answer-over-udp6");
      } finally {
        clearInterval(ask);
        client.close();
      }
      await answering;

      const { counters } = await relay.tenant();
      assert.ok(counters.routerSolicitations >= 1, "the guest solicited the router");
      assert.ok(counters.ipv6PacketsIn > 1000);
      assert.ok(counters.tcpFlowsOpened6 >= 3, `IPv6 TCP flows: ${counters.tcpFlowsOpened6}`);
      assert.ok(counters.udpFlowsOpened6 >= 1, `IPv6 UDP flows: ${counters.udpFlowsOpened6}`);
      assert.ok(counters.udpFragmentedDatagrams >= 2, "the two large echoes left in fragments");
    } finally {
      await guest.close();
      await http.shutdown();
      await relay.stop();
      dns.close();
      echo.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

e2eTest(
  "IPv6 multi-tenant: a v6 guest reaches neither the host's ::1, nor ULA or NAT64-embedded loopback, nor another tenant's forwards",
  ["curl"],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "slirp-v6mt-" });
    let accepted6 = 0, accepted4 = 0;
    const server6 = await listenTcp((s) => {
      accepted6++;
      s.end("v6-host-service");
      s.on("error", () => {});
    }, "::1");
    const server4 = await listenTcp((s) => {
      accepted4++;
      s.end("v4-host-service");
      s.on("error", () => {});
    });
    const relay = await startTestRelay(multiTenantArgs(dir));
    const guests: NetnsGuest[] = [];
    try {
      // "open" allows the host's loopback in both families (all ports); "closed" keeps the default policy;
      // "other" has a port forward on the relay host's loopback
      for (
        const spec of [
          { id: "open", policy: { allow: ["::1/128", "127.0.0.1/32"] } },
          { id: "closed" },
          { id: "other", hostfwd: ["tcp:127.0.0.1:0-:22"] },
        ]
      ) {
        assert.equal((await relay.request("POST", "/v1/tenants", spec)).status, 201);
      }
      const otherForward = (await relay.tenant("other")).forwards[0].hostPort;
      const open = await NetnsGuest.create(`unix://${dir}/open.sock`);
      guests.push(open);
      const closed = await NetnsGuest.create(`unix://${dir}/closed.sock`);
      guests.push(closed);
      await open.slaac();
      await closed.slaac();
      const curl = (g: NetnsGuest, url: string) => g.exec(["curl", "-sS", "-g", "--http0.9", "-m", "3", url]);

      // control: a tenant whose policy allows ::1 reaches the host service as [fd00::2]
      const ok = await curl(open, `http://[fd00::2]:${server6.port}/`);
      assert.equal(ok.stdout, "v6-host-service", ok.stderr);
      assert.equal(accepted6, 1);
      // …but not another tenant's forward on the relay host through ::1
      const fwd = await curl(open, `http://[fd00::2]:${otherForward}/`);
      assert.notEqual(fwd.code, 0, `another tenant's forward must be refused: ${fwd.stdout}`);

      // the default multi-tenant policy: the host's loopback, ULA outside the tenant's prefix, NAT64 forms of
      // denied IPv4 space (a Linux guest sends ::ffff:a.b.c.d as IPv4 itself: the scripted test covers it)
      const refused = [
        `http://[fd00::2]:${server6.port}/`,
        `http://[fc00::1]:${server6.port}/`,
        `http://[fd12:3456::1]:${server6.port}/`,
        `http://[64:ff9b::7f00:1]:${server4.port}/`,
      ];
      for (const url of refused) {
        const r = await curl(closed, url);
        assert.notEqual(r.code, 0, `${url} must be refused: ${r.stdout}`);
      }
      const { drops } = (await relay.tenant("closed")).counters;
      assert.ok((drops["tcp6-no-route"] ?? 0) >= refused.length, JSON.stringify(drops));
      assert.equal(accepted6, 1, "no refused flow reached the IPv6 host service");
      // the exposition counts IPv6 flows per tenant
      const text = await (await relay.api("/metrics")).text();
      parsePrometheus(text);
      assert.equal(
        sample(text, "slirp_tenant_ipv6_flows_opened_total", { tenant: "open", protocol: "tcp" }),
        1,
        "the allowed connection; the refused one to another tenant's forward opened no flow",
      );
      assert.equal(
        sample(text, "slirp_tenant_ipv6_flows_opened_total", { tenant: "closed", protocol: "tcp" }),
        0,
      );
      assert.equal(accepted4, 0, "no refused flow reached the IPv4 host service");
    } finally {
      for (const g of guests) await g.close();
      await relay.stop();
      server6.close();
      server4.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

e2eTest(
  "DHCPv6 with ISC dhclient: stateless (-S) gets the DNS server and search list; stateful gets an address in fd00::/64",
  ["dhclient"],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "slirp-dhcp6-" });
    const relay = await startRelay(dir, ["--dns-search", "guest.test", "--dns-search", "example.test"]);
    const guest = await NetnsGuest.create(`unix://${dir}/relay.sock`);
    try {
      await guest.slaac();
      // the RA says "other configuration by DHCPv6" (O flag)
      const script = `${dir}/dhclient.sh`;
      await Deno.writeTextFile(
        script,
        `#!/bin/sh\nenv | grep -E '^(reason|new_)' >> "${dir}/dhclient.env"\n`,
        {
          mode: 0o755,
        },
      );
      const dhclient = (extra: string[]) =>
        guest.exec([
          "dhclient",
          "-6",
          ...extra,
          "-1",
          "-v",
          "-lf",
          `${dir}/dhclient6.leases`,
          "-pf",
          `${dir}/dhclient6.pid`,
          "-sf",
          script,
          guest.ifname,
        ], { timeoutMs: 30_000 });
      const stateless = await dhclient(["-S"]);
      assert.equal(stateless.code, 0, stateless.stderr);
      let env = await Deno.readTextFile(`${dir}/dhclient.env`);
      assert.match(env, /new_dhcp6_name_servers=fd00::3/, env);
      assert.match(env, /new_dhcp6_domain_search=.*guest\.test.*example\.test/, env);

      const stateful = await dhclient([]);
      assert.equal(stateful.code, 0, stateful.stderr);
      env = await Deno.readTextFile(`${dir}/dhclient.env`);
      assert.match(env, /new_ip6_address=fd00::100/, env);
      assert.equal((await relay.tenant()).dhcp6Leases, 1);
    } finally {
      await stopDaemonizedDhclient(`${dir}/dhclient6.pid`);
      await guest.close();
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
