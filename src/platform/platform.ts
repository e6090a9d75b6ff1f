/**
 * The runtime seam: what the relay needs from the runtime it runs on (files, environment, signals, memory
 * figures, the host's addresses, an HTTP server with WebSocket upgrades), as one interface. The Deno
 * implementation is platform/deno.ts; platform/current.ts chooses the one in use, in one place. Sockets and
 * FFI are the host room's (src/host/), whose own seam is the host interface (host/host.ts).
 *
 * @module
 */

/** A file opened for writing (pcap captures). */
export interface FileSink {
  writeSync(data: Uint8Array): number;
  close(): void;
}

export interface FileInfo {
  isDirectory: boolean;
  /** Owner, or null where the runtime cannot tell. */
  uid: number | null;
  /** Permission bits, or null where the runtime cannot tell. */
  mode: number | null;
}

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
  /** The runtime, for logs and for the rare behaviour that differs. */
  readonly name: string;
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
  /** Whether `e` says a file already existed. */
  alreadyExists(e: unknown): boolean;
  realPath(path: string): string;
  /** Facts about `path` itself (a symlink is not followed). */
  lstat(path: string): FileInfo;
  mkdir(path: string, mode: number): void;
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
  /** Accepts a WebSocket upgrade of `req`, answering with `protocol` when given; throws on a bad upgrade. */
  upgradeWebSocket(req: Request, protocol?: string): { socket: WebSocket; response: Response };
}
