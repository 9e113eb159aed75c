#!/usr/bin/env python3
"""Write the named seed inputs of labelgate's fuzz targets to fuzz/seeds/<target>/.

    python3 fuzz/tools/make_seeds.py            # synthetic seeds only (no privileges)
    python3 fuzz/tools/make_seeds.py --capture  # also real kernel NFQUEUE messages (root)

Synthetic seeds are well-formed packets built here (IPv4/IPv6, TCP/UDP/ICMP/
ICMPv6/SCTP, IPv4 options including the kernel's CIPSO option, IPv6 hop-by-hop
with CALIPSO, fragment, routing, destination-options and AH headers), netlink
NFQUEUE packet-message bodies in the layout of src/sys/nfqueue.rs, security
contexts, MLS levels/ranges/conditions, and policy files (examples/*.toml plus
variants).

--capture makes a fresh network namespace (traffic only on its loopback),
queues all of its loopback OUTPUT traffic to NFQUEUE 5, binds queue 5 on a
NETLINK_NETFILTER socket, sends real socket traffic (UDP, TCP handshakes and
resets, ICMP echo, IPv4 options, IPv6 extension headers) and every synthetic
packet through raw sockets, and saves each packet message the kernel sends
(the body after the 16-byte nlmsghdr, which is what parse_packet reads) as
seeds/nfqueue_msg/real-*, and its NFQA_PAYLOAD as seeds/packet/real-*.

The committed fuzz/corpus/<target>/ is these seeds plus what fuzzing found,
minimized with `cargo fuzz cmin` (see fuzz/README.md).
"""

import argparse
import hashlib
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.dirname(HERE)
REPO = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "seeds")

LO4 = bytes([127, 0, 0, 1])
LO6 = bytes(15) + b"\x01"
DOC4 = bytes([198, 18, 0, 7])
DOC6 = bytes.fromhex("20010db8000000000000000000000042")

# The kernel's CIPSO option (DOI 16, tag 1, level 1, category 0) plus its pad byte.
CIPSO = bytes.fromhex("860b00000010010500018000")


# ---------------------------------------------------------------- packets

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4(proto, l4, options=b"", src=LO4, dst=LO4, frag=0, ident=0x1c46, ttl=64, tos=0):
    opts = options + b"\0" * (-len(options) % 4)
    hlen = 20 + len(opts)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | (hlen // 4), tos, hlen + len(l4), ident, frag,
                      ttl, proto, 0, src, dst) + opts
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + l4


def ipv6(nh, rest, src=LO6, dst=LO6, flow=0):
    return struct.pack("!IHBB16s16s", (6 << 28) | flow, len(rest), nh, 64, src, dst) + rest


def pseudo4(src, dst, proto, l4):
    return struct.pack("!4s4sBBH", src, dst, 0, proto, len(l4)) + l4


def pseudo6(src, dst, nh, l4):
    return struct.pack("!16s16sIxxxB", src, dst, len(l4), nh) + l4


def tcp(sport, dport, flags, seq=0x12345678, ack=0, options=b"", payload=b"", pseudo=None):
    opts = options + b"\x01" * (-len(options) % 4)
    off = (20 + len(opts)) // 4
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, 65495, 0, 0) + opts + payload
    if pseudo:
        c = csum(pseudo(6, seg))
        seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    return seg


SYN_OPTS = bytes.fromhex("020405b40402080a0000abcd0000000001030307")


def udp(sport, dport, payload=b"", pseudo=None):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if pseudo:
        c = csum(pseudo(17, seg)) or 0xFFFF
        seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    return seg


def icmp(typ, code, rest=b"\0\x01\0\x01", payload=b"abcdefgh"):
    msg = struct.pack("!BBH", typ, code, 0) + rest + payload
    return msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]


def icmp6(typ, code, rest=b"\0\x01\0\x01", payload=b"abcdefgh", src=LO6, dst=LO6):
    msg = struct.pack("!BBH", typ, code, 0) + rest + payload
    c = csum(pseudo6(src, dst, 58, msg))
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def sctp(sport, dport, chunks, tag=0):
    pkt = struct.pack("!HHII", sport, dport, tag, 0) + chunks
    return pkt[:8] + struct.pack("<I", crc32c(pkt)) + pkt[12:]


def sctp_init():
    # INIT: initiate tag, a_rwnd, outbound streams, inbound streams, initial TSN.
    body = struct.pack("!IIHHI", 0xDEADBEEF, 106496, 10, 65535, 0x01020304)
    body += struct.pack("!HHI", 0x000C, 8, 0x00050006)  # supported address types v4, v6
    return struct.pack("!BBH", 1, 0, 4 + len(body)) + body


def sctp_data(payload=b"hello"):
    body = struct.pack("!IHHI", 1, 0, 0, 0) + payload
    chunk = struct.pack("!BBH", 0, 3, 4 + len(body)) + body
    return chunk + b"\0" * (-len(chunk) % 4)


def crc_ccitt(data, crc=0xFFFF):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x8408 if crc & 1 else 0)
    return crc


