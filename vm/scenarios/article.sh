#!/bin/bash
# (1) The article: httpd_t may reach postgresql_t on tcp/5432 only.
#  - OUTPUT: allowed by the sender's (source) context;
#  - INPUT: allowed by the receiver's (dest) context;
#  - an intruder_t client with the same uid (root) is refused;
#  - httpd_t to a port the table does not allow is refused.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin article
lg_require

AUDIT="$LG_WORK/article-audit.log"
# The shared web-to-db policy (vm/policies/web-db.toml).
POL="$(web_db_policy policy)"
check policy-check lg_policy_check "$POL"

# Servers: the database on 5432 and 8080, an intruder_t listener on 5433.
tcp_echo_server "$CTX_PG" 5432
tcp_echo_server "$CTX_PG" 8080
tcp_echo_server "$CTX_INTRUDER" 5433
# Baseline without labelgate: everything connects.
expect_reached baseline-intruder "$CTX_INTRUDER" 5432

queue_out 5432,5433,8080
queue_in 5432,5433,8080
lg_start "$POL" "$AUDIT"

expect_reached httpd-to-db-5432 "$CTX_HTTPD" 5432
# Refusals, each with its controls: the refused client reaching an allowed
# target, an allowed client reaching the refused target. intruder_t may send
# nowhere but the harness control port; nobody but the control client may
# reach 8080 and the intruder_t listener.
expect_refused intruder-to-db-5432 "$CTX_INTRUDER" 5432 "$CTX_HTTPD" "$LG_CONTROL_PORT"
expect_refused httpd-to-db-8080 "$CTX_HTTPD" 8080 "$CTX_CONTROL" 5432
# Output passes (source httpd_t) but input refuses: dest is intruder_t.
expect_refused httpd-to-intruder-5433 "$CTX_HTTPD" 5433 "$CTX_CONTROL" 5432
# Still works after the denials (no state poisoning).
expect_reached httpd-to-db-again "$CTX_HTTPD" 5432

lg_stop || fail labelgate-exit "labelgate exited non-zero on SIGTERM"

check_avc avc-intruder-send "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=5432 .*permissive=0 .*rule=default"
check_avc avc-port-send "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG" "dest=8080 .*permissive=0"
check_avc avc-dest-recv "$AUDIT" denied recv "$CTX_HTTPD" "$CTX_INTRUDER" "dest=5433 .*permissive=0"
check_no_avc no-denial-allowed "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG" "dest=5432 "
check_no_avc no-denial-allowed-in "$AUDIT" denied recv "$CTX_HTTPD" "$CTX_PG" "dest=5432 "
check_avc avc-netif "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "netif=lo "
check_avc avc-proto "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "proto=(tcp|6) "
check_avc avc-addrs "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "addr=127\.0\.0\.1 .*addr=127\.0\.0\.1 "
# Every denial is a USER_AVC line (no stray output in the audit file).
check_no_grep only-avc-lines "$AUDIT" '^[^t]|^t[^y]'

scenario_end
