/**
 * A Linux TAP device reached through Deno FFI (libc `open`, `ioctl(TUNSETIFF)`, `read`, `write`,
 * `poll`). Used to put a real kernel network stack (a network namespace) behind the relay as a guest,
 * and by `bench/` to drive iperf3 through the relay. Needs CAP_NET_ADMIN (root) and /dev/net/tun.
 *
 * Reads wait in one `poll()` on an FFI worker thread, then drain every queued frame with non-blocking
 * `read()`s on the main thread: one thread hand-off per burst, not per frame.
 *
 * @module
 */

import { EAGAIN, errno, libc, pollFdFor } from "./libc.ts";

const O_RDWR = 2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;

export class TapDevice {
  readonly name: string;
  #fd: number;
  #closed = false;
  #pollFd: Uint8Array;
  #buf: Uint8Array;

  /**
   * Creates (or attaches to) TAP interface `name`.
   * @param maxFrame largest frame read (MTU + 14)
   * @throws Error with errno when the kernel refuses
   */
  constructor(name: string, maxFrame = 65536 + 14) {
    const L = libc();
    const fd = L.open(new TextEncoder().encode("/dev/net/tun\0"), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) throw new Error(`Cannot open /dev/net/tun: errno ${errno()}`);
    const ifr = new Uint8Array(40);
    const nameBytes = new TextEncoder().encode(name);
    if (nameBytes.length > 15) throw new Error(`TAP name "${name}" is longer than 15 bytes`);
    ifr.set(nameBytes, 0);
    new DataView(ifr.buffer).setUint16(16, IFF_TAP | IFF_NO_PI, true);
    if (L.ioctl(fd, BigInt(TUNSETIFF), ifr) < 0) {
      const e = errno();
      L.close(fd);
      throw new Error(`TUNSETIFF ${name} failed: errno ${e}`);
    }
    this.name = name;
    this.#fd = fd;
    this.#pollFd = pollFdFor(fd);
    this.#buf = new Uint8Array(maxFrame);
  }

  /** Writes one frame to the device (the kernel receives it as if from the wire). */
  write(frame: Uint8Array): boolean {
    if (this.#closed) return false;
    return libc().write(this.#fd, frame, frame.length) === frame.length;
  }

  /**
   * Calls `onFrame` with every frame the kernel sends out of the device, until {@linkcode close}.
   * The view is valid only during the call.
   */
  async readLoop(onFrame: (frame: Uint8Array) => void | Promise<void>): Promise<void> {
    const L = libc();
    while (!this.#closed) {
      await L.poll(this.#pollFd, 1n, 200);
      while (!this.#closed) {
        const n = L.read(this.#fd, this.#buf, this.#buf.length);
        if (n < 0) {
          if (errno() !== EAGAIN) this.close();
          break;
        }
        const r = onFrame(this.#buf.subarray(0, n));
        if (r) await r;
      }
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().close(this.#fd);
  }
}
