/**
 * The {@linkcode Platform} of Bun: `node:` modules for files, the process and the fallback listeners,
 * `bun:ffi` for libc, `Bun.serve` for HTTP and WebSocket. Loaded only under Bun (platform/current.ts), so
 * Deno never resolves `bun:ffi`; the few Bun types used are declared here.
 *
 * @module
 */
import { cpuUsage, memoryUsage } from "node:process";
import process from "node:process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as net from "node:net";
import type {
  FileInfo,
  FileSink,
  FileSource,
  ForeignFunctions,
  ForeignSymbols,
  HttpServer,
  MemoryFigures,
  Platform,
  RuntimeConn,
  RuntimeListener,
  StreamAddress,
} from "./platform.ts";

/** The part of Bun's ServerWebSocket used here. */
interface BunSocket {
  data: ServerSideWebSocket;
  readonly readyState: number;
  send(data: string | ArrayBufferView | ArrayBuffer): number;
  close(code?: number, reason?: string): void;
  getBufferedAmount(): number;
}

interface BunServer {
  readonly hostname: string;
  readonly port: number;
  upgrade(req: Request, opts: { data: ServerSideWebSocket; headers?: Record<string, string> }): boolean;
  stop(closeActive?: boolean): Promise<void>;
}

interface BunGlobal {
  version: string;
  serve(options: {
    hostname: string;
    port: number;
    idleTimeout: number;
    development: boolean;
    error(e: Error): Response;
    fetch(req: Request, server: BunServer): Promise<Response | undefined>;
    websocket: {
      idleTimeout: number;
      maxPayloadLength: number;
      binaryType: "arraybuffer";
      open(ws: BunSocket): void;
      message(ws: BunSocket, message: string | ArrayBuffer): void;
      close(ws: BunSocket, code: number, reason: string): void;
    };
  }): BunServer;
}

interface BunFfi {
  dlopen(path: string, symbols: Record<string, { args: string[]; returns: string }>): {
    symbols: Record<string, (...args: unknown[]) => unknown>;
  };
  read: { i32(pointer: unknown, offset: number): number };
  ptr(view: ArrayBufferView): number;
}

const Bun = (globalThis as unknown as { Bun: BunGlobal }).Bun;
// a computed specifier: Deno's type check must not try to resolve this Bun-only module
const ffiModule = "bun:" + "ffi";
const ffi = await import(ffiModule) as BunFfi;

/** Deno's FFI type names in Bun's (the rest are spelled alike). */
const BUN_TYPE: Record<string, string> = {
  buffer: "ptr",
  pointer: "ptr",
  isize: "i64_fast",
  usize: "u64_fast",
};

/** How often an emulated nonblocking call looks again. */
const NONBLOCKING_POLL_MS = 1;

function openLibrary<S extends ForeignSymbols>(path: string, symbols: S): ForeignFunctions<S> {
  // Bun names a symbol by its key: an entry with a `name` of its own (epoll_wait_now) shares that symbol
  const spec: Record<string, { args: string[]; returns: string }> = {};
  for (const [key, s] of Object.entries(symbols)) {
    const d = s as Deno.ForeignFunction & { name?: string };
    spec[d.name ?? key] = {
      args: d.parameters.map((t) => BUN_TYPE[t as string] ?? (t as string)),
      returns: BUN_TYPE[d.result as string] ?? (d.result as string),
    };
  }
  const found = ffi.dlopen(path, spec).symbols;
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(symbols)) {
    const d = s as Deno.ForeignFunction & { name?: string };
    const f = found[d.name ?? key];
    out[key] = d.nonblocking ? pollUntilAnswered(f) : f;
  }
  return out as ForeignFunctions<S>;
}

/**
 * Bun's FFI has no calls on another thread: a call that may block (poll, epoll_wait; the timeout is the last
 * argument) is made with a zero timeout every millisecond until it answers or its own timeout ends. Only the
 * main thread's socket loop (`--workers 0`) and the ping socket outside a worker wait this way; a data-plane
 * worker blocks in epoll_wait itself, as it owns its thread.
 */
function pollUntilAnswered(f: (...args: unknown[]) => unknown): (...args: unknown[]) => Promise<unknown> {
  return async (...args: unknown[]) => {
    const last = args.length - 1;
    const timeout = Number(args[last]);
    const start = performance.now();
    const now = [...args];
    now[last] = 0;
    for (;;) {
      const r = f(...now);
      if (r !== 0 || timeout === 0) return r;
      if (timeout > 0 && performance.now() - start >= timeout) return 0;
      await new Promise((res) => setTimeout(res, NONBLOCKING_POLL_MS));
    }
  };
}

