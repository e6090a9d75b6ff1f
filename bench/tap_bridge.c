/*
 * A TAP device bridged to a stream-protocol socket (QEMU's framing: a 4-byte big-endian length, then the
 * frame), for the end-to-end benchmarks: the guest's side of every backend (slirp-relay, passt, libslirp)
 * goes through this bridge, so it must not be the limit. Compiled by bench/_harness.ts with cc -O2.
 * With unixgram:///path it is a datagram guest instead (QEMU -netdev dgram): one frame per datagram, from
 * a socket bound at path.bridge-PID. The other carriers of the relay, for measuring each:
 *   gvforwarder:///path     gvforwarder's "POST /connect" request, then a 2-byte little-endian length per frame
 *   ws://127.0.0.1:PORT/P   WebSocket, one frame per binary message each way (v86)
 *   wsbin://127.0.0.1:PORT/P  WebSocket with the "binary" subprotocol: QEMU's framing as a byte stream, every
 *                           batch from the TAP in one message (container2wasm); one frame per message back
 *
 *   tap_bridge TAPNAME NETNS unix:///path | tcp://127.0.0.1:PORT | unixgram:///path | gvforwarder:///path |
 *              ws://127.0.0.1:PORT/PATH | wsbin://127.0.0.1:PORT/PATH
 *
 * Creates TAPNAME, moves it into NETNS, connects, prints "ready", bridges until the socket closes.
 * TAP → socket: every frame the TAP has ready (up to 64) goes out in one writev. Socket → TAP: one read of
 * up to 1 MiB, then one write per whole frame (a TAP takes one frame per write).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FRAME 65550
#define BATCH 64
#define RX_BYTES (1 << 20)

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int open_tap(const char *name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  return fd;
}

enum mode { STREAM, DGRAM, GVFORWARDER, WS_FRAMES, WS_BYTES };

static enum mode mode_of(const char *url) {
  if (strncmp(url, "unixgram://", 11) == 0) return DGRAM;
  if (strncmp(url, "gvforwarder://", 14) == 0) return GVFORWARDER;
  if (strncmp(url, "ws://", 5) == 0) return WS_FRAMES;
  if (strncmp(url, "wsbin://", 8) == 0) return WS_BYTES;
  return STREAM;
}

static int connect_unix(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect unix");
  return fd;
}

/** TCP to 127.0.0.1 at the port after host's colon; retried for 5 s (a listener may come up just after). */
static int connect_loopback(const char *hostport) {
  const char *colon = strchr(hostport, ':');
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int tries = 0;; tries++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    close(fd);
    if (tries == 50) die("connect tcp");
    usleep(100000);
  }
}

/**
 * The WebSocket opening handshake (RFC 6455 §4.1) for ws://HOST:PORT/PATH; bytes the server sent after its
 * response go to rx (returns how many).
 */
static size_t websocket_handshake(int fd, const char *hostport, int binary, uint8_t *rx, size_t cap) {
  const char *path = strchr(hostport, '/');
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                   path ? path : "/", binary ? "Sec-WebSocket-Protocol: binary\r\n" : "");
  if (write(fd, req, n) != n) die("write handshake");
  size_t have = 0;
  for (;;) {
    ssize_t r = read(fd, rx + have, cap - have);
    if (r <= 0) die("read handshake");
    have += r;
    uint8_t *end = memmem(rx, have, "\r\n\r\n", 4);
    if (!end) continue;
    if (memcmp(rx, "HTTP/1.1 101", 12) != 0) {
      fprintf(stderr, "tap_bridge: WebSocket refused: %.*s\n", (int)(end - rx), rx);
      exit(1);
    }
    size_t used = end + 4 - rx;
    memmove(rx, rx + used, have - used);
    return have - used;
  }
}

/** A client's binary message header (FIN, opcode 2, masked with the all-zero key: payload unchanged). */
static size_t ws_header(uint8_t *h, size_t len) {
  h[0] = 0x82;
  size_t n;
  if (len < 126) {
    h[1] = 0x80 | len;
    n = 2;
  } else if (len < 65536) {
    h[1] = 0x80 | 126, h[2] = len >> 8, h[3] = len;
    n = 4;
  } else {
    h[1] = 0x80 | 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (uint64_t)len >> (56 - 8 * i);
    n = 10;
  }
  memset(h + n, 0, 4);
  return n + 4;
}

