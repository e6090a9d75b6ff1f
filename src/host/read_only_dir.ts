/**
 * One host directory served read-only (the TFTP root): a guest names a file inside it and gets that file
 * or nothing — never a path outside, by `..`, by an absolute name or through a symbolic link.
 *
 * @module
 */
import { platform } from "../platform/current.ts";
import type { HostFile, HostFiles } from "./host.ts";

export class ReadOnlyDir implements HostFiles {
  readonly dir: string;

  /** `dir` is resolved at each request: a directory replaced or removed later is what its name finds then. */
  constructor(dir: string) {
    this.dir = dir;
  }

  /** The real path of `dir`; throws when it is not a directory (the relay refuses to start). */
  static check(dir: string): string {
    const real = platform.realPath(dir);
    if (!platform.lstat(real).isDirectory) throw new Error(`${dir} is not a directory`);
    return real;
  }

  open(name: string): HostFile | "missing" | "refused" {
    // PXE clients send "/pxelinux.0" and, on Windows, "\\boot\\wdsnbp.com": both are relative to the root
    const parts = name.replaceAll("\\", "/").split("/").filter((p) => p !== "" && p !== ".");
    if (parts.length === 0 || parts.includes("..")) return "refused";
    let root: string, real: string;
    try {
      root = platform.realPath(this.dir);
      real = platform.realPath(`${root}/${parts.join("/")}`);
    } catch {
      return "missing";
    }
    // a symbolic link inside the root may point anywhere: only what resolves inside it is served
    if (!real.startsWith(root.endsWith("/") ? root : `${root}/`)) return "refused";
    try {
      return platform.openRead(real);
    } catch {
      return "refused";
    }
  }
}
