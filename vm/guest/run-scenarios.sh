#!/bin/bash
# Guest side: prepare SELinux and the network once, then run each scenario
# script (vm/scenarios/NAME.sh) in its own bash with a time limit.
# Usage (inside the VM): run-scenarios.sh POLICY_BINARY LABELGATE_BIN|"" NAME...
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export LG_POLICY="$1" LG_BIN="$2"; shift 2
export LG_WORK="${LABELGATE_VM_WORK:?}"
export LG_RESULTS="$LG_WORK/results.txt"
export LG_SCENARIO_TIMEOUT="${LG_SCENARIO_TIMEOUT:-900}"
: >"$LG_RESULTS"
# shellcheck source=common.sh
. "$HERE/common.sh"

SCENARIO=setup
t0=$(date +%s)
selinux_setup "$LG_POLICY"
net_setup
log "kernel $(uname -r), booted-to-ready $(cut -d' ' -f1 /proc/uptime)s"

# cleanup_after NAME: stop what a scenario may have left behind (after a
# timeout its own EXIT trap may not have run): its labelgate, by the pid it
# recorded, and every process still listening on TCP (only test servers
# listen in this VM).
cleanup_after() {
  local pidf="$LG_WORK/$1-labelgate.pid" p
  if [ -s "$pidf" ]; then kill -9 "$(cat "$pidf")" 2>/dev/null || true; fi
  for p in $(ss -Htlnp | grep -oE 'pid=[0-9]+' | cut -d= -f2 | sort -u); do
    SCENARIO=guest log "killing leftover listener pid $p"; kill -9 "$p" 2>/dev/null || true
  done
}

rc=0
for name in "$@"; do
  script="$HERE/../scenarios/$name.sh"
  s0=$(date +%s)
  set +e
  SCENARIO="$name" timeout -k 5 "$LG_SCENARIO_TIMEOUT" bash "$script"
  src=$?
  set -e
  took=$(( $(date +%s) - s0 ))
  case "$src" in
    0) verdict=PASS ;;
    124) verdict=TIMEOUT ;;
    *) verdict=FAIL ;;
  esac
  [ "$src" = 0 ] || rc=1
  echo "SCENARIO $name $verdict ${took}s" >>"$LG_RESULTS"
  SCENARIO=guest log "scenario $name: $verdict (${took}s)"
  cleanup_after "$name"
  net_reset
done
SCENARIO=guest log "all scenarios done in $(( $(date +%s) - t0 ))s"
exit "$rc"
