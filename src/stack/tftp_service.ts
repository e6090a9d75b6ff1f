/**
 * The gateway's TFTP server (QEMU's `-netdev user,tftp=DIR`): read-only downloads from one host directory,
 * what a PXE ROM fetches its boot file with. Requests come to gateway:69 and every reply leaves from there
 * too, as libslirp does; each transfer is keyed by the guest's address and port. Options: blksize (up to
 * what one frame carries), tsize and timeout (RFCs 2347–2349). Octet mode only; writes are refused.
 *
 * Lock-step per RFC 1350: one block in flight, sent again when its ACK does not come within the timeout
 * (one wheel timer per transfer, at most {@linkcode MAX_TRANSFERS}); a duplicate ACK is ignored rather
 * than answered, which would double every later block (RFC 1123 §4.2.3.1, the Sorcerer's Apprentice).
 * Each block is read from the file straight into the frame being built.
 *
 * @module
 */
import { u16, WireError } from "../wire/bytes.ts";
import { emitUdp, UDP_HEADER_LEN, type UdpHeader } from "../wire/udp.ts";
import { IPPROTO_UDP } from "../wire/ipv4.ts";
import {
  emitTftpDataHeader,
  emitTftpError,
  emitTftpOack,
  parseTftpRequest,
  TFTP_DEFAULT_BLOCK,
  TFTP_HEADER_LEN,
  TFTP_MAX_BLOCK,
  TFTP_MIN_BLOCK,
  TFTP_PORT,
  TftpError,
  TftpOpcode,
} from "../wire/tftp.ts";
import type { HostFile, HostFiles } from "../host/host.ts";
import { Timer } from "./timer_wheel.ts";
import type { GuestPath } from "./guest_path.ts";
import type { StackContext } from "./context.ts";

/** Transfers at once per tenant; a request past them is refused with an error. */
export const MAX_TRANSFERS = 8;
/** Sends of one packet before the transfer is given up. */
const MAX_TRIES = 5;
const DEFAULT_TIMEOUT_MS = 1000;

interface Transfer {
  key: string;
  path: GuestPath;
  guestPort: number;
  file: HostFile;
  blockSize: number;
  /** The block in flight, counted past 65535 (the wire carries its low 16 bits, RFC 1350 rollover). */
  block: number;
  /** The options acknowledged, while their OACK waits for the ACK of block 0; then null. */
  oack: [string, string][] | null;
  timeoutMs: number;
  tries: number;
  timer: Timer;
}

export class TftpService {
  #stack: StackContext;
  #files: HostFiles;
  #transfers = new Map<string, Transfer>();

  constructor(stack: StackContext, files: HostFiles) {
    this.#stack = stack;
    this.#files = files;
  }

  /** Transfers in progress. */
  get size(): number {
    return this.#transfers.size;
  }

