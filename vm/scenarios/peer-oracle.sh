#!/bin/bash
# (peer-oracle) The kernel as the oracle for peer labels: NetLabel labels
# loopback TCP with CIPSO tag 1, tag 2 and tag 5 (DOIs 26, 27, 28, pass
# mapping) and ::1 with CALIPSO (DOI 29); clients at many levels (single
# categories, runs of two and of many, eight ranges from c0, the largest
# sensitivity s255 and category c1023, each where the tag can carry it)
# connect to a server that reads each connection's peer context with
# SO_PEERSEC (getpeercon). labelgate, queueing the client->server packets
# on INPUT, must record exactly that context as the packets' peer label.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin peer-oracle
lg_require

PORT4=5440
PORT6=5441
SERVER="$LG_WORK/peer-oracle-server.py"
CLIENT="$LG_WORK/peer-oracle-client.py"
ORACLE="$LG_WORK/peer-oracle-kernel.txt"     # "<client port> <getpeercon context>"
SENT="$LG_WORK/peer-oracle-sent.txt"         # "<name> <level> <client port> <server port>"
AUDIT="$LG_WORK/peer-oracle-audit.log"
: >"$ORACLE"; : >"$SENT"

cat >"$SERVER" <<'PY'
import select, socket, sys, time
out, seconds = sys.argv[1], float(sys.argv[2])
socks = []
for fam, host, port in ((socket.AF_INET, "127.0.0.1", 5440), (socket.AF_INET6, "::1", 5441)):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)
    socks.append(s)
end = time.time() + seconds
with open(out, "a") as f:
    while time.time() < end:
        ready, _, _ = select.select(socks, [], [], 0.5)
        for s in ready:
            c, addr = s.accept()
            try:
                # Python allows at most 1024 bytes; c0.c1023 needs far fewer.
                ctx = c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERSEC, 1024).rstrip(b"\0").decode()
            except OSError as e:
                ctx = "getpeercon-error-%s" % (e.errno or e)
            f.write("%d %s\n" % (addr[1], ctx))
            f.flush()
            try:
                c.sendall(b"ok\n")
            finally:
                c.close()
PY
cat >"$CLIENT" <<'PY'
# One process for every connection (a python start-up under TCG takes
# seconds). Arguments: rounds, each "round NAME HOST PORT BASE [map=DOI]
# LEVEL...". map=DOI first points NetLabel's map for 127.0.0.1 at CIPSO DOI
# (::1 stays CALIPSO 29). Each socket is created at
# system_u:system_r:httpd_t:LEVEL through /proc/self/attr/sockcreate (the
# guest is permissive; NetLabel labels a connection from its socket's
# context) and binds source port BASE+i, so records and the oracle are
# matched by a port no other connection used.
import socket, subprocess, sys
sent, args = sys.argv[1], sys.argv[2:]
rounds = []
for a in args:
    if a == "round":
        rounds.append([])
    else:
        rounds[-1].append(a)

def netlabel_map(doi):
    subprocess.run(["netlabelctl", "map", "del", "default"], stderr=subprocess.DEVNULL)
    for addr, proto in (("0.0.0.0/0", "unlbl"), ("::/0", "unlbl"),
                        ("127.0.0.1", "cipsov4," + doi), ("::1", "calipso,29")):
        subprocess.run(["netlabelctl", "map", "add", "default", "address:" + addr, "protocol:" + proto], check=True)
    print("map: CIPSO DOI %s" % doi, flush=True)

failed = 0
with open(sent, "a") as out:
    for name, host, port, base, *levels in rounds:
        port, base = int(port), int(base)
        if levels and levels[0].startswith("map="):
            netlabel_map(levels.pop(0)[4:])
        for i, level in enumerate(levels):
            try:
                with open("/proc/self/attr/sockcreate", "w") as f:
                    f.write("system_u:system_r:httpd_t:" + level)
                s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(20)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, base + i))
                s.connect((host, port))
                ok = s.recv(16).startswith(b"ok")
                s.close()
            except OSError as e:
                print("FAIL %s %s: %s" % (name, level, e), flush=True)
                failed += 1
                continue
            if not ok:
                print("FAIL %s %s: no answer" % (name, level), flush=True)
                failed += 1
                continue
            out.write("%s %s %d %d\n" % (name, level, base + i, port))
            out.flush()
