#!/bin/bash
# Smoke: the guest kernel, policy and netfilter pieces labelgate relies on,
# checked without labelgate itself.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin smoke

# The policy is loaded, the guest permissive, the harness in kernel_t.
check policy-loaded test -d /sys/fs/selinux/class/packet
check permissive test "$(selinux_enforcing)" = 0
self="$(tr -d '\0' </proc/self/attr/current)"
check harness-context test "$self" = "$LG_CTX_HARNESS"

# runcon into the test domains, with MLS levels.
check runcon-httpd test "$(run_in "$CTX_HTTPD" cat /proc/self/attr/current | tr -d '\0')" = "$CTX_HTTPD"
check runcon-level test "$(runcon -l s1:c0 -t httpd_t cat /proc/self/attr/current | tr -d '\0')" \
  = "system_u:system_r:httpd_t:s1:c0"

# A listener in postgresql_t: ss -Z and the socket fd's xattr agree.
start_in "$CTX_PG" "$LG_WORK/smoke-nc.log" nc -l 127.0.0.1 5999
pid=$LAST_PID
if wait_listen 5999; then pass listener-up; else fail listener-up; fi
ssline="$(ss -Htlnpz "sport = :5999")"   # -z: proc_ctx and sock_ctx
log "ss: $ssline"
case "$ssline" in
  *"proc_ctx=$CTX_PG"*) pass ss-proc-ctx ;; *) fail ss-proc-ctx "$ssline" ;; esac
case "$ssline" in
  *"sock_ctx=$CTX_PG"*) pass ss-sock-ctx ;; *) fail ss-sock-ctx "$ssline" ;; esac
sockctx=""
for fd in /proc/"$pid"/fd/*; do
  case "$(readlink "$fd")" in
    socket:*) sockctx="$(getfattr --absolute-names -n security.selinux --only-values "$fd" | tr -d '\0')"; break ;;
  esac
done
log "getfattr socket label: $sockctx"
check socket-xattr test "$sockctx" = "$CTX_PG"
check proc-attr test "$(tr -d '\0' </proc/"$pid"/attr/current)" = "$CTX_PG"

# sock_diag for TCP/UDP (labelgate finds sockets by address through it).
check sock-diag-modules sh -c "grep -q '^tcp_diag ' /proc/modules && grep -q '^udp_diag ' /proc/modules"

# Netfilter: NFQUEUE and SECMARK targets accepted, the queue proc file there.
check nfqueue-rule iptables -A OUTPUT -o lo -p tcp --dport 5999 -j NFQUEUE --queue-num 0 --queue-bypass
check secmark-rule iptables -t mangle -A OUTPUT -o lo -p tcp --dport 5999 \
  -j SECMARK --selctx system_u:object_r:postgresql_packet_t:s0
check nfqueue-procfile test -e /proc/net/netfilter/nfnetlink_queue
# With --queue-bypass and no reader, traffic still flows.
check bypass-traffic sh -c 'echo hi | timeout 5 nc -N 127.0.0.1 5999'
check nc-got-data grep -q hi "$LG_WORK/smoke-nc.log"
iptables -t mangle -F; iptables -F

# NetLabel CIPSO configuration is accepted (used by the cipso scenario).
check cipso-doi netlabelctl cipsov4 add pass doi:16 tags:1
check cipso-list sh -c 'netlabelctl cipsov4 list | grep -q 16'

# nftables' native queue expression (a module in this kernel).
check nft-queue sh -c 'nft add table inet lgsmoke && nft add chain inet lgsmoke out "{ type filter hook output priority 0; }" && nft add rule inet lgsmoke out tcp dport 5998 queue num 0 bypass && nft delete table inet lgsmoke'

# --- the harness itself (vm/guest/common.sh), no labelgate ---------------
# A refusal is credited only when it is real: each expect_refused below runs
# with its results written to a scratch file, and the checks read back what
# it recorded. Clients are uids; nobody (65534) is dropped on 5904 by the
# owner match, root is not.
SELF="$LG_WORK/smoke-selftest-results.txt"; : >"$SELF"
# selftest CMD...: run an expect_* in a subshell that records into $SELF.
selftest() { ( LG_RESULTS="$SELF"; "$@" ) >>"$LG_WORK/smoke-selftest.log" 2>&1 || true; }
# recorded VERDICT NAME: $SELF holds "VERDICT smoke NAME" (first field only).
recorded() { grep -qE "^$1 smoke $2( ::|$)" "$SELF"; }
LG_ECHO_DELAY=2 tcp_echo_server "$CTX_PG" 5901   # slower than socat's default 0.5 s
tcp_echo_server "$CTX_PG" 5902
tcp_echo_server "$CTX_PG" 5904
# 5905: the old server (no -t), as slow as under a loaded TCG: it closes
# before its echo is written.
start_in "$CTX_PG" "$LG_WORK/smoke-server-5905.log" \
  socat "TCP4-LISTEN:5905,bind=127.0.0.1,reuseaddr,fork" "SYSTEM:sleep 2; echo pong-5905"
wait_listen 5905 60
iptables -A OUTPUT -o lo -p tcp --dport 5904 -m owner --uid-owner 65534 -j DROP
# 5903: nothing listens.

expect_reached slow-server-answers uid=0 5901
selftest expect_refused real-refusal uid=65534 5904 uid=0 5902
check self-real-refusal-credited recorded PASS real-refusal
check self-real-refusal-controls sh -c "grep -q '^PASS smoke real-refusal.control-client' '$SELF' && grep -q '^PASS smoke real-refusal.control-target' '$SELF'"
selftest expect_refused no-listener uid=65534 5903 uid=0 5902
check self-reset-is-not-refusal recorded FAIL no-listener
selftest expect_refused old-server uid=65534 5905 uid=0 5902
check self-silent-server-is-not-refusal recorded FAIL old-server
selftest expect_refused bad-control uid=65534 5904 uid=0 5903
check self-failed-control-fails-refusal recorded FAIL bad-control
selftest expect_refused no-controls uid=65534 5904
check self-controls-required recorded FAIL no-controls
selftest expect_refused self-control uid=65534 5904 uid=65534 5902
check self-control-differs recorded FAIL self-control
p="probe_echo"   # via a variable: lint_probes reads only the text
selftest check_not guard "$p" uid=65534 5903
check self-check-not-refuses-probes recorded FAIL guard
iptables -F OUTPUT
log "harness self-test records: $(tr '\n' ';' <"$SELF")"

scenario_end
