#!/bin/bash
# Containers with SELinux labels (issue 17). Three containers made of the
# kernel objects podman makes for a rootful container on a bridge network
# (see "containers" in common.sh; podman itself is not run: it needs an
# image, and is too slow under TCG), their processes in container_t with
# MCS categories, on one bridge with br_netfilter:
#   web     198.18.20.2  container_t:s0:c100,c200  echo on 8080
#   api     198.18.20.3  container_t:s0:c300,c400  echo on 8080 and 9090
#   worker  198.18.20.4  container_t:s0:c300,c400  echo on 9090 (api's
#           categories, as podman gives the containers of one pod)
# and a host service in postgresql_t, cgroup /system.slice/postgresql.service,
# on the bridge address 198.18.20.1:5432. labelgate run --other-netns,
# enforcing, the queue rules `labelgate rules --install` writes for the policy
# (FORWARD and INPUT), and the policy of examples/containers.toml: same
# categories pass (mls = "equal"); web's categories reach api's on 8080 only;
# the host service only from web's container id. The decisions follow the
# sockets' contexts, not the namespaces: a process in web's namespace and
# cgroup with api's categories is let through where web is refused. JSON
# records carry the contexts with their categories and the pid, exe, cgroup
# and container of both ends, as `ss -tanpz` inside each namespace shows
# them, and the network namespace (inode) each end was found in.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin containers
lg_require
trap '[ -z "$LG_PID" ] || kill "$LG_PID" 2>/dev/null; stop_all; ctr_teardown' EXIT

LVL_WEB="s0:c100,c200"
LVL_API="s0:c300,c400"
AUDIT="$LG_WORK/containers-audit.json"
# ctr_ss NAME ARGS: ss inside container NAME's network namespace. nsenter,
# not `ip netns exec`: that one remounts /sys without selinuxfs, and ss -z
# then says "SELinux is not enabled".
ctr_ss() { local n="$1"; shift; nsenter --net="/run/netns/lgc-$n" ss "$@"; }

if [ "$(stat -fc %T "$CTR_CGROOT")" = cgroup2fs ]; then pass cgroup-v2
else fail cgroup-v2 "$CTR_CGROOT is not cgroup v2: the container ids would not be seen"; fi
ctr_bridge
ctr_add web 2 "$LVL_WEB"
ctr_add api 3 "$LVL_API"
ctr_add worker 4 "$LVL_API"
check br-netfilter-on grep -qx 1 /proc/sys/net/bridge/bridge-nf-call-iptables
for ep in web-8080 api-8080 api-9090 worker-9090; do
  ctr_echo_server "${ep%-*}" "${ep#*-}"
done
svc_echo_server postgresql.service "$CTX_PG" 5432
log "containers: $(for n in web api worker; do printf '%s %s %s %s; ' "$n" "${CTR_ADDR[$n]}" "${CTR_CTX[$n]}" "${CTR_CG[$n]}"; done)"

POL="$(write_policy policy <<TOML
mode = "enforcing"
default = "drop"

[[scope]]
hook = "forward"
saddr = "$CTR_NET.0/24"
daddr = "$CTR_NET.0/24"

[[scope]]
hook = "input"
proto = "tcp"
dport = 5432
saddr = "$CTR_NET.0/24"

[[rule]]
name = "web-to-db"
hook = "input"
source = "container_t"
source_container = "${CTR_ID[web]:0:12}"
dest = "postgresql_t"
dest_unit = "postgresql.service"
proto = "tcp"
dport = 5432
audit = true
verdict = "accept"

[[rule]]
name = "web-to-api-8080"
hook = "forward"
source = "container_t"
dest = "container_t"
source_level = "= $LVL_WEB"
dest_level = "= $LVL_API"
proto = "tcp"
dport = 8080
audit = true
verdict = "accept"

[[rule]]
name = "same-categories"
hook = "forward"
source = "container_t"
dest = "container_t"
mls = "equal"
audit = true
verdict = "accept"
TOML
)"
check policy-check lg_policy_check "$POL"
check_grep policy-check-types "$LG_WORK/containers-check.log" "^all types are known to the loaded SELinux policy$"

# The queue rules, as an administrator installs them (enforcing: no bypass).
RULESET="$LG_WORK/containers-ruleset.txt"
check rules-install "$LG_BIN" rules --policy "$POL" --family ipv4 --install
iptables -t security -S >"$RULESET" 2>&1 || true
check_grep rules-forward "$RULESET" "^-A LABELGATE_FWD -s $CTR_NET.0/24 -d $CTR_NET.0/24 .*NFQUEUE --queue-num 0$"
check_grep rules-input "$RULESET" "^-A LABELGATE_IN -s $CTR_NET.0/24 -p tcp .*--dport 5432 .*NFQUEUE --queue-num 0$"

