/**
 * The {@linkcode Platform} of Deno.
 *
 * @module
 */
import { cpuUsage } from "node:process";
import type { FileInfo, FileSink, HttpServer, MemoryFigures, Platform } from "./platform.ts";

export const denoPlatform: Platform = {
  name: `deno ${Deno.version.deno}`,
  env: (name) => Deno.env.get(name),
  args: () => Deno.args,
  exit: (code) => Deno.exit(code),
  onSignal: (signal, fn) => Deno.addSignalListener(signal, fn),
  unrefTimer: (id) => Deno.unrefTimer(id as unknown as number),
  readTextFile: (path) => Deno.readTextFileSync(path),
  createFile(path: string, mode: number): FileSink {
    return Deno.openSync(path, { write: true, createNew: true, mode });
  },
  replaceFile(path: string, mode: number): FileSink {
    try {
      if (Deno.lstatSync(path).isSymlink) throw new Error(`${path} is a symbolic link`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    return Deno.openSync(path, { write: true, create: true, truncate: true, mode });
  },
  alreadyExists: (e) => e instanceof Deno.errors.AlreadyExists,
  realPath: (path) => Deno.realPathSync(path),
  lstat(path: string): FileInfo {
    const st = Deno.lstatSync(path);
    return { isDirectory: st.isDirectory, uid: st.uid, mode: st.mode };
  },
  mkdir: (path, mode) => Deno.mkdirSync(path, { recursive: true, mode }),
  uid: () => Deno.uid(),
  networkAddresses: () => Deno.networkInterfaces(),
  memory(): MemoryFigures {
    const m = Deno.memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external };
  },
  hostname: () => Deno.hostname(),
  cpuSeconds(): number {
    const u = cpuUsage();
    return (u.user + u.system) / 1e6;
  },
  openFds(): number | null {
    try {
      let n = 0;
      for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
      return n - 1; // the directory's own descriptor while it is read
    } catch {
      return null;
    }
  },
  serveHttp(hostname, port, handler): HttpServer {
    let bound: { hostname: string; port: number } | null = null;
    const server = Deno.serve({ hostname, port, onListen: (a) => (bound = a) }, handler);
    const addr = bound ?? (server.addr as Deno.NetAddr);
    return { hostname: addr.hostname, port: addr.port, shutdown: () => server.shutdown() };
  },
  upgradeWebSocket(req, protocol) {
    return Deno.upgradeWebSocket(req, protocol ? { protocol } : {});
  },
};
