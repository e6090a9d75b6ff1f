/*
 * A TAP device bridged to a stream-protocol socket (QEMU's framing: a 4-byte big-endian length, then the
 * frame), for the end-to-end benchmarks: the guest's side of every backend (slirp-relay, passt, libslirp)
 * goes through this bridge, so it must not be the limit. Compiled by bench/_harness.ts with cc -O2.
 * With unixgram:///path it is a datagram guest instead (QEMU -netdev dgram): one frame per datagram, from
 * a socket bound at path.bridge-PID.
 *
 *   tap_bridge TAPNAME NETNS unix:///path | tcp://127.0.0.1:PORT | unixgram:///path
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
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, url + 7, sizeof sa.sun_path - 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect unix");
  } else {
    const char *port = strrchr(url, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(port + 1))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect tcp");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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
  int dgram = strncmp(argv[3], "unixgram://", 11) == 0;
  fcntl(tap, F_SETFL, O_NONBLOCK);
  printf("ready\n");
  fflush(stdout);

  static uint8_t frames[BATCH][MAX_FRAME];
  static uint8_t lens[BATCH][4];
  static struct iovec iov[2 * BATCH];
  static uint8_t rx[RX_BYTES];
  size_t have = 0;
  struct pollfd p[2] = {{.fd = tap, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
  for (;;) {
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (p[0].revents & POLLIN) {
      int n = 0;
      while (n < BATCH) {
        ssize_t r = read(tap, frames[n], MAX_FRAME);
        if (r <= 0) break;
        if (dgram) {
          // one frame per datagram; a full peer queue blocks here, as a NIC's ring would hold
          if (send(sock, frames[n], r, 0) < 0 && errno != EINTR) die("send unixgram");
          continue;
        }
        lens[n][0] = r >> 24, lens[n][1] = r >> 16, lens[n][2] = r >> 8, lens[n][3] = r;
        iov[2 * n] = (struct iovec){lens[n], 4};
        iov[2 * n + 1] = (struct iovec){frames[n], (size_t)r};
        n++;
      }
      if (n > 0 && write_all(sock, iov, 2 * n) < 0) break;
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
      while (have - off >= 4) {
        uint32_t len = (uint32_t)rx[off] << 24 | rx[off + 1] << 16 | rx[off + 2] << 8 | rx[off + 3];
        if (len > MAX_FRAME) {
          fprintf(stderr, "tap_bridge: frame of %u bytes\n", len);
          return 1;
        }
        if (have - off - 4 < len) break;
        // a full TAP queue drops the frame, as a NIC would
        if (write(tap, rx + off + 4, len) < 0 && errno != EAGAIN && errno != EIO) die("write tap");
        off += 4 + len;
      }
      memmove(rx, rx + off, have - off);
      have -= off;
    }
  }
  close(sock);
  close(tap);
  return 0;
}
