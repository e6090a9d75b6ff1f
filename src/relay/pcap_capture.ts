/**
 * A running pcap capture of one tenant's frames (both directions), written to a classic pcap file that
 * tshark and Wireshark open. Bounded: stops by itself at `maxBytes`.
 *
 * @module
 */
import { pcapFileHeader, pcapRecordHeader } from "./pcap.ts";
import { platform } from "../platform/current.ts";
import type { FileSink } from "../platform/platform.ts";

export class PcapCapture {
  readonly path: string;
  #file: FileSink;
  #bytes = 0;
  #maxBytes: number;
  #hdr = new Uint8Array(16);
  frames = 0;
  stopped = false;

  /**
   * @param replace the operator named the file (`--pcap`): an existing regular file is overwritten, as
   *   `tcpdump -w` does; otherwise (the admin API) only a new file is made
   */
  constructor(path: string, maxBytes = 256 * 1024 * 1024, replace = false) {
    this.path = path;
    this.#maxBytes = maxBytes;
    // never follow a symlink planted at the name; an admin-named capture never truncates what exists (O_EXCL)
    this.#file = replace ? platform.replaceFile(path, 0o600) : platform.createFile(path, 0o600);
    this.#writeAll(pcapFileHeader());
  }

  #writeAll(b: Uint8Array): void {
    let off = 0;
    while (off < b.length) off += this.#file.writeSync(b.subarray(off));
    this.#bytes += b.length;
  }

  /** Records one frame (synchronous write: captures are for debugging, not the fast path). */
  record(frame: Uint8Array): void {
    if (this.stopped) return;
    if (this.#bytes + 16 + frame.length > this.#maxBytes) return this.stop();
    // microseconds: Date.now() has only milliseconds, performance.now() has the rest
    this.#writeAll(pcapRecordHeader(performance.timeOrigin + performance.now(), frame.length, this.#hdr));
    this.#writeAll(frame);
    this.frames++;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.#file.close();
  }
}
