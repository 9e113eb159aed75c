#!/bin/bash
# End-to-end tests of labelgate in a throwaway SELinux VM.
# Usage: vm/e2e.sh [PATH_TO_LABELGATE_BINARY]
#   default binary: target/release/labelgate of this repo
# Env: LABELGATE_VM_SCENARIOS  space-separated scenario names (default: all)
#      LABELGATE_VM_WORK       host dir for logs/results (default: new temp dir)
#      LABELGATE_VM_CACHE, LABELGATE_VM_TIMEOUT: see setup.sh / run-vm.sh
# Exits 0 only if every selected scenario passed.
set -euo pipefail
VM="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$VM")"
BIN="${1:-$REPO/target/release/labelgate}"

ALL="smoke article postgres permissive permissive-domains secmark cipso peer-oracle audit-tools attribution operator-rules hooks-nft selinux-verdict containers"
SCENARIOS="${LABELGATE_VM_SCENARIOS:-$ALL}"

"$VM/setup.sh"

WORK="${LABELGATE_VM_WORK:-$(mktemp -d /tmp/labelgate-e2e.XXXXXX)}"
mkdir -p "$WORK"; WORK="$(realpath "$WORK")"
export LABELGATE_VM_WORK="$WORK"

# Compile the test policy (the guest loads it; audit2allow reads it).
# The labelgate_flow rules (selinux-verdict) are a second module loaded with
# it; selinux-verdict reloads the policy with a third one added.
secilc -M true -c 33 -o "$WORK/policy.33" -f /dev/null "$VM/policy/labelgate-test.cil" \
  "$VM/policy/labelgate-flow-rules.cil"
secilc -M true -c 33 -o "$WORK/policy-flow-reload.33" -f /dev/null "$VM/policy/labelgate-test.cil" \
  "$VM/policy/labelgate-flow-rules.cil" "$VM/policy/labelgate-flow-reload.cil"
echo "e2e: policy compiled to $WORK/policy.33"

# Snapshot the binary so a rebuild during the run does not change it.
GUEST_BIN=""
if [ -x "$BIN" ]; then
  cp "$BIN" "$WORK/labelgate"; GUEST_BIN="$WORK/labelgate"
  echo "e2e: labelgate binary $BIN ($(stat -c '%y' "$BIN"))"
else
  echo "e2e: WARNING: no labelgate binary at $BIN; scenarios needing it will fail"
fi

set +e
# shellcheck disable=SC2086  # SCENARIOS is a word list
"$VM/run-vm.sh" "$VM/guest/run-scenarios.sh" "$WORK/policy.33" "$GUEST_BIN" $SCENARIOS
rc=$?
set -e

echo
echo "================ labelgate VM e2e summary ================"
if [ -s "$WORK/results.txt" ]; then
  grep '^FAIL' "$WORK/results.txt" | sed 's/^/  /' || true
  echo "  checks: $(grep -c '^PASS' "$WORK/results.txt") passed, $(grep -c '^FAIL' "$WORK/results.txt") failed"
  grep '^SCENARIO' "$WORK/results.txt" | sed 's/^SCENARIO /  /'
else
  echo "  no results written (guest failed before the scenarios ran)"
fi
for name in $SCENARIOS; do
  grep -q "^SCENARIO $name " "$WORK/results.txt" 2>/dev/null || { echo "  $name NOT RUN"; rc=${rc/#0/1}; }
done
echo "  logs: $WORK (guest.log, results.txt, per-scenario files)"
echo "  result: $([ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc)")"
exit "$rc"
