#!/bin/bash
# Scenario lifecycle (issue 15, 2.6): the unit's stop, restart and reload,
# with the package's defaults (LABELGATE_FAIL=closed: the queue rules stay
# when labelgate is not running, so new connections are then dropped).
#  - `systemctl stop` under a bounded UDP load answers every queued packet:
#    labelgate reads the kernel's queue counters
#    (/proc/net/netfilter/nfnetlink_queue) after its last verdict and logs
#    them; id_sequence equals the packets it answered, none waits, none was
#    lost on the way to it (user_dropped). Once stopped, a new connection is
#    refused (fail closed).
#  - `systemctl restart` under a bounded TCP load: every connection is
#    answered (a SYN dropped while no process is bound is sent again: each
#    connect may take 90 s), the old process answered every packet queued to
#    it, a new process binds the queue, and the table is enforced afterwards.
#  - `systemctl reload` with a broken policy: the reload fails (its
#    `rules --install` step refuses the policy), a SIGHUP sent by hand is
#    refused by labelgate, and the running table stays (same process, unit
#    active, same decisions); a good policy then reloads.
# Kernel permissive: the scenario is about the unit.
set -uo pipefail
. /usr/local/lib/labelgate-tests/common.sh
scenario_begin lifecycle
LOAD="$LGT_DIR/load.py"
UDP_PORT=9999
COUNT=3000
SECONDS_LOAD=20

echo_server_start || fail echo-server "socat did not listen on $ECHO_PORT"
# The article's table, scoped to what this scenario sends: the UDP load on
# $UDP_PORT is governed (queued and decided), besides the TCP ports.
{
  article_policy
  printf '\n[[scope]]\nproto = "tcp"\ndport = [5432, %s]\n\n[[scope]]\nproto = "udp"\ndport = %s\n' "$ECHO_PORT" "$UDP_PORT"
} >"$LGT_OUT/lifecycle-policy.toml"
install_policy "$LGT_OUT/lifecycle-policy.toml"
lg_restart unit-restarts || { scenario_end; exit 1; }

# enforced NAME: the table decides (the root shell reaches the echo port and
# not PostgreSQL's).
enforced() {
  expect_eq "root-shell-reaches-echo-$1" "$(tcp_try "$ECHO_PORT")" "pong-$ECHO_PORT" "socat to the allowed port"
  expect_eq "root-socat-refused-$1" "$(tcp_try 5432)" "" "socat to 5432"
}

# udp_load_start: a UDP sink and a paced sender (COUNT datagrams over
# SECONDS_LOAD s, at most 60 s) from the root shell.
udp_load_start() {
  rm -f "$LGT_OUT/stop-received" "$LGT_OUT/stop-sent"
  python3 "$LOAD" sink "$UDP_PORT" 5 120 "$LGT_OUT/stop-received" &
  SINK_PID=$!
  sleep 1
  as_root_login "python3 $LOAD flood $UDP_PORT $COUNT $SECONDS_LOAD 60 >$LGT_OUT/stop-sent" &
  FLOOD_PID=$!
}
# stop_counters TAG PID MID MIN JOURNAL_MARK: the kernel counters process
# PID logged as it exited. Its lines are selected by its pid (journald's
# _PID of the unit's stdout stream), not only from a cursor on: in two runs
# the line was in the journal but not after a cursor taken before the
# stop; the diagnostics below record what each query saw.
stop_counters() {
  local line f
  line="$(journal_poll 15 'queue 0: kernel id_sequence=' _PID="$2" | grep -m1 'queue 0: kernel id_sequence=')"
  log "$1: $line"
  log "$1: counters lines after the cursor: -u $(journalctl -u labelgate.service --after-cursor="$5" --no-pager -o cat 2>/dev/null | grep -c 'kernel id_sequence='), any $(journalctl --after-cursor="$5" --no-pager -o cat 2>/dev/null | grep -c 'kernel id_sequence=')"
  journalctl _PID="$2" --no-pager -o export 2>/dev/null | grep -aE '^(_SYSTEMD_UNIT|SYSLOG_IDENTIFIER|__CURSOR|__REALTIME_TIMESTAMP|__SEQNUM|_UID)=' | tail -6 >"$LGT_OUT/lifecycle-$1-fields.txt" || true
  if [ -z "$line" ]; then fail "$1-counters-logged" "no 'kernel id_sequence=' line in the journal"; return; fi
  pass "$1-counters-logged"
  f() { sed -nE "s/.*[ ;]$1=([0-9]+).*/\1/p" <<<"$line"; }
  local idseq answered
  idseq="$(f id_sequence)"; answered="$(sed -nE 's/.*labelgate answered ([0-9]+).*/\1/p' <<<"$line")"
  expect_eq "$1-nothing-waiting" "$(f waiting)" 0 "waiting"
  # queue_dropped is not checked: once stopping, labelgate sets the queue's
  # length to 0 and the kernel drops what arrives after (fail closed); those
  # packets never entered the queue.
  expect_eq "$1-no-user-drop" "$(f user_dropped)" 0 "user_dropped"
  expect_eq "$1-every-packet-answered" "$answered" "$idseq" "packets answered vs kernel id_sequence"
  # At least MIN packets queued before the stop or restart: the load, not
  # the odd connection, went through the queue.
  if [ -n "$answered" ] && [ "$answered" -ge "$3" ] && [ "$3" -ge "$4" ]; then pass "$1-load-went-through-queue"
  else fail "$1-load-went-through-queue" "answered ${answered:-?}, id_sequence seen mid-load $3 (want >= $4)"; fi
}

