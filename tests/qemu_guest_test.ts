/**
 * A QEMU virtual machine (Debian kernel, busybox userland, TCG) connects with QEMU's own netdev
 * backends — `-netdev stream`, the legacy `-netdev socket` and `-netdev dgram` — and gets online through the
 * relay (started from its command line: in this process on Deno, as its own process on Bun and the binary).
 */
import assert from "node:assert/strict";
import { startTestRelay } from "./_test_relay.ts";
import { e2eTest, run } from "./_netns_guest.ts";
import { bootGuest, pxeBootSetup, qemuMissing, results, startGuest } from "./_qemu.ts";
import { createHash } from "node:crypto";
import { freePort, startDnsResponder } from "./_services.ts";

const SCRIPT = `
echo "RESULT t_before_dhcp $(cut -d' ' -f1 /proc/uptime)"
udhcpc -i eth0 -n -q -f -t 10 -T 2 -s /udhcpc.sh -O mtu
echo "RESULT dhcp_rc $?"
echo "RESULT t_after_dhcp $(cut -d' ' -f1 /proc/uptime)"
if ping -c 3 -W 3 10.0.2.2 > /tmp/ping; then echo "RESULT ping ok $(grep -o '[0-9]* packets received' /tmp/ping)"; else echo "RESULT ping fail"; fi
echo "RESULT dns $(nslookup www.example.test 10.0.2.3 2>&1 | grep -A2 'Name:' | grep -o 'Address: [0-9.]*' | head -1)"
`;

for (const variant of ["stream", "socket"] as const) {
  e2eTest(`QEMU guest over -netdev ${variant}: DHCP, ping, DNS`, ["qemu-system-x86_64", "cpio"], async () => {
    const missing = qemuMissing();
    if (missing) throw new Error(missing);
    const dns = await startDnsResponder({ "www.example.test": "192.0.2.33" });
    const relay = await startTestRelay([
      ...["--listen-qemu", "tcp://127.0.0.1:0", "--dns-upstream", `127.0.0.1:${dns.port}`],
      ...["--workers", "0", "--log-level", "warn"],
    ]);
    const port = relay.streamUrls[0].split(":").pop();
    const netdev = variant === "stream"
      ? `stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=${port}`
      : `socket,id=n0,connect=127.0.0.1:${port}`;
    try {
      const { console: out, ms } = await bootGuest(netdev, SCRIPT);
      const r = results(out);
      assert.equal(r.get("done"), "", `guest did not finish:\n${out.slice(-3000)}`);
      assert.equal(r.get("dhcp_rc"), "0", out.slice(-3000));
      assert.equal(r.get("lease"), "ip=10.0.2.15 router=10.0.2.2 dns=10.0.2.3 mtu=1500");
      assert.equal(r.get("ping"), "ok 3 packets received");
      assert.equal(r.get("dns"), "Address: 192.0.2.33");
      const dhcpMs = (Number(r.get("t_after_dhcp")) - Number(r.get("t_before_dhcp"))) * 1000;
      console.log(
        `QEMU ${variant}: boot to poweroff ${Math.round(ms)} ms; DHCP exchange ${
          Math.round(dhcpMs)
        } ms of guest uptime`,
      );
    } finally {
      await relay.stop();
      dns.close();
    }
  });
}

e2eTest(
  "QEMU guest: wget from a host HTTP server, and a host client reaches the guest's httpd via --hostfwd",
  ["qemu-system-x86_64", "cpio"],
  async () => {
    const missing = qemuMissing();
    if (missing) throw new Error(missing);
    const payload = new Uint8Array(1024 * 1024);
    for (let i = 0; i < payload.length; i += 65536) crypto.getRandomValues(payload.subarray(i, i + 65536));
    const md5 = createHash("md5").update(payload).digest("hex");
    const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(payload));
    const forwardPort = freePort();
    const relay = await startTestRelay([
      ...["--listen-qemu", "tcp://127.0.0.1:0", "--dns-upstream", "127.0.0.1:9"],
      ...["--hostfwd", `tcp:127.0.0.1:${forwardPort}-:80`, "--log-level", "warn"],
    ]);
    const guest = await startGuest(
      `stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=${
        relay.streamUrls[0].split(":").pop()
      }`,
      `
udhcpc -i eth0 -n -q -f -t 10 -T 2 -s /udhcpc.sh
wget -q -O /tmp/payload http://10.0.2.2:${http.addr.port}/payload
echo "RESULT wget $? $(md5sum /tmp/payload | cut -d' ' -f1)"
echo hello-from-the-guest > /www/index.html
httpd -p 80 -h /www
echo "RESULT httpd_ready"
sleep 300
`,
    );
    try {
      const wget = await guest.waitFor(/RESULT wget/);
      assert.match(wget, new RegExp(`RESULT wget 0 ${md5}`));
      await guest.waitFor(/RESULT httpd_ready/);
      const res = await fetch(`http://127.0.0.1:${forwardPort}/index.html`);
      assert.equal(await res.text(), "hello-from-the-guest\n");
    } finally {
      await guest.kill();
      await relay.stop();
      await http.shutdown();
    }
  },
);

