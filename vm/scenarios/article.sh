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
POL="$(write_policy policy <<'TOML'
mode = "enforcing"
default = "drop"
[sets]
web = ["httpd_t"]

[[rule]]
name = "web-to-db-out"
hook = "output"
source = "@web"
proto = "tcp"
dport = "5432-5433"
verdict = "accept"

[[rule]]
name = "db-in"
hook = "input"
dest = "postgresql_t"
proto = "tcp"
dport = "5432-5433"
verdict = "accept"
TOML
)"
check policy-check lg_policy_check "$POL"

# Servers: the database on 5432 and 8080, an intruder_t listener on 5433.
tcp_echo_server "$CTX_PG" 5432
tcp_echo_server "$CTX_PG" 8080
tcp_echo_server "$CTX_INTRUDER" 5433
# Baseline without labelgate: everything connects.
check baseline-intruder tcp_try "$CTX_INTRUDER" 5432

queue_out 5432,5433,8080
queue_in 5432,5433,8080
lg_start "$POL" "$AUDIT"

check httpd-to-db-5432 tcp_try "$CTX_HTTPD" 5432
check_not intruder-to-db-5432 tcp_try "$CTX_INTRUDER" 5432
check_not httpd-to-db-8080 tcp_try "$CTX_HTTPD" 8080
# Output passes (source httpd_t) but input refuses: dest is intruder_t.
check_not httpd-to-intruder-5433 tcp_try "$CTX_HTTPD" 5433
# Still works after the denials (no state poisoning).
check httpd-to-db-again tcp_try "$CTX_HTTPD" 5432

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
