/**
 * The runtime seam: what the relay needs from the runtime it runs on (files, environment, signals, memory
 * figures, the host's addresses, an HTTP server with WebSocket upgrades, a C library through FFI, listening
 * sockets for the fallback without FFI), as one interface. Implementations: platform/deno.ts and
 * platform/bun.ts; platform/current.ts chooses the one in use, in one place. The host room (src/host/) builds
 * its sockets on these (its own seam toward the stack is host/host.ts).
 *
 * @module
 */

/** A file opened for writing (pcap captures). */
export interface FileSink {
  writeSync(data: Uint8Array): number;
  close(): void;
}

/** A regular file opened for reading (the TFTP server's files). */
export interface FileSource {
  /** Its size in bytes when opened. */
  readonly size: number;
  /** Reads into `buf` from byte `position`; returns the bytes read (0 at the end). */
  readAt(buf: Uint8Array, position: number): number;
  close(): void;
}

export interface FileInfo {
  isDirectory: boolean;
  /** Owner, or null where the runtime cannot tell. */
  uid: number | null;
  /** Permission bits, or null where the runtime cannot tell. */
  mode: number | null;
  isSocket: boolean;
}

/** What a listen URL names (host/stream_listener.ts parses it). */
export type StreamAddress = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

/** A connection accepted by the runtime's own listener (the fallback without FFI). */
export interface RuntimeConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
  /** `host:port`, or "unix". */
  readonly remote: string;
}

/** A listener of the runtime's own. */
export interface RuntimeListener {
  /** The bound port (tcp), or 0. */
  readonly port: number;
  close(): void;
}

/**
 * C functions described in Deno's FFI vocabulary (parameters "i32", "buffer", "usize"…; `nonblocking: true`
 * for a call that may block, which then returns a promise). Each runtime translates it to its own FFI.
 */
export type ForeignSymbols = Deno.ForeignLibraryInterface;
/** The callable symbols of a library opened with {@linkcode ForeignSymbols}. */
export type ForeignFunctions<S extends ForeignSymbols> = Deno.DynamicLibrary<S>["symbols"];

/** Memory of the process, in bytes. */
export interface MemoryFigures {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  /** Held outside the JS heap by JS objects (buffers). */
  external: number;
}

/** A listening HTTP server. */
export interface HttpServer {
  /** The address it listens on (the port chosen when 0 was asked). */
  readonly hostname: string;
  readonly port: number;
  /** Stops accepting and finishes the requests in progress. */
  shutdown(): Promise<void>;
}

export interface Platform {
  /** The runtime and its version ("deno 2.9.6", "bun 1.4.5"), for logs and `--version`. */
  readonly name: string;
  /** The operating system ("linux", "darwin", …) and CPU ("x86_64", "aarch64"), as Deno names them. */
  readonly os: string;
  readonly arch: string;
  env(name: string): string | undefined;
  args(): string[];
  exit(code: number): never;
  /** Calls `fn` on the signal (SIGINT, SIGTERM). */
  onSignal(signal: "SIGINT" | "SIGTERM", fn: () => void): void;
  /** Lets the process exit while this timer is pending. */
  unrefTimer(id: ReturnType<typeof setTimeout>): void;
  readTextFile(path: string): string;
  /** Creates `path` with `mode`; throws when it exists ({@linkcode alreadyExists} tells). */
  createFile(path: string, mode: number): FileSink;
  /**
   * Creates `path` or truncates the regular file there (an operator's output file, as `tcpdump -w`); throws
   * rather than write through a symlink.
   */
  replaceFile(path: string, mode: number): FileSink;
  /** Opens the regular file at `path` for reading; throws when it is missing, unreadable or not a file. */
  openRead(path: string): FileSource;
  /** Whether `e` says a file already existed. */
  alreadyExists(e: unknown): boolean;
  realPath(path: string): string;
  /** Facts about `path` itself (a symlink is not followed). */
  lstat(path: string): FileInfo;
  mkdir(path: string, mode: number): void;
  /** Removes a file; throws when it cannot. */
  removeFile(path: string): void;
  /** The process's user id, or null where there is none. */
  uid(): number | null;
  /** Every address of the host's interfaces. */
  networkAddresses(): { family: string; address: string }[];
  memory(): MemoryFigures;
  /** The host's name. */
  hostname(): string;
  /** CPU time the process has used (user + system), in seconds. */
  cpuSeconds(): number;
  /** Open file descriptors of the process, or null where the runtime cannot tell. */
  openFds(): number | null;
  /** Serves HTTP on `hostname:port` (0 picks a port). */
  serveHttp(
    hostname: string,
    port: number,
    handler: (req: Request) => Response | Promise<Response>,
  ): HttpServer;
  /**
   * Opens a shared library (FFI); throws when FFI is not allowed or the library is missing. A nonblocking
   * symbol must not block the calling thread: where the runtime cannot run it on another thread (Bun), it is
   * polled with a zero timeout (its last parameter) every millisecond until it has an answer.
   */
  openLibrary<S extends ForeignSymbols>(path: string, symbols: S): ForeignFunctions<S>;
  /** The 32-bit integer at a pointer a foreign function returned (errno). */
  readInt32(pointer: unknown): number;
  /**
   * The address of `view`'s first byte, for a structure handed to a foreign function that points at it (an
   * iovec). Valid while the view's ArrayBuffer lives: an ArrayBuffer's memory never moves.
   */
  addressOf(view: Uint8Array): bigint;
  /** Listens with the runtime's own sockets (the fallback where the relay's socket loop cannot run). */
  listenStream(address: StreamAddress, onAccept: (c: RuntimeConn) => void): RuntimeListener;
  /** Accepts a WebSocket upgrade of `req`, answering with `protocol` when given; throws on a bad upgrade. */
  upgradeWebSocket(req: Request, protocol?: string): { socket: WebSocket; response: Response };
}
