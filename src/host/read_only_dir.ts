/**
 * One host directory served read-only (the TFTP root): a guest names a file inside it and gets that file
 * or nothing — never a path outside, by `..`, by an absolute name or through a symbolic link.
 *
 * @module
 */
import { platform } from "../platform/current.ts";
import type { HostFile, HostFiles } from "./host.ts";

export class ReadOnlyDir implements HostFiles {
  readonly root: string;

  /** @throws Error when `dir` is not a directory */
  constructor(dir: string) {
    this.root = platform.realPath(dir);
    if (!platform.lstat(this.root).isDirectory) throw new Error(`${dir} is not a directory`);
  }

  open(name: string): HostFile | "missing" | "refused" {
    // PXE clients send "/pxelinux.0" and, on Windows, "\\boot\\wdsnbp.com": both are relative to the root
    const parts = name.replaceAll("\\", "/").split("/").filter((p) => p !== "" && p !== ".");
    if (parts.length === 0 || parts.includes("..")) return "refused";
    let real: string;
    try {
      real = platform.realPath(`${this.root}/${parts.join("/")}`);
    } catch {
      return "missing";
    }
    // a symbolic link inside the root may point anywhere: only what resolves inside it is served
    if (!real.startsWith(this.root.endsWith("/") ? this.root : `${this.root}/`)) return "refused";
    try {
      return platform.openRead(real);
    } catch {
      return "refused";
    }
  }
}