sys.exit(1 if failed else 0)
PY

netlabelctl cipsov4 add pass doi:26 tags:1
netlabelctl cipsov4 add pass doi:27 tags:2
netlabelctl cipsov4 add pass doi:28 tags:5
netlabelctl calipso add pass doi:29
# netlabel_reset: what the other scenarios start from (no labelling).
netlabel_reset() {
  netlabelctl map del default 2>/dev/null || true
  netlabelctl map add default protocol:unlbl 2>/dev/null || true
  local d
  for d in 26 27 28; do netlabelctl cipsov4 del doi:"$d" 2>/dev/null || true; done
  netlabelctl calipso del doi:29 2>/dev/null || true
}
trap '[ -z "$LG_PID" ] || kill "$LG_PID" 2>/dev/null; stop_all; netlabel_reset' EXIT

POL="$(write_policy policy <<'TOML'
mode = "enforcing"
default = "drop"
[[doi]]
doi = 26
map = "pass"
[[doi]]
doi = 27
map = "pass"
[[doi]]
doi = 28
map = "pass"
[[doi]]
doi = 29
map = "pass"
[[rule]]
name = "oracle-in"
hook = "input"
proto = "tcp"
dport = [5440, 5441]
audit = true
verdict = "accept"
TOML
)"
check policy-check lg_policy_check "$POL"

start_in "system_u:system_r:postgresql_t:s0-s255:c0.c1023" "$LG_WORK/peer-oracle-server.log" \
  python3 "$SERVER" "$ORACLE" 900
wait_listen "$PORT4"
wait_listen "$PORT6"
queue_in "$PORT4"
ip6tables -A INPUT -i lo -p tcp --dport "$PORT6" -j NFQUEUE --queue-num 0
lg_start "$POL" "$AUDIT"

# Levels each encoding can carry (the kernel refuses to send one that does
# not fit: tag 1 up to c239, tag 2 up to 15 categories, tag 5 up to 30
# bytes of ranges, CALIPSO any category).
COMMON=(s0 s255 s1:c0 s2:c7,c8 s3:c0,c1 s4:c0.c2 s5:c1,c3,c5 s17:c10.c20,c22)
TAG1=(s6:c0.c239 s7:c239 s8:c0,c2,c4,c6,c8,c10,c12,c14,c16,c18,c20,c22 s9:c1,c3.c9,c100.c200,c238,c239)
TAG2=(s6:c1023 s7:c0.c14 s8:c1,c100,c1000,c1022,c1023 s255:c0,c2,c4,c6,c8,c10,c12,c14,c16,c18,c20,c22,c24,c26,c28)
TAG5=(s6:c0.c1023 s7:c0.c3,c20.c25,c30.c36,c40.c45,c50.c55,c60.c66,c70.c78,c80.c88
      s8:c0,c2,c4,c6,c8,c10,c12,c14 s9:c1,c3,c5,c7,c9,c11,c13 s255:c1022,c1023 s10:c500.c1023)
CALIPSO=(s6:c0.c1023 s7:c1023 s255:c0.c1023 s8:c0,c2,c4,c6,c8,c10,c12,c14,c16,c18,c20,c22,c24,c26,c28,c30,c32
         s9:c0.c3,c20.c25,c30.c36,c40.c45,c50.c55,c60.c66,c70.c78,c80.c88,c1000.c1010)