e2eTest(
  "QEMU guest over -netdev stream takes an IPv6 address by SLAAC and fetches a file over IPv6 byte-exact",
  ["qemu-system-x86_64", "cpio"],
  async () => {
    const missing = qemuMissing();
    if (missing) throw new Error(missing);
    const payload = new Uint8Array(1024 * 1024);
    for (let i = 0; i < payload.length; i += 65536) crypto.getRandomValues(payload.subarray(i, i + 65536));
    const md5 = createHash("md5").update(payload).digest("hex");
    const http = Deno.serve({ hostname: "::1", port: 0, onListen() {} }, () => new Response(payload));
    const relay = await startTestRelay([
      ...["--listen-qemu", "tcp://127.0.0.1:0", "--dns-upstream", "127.0.0.1:9", "--workers", "0"],
      ...["--log-level", "warn"],
    ]);
    const guest = await startGuest(
      `stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=${
        relay.streamUrls[0].split(":").pop()
      }`,
      `
for i in $(seq 1 100); do
  a=$(ip -6 addr show dev eth0 scope global | grep -v tentative | grep -o 'fd00::[0-9a-f:]*')
  [ -n "$a" ] && break
  sleep 0.2
done
echo "RESULT v6addr $a $(ip -6 route show default | grep -o 'via [^ ]*')"
wget -q -O /tmp/payload http://[fd00::2]:${http.addr.port}/payload
echo "RESULT wget6 $? $(md5sum /tmp/payload | cut -d' ' -f1)"
`,
    );
    try {
      const addr = await guest.waitFor(/RESULT v6addr/, 60_000);
      assert.match(addr, /RESULT v6addr fd00::[0-9a-f:]+ via fe80::2/);
      const wget = await guest.waitFor(/RESULT wget6/, 60_000);
      assert.match(wget, new RegExp(`RESULT wget6 0 ${md5}`));
    } finally {
      await guest.kill();
      await relay.stop();
      await http.shutdown();
    }
  },
);

e2eTest(
  "QEMU guest over -netdev dgram (UNIX datagram sockets): DHCP, ping, DNS and a byte-exact wget",
  ["qemu-system-x86_64", "cpio"],
  async () => {
    const missing = qemuMissing();
    if (missing) throw new Error(missing);
    const dir = await Deno.makeTempDir();
    const dns = await startDnsResponder({ "www.example.test": "192.0.2.33" });
    const payload = new Uint8Array(1024 * 1024);
    for (let i = 0; i < payload.length; i += 65536) crypto.getRandomValues(payload.subarray(i, i + 65536));
    const md5 = createHash("md5").update(payload).digest("hex");
    const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(payload));
    const relayPath = `${dir}/relay.dgram`;
    const relay = await startTestRelay([
      ...["--listen-dgram", `unix://${relayPath}`, "--dns-upstream", `127.0.0.1:${dns.port}`],
      ...["--log-level", "warn"],
    ]);
    try {
      const { console: out } = await bootGuest(
        `dgram,id=n0,local.type=unix,local.path=${dir}/guest.dgram,remote.type=unix,remote.path=${relayPath}`,
        SCRIPT + `
wget -q -O /tmp/payload http://10.0.2.2:${http.addr.port}/payload
echo "RESULT wget $? $(md5sum /tmp/payload | cut -d' ' -f1)"
`,
      );
      const r = results(out);
      assert.equal(r.get("done"), "", `guest did not finish:\n${out.slice(-3000)}`);
      assert.equal(r.get("lease"), "ip=10.0.2.15 router=10.0.2.2 dns=10.0.2.3 mtu=1500");
      assert.equal(r.get("ping"), "ok 3 packets received");
      assert.equal(r.get("dns"), "Address: 192.0.2.33");
      assert.equal(r.get("wget"), `0 ${md5}`);
    } finally {
      await relay.stop();
      await http.shutdown();
      dns.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

e2eTest(
  "QEMU network boot: the NIC's PXE ROM takes the boot file from DHCP and boots Linux over the relay's TFTP",
  ["qemu-system-x86_64", "cpio"],
  async () => {
    const missing = qemuMissing();
    if (missing) throw new Error(missing);
    const romThere = (path: string) => {
      try {
        return Deno.statSync(path).isFile;
      } catch {
        return false;
      }
    };
    if (!["/usr/lib/ipxe/qemu/efi-e1000.rom", "/usr/share/qemu/efi-e1000.rom"].some(romThere)) {
      throw new Error("no PXE ROM for e1000 (Debian package ipxe-qemu, a dependency of qemu-system-x86)");
    }
    const dir = await Deno.makeTempDir({ prefix: "slirp-pxe-" });
    await Deno.mkdir(`${dir}/tftp`);
    const relay = await startTestRelay([
      ...["--listen-qemu", `unix://${dir}/relay.sock`, "--dns-upstream", "127.0.0.1:9"],
      ...["--tftp", `${dir}/tftp`, "--bootfile", "boot.ipxe", "--workers", "1", "--log-level", "warn"],
    ]);
    try {
      const args = await pxeBootSetup(
        `${dir}/tftp`,
        `stream,id=n0,server=off,addr.type=unix,addr.path=${dir}/relay.sock`,
      );
      const start = performance.now();
      const r = await run(["qemu-system-x86_64", ...args], { timeoutMs: 240_000 });
      const out = r.stdout + r.stderr;
      assert.match(out, /tftp:\/\/10\.0\.2\.2\/boot\.ipxe\.\.\.[^\n]* ok/, out.slice(-3000));
      assert.match(results(out).get("pxe-booted") ?? "", /booted=from-tftp/, out.slice(-3000));
      // the kernel (8 MB) and the initramfs (1 MB) came over TFTP, named by the script iPXE fetched first
      // (when a download takes a while iPXE prints its progress, "65%     96%", before "ok")
      assert.match(out, /tftp:\/\/10\.0\.2\.2\/vmlinuz\.\.\.[^\n]* ok/, out.slice(-3000));
      assert.match(out, /tftp:\/\/10\.0\.2\.2\/initrd\.gz\.\.\.[^\n]* ok/, out.slice(-3000));
      console.log(`QEMU PXE: power-on to Linux's init over TFTP ${Math.round(performance.now() - start)} ms`);
    } finally {
      await relay.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
