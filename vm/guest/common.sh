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
# -t60: after the client half-closes (it sends nothing), keep the connection
# until `echo` has written and exited; socat's default 0.5 s gave up before
# a slow (TCG, busy host) fork+exec wrote, and an allowed flow read as
# refused. -T120 bounds a connection whose client went silent.
# LG_ECHO_DELAY=S makes the answer S seconds late (smoke's harness self-test).
tcp_echo_server() {
  start_in "$1" "$LG_WORK/$SCENARIO-server-$2.log" \
    socat -t60 -T120 "TCP4-LISTEN:$2,bind=127.0.0.1,reuseaddr,fork" \
    "SYSTEM:${LG_ECHO_DELAY:+sleep $LG_ECHO_DELAY; }echo pong-$2"
  wait_listen "$2" 60
}

# ------------------------------------------------------- probes (clients) ---
# A probe connects CLIENT to TARGET and answers with its status:
#   0 reached  the expected reply came back;
#   1 refused  no connection: the SYN went unanswered until the connect
#              timeout (what a drop by labelgate looks like);
#   2 broken   anything else (connected but no or a wrong reply, connection
#              reset because nothing listens, a tool failed): the harness,
#              not the policy, failed, and it is never read as a refusal.
# PROBE_DETAIL says what happened. Scenarios do not call probes themselves:
# expect_reached and expect_refused do (below).
#
# CLIENT: a SELinux context (the client runs under runcon), or uid=N (runs
# as uid and gid N, in the harness's own context).
# TARGET: PORT (a tcp_echo_server on 127.0.0.1, answering pong-PORT) or
# KIND:PORT, probed by a function probe_KIND CLIENT PORT (postgres.sh
# defines probe_psql).
LG_CONNECT_TIMEOUT="${LG_CONNECT_TIMEOUT:-15}"   # s; a dropped SYN is resent after 1, 3, 7 s
PROBE_DETAIL=""

# client_cmd CLIENT: set CLIENT_CMD to the command prefix that runs as CLIENT.
client_cmd() {
  case "$1" in
    uid=*) CLIENT_CMD=(setpriv --reuid="${1#uid=}" --regid="${1#uid=}" --clear-groups) ;;
    *) CLIENT_CMD=(runcon "$1") ;;
  esac
}

# probe_echo CLIENT PORT: socat reads until the server closes (-t: it waits
# for the reply after its own empty stdin ends; -T: inactivity bound); -d -d
# logs whether the connection was made, which tells refused from broken.
probe_echo() {
  client_cmd "$1"
  echo_connect 127.0.0.1 "$2"
}

# echo_connect ADDR PORT: the body of an echo probe: socat, run by
# CLIENT_CMD (set by the caller), to an echo server at ADDR:PORT.
echo_connect() {
  local err="$LG_WORK/$SCENARIO-probe.err" out
  out="$(timeout 90 "${CLIENT_CMD[@]}" socat -d -d -T30 -t30 - \
    "TCP4:$1:$2,connect-timeout=$LG_CONNECT_TIMEOUT" </dev/null 2>"$err")" || true
  if [ "$out" = "pong-$2" ]; then PROBE_DETAIL="got pong-$2"; return 0; fi
  if grep -q 'starting data transfer loop' "$err"; then
    PROBE_DETAIL="connected, but the reply was '${out:0:60}' (server failed?)"; return 2
  fi
  if grep -qE ' E .*(Connection timed out|Operation not permitted)' "$err"; then
    PROBE_DETAIL="no connection: $(grep -oE '(Connection timed out|Operation not permitted)' "$err" | head -n1)"
    return 1
  fi
  PROBE_DETAIL="socat failed: $(grep -E ' [EF] ' "$err" | head -n1 | cut -c1-160)${out:+ (out '${out:0:60}')}"
  return 2
}

# probe CLIENT TARGET: run the probe TARGET names (see above); logs it.
probe() {
  local kind=echo port="$2" rc=0 t0=$SECONDS
  case "$2" in *:*) kind="${2%%:*}"; port="${2##*:}" ;; esac
  if ! declare -F "probe_$kind" >/dev/null; then
    PROBE_DETAIL="harness: no function probe_$kind"; return 2
  fi
  "probe_$kind" "$1" "$port" || rc=$?
  local what=BROKEN
  [ "$rc" != 0 ] || what=reached
  [ "$rc" != 1 ] || what=refused
  log "probe $1 -> $2: $what in $((SECONDS - t0))s ($PROBE_DETAIL)"
  return "$rc"
}

