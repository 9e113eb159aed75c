# Guest-side helpers for the labelgate VM scenarios. Source, do not run.
#
# Environment (set by vm/guest/run-scenarios.sh):
#   LG_WORK     read-write work dir shared with the host
#   LG_RESULTS  file collecting "PASS|FAIL <scenario> <check>" lines
#   LG_POLICY   compiled binary SELinux policy (secilc output)
#   LG_BIN      labelgate binary ("" when absent)
#   SCENARIO    name of the running scenario (set by scenario_begin)

LG_WORK="${LG_WORK:-${LABELGATE_VM_WORK:-/tmp}}"
LG_RESULTS="${LG_RESULTS:-$LG_WORK/results.txt}"
LG_CTX_HARNESS="system_u:system_r:kernel_t:s0-s1:c0.c3"
CTX_HTTPD="system_u:system_r:httpd_t:s0"
CTX_PG="system_u:system_r:postgresql_t:s0"
CTX_INTRUDER="system_u:system_r:intruder_t:s0"

log() { printf '[%s] %s\n' "${SCENARIO:-guest}" "$*"; }

# ---------------------------------------------------------------- SELinux ---
# selinux_setup POLICY: mount selinuxfs, load POLICY, expect permissive.
selinux_setup() {
  local policy="$1"
  grep -qw selinux /sys/kernel/security/lsm 2>/dev/null \
    || mount -t securityfs none /sys/kernel/security 2>/dev/null || true
  grep -qw selinux /sys/kernel/security/lsm \
    || { log "SELinux is not an active LSM: $(cat /sys/kernel/security/lsm)"; return 1; }
  mountpoint -q /sys/fs/selinux || mount -t selinuxfs none /sys/fs/selinux
  cat "$policy" > /sys/fs/selinux/load
  log "policy loaded; enforce=$(cat /sys/fs/selinux/enforce) self=$(cat /proc/self/attr/current | tr -d '\0')"
}

# selinux_enforcing: prints 1 if the guest enforces, 0 if permissive.
selinux_enforcing() { cat /sys/fs/selinux/enforce; }

# ---------------------------------------------------------------- network ---
net_setup() {
  ip link set lo up
  local m
  # inet_diag/tcp_diag/udp_diag: sock_diag lookups of sockets by address.
  for m in nfnetlink_queue xt_NFQUEUE xt_SECMARK xt_conntrack nft_queue \
           inet_diag tcp_diag udp_diag; do
    modprobe -q "$m" 2>/dev/null || log "modprobe $m failed"
  done
}

# Remove every rule the scenarios may have added (iptables nft backend).
net_reset() {
  local t
  for t in filter mangle security; do iptables -t "$t" -F 2>/dev/null || true; done
  netlabelctl map del default >/dev/null 2>&1 || true
  netlabelctl map add default protocol:unlbl >/dev/null 2>&1 || true
  netlabelctl cipsov4 del doi:16 >/dev/null 2>&1 || true
}

# wait_listen PORT [SECONDS]: wait until something listens on 127.0.0.1:PORT.
wait_listen() {
  local port="$1" i
  for ((i = 0; i < ${2:-30} * 5; i++)); do
    ss -Htln "sport = :$port" | grep -q . && return 0
    sleep 0.2
  done
  log "nothing listens on port $port"; return 1
}

# ------------------------------------------------------------ processes ---
LG_PIDS=()
# start_in CTX LOGFILE CMD...: start CMD in SELinux context CTX in the
# background; its pid (runcon execs, so the pid is CMD's) goes to LAST_PID.
start_in() {
  local ctx="$1" logf="$2"; shift 2
  runcon "$ctx" "$@" >"$logf" 2>&1 &
  LAST_PID=$!
  LG_PIDS+=("$LAST_PID")
}

# run_in CTX CMD...: run CMD in context CTX in the foreground.
run_in() { local ctx="$1"; shift; runcon "$ctx" "$@"; }

