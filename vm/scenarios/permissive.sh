#!/bin/bash
# (3) Permissive mode: a connection the policy denies still succeeds and the
# audit file records `denied ... permissive=1` with the right contexts.
# Checked twice: mode set in the policy file, and by --mode on the command line.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin permissive
lg_require

# policy_with_mode MODE: the shared web-to-db policy (vm/policies/web-db.toml)
# with mode = MODE.
policy_with_mode() { web_db_policy "$1" mode="\"$1\""; }
tcp_echo_server "$CTX_PG" 5432
queue_out 5432

# 1. mode = "permissive" in the file.
AUDIT="$LG_WORK/permissive-audit-file.log"
lg_start "$(policy_with_mode permissive)" "$AUDIT"
expect_reached file-mode-intruder-passes "$CTX_INTRUDER" 5432
expect_reached file-mode-httpd-passes "$CTX_HTTPD" 5432
lg_stop || fail labelgate-exit-1 "non-zero exit on SIGTERM"
check_avc file-mode-avc "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=5432 .*permissive=1"
check_no_avc file-mode-no-enforced-avc "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "permissive=0"

# 2. an enforcing file run with --mode permissive.
AUDIT="$LG_WORK/permissive-audit-cli.log"
lg_start "$(policy_with_mode enforcing)" "$AUDIT" --mode permissive
expect_reached cli-mode-intruder-passes "$CTX_INTRUDER" 5432
lg_stop || fail labelgate-exit-2 "non-zero exit on SIGTERM"
check_avc cli-mode-avc "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=5432 .*permissive=1"

# 3. and the same file enforcing: the intruder is refused (control).
AUDIT="$LG_WORK/permissive-audit-enforcing.log"
lg_start "$(policy_with_mode enforcing)" "$AUDIT"
expect_refused enforcing-intruder-refused "$CTX_INTRUDER" 5432 "$CTX_HTTPD" "$LG_CONTROL_PORT"
lg_stop || fail labelgate-exit-3 "non-zero exit on SIGTERM"
check_avc enforcing-avc "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "permissive=0"

scenario_end
