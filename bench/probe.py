#!/usr/bin/env python3
"""Latency probes for the end-to-end benchmarks: blocking sockets, so the probe adds ~20 µs of its own and
not a runtime's wake-up (a Deno or node process answers ~200 µs late after an idle gap on this VM).

  probe.py udp-echo-server PORT [HOST]     echo UDP datagrams on HOST:PORT (default 127.0.0.1; ::1 for IPv6)
  probe.py tcp-answer-server PORT [HOST]   per connection: read 1 byte, answer 1 byte, until EOF
  probe.py udp-rr HOST PORT N              N one-datagram round trips; prints {"p50us", "p99us"}
  probe.py seq-conn HOST PORT N            N connections in a row: connect, 1-byte request, answer, close;
                                           prints {"perSecond"}
Servers print "ready PORT" once bound (PORT 0 picks a free one).
"""
import json
import socket
import sys
import threading
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp_echo_server(port, host="127.0.0.1"):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.bind((host, port))
    print("ready", s.getsockname()[1], flush=True)
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)


def tcp_answer_server(port, host="127.0.0.1"):
    l = socket.socket(family(host))
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port))
    l.listen(1024)
    print("ready", l.getsockname()[1], flush=True)

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                d = c.recv(1)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()

    while True:
        c, _ = l.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def udp_rr(host, port, n):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect((host, port))
    times = []
    for i in range(n):
        time.sleep(0.002)
        t0 = time.perf_counter()
        s.send(b"x" * 32)
        try:
            s.recv(2048)
        except socket.timeout:
            continue
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    print(json.dumps({"p50us": times[len(times) // 2], "p99us": times[int(len(times) * 0.99)], "lost": n - len(times)}))


def seq_conn(host, port, n):
    t0 = time.perf_counter()
    for _ in range(n):
        c = socket.create_connection((host, port), timeout=5)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(b"x")
        if c.recv(1) != b"x":
            raise SystemExit("no answer")
        c.close()
    print(json.dumps({"perSecond": n / (time.perf_counter() - t0)}))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "udp-echo-server":
        udp_echo_server(int(args[0]), *args[1:2])
    elif mode == "tcp-answer-server":
        tcp_answer_server(int(args[0]), *args[1:2])
    elif mode == "udp-rr":
        udp_rr(args[0], int(args[1]), int(args[2]))
    elif mode == "seq-conn":
        seq_conn(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(__doc__)