lg_start "$POL" "$AUDIT" --other-netns --mode enforcing --audit-format json

# Same categories: api and worker, both ways.
expect_reached same-categories-worker-to-api worker ctr:api-9090
expect_reached same-categories-api-to-worker api ctr:worker-9090
# The named pair: web's categories to api's on 8080, not on 9090.
expect_reached pair-web-to-api-8080 web ctr:api-8080
expect_refused pair-web-to-api-9090 web ctr:api-9090 worker ctr:api-8080
# Cross categories the other way: api to web (the harness's unconfined_t
# client, in worker's namespace, shows web's server answers through FORWARD).
expect_refused cross-api-to-web-8080 api ctr:web-8080 "worker+$CTX_CONTROL" ctr:worker-9090
# The label decides, not the namespace: in web's namespace and cgroup with
# api's categories, reached where web is refused; in worker's with web's
# categories, refused where worker is reached and reached on 8080.
expect_reached label-web-ns-api-categories "web+system_u:system_r:container_t:$LVL_API" ctr:api-9090
expect_refused label-worker-ns-web-categories "worker+system_u:system_r:container_t:$LVL_WEB" \
  ctr:api-9090 worker ctr:api-8080
# The host service (INPUT): only web's container id.
expect_reached web-to-db web ctr:host-5432
expect_refused api-to-db api ctr:host-5432 web ctr:worker-9090
# The id decides there, not the label: api's cgroup with web's categories.
expect_refused id-api-cgroup-web-categories "api+system_u:system_r:container_t:$LVL_WEB" \
  ctr:host-5432 web ctr:web-8080

# Records against ss: three clients in web that keep their sockets (the
# refused one stays in SYN-SENT while it retries).
HOLD='import socket,sys,time
s=socket.socket(); s.settimeout(40)
try:
    s.connect((sys.argv[1],int(sys.argv[2])))
except OSError: pass
time.sleep(45)'
declare -A HELD=()
for ep in api-8080 api-9090 host-5432; do
  ctr_cmd web
  "${CTR_CMD[@]}" /usr/bin/python3 -c "$HOLD" "${CTR_ADDR[${ep%-*}]}" "${ep#*-}" \
    >"$LG_WORK/containers-held-$ep.log" 2>&1 &
  HELD[$ep]=$!; LG_PIDS+=("$!")
done
SS_WEB="$LG_WORK/containers-ss-web.txt"
for ((i = 0; i < 150; i++)); do   # 45 s: python starts slowly under TCG
  ctr_ss web -Htanpz >"$SS_WEB" 2>&1 || true
  ok=1
  for ep in "${!HELD[@]}"; do grep -qF "pid=${HELD[$ep]}," "$SS_WEB" || ok=0; done
  [ "$ok" = 0 ] || break
  sleep 0.3
done
ctr_ss api -Htlnpz >"$LG_WORK/containers-ss-api.txt" 2>&1 || true
ss -Htlnpz "sport = :5432" >"$LG_WORK/containers-ss-host.txt" 2>&1 || true
declare -A EXE=()
for ep in "${!HELD[@]}"; do EXE[$ep]="$(readlink "/proc/${HELD[$ep]}/exe" || true)"; done
lg_stop || fail labelgate-exit "non-zero exit on SIGTERM"
ERR="$LG_WORK/containers-labelgate.err"
for r in web-to-db web-to-api-8080 same-categories; do
  check_grep "hits-$r" "$ERR" "labelgate rule $r: hits=[1-9]"
done
check_grep counters "$ERR" "^labelgate counters: packets=[1-9][0-9]* accepted=[1-9][0-9]* dropped=[1-9][0-9]* .*verdict_errors=0 "
check_grep resolver-netns "$ERR" "^labelgate resolver: .* netns_lookups=[1-9][0-9]* netns_ambiguous=0$"

