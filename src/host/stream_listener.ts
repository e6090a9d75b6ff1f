/**
 * Listening byte-stream sockets for the stream transport: `tcp://host:port` and `unix:///path`. On Linux
 * with FFI allowed they run on our epoll loop (fair service of thousands of guests, see epoll.ts), else
 * on the runtime's own listeners. Either way reads go straight into our buffers.
 *
 * @module
 */
import type { ByteStream } from "./host.ts";
import { EpollListener, type EpollSocket } from "./epoll.ts";
import { platform } from "../platform/current.ts";
import type { StreamAddress } from "../platform/platform.ts";

/** A guest connection as accepted: a byte stream and a printable remote address. */
export type AcceptedStream = ByteStream & { remote: string };

export interface StreamListener {
  /** The bound address as a URL, with the real port when 0 was asked for. */
  readonly url: string;
  close(): void;
}

/** Parses a listen URL; throws a clear Error for anything else. */
export function parseListenUrl(url: string): StreamAddress {
  const tcp = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d{1,5})\/?$/.exec(url);
  if (tcp) {
    const port = Number(tcp[2]);
    if (port > 65535) throw new Error(`Invalid listen address "${url}": port above 65535`);
    return { kind: "tcp", host: tcp[1].replace(/^\[|\]$/g, ""), port };
  }
  const unix = /^unix:\/\/(\/.+)$/.exec(url);
  if (unix) return { kind: "unix", path: unix[1] };
  throw new Error(`Invalid listen address "${url}": expected tcp://HOST:PORT or unix:///PATH`);
}

/** The path of a datagram listen URL (`unix:///path`); throws a clear Error for anything else. */
export function datagramPath(url: string): string {
  const unix = /^(?:unix|unixgram):\/\/(\/.+)$/.exec(url);
  if (!unix) throw new Error(`Invalid datagram listen address "${url}": expected unix:///PATH`);
  return unix[1];
}

/** Listens on `url`, on our epoll loop or the runtime's listeners; each guest connection goes to `onAccept`. */
export function listenStream(
  url: string,
  onAccept: (c: AcceptedStream) => void,
  onEpoll: boolean,
): StreamListener {
  try {
    return onEpoll ? bindEpoll(url, onAccept) : bind(url, onAccept);
  } catch (e) {
    const err = e as Error;
    const why = err.name === "AddrInUse" || (err as { code?: string }).code === "EADDRINUSE"
      ? "the address is already in use (another relay running?)"
      : err.message;
    throw new Error(`Cannot listen on ${url}: ${why}`);
  }
}

function bindEpoll(url: string, onAccept: (c: AcceptedStream) => void): StreamListener {
  const a = parseListenUrl(url);
  let listener: EpollListener;
  let bound: string;
  if (a.kind === "tcp") {
    listener = EpollListener.tcp(a.host, a.port, (s: EpollSocket) => {
      onAccept(Object.assign(s, { remote: `${s.remoteAddress}:${s.remotePort}` }));
    });
    bound = `tcp://${a.host.includes(":") ? `[${a.host}]` : a.host}:${listener.port}`;
  } else {
    removeStaleSocket(a.path);
    listener = EpollListener.unix(a.path, (s: EpollSocket) => onAccept(Object.assign(s, { remote: "unix" })));
    bound = `unix://${a.path}`;
  }
  return {
    url: bound,
    close() {
      listener.close();
      if (a.kind === "unix") {
        try {
          platform.removeFile(a.path);
        } catch { /* gone */ }
      }
    },
  };
}

/** A stale socket file from a previous run would make bind fail with EADDRINUSE. */
function removeStaleSocket(path: string): void {
  try {
    if (platform.lstat(path).isSocket) platform.removeFile(path);
  } catch { /* absent */ }
}

function bind(url: string, onAccept: (c: AcceptedStream) => void): StreamListener {
  const a = parseListenUrl(url);
  if (a.kind === "unix") removeStaleSocket(a.path);
  const listener = platform.listenStream(a, onAccept);
  const bound = a.kind === "tcp"
    ? `tcp://${a.host.includes(":") ? `[${a.host}]` : a.host}:${listener.port}`
    : `unix://${a.path}`;
  return {
    url: bound,
    close() {
      listener.close();
      if (a.kind === "unix") {
        try {
          platform.removeFile(a.path);
        } catch { /* gone */ }
      }
    },
  };
}
