#!/bin/bash
# (8) Attribution vs `ss -tnpz`: for the scenario's own sockets, the pid,
# process context and socket context labelgate records equal ss's
# users:(pid=..), proc_ctx= and sock_ctx=. Records are matched by source port.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin attribution
lg_require

PY=/usr/bin/python3
AUDIT="$LG_WORK/attribution-audit.log"
POL="$(write_policy policy <<'TOML'
mode = "enforcing"
default = "drop"
[[rule]]
name = "web-to-db"
hook = "output"
source = "httpd_t"
dest = "postgresql_t"
proto = "tcp"
dport = 5432
verdict = "accept"
audit = true
TOML
)"
tcp_echo_server "$CTX_PG" 5432
queue_out 5432
lg_start "$POL" "$AUDIT"

# A granted client that holds its connection, and a denied one stuck in SYN-SENT.
client='import socket,sys,time
s=socket.socket(); s.settimeout(12)
try:
    s.connect(("127.0.0.1",5432)); s.sendall(b"hello\n")
except OSError: pass
time.sleep(12)'
start_in "$CTX_HTTPD" "$LG_WORK/attribution-httpd.log" "$PY" -c "$client"
good_pid=$LAST_PID
start_in "$CTX_INTRUDER" "$LG_WORK/attribution-intruder.log" "$PY" -c "$client"
bad_pid=$LAST_PID
# Wait (bounded) until ss shows both clients' sockets: python starts slowly
# under TCG, and the denied one stays in SYN-SENT only while it retries.
for ((i = 0; i < 100; i++)); do
  cur="$(ss -Htanpz 'dport = :5432' || true)"
  grep -qF "pid=$good_pid," <<<"$cur" && grep -qF "pid=$bad_pid," <<<"$cur" && break
  sleep 0.3
done

SS="$LG_WORK/attribution-ss.txt"
# ss_field PID FIELD: FIELD (sport|proc_ctx|sock_ctx) of PID's socket to :5432
# in the ss snapshot.
ss_field() {
  local line
  line="$(grep -F "pid=$1," "$SS" | grep -v LISTEN | head -n1 || true)"
  case "$2" in
    sport) awk '{print $4}' <<<"$line" | sed 's/.*://' ;;
    *) { grep -oE "$2=[^,)]+" <<<"$line" || true; } | head -n1 | cut -d= -f2- ;;
  esac
}
ss -Htanpz 'dport = :5432' >"$SS" || true
ss -Htlnpz 'sport = :5432' >>"$SS" || true
srv_sock="$(grep LISTEN "$SS" | grep -oE 'sock_ctx=[^,)]+' | head -n1 | cut -d= -f2- || true)"
srv_pid="$(grep LISTEN "$SS" | grep -oE 'pid=[0-9]+' | head -n1 | cut -d= -f2 || true)"
good_exe="$(readlink /proc/"$good_pid"/exe || true)"
bad_exe="$(readlink /proc/"$bad_pid"/exe || true)"
# Stop labelgate first so its audit file is complete.
lg_stop || fail labelgate-exit "non-zero exit on SIGTERM"

# compare TAG PID OUTCOME EXE: the record for PID's source port names PID,
# its executable and ss's contexts (and the listener's pid as tpid, if given).
compare() {
  local tag="$1" pid="$2" outcome="$3" exe="$4" sport proc sock rec
  sport="$(ss_field "$pid" sport)"; proc="$(ss_field "$pid" proc_ctx)"; sock="$(ss_field "$pid" sock_ctx)"
  log "$tag: ss pid=$pid sport=$sport proc_ctx=$proc sock_ctx=$sock"
  if [ -z "$sport" ]; then fail "$tag-ss" "ss shows no socket for pid $pid"; return; fi
  rec="$(grep -E "(avc|labelgate): +$outcome " "$AUDIT" | grep -E " src=$sport " | head -n1 || true)"
  log "$tag: record: $rec"
  if [ -z "$rec" ]; then fail "$tag-record" "no $outcome record with src=$sport"; return; fi
  pass "$tag-record"
  local rpid; rpid="$(sed -nE "s/.*msg='(avc|labelgate):.* pid=([0-9]+) .*/\2/p" <<<"$rec")"
  if [ "$rpid" = "$pid" ]; then pass "$tag-pid"; else fail "$tag-pid" "record pid=$rpid, ss pid=$pid"; fi
  if grep -qE ' comm="?python3' <<<"$rec"; then pass "$tag-comm"; else fail "$tag-comm" "no comm=python3 in record"; fi
  if grep -qE "(path|exe)=\"?$exe[\" ]" <<<"$rec"; then pass "$tag-exe"; else fail "$tag-exe" "/proc/$pid/exe is $exe"; fi
  case "$rec" in
    *" tpid="*) if grep -qF " tpid=$srv_pid " <<<"$rec"; then pass "$tag-tpid"; else fail "$tag-tpid" "listener pid $srv_pid"; fi ;;
  esac
  if grep -qF "scontext=$sock " <<<"$rec"; then pass "$tag-sock-ctx"; else fail "$tag-sock-ctx" "ss sock_ctx=$sock"; fi
  if [ "$proc" = "$sock" ]; then pass "$tag-proc-ctx"; else fail "$tag-proc-ctx" "proc_ctx=$proc differs from sock_ctx=$sock"; fi
  if grep -qF "tcontext=$srv_sock " <<<"$rec"; then pass "$tag-tcontext"; else fail "$tag-tcontext" "server sock_ctx=$srv_sock"; fi
}
compare granted "$good_pid" granted "$good_exe"
compare denied "$bad_pid" denied "$bad_exe"

scenario_end
