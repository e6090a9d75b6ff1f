/**
 * The datagram carrier: one Ethernet frame per datagram on a UNIX datagram socket — QEMU
 * `-netdev dgram,…,remote.type=unix`, vfkit's `virtio-net,unixSocketPath=`, libkrun's unixgram (krunvm,
 * podman with libkrun). The guest's address is learned from its first datagram (vfkit announces itself
 * with a 4-byte `VFKT` datagram first, which is dropped). A datagram from another address is a new guest
 * taking over (a VM restarted on a fresh socket path): the previous guest's link closes. Only the relay's
 * user can write to its socket paths (the socket directory is private), so no stranger can.
 *
 * libkrun offloads: its frames may be up to 64 KiB with unfinished TCP/UDP checksums, so the link says
 * `offloads` and the tenant takes such frames as they are; frames toward the guest are ordinary ones.
 *
 * A receiving UNIX datagram socket queues few datagrams (net.unix.max_dgram_qlen, 10 by default), so a
 * burst toward the guest meets EAGAIN early: those frames wait in a bounded queue, retried every
 * millisecond, and the queue is the link's backlog — TCP toward the guest paces itself on it.
 *
 * @module
 */
import { after, type CancelTimer } from "../common/timers.ts";
import type { HostDatagramSocket } from "../host/host.ts";
import { MIN_FRAME } from "./framing.ts";
import type { FrameFeed, GuestLink, LinkPeer } from "./link.ts";

/** vfkit's greeting ("VFKT"): tells the relay the guest's address, carries no frame. */
const VFKT = [0x56, 0x46, 0x4b, 0x54];
/** Datagrams read before they go to the stack as one batch. */
const BATCH = 64;
/** How soon frames the guest's socket refused are offered again. */
const RETRY_MS = 1;
/** How long a refused guest's datagrams are dropped before it is offered to the relay again. */
const REFUSED_MS = 1000;

/**
 * What the carrier needs of its owner: for each guest that appears, its peer and the bytes of frames
 * allowed to wait for its socket (beyond them frames are refused); null refuses the guest.
 */
export type DatagramGuests = (remote: string) => (LinkPeer & { backlogLimit: number }) | null;

interface Guest {
  readonly path: string;
  readonly link: GuestLink;
  readonly peer: LinkPeer;
  readonly feed: FrameFeed;
}

/**
 * Carries the frames of the guest that speaks to `socket`, for as long as the socket is open; guest frames
 * over `maxFrame` (libkrun: 64 KiB and a header) are dropped. Each guest that appears gets a link of its
 * own from `guests`.
 */
export function carryDatagrams(socket: HostDatagramSocket, maxFrame: number, guests: DatagramGuests): void {
  const slot = maxFrame + 1; // one more byte tells an oversize datagram
  // room for a few of the largest datagrams (MTU-sized ones batch up to BATCH); made when a guest speaks
  let buf = new Uint8Array(0);
  const offs: number[] = new Array(BATCH).fill(0), lens: number[] = new Array(BATCH).fill(0);
  let current: Guest | null = null;
  let refused = "", refusedAt = -Infinity;

  const adopt = (path: string): Guest | null => {
    if (current) current.link.close();
    if (path === refused && performance.now() - refusedAt < REFUSED_MS) return null;
    const peer = guests(`unixgram:${path}`);
    if (!peer) {
      refused = path;
      refusedAt = performance.now();
      return null;
    }
    const link = datagramLink(socket, path, peer.backlogLimit, peer, () => {
      if (current?.link === link) current = null;
    });
    const feed = peer.opened(link);
    if (!feed) {
      refused = path;
      refusedAt = performance.now();
      return null;
    }
    return (current = { path, link, peer, feed });
  };

  const readSome = () => {
    if (buf.length === 0) buf = new Uint8Array(4 * slot);
    let n = 0, pos = 0;
    let to: Guest | null = current;
    while (n < BATCH && pos + slot <= buf.length) {
      const len = socket.receive(buf.subarray(pos, pos + slot));
      if (len < 0) break;
      const sender = socket.sender;
      if (sender === "") {
        current?.peer.dropped("dgram-unbound-sender");
        continue;
      }
      const greeting = len === 4 && VFKT.every((b, i) => buf[pos + i] === b);
      if (!current || sender !== current.path) {
        // a new guest took over: the previous one's link is closed, its last frames are dropped
        n = pos = 0;
        to = adopt(sender);
      }
      if (greeting || !to) continue;
      if (len > maxFrame || len < MIN_FRAME) {
        to.peer.dropped(len < MIN_FRAME ? "frame-runt" : "frame-over-max");
        continue;
      }
      offs[n] = pos;
      lens[n] = len;
      n++;
      pos += len;
    }
    if (n === 0 || !to) return;
    // the buffer is reused only once the stack took the frames: until then the socket is not read
    const held = to.feed(buf, offs, lens, n);
    if (!held) return;
    socket.pause();
    held.finally(() => socket.watch(readSome));
  };
  socket.watch(readSome);
}

/** The link toward the guest at `path`; `ended` runs when it closes. */
function datagramLink(
  socket: HostDatagramSocket,
  path: string,
  limit: number,
  peer: LinkPeer,
  ended: () => void,
): GuestLink {
  const queue: Uint8Array[] = [];
  let queued = 0;
  let closed = false;
  let retry: CancelTimer | undefined;

  /** Offers the queued frames again; false when the guest's socket is gone (the link then closes). */
  const flush = (): void => {
    retry = undefined;
    while (queue.length > 0 && !closed) {
      const err = socket.sendTo(queue[0], path);
      if (err === "EAGAIN" || err === "ENOBUFS") {
        retry = after(RETRY_MS, flush);
        return;
      }
      if (err) return gone(err);
      queued -= queue.shift()!.length;
    }
    if (!closed) peer.drained(link);
  };
  const gone = (err: string) => closeWith(`the guest's socket ${path}: ${err}`);
  const closeWith = (reason?: string) => {
    if (closed) return;
    closed = true;
    retry?.();
    queue.length = 0;
    queued = 0;
    ended();
    peer.closed(link, reason);
  };

  const link: GuestLink = {
    kind: "datagram",
    remote: `unixgram:${path}`,
    offloads: true,
    send(f) {
      if (closed || queued + f.length > limit) return false;
      if (queue.length === 0) {
        const err = socket.sendTo(f, path);
        if (!err) return true;
        if (err !== "EAGAIN" && err !== "ENOBUFS") {
          gone(err);
          return false;
        }
      }
      queue.push(f.slice());
      queued += f.length;
      retry ??= after(RETRY_MS, flush);
      return true;
    },
    get backlog() {
      return queued;
    },
    close: () => closeWith(),
  };
  return link;
}