def calipso_option(doi=16, level=1, cats=b"\x80\0\0\0"):
    # RFC 5570 option 7; checksum is the kernel's ~crc_ccitt over the option with it zeroed.
    data = struct.pack("!IBBH", doi, len(cats) // 4, level, 0) + cats
    opt = bytes([7, len(data)]) + data
    c = (~crc_ccitt(opt)) & 0xFFFF
    return opt[:8] + bytes([c & 0xFF, c >> 8]) + opt[10:]


def ext_hdr(nh, options):
    """Hop-by-hop or destination-options header padded to 8 bytes with PadN/Pad1."""
    body = bytes([nh, 0]) + options
    pad = -len(body) % 8
    if pad == 1:
        body += b"\0"
    elif pad:
        body += bytes([1, pad - 2]) + bytes(pad - 2)
    return bytes([nh, len(body) // 8 - 1]) + body[2:]


ROUTER_ALERT = bytes([5, 2, 0, 0])


def frag_hdr(nh, offset, more, ident=0x2A):
    return struct.pack("!BBHI", nh, 0, (offset << 3) | (1 if more else 0), ident)


def routing_hdr(nh, addrs, rtype=0, left=None):
    segs = b"".join(addrs)
    left = len(addrs) if left is None else left
    return struct.pack("!BBBBI", nh, 2 * len(addrs), rtype, left, 0) + segs


def ah_hdr(nh, icv=bytes(12)):
    total = 12 + len(icv)
    return struct.pack("!BBHII", nh, total // 4 - 2, 0, 0x100, 1) + icv


def packets():
    p4 = lambda s, d: (lambda proto, seg: pseudo4(s, d, proto, seg))
    p6 = lambda s, d: (lambda nh, seg: pseudo6(s, d, nh, seg))
    lo4 = p4(LO4, LO4)
    lo6 = p6(LO6, LO6)
    dns = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")
    out = {}
    # IPv4 transports.
    out["v4-tcp-syn-5432"] = ipv4(6, tcp(43210, 5432, 0x02, options=SYN_OPTS, pseudo=lo4))
    out["v4-tcp-synack"] = ipv4(6, tcp(5432, 43210, 0x12, ack=0x12345679, options=SYN_OPTS, pseudo=lo4))
    out["v4-tcp-ack-data"] = ipv4(6, tcp(43210, 5432, 0x18, ack=1, payload=b"\0\0\0\x08\x04\xd2\x16\x2f", pseudo=lo4))
    out["v4-tcp-rst"] = ipv4(6, tcp(9, 43210, 0x14, seq=0, ack=0x12345679, pseudo=lo4))
    out["v4-tcp-fin-ecn"] = ipv4(6, tcp(80, 50000, 0xC1, pseudo=lo4), tos=0x02)
    out["v4-udp-dns"] = ipv4(17, udp(53000, 53, dns, pseudo=lo4))
    out["v4-udp-discard-9"] = ipv4(17, udp(40000, 9, b"hello", pseudo=lo4))
    out["v4-udp-remote"] = ipv4(17, udp(123, 123, bytes(48), pseudo=p4(DOC4, LO4)), src=DOC4)
    out["v4-icmp-echo"] = ipv4(1, icmp(8, 0))
    out["v4-icmp-echo-reply"] = ipv4(1, icmp(0, 0))
    inner = ipv4(17, udp(40000, 9, b""))[:28]
    out["v4-icmp-port-unreachable"] = ipv4(1, icmp(3, 3, rest=b"\0\0\0\0", payload=inner))
    out["v4-sctp-init"] = ipv4(132, sctp(5000, 7000, sctp_init()))
    out["v4-sctp-data"] = ipv4(132, sctp(7000, 5000, sctp_data(), tag=0xDEADBEEF))
    out["v4-gre-other-proto"] = ipv4(47, bytes.fromhex("00000800") + ipv4(17, udp(1, 2)))
    # IPv4 options.
    out["v4-cipso-udp"] = ipv4(17, udp(1000, 53, b"hi", pseudo=lo4), options=CIPSO)
    out["v4-cipso-tcp-syn"] = ipv4(6, tcp(43210, 8443, 0x02, options=SYN_OPTS, pseudo=lo4), options=CIPSO)
    out["v4-cipso-icmp"] = ipv4(1, icmp(8, 0), options=CIPSO)
    # Tag 1 (restricted bitmap) at level 3 with categories 0-7, 12-19.
    out["v4-cipso-long-bitmap"] = ipv4(17, udp(1, 2), options=bytes([0x86, 14]) + be32(16)
                                       + bytes([1, 8, 0, 3]) + bytes.fromhex("ff0ff000"))
    out["v4-record-route"] = ipv4(17, udp(1, 9), options=bytes([7, 11, 4]) + bytes(8))
    out["v4-timestamp"] = ipv4(1, icmp(8, 0), options=bytes([68, 12, 5, 0]) + bytes(8))
    out["v4-router-alert-nop"] = ipv4(2, bytes.fromhex("1164ee9b00000000"), options=bytes([1, 148, 4, 0, 0]))
    out["v4-max-options"] = ipv4(6, tcp(1, 2, 0x02), options=bytes([1] * 39) + b"\0")
    # IPv4 fragments.
    big = udp(40000, 9, bytes(range(256)) * 4)
    out["v4-frag-first"] = ipv4(17, big[:512], frag=0x2000)
    out["v4-frag-middle"] = ipv4(17, big[512:768], frag=0x2000 | 64)
    out["v4-frag-last"] = ipv4(17, big[768:], frag=96)
    out["v4-frag-df"] = ipv4(6, tcp(1, 2, 0x02), frag=0x4000)
    # IPv6 transports.
    out["v6-tcp-syn-22"] = ipv6(6, tcp(5555, 22, 0x02, options=SYN_OPTS, pseudo=lo6))
    out["v6-tcp-ack"] = ipv6(6, tcp(22, 5555, 0x10, ack=5, pseudo=lo6), flow=0xABCDE)
    out["v6-udp-9"] = ipv6(17, udp(40000, 9, b"hello", pseudo=lo6))
    out["v6-udp-remote"] = ipv6(17, udp(547, 546, b"dhcp", pseudo=p6(DOC6, LO6)), src=DOC6)
    out["v6-icmp6-echo"] = ipv6(58, icmp6(128, 0))
    out["v6-icmp6-echo-reply"] = ipv6(58, icmp6(129, 0))
    out["v6-icmp6-neighbor-solicit"] = ipv6(58, icmp6(135, 0, rest=bytes(4), payload=LO6))
    out["v6-sctp-init"] = ipv6(132, sctp(5000, 7000, sctp_init()))
    out["v6-no-next-header"] = ipv6(59, b"")
    out["v6-esp"] = ipv6(50, struct.pack("!II", 0x100, 1) + bytes(16))
    # IPv6 extension headers.
    out["v6-hbh-router-alert-udp"] = ipv6(0, ext_hdr(17, ROUTER_ALERT) + udp(1, 9, b"x", pseudo=lo6))
    out["v6-hbh-calipso-tcp"] = ipv6(0, ext_hdr(6, calipso_option()) + tcp(5555, 8443, 0x02, pseudo=lo6))
    out["v6-hbh-calipso-wide"] = ipv6(0, ext_hdr(17, calipso_option(level=3, cats=bytes([0xFF] * 8))) + udp(1, 2))
    out["v6-hbh-dest-tcp"] = ipv6(0, ext_hdr(60, b"") + ext_hdr(6, b"") + tcp(5555, 22, 0x02))
    out["v6-dest-opts-udp"] = ipv6(60, ext_hdr(17, bytes([0xC9, 16]) + DOC6) + udp(1, 9))  # home address
    out["v6-frag-first-udp"] = ipv6(44, frag_hdr(17, 0, True) + big[:512])
    out["v6-frag-nonfirst-udp"] = ipv6(44, frag_hdr(17, 64, False) + big[512:])
    out["v6-frag-atomic-icmp6"] = ipv6(44, frag_hdr(58, 0, False) + icmp6(128, 0))
    out["v6-hbh-frag-dest-tcp"] = ipv6(0, ext_hdr(44, ROUTER_ALERT) + frag_hdr(60, 0, True)
                                       + ext_hdr(6, b"") + tcp(5555, 5432, 0x02))
    out["v6-routing-type0"] = ipv6(43, routing_hdr(17, [DOC6]) + udp(1, 2))
    out["v6-routing-srh"] = ipv6(43, routing_hdr(6, [DOC6, LO6], rtype=4, left=1) + tcp(1, 2, 0x02))
    out["v6-ah-tcp"] = ipv6(51, ah_hdr(6) + tcp(5555, 22, 0x02))
    out["v6-hbh-ah-dest-sctp"] = ipv6(0, ext_hdr(51, b"") + ah_hdr(60) + ext_hdr(132, b"")
                                      + sctp(1, 2, sctp_data()))
    chain = b"".join(ext_hdr(60, b"") for _ in range(15)) + ext_hdr(17, b"")
    out["v6-dest-chain-16"] = ipv6(60, chain + udp(1, 2))
    # Malformed: the parser must refuse these without panicking.
    out["bad-empty"] = b""
    out["bad-version-5"] = b"\x50" + bytes(39)
    out["bad-v4-ihl-3"] = b"\x43" + ipv4(6, tcp(1, 2, 2))[1:]
    out["bad-v4-ihl-past-end"] = b"\x4f" + ipv4(6, tcp(1, 2, 2))[1:]
    out["bad-v4-short-tcp"] = ipv4(6, bytes(10))
    out["bad-v6-short"] = ipv6(6, b"")[:30]
    out["bad-v6-ext-lies"] = ipv6(0, bytes([6, 200, 0, 0]))
    out["bad-v6-chain-too-long"] = ipv6(60, b"".join(ext_hdr(60, b"") for _ in range(20)))
    return out


# ---------------------------------------------------------------- nfqueue messages

NFQA = dict(PACKET_HDR=1, VERDICT_HDR=2, MARK=3, TIMESTAMP=4, IFINDEX_INDEV=5, IFINDEX_OUTDEV=6,
            IFINDEX_PHYSINDEV=7, IFINDEX_PHYSOUTDEV=8, HWADDR=9, PAYLOAD=10, CT=11, CT_INFO=12,
            CAP_LEN=13, SKB_INFO=14, EXP=15, UID=16, GID=17, SECCTX=18, VLAN=19, L2HDR=20,
            PRIORITY=21, CGROUP_CLASSID=22)
NLA_F_NESTED = 1 << 15


def nla(ty, payload):
    a = struct.pack("=HH", 4 + len(payload), ty) + payload
    return a + b"\0" * (-len(a) % 4)


def be32(n):
    return struct.pack("!I", n)


def nfq_body(queue, attrs, family=2):
    return struct.pack("!BBH", family, 0, queue) + b"".join(nla(t, v) for t, v in attrs)


def packet_hdr(pid, hw, hook):
    return struct.pack("!IHB", pid, hw, hook)


def nfqueue_msgs(pkts):
    out = {}
    a = NFQA
    syn = pkts["v4-tcp-syn-5432"]
    ct = nla(1 | NLA_F_NESTED, nla(1 | NLA_F_NESTED, nla(1, LO4) + nla(2, LO4))) + nla(8, be32(0x10))
    out["synth-output-uid-gid-secctx"] = nfq_body(7, [
        (a["PACKET_HDR"], packet_hdr(0x01020304, 0x0800, 3)),
        (a["IFINDEX_OUTDEV"], be32(1)),
        (a["UID"], be32(48)),
        (a["GID"], be32(48)),
        (a["SECCTX"], b"system_u:object_r:postgresql_packet_t:s0\0"),
        (a["PAYLOAD"], syn),
    ])
    out["synth-input-every-attr"] = nfq_body(5, [
        (a["PACKET_HDR"], packet_hdr(77, 0x86DD, 1)),
        (a["IFINDEX_INDEV"], be32(1)),
        (a["IFINDEX_PHYSINDEV"], be32(2)),
        (a["MARK"], be32(0xCAFE)),
        (a["TIMESTAMP"], struct.pack("!QQ", 1700000000, 123456)),
        (a["HWADDR"], struct.pack("!H", 6) + bytes(4) + bytes.fromhex("020000000001") + bytes(2)),
        (a["L2HDR"], bytes(14)),
        (a["VLAN"] | NLA_F_NESTED, nla(1, struct.pack("!H", 0x8100)) + nla(2, struct.pack("!H", 42))),
        (a["UID"], be32(1001)),
        (a["GID"], be32(1001)),
        (a["SECCTX"], b"system_u:object_r:server_packet_t:s0-s1:c0.c3\0"),
        (a["CT"] | NLA_F_NESTED, ct),
        (a["CT_INFO"], be32(2)),
        (a["SKB_INFO"], be32(1)),
        (a["CAP_LEN"], be32(1500)),
        (a["PRIORITY"], be32(0)),
        (a["CGROUP_CLASSID"], be32(0x10001)),
        (a["PAYLOAD"], pkts["v6-hbh-calipso-tcp"]),
    ])
    out["synth-cipso-payload-truncated"] = nfq_body(5, [
        (a["PACKET_HDR"], packet_hdr(9, 0x0800, 0)),
        (a["CAP_LEN"], be32(4000)),
        (a["PAYLOAD"], pkts["v4-cipso-udp"][:40]),
    ])
    out["synth-secctx-no-nul"] = nfq_body(1, [
        (a["PACKET_HDR"], packet_hdr(1, 0x0800, 4)),
        (a["SECCTX"], b"unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"),
        (a["PAYLOAD"], pkts["v4-udp-dns"]),
    ])
    out["synth-secctx-not-utf8"] = nfq_body(1, [
        (a["PACKET_HDR"], packet_hdr(2, 0x0800, 2)),
        (a["SECCTX"], b"u:r:\xff\xfe:s0\0"),
        (a["PAYLOAD"], pkts["v4-icmp-echo"]),
    ])
    out["synth-no-payload"] = nfq_body(65535, [(a["PACKET_HDR"], packet_hdr(3, 0x0806, 0))])
    out["bad-no-header"] = nfq_body(7, [(a["PAYLOAD"], b"\x45\0\0\x14")])
    lying = bytearray(nfq_body(7, [(a["PACKET_HDR"], packet_hdr(1, 0x0800, 3))]))
    lying[4:6] = struct.pack("=H", 200)
    out["bad-attr-length-lies"] = bytes(lying)
    out["bad-short-packet-hdr"] = nfq_body(7, [(a["PACKET_HDR"], b"\0\0\0\x01\x08")])
    out["bad-too-short"] = b"\x02\x00"
    return out


# ---------------------------------------------------------------- contexts and policies

CONTEXTS = {
    "ctx-httpd": "system_u:system_r:httpd_t:s0",
    "ctx-postgres-mcs": "system_u:system_r:postgresql_t:s1:c0",
    "ctx-unconfined-range": "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023",
    "ctx-no-range": "system_u:object_r:postgresql_packet_t",
    "ctx-trailing-nul": "u:r:t:s1:c0\0",
    "ctx-trailing-newline": "staff_u:staff_r:staff_t:s0-s15:c0.c1023\n",
    "ctx-mls-lists": "system_u:object_r:lab_peer_t:s2:c0,c3.c5,c9-s3:c0.c10",
    "ctx-dots-dashes": "sys.u:obj-r:my.type-t:s0",
    "ctx-unlabeled": "system_u:object_r:unlabeled_t:s0",
    "level-s0": "s0",
    "level-cats": "s15:c0.c2,c7,c9.c10",
    "level-unordered": "s0:c3,c0,c1,c2",
    "level-max": "s1023:c1023",
    "range-s0-s1": "s0-s1:c0.c3",
    "cond-dominates": ">= s1:c0",
    "cond-dominated-by": "<= s2",
    "cond-equal": "= s0",
    "cond-within": "  s0-s15:c0.c1023 ",
    "pattern-any-level": "*:*:*:>= s1:c0",
    "pattern-set": "@web",
    "pattern-star": "*",
    "pattern-full": "system_u:*:postgresql_t:s0",
    "bad-two-fields": "a:b",
    "bad-empty-type": "a:b:",
    "bad-sensitivity": "a:b:c:s9999",
    "bad-backwards-cats": "s0:c3.c1",
    "bad-high-below-low": "s1-s0",
    "bad-space": "a b:r:t",
}

POLICY_VARIANTS = {
    "every-field": r'''
mode = "permissive"
default = "accept"
malformed = "drop"
permissive_domains = ["php_fpm_t", "unconfined_t"]

[sets]
web = ["httpd_t", "nginx_t"]
db = ["postgresql_t", "mysqld_t"]

[[rule]]
name = "web-to-db"
hook = "output"
source = "@web"
dest = "@db"
secmark = "system_u:object_r:*:s0"
proto = "tcp"
sport = "1024-65535"
dport = [5432, "3306"]
saddr = "127.0.0.0/8"
daddr = ["::1", "10.0.0.0/8"]
uid = [48, "root"]
gid = "root"
oif = "lo"
verdict = "accept"
audit = true

[[rule]]
name = "peer-levels"
hook = "input"
iif = "eth0"
peer = "*:*:lab_peer_t:s1"
source_level = ">= s1:c0"
dest_level = "<= s15:c0.c1023"
peer_level = "= s1"
mls = "source_within_dest"
proto = "sctp"
dport = 7000
verdict = "drop"
permissive = true

[[rule]]
name = "icmp-forward"
hook = "forward"
proto = "icmp"
mls = "dest_dominates_source"
verdict = "drop"

[[rule]]
name = "icmp6-any"
hook = "any"
proto = "icmpv6"
source = "*:*:*:s0-s3:c0.c7"
mls = "source_dominates_dest"
verdict = "accept"

[[rule]]
name = "udp-dns"
proto = "udp"
dport = 53
dest = "*"
verdict = "accept"

[[address_label]]
address = "198.18.0.0/15"
context = "system_u:object_r:lab_peer_t:s0"

[[address_label]]
address = "2001:db8::/32"
context = "system_u:object_r:lab_peer_t:s1:c0"

[[doi]]
doi = 16

[[doi]]
doi = 3
map = "pass"
''',
    "ipv6-only": r'''
default = "drop"
[[rule]]
name = "ssh6"
proto = "tcp"
dport = 22
daddr = "::1/128"
verdict = "accept"
[[rule]]
name = "ping6"
proto = "icmpv6"
saddr = ["fe80::/10", "::1"]
verdict = "accept"
''',
    "empty": "",
    "defaults-only": 'mode = "enforcing"\ndefault = "drop"\nmalformed = "accept"\n',
    "bad-duplicate-name": '[[rule]]\nname = "a"\nverdict = "drop"\n[[rule]]\nname = "a"\nverdict = "accept"\n',
    "bad-unknown-field": '[[rule]]\nname = "a"\nverdict = "drop"\ncolour = "red"\n',
    "bad-port-without-proto": '[[rule]]\nname = "a"\ndport = 80\nverdict = "drop"\n',
    "bad-level": '[[rule]]\nname = "a"\nsource_level = ">= s9999"\nverdict = "drop"\n',
    "bad-unknown-set": '[[rule]]\nname = "a"\nsource = "@nope"\nverdict = "drop"\n',
    "bad-doi-zero": "[[doi]]\ndoi = 0\n",
    "bad-toml": '[[rule]\nname = "a\n',
}


# ---------------------------------------------------------------- peer options and audit logs

def cipso_opt(doi, tag, level, cats):
    """A CIPSO option (type 134) with one tag; `cats` is the tag's category bytes."""
    t = bytes([tag, 4 + len(cats), 0, level]) + cats
    return bytes([0x86, 6 + len(t)]) + struct.pack("!I", doi) + t


def peer_options():
    """Bare options areas for the peer_option target: IPv4 options (CIPSO) and IPv6 hop-by-hop data (CALIPSO)."""
    out = {}
    out["cipso-kernel-tag1"] = CIPSO
    out["cipso-tag1-bitmap"] = cipso_opt(7, 1, 3, b"\x50\x01")
    out["cipso-tag1-no-cats"] = cipso_opt(16, 1, 2, b"")
    out["cipso-tag1-c239"] = cipso_opt(16, 1, 15, bytes(29) + b"\x01")
    out["cipso-tag2-enum"] = cipso_opt(16, 2, 2, struct.pack("!3H", 0, 7, 300))
    out["cipso-tag2-max"] = cipso_opt(16, 2, 255, struct.pack("!2H", 1022, 1023))
    out["cipso-tag5-ranges"] = cipso_opt(16, 5, 4, struct.pack("!4H", 22, 20, 5, 3))
    out["cipso-tag5-last-low-omitted"] = cipso_opt(9, 5, 4, struct.pack("!3H", 9, 2, 1))
    # Issue 14 item 18: eight ranges, the last from c0 (its low left out), as on the wire.
    out["cipso-tag5-eight-ranges-from-c0"] = cipso_opt(16, 5, 0, struct.pack("!15H", 88, 80, 78, 70, 66, 60, 55, 50, 45, 40, 36, 30, 25, 20, 3))
    out["cipso-tag5-low-above-high"] = cipso_opt(9, 5, 4, struct.pack("!2H", 2, 9))
    out["cipso-tag5-touching-ranges"] = cipso_opt(9, 5, 4, struct.pack("!3H", 9, 5, 5))
    tags = bytes([1, 5, 0, 1, 0x80]) + bytes([5, 8, 0, 1, 0, 4, 0, 2])  # tag 1 gives the label, tag 5 is checked
    out["cipso-two-tags"] = bytes([0x86, 6 + len(tags)]) + struct.pack("!I", 16) + tags
    out["cipso-after-nop-timestamp"] = bytes([1, 68, 4, 0, 0]) + CIPSO
    out["cipso-after-eol"] = b"\x00" + CIPSO
    out["cipso-record-route"] = bytes([7, 11, 4]) + bytes(9)
    out["bad-cipso-truncated"] = CIPSO[:8]
    out["bad-cipso-option-length-lies"] = bytes([0x86, 40]) + CIPSO[2:]
    out["bad-cipso-tag-length-lies"] = CIPSO[:7] + bytes([9]) + CIPSO[8:]
    out["bad-cipso-length-zero"] = bytes([0x86, 0, 0, 0])
    out["bad-cipso-doi-zero"] = cipso_opt(0, 1, 1, b"\x80")
    out["bad-cipso-tag7"] = cipso_opt(16, 7, 1, b"\x80")
    out["bad-cipso-tag2-unordered"] = cipso_opt(16, 2, 2, struct.pack("!2H", 7, 7))
    out["bad-cipso-tag2-c4096"] = cipso_opt(16, 2, 2, struct.pack("!H", 4096))
    out["bad-cipso-tag5-ascending"] = cipso_opt(16, 5, 4, struct.pack("!4H", 2, 1, 9, 0))
    out["bad-cipso-duplicate"] = CIPSO[:11] + CIPSO[:11]
    # CALIPSO (RFC 5570) in hop-by-hop option data, checksums as the kernel computes them.
    out["calipso-kernel-like"] = calipso_option()
    out["calipso-after-pads"] = bytes([0, 1, 2, 0, 0]) + calipso_option()
    out["calipso-two-words"] = calipso_option(3, 7, bytes([0, 0, 0, 0, 1, 0, 0, 3]))
    out["calipso-no-cats"] = calipso_option(3, 0, b"")
    out["calipso-c1023"] = calipso_option(16, 255, bytes(127) + b"\x01")
    out["calipso-after-router-alert"] = ROUTER_ALERT + calipso_option()
    out["hbh-router-alert-only"] = ROUTER_ALERT + bytes([1, 0])
    bad = bytearray(calipso_option())
    bad[8] ^= 1
    out["bad-calipso-checksum"] = bytes(bad)
    out["bad-calipso-truncated"] = calipso_option()[:10]
    lie = bytearray(calipso_option())
    lie[6] = 2
    out["bad-calipso-cat-words-lie"] = bytes(lie)
    out["bad-calipso-data-short"] = bytes([7, 4, 0, 0, 0, 1])
    out["bad-calipso-doi-zero"] = calipso_option(0, 1, b"")
    out["bad-calipso-c1055"] = calipso_option(1, 0, bytes(131) + b"\x01")
    out["bad-calipso-duplicate"] = calipso_option() * 2
    out["bad-empty"] = b""
    return out


def real_peer_options():
    """The options areas of the captured packets (seeds/packet/real-*): IPv4 options and IPv6 hop-by-hop option data."""
    out = {}
    d = os.path.join(SEEDS, "packet")
    for f in sorted(os.listdir(d)):
        if not f.startswith("real-"):
            continue
        with open(os.path.join(d, f), "rb") as fh:
            b = fh.read()
        if b and b[0] >> 4 == 4 and (b[0] & 15) > 5:
            opts = b[20:(b[0] & 15) * 4]
        elif b and b[0] >> 4 == 6 and len(b) >= 48 and b[6] == 0:
            opts = b[42:40 + (b[41] + 1) * 8]
        else:
            continue
        out["real-" + hashlib.sha1(opts).hexdigest()[:12]] = opts
    return out


AVC_DENY = ("type=USER_AVC msg=audit(1764100000.123:42): pid=99 uid=0 auid=4294967295 ses=4294967295 subj=unconfined "
            "msg='avc:  denied  { send } for  pid=1234 comm=\"psql\" path=\"/usr/bin/psql\" src_addr=127.0.0.1 "
            "src=43210 dst_addr=127.0.0.1 dest=5432 netif=lo proto=6 ouid=48 slabel=socket tlabel=socket "
            "scontext=system_u:system_r:httpd_t:s0 tcontext=system_u:system_r:postgresql_t:s0 tclass=packet "
            "permissive=1 rule=db-port-others exe=\"/usr/sbin/labelgate\" sauid=0 hostname=? addr=? terminal=?'")


def avc(outcome="denied", perm="send", proto=6, dport=5432, s="system_u:system_r:httpd_t:s0",
        t="system_u:system_r:postgresql_t:s0", permissive=1, rule="db-port-others", extra=""):
    f = f" dest={dport}" if dport is not None else ""
    f += " netif=lo"
    f += f" proto={proto}" if proto is not None else ""
    return ("type=USER_AVC msg=audit(1764100001.000:43): pid=99 uid=0 auid=4294967295 ses=4294967295 "
            f"subj=unconfined msg='avc:  {outcome}  {{ {perm} }} for  pid=1234 comm=\"app\" path=\"/usr/bin/app\""
            f" src_addr=127.0.0.1 src=43210 dst_addr=127.0.0.1{f}{extra} slabel=socket tlabel=process"
            f" scontext={s} tcontext={t} tclass=packet permissive={permissive} rule={rule}"
            " exe=\"/usr/sbin/labelgate\" sauid=0 hostname=? addr=? terminal=?'")


def jline(**kw):
    import json
    base = {"time": "1764100002.500", "serial": 9, "pid": 99, "subj": "unconfined", "outcome": "denied",
            "perm": "recv", "hook": "input", "scontext": "u:r:a_t:s0", "tcontext": "u:r:b_t:s0", "proto": "udp",
            "dest": 53, "permissive": 0, "rule": "default"}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not None}, separators=(",", ":"))


def audit_logs():
    out = {}
    out["avc-deny-permissive"] = AVC_DENY + "\n"
    out["avc-deny-twice-and-other-port"] = "\n".join([AVC_DENY, AVC_DENY, AVC_DENY.replace("dest=5432", "dest=5433")]) + "\n"
    out["avc-granted"] = avc(outcome="granted", permissive=0, rule="web-to-db") + "\n"
    out["avc-recv-udp-enforcing"] = avc(perm="recv", proto=17, dport=53, permissive=0, rule="default") + "\n"
    out["avc-forward-in-icmp"] = avc(perm="forward_in", proto=1, dport=None, rule="icmp-forward") + "\n"
    out["avc-forward-out-tcp"] = avc(perm="forward_out", proto=6, dport=443, rule="default") + "\n"
    out["avc-sctp-mls"] = avc(proto=132, dport=7000, s="staff_u:staff_r:staff_t:s0-s15:c0.c1023",
                              t="system_u:object_r:lab_peer_t:s1:c0", rule="peer-levels") + "\n"
    out["avc-no-proto"] = avc(proto=None, dport=None, rule="default") + "\n"
    out["avc-peer-secmark"] = avc(extra=" ouid=48 secmark=system_u:object_r:postgresql_packet_t:s0"
                                        " peer=system_u:object_r:netlabel_peer_t:s1:c0 peer_label=option") + "\n"
    out["avc-malformed"] = avc(proto=None, dport=None, extra=" malformed=ipv4_header", rule="malformed") + "\n"
    out["avc-quoted-comm-with-equals"] = AVC_DENY.replace('comm="psql"', 'comm="a=b scontext=x { y }"') + "\n"
    out["json-deny-udp"] = jline() + "\n"
    out["json-deny-permissive-tcp"] = jline(perm="send", hook="output", proto="tcp", dest=5432, permissive=1,
                                            scontext="system_u:system_r:httpd_t:s0",
                                            tcontext="system_u:system_r:postgresql_t:s0", rule="db") + "\n"
    out["json-granted"] = jline(outcome="granted", rule="allow-dns") + "\n"
    out["json-icmpv6-no-dest"] = jline(proto="icmpv6", dest=None, perm="forward_in", hook="forward") + "\n"
    out["json-proto-number"] = jline(proto="6", dest=22) + "\n"
    out["json-no-proto"] = jline(proto=None, dest=None) + "\n"
    out["mixed-log"] = "\n".join([
        "type=SYSCALL msg=audit(1764100000.100:41): arch=c000003e syscall=44 success=yes exit=15",
        AVC_DENY,
        "",
        "type=AVC msg=audit(1764100000.200:44): avc:  denied  { name_connect } for  pid=1 comm=\"x\" "
        "scontext=system_u:system_r:httpd_t:s0 tcontext=system_u:object_r:postgresql_port_t:s0 tclass=tcp_socket",
        jline(),
        "garbage line",
        "{not json",
        avc(perm="recv", proto=17, dport=53, permissive=0, rule="default"),
        "   ",
        jline(perm="send", hook="output", proto="sctp", dest=7000, permissive=1),
    ]) + "\n"
    out["crlf-lines"] = AVC_DENY + "\r\n" + jline() + "\r\n"
    out["bad-avc-bad-context"] = "type=USER_AVC msg='avc:  denied  { send } for scontext=bad tcontext=u:r:t'\n"
    out["bad-avc-unterminated"] = "type=USER_AVC msg='avc:  denied  { send for scontext=\"u:r:t:s0\n"
    out["bad-json-missing-fields"] = '{"outcome":"denied","perm":"send"}\n'
    out["bad-garbage"] = "\x00\x01 = \" { } ' \n==\n"
    out["empty"] = ""
    return out


# ---------------------------------------------------------------- writing

def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def write_synthetic():
    pkts = packets()
    for name, data in pkts.items():
        write("packet", name, data)
    for name, data in nfqueue_msgs(pkts).items():
        write("nfqueue_msg", name, data)
    for name, text in CONTEXTS.items():
        write("context", name, text)
    ex = os.path.join(REPO, "examples")
    for f in sorted(os.listdir(ex)):
        if f.endswith(".toml"):
            shutil.copyfile(os.path.join(ex, f), os.path.join(SEEDS, "policy", "example-" + f[:-5]))
    for name, text in POLICY_VARIANTS.items():
        write("policy", name, text.lstrip("\n"))
    for name, data in peer_options().items():
        write("peer_option", name, data)
    for name, text in audit_logs().items():
        write("audit_log", name, text)
    return pkts


# ---------------------------------------------------------------- real capture (root)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
QUEUE = 5


class Queue:
    """A NETLINK_NETFILTER socket bound to one NFQUEUE queue, as src/sys/nfqueue.rs does it."""

    def __init__(self, num):
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.config([(1, bytes([1, 0, 0, 0]))])  # NFQA_CFG_CMD: BIND
        self.config([(2, be32(0xFFFF) + b"\x02"),  # NFQA_CFG_PARAMS: copy range, COPY_PACKET
                     (3, be32(1024))])             # NFQA_CFG_QUEUE_MAXLEN
        # Ask for as many attributes as the kernel offers: NFQA_SECCTX needs
        # CONFIG_NETWORK_SECMARK and NFQA_CT conntrack, else EOPNOTSUPP.
        # GSO|UID_GID|SECCTX is what labelgate's runtime asks for.
        for name, flags in (("CONNTRACK|GSO|UID_GID|SECCTX", 0x1E), ("GSO|UID_GID|SECCTX", 0x1C),
                            ("UID_GID", 0x08)):
            try:
                self.config([(5, be32(flags)), (4, be32(flags))])  # NFQA_CFG_FLAGS, NFQA_CFG_MASK
                print(f"queue {num}: flags {name}")
                break
            except OSError as e:
                print(f"queue {num}: flags {name} refused: {e}", file=sys.stderr)

    def send(self, msg_type, flags, attrs, seq=0):
        body = struct.pack("!BBH", 0, 0, self.num) + b"".join(nla(t, v) for t, v in attrs)
        hdr = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0)
        self.sock.sendto(hdr + body, (0, 0))

    def config(self, attrs):
        self.seq += 1
        self.send(2, 1 | 4, attrs, self.seq)  # NLM_F_REQUEST | NLM_F_ACK
        while True:
            for ty, seq, body in self.messages(5.0):
                if ty == 2 and seq == self.seq:
                    err = struct.unpack("=i", body[:4])[0]
                    if err:
                        raise OSError(-err, "nfqueue config refused")
                    return

    def messages(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return []
        buf = self.sock.recv(1 << 17)
        out, off = [], 0
        while off + 16 <= len(buf):
            ln, ty, _flags, seq, _pid = struct.unpack_from("=IHHII", buf, off)
            if ln < 16 or off + ln > len(buf):
                break
            out.append((ty, seq, buf[off + 16:off + ln]))
            off += (ln + 3) & ~3
        return out

    def pump(self, seconds, saved):
        """Receive packet messages for `seconds`, save each body and accept it."""
        end = time.time() + seconds
        while time.time() < end:
            for ty, _seq, body in self.messages(max(0.0, end - time.time())):
                if ty != (NFNL_SUBSYS_QUEUE << 8):
                    continue
                saved.append(body)
                pid = None
                for t, v in attrs_of(body[4:]):
                    if t == 1 and len(v) >= 4:
                        pid = struct.unpack("!I", v[:4])[0]
                if pid is not None:
                    self.send(1, 1, [(2, be32(1) + be32(pid))])  # NFQA_VERDICT_HDR: ACCEPT


def attrs_of(b):
    off = 0
    while off + 4 <= len(b):
        ln, ty = struct.unpack_from("=HH", b, off)
        if ln < 4 or off + ln > len(b):
            return
        yield ty & 0x3FFF, b[off + 4:off + ln]
        off += (ln + 3) & ~3


def sh(cmd, check=True):
    subprocess.run(cmd, shell=True, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def traffic(q, saved, pkts):
    """Real socket traffic and every synthetic packet, each followed by a pump."""
    def step(label, fn):
        try:
            fn()
        except OSError as e:
            print(f"  {label}: {e}", file=sys.stderr)
        q.pump(0.2, saved)

    def udp_send(fam, addr, opts=None, uid=None):
        def go():
            pid = os.fork() if uid is not None else 0
            if pid:
                os.waitpid(pid, 0)
                return
            try:
                if uid is not None:
                    os.setgid(uid)
                    os.setuid(uid)
                s = socket.socket(fam, socket.SOCK_DGRAM)
                for level, name, value in opts or []:
                    s.setsockopt(level, name, value)
                s.sendto(b"hello labelgate", (addr, 9))
                s.close()
            finally:
                if uid is not None:
                    os._exit(0)
        return go

    def tcp_conversation(fam, addr, port):
        srv = socket.socket(fam, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((addr, port))
        srv.listen(1)
        cli = socket.socket(fam, socket.SOCK_STREAM)
        cli.setblocking(False)
        try:
            cli.connect((addr, port))
        except BlockingIOError:
            pass
        q.pump(0.3, saved)
        srv.settimeout(1.0)
        conn, _ = srv.accept()
        cli.setblocking(True)
        cli.send(b"\0\0\0\x08\x04\xd2\x16\x2f")
        q.pump(0.2, saved)
        conn.send(b"N")
        q.pump(0.2, saved)
        cli.close()
        q.pump(0.2, saved)
        conn.close()
        srv.close()

    def tcp_refused(fam, addr):
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect((addr, 9))
        except BlockingIOError:
            pass
        q.pump(0.3, saved)
        c.close()

    def raw_ping(fam, addr, proto, typ):
        s = socket.socket(fam, socket.SOCK_RAW, proto)
        msg = icmp(typ, 0) if fam == socket.AF_INET else struct.pack("!BBH", typ, 0, 0) + b"\0\x01\0\x01abcdefgh"
        s.sendto(msg, (addr, 0))
        s.close()

    hopopts = ext_hdr(17, ROUTER_ALERT)
    calipso = ext_hdr(17, calipso_option())
    dstopts = ext_hdr(17, bytes([0x1E, 2, 0, 0]))  # an unknown, skippable option
    step("udp4", udp_send(socket.AF_INET, "127.0.0.1"))
    step("udp4 uid 1001", udp_send(socket.AF_INET, "127.0.0.1", uid=1001))
    step("udp6", udp_send(socket.AF_INET6, "::1"))
    step("udp4 cipso", udp_send(socket.AF_INET, "127.0.0.1", [(socket.IPPROTO_IP, socket.IP_OPTIONS, CIPSO)]))
    step("udp4 record route", udp_send(socket.AF_INET, "127.0.0.1",
                                       [(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([7, 11, 4]) + bytes(9))]))
    step("udp6 hop-by-hop", udp_send(socket.AF_INET6, "::1", [(socket.IPPROTO_IPV6, 54, hopopts)]))
    step("udp6 calipso hop-by-hop", udp_send(socket.AF_INET6, "::1", [(socket.IPPROTO_IPV6, 54, calipso)]))
    step("udp6 dest opts", udp_send(socket.AF_INET6, "::1", [(socket.IPPROTO_IPV6, 59, dstopts)]))
    step("tcp4 refused", lambda: tcp_refused(socket.AF_INET, "127.0.0.1"))
    step("tcp6 refused", lambda: tcp_refused(socket.AF_INET6, "::1"))
    step("tcp4 conversation", lambda: tcp_conversation(socket.AF_INET, "127.0.0.1", 5432))
    step("tcp6 conversation", lambda: tcp_conversation(socket.AF_INET6, "::1", 5433))
    step("ping4", lambda: raw_ping(socket.AF_INET, "127.0.0.1", socket.IPPROTO_ICMP, 8))
    step("ping6", lambda: raw_ping(socket.AF_INET6, "::1", socket.IPPROTO_ICMPV6, 128))
    # Every well-formed synthetic packet, through a header-including raw socket.
    raw4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for name, p in pkts.items():
        if name.startswith("bad-") or "remote" in name:
            continue
        if p[0] >> 4 == 4:
            step("raw " + name, lambda p=p: raw4.sendto(p, ("127.0.0.1", 0)))
        else:
            step("raw " + name, lambda p=p: raw6.sendto(p, ("::1", 0)))


def capture_child(pkts):
    sh("ip link set lo up")
    for tool in ("iptables", "ip6tables"):
        # All loopback output of this fresh namespace is ours; ctstate loads conntrack (NFQA_CT).
        sh(f"{tool} -A OUTPUT -o lo -m conntrack --ctstate NEW,ESTABLISHED,RELATED,INVALID,UNTRACKED"
           f" -j NFQUEUE --queue-num {QUEUE}", check=False)
        sh(f"{tool} -A OUTPUT -o lo -j NFQUEUE --queue-num {QUEUE}")
    q = Queue(QUEUE)
    saved = []
    traffic(q, saved, pkts)
    q.pump(0.5, saved)
    seen = set()
    n_msg = n_pkt = 0
    for body in saved:
        h = hashlib.sha1(body).hexdigest()[:12]
        if h in seen:
            continue
        seen.add(h)
        n_msg += 1
        write("nfqueue_msg", f"real-{h}", body)
        for t, v in attrs_of(body[4:]):
            if t == 10:
                n_pkt += 1
                write("packet", f"real-{hashlib.sha1(v).hexdigest()[:12]}", v)
    print(f"captured {len(saved)} packet messages ({n_msg} distinct), {n_pkt} payloads")


def capture(pkts):
    ns = f"lgfuzz{os.getpid()}"
    sh(f"ip netns add {ns}")
    try:
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--capture-child"],
                       check=True)
    finally:
        sh(f"ip netns del {ns}", check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", action="store_true", help="also capture real NFQUEUE messages (root)")
    ap.add_argument("--capture-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.capture_child:
        capture_child(packets())
        return
    for t in ("packet", "nfqueue_msg", "context", "policy", "peer_option", "audit_log"):
        shutil.rmtree(os.path.join(SEEDS, t), ignore_errors=True)
        os.makedirs(os.path.join(SEEDS, t))
    pkts = write_synthetic()
    if args.capture:
        capture(pkts)
        for name, data in real_peer_options().items():
            write("peer_option", name, data)
    for t in sorted(os.listdir(SEEDS)):
        print(f"{t}: {len(os.listdir(os.path.join(SEEDS, t)))} seeds")


if __name__ == "__main__":
    main()
