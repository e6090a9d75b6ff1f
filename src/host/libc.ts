/**
 * The libc calls the relay makes through Deno FFI (`--allow-ffi`): ping sockets and TAP devices.
 * Opened once, on first use; Linux with glibc only.
 *
 * @module
 */

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  recvfrom: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"], result: "isize" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** Runs on a worker thread: the only call that may block. */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;

/** The libc symbols; throws when FFI or libc.so.6 is unavailable. */
export function libc(): Libc {
  if (!lib) lib = Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

/** errno of the calling thread after a failed call. */
export function errno(): number {
  const p = libc().__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : -1;
}

export const EAGAIN = 11;
export const POLLIN = 1;

/** A `struct pollfd` for one descriptor waiting for input, as poll() takes it. */
export function pollFdFor(fd: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setInt32(0, fd, true);
  v.setInt16(4, POLLIN, true);
  return b;
}
