#!/usr/bin/python3
"""IPv6 packets with long extension-header chains for labelgate's tests
(loopback only, one packet per call).

sockopt HOST PORT TIMEOUT HBH DST    send one UDP datagram from a socket with
                                     IPV6_HOPOPTS of HBH bytes and IPV6_DSTOPTS
                                     of DST bytes (0: none; the kernel builds the
                                     headers), exit 0 if the echo returns
raw-chain HOST PORT AH               send one hand-built packet (IPPROTO_RAW) with
                                     the longest chain RFC 8200 allows:
                                     hop-by-hop, destination options, routing
                                     (2048 bytes each), fragment, AH (1028, only
                                     if AH is 1), destination options (2048), UDP
"""
import socket
import struct
import sys

IPV6_HOPOPTS = 54
IPV6_DSTOPTS = 59


def options(length):
    """Option data filling an extension header of `length` bytes after its
    two first bytes: unknown options of type 0x1e (skipped by receivers),
    at most 8 of them, as the kernel's max_*_opts_number allows."""
    out = b""
    room = length - 2
    while room > 0:
        if room < 2:
            out += b"\x00"
            room -= 1
            continue
        data = min(255, room - 2)
        out += bytes([0x1E, data]) + b"\xaa" * data
        room -= 2 + data
    return out


def ext(next_header, length):
    assert length % 8 == 0 and 8 <= length <= 2048
    return bytes([next_header, length // 8 - 1]) + options(length)


def checksum(data):
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def sockopt(host, port, timeout, hbh, dst):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    if int(hbh):
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_HOPOPTS, ext(0, int(hbh)))
    if int(dst):
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_DSTOPTS, ext(0, int(dst)))
    s.settimeout(float(timeout))
    s.sendto(b"long-headers", (host, int(port)))
    try:
        data, _ = s.recvfrom(2048)
    except socket.timeout:
        print("no echo")
        return 1
    print("echo", data)
    return 0


def raw_chain(host, port, with_ah):
    src = dst = socket.inet_pton(socket.AF_INET6, host)
    payload = b"raw-chain"
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!I3xB", udp_len, 17)
    head = struct.pack("!HHHH", 40000, int(port), udp_len, 0)
    csum = checksum(pseudo + head + payload) or 0xFFFF
    udp = struct.pack("!HHHH", 40000, int(port), udp_len, csum) + payload
    chain = ext(60, 2048)  # hop-by-hop -> destination options
    chain += ext(43, 2048)  # destination options -> routing
    # Routing header of an unassigned type with no segments left: receivers
    # skip it (RFC 8200 4.4); 2048 bytes.
    rh = bytes([44, 255, 253, 0]) + b"\x00" * 2044
    chain += rh
    nxt = 51 if with_ah == "1" else 60
    chain += struct.pack("!BBHI", nxt, 0, 0, 1)  # fragment: offset 0, last (atomic)
    if with_ah == "1":
        chain += bytes([60, 255]) + b"\x00\x00" + struct.pack("!II", 0x100, 1) + b"\x55" * 1016
    chain += ext(17, 2048)  # destination options -> UDP
    ip = struct.pack("!IHBB", 6 << 28, len(chain) + len(udp), 0, 64) + src + dst
    pkt = ip + chain + udp
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(pkt, (host, 0))
    print("sent", len(pkt))
    return 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "sockopt":
        return sockopt(*args)
    if cmd == "raw-chain":
        return raw_chain(*args)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
