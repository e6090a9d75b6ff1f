#!/usr/bin/env python3
"""The null peer of bench/bridge_ceiling.ts: a stream-protocol endpoint that discards what it reads and, with
"send", writes valid frames toward the guest as fast as the socket takes them. Counts bytes each way.

  null_peer.py SOCKPATH [send FRAMEBYTES]   prints "ready", then on SIGTERM {"readBytes", "sentBytes"}
"""
import json
import os
import signal
import socket
import struct
import sys
import threading

path, send = sys.argv[1], len(sys.argv) > 2 and sys.argv[2] == "send"
try:
    os.unlink(path)
except FileNotFoundError:
    pass
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(path)
l.listen(1)
print("ready", flush=True)
c, _ = l.accept()
count = {"readBytes": 0, "sentBytes": 0}


def done(*_):
    print(json.dumps(count), flush=True)
    os._exit(0)


signal.signal(signal.SIGTERM, done)


def frame(n):
    # Ethernet broadcast, IPv4 UDP 10.0.2.2 -> 10.0.2.15:9 (discard); the guest drops it after counting it
    payload = b"\0" * (n - 42)
    udp = struct.pack("!HHHH", 9, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton("10.0.2.2"), socket.inet_aton("10.0.2.15"))
    s = 0
    for i in range(0, 20, 2):
        s += (ip[i] << 8) | ip[i + 1]
    s = (s & 0xffff) + (s >> 16)
    ip = ip[:10] + struct.pack("!H", ~s & 0xffff) + ip[12:]
    eth = b"\xff" * 6 + bytes.fromhex("52550a000202") + b"\x08\x00"
    f = eth + ip + udp
    return struct.pack("!I", len(f)) + f


def writer():
    one = frame(int(sys.argv[3]) if len(sys.argv) > 3 else 1514)
    chunk = one * max(1, (1 << 20) // len(one))
    try:
        while True:
            c.sendall(chunk)
            count["sentBytes"] += len(chunk)
    except OSError:
        pass  # the bridge went away


if send:
    threading.Thread(target=writer, daemon=True).start()
buf = bytearray(1 << 20)
while True:
    n = c.recv_into(buf)
    if n == 0:
        break
    count["readBytes"] += n
done()
