#!/bin/bash
# verdict = "selinux": the loaded SELinux policy decides tcp/5432, through
# the rules of vm/policy/labelgate-flow-rules.cil (class labelgate_flow):
#  - httpd_t reaches postgresql_t (allow ... send recv);
#  - intruder_t is refused, and reaches the same server on 8080, which the
#    table does not send to the policy, while httpd_t reaches 5432 (the two
#    positive controls of expect_refused, in the same run);
#  - unconfined_t (typepermissive) is let through, recorded permissive=1;
#  - turning the boolean lg_intruder_db on lets intruder_t through, off
#    refuses it again, and loading a policy with one more allow lets it
#    through again: all without restarting labelgate (same pid).
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin selinux-verdict
lg_require

CTX_UNCONF="system_u:system_r:unconfined_t:s0"
BOOL=/sys/fs/selinux/booleans/lg_intruder_db
AUDIT="$LG_WORK/selinux-verdict-audit.log"
# Whatever happens, leave the base policy and the boolean as they were.
restore_policy() { cat "$LG_POLICY" > /sys/fs/selinux/load 2>/dev/null || true; }
trap 'restore_policy; [ -z "$LG_PID" ] || kill "$LG_PID" 2>/dev/null; stop_all' EXIT
set_bool() { echo "$1" > "$BOOL" && echo 1 > /sys/fs/selinux/commit_pending_bools; }

# Written as is, without write_policy's harness rules: those admit
# unconfined_t, the domain this scenario shows permissive through the
# loaded policy. The refusals' controls are httpd_t and port 8080, which
# this policy admits.
POL="$LG_WORK/$SCENARIO-policy.toml"
cat >"$POL" <<'TOML'
mode = "enforcing"
default = "accept"
[[rule]]
name = "db-by-selinux"
proto = "tcp"
dport = 5432
verdict = "selinux"
TOML
check policy-check lg_policy_check "$POL"
check bool-exists test -e "$BOOL"

tcp_echo_server "$CTX_PG" 5432
tcp_echo_server "$CTX_PG" 8080
expect_reached baseline-intruder "$CTX_INTRUDER" 5432

queue_out 5432,8080
queue_in 5432,8080
lg_start "$POL" "$AUDIT"
pid0="$LG_PID"

expect_reached httpd-to-db "$CTX_HTTPD" 5432
expect_refused intruder-to-db "$CTX_INTRUDER" 5432 "$CTX_HTTPD" 8080
expect_reached permissive-domain-to-db "$CTX_UNCONF" 5432

# The boolean on: the conditional allow applies at once.
check bool-on set_bool 1
expect_reached intruder-to-db-bool-on "$CTX_INTRUDER" 5432
# Off again: refused again (the cache did not keep the old answer).
check bool-off set_bool 0
expect_refused intruder-to-db-bool-off "$CTX_INTRUDER" 5432 "$CTX_HTTPD" 8080
# A policy load with one more allow (labelgate-flow-reload.cil).
check policy-reload sh -c "cat '$LG_WORK/policy-flow-reload.33' > /sys/fs/selinux/load"
expect_reached intruder-to-db-reloaded "$CTX_INTRUDER" 5432
expect_reached httpd-to-db-reloaded "$CTX_HTTPD" 5432
# Back to the base policy: refused again.
check policy-restore sh -c "cat '$LG_POLICY' > /sys/fs/selinux/load"
expect_refused intruder-to-db-restored "$CTX_INTRUDER" 5432 "$CTX_HTTPD" 8080
check same-labelgate kill -0 "$pid0"

# explain asks the loaded policy and names the rule that asked.
"$LG_BIN" explain --policy "$POL" --source httpd_t --dest postgresql_t --dport 5432 >"$LG_WORK/selinux-verdict-explain-httpd.txt" 2>&1 || true
"$LG_BIN" explain --policy "$POL" --source intruder_t --dest postgresql_t --dport 5432 >"$LG_WORK/selinux-verdict-explain-intruder.txt" 2>&1 || true
check_grep explain-allowed "$LG_WORK/selinux-verdict-explain-httpd.txt" 'db-by-selinux asks the loaded SELinux policy: allowed \{ send \}'
check_grep explain-allowed-verdict "$LG_WORK/selinux-verdict-explain-httpd.txt" '^verdict: accept'
check_grep explain-denied "$LG_WORK/selinux-verdict-explain-intruder.txt" 'db-by-selinux asks the loaded SELinux policy: denied \{ send \}'
check_grep explain-denied-verdict "$LG_WORK/selinux-verdict-explain-intruder.txt" '^verdict: drop'

lg_stop || fail labelgate-exit "labelgate exited non-zero on SIGTERM"

check_avc avc-intruder "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=5432 .*tclass=labelgate_flow permissive=0 rule=db-by-selinux"
check_avc avc-permissive-domain "$AUDIT" denied send "$CTX_UNCONF" "$CTX_PG" "dest=5432 .*permissive=1 rule=db-by-selinux"
check_no_avc no-denial-httpd "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG" "dest=5432 "
check_no_avc no-denial-8080 "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=8080 "
# Three refusals of intruder_t (start, boolean off, policy restored), each
# a SYN and its resends: at least three records, and none in between.
n="$(grep -c "scontext=$CTX_INTRUDER .*dest=5432\|dest=5432 .*scontext=$CTX_INTRUDER" "$AUDIT" || true)"
if [ "${n:-0}" -ge 3 ]; then pass intruder-denials-counted; else fail intruder-denials-counted "only $n records"; fi
# audit2allow proposes exactly the rule that would let intruder_t through.
if command -v audit2allow >/dev/null; then
  grep "scontext=$CTX_INTRUDER" "$AUDIT" | audit2allow >"$LG_WORK/selinux-verdict-a2a.txt" 2>&1 || true
  check_grep audit2allow-rule "$LG_WORK/selinux-verdict-a2a.txt" 'allow intruder_t postgresql_t:labelgate_flow send;'
fi

scenario_end
