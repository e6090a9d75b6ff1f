/**
 * The directory of per-tenant stream sockets. Whoever can create files there can put a socket where a
 * tenant's QEMU will connect, or replace one: so it is the relay user's own, created 0700, and a
 * directory owned by another user or writable by group or others is refused.
 *
 * @module
 */
import { platform } from "../platform/current.ts";

/** The default: `$XDG_RUNTIME_DIR/slirp-relay` (per user, 0700 by systemd), else `/tmp/slirp-relay-<uid>`. */
export function defaultSocketDir(): string {
  const runtime = platform.env("XDG_RUNTIME_DIR");
  return runtime ? `${runtime}/slirp-relay` : `/tmp/slirp-relay-${platform.uid() ?? "user"}`;
}

/** Creates `dir` (0700) if missing and checks that it is safe; throws with what is wrong. */
export function prepareSocketDir(dir: string): string {
  try {
    platform.mkdir(dir, 0o700);
  } catch (e) {
    throw new Error(`Cannot create --tenant-socket-dir ${dir}: ${(e as Error).message}`);
  }
  const st = platform.lstat(dir);
  if (!st.isDirectory) throw new Error(`--tenant-socket-dir ${dir} is not a directory (a symlink?)`);
  const uid = platform.uid();
  if (uid !== null && st.uid !== null && st.uid !== uid) {
    throw new Error(`--tenant-socket-dir ${dir} belongs to uid ${st.uid}, not to this user (${uid})`);
  }
  if (st.mode !== null && (st.mode & 0o022) !== 0) {
    throw new Error(
      `--tenant-socket-dir ${dir} is writable by ${st.mode & 0o002 ? "others" : "its group"} ` +
        `(mode ${
          (st.mode & 0o777).toString(8)
        }): another user could put a socket where a tenant's guest connects`,
    );
  }
  return dir;
}
