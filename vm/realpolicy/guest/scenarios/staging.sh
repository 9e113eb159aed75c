#!/bin/bash
# Scenario staging (issue 15, 2.2): permissive staging on the real policy.
# The unit runs a deny-by-default table in permissive mode while the site's
# traffic flows (a root shell's curl to apache, apache to PostgreSQL);
# `labelgate would-break` and `labelgate audit2rules` read the records; the
# proposal becomes the policy, now enforcing, through `systemctl reload`
# (same process); the same traffic passes and a flow never seen while
# permissive (psql from the root shell) is refused. Kernel permissive: the
# scenario is about labelgate's own modes.
set -uo pipefail
. /usr/local/lib/labelgate-tests/common.sh
scenario_begin staging

cat >"$LGT_OUT/staging-permissive.toml" <<'TOML'
# Staging: record what a deny-by-default table would refuse, refuse nothing.
mode = "permissive"
default = "drop"
TOML
install_policy "$LGT_OUT/staging-permissive.toml"
lg_restart unit-restarts-permissive || { scenario_end; exit 1; }
mark="$(records_mark)"

# The site's traffic, let through while permissive.
expect_eq apache-reaches-db-permissive "$(http_db)" 502 "HTTP status of /db while permissive"
records_since "$mark" >"$LGT_OUT/staging-records.log"
check records-would-deny test -n "$(avc_select denied "$CTX_HTTPD" "$CTX_PG" 'dest=5432 .*permissive=1' <"$LGT_OUT/staging-records.log")"

labelgate would-break "$LGT_OUT/staging-records.log" >"$LGT_OUT/staging-would-break.txt" 2>&1
check would-break-names-flow grep -qE 'httpd_t -> postgresql_t +tcp/5432' "$LGT_OUT/staging-would-break.txt"
check would-break-names-curl grep -qE 'unconfined_t -> httpd_t +tcp/80' "$LGT_OUT/staging-would-break.txt"
if labelgate audit2rules "$LGT_OUT/staging-records.log" >"$LGT_OUT/staging-proposal.toml" 2>"$LGT_OUT/staging-audit2rules.err"; then
  pass audit2rules-runs
else
  fail audit2rules-runs "$(head -n 3 "$LGT_OUT/staging-audit2rules.err")"
fi
check proposal-allows-flow grep -q 'dest = "postgresql_t"' "$LGT_OUT/staging-proposal.toml"
{
  echo '# Staged: the proposal from the permissive week, enforced.'
  echo 'mode = "enforcing"'
  echo 'default = "drop"'
  echo
  cat "$LGT_OUT/staging-proposal.toml"
} >"$LGT_OUT/staging-enforcing.toml"
out="$(labelgate check "$LGT_OUT/staging-enforcing.toml" 2>&1)"
check proposal-checks grep -q 'all types are known to the loaded SELinux policy' <<<"$out"

# Installed and reloaded: the same process now enforces.
pid="$(lg_pid)"
jm="$(journal_mark)"
install_policy "$LGT_OUT/staging-enforcing.toml"
systemctl reload labelgate.service || fail reload-command "systemctl reload returned $?"
journal_wait "$jm" labelgate.service 'reloaded' 30 >"$LGT_OUT/staging-reload-journal.txt"
check reload-logged grep -q "reloaded $LG_POLICY" "$LGT_OUT/staging-reload-journal.txt"
expect_eq same-process "$(lg_pid)" "$pid" "MainPID after reload"
expect_eq unit-active "$(systemctl is-active labelgate.service)" active

mark="$(records_mark)"
expect_eq apache-reaches-db-enforcing "$(http_db)" 502 "HTTP status of /db once enforcing (the root shell's curl and apache's connect both allowed)"
out="$(psql_tcp)"
log "psql from the root shell: $out"
if grep -qiE 'timeout expired|timed out' <<<"$out"; then pass new-flow-refused
else fail new-flow-refused "psql answered '$out' (want a connect timeout)"; fi
records_since "$mark" >"$LGT_OUT/staging-records-enforcing.log"
check record-new-flow-denied test -n "$(avc_select denied "$CTX_ROOT" "$CTX_PG" 'comm="psql".* dest=5432 .*permissive=0' <"$LGT_OUT/staging-records-enforcing.log")"
check no-denial-for-staged-flow test -z "$(avc_select denied "$CTX_HTTPD" "$CTX_PG" <"$LGT_OUT/staging-records-enforcing.log")"
scenario_end
