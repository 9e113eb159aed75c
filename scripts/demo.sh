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
echo "What happened (real connections in the VM; each outcome checked against the policy):"
describe() {
  case "$1" in
    httpd-to-db-5432)       echo "httpd_t    -> postgresql_t tcp/5432   ALLOWED  (the web server reaches the database)";;
    intruder-to-db-5432)    echo "intruder_t -> postgresql_t tcp/5432   REFUSED  (same uid, other domain)";;
    httpd-to-db-8080)       echo "httpd_t    -> postgresql_t tcp/8080   REFUSED  (a port the table does not allow)";;
    httpd-to-intruder-5433) echo "httpd_t    -> intruder_t   tcp/5433   REFUSED  (on input, by the receiving socket's context)";;
    psql-httpd)             echo "psql in httpd_t    -> PostgreSQL in postgresql_t   ALLOWED  (select 42 answered)";;
    psql-intruder-refused)  echo "psql in intruder_t -> PostgreSQL in postgresql_t   REFUSED";;
    *) return 1;;
  esac
}
while read -r verdict scenario check _; do
  line="$(describe "$check")" || continue
  if [ "$verdict" = PASS ]; then echo "  $line"; else echo "  UNEXPECTED: $line did not happen ($scenario $check)"; fi
done < <(grep -E '^(PASS|FAIL) (article|postgres) ' "$work/results.txt" 2>/dev/null)
echo "  all checks: $(grep -cE '^PASS (article|postgres) ' "$work/results.txt" 2>/dev/null) passed, $(grep -cE '^FAIL (article|postgres) ' "$work/results.txt" 2>/dev/null) failed"
echo
echo "The audit records behind the refusals (one per refused connection; USER_AVC, read by ausearch and audit2allow):"
if [ -s "$work/article-audit.log" ]; then
  # One line per source/target/port: retransmissions of the same refused SYN are left out here.
  awk '/denied/ { match($0, /scontext=[^ ]+ tcontext=[^ ]+/); k = substr($0, RSTART, RLENGTH); match($0, / dest=[0-9]+/); k = k substr($0, RSTART, RLENGTH); if (!(k in seen)) { seen[k] = 1; print "  " $0 } }' "$work/article-audit.log"
else
  echo "  (none: see $work/e2e.out)"
fi
echo
echo "Full log and every scenario's files: $work"
exit "$rc"
