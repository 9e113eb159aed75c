#!/bin/bash
# Scenario lifecycle (issue 15, 2.6): the unit's stop, restart and reload.
#  - `systemctl stop` under a bounded UDP load answers every queued packet:
#    labelgate reads the kernel's queue counters
#    (/proc/net/netfilter/nfnetlink_queue) after its last verdict and logs
#    them; id_sequence equals the packets it answered, nothing waits or was
#    dropped, and every datagram sent arrived.
#  - `systemctl restart` under the same load: a new process binds the queue,
#    every datagram arrived, and the table is enforced afterwards (refusal and
#    positive control).
#  - `systemctl reload` with a broken policy: refused, the running table
#    stays (same process, unit active, same decisions).
# Kernel permissive: the scenario is about the unit.
set -uo pipefail
. /usr/local/lib/labelgate-tests/common.sh
scenario_begin lifecycle
LOAD="$LGT_DIR/udp-load.py"
UDP_PORT=9999
COUNT=3000
SECONDS_LOAD=20

echo_server_start || fail echo-server "socat did not listen on $ECHO_PORT"
article_policy >"$LGT_OUT/lifecycle-policy.toml"
install_policy "$LGT_OUT/lifecycle-policy.toml"
lg_restart unit-restarts || { scenario_end; exit 1; }

# enforced NAME: the table decides (the root shell reaches the echo port and
# not PostgreSQL's).
enforced() {
  expect_eq "root-shell-reaches-echo-$1" "$(tcp_try "$ECHO_PORT")" "pong-$ECHO_PORT" "socat to the allowed port"
  expect_eq "root-socat-refused-$1" "$(tcp_try 5432)" "" "socat to 5432"
}

# load_start TAG: a UDP sink and a paced sender (COUNT datagrams over
# SECONDS_LOAD s, at most 60 s), from the root shell.
load_start() {
  rm -f "$LGT_OUT/$1-received" "$LGT_OUT/$1-sent"
  python3 "$LOAD" sink "$UDP_PORT" 5 120 "$LGT_OUT/$1-received" &
  SINK_PID=$!
  sleep 1
  as_root_login "python3 $LOAD flood $UDP_PORT $COUNT $SECONDS_LOAD 60 >$LGT_OUT/$1-sent" &
  FLOOD_PID=$!
}
load_finish() {   # TAG
  wait "$FLOOD_PID"; wait "$SINK_PID"
  local sent recv
  sent="$(cat "$LGT_OUT/$1-sent" 2>/dev/null)"; recv="$(cat "$LGT_OUT/$1-received" 2>/dev/null)"
  log "$1: sent ${sent:-?}, received ${recv:-?}"
  expect_eq "$1-all-sent" "${sent:-0}" "$COUNT" "datagrams sent"
  expect_eq "$1-all-delivered" "${recv:-none}" "${sent:-0}" "datagrams received"
}
# stop_counters TAG JOURNAL_MARK MID: the exiting process's kernel counters.
stop_counters() {
  local line f
  line="$(journal_since "$2" labelgate.service | grep -m1 'queue 0: kernel id_sequence=')"
  log "$1: $line"
  if [ -z "$line" ]; then fail "$1-counters-logged" "no 'kernel id_sequence=' line in the journal"; return; fi
  pass "$1-counters-logged"
  f() { sed -nE "s/.*[ ;]$1=([0-9]+).*/\1/p" <<<"$line"; }
  local idseq answered
  idseq="$(f id_sequence)"; answered="$(sed -nE 's/.*labelgate answered ([0-9]+).*/\1/p' <<<"$line")"
  expect_eq "$1-nothing-waiting" "$(f waiting)" 0 "waiting"
  expect_eq "$1-no-queue-drop" "$(f queue_dropped)" 0 "queue_dropped"
  expect_eq "$1-no-user-drop" "$(f user_dropped)" 0 "user_dropped"
  expect_eq "$1-every-packet-answered" "$answered" "$idseq" "packets answered vs kernel id_sequence"
  if [ -n "$answered" ] && [ "$answered" -ge "$3" ] && [ "$3" -gt 0 ]; then pass "$1-load-went-through-queue"
  else fail "$1-load-went-through-queue" "answered ${answered:-?}, id_sequence seen mid-load $3"; fi
}

# --- stop under load ---------------------------------------------------------
load_start stop
sleep 6
mid="$(queue_field 0 8)"; mid="${mid:-0}"
log "id_sequence mid-load: $mid"
jm="$(journal_mark)"
systemctl stop labelgate.service || fail stop-command "systemctl stop returned $?"
expect_eq stopped "$(systemctl is-active labelgate.service)" inactive "unit state after stop"
expect_eq queue-unbound "$(queue_portid 0)" "" "queue 0's reader after stop"
load_finish stop
stop_counters stop "$jm" "$mid"

# --- restart under load ------------------------------------------------------
systemctl start labelgate.service
lg_wait_ready && pass started-again || fail started-again "unit not active and bound"
enforced before-restart
old="$(lg_pid)"; oldport="$(queue_portid 0)"
load_start restart
sleep 6
mid="$(queue_field 0 8)"; mid="${mid:-0}"
jm="$(journal_mark)"
systemctl restart labelgate.service || fail restart-command "systemctl restart returned $?"
lg_wait_ready "$oldport" && pass restarted-bound || fail restarted-bound "no new reader on queue 0"
check new-process test "$(lg_pid)" != "$old"
load_finish restart
stop_counters restart "$jm" "$mid"
enforced after-restart

# --- reload with a broken policy -----------------------------------------------
pid="$(lg_pid)"
printf 'mode = "enforcing"\ndefault = "accept"\n[[rule]]\nname = "broken"\nsource = \n' >"$LGT_OUT/lifecycle-broken.toml"
install_policy "$LGT_OUT/lifecycle-broken.toml"
jm="$(journal_mark)"
systemctl reload labelgate.service || fail reload-command "systemctl reload returned $?"
for ((i = 0; i < 60; i++)); do
  journal_since "$jm" labelgate.service | grep -q 'reload refused' && break
  sleep 0.5
done
journal_since "$jm" labelgate.service >"$LGT_OUT/lifecycle-reload-journal.txt"
check broken-reload-refused grep -q 'reload refused, keeping the running policy' "$LGT_OUT/lifecycle-reload-journal.txt"
expect_eq active-after-broken-reload "$(systemctl is-active labelgate.service)" active "unit state"
expect_eq same-process-after-broken-reload "$(lg_pid)" "$pid" "MainPID"
enforced after-broken-reload
install_policy "$LGT_OUT/lifecycle-policy.toml"
systemctl reload labelgate.service
echo_server_stop
scenario_end
