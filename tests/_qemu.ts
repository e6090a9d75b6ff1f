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

/**
 * Boots a guest whose NIC is `netdev` (a QEMU -netdev spec with id=n0) and runs `script` after the
 * prelude (interface up, /udhcpc.sh written). Resolves with the console output once the guest powers off.
 */
export async function bootGuest(
  netdev: string,
  script: string,
  timeoutMs = 240_000,
): Promise<{ console: string; ms: number }> {
  const k = kernel();
  if (!k) throw new Error("No kernel");
  const dir = await Deno.makeTempDir({ prefix: "slirp-qemu-" });
  try {
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
    const start = performance.now();
    const r = await run([
      "qemu-system-x86_64",
      "-machine",
      "q35,accel=tcg",
      "-m",
      "256",
      "-nographic",
      "-no-reboot",
      "-kernel",
      k.image,
      "-initrd",
      `${dir}/initrd.gz`,
      "-append",
      "console=ttyS0 quiet panic=-1",
      "-netdev",
      netdev,
      "-device",
      "e1000,netdev=n0",
    ], { timeoutMs });
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