# tcp_echo_server CTX PORT: a socat server in CTX answering "pong-PORT".
tcp_echo_server() {
  start_in "$1" "$LG_WORK/$SCENARIO-server-$2.log" \
    socat "TCP4-LISTEN:$2,bind=127.0.0.1,reuseaddr,fork" "SYSTEM:echo pong-$2"
  wait_listen "$2"
}

# tcp_try CTX PORT: connect from CTX to 127.0.0.1:PORT; succeed iff the
# server's answer came back. Budget 8 s to connect (a dropped SYN is resent
# after 1 s and 3 s); generous because TCG on a busy 2-core host is slow.
# -t8: stdin is empty, so socat half-closes at once; wait for the answer
# (its default 0.5 s lost races under load).
tcp_try() {
  local out
  out="$(timeout 20 runcon "$1" socat -T8 -t8 - "TCP4:127.0.0.1:$2,connect-timeout=8" </dev/null 2>/dev/null)" || true
  [ "$out" = "pong-$2" ]
}

# stop_all: end every process this scenario started (by pid).
stop_all() {
  local p
  for p in "${LG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${LG_PIDS[@]}"; do
    timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true
  done
  LG_PIDS=()
}

# ------------------------------------------------------------- labelgate ---
LG_PID=""
# lg_start POLICY_TOML AUDIT_FILE [EXTRA ARGS]: run labelgate on queue 0 and
# wait until it is bound to the queue.
lg_start() {
  local pol="$1" audit="$2"; shift 2
  [ -x "${LG_BIN:-}" ] || { log "no labelgate binary"; return 1; }
  "$LG_BIN" run --policy "$pol" --queue 0 --audit "$audit" "$@" \
    >"$LG_WORK/$SCENARIO-labelgate.out" 2>"$LG_WORK/$SCENARIO-labelgate.err" &
  LG_PID=$!
  echo "$LG_PID" >"$LG_WORK/$SCENARIO-labelgate.pid"   # for the runner's clean-up
  local i
  for ((i = 0; i < 150; i++)); do   # 30 s
    awk '$1 == 0 {found=1} END {exit !found}' /proc/net/netfilter/nfnetlink_queue 2>/dev/null && return 0
    kill -0 "$LG_PID" 2>/dev/null || break
    sleep 0.2
  done
  log "labelgate did not bind queue 0; stderr:"; cat "$LG_WORK/$SCENARIO-labelgate.err"
  return 1
}

# lg_stop: SIGTERM labelgate, wait up to 5 s; returns its exit status.
lg_stop() {
  [ -n "$LG_PID" ] || return 0
  kill -TERM "$LG_PID" 2>/dev/null || true
  local rc=0 i
  for ((i = 0; i < 25; i++)); do kill -0 "$LG_PID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$LG_PID" 2>/dev/null; then
    log "labelgate ignored SIGTERM for 5 s"; kill -9 "$LG_PID"; rc=137
  fi
  wait "$LG_PID" || rc=$?
  LG_PID=""
  log "labelgate stderr (tail):"; tail -n 15 "$LG_WORK/$SCENARIO-labelgate.err" | sed 's/^/    /'
  return "$rc"
}

# lg_policy_check FILE: `labelgate check` must accept the scenario's policy.
lg_policy_check() { "$LG_BIN" check "$1" >"$LG_WORK/$SCENARIO-check.log" 2>&1; }

# lg_require: fail the scenario at once when there is no labelgate binary.
lg_require() {
  [ -x "${LG_BIN:-}" ] && return 0
  fail labelgate-binary "no labelgate binary given to the VM run"
  scenario_end || true
  exit 1
}

# queue_out/queue_in PORT[,PORT...]: divert client->server TCP on lo to queue 0.
queue_out() { iptables -A OUTPUT -o lo -p tcp -m multiport --dports "$1" -j NFQUEUE --queue-num 0; }
queue_in() { iptables -A INPUT -i lo -p tcp -m multiport --dports "$1" -j NFQUEUE --queue-num 0; }

# avc_lines FILE OUTCOME PERM SCTX TCTX: the audit lines of FILE recording
# OUTCOME (denied|granted) { PERM } from SCTX to TCTX.
avc_lines() {
  grep -E "(avc|labelgate): +$2 +\{ $3 \}" "$1" 2>/dev/null \
    | grep -F "scontext=$4 " | grep -F "tcontext=$5 " || true
}

