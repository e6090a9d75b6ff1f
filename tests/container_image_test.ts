/**
 * The container image: built with buildah from the compiled binary (docker/Containerfile.local), run by
 * podman (runc) as its unprivileged user, healthy by its own HEALTHCHECK, and a QEMU guest gets a lease and
 * fetches a file through it. The container joins a network namespace this test made (podman's
 * `--network ns:`), where the guest's QEMU, the file server and the container's "loopback" all live: no
 * packet leaves that namespace and no host firewall rule is touched.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { e2eTest, must, run } from "./_netns_guest.ts";
import { qemuMissing, startGuest } from "./_qemu.ts";
import { PrivateNetns } from "./_relay_process.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const IMAGE = "localhost/slirp-relay:e2e-test";

/** Copies `dist/slirp-relay` and the libraries `ldd` names into `root`, with a passwd for the user. */
async function assembleRootfs(root: string): Promise<void> {
  await Deno.mkdir(`${root}/etc`, { recursive: true });
  await Deno.mkdir(`${root}/tmp`, { mode: 0o1777 });
  await Deno.chmod(`${root}/tmp`, 0o1777);
  await Deno.copyFile(`${ROOT}dist/slirp-relay`, `${root}/slirp-relay`);
  const ldd = await must(["ldd", `${ROOT}dist/slirp-relay`]);
  for (const m of ldd.matchAll(/(\/[^\s]+\.so[^\s]*)/g)) {
    const lib = m[1];
    await Deno.mkdir(`${root}${lib.slice(0, lib.lastIndexOf("/"))}`, { recursive: true });
    await Deno.copyFile(await Deno.realPath(lib), `${root}${lib}`);
  }
  await Deno.writeTextFile(
    `${root}/etc/passwd`,
    "root:x:0:0::/:/nonexistent\nrelay:x:10001:10001::/tmp:/nonexistent\n",
  );
  await Deno.writeTextFile(`${root}/etc/group`, "root:x:0:\nrelay:x:10001:\n");
}

e2eTest(
  "container image: buildah builds it from the binary, podman runs it as a non-root user on a read-only root, healthy; a QEMU guest gets a lease and fetches a file through it; SIGTERM ends it with status 0",
  ["buildah", "podman", "runc", "ldd", "qemu-system-x86_64", "cpio", "python3"],
  async () => {
    const missing = qemuMissing();
    if (missing) throw new Error(missing);
    await must([`${ROOT}tools/build.sh`]);
    const dir = await Deno.makeTempDir({ prefix: "slirp-image-" });
    await assembleRootfs(`${dir}/rootfs`);
    await Deno.copyFile(`${ROOT}docker/Containerfile.local`, `${dir}/Containerfile`);
    await must(["buildah", "bud", "--isolation", "chroot", "--format", "docker", "-t", IMAGE, dir], {
      timeoutMs: 300_000,
    });
    const ns = await PrivateNetns.create();
    const name = `slirp-e2e-${crypto.randomUUID().slice(0, 8)}`;
    const payload = new Uint8Array(2 * 1024 * 1024);
    for (let i = 0; i < payload.length; i += 65536) crypto.getRandomValues(payload.subarray(i, i + 65536));
    await Deno.mkdir(`${dir}/www`);
    await Deno.writeFile(`${dir}/www/payload`, payload);
    const md5 = createHash("md5").update(payload).digest("hex");
    // the file server in the namespace's loopback: the container's "10.0.2.2" (its own loopback)
    const server = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns.name,
        "python3",
        "-m",
        "http.server",
        "8000",
        "--bind",
        "127.0.0.1",
        "--directory",
        `${dir}/www`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let guest: Awaited<ReturnType<typeof startGuest>> | null = null;
    try {
      const image = JSON.parse(await must(["podman", "image", "inspect", IMAGE]))[0];
      assert.equal(image.Config.User, "10001:10001", "the image runs as its unprivileged user");
      console.log(`container image: ${(image.Size / 1e6).toFixed(1)} MB`);
      await must([
        "podman",
        "run",
        "-d",
        "--name",
        name,
        "--runtime",
        "runc",
        "--network",
        `ns:/run/netns/${ns.name}`,
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        // as deploy/kubernetes.yaml runs it: a read-only root filesystem
        "--read-only",
        IMAGE,
        "serve",
        "--listen-qemu",
        "tcp://0.0.0.0:8022",
        "--admin",
        "http://127.0.0.1:8081",
        "--dns-upstream",
        "127.0.0.1:9",
      ]);
      // healthy by the image's own HEALTHCHECK (run by hand: no systemd timer runs it here)
      let healthy = false;
      for (let i = 0; i < 50 && !healthy; i++) {
        healthy = (await run(["podman", "healthcheck", "run", name])).code === 0;
        if (!healthy) await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(healthy, (await run(["podman", "logs", name])).stderr);
      const version = await must(["podman", "exec", name, "/slirp-relay", "--version"]);
      assert.match(version, /\(bun /, "the binary names its runtime");
      const top = await must(["podman", "inspect", name, "--format", "{{.Config.User}}"]);
      assert.equal(top.trim(), "10001:10001");

      guest = await startGuest(
        "stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=8022",
        `
udhcpc -i eth0 -n -q -f -t 10 -T 2 -s /udhcpc.sh
wget -q -O /tmp/payload http://10.0.2.2:8000/payload
echo "RESULT wget $? $(md5sum /tmp/payload | cut -d' ' -f1)"
`,
        ns.wrap([]),
      );
      assert.match(await guest.waitFor(/RESULT lease/), /RESULT lease ip=10\.0\.2\.15 router=10\.0\.2\.2/);
      assert.match(await guest.waitFor(/RESULT wget/), new RegExp(`RESULT wget 0 ${md5}`), guest.output());

      // SIGTERM (podman stop) ends it cleanly and promptly
      const t0 = performance.now();
      await must(["podman", "stop", "-t", "10", name]);
      const stopMs = performance.now() - t0;
      const code = (await must(["podman", "inspect", name, "--format", "{{.State.ExitCode}}"])).trim();
      // past the 10 s grace podman would SIGKILL it (137): 0 says it ended on SIGTERM, by itself
      assert.equal(code, "0", "exit status after SIGTERM");
      console.log(`container stop after SIGTERM: ${Math.round(stopMs)} ms (podman's own overhead included)`);
    } finally {
      await guest?.kill();
      await run(["podman", "rm", "-f", name]);
      await run(["podman", "rmi", "-f", IMAGE]);
      try {
        server.kill("SIGTERM");
      } catch { /* exited */ }
      await server.status;
      await ns.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