static int connect_to(const char *url) {
  int fd;
  if (strncmp(url, "unixgram://", 11) == 0) {
    struct sockaddr_un local = {.sun_family = AF_UNIX}, remote = {.sun_family = AF_UNIX};
    snprintf(local.sun_path, sizeof local.sun_path, "%s.bridge-%d", url + 11, (int)getpid());
    strncpy(remote.sun_path, url + 11, sizeof remote.sun_path - 1);
    unlink(local.sun_path);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (fd < 0 || bind(fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind unixgram");
    if (connect(fd, (struct sockaddr *)&remote, sizeof remote) < 0) die("connect unixgram");
  } else if (strncmp(url, "unix://", 7) == 0) {
    fd = connect_unix(url + 7);
  } else if (strncmp(url, "gvforwarder://", 14) == 0) {
    fd = connect_unix(url + 14);
    // gvforwarder's request; gvproxy answers nothing and frames follow at once
    static const char req[] = "POST /connect HTTP/1.1\r\nHost: gvproxy\r\nUser-Agent: Go-http-client/1.1\r\n\r\n";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) die("write gvforwarder request");
  } else {
    fd = connect_loopback(strstr(url, "://") + 3);
  }
  return fd;
}

static int write_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    ssize_t w = writev(fd, iov, n > 1024 ? 1024 : n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    while (n > 0 && (size_t)w >= iov->iov_len) {
      w -= iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= w;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: tap_bridge TAPNAME NETNS unix:///path|tcp://127.0.0.1:PORT\n");
    return 2;
  }
  int tap = open_tap(argv[1]);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "ip link set %s netns %s", argv[1], argv[2]);
  if (system(cmd) != 0) die("ip link set netns");
  int sock = connect_to(argv[3]);
  enum mode mode = mode_of(argv[3]);
  int dgram = mode == DGRAM;
  static uint8_t frames[BATCH][MAX_FRAME];
  static uint8_t lens[BATCH][14];
  static uint8_t batch_header[14];
  static struct iovec iov[2 * BATCH + 1];
  static uint8_t rx[RX_BYTES];
  size_t have = 0;
  if (mode == WS_FRAMES || mode == WS_BYTES) {
    have = websocket_handshake(sock, strstr(argv[3], "://") + 3, mode == WS_BYTES, rx, RX_BYTES);
  }
  fcntl(tap, F_SETFL, O_NONBLOCK);
  printf("ready\n");
  fflush(stdout);
  struct pollfd p[2] = {{.fd = tap, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
  for (;;) {
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (p[0].revents & POLLIN) {
      int n = 0;
      size_t bytes = 0;
      // the byte stream's one message per batch: its header goes first, once the batch's size is known
      struct iovec *v = mode == WS_BYTES ? iov + 1 : iov;
      while (n < BATCH) {
        ssize_t r = read(tap, frames[n], MAX_FRAME);
        if (r <= 0) break;
        if (dgram) {
          // one frame per datagram; a full peer queue blocks here, as a NIC's ring would hold
          if (send(sock, frames[n], r, 0) < 0 && errno != EINTR) die("send unixgram");
          continue;
        }
        size_t h;
        if (mode == GVFORWARDER) {
          lens[n][0] = r, lens[n][1] = r >> 8, h = 2;
        } else if (mode == WS_FRAMES) {
          h = ws_header(lens[n], r);
        } else {
          lens[n][0] = r >> 24, lens[n][1] = r >> 16, lens[n][2] = r >> 8, lens[n][3] = r, h = 4;
        }
        v[2 * n] = (struct iovec){lens[n], h};
        v[2 * n + 1] = (struct iovec){frames[n], (size_t)r};
        bytes += h + r;
        n++;
        if (mode == WS_BYTES && bytes > (256 << 10) - MAX_FRAME) break; // messages of at most 256 KiB
      }
      if (n > 0 && mode == WS_BYTES) {
        iov[0] = (struct iovec){batch_header, ws_header(batch_header, bytes)};
        if (write_all(sock, iov, 2 * n + 1) < 0) break;
      } else if (n > 0 && write_all(sock, iov, 2 * n) < 0) {
        break;
      }
    }
    if (dgram && (p[1].revents & POLLIN)) {
      for (int i = 0; i < BATCH; i++) {
        ssize_t r = recv(sock, rx, MAX_FRAME, MSG_DONTWAIT);
        if (r <= 0) break;
        if (write(tap, rx, r) < 0 && errno != EAGAIN && errno != EIO) die("write tap");
      }
      continue;
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = read(sock, rx + have, RX_BYTES - have);
      if (r <= 0) break;
      have += r;
      size_t off = 0;
      if (mode == WS_FRAMES || mode == WS_BYTES) {
        // server messages, unmasked (RFC 6455 §5.2): one frame each, after a u32 length in the byte stream
        while (have - off >= 2) {
          uint8_t op = rx[off] & 0x0f;
          uint64_t len = rx[off + 1] & 0x7f;
          size_t h = 2;
          if (len == 126) {
            if (have - off < 4) break;
            len = (uint64_t)rx[off + 2] << 8 | rx[off + 3], h = 4;
          } else if (len == 127) {
            if (have - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | rx[off + 2 + i];
            h = 10;
          }
          if (len > MAX_FRAME + 4) {
            fprintf(stderr, "tap_bridge: WebSocket message of %llu bytes\n", (unsigned long long)len);
            return 1;
          }
          if (have - off - h < len) break;
          if (op == 8) goto done;
          size_t skip = mode == WS_BYTES ? 4 : 0;
          if (op == 2 && len > skip && write(tap, rx + off + h + skip, len - skip) < 0 && errno != EAGAIN &&
              errno != EIO) {
            die("write tap");
          }
          off += h + len;
        }
        memmove(rx, rx + off, have - off);
        have -= off;
        continue;
      }
      size_t prefix = mode == GVFORWARDER ? 2 : 4;
      while (have - off >= prefix) {
        uint32_t len = prefix == 2 ? (uint32_t)rx[off] | rx[off + 1] << 8
                                   : (uint32_t)rx[off] << 24 | rx[off + 1] << 16 | rx[off + 2] << 8 | rx[off + 3];
        if (len > MAX_FRAME) {
          fprintf(stderr, "tap_bridge: frame of %u bytes\n", len);
          return 1;
        }
        if (have - off - prefix < len) break;
        // a full TAP queue drops the frame, as a NIC would
        if (write(tap, rx + off + prefix, len) < 0 && errno != EAGAIN && errno != EIO) die("write tap");
        off += prefix + len;
      }
      memmove(rx, rx + off, have - off);
      have -= off;
    }
  }
done:
  close(sock);
  close(tap);
  return 0;
}
