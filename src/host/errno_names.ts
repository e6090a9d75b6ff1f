/**
 * The names of the errno values socket calls return, as node's errors carry them in `code`.
 *
 * @module
 */

const NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  4: "EINTR",
  9: "EBADF",
  11: "EAGAIN",
  13: "EACCES",
  32: "EPIPE",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  101: "ENETUNREACH",
  103: "ECONNABORTED",
  104: "ECONNRESET",
  105: "ENOBUFS",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  113: "EHOSTUNREACH",
  90: "EMSGSIZE",
  24: "EMFILE",
  23: "ENFILE",
};

/** "ECONNREFUSED" for 111; "errno N" for a value without a name here. */
export function errnoName(e: number): string {
  return NAMES[e] ?? `errno ${e}`;
}