# ss_ctx FILE PID FIELD: the first socket of PID in an ss -tanpz snapshot:
# FIELD local (address:port), proc_ctx or sock_ctx (contexts hold commas:
# proc_ctx ends at ",fd=", sock_ctx at ")").
ss_of() {
  local line
  line="$(grep -F "pid=$2," "$1" | head -n1 || true)"
  case "$3" in
    local) awk '{print $4}' <<<"$line" ;;
    proc_ctx) sed -nE 's/.*pid='"$2"',proc_ctx=([^)]*),fd=.*/\1/p' <<<"$line" ;;
    sock_ctx) sed -nE 's/.*pid='"$2"',[^)]*sock_ctx=([^)]*)\).*/\1/p' <<<"$line" ;;
  esac
}
# listener FILE PORT: pid of the listener on PORT in an ss -tlnpz snapshot.
listener() { { awk -v p=":$2" '$4 ~ p"$"' "$1" | grep -oE 'pid=[0-9]+' || true; } | head -n1 | cut -d= -f2; }
# record SPORT: the first JSON record of source port SPORT as KEY=VALUE lines
# (s*/t* for the source and destination processes).
record() {
  python3 - "$AUDIT" "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("src") != int(sys.argv[2]):
        continue
    for k in ("outcome", "rule", "hook", "scontext", "tcontext", "slabel", "tlabel"):
        print(f"{k}={r.get(k)}")
    for pre, p in (("s", r.get("process") or {}), ("t", r.get("dest_process") or {})):
        for k in ("pid", "exe", "cgroup", "container", "unit", "netns"):
            print(f"{pre}{k}={p.get(k)}")
    break
PY
}

# compare EP OUTCOME RULE HOOK DEST_SS DEST_NAME: the record of web's held
# client to EP against ss in web's namespace and in the destination's.
compare() {
  local ep="$1" pid="${HELD[$1]}" tag="rec-${1}" rec sport sock proc tpid tsock
  local dsnap="$5" dest="$6"
  sport="$(ss_of "$SS_WEB" "$pid" local)"; sport="${sport##*:}"
  sock="$(ss_of "$SS_WEB" "$pid" sock_ctx)"; proc="$(ss_of "$SS_WEB" "$pid" proc_ctx)"
  tpid="$(listener "$dsnap" "${ep#*-}")"
  tsock="$(ss_of "$dsnap" "$tpid" sock_ctx)"
  log "$tag: ss web pid=$pid sport=$sport proc_ctx=$proc sock_ctx=$sock; dest listener pid=$tpid sock_ctx=$tsock"
  if [ -z "$sport" ] || [ -z "$tpid" ]; then
    fail "$tag-ss" "ss shows no socket of pid $pid ($SS_WEB) or no listener on ${ep#*-} ($dsnap)"; return
  fi
  rec="$(record "$sport")"
  log "$tag: $(tr '\n' ' ' <<<"$rec")"
  [ -n "$rec" ] || { fail "$tag" "no record with src=$sport in $AUDIT"; return; }
  want() {   # want NAME KEY VALUE
    local got; got="$(sed -n "s/^$2=//p" <<<"$rec")"
    if [ "$got" = "$3" ]; then pass "$tag-$1"; else fail "$tag-$1" "record $2=$got, expected $3"; fi
  }
  want outcome outcome "$2"; want rule rule "$3"; want hook hook "$4"
  want scontext scontext "$sock"
  want scontext-categories scontext "${CTR_CTX[web]}"
  want proc-ctx scontext "$proc"
  want slabel slabel socket
  want spid spid "$pid"; want sexe sexe "${EXE[$ep]}"
  want scgroup scgroup "${CTR_CG[web]}"; want scontainer scontainer "${CTR_ID[web]}"
  want snetns snetns "$(stat -Lc %i /run/netns/lgc-web)"
  want tcontext tcontext "$tsock"
  want tlabel tlabel socket
  want tpid tpid "$tpid"; want texe texe "$(readlink "/proc/$tpid/exe" || true)"
  if [ "$dest" = host ]; then
    want tcontext-type tcontext "$CTX_PG"
    want tunit tunit postgresql.service; want tcontainer tcontainer None
    want tnetns tnetns "$(stat -Lc %i /proc/self/ns/net)"
  else
    want tcontext-categories tcontext "${CTR_CTX[$dest]}"
    want tcgroup tcgroup "${CTR_CG[$dest]}"; want tcontainer tcontainer "${CTR_ID[$dest]}"
    want tnetns tnetns "$(stat -Lc %i "/run/netns/lgc-$dest")"
  fi
}
compare api-8080 granted web-to-api-8080 forward "$LG_WORK/containers-ss-api.txt" api
compare api-9090 denied default forward "$LG_WORK/containers-ss-api.txt" api
compare host-5432 granted web-to-db input "$LG_WORK/containers-ss-host.txt" host

check rules-remove "$LG_BIN" rules --policy "$POL" --remove
check_no_grep rules-removed <(iptables -t security -S 2>&1) "LABELGATE"
stop_all
ctr_teardown
check_not teardown-netns-gone ip netns exec lgc-web true
scenario_end
