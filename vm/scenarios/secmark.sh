#!/bin/bash
# (5) Secmark: mangle OUTPUT labels packets (SECMARK), filter OUTPUT queues
# them; rules on `secmark` (NFQA_SECCTX) decide, whatever the sender's domain.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin secmark
lg_require

PKT_PG="system_u:object_r:postgresql_packet_t:s0"
PKT_HTTP="system_u:object_r:http_packet_t:s0"
AUDIT="$LG_WORK/secmark-audit.log"
POL="$(write_policy policy <<'TOML'
mode = "enforcing"
default = "drop"
[[rule]]
name = "db-packets"
hook = "output"
secmark = "postgresql_packet_t"
proto = "tcp"
verdict = "accept"
[[rule]]
name = "no-http-packets"
hook = "output"
secmark = "http_packet_t"
verdict = "drop"
TOML
)"
check policy-check lg_policy_check "$POL"
for p in 5432 8080 5433; do tcp_echo_server "$CTX_PG" "$p"; done

iptables -t mangle -A OUTPUT -o lo -p tcp --dport 5432 -j SECMARK --selctx "$PKT_PG"
iptables -t mangle -A OUTPUT -o lo -p tcp --dport 8080 -j SECMARK --selctx "$PKT_HTTP"
# 5433: queued but never labelled -> no NFQA_SECCTX -> default.
queue_out 5432,5433,8080
lg_start "$POL" "$AUDIT"

# The secmark rule admits even intruder_t: the packet label decides.
expect_reached db-packet-intruder-passes "$CTX_INTRUDER" 5432
expect_reached db-packet-httpd-passes "$CTX_HTTPD" 5432
expect_refused http-packet-refused "$CTX_HTTPD" 8080 "$CTX_CONTROL" 5432
expect_refused unlabelled-refused "$CTX_HTTPD" 5433 "$CTX_CONTROL" 5432
lg_stop || fail labelgate-exit "non-zero exit on SIGTERM"

check_avc avc-http-packet "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG" "dest=8080 .*rule=no-http-packets"
check_grep avc-secmark-field "$AUDIT" "dest=8080 .*$PKT_HTTP"
check_avc avc-unlabelled-default "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG" "dest=5433 .*rule=default"
check_no_avc avc-no-db-denial "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=5432 "

scenario_end