  /** A datagram from the guest to gateway:69. */
  input(buf: Uint8Array, path: GuestPath, udp: UdpHeader): void {
    const s = this.#stack;
    const off = udp.payloadOffset, end = udp.payloadEnd;
    if (end - off < TFTP_HEADER_LEN) return s.drop("tftp-malformed");
    const key = `${path.guestText()}:${udp.srcPort}`;
    const opcode = u16(buf, off);
    const t = this.#transfers.get(key);
    if (opcode === TftpOpcode.ACK) {
      if (!t) return s.drop("tftp-ack-unknown-transfer");
      // the ACK of what is in flight moves the transfer on; any other is a duplicate or stale
      if (u16(buf, off + 2) !== (t.block & 0xffff)) return;
      if (!t.oack && this.#lastBlockSent(t)) return this.#finish(t);
      if (t.oack) t.oack = null;
      t.block++;
      t.tries = 0;
      return this.#send(t);
    }
    if (opcode === TftpOpcode.ERROR) {
      if (t) this.#finish(t);
      return;
    }
    const req = parseTftpRequest(buf, off, end);
    if (req instanceof WireError) return s.drop("tftp-malformed", req);
    if (t) this.#finish(t); // the client started over from the same port
    const error = (code: number, message: string, reason: string) => {
      s.counters.drop(reason);
      this.#sendError(path, udp.srcPort, code, message);
    };
    if (req.opcode === TftpOpcode.WRQ) {
      return error(TftpError.ACCESS_VIOLATION, "read-only server", "tftp-write-refused");
    }
    // netascii would need its CR/LF translation; PXE ROMs, curl and busybox ask for octet
    if (req.mode !== "octet") {
      return error(TftpError.ILLEGAL_OPERATION, `unsupported mode ${req.mode}`, "tftp-mode-unsupported");
    }
    if (this.#transfers.size >= MAX_TRANSFERS) {
      return error(TftpError.UNDEFINED, "too many transfers", "tftp-too-many-transfers");
    }
    // an open file is a descriptor: it counts against the relay's bound as a flow's socket does
    if (!s.flowLimit.tryOpen()) return error(TftpError.UNDEFINED, "server busy", "relay-flow-limit");
    const file = this.#files.open(req.filename);
    if (typeof file === "string") s.flowLimit.release();
    if (file === "missing") return error(TftpError.FILE_NOT_FOUND, "file not found", "tftp-file-not-found");
    if (file === "refused") {
      return error(TftpError.ACCESS_VIOLATION, "access violation", "tftp-access-refused");
    }
    // RFC 2347: only the options understood are acknowledged, with the values taken
    const oack: [string, string][] = [];
    const frameRoom = s.plan.mtu - path.ipHeaderLength - UDP_HEADER_LEN - TFTP_HEADER_LEN;
    let blockSize = TFTP_DEFAULT_BLOCK, timeoutMs = DEFAULT_TIMEOUT_MS;
    const asked = Number(req.options.get("blksize"));
    if (Number.isInteger(asked) && asked >= TFTP_MIN_BLOCK) {
      blockSize = Math.min(asked, TFTP_MAX_BLOCK, frameRoom); // RFC 2348: the server may lower it
      oack.push(["blksize", String(blockSize)]);
    }
    const timeout = Number(req.options.get("timeout"));
    if (Number.isInteger(timeout) && timeout >= 1 && timeout <= 255) {
      timeoutMs = timeout * 1000;
      oack.push(["timeout", String(timeout)]);
    }
    // RFC 2349: a read asks with 0 and learns the size; an empty file's size is left out, as curl takes a
    // tsize of 0 for a refusal (RFC 2347 lets a server leave out any option)
    if (req.options.has("tsize") && file.size > 0) oack.push(["tsize", String(file.size)]);
    const transfer: Transfer = {
      key,
      path,
      guestPort: udp.srcPort,
      file,
      blockSize,
      block: oack.length > 0 ? 0 : 1,
      oack: oack.length > 0 ? oack : null,
      timeoutMs,
      tries: 0,
      timer: new Timer(() => this.#timeout(transfer), s),
    };
    this.#transfers.set(key, transfer);
    s.counters.tftpTransfers++;
    this.#send(transfer);
  }

  /** Whether the block in flight was the file's last (shorter than a full block, possibly empty). */
  #lastBlockSent(t: Transfer): boolean {
    return t.block * t.blockSize > t.file.size;
  }

  /** Sends the OACK or the block in flight, and waits for its ACK. */
  #send(t: Transfer): void {
    const s = this.#stack;
    const l4 = t.path.l4Offset;
    const at = l4 + UDP_HEADER_LEN;
    let len: number;
    if (t.oack) {
      len = emitTftpOack(s.tx, at, t.oack);
    } else {
      emitTftpDataHeader(s.tx, at, t.block);
      const position = (t.block - 1) * t.blockSize;
      const want = Math.max(0, Math.min(t.blockSize, t.file.size - position));
      let got = 0;
      try {
        while (got < want) {
          const n = t.file.readAt(
            s.tx.subarray(at + TFTP_HEADER_LEN + got, at + TFTP_HEADER_LEN + want),
            position + got,
          );
          if (n <= 0) break;
          got += n;
        }
      } catch (e) {
        s.log("warn", "TFTP read failed", { tenant: s.tenant, error: String(e) });
        s.counters.drop("tftp-read-failed");
        this.#finish(t);
        return this.#sendError(t.path, t.guestPort, TftpError.UNDEFINED, "read failed");
      }
      if (got < want) {
        // the file shrank under the transfer: what was promised can no longer be sent
        s.counters.drop("tftp-file-changed");
        this.#finish(t);
        return this.#sendError(t.path, t.guestPort, TftpError.UNDEFINED, "file changed during transfer");
      }
      len = TFTP_HEADER_LEN + want;
    }
    this.#output(t.path, t.guestPort, len);
    t.tries++;
    s.wheel.arm(t.timer, s.wheel.now + t.timeoutMs);
  }

  #timeout(t: Transfer): void {
    if (this.#transfers.get(t.key) !== t) return;
    if (t.tries >= MAX_TRIES) {
      this.#stack.counters.drop("tftp-transfer-timeout");
      return this.#finish(t);
    }
    this.#send(t);
  }

  #finish(t: Transfer): void {
    this.#stack.wheel.cancel(t.timer);
    if (this.#transfers.get(t.key) !== t) return;
    this.#transfers.delete(t.key);
    t.file.close();
    this.#stack.flowLimit.release();
  }

  #sendError(path: GuestPath, guestPort: number, code: number, message: string): void {
    const len = emitTftpError(this.#stack.tx, path.l4Offset + UDP_HEADER_LEN, code, message);
    this.#output(path, guestPort, len);
  }

  /** Sends the `len` TFTP bytes already in tx after the UDP header, from gateway:69. */
  #output(path: GuestPath, guestPort: number, len: number): void {
    const s = this.#stack;
    const total = UDP_HEADER_LEN + len;
    emitUdp(s.tx, path.l4Offset, TFTP_PORT, guestPort, len, path.pseudoSum(IPPROTO_UDP, total));
    path.send(s.tx, 0, IPPROTO_UDP, total);
  }

  close(): void {
    for (const t of [...this.#transfers.values()]) this.#finish(t);
  }
}
