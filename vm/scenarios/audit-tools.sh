#!/bin/bash
# (7) The audit file works with the stock audit tools:
#  - `ausearch -if FILE -m USER_AVC` finds every denial;
#  - `ausearch -i -if FILE` interprets addresses, ports and protocol;
#  - `audit2allow -i FILE -p POLICY` proposes `allow SRC TGT:labelgate_flow PERM;`.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin audit-tools
lg_require

AUDIT="$LG_WORK/audit-tools-audit.log"
POL="$(write_policy policy <<'TOML'
mode = "enforcing"
default = "drop"
[[rule]]
name = "web-out"
hook = "output"
source = "httpd_t"
proto = "tcp"
dport = [5432, 5433]
verdict = "accept"
[[rule]]
name = "db-in"
hook = "input"
dest = "postgresql_t"
proto = "tcp"
dport = [5432, 5433]
verdict = "accept"
TOML
)"
tcp_echo_server "$CTX_PG" 5432
tcp_echo_server "$CTX_INTRUDER" 5433
queue_out 5432,5433
queue_in 5432,5433
lg_start "$POL" "$AUDIT"
tcp_try "$CTX_INTRUDER" 5432 || true   # denied send: intruder_t -> postgresql_t
tcp_try "$CTX_HTTPD" 5433 || true      # denied recv: httpd_t -> intruder_t
lg_stop || fail labelgate-exit "non-zero exit on SIGTERM"

ndenied="$(grep -c 'avc: *denied' "$AUDIT" || true)"
log "audit file: $(wc -l <"$AUDIT") lines, $ndenied denials"
check has-denials test "${ndenied:-0}" -ge 2

# ausearch finds every denial.
ausearch -if "$AUDIT" -m USER_AVC >"$LG_WORK/audit-tools-ausearch.txt" 2>&1 || true
nfound="$(grep -c '^type=USER_AVC.*avc: *denied' "$LG_WORK/audit-tools-ausearch.txt" || true)"
check ausearch-finds-all test "${nfound:-0}" = "${ndenied:-x}"
check_grep ausearch-has-send "$LG_WORK/audit-tools-ausearch.txt" "denied +\{ send \}.*scontext=$CTX_INTRUDER"

# ausearch -i: interpreted fields read right.
I="$LG_WORK/audit-tools-ausearch-i.txt"
ausearch -i -if "$AUDIT" >"$I" 2>&1 || true
check_grep interp-proto-tcp "$I" " proto=tcp "
check_grep interp-saddr "$I" "denied +\{ send \}.* (saddr|src_addr|laddr)=127\.0\.0\.1 "
check_grep interp-daddr "$I" "denied +\{ send \}.* (daddr|dst_addr|dest_addr|faddr)=127\.0\.0\.1 "
check_grep interp-ports "$I" "denied +\{ send \}.* src=[0-9]+ .*dest=5432 "
check_grep interp-contexts "$I" "scontext=$CTX_INTRUDER tcontext=$CTX_PG tclass=labelgate_flow"
check_no_grep interp-no-garble "$I" "unknown-family|unknown[(]|proto=unknown"

# audit2allow against the compiled test policy.
A="$LG_WORK/audit-tools-audit2allow.txt"
audit2allow -i "$AUDIT" -p "$LG_POLICY" >"$A" 2>&1 || true
log "audit2allow: $(tr '\n' ' ' <"$A")"
check_grep a2a-send "$A" "^allow intruder_t postgresql_t:labelgate_flow send;"
check_grep a2a-recv "$A" "^allow httpd_t intruder_t:labelgate_flow recv;"
check_no_grep a2a-no-granted "$A" "allow httpd_t postgresql_t:"

scenario_end
