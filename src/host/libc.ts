/**
 * The libc calls the relay makes through the runtime's FFI (Deno `--allow-ffi`, `bun:ffi`): its socket loop,
 * ping sockets, TAP devices. Opened once per thread, on first use; Linux with glibc only.
 *
 * @module
 */
import { platform } from "../platform/current.ts";
import type { ForeignFunctions } from "../platform/platform.ts";

/*
 * The byte counts of the per-packet calls (recv, send, sendto, recvfrom, read, write) cross as 32-bit
 * integers, their size_t/ssize_t notwithstanding: the runtime's FFI takes a slow path for 64-bit integers
 * (Deno 2.9: a recv that finds nothing, 0.78-0.95 µs with usize/isize, 0.42-0.55 µs with u32/i32), and on
 * x86-64 and aarch64 a 32-bit register write clears the upper half, so the callee reads the same size_t; the
 * low half of an ssize_t result is the same int for -1 and for any count under 2 GiB (every buffer here).
 */
const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "u32", "i32", "buffer", "u32"], result: "i32" },
  recvfrom: { parameters: ["i32", "buffer", "u32", "i32", "buffer", "buffer"], result: "i32" },
  /** The last parameter (a timeout) is always null here. */
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "pointer"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** Runs on a worker thread (may block). */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  /** Runs on a worker thread (may block). */
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: true },
  /** The same with a zero timeout, on the calling thread. */
  epoll_wait_now: { name: "epoll_wait", parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  sched_yield: { parameters: [], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  mallopt: { parameters: ["i32", "i32"], result: "i32" },
  malloc_trim: { parameters: ["usize"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

export type Libc = ForeignFunctions<typeof SYMBOLS>;

let lib: Libc | null = null;

/** The libc symbols; throws when FFI or libc.so.6 is unavailable. */
export function libc(): Libc {
  lib ??= platform.openLibrary("libc.so.6", SYMBOLS);
  return lib;
}

let errnoAt: unknown = null;

/** errno of this thread after a failed call (every call but the nonblocking ones runs on it). */
export function errno(): number {
  errnoAt ??= libc().__errno_location();
  return platform.readInt32(errnoAt);
}

/** A size_t argument: the FFI takes a plain number too (typed bigint; BigInt() would allocate per call). */
export const size = (n: number) => n as unknown as bigint;

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

const RLIMIT_NOFILE = 7;

/**
 * The soft limit on open descriptors (getrlimit(RLIMIT_NOFILE)), or null without FFI. Deno lets only
 * --allow-all read /proc/self/limits; the FFI the socket loop already needs answers too.
 */
export function openFileLimit(): number | null {
  try {
    const r = new BigUint64Array(2);
    if (libc().getrlimit(RLIMIT_NOFILE, new Uint8Array(r.buffer)) !== 0) return null;
    return r[0] > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(r[0]);
  } catch {
    return null;
  }
}

/** glibc's M_MMAP_THRESHOLD (malloc.h). */
const M_MMAP_THRESHOLD = -3;
/** Buffers this large or larger get pages of their own (a TCP send ring, a frame batch). */
const OWN_PAGES_FROM = 64 * 1024;

/**
 * Makes glibc map every allocation of 64 KiB or more on its own pages, so that freeing it returns them at
 * once. By default the threshold grows after each such free (up to 32 MiB): the buffers of a tenant that
 * opened many connections then come from the shared heap and stay with the process after the tenant has gone.
 * Measured: RSS after a hostile tenant left went from +65 % to +23 % (bench/hostile.ts); e2e throughput and
 * connections/s unchanged. Returns false without FFI.
 */
export function mapLargeBuffersOnOwnPages(): boolean {
  try {
    return libc().mallopt(M_MMAP_THRESHOLD, OWN_PAGES_FROM) === 1;
  } catch {
    return false;
  }
}

/**
 * Hands memory the relay no longer uses back to the system: with `compact`, V8's memory-reducing collection
 * (the "last-resort" one it runs under memory pressure: it compacts the heap and releases its pages; needs
 * `--v8-flags=--expose-gc`), then glibc's malloc_trim, which returns free pages in the middle of the heap as
 * well as at its top (free() alone keeps them: the process would stay at its high-water mark after a tenant
 * that allocated much has gone). The compacting collection stops the process for tens of ms (36 ms measured
 * with a 10 MiB heap): call it when the gain is worth it.
 */
export function releaseFreedMemory(compact: boolean): void {
  if (compact) {
    (globalThis as { gc?: (o?: unknown) => void }).gc?.({
      type: "major",
      execution: "sync",
      flavor: "last-resort",
    });
  }
  try {
    libc().malloc_trim(size(0));
  } catch { /* no FFI: the pages stay with the process */ }
}
