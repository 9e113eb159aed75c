#!/usr/bin/python3
"""Traffic helpers for labelgate's integration tests (loopback only, bounded).

serve-tcp HOST PORT SECONDS          accept and close connections until SECONDS pass
connect-tcp HOST PORT TIMEOUT        exit 0 if a TCP connection is established
udp-echo HOST PORT SECONDS           echo datagrams back until SECONDS pass
udp-ask HOST PORT TIMEOUT            send one datagram, exit 0 if the echo returns
udp-sink HOST PORT IDLE OUTFILE      count datagrams until IDLE seconds pass without one
udp-flood HOST PORT COUNT SECONDS [PPS]  send up to COUNT datagrams within SECONDS (paced to PPS), print how many
"""
import socket
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve_tcp(host, port, seconds):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(128)
    s.settimeout(0.2)
    end = time.time() + float(seconds)
    print("ready", flush=True)
    while time.time() < end:
        try:
            c, _ = s.accept()
            c.close()
        except socket.timeout:
            pass


def connect_tcp(host, port, timeout):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.settimeout(float(timeout))
    try:
        s.connect((host, int(port)))
    except OSError as e:
        print(f"connect failed: {e}")
        return 1
    s.close()
    print("connected")
    return 0


def udp_echo(host, port, seconds):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    s.settimeout(0.2)
    end = time.time() + float(seconds)
    print("ready", flush=True)
    while time.time() < end:
        try:
            data, peer = s.recvfrom(2048)
            s.sendto(data, peer)
        except socket.timeout:
            pass


def udp_ask(host, port, timeout):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(float(timeout))
    s.sendto(b"ping", (host, int(port)))
    try:
        s.recvfrom(2048)
    except OSError as e:
        print(f"no answer: {e}")
        return 1
    print("answered")
    return 0


def udp_sink(host, port, idle, outfile):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 512 << 20)  # SO_RCVBUFFORCE (root)
    s.bind((host, int(port)))
    s.settimeout(float(idle))
    n = 0
    print("ready", flush=True)
    try:
        while True:
            s.recv(2048)
            n += 1
    except socket.timeout:
        pass
    with open(outfile, "w") as f:
        f.write(str(n))


def udp_flood(host, port, count, seconds, pps="0"):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    payload = b"x" * 36
    start = time.time()
    end = start + float(seconds)
    pps = float(pps)
    sent = 0
    for _ in range(int(count)):
        now = time.time()
        if now > end:
            break
        if pps > 0 and sent % 100 == 0:
            ahead = sent / pps - (now - start)
            if ahead > 0:
                time.sleep(ahead)
        try:
            s.sendto(payload, (host, int(port)))
            sent += 1
        except OSError:
            time.sleep(0.001)
    print(sent)


def main(argv):
    cmd, args = argv[1], argv[2:]
    fn = {
        "serve-tcp": serve_tcp,
        "connect-tcp": connect_tcp,
        "udp-echo": udp_echo,
        "udp-ask": udp_ask,
        "udp-sink": udp_sink,
        "udp-flood": udp_flood,
    }[cmd]
    return fn(*args) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