# expect_reached NAME CLIENT TARGET: PASS if CLIENT reaches TARGET.
expect_reached() {
  local rc=0
  probe "$2" "$3" || rc=$?
  if [ "$rc" = 0 ]; then pass "$1"; else fail "$1" "$2 -> $3: $PROBE_DETAIL"; fi
}

# expect_refused NAME CLIENT TARGET OK_CLIENT OK_TARGET: CLIENT is refused at
# TARGET, with both positive controls in the same run, in this order:
#   NAME.control-client  CLIENT reaches OK_TARGET (the client works);
#   NAME                 CLIENT -> TARGET gets no connection (probe status 1);
#   NAME.control-target  OK_CLIENT reaches TARGET (the target works).
# NAME passes only if the refusal is a real "no connection" and both controls
# passed: a broken client or server never reads as a refusal. The controls
# are required arguments and must differ from the refused pair. Where the
# scenario's policy allows nothing else, use CTX_CONTROL (a client every
# policy admits) and LG_CONTROL_PORT (a target every policy admits); see
# write_policy.
expect_refused() {
  if [ $# -ne 5 ]; then
    fail "${1:-unnamed}" "harness: expect_refused NAME CLIENT TARGET OK_CLIENT OK_TARGET (got $# arguments): a refusal needs its two controls"
    return 0
  fi
  local n="$1" c="$2" t="$3" okc="$4" okt="$5" rc=0 ctl=ok refusal
  if [ "$okc" = "$c" ] || [ "$okt" = "$t" ]; then
    fail "$n" "harness: the controls ($okc -> $t, $c -> $okt) must differ from the refused pair ($c -> $t)"
    return 0
  fi
  case "$t $okt" in *"$LG_CONTROL_PORT"*) control_server ;; esac
  if probe "$c" "$okt"; then pass "$n.control-client"
  else fail "$n.control-client" "$c -> $okt: $PROBE_DETAIL"; ctl=failed; fi
  probe "$c" "$t" || rc=$?
  refusal="$PROBE_DETAIL"
  if probe "$okc" "$t"; then pass "$n.control-target"
  else fail "$n.control-target" "$okc -> $t: $PROBE_DETAIL"; ctl=failed; fi
  case "$rc/$ctl" in
    1/ok) pass "$n" ;;
    1/*) fail "$n" "$c -> $t refused, but a control failed: the refusal proves nothing" ;;
    0/*) fail "$n" "$c -> $t was reached ($refusal)" ;;
    *) fail "$n" "$c -> $t: harness broken, not a refusal: $refusal" ;;
  esac
}

# The harness controls every policy admits (write_policy adds the rules):
# a client in CTX_CONTROL reaches any target; any client reaches
# LG_CONTROL_PORT (served by control_server, queued by queue_out/queue_in).
CTX_CONTROL="system_u:system_r:unconfined_t:s0"
LG_CONTROL_PORT=7070
# control_rules HOOK...: the two harness rules for each HOOK (any: no hook key).
control_rules() {
  local h hk
  echo "# Harness controls (vm/guest/common.sh): the positive controls of the"
  echo "# refusal checks. Scenario clients never run in unconfined_t nor use port $LG_CONTROL_PORT."
  for h in "$@"; do
    hk=""; [ "$h" = any ] || hk="hook = \"$h\""
    printf '[[rule]]\nname = "harness-control-client-%s"\n%s\nsource = "unconfined_t"\nverdict = "accept"\n\n' "$h" "$hk"
    printf '[[rule]]\nname = "harness-control-port-%s"\n%s\nproto = "tcp"\ndport = %s\nverdict = "accept"\n\n' "$h" "$hk" "$LG_CONTROL_PORT"
  done
}

# control_server: start the control target once per scenario (its range
# covers every level the scenarios use).
control_server() {
  ss -Htln "sport = :$LG_CONTROL_PORT" | grep -q . && return 0
  tcp_echo_server "system_u:system_r:unconfined_t:s0-s1:c0.c3" "$LG_CONTROL_PORT"
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
  for ((i = 0; i < 300; i++)); do   # 60 s
    awk '$1 == 0 {found=1} END {exit !found}' /proc/net/netfilter/nfnetlink_queue 2>/dev/null && return 0
    kill -0 "$LG_PID" 2>/dev/null || break
    sleep 0.2
  done
  log "labelgate did not bind queue 0; stderr:"; cat "$LG_WORK/$SCENARIO-labelgate.err"
  return 1
}

# lg_stop: SIGTERM labelgate, wait up to 15 s; returns its exit status.
lg_stop() {
  [ -n "$LG_PID" ] || return 0
  kill -TERM "$LG_PID" 2>/dev/null || true
  local rc=0 i
  for ((i = 0; i < 75; i++)); do kill -0 "$LG_PID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$LG_PID" 2>/dev/null; then
    log "labelgate ignored SIGTERM for 15 s"; kill -9 "$LG_PID"; rc=137
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

# queue_out/queue_in PORT[,PORT...]: divert client->server TCP on lo to queue
# 0, with the control port (so the controls go through labelgate too).
queue_out() {
  iptables -A OUTPUT -o lo -p tcp -m multiport --dports "$1,$LG_CONTROL_PORT" -j NFQUEUE --queue-num 0
}
queue_in() {
  iptables -A INPUT -i lo -p tcp -m multiport --dports "$1,$LG_CONTROL_PORT" -j NFQUEUE --queue-num 0
}

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
# The harness control rules (control_rules) go before the first rule, so that
# the controls of expect_refused are admitted whatever the policy says; they
# name the hooks the policy's rules name and no other (`labelgate rules`
# queues the hooks a policy names).
write_policy() {
  local f="$LG_WORK/$SCENARIO-$1.toml" text hooks
  text="$(cat)"
  hooks="$(awk '
    function end() { if (inrule) used[hook == "" ? "any" : hook] = 1 }
    /^\[\[rule\]\]/ { end(); inrule = 1; hook = ""; next }
    /^\[/ { end(); inrule = 0; next }
    inrule && $1 == "hook" { hook = $3; gsub(/"/, "", hook) }
    END { end(); if (!length(used) || ("any" in used)) { print "any"; exit }
          for (h in used) print h }' <<<"$text" | sort)"
  # shellcheck disable=SC2086  # hooks is a word list
  printf '%s\n' "$text" | awk -v ctl="$(control_rules $hooks)" '
    !done && /^\[\[rule\]\]/ { print ctl; done = 1 }
    { print }
    END { if (!done) { print ""; print ctl } }' >"$f"
  echo "$f"
}

# web_db_policy NAME [KEY=VALUE...] [--rule-key RULE 'key = value']...
#               [--more-rules]: the shared web-to-db policy
# (vm/policies/web-db.toml) as this scenario's policy NAME; echoes its path.
# KEY=VALUE sets a top-level key (mode="permissive"); --rule-key adds a key
# to the rule named RULE; --more-rules appends the TOML rules read from stdin.
LG_WEB_DB="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/policies/web-db.toml"
web_db_policy() {
  local name="$1" top=() rk=() more=""; shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --rule-key) rk+=("$2" "$3"); shift 3 ;;
      --more-rules) more="$(cat)"; shift ;;
      *=*) top+=("$1"); shift ;;
      *) log "web_db_policy: bad argument $1"; return 1 ;;
    esac
  done
  {
    local kv k
    for kv in "${top[@]}"; do printf '%s = %s\n' "${kv%%=*}" "${kv#*=}"; done
    awk -v keys="$(for kv in "${top[@]}"; do printf '%s ' "${kv%%=*}"; done)" \
        -v rk="$(printf '%s\n' "${rk[@]}")" '
      BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) skip[k[i]] = 1
              m = split(rk, r, "\n"); for (i = 1; i + 1 <= m; i += 2) add[r[i]] = add[r[i]] r[i + 1] "\n" }
      /^\[/ { intable = 1 }
      !intable && $1 in skip && $2 == "=" { next }   # overridden above
      { print }
      /^name = "/ { nm = $3; gsub(/"/, "", nm); if (nm in add) printf "%s", add[nm] }' "$LG_WEB_DB"
    [ -z "$more" ] || printf '\n%s\n' "$more"
  } | write_policy "$name"
}

# ------------------------------------------------------------ containers ---
# "Containers" made of the kernel objects podman (netavark, crun, conmon)
# makes for a rootful container on a bridge network, without podman itself:
#   - a network namespace lgc-NAME with lo and eth0, eth0 the inner end of a
#     veth pair whose outer end, lgv-NAME, is a port of the bridge
#     CTR_BRIDGE in the guest's root namespace (the bridge holds the
#     network's first address: the containers' gateway, the host's address);
#   - a cgroup v2 directory named as podman's under systemd,
#     /machine.slice/libpod-ID.scope, ID 64 hex digits;
#   - its processes in that cgroup, in that namespace and in the container's
#     context: `runcon CTX ip netns exec lgc-NAME CMD` (runcon first:
#     `ip netns exec` remounts /sys in a new mount namespace, without
#     selinuxfs, where runcon could not work).
# Same-bridge traffic crosses iptables FORWARD only with br_netfilter loaded
# and net.bridge.bridge-nf-call-iptables=1: ctr_bridge sets both.
CTR_BRIDGE=lgbr0
CTR_NET=198.18.20      # a /24; .1 is the bridge
CTR_CGROOT=/sys/fs/cgroup
declare -A CTR_ADDR=() CTR_CTX=() CTR_ID=() CTR_CG=()
CTR_SVC_CG=()          # the host services' cgroups (svc_echo_server)

# ctr_bridge: br_netfilter on, the bridge up with CTR_NET.1 (target "host").
ctr_bridge() {
  modprobe br_netfilter
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  ip link add "$CTR_BRIDGE" type bridge
  ip addr add "$CTR_NET.1/24" dev "$CTR_BRIDGE"
  ip link set "$CTR_BRIDGE" up
  CTR_ADDR[host]="$CTR_NET.1"
}

# ctr_add NAME N LEVEL: container NAME at CTR_NET.N, its processes in
# system_u:system_r:container_t:LEVEL; its id is the SHA-256 of its name.
ctr_add() {
  local n="$1" ns="lgc-$1" id
  id="$(printf '%s' "$n" | sha256sum | cut -c1-64)"
  ip netns add "$ns"
  ip link add "lgv-$n" type veth peer name eth0 netns "$ns"
  ip link set "lgv-$n" master "$CTR_BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$CTR_NET.$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$CTR_NET.1"
  mkdir -p "$CTR_CGROOT/machine.slice/libpod-$id.scope"
  CTR_ADDR[$n]="$CTR_NET.$2"; CTR_CTX[$n]="system_u:system_r:container_t:$3"
  CTR_ID[$n]="$id"; CTR_CG[$n]="/machine.slice/libpod-$id.scope"
}

# cg_cmd CGROUP CTX: set CG_CMD to a command prefix that moves itself into
# cgroup CGROUP (a path under CTR_CGROOT, created if missing) and execs the
# rest under `runcon CTX`; every step execs, so a background job's $! is
# the final command's pid.
cg_cmd() {
  mkdir -p "$CTR_CGROOT$1"
  # shellcheck disable=SC2016  # $$ and $@ are the inner shell's
  CG_CMD=(bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' cg_cmd "$CTR_CGROOT$1" runcon "$2")
}

# ctr_cmd NAME [CTX]: set CTR_CMD to the prefix running a command as a
# process of container NAME (its cgroup, its namespace, its context or CTX).
ctr_cmd() {
  cg_cmd "${CTR_CG[$1]}" "${2:-${CTR_CTX[$1]}}"
  CTR_CMD=("${CG_CMD[@]}" ip netns exec "lgc-$1")
}

# ctr_wait_listen NAME PORT: wait (60 s) until container NAME listens on PORT
# (NAME host: the root namespace).
ctr_wait_listen() {
  local i ns=()
  [ "$1" = host ] || ns=(ip netns exec "lgc-$1")
  for ((i = 0; i < 300; i++)); do
    "${ns[@]}" ss -Htln "sport = :$2" | grep -q . && return 0
    sleep 0.2
  done
  log "nothing listens on port $2 in $1"; return 1
}

# ctr_echo_server NAME PORT: an echo server (as tcp_echo_server: answers
# pong-PORT) in container NAME on its address.
ctr_echo_server() {
  ctr_cmd "$1"
  "${CTR_CMD[@]}" socat -t60 -T120 "TCP4-LISTEN:$2,bind=${CTR_ADDR[$1]},reuseaddr,fork" \
    "SYSTEM:echo pong-$2" >"$LG_WORK/$SCENARIO-$1-server-$2.log" 2>&1 &
  LAST_PID=$!; LG_PIDS+=("$LAST_PID")
  ctr_wait_listen "$1" "$2"
}

# svc_echo_server UNIT CTX PORT: a host service: an echo server in the root
# namespace on the bridge address, in context CTX and in cgroup
# /system.slice/UNIT (where systemd would run it).
svc_echo_server() {
  cg_cmd "/system.slice/$1" "$2"
  CTR_SVC_CG+=("/system.slice/$1")
  "${CG_CMD[@]}" socat -t60 -T120 "TCP4-LISTEN:$3,bind=${CTR_ADDR[host]},reuseaddr,fork" \
    "SYSTEM:echo pong-$3" >"$LG_WORK/$SCENARIO-$1-server-$3.log" 2>&1 &
  LAST_PID=$!; LG_PIDS+=("$LAST_PID")
  ctr_wait_listen host "$3"
}

# probe_ctr CLIENT NAME-PORT: echo probe (target ctr:NAME-PORT) from a
# container. CLIENT is NAME (a process of container NAME) or NAME+CTX (in
# NAME's cgroup and namespace, in context CTX); the target is the echo
# server on PORT of container NAME, or of the host (NAME host).
probe_ctr() {
  local c="${1%%+*}" ctx="" t="${2%-*}" port="${2##*-}"
  case "$1" in *+*) ctx="${1#*+}" ;; esac
  if [ -z "${CTR_CG[$c]:-}" ] || [ -z "${CTR_ADDR[$t]:-}" ]; then
    PROBE_DETAIL="harness: unknown container in $1 -> $2"; return 2
  fi
  ctr_cmd "$c" "$ctx"
  CLIENT_CMD=("${CTR_CMD[@]}")
  echo_connect "${CTR_ADDR[$t]}" "$port"
}

# ctr_teardown: kill what runs in the containers' namespaces, delete the
# namespaces, the bridge and the cgroups the scenario made.
ctr_teardown() {
  local n p i cg
  for n in "${!CTR_CG[@]}"; do
    for p in $(ip netns pids "lgc-$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "lgc-$n" 2>/dev/null || true
  done
  ip link del "$CTR_BRIDGE" 2>/dev/null || true
  for cg in "${CTR_CG[@]}" /machine.slice "${CTR_SVC_CG[@]}" /system.slice; do
    [ -d "$CTR_CGROOT$cg" ] || continue
    for ((i = 0; i < 50; i++)); do rmdir "$CTR_CGROOT$cg" 2>/dev/null && break; sleep 0.1; done
  done
  CTR_ADDR=(); CTR_CTX=(); CTR_ID=(); CTR_CG=(); CTR_SVC_CG=()
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
  lint_probes "$0"
}

# lint_probes SCRIPT: a scenario calls probes only through expect_reached and
# expect_refused (which run a refusal's controls); a direct call, outside a
# comment or a probe_KIND definition, fails the scenario.
lint_probes() {
  local hits
  hits="$(grep -nE '(^|[^_[:alnum:]])probe(_[[:alnum:]]+)?([[:space:]]|$)' "$1" \
    | grep -vE '^[0-9]+:[[:space:]]*#' | grep -vE 'probe_[[:alnum:]]+\(\)' || true)"
  [ -z "$hits" ] || fail harness-lint "$1 calls a probe directly (use expect_reached/expect_refused): $(head -n1 <<<"$hits")"
}

# pass/fail NAME [DETAIL]: record one check.
pass() { echo "PASS $SCENARIO $1" >>"$LG_RESULTS"; log "PASS $1"; }
fail() {
  echo "FAIL $SCENARIO $1${2:+ :: $2}" >>"$LG_RESULTS"; log "FAIL $1${2:+ :: $2}"
  SCENARIO_FAILS=$((SCENARIO_FAILS + 1))
}

# check NAME CMD...: PASS if CMD succeeds.   check_not NAME CMD...: if it fails.
# Neither takes a probe: a failing probe is not a refusal (expect_refused).
check() { local n="$1"; shift; no_probe "$n" "$1" || return 0; if "$@"; then pass "$n"; else fail "$n" "command failed: $*"; fi; }
check_not() { local n="$1"; shift; no_probe "$n" "$1" || return 0; if "$@"; then fail "$n" "command succeeded: $*"; else pass "$n"; fi; }
no_probe() {
  case "$2" in
    probe|probe_*) fail "$1" "harness: use expect_reached/expect_refused, not check/check_not, with $2"; return 1 ;;
  esac
}

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
