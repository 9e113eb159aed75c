#!/usr/bin/env bash
# The main job, for real: the article's scenario ("only the web server may
# talk to the database on 5432") on Debian 12 with the distribution's
# reference SELinux policy.
#
# labelgate needs a kernel with SELinux active, which this host does not
# have, and the demo never loads a policy into this host: it builds
# labelgate's .deb, boots a throwaway VM (vm/realpolicy/: Debian 12,
# selinux-policy-default, apache2 and PostgreSQL started by systemd in httpd_t
# and postgresql_t, auditd), installs the package there with dpkg, loads
# labelgate's SELinux module, runs labelgate by its packaged systemd unit with
# the article's table in /etc/labelgate/policy.toml, and prints what was
# allowed, what was refused, and the records behind it. The VM image is built
# on first use (about 4 minutes) and cached in /var/cache/labelgate-vm.
# Run as root; idempotent. LABELGATE_REALVM_WORK chooses the work dir.
set -euo pipefail
{ # read whole before it runs
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

./scripts/install-deps.sh
work="${LABELGATE_REALVM_WORK:-$(mktemp -d /tmp/labelgate-demo.XXXXXX)}"
mkdir -p "$work"
echo "== building labelgate's .deb, the VM image (cached), and running the article's scenario in the VM"
echo "   (under software emulation this takes several minutes; progress below, full log in $work/e2e.out)"
set +e
LABELGATE_REALVM_WORK="$work" LABELGATE_REALVM_SCENARIOS=article ./vm/realpolicy/e2e.sh 2>&1 \
  | tee "$work/e2e.out" | grep --line-buffered -E '^realpolicy: (base image|package|booting|guest ran)|\[[0-9]+ s\] (STAGE|RESULT FAIL)'
rc=${PIPESTATUS[0]}
set -e
g="$work/guest"

echo
echo "================ labelgate demo: the article's scenario, for real ================"
echo "Debian 12 in a VM: the reference SELinux policy (selinux-policy-default), apache2 and"
echo "PostgreSQL started by systemd, labelgate installed from its .deb and run by its unit."
echo
echo "Who is who (ps -eZ and id -Z in the VM):"
if [ -s "$g/article-ps.txt" ]; then
  awk '$NF ~ /^(apache2|postgres|labelgate)$/ && !seen[$1 FS $NF]++ {printf "    %-42s %s\n", $1, $NF}' "$g/article-ps.txt"
fi
echo "    unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023   a root login shell (psql, socat, curl)"
echo
echo "The policy (/etc/labelgate/policy.toml):"
sed 's/^/    /' "$g/article-policy.toml" 2>/dev/null || echo "    (not written: see $work/e2e.out)"
echo
describe() {
  case "$1" in
    apache-reaches-db)       echo "apache2 (httpd_t)   -> PostgreSQL (postgresql_t) tcp/5432  ALLOWED  (GET /db: apache's connect accepted, HTTP 502)";;
    root-shell-reaches-echo) echo "socat (root shell)  -> socat (unconfined_t)      tcp/5433  ALLOWED  (the same shell reaches an allowed port)";;
    root-psql-refused)       echo "psql (root shell)   -> PostgreSQL (postgresql_t) tcp/5432  REFUSED  (connect timed out)";;
    root-socat-refused)      echo "socat (root shell)  -> PostgreSQL (postgresql_t) tcp/5432  REFUSED";;
    unix-socket-untouched)   echo "psql (postgres user) -> PostgreSQL over its unix socket    ALLOWED  (not network traffic: untouched)";;
    *) return 1;;
  esac
}
for mode in "" -enforcing; do
  if [ -z "$mode" ]; then echo "What happened (kernel permissive: the reference policy logs but does not refuse):"
  else echo "The same with the kernel enforcing the reference policy too:"; fi
  grep -aE "^RESULT (PASS|FAIL) article/" "$work/results.txt" 2>/dev/null | while read -r _ verdict name _; do
    check="${name#article/}"
    [ -n "$mode" ] && { [[ "$check" == *"$mode" ]] || continue; check="${check%"$mode"}"; }
    [ -z "$mode" ] && [[ "$check" == *-enforcing ]] && continue
    line="$(describe "$check")" || continue
    if [ "$verdict" = PASS ]; then echo "  $line"; else echo "  NOT AS EXPECTED: $line ($name failed)"; fi
  done
  echo
done
echo "  all checks of the run: $(grep -c '^RESULT PASS' "$work/results.txt" 2>/dev/null) passed, $(grep -c '^RESULT FAIL' "$work/results.txt" 2>/dev/null) failed"
grep '^RESULT FAIL' "$work/results.txt" 2>/dev/null | sed 's/^/    /' || true
echo
echo "labelgate's records of the permissive-kernel half (/var/log/labelgate/audit.log; one per"
echo "verdict, hook, program, source, target and port: a refused SYN sent again is left out here):"
if [ -s "$g/article-records.log" ]; then
  awk '{ match($0, /avc: +[a-z]+ +\{ [a-z_]+ \}/); k = substr($0, RSTART, RLENGTH); match($0, / comm="[^"]*"/); k = k substr($0, RSTART, RLENGTH); match($0, /scontext=[^ ]+ tcontext=[^ ]+/); k = k substr($0, RSTART, RLENGTH); match($0, / dest=[0-9]+/); k = k substr($0, RSTART, RLENGTH); if (!(k in seen)) { seen[k] = 1; print "  " $0 } }' "$g/article-records.log"
else
  echo "  (none: see $work/e2e.out)"
fi
echo
echo "Full log, the VM's journal and every scenario's files: $work"
exit "$rc"
}
