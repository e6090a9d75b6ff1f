/**
 * The {@linkcode Platform} of Deno.
 *
 * @module
 */
import { cpuUsage } from "node:process";
import type {
  FileInfo,
  FileSink,
  FileSource,
  ForeignSymbols,
  HttpServer,
  MemoryFigures,
  Platform,
  RuntimeConn,
  RuntimeListener,
  StreamAddress,
} from "./platform.ts";

export const denoPlatform: Platform = {
  name: `deno ${Deno.version.deno}`,
  os: Deno.build.os,
  arch: Deno.build.arch,
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
  openRead(path: string): FileSource {
    const f = Deno.openSync(path, { read: true });
    try {
      const st = f.statSync();
      if (!st.isFile) throw new Error(`${path} is not a regular file`);
      return {
        size: st.size,
        readAt(buf, position) {
          f.seekSync(position, Deno.SeekMode.Start);
          return f.readSync(buf) ?? 0;
        },
        close: () => f.close(),
      };
    } catch (e) {
      f.close();
      throw e;
    }
  },
  alreadyExists: (e) => e instanceof Deno.errors.AlreadyExists,
  realPath: (path) => Deno.realPathSync(path),
  lstat(path: string): FileInfo {
    const st = Deno.lstatSync(path);
    return { isDirectory: st.isDirectory, uid: st.uid, mode: st.mode, isSocket: st.isSocket === true };
  },
  mkdir: (path, mode) => Deno.mkdirSync(path, { recursive: true, mode }),
  removeFile: (path) => Deno.removeSync(path),
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
  openLibrary: <S extends ForeignSymbols>(path: string, symbols: S) => Deno.dlopen(path, symbols).symbols,
  readInt32: (pointer) => new Deno.UnsafePointerView(pointer as Deno.PointerObject).getInt32(),
  addressOf: (view) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view))),
  listenStream(a: StreamAddress, onAccept: (c: RuntimeConn) => void): RuntimeListener {
    const listener = a.kind === "tcp"
      ? Deno.listen({ transport: "tcp", hostname: a.host, port: a.port })
      : Deno.listen({ transport: "unix", path: a.path });
    (async () => {
      for (;;) {
        let conn: Deno.Conn;
        try {
          conn = await listener.accept();
        } catch {
          return; // closed
        }
        if (a.kind === "tcp") (conn as Deno.TcpConn).setNoDelay(true);
        const r = conn.remoteAddr;
        onAccept(Object.assign(conn, { remote: r.transport === "tcp" ? `${r.hostname}:${r.port}` : "unix" }));
      }
    })();
    return {
      port: listener.addr.transport === "tcp" ? listener.addr.port : 0,
      close() {
        try {
          listener.close();
        } catch { /* closed */ }
      },
    };
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