# check_avc NAME FILE OUTCOME PERM SCTX TCTX [REGEX]: such a line exists (and
# matches REGEX, e.g. "dest=5432 .*permissive=0").
check_avc() {
  local n="$1" f="$2" lines; shift 2
  lines="$(avc_lines "$f" "$1" "$2" "$3" "$4" | grep -E -- "${5:-.}" || true)"
  if [ -n "$lines" ]; then pass "$n"
  else fail "$n" "no '$1 { $2 }' line $3 -> $4 matching /${5:-.}/ in $f ($(audit_digest "$f"))"; fi
}

# audit_digest FILE: a one-line summary of what FILE does hold.
audit_digest() {
  [ -s "$1" ] || { echo "file empty"; return; }
  echo "$(wc -l <"$1") lines; distinct: $(grep -oE '(avc|labelgate): +[a-z]+ +\{ [a-z]+ \}|scontext=[^ ]+ tcontext=[^ ]+|permissive=[01] rule=[^ ]+' "$1" \
    | tr -s ' ' | sort | uniq -c | sort -rn | head -n 6 | awk '{c=$1; $1=""; printf "%s x%s;", $0, c}')"
}
check_no_avc() {
  local n="$1" f="$2" lines; shift 2
  lines="$(avc_lines "$f" "$1" "$2" "$3" "$4" | grep -E -- "${5:-.}" || true)"
  if [ -z "$lines" ]; then pass "$n"
  else fail "$n" "unexpected: $(head -n1 <<<"$lines")"; fi
}

# write_policy NAME <<TOML: store a policy for this scenario, echo its path.
write_policy() {
  local f="$LG_WORK/$SCENARIO-$1.toml"
  cat >"$f"
  echo "$f"
}

# --------------------------------------------------------------- asserts ---
SCENARIO_FAILS=0
scenario_begin() {
  SCENARIO="$1"; SCENARIO_FAILS=0; LG_PIDS=(); LG_PID=""
  # A command failing at the scenario's top level (set -e) is recorded, and
  # whatever the scenario started is stopped however it ends.
  trap 'fail aborted "line $LINENO: $BASH_COMMAND"' ERR
  trap '[ -z "$LG_PID" ] || kill "$LG_PID" 2>/dev/null; stop_all' EXIT
  log "=== begin"
}

# pass/fail NAME [DETAIL]: record one check.
pass() { echo "PASS $SCENARIO $1" >>"$LG_RESULTS"; log "PASS $1"; }
fail() {
  echo "FAIL $SCENARIO $1${2:+ :: $2}" >>"$LG_RESULTS"; log "FAIL $1${2:+ :: $2}"
  SCENARIO_FAILS=$((SCENARIO_FAILS + 1))
}

# check NAME CMD...: PASS if CMD succeeds.   check_not NAME CMD...: if it fails.
check() { local n="$1"; shift; if "$@"; then pass "$n"; else fail "$n" "command failed: $*"; fi; }
check_not() { local n="$1"; shift; if "$@"; then fail "$n" "command succeeded: $*"; else pass "$n"; fi; }

# check_grep NAME FILE REGEX: PASS if an extended regex matches a line of FILE.
check_grep() {
  if grep -Eq -- "$3" "$2" 2>/dev/null; then pass "$1"
  else fail "$1" "no line of $2 matches /$3/"; fi
}
check_no_grep() {
  if grep -Eq -- "$3" "$2" 2>/dev/null; then fail "$1" "$2 has: $(grep -Em1 -- "$3" "$2")"
  else pass "$1"; fi
}

# scenario_end: stop everything, reset the network; exit 1 if a check failed.
scenario_end() {
  trap - ERR   # the verdict below may be non-zero; that is not an abort
  [ -z "$LG_PID" ] || lg_stop || true
  stop_all
  net_reset
  log "=== end: $SCENARIO_FAILS failed check(s)"
  [ "$SCENARIO_FAILS" -eq 0 ]
}
