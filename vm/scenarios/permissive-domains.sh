#!/bin/bash
# (4) One permissive source domain (permissive_domains) while others are
# enforced, and one permissive rule.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin permissive-domains
lg_require

AUDIT="$LG_WORK/permissive-domains-audit.log"
# The shared web-to-db policy (vm/policies/web-db.toml), intruder_t made a
# permissive domain, and a permissive trial rule.
POL="$(web_db_policy policy permissive_domains='["intruder_t"]' --more-rules <<'TOML'
[[rule]]
name = "trial-web-8081"
hook = "output"
source = "httpd_t"
proto = "tcp"
dport = 8081
verdict = "drop"
permissive = true
TOML
)"
check policy-check lg_policy_check "$POL"
for p in 5432 8080 8081; do tcp_echo_server "$CTX_PG" "$p"; done
queue_out 5432,8080,8081
lg_start "$POL" "$AUDIT"

expect_reached permissive-domain-passes "$CTX_INTRUDER" 5432
expect_reached permissive-rule-passes "$CTX_HTTPD" 8081
expect_refused enforced-domain-refused "$CTX_HTTPD" 8080 "$CTX_CONTROL" 5432
expect_reached allowed-still-allowed "$CTX_HTTPD" 5432
lg_stop || fail labelgate-exit "non-zero exit on SIGTERM"

check_avc avc-permissive-domain "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=5432 .*permissive=1"
check_avc avc-permissive-rule "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG" "dest=8081 .*permissive=1 .*rule=trial-web-8081"
check_avc avc-enforced "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG" "dest=8080 .*permissive=0 .*rule=default"
check_no_avc avc-no-enforced-intruder "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "permissive=0"

scenario_end
