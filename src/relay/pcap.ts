/**
 * Classic libpcap files (https://wiki.wireshark.org/Development/LibpcapFileFormat): a 24-byte global
 * header, then per packet a 16-byte record header and the captured bytes. Written little-endian with
 * microsecond timestamps and link type 1 (Ethernet), which tshark and Wireshark open.
 *
 * @module
 */

const MAGIC_US = 0xa1b2c3d4;
const MAGIC_NS = 0xa1b23c4d;
/** LINKTYPE_ETHERNET. */
export const LINKTYPE_ETHERNET = 1;

/** The 24-byte global header for an Ethernet capture. */
export function pcapFileHeader(snaplen = 262144): Uint8Array {
  const b = new Uint8Array(24);
  const v = new DataView(b.buffer);
  v.setUint32(0, MAGIC_US, true);
  v.setUint16(4, 2, true);
  v.setUint16(6, 4, true);
  v.setUint32(16, snaplen, true);
  v.setUint32(20, LINKTYPE_ETHERNET, true);
  return b;
}

/** A 16-byte record header for a frame of `length` bytes captured at `timeMs` (epoch milliseconds). */
export function pcapRecordHeader(timeMs: number, length: number, out = new Uint8Array(16)): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset, 16);
  const sec = Math.floor(timeMs / 1000);
  v.setUint32(0, sec, true);
  v.setUint32(4, Math.floor((timeMs - sec * 1000) * 1000), true);
  v.setUint32(8, length, true);
  v.setUint32(12, length, true);
  return out;
}

/** One captured packet, a view into the file's bytes. */
export interface PcapPacket {
  timeMs: number;
  data: Uint8Array;
}

/** Reads every packet of a classic pcap file (either byte order, µs or ns timestamps). */
export function readPcap(file: Uint8Array): { linkType: number; packets: PcapPacket[] } {
  if (file.length < 24) throw new Error("Cannot read pcap: file shorter than its 24-byte header");
  const v = new DataView(file.buffer, file.byteOffset, file.byteLength);
  let le: boolean;
  const m = v.getUint32(0, true);
  if (m === MAGIC_US || m === MAGIC_NS) le = true;
  else if (v.getUint32(0, false) === MAGIC_US || v.getUint32(0, false) === MAGIC_NS) le = false;
  else throw new Error("Cannot read pcap: unknown magic number");
  const nano = v.getUint32(0, le) === MAGIC_NS;
  const linkType = v.getUint32(20, le);
  const packets: PcapPacket[] = [];
  let p = 24;
  while (p + 16 <= file.length) {
    const incl = v.getUint32(p + 8, le);
    if (p + 16 + incl > file.length) throw new Error(`Cannot read pcap: record at ${p} runs past the end`);
    const timeMs = v.getUint32(p, le) * 1000 + v.getUint32(p + 4, le) / (nano ? 1e6 : 1e3);
    packets.push({ timeMs, data: file.subarray(p + 16, p + 16 + incl) });
    p += 16 + incl;
  }
  return { linkType, packets };
}