# --- stop under load ---------------------------------------------------------
enforced before-stop
udp_load_start
sleep 6
mid="$(queue_field 0 8)"; mid="${mid:-0}"
log "id_sequence mid-load: $mid"
check load-running-at-stop kill -0 "$FLOOD_PID"
jm="$(journal_mark)"
pid="$(lg_pid)"
systemctl stop labelgate.service || fail stop-command "systemctl stop returned $?"
expect_eq stopped "$(systemctl is-active labelgate.service)" inactive "unit state after stop"
expect_eq queue-unbound "$(queue_portid 0)" "" "queue 0's reader after stop"
stop_counters stop "$pid" "$mid" 500 "$jm"
wait "$FLOOD_PID"; wait "$SINK_PID"
read -r sent refused <"$LGT_OUT/stop-sent" || true
log "stop: sent ${sent:-?}, refused on output ${refused:-?}, received $(cat "$LGT_OUT/stop-received" 2>/dev/null) (after the stop, fail closed drops them)"
expect_eq stop-load-complete "$(( ${sent:-0} + ${refused:-0} ))" "$COUNT" "datagrams sent or refused"
# Fail closed: the rules stayed, nothing reads the queue, so a new connection
# (to the port allowed a moment ago, positive control above) is dropped.
check rules-stay-after-stop bash -c "iptables -t security -S | grep -q -- '-j NFQUEUE --queue-num 0'"
expect_eq closed-while-stopped "$(tcp_try "$ECHO_PORT")" "" "socat to the allowed port while labelgate is stopped"

# --- restart under load ------------------------------------------------------
systemctl start labelgate.service
lg_wait_ready && pass started-again || fail started-again "unit not active and bound"
enforced before-restart
old="$(lg_pid)"; oldport="$(queue_portid 0)"
# Paced at one connection per 0.25 s (at least 25 s): still running when
# the restart comes 8 s in, on a fast host as on a slow one.
as_root_login "python3 $LOAD tcp $ECHO_PORT 100 400 0.25 >$LGT_OUT/restart-tcp" &
TCP_PID=$!
sleep 8
mid="$(queue_field 0 8)"; mid="${mid:-0}"
log "id_sequence mid-load: $mid"
check load-running-at-restart kill -0 "$TCP_PID"
jm="$(journal_mark)"
systemctl restart labelgate.service || fail restart-command "systemctl restart returned $?"
lg_wait_ready "$oldport" && pass restarted-bound || fail restarted-bound "no new reader on queue 0"
check new-process test "$(lg_pid)" != "$old"
stop_counters restart "$old" "$mid" 20 "$jm"
wait "$TCP_PID"
read -r answered tried <"$LGT_OUT/restart-tcp" || true
log "restart: $answered of $tried connections answered"
expect_eq restart-connections-tried "${tried:-0}" 100 "connections tried"
expect_eq restart-connections-answered "${answered:-0}" "${tried:-none}" "connections answered"
enforced after-restart

# --- reload with a broken policy -----------------------------------------------
pid="$(lg_pid)"
printf 'mode = "enforcing"\ndefault = "accept"\n[[rule]]\nname = "broken"\nsource = \n' >"$LGT_OUT/lifecycle-broken.toml"
install_policy "$LGT_OUT/lifecycle-broken.toml"
jm="$(journal_mark)"
# The unit's ExecReload re-installs the queue rules first: a policy that
# does not compile fails the reload there, and nothing changes.
if systemctl reload labelgate.service; then
  fail reload-command-fails "systemctl reload of a broken policy succeeded"
else
  pass reload-command-fails
fi
# labelgate refuses it too when the signal comes without the unit's check
# (kill -HUP by hand).
systemctl kill -s HUP --kill-whom=main labelgate.service
journal_wait "$jm" labelgate.service 'reload refused' 30 >"$LGT_OUT/lifecycle-reload-journal.txt"
check broken-reload-refused grep -q 'reload refused, keeping the running policy' "$LGT_OUT/lifecycle-reload-journal.txt"
expect_eq active-after-broken-reload "$(systemctl is-active labelgate.service)" active "unit state"
expect_eq same-process-after-broken-reload "$(lg_pid)" "$pid" "MainPID"
enforced after-broken-reload
install_policy "$LGT_OUT/lifecycle-policy.toml"
check reload-good-policy systemctl reload labelgate.service
echo_server_stop
scenario_end
