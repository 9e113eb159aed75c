#!/usr/bin/python3
"""Traffic helpers for labelgate's integration tests (loopback only, bounded).

serve-tcp HOST PORT SECONDS          accept and close connections until SECONDS pass
connect-tcp HOST PORT TIMEOUT        exit 0 if a TCP connection is established
udp-echo HOST PORT SECONDS           echo datagrams back until SECONDS pass
udp-ask HOST PORT TIMEOUT [SPORT [HOLD]]
                                     send one datagram (from port SPORT), exit 0 if the echo returns;
                                     with HOLD, print the outcome and keep the socket HOLD seconds first
udp-race SPORT HOST PORT SECONDS     bind SPORT as soon as it is free (within SECONDS), then for 1 s send
                                     a datagram every millisecond and print how many echoes returned and
                                     the ms from bind to the last one
tcp-ask HOST PORT TIMEOUT SPORT      connect from port SPORT, exit 0 if established
udp-sink HOST PORT IDLE OUTFILE [LATEFILE]
                                     count datagrams until IDLE seconds pass without one; with LATEFILE,
                                     also write how many arrived after a later one of the same sender
udp-flood HOST PORT COUNT SECONDS [PPS [FLOWS]]
                                     send up to COUNT datagrams within SECONDS (paced to PPS), print how
                                     many; from FLOWS sockets one after the other (a new flow every
                                     COUNT/FLOWS datagrams); each datagram starts with its flow's
                                     number and its sequence number in the flow (4 bytes each)
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


def udp_ask(host, port, timeout, sport=None, hold=None):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(float(timeout))
    if sport is not None:
        s.bind(("::" if ":" in host else "0.0.0.0", int(sport)))
    s.sendto(b"ping", (host, int(port)))
    try:
        s.recvfrom(2048)
    except OSError as e:
        print(f"no answer: {e}", flush=True)
        return 1
    print("answered", flush=True)
    if hold is not None:
        time.sleep(float(hold))
    return 0


def udp_sink(host, port, idle, outfile, latefile=None):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 512 << 20)  # SO_RCVBUFFORCE (root)
    s.bind((host, int(port)))
    s.settimeout(float(idle))
    n = 0
    late = 0
    highest = {}
    print("ready", flush=True)
    try:
        while True:
            data, peer = s.recvfrom(2048)
            n += 1
            flow = (peer, data[:4])
            seq = int.from_bytes(data[4:8], "big")
            if seq < highest.get(flow, -1):
                late += 1
            highest[flow] = max(seq, highest.get(flow, -1))
    except socket.timeout:
        pass
    with open(outfile, "w") as f:
        f.write(str(n))
    if latefile:
        with open(latefile, "w") as f:
            f.write(str(late))


def udp_flood(host, port, count, seconds, pps="0", flows="1"):
    count = int(count)
    per_flow = max(1, count // max(1, int(flows)))
    s = None
    start = time.time()
    end = start + float(seconds)
    pps = float(pps)
    sent = 0
    seq = 0
    flow = -1
    for i in range(count):
        if i % per_flow == 0:
            if s:
                s.close()
            s = socket.socket(family(host), socket.SOCK_DGRAM)
            seq = 0
            flow += 1
        now = time.time()
        if now > end:
            break
        if pps > 0 and sent % 100 == 0:
            ahead = sent / pps - (now - start)
            if ahead > 0:
                time.sleep(ahead)
        try:
            s.sendto(flow.to_bytes(4, "big") + seq.to_bytes(4, "big") + b"x" * 28, (host, int(port)))
            sent += 1
            seq += 1
        except OSError:
            time.sleep(0.001)
    print(sent)


def udp_race(sport, host, port, seconds):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    end = time.time() + float(seconds)
    while True:
        try:
            s.bind(("::" if ":" in host else "0.0.0.0", int(sport)))
            break
        except OSError:
            if time.time() > end:
                print("port never free")
                return 1
    bound = time.time()
    print("bound", flush=True)
    s.setblocking(False)
    echoes, last = 0, None
    while time.time() < bound + 1.0:
        try:
            s.sendto(b"race", (host, int(port)))
        except OSError:
            pass
        time.sleep(0.001)
        while True:
            try:
                s.recvfrom(2048)
            except OSError:
                break
            echoes += 1
            last = time.time()
    window = -1 if last is None else (last - bound) * 1000
    print(f"echoes={echoes} last_ms={window:.3f}")
    return 0


def tcp_ask(host, port, timeout, sport):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if ":" in host else "0.0.0.0", int(sport)))
    s.settimeout(float(timeout))
    try:
        s.connect((host, int(port)))
    except OSError as e:
        print(f"connect failed: {e}")
        return 1
    s.close()
    print("connected")
    return 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    fn = {
        "serve-tcp": serve_tcp,
        "connect-tcp": connect_tcp,
        "udp-echo": udp_echo,
        "udp-ask": udp_ask,
        "udp-race": udp_race,
        "tcp-ask": tcp_ask,
        "udp-sink": udp_sink,
        "udp-flood": udp_flood,
    }[cmd]
    return fn(*args) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
