#!/usr/bin/python3
"""Bounded UDP and TCP load on loopback for the lifecycle scenario.

  load.py sink PORT IDLE_S MAX_S OUTFILE   count datagrams until IDLE_S
                                               without one (or MAX_S), write
                                               the count to OUTFILE
  load.py flood PORT COUNT SECONDS MAX_S   send COUNT datagrams to
                                               127.0.0.1:PORT paced over
                                               SECONDS (stop at MAX_S), print
                                               "sent refused": refused = the
                                               kernel dropped it on output
                                               (sendto fails with EPERM)
  load.py tcp PORT COUNT MAX_S [INTERVAL]      COUNT connections one after
                                               the other to 127.0.0.1:PORT,
                                               the i-th no sooner than
                                               i * INTERVAL s after the first
                                               (90 s each to connect and read
                                               the answer, as SYNs dropped
                                               while no labelgate runs are
                                               sent again; stop at MAX_S);
                                               print "answered tried"
UDP: one socket, no replies: conntrack keeps the flow NEW, so the queue rules send
every datagram to labelgate.
"""
import socket
import sys
import time


def sink(port, idle, max_s, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", port))
    s.settimeout(idle)
    n = 0
    end = time.monotonic() + max_s
    started = False
    while time.monotonic() < end:
        try:
            s.recv(2048)
            n += 1
            started = True
        except socket.timeout:
            if started:
                break
    with open(out, "w") as f:
        f.write(f"{n}\n")


def flood(port, count, seconds, max_s):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    sent = refused = 0
    for i in range(count):
        now = time.monotonic()
        if now - start > max_s:
            break
        due = start + seconds * i / count
        if due > now:
            time.sleep(due - now)
        try:
            s.sendto(b"x" * 64, ("127.0.0.1", port))
            sent += 1
        except OSError:
            refused += 1
    print(sent, refused)


def tcp(port, count, max_s, interval=0.0):
    start = time.monotonic()
    tried = answered = 0
    for i in range(count):
        if time.monotonic() - start > max_s:
            break
        # Paced: connection i starts no sooner than i * interval, so the load
        # lasts at least count * interval seconds however fast the host is.
        wait = start + i * interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        tried += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=90) as c:
                c.shutdown(socket.SHUT_WR)
                if c.recv(64).startswith(b"pong"):
                    answered += 1
        except OSError:
            pass
    print(answered, tried)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a and a[0] == "sink" and len(a) == 5:
        sink(int(a[1]), float(a[2]), float(a[3]), a[4])
    elif a and a[0] == "flood" and len(a) == 5:
        flood(int(a[1]), int(a[2]), float(a[3]), float(a[4]))
    elif a and a[0] == "tcp" and len(a) in (4, 5):
        tcp(int(a[1]), int(a[2]), float(a[3]), float(a[4]) if len(a) == 5 else 0.0)
    else:
        sys.exit(__doc__)
