#!/bin/bash
# (4) One permissive source domain (permissive_domains) while others are
# enforced, and one permissive rule.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin permissive-domains
lg_require

AUDIT="$LG_WORK/permissive-domains-audit.log"
POL="$(write_policy policy <<'TOML'
mode = "enforcing"
default = "drop"
permissive_domains = ["intruder_t"]
[[rule]]
name = "web-to-db"
hook = "output"
source = "httpd_t"
proto = "tcp"
dport = 5432
verdict = "accept"
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

check permissive-domain-passes tcp_try "$CTX_INTRUDER" 5432
check permissive-rule-passes tcp_try "$CTX_HTTPD" 8081
check_not enforced-domain-refused tcp_try "$CTX_HTTPD" 8080
check allowed-still-allowed tcp_try "$CTX_HTTPD" 5432
lg_stop || fail labelgate-exit "non-zero exit on SIGTERM"

check_avc avc-permissive-domain "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=5432 .*permissive=1"
check_avc avc-permissive-rule "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG" "dest=8081 .*permissive=1 .*rule=trial-web-8081"
check_avc avc-enforced "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG" "dest=8080 .*permissive=0 .*rule=default"
check_no_avc avc-no-enforced-intruder "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "permissive=0"

scenario_end
