#!/bin/bash
# The real-policy tier's guest runner, started by labelgate-tests.service
# once apache2, PostgreSQL and auditd were started by systemd. Waits for the
# services, loads labelgate's SELinux module (selinux-module setup), runs the
# scenarios listed in scenarios.list one after the other (each with a time
# limit), checks that labelgate's domain caused no AVC denial
# (selinux-module final), keeps the evidence in /var/log/labelgate-tests and
# powers the VM off. Results go to the serial console as
# `RESULT PASS|FAIL scenario/check`, `SCENARIO name PASS|FAIL`, then `DONE`.
set -uo pipefail
D=/usr/local/lib/labelgate-tests
# shellcheck source=common.sh
. "$D/common.sh"
mkdir -p "$LGT_OUT"
exec >>"$LGT_OUT/runner.log" 2>&1
SCENARIO=runner
t0=$(date +%s)
stage "runner started after $(cut -d' ' -f1 /proc/uptime) s of uptime, in $(id -Z)"

# The services must be up (systemd started them; under TCG on a busy host this
# can take minutes).
ready=0
for ((i = 0; i < 600; i++)); do
  if systemctl is-active -q apache2.service && ss -Htln 'sport = :80' | grep -q . \
     && ss -Htln 'sport = :5432' | grep -q . && systemctl is-active -q auditd.service; then
    ready=1; break
  fi
  sleep 1
done
if [ "$ready" = 1 ]; then stage "services up at $(cut -d' ' -f1 /proc/uptime) s of uptime"
else stage "services not up after 600 s: $(systemctl is-active apache2 postgresql auditd | tr '\n' ' ')"; fi
ps -eZ >"$LGT_OUT/ps-at-start.txt"

run_scenario() {
  local name="$1"; shift
  timeout -k 10 "${LGT_TIMEOUT:-1200}" bash "$D/scenarios/$name.sh" "$@"
  local rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    console "RESULT FAIL $name/time-limit the scenario did not finish in ${LGT_TIMEOUT:-1200} s"
    console "SCENARIO $name FAIL"
  fi
  grep -aq "^SCENARIO ${name%% *} " "$LGT_OUT/runner.log" || {
    console "RESULT FAIL $name/reported the scenario ended (exit $rc) without a verdict"
    console "SCENARIO $name FAIL"
  }
}

# selinux-module setup, the scenarios, selinux-module final. The setup's and
# the final check's results are one scenario, reported at the end.
LGT_TIMEOUT=1500 bash "$D/scenarios/selinux-module.sh" setup
for s in $(cat "$D/scenarios.list"); do
  case "$s" in
    # five policy rebuilds (semodule, semanage), 2-3 min each under TCG
    selinux-flow) LGT_TIMEOUT=2400 run_scenario "$s";;
    *) run_scenario "$s";;
  esac
done
SCENARIO=selinux-module
run_scenario selinux-module final

# Evidence for the host (copied out of the image after power-off).
cp -a /var/log/labelgate "$LGT_OUT/labelgate-log" 2>/dev/null
cp /var/log/audit/audit.log "$LGT_OUT/audit.log" 2>/dev/null
journalctl -b --no-pager >"$LGT_OUT/journal.txt" 2>&1
ps -eZ >"$LGT_OUT/ps-at-end.txt"
cp "$LGT_OUT/runner.log" "$LGT_OUT/runner-final.log"
console "DONE $(grep -c '^RESULT PASS' "$LGT_OUT/runner.log") passed, $(grep -c '^RESULT FAIL' "$LGT_OUT/runner.log") failed, $(( $(date +%s) - t0 )) s"
sync
systemctl poweroff --force