/**
 * A WebSocket as the relay uses one (the DOM interface, as Deno's upgrade returns it) over Bun's server-side
 * socket, whose events Bun delivers to the server's handlers instead.
 */
class ServerSideWebSocket {
  binaryType: BinaryType = "arraybuffer";
  readyState: number = WebSocket.CONNECTING;
  onopen: ((e: Event) => void) | null = null;
  onmessage: ((e: MessageEvent) => void) | null = null;
  onclose: ((e: CloseEvent) => void) | null = null;
  onerror: ((e: Event) => void) | null = null;
  #ws: BunSocket | null = null;

  constructor(readonly protocol: string) {}

  get bufferedAmount(): number {
    return this.#ws?.getBufferedAmount() ?? 0;
  }

  send(data: string | ArrayBufferView | ArrayBuffer): void {
    if (this.#ws && this.readyState === WebSocket.OPEN) this.#ws.send(data);
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= WebSocket.CLOSING) return;
    this.readyState = WebSocket.CLOSING;
    this.#ws?.close(code, reason);
  }

  /**
   * Bun may open the socket inside `server.upgrade()`, before the caller has set `onopen` (Deno's socket
   * opens only after the handler returned): the open event, and messages until then, wait one microtask.
   */
  opened(ws: BunSocket): void {
    this.#ws = ws;
    if (this.readyState === WebSocket.CLOSING) return ws.close(1000);
    this.readyState = WebSocket.OPEN;
    queueMicrotask(() => {
      this.onopen?.(new Event("open"));
      const early = this.#early;
      this.#early = null;
      for (const data of early ?? []) this.message(data);
    });
  }

  #early: (string | ArrayBuffer)[] | null = [];

