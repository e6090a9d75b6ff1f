/*
 * libslirp (QEMU's user-mode network) behind a stream-protocol socket, for side-by-side benchmarks: the
 * same guest, TAP bridge and probes as slirp-relay and passt. Compiled by bench/_harness.ts against
 * Debian's libslirp-dev. Defaults as QEMU's -netdev user: 10.0.2.0/24, gateway 10.0.2.2 (the host's
 * loopback), DNS 10.0.2.3, DHCP from 10.0.2.15.
 *
 *   libslirp_driver SOCKPATH MTU      listens on SOCKPATH, serves one guest until it leaves
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <slirp/libslirp.h>

#define MAX_TIMERS 64
#define MAX_FDS 4096
#define RX_BYTES (1 << 20)

struct timer {
  SlirpTimerCb cb;
  void *opaque;
  int64_t expire_ms; /* -1: not armed */
  int used;
};
static struct timer timers[MAX_TIMERS];
static struct pollfd fds[MAX_FDS];
static int nfds;
static int guest = -1;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static ssize_t send_packet(const void *buf, size_t len, void *opaque) {
  (void)opaque;
  uint8_t hdr[4] = {len >> 24, len >> 16, len >> 8, len};
  struct iovec iov[2] = {{hdr, 4}, {(void *)buf, len}};
  size_t left = 4 + len;
  while (left > 0) {
    ssize_t w = writev(guest, iov, 2);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    left -= w;
    for (int i = 0; i < 2; i++) {
      size_t take = (size_t)w < iov[i].iov_len ? (size_t)w : iov[i].iov_len;
      iov[i].iov_base = (char *)iov[i].iov_base + take;
      iov[i].iov_len -= take;
      w -= take;
    }
  }
  return len;
}

static void guest_error(const char *msg, void *opaque) {
  (void)opaque;
  fprintf(stderr, "libslirp: guest error: %s\n", msg);
}
static int64_t clock_get_ns(void *opaque) {
  (void)opaque;
  return now_ns();
}
static void *timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque) {
  (void)opaque;
  for (int i = 0; i < MAX_TIMERS; i++) {
    if (!timers[i].used) {
      timers[i] = (struct timer){cb, cb_opaque, -1, 1};
      return &timers[i];
    }
  }
  fprintf(stderr, "libslirp_driver: out of timers\n");
  exit(1);
}
static void timer_free(void *t, void *opaque) {
  (void)opaque;
  ((struct timer *)t)->used = 0;
}
static void timer_mod(void *t, int64_t expire_ms, void *opaque) {
  (void)opaque;
  ((struct timer *)t)->expire_ms = expire_ms;
}
static void register_poll_fd(int fd, void *opaque) { (void)fd, (void)opaque; }
static void unregister_poll_fd(int fd, void *opaque) { (void)fd, (void)opaque; }
static void notify(void *opaque) { (void)opaque; }

static int add_poll(int fd, int events, void *opaque) {
  (void)opaque;
  short ev = 0;
  if (events & SLIRP_POLL_IN) ev |= POLLIN;
  if (events & SLIRP_POLL_OUT) ev |= POLLOUT;
  if (events & SLIRP_POLL_PRI) ev |= POLLPRI;
  if (nfds >= MAX_FDS) {
    fprintf(stderr, "libslirp_driver: more than %d descriptors to poll\n", MAX_FDS);
    exit(1);
  }
  fds[nfds] = (struct pollfd){.fd = fd, .events = ev};
  return nfds++;
}

static int get_revents(int idx, void *opaque) {
  (void)opaque;
  short r = fds[idx].revents;
  int ev = 0;
  if (r & POLLIN) ev |= SLIRP_POLL_IN;
  if (r & POLLOUT) ev |= SLIRP_POLL_OUT;
  if (r & POLLPRI) ev |= SLIRP_POLL_PRI;
  if (r & POLLERR) ev |= SLIRP_POLL_ERR;
  if (r & POLLHUP) ev |= SLIRP_POLL_HUP;
  return ev;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: libslirp_driver SOCKPATH MTU\n");
    return 2;
  }
  /* as QEMU does (os-posix.c): libslirp writes to host sockets whose peer may have closed, and counts on
     EPIPE, not on a signal that kills the process (the driver died of SIGPIPE mid-benchmark now and then) */
  signal(SIGPIPE, SIG_IGN);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, argv[1], sizeof sa.sun_path - 1);
  unlink(argv[1]);
  if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 1) < 0) {
    perror("bind");
    return 1;
  }
  guest = accept(l, NULL, NULL);
  if (guest < 0) {
    perror("accept");
    return 1;
  }

  SlirpConfig cfg = {0};
  cfg.version = 1;
  cfg.in_enabled = true;
  inet_pton(AF_INET, "10.0.2.0", &cfg.vnetwork);
  inet_pton(AF_INET, "255.255.255.0", &cfg.vnetmask);
  inet_pton(AF_INET, "10.0.2.2", &cfg.vhost);
  inet_pton(AF_INET, "10.0.2.15", &cfg.vdhcp_start);
  inet_pton(AF_INET, "10.0.2.3", &cfg.vnameserver);
  cfg.if_mtu = cfg.if_mru = (size_t)atoi(argv[2]);
  static const SlirpCb cb = {
      .send_packet = send_packet,
      .guest_error = guest_error,
      .clock_get_ns = clock_get_ns,
      .timer_new = timer_new,
      .timer_free = timer_free,
      .timer_mod = timer_mod,
      .register_poll_fd = register_poll_fd,
      .unregister_poll_fd = unregister_poll_fd,
      .notify = notify,
  };
  Slirp *slirp = slirp_new(&cfg, &cb, NULL);

  static uint8_t rx[RX_BYTES];
  size_t have = 0;
  for (;;) {
    nfds = 0;
    fds[nfds++] = (struct pollfd){.fd = guest, .events = POLLIN};
    uint32_t timeout = UINT32_MAX;
    slirp_pollfds_fill(slirp, &timeout, add_poll, NULL);
    int64_t now_ms = now_ns() / 1000000;
    for (int i = 0; i < MAX_TIMERS; i++) {
      if (timers[i].used && timers[i].expire_ms >= 0) {
        int64_t left = timers[i].expire_ms - now_ms;
        if (left < 0) left = 0;
        if ((uint64_t)left < timeout) timeout = (uint32_t)left;
      }
    }
    int r = poll(fds, nfds, timeout == UINT32_MAX ? -1 : (int)timeout);
    slirp_pollfds_poll(slirp, r < 0, get_revents, NULL);
    now_ms = now_ns() / 1000000;
    for (int i = 0; i < MAX_TIMERS; i++) {
      if (timers[i].used && timers[i].expire_ms >= 0 && timers[i].expire_ms <= now_ms) {
        timers[i].expire_ms = -1;
        timers[i].cb(timers[i].opaque);
      }
    }
    if (r > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = read(guest, rx + have, RX_BYTES - have);
      if (n <= 0) break;
      have += n;
      size_t off = 0;
      while (have - off >= 4) {
        uint32_t len = (uint32_t)rx[off] << 24 | rx[off + 1] << 16 | rx[off + 2] << 8 | rx[off + 3];
        if (have - off - 4 < len) break;
        slirp_input(slirp, rx + off + 4, (int)len);
        off += 4 + len;
      }
      memmove(rx, rx + off, have - off);
      have -= off;
    }
  }
  slirp_cleanup(slirp);
  return 0;
}