CLIENT_LOG="$LG_WORK/peer-oracle-client.log"
if timeout 250 runcon "system_u:system_r:httpd_t:s0-s255:c0.c1023" python3 "$CLIENT" "$SENT" \
    round cipso-tag1 127.0.0.1 "$PORT4" 42000 map=26 "${COMMON[@]}" "${TAG1[@]}" \
    round calipso ::1 "$PORT6" 43000 "${COMMON[@]}" "${CALIPSO[@]}" \
    round cipso-tag2 127.0.0.1 "$PORT4" 44000 map=27 "${COMMON[@]}" "${TAG2[@]}" \
    round cipso-tag5 127.0.0.1 "$PORT4" 45000 map=28 "${COMMON[@]}" "${TAG5[@]}" \
    >"$CLIENT_LOG" 2>&1; then
  pass clients-connected
else
  fail clients-connected "$(tr '\n' ' ' <"$CLIENT_LOG")"
fi
log "netlabel map at the end: $(netlabelctl -p map list | tr '\n' ' ')"

lg_stop || fail labelgate-exit "non-zero exit on SIGTERM"

# The comparison: for every connection, the kernel's getpeercon context
# (the peer SID the kernel took from the connection's SYN) and labelgate's
# peer label for that SYN, the connection's first record (one queue
# thread decides and records in order), must be the same string. Later
# packets of the connection are logged when their label differs: a packet
# the kernel sends with no full socket behind it (a TIME_WAIT ACK) carries
# the kernel's own label (SECINITSID_KERNEL, s0 here), and labelgate
# rightly reports what that packet carries.
COMPARE="$LG_WORK/peer-oracle-compare.py"
cat >"$COMPARE" <<'PY'
# One process for the whole comparison (a process start under TCG is slow).
# Prints "PASS name", "FAIL name detail" or "NOTE text" lines.
import re, sys
sent, oracle, audit = sys.argv[1:4]
kernel = {}
for line in open(oracle):
    port, ctx = line.split(maxsplit=1)
    kernel.setdefault(port, set()).add(ctx.strip())
records = {}
for line in open(audit):
    m = re.search(r" src=(\d+) .* dest=(\d+) ", line)
    if m:
        p = re.search(r" peer=(\S+)", line)
        records.setdefault((m.group(1), m.group(2)), []).append(p.group(1) if p else None)
n = 0
for line in open(sent):
    name, level, sport, port = line.split()
    n += 1
    check = "oracle-%s-%s" % (name, level)
    ctxs = kernel.get(sport, set())
    if len(ctxs) != 1:
        print("FAIL %s kernel peer context for port %s: %s" % (check, sport, sorted(ctxs) or "none"))
        continue
    k = next(iter(ctxs))
    if k.split(":", 3)[3] != level:
        print("NOTE the kernel labels %s %s as %s" % (name, level, k))
    recs = records.get((sport, port), [])
    if not recs or recs[0] is None:
        print("FAIL %s no labelgate peer label for the SYN from port %s" % (check, sport))
    elif recs[0] != k:
        print("FAIL %s kernel '%s', labelgate '%s'" % (check, k, recs[0]))
    else:
        print("PASS %s" % check)
    later = sorted({r or "none" for r in recs[1:]} - {k})
    if later:
        print("NOTE %s %s (port %s): later packets also carried %s" % (name, level, sport, " ".join(later)))
print("COUNT %d" % n)
PY
n=0
while read -r verdict check detail; do
  case "$verdict" in
    PASS) pass "$check" ;;
    FAIL) fail "$check" "$detail" ;;
    NOTE) log "note: $check $detail" ;;
    COUNT) n="$check" ;;
  esac
done < <(python3 "$COMPARE" "$SENT" "$ORACLE" "$AUDIT" 2>&1 || echo "FAIL compare-script exited non-zero")
log "$n connections compared"
[ "$n" -ge 50 ] && pass oracle-enough-connections || fail oracle-enough-connections "only $n connections made"
check_no_grep no-bad-peer-option "$AUDIT" "bad_peer_option"

netlabel_reset
scenario_end
