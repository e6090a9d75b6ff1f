/**
 * Test harness: boots Debian's kernel under QEMU (TCG, no KVM) with a busybox initramfs whose /init
 * runs a test script and prints `RESULT …` lines on the serial console, then powers off.
 */
import { must, run, which } from "./_netns_guest.ts";

/** Why a QEMU test cannot run here, or null. */
export function qemuMissing(): string | null {
  if (!which("qemu-system-x86_64")) return "qemu-system-x86_64 not installed";
  if (!which("cpio")) return "cpio not installed";
  if (!kernel()) return "no /boot/vmlinuz-* (Debian package linux-image-amd64)";
  if (!which("busybox")) return "busybox not installed";
  return null;
}

function kernel(): { image: string; release: string } | null {
  try {
    for (const e of Deno.readDirSync("/boot")) {
      const m = /^vmlinuz-(.+)$/.exec(e.name);
      if (m) {
        Deno.statSync(`/lib/modules/${m[1]}/kernel/drivers/net/ethernet/intel/e1000/e1000.ko`);
        return { image: `/boot/${e.name}`, release: m[1] };
      }
    }
  } catch { /* missing */ }
  return null;
}

const INIT_PRELUDE = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
insmod /lib/e1000.ko
ip link set lo up
ip link set eth0 up
cat > /udhcpc.sh <<'EOF'
#!/bin/sh
case "$1" in
  bound|renew)
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    for r in $router; do ip route add default via "$r"; break; done
    echo "RESULT lease ip=$ip router=$router dns=$dns mtu=$mtu"
    ;;
esac
EOF
chmod +x /udhcpc.sh
`;

/** A running QEMU guest whose console is read as it prints. */
export interface RunningGuest {
  /** Resolves with the first console line matching `re` (rejects after `timeoutMs`). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Everything printed so far. */
  output(): string;
  kill(): Promise<void>;
}

/** Builds the initramfs for `script` into `dir`; returns the kernel image path. */
async function buildInitrd(dir: string, script: string): Promise<string> {
  const k = kernel();
  if (!k) throw new Error("No kernel");
  const root = `${dir}/root`;
  for (const d of ["bin", "proc", "sys", "dev", "lib", "tmp", "www"]) {
    await Deno.mkdir(`${root}/${d}`, { recursive: true });
  }
  await Deno.copyFile(which("busybox")!, `${root}/bin/busybox`);
  await Deno.copyFile(
    `/lib/modules/${k.release}/kernel/drivers/net/ethernet/intel/e1000/e1000.ko`,
    `${root}/lib/e1000.ko`,
  );
  await Deno.writeTextFile(`${root}/init`, INIT_PRELUDE + script + "\necho RESULT done\npoweroff -f\n", {
    mode: 0o755,
  });
  await must(["sh", "-c", `cd ${root} && find . | cpio -o -H newc --quiet | gzip -1 > ${dir}/initrd.gz`]);
  return k.image;
}

function qemuArgs(image: string, dir: string, netdev: string): string[] {
  return [
    "-machine",
    "q35,accel=tcg",
    "-m",
    "256",
    "-nographic",
    "-no-reboot",
    "-kernel",
    image,
    "-initrd",
    `${dir}/initrd.gz`,
    "-append",
    "console=ttyS0 quiet panic=-1",
    "-netdev",
    netdev,
    "-device",
    "e1000,netdev=n0",
  ];
}

/** Lines that have their newline already (a line still being printed is not matched yet). */
function completeLines(text: string): string[] {
  return text.slice(0, text.lastIndexOf("\n") + 1).split(/\r?\n/);
}

/** Boots a guest (under `wrap` when given) and returns at once; its console is watched line by line. */
export async function startGuest(netdev: string, script: string, wrap: string[] = []): Promise<RunningGuest> {
  const dir = await Deno.makeTempDir({ prefix: "slirp-qemu-" });
  const image = await buildInitrd(dir, script);
  // `wrap`: a prefix such as `ip netns exec NS` (QEMU then dials inside that namespace)
  const [cmd, ...args] = [...wrap, "qemu-system-x86_64", ...qemuArgs(image, dir, netdev)];
  const child = new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  let text = "";
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  const pump = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) {
      text += dec.decode(chunk, { stream: true });
      for (const w of [...waiters]) {
        const line = completeLines(text).find((l) => w.re.test(l));
        if (line !== undefined) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  })();
  child.stderr.cancel();
  return {
    waitFor(re, timeoutMs = 240_000) {
      const line = completeLines(text).find((l) => re.test(l));
      if (line !== undefined) return Promise.resolve(line);
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`Guest never printed ${re}:\n${text.slice(-2000)}`)),
          timeoutMs,
        );
        waiters.push({ re, resolve: (l) => (clearTimeout(t), resolve(l)) });
      });
    },
    output: () => text,
    async kill() {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      await pump.catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * Boots a guest whose NIC is `netdev` (a QEMU -netdev spec with id=n0) and runs `script` after the
 * prelude (interface up, /udhcpc.sh written). Resolves with the console output once the guest powers off.
 */
export async function bootGuest(
  netdev: string,
  script: string,
  timeoutMs = 240_000,
): Promise<{ console: string; ms: number }> {
  const dir = await Deno.makeTempDir({ prefix: "slirp-qemu-" });
  try {
    const image = await buildInitrd(dir, script);
    const start = performance.now();
    const r = await run(["qemu-system-x86_64", ...qemuArgs(image, dir, netdev)], { timeoutMs });
    return { console: r.stdout + r.stderr, ms: performance.now() - start };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** The `RESULT name …` lines of a console, by name. */
export function results(consoleText: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of consoleText.split(/\r?\n/)) {
    const r = /RESULT (\S+)\s*(.*)$/.exec(line);
    if (r) m.set(r[1], r[2].trim());
  }
  return m;
}

/**
 * Fills `tftpRoot` with what a network boot needs — an iPXE script `boot.ipxe` that fetches the Debian kernel
 * and a busybox initramfs over TFTP from the DHCP's next server, and boots them — and returns the QEMU
 * arguments that boot from the NIC's PXE ROM (no -kernel). The initramfs prints
 * `RESULT pxe-booted <kernel command line>` and powers off.
 */
export async function pxeBootSetup(tftpRoot: string, netdev: string): Promise<string[]> {
  const k = kernel();
  if (!k) throw new Error("No kernel");
  const root = `${tftpRoot}/initrd-root`;
  for (const d of ["bin", "proc"]) await Deno.mkdir(`${root}/${d}`, { recursive: true });
  await Deno.copyFile(which("busybox")!, `${root}/bin/busybox`);
  await Deno.writeTextFile(
    `${root}/init`,
    `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo "RESULT pxe-booted $(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
`,
    { mode: 0o755 },
  );
  await must([
    "sh",
    "-c",
    `cd ${root} && find . | cpio -o -H newc --quiet | gzip -1 > ${tftpRoot}/initrd.gz`,
  ]);
  await Deno.remove(root, { recursive: true });
  await Deno.copyFile(k.image, `${tftpRoot}/vmlinuz`);
  await Deno.writeTextFile(
    `${tftpRoot}/boot.ipxe`,
    "#!ipxe\n" +
      "kernel tftp://${next-server}/vmlinuz console=ttyS0 quiet panic=-1 booted=from-tftp\n" +
      "initrd tftp://${next-server}/initrd.gz\nboot\n",
  );
  return [
    ..."-machine q35,accel=tcg -m 256 -nographic -no-reboot -boot n".split(" "),
    ...["-netdev", netdev, "-device", "e1000,netdev=n0"],
  ];
}
