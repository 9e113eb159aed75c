#!/usr/bin/python3
"""Print the IPv4 options (hex) of the first TCP SYN to PORT seen on lo.

Usage: syn-ipopts.py PORT SECONDS READY_FILE   (exit 1 if no SYN within SECONDS)
READY_FILE is created once the capture socket is bound.
Used to check that NetLabel puts a CIPSO option on loopback packets.
"""
import socket
import sys
import time

port, budget = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
s.bind(("lo", 0))
s.settimeout(0.5)
open(sys.argv[3], "w").close()
end = time.monotonic() + budget
seen = 0
while time.monotonic() < end:
    try:
        frame = s.recv(4096)
    except socket.timeout:
        continue
    ip = frame[14:]  # lo frames carry an Ethernet header
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
        continue
    seen += 1
    ihl = (ip[0] & 0x0F) * 4
    tcp = ip[ihl:]
    if len(tcp) < 14:
        continue
    if int.from_bytes(tcp[2:4], "big") == port and tcp[13] & 0x02:
        print(ip[20:ihl].hex())
        sys.exit(0)
print(f"no SYN to port {port} among {seen} TCP packets", file=sys.stderr)
sys.exit(1)