  message(data: string | ArrayBuffer): void {
    if (this.#early) this.#early.push(data);
    else this.onmessage?.(new MessageEvent("message", { data }));
  }

  closed(code: number, reason: string): void {
    this.readyState = WebSocket.CLOSED;
    this.onclose?.(new CloseEvent("close", { code, reason, wasClean: code !== 1006 }));
  }
}

/** Requests being served, with the server that can upgrade them. */
const servedBy = new WeakMap<Request, BunServer>();
const upgraded = new WeakSet<Request>();

/** A node:net socket as a {@linkcode RuntimeConn}: reads wait for data; the socket pauses while data waits. */
function runtimeConn(sock: net.Socket, remote: string): RuntimeConn {
  const chunks: Uint8Array[] = [];
  let ended = false;
  let wake: (() => void) | null = null;
  const poke = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  sock.setNoDelay?.(true);
  sock.on("data", (d: Uint8Array) => {
    chunks.push(d);
    sock.pause();
    poke();
  });
  sock.on("end", () => {
    ended = true;
    poke();
  });
  sock.on("close", () => {
    ended = true;
    poke();
  });
  sock.on("error", () => {});
  return {
    remote,
    async read(p) {
      while (chunks.length === 0) {
        if (ended) return null;
        sock.resume();
        await new Promise<void>((r) => (wake = r));
      }
      const c = chunks[0];
      const n = Math.min(c.length, p.length);
      p.set(c.subarray(0, n));
      if (n === c.length) chunks.shift();
      else chunks[0] = c.subarray(n);
      return n;
    },
    write: (p) => new Promise((resolve, reject) => sock.write(p, (e) => (e ? reject(e) : resolve(p.length)))),
    close: () => sock.destroy(),
  };
}

export const bunPlatform: Platform = {
  name: `bun ${Bun.version}`,
  os: process.platform,
  arch: process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : process.arch,
  env: (name) => process.env[name],
  // a compiled binary's argv is [bun, its own path, …] as well
  args: () => process.argv.slice(2),
  exit: (code) => process.exit(code),
  onSignal: (signal, fn) => void process.on(signal, fn),
  unrefTimer: (id) => (id as unknown as { unref?: () => void }).unref?.(),
  readTextFile: (path) => fs.readFileSync(path, "utf8"),
  createFile(path: string, mode: number): FileSink {
    return fileSink(fs.openSync(path, "wx", mode));
  },
  openRead(path: string): FileSource {
    const fd = fs.openSync(path, "r");
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new Error(`${path} is not a regular file`);
      return {
        size: st.size,
        readAt: (buf, position) => fs.readSync(fd, buf, 0, buf.length, position),
        close: () => fs.closeSync(fd),
      };
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  },
  replaceFile(path: string, mode: number): FileSink {
    try {
      if (fs.lstatSync(path).isSymbolicLink()) throw new Error(`${path} is a symbolic link`);
    } catch (e) {
      if ((e as { code?: string }).code !== "ENOENT") throw e;
    }
    return fileSink(fs.openSync(path, "w", mode));
  },
  alreadyExists: (e) => (e as { code?: string })?.code === "EEXIST",
  realPath: (path) => fs.realpathSync(path),
  lstat(path: string): FileInfo {
    const st = fs.lstatSync(path);
    return { isDirectory: st.isDirectory(), uid: st.uid, mode: st.mode, isSocket: st.isSocket() };
  },
  mkdir: (path, mode) => void fs.mkdirSync(path, { recursive: true, mode }),
  removeFile: (path) => fs.unlinkSync(path),
  uid: () => process.getuid?.() ?? null,
  networkAddresses: () =>
    Object.values(os.networkInterfaces()).flatMap((list) =>
      (list ?? []).map((i) => ({ family: String(i.family), address: i.address }))
    ),
  memory(): MemoryFigures {
    const m = memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external };
  },
  hostname: () => os.hostname(),
  cpuSeconds(): number {
    const u = cpuUsage();
    return (u.user + u.system) / 1e6;
  },
  openFds(): number | null {
    try {
      return fs.readdirSync("/proc/self/fd").length;
    } catch {
      return null;
    }
  },
  openLibrary,
  readInt32: (pointer) => ffi.read.i32(pointer, 0),
  addressOf: (view) => BigInt(ffi.ptr(view)),
  listenStream(a: StreamAddress, onAccept: (c: RuntimeConn) => void): RuntimeListener {
    const server = net.createServer((sock) => {
      const remote = a.kind === "tcp" ? `${sock.remoteAddress}:${sock.remotePort}` : "unix";
      onAccept(runtimeConn(sock, remote));
    });
    let failure: Error | null = null;
    server.on("error", (e) => (failure = e));
    if (a.kind === "tcp") server.listen({ host: a.host, port: a.port });
    else server.listen({ path: a.path });
    if (failure) throw failure;
    const addr = server.address();
    return {
      port: typeof addr === "object" && addr ? addr.port : 0,
      close: () => void server.close(),
    };
  },
  serveHttp(hostname, port, handler): HttpServer {
    const server = Bun.serve({
      hostname,
      port,
      // no idle limit, as with Deno's server: the relay's own deadlines apply
      idleTimeout: 0,
      // never Bun's developer error page (it shows source code to whoever asked)
      development: false,
      error: (e) => {
        console.error(`slirp-relay: HTTP handler failed: ${e?.stack ?? e}`);
        return new Response("internal error\n", { status: 500 });
      },
      async fetch(request, srv) {
        // a request without Host (HTTP/1.0, HAProxy's health checks) has a bare path for its URL here
        const req = URL.canParse(request.url)
          ? request
          : new Request(new URL(request.url, `http://${hostOf(srv)}`), request);
        servedBy.set(req, srv);
        const res = await handler(req);
        // an upgraded request is answered by the upgrade itself
        return upgraded.has(req) ? undefined : res;
      },
      websocket: {
        // guests may be silent for long: the relay's own timers end sessions
        idleTimeout: 0,
        maxPayloadLength: 16 * 1024 * 1024,
        binaryType: "arraybuffer",
        open: (ws) => ws.data.opened(ws),
        message: (ws, m) => ws.data.message(m),
        close: (ws, code, reason) => ws.data.closed(code, reason),
      },
    });
    return { hostname: server.hostname, port: server.port, shutdown: () => server.stop(false) };
  },
  upgradeWebSocket(req, protocol) {
    const server = servedBy.get(req);
    if (!server) throw new Error("not a request this server is serving");
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      throw new Error("the request asks for no WebSocket upgrade");
    }
    const socket = new ServerSideWebSocket(protocol ?? "");
    const headers = protocol ? { "Sec-WebSocket-Protocol": protocol } : undefined;
    if (!server.upgrade(req, { data: socket, headers })) throw new Error("the upgrade failed");
    upgraded.add(req);
    // Bun answers the upgrade itself: the server drops this response (see serveHttp)
    return { socket: socket as unknown as WebSocket, response: new Response(null) };
  },
};

/** The server's address as an authority (IPv6 literals in brackets). */
function hostOf(server: BunServer): string {
  return `${server.hostname.includes(":") ? `[${server.hostname}]` : server.hostname}:${server.port}`;
}

function fileSink(fd: number): FileSink {
  return {
    writeSync: (data) => fs.writeSync(fd, data),
    close: () => fs.closeSync(fd),
  };
}
