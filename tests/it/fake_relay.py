"""Relays for the NAT tests (tests/it/nat.rs), run inside the "internet"
namespace where the test process cannot open sockets itself. Usage:

  fake_relay.py PORT mitm HOST:PORT   every connection told ok at once and
                                      spliced to HOST:PORT (the relay's own
                                      TLS endpoint)
  fake_relay.py PORT misdirect N      holds the first N registrations and
                                      pairs each later one with the last held
  fake_relay.py PORT record FILE      an honest relay (same token, another
                                      side) that appends every byte it carries
                                      to FILE: a traffic capture

It prints "ready" once listening and runs until killed."""

import socket
import sys
import threading

lock = threading.Lock()
held, waiting = [], {}


def line(c):
    b = b""
    while not b.endswith(b"\n"):
        x = c.recv(1)
        if not x or len(b) > 200:
            return None
        b += x
    return b.decode(errors="replace").strip()


def pump(a, b, capture):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            if capture:
                with lock, open(capture, "ab") as f:
                    f.write(d)
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def splice(a, b, capture=None):
    threading.Thread(target=pump, args=(b, a, capture), daemon=True).start()
    pump(a, b, capture)


def handle(c, mode, arg):
    req = line(c)
    if req is None:
        return
    if mode == "mitm":
        c.sendall(b"ok\n")
        host, port = arg.rsplit(":", 1)
        splice(c, socket.create_connection((host, int(port))))
        return
    if mode == "misdirect":
        with lock:
            if len(held) < int(arg):
                held.append(c)
                return
            other = held.pop()
        c.sendall(b"ok\n")
        other.sendall(b"ok\n")
        splice(c, other)
        return
    words = req.split()
    token, side = words[2], words[-1]
    with lock:
        peer = waiting.get(token)
        if peer is None or peer[0] == side:
            waiting[token] = (side, c)
            return
        del waiting[token]
    other = peer[1]
    c.sendall(b"ok\n")
    other.sendall(b"ok\n")
    splice(c, other, arg)


def main():
    port, mode, arg = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    srv = socket.create_server(("0.0.0.0", port), reuse_port=False)
    print("ready", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c, mode, arg), daemon=True).start()


main()
