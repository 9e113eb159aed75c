#!/bin/bash
# (6) CIPSO: NetLabel labels loopback IPv4 with CIPSO (DOI 16, pass-through);
# an INPUT rule `peer_level = ">= s1:c0"` admits a client at s1:c0 and
# refuses one at s0.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin cipso
lg_require

netlabelctl cipsov4 add pass doi:16 tags:1
netlabelctl map del default
netlabelctl map add default address:0.0.0.0/0 protocol:unlbl
netlabelctl map add default address:127.0.0.1 protocol:cipsov4,16
log "netlabel map: $(netlabelctl -p map list | tr '\n' ' ')"

AUDIT="$LG_WORK/cipso-audit.log"
POL="$(write_policy policy <<'TOML'
mode = "enforcing"
default = "drop"
# labelgate reads CIPSO DOI 16 the way NetLabel's "pass" mapping does.
[[doi]]
doi = 16
map = "pass"
[[rule]]
name = "cleared-in"
hook = "input"
proto = "tcp"
dport = 5432
peer_level = ">= s1:c0"
verdict = "accept"
TOML
)"
check policy-check lg_policy_check "$POL"
# The server's range covers both clients' levels.
tcp_echo_server "system_u:system_r:postgresql_t:s0-s1:c0.c3" 5432
CLIENT_HI="system_u:system_r:httpd_t:s1:c0"
CLIENT_LO="system_u:system_r:httpd_t:s0"
# On the wire: the s1:c0 client's SYN carries CIPSO DOI 16, level 1, c0.
SNIFF="$(dirname "$0")/../guest/syn-ipopts.py"
READY="$LG_WORK/cipso-sniff.ready"; rm -f "$READY"
"$SNIFF" 5432 40 "$READY" >"$LG_WORK/cipso-ipopts.txt" 2>"$LG_WORK/cipso-sniff.err" &
sniff_pid=$!
for ((i = 0; i < 100; i++)); do [ -e "$READY" ] && break; sleep 0.2; done   # python start-up under TCG
expect_reached baseline-hi "$CLIENT_HI" 5432
wait "$sniff_pid" || true
opts="$(cat "$LG_WORK/cipso-ipopts.txt")"
log "IP options of the s1:c0 SYN: ${opts:-none}"
case "$opts" in
  860b000000100105000180*) pass cipso-option-on-wire ;;
  *) fail cipso-option-on-wire "IP options '${opts:-none}'" ;;
esac
expect_reached baseline-lo "$CLIENT_LO" 5432

queue_in 5432
lg_start "$POL" "$AUDIT"
expect_reached cleared-client-admitted "$CLIENT_HI" 5432
expect_refused s0-client-refused "$CLIENT_LO" 5432 "$CLIENT_HI" "$LG_CONTROL_PORT"
lg_stop || fail labelgate-exit "non-zero exit on SIGTERM"

check_grep avc-s0-denied "$AUDIT" "denied +\{ recv \}.*dest=5432 .*scontext=$CLIENT_LO .*rule=default"
check_grep avc-peer-label "$AUDIT" "denied +\{ recv \}.*peer=system_u:object_r:netlabel_peer_t:s0[ ']"
check_no_grep avc-no-hi-denial "$AUDIT" "scontext=$CLIENT_HI "

scenario_end
