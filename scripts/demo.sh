#!/usr/bin/env bash
# The main job on a built-in example: the article's scenario ("only the web
# server may talk to the database on 5432") with real SELinux contexts.
#
# labelgate needs a kernel with SELinux active and processes running in
# httpd_t and postgresql_t. The demo never loads a policy into this host:
# it builds labelgate, boots a throwaway VM with Debian's SELinux kernel and a
# small test policy (vm/), runs labelgate there against real clients (socat
# and PostgreSQL's psql), and prints what was allowed, what was refused, and
# the audit records behind it. Run as root; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

./scripts/install-deps.sh
echo "== building labelgate (release)"
cargo build --locked --release
bin="$PWD/target/release/labelgate"

work="${LABELGATE_VM_WORK:-$(mktemp -d /tmp/labelgate-demo.XXXXXX)}"
export LABELGATE_VM_WORK="$work"
export LABELGATE_VM_SCENARIOS="${LABELGATE_DEMO_SCENARIOS:-article postgres}"
echo "== booting the SELinux VM and running: $LABELGATE_VM_SCENARIOS"
set +e
./vm/e2e.sh "$bin" > "$work/e2e.out" 2>&1
rc=$?
set -e

echo
echo "================ labelgate demo: the article's scenario ================"
echo "The policy (labelgate's table, TOML):"
sed 's/^/    /' "$work/article-policy.toml" 2>/dev/null || echo "    (not written: see $work/e2e.out)"
echo
echo "What happened (each line a real connection in the VM, PASS = as the policy says):"
grep -E '^(PASS|FAIL) (article|postgres) ' "$work/results.txt" 2>/dev/null \
  | sed -E 's/^PASS /  ok    /; s/^FAIL /  WRONG /' || echo "  (no results: see $work/e2e.out)"
echo
echo "Audit records labelgate wrote for the refused connections (USER_AVC, read by ausearch/audit2allow):"
if [ -s "$work/article-audit.log" ]; then
  grep 'denied' "$work/article-audit.log" | head -n 6 | sed 's/^/  /'
else
  echo "  (none: see $work/e2e.out)"
fi
echo
echo "Full log and every scenario's files: $work"
exit "$rc"
