#!/bin/bash
# Scenario selinux-module (issue 15, 2.5): labelgate's own SELinux module,
# as the package ships its source, built with the image's policy development
# files (selinux-policy-dev) and loaded with semodule; labelgate then runs in
# labelgate_t under its unit.
#   setup: build, load (with dontaudit rules off, so that the permissive kernel
#          logs every would-be denial), relabel labelgate's files, restart the
#          unit, check its domain.
#   final: after every other scenario, no kernel AVC denial has labelgate_t as
#          its source (but { noatsecure siginh rlimitinh } at its transition
#          to iptables_t, which the reference policy dontaudits on every
#          domain transition), while the log did catch a deliberate denial of
#          another domain (the positive control), and auditd lost no record.
set -uo pipefail
. /usr/local/lib/labelgate-tests/common.sh
SCENARIO=selinux-module
STATE="$LGT_OUT/selinux-module.fails"
phase="${1:-setup}"

if [ "$phase" = setup ]; then
  stage "selinux-module setup begins ($(getenforce) kernel)"
  # The module's source, wherever the package put it.
  te="$(dpkg -L labelgate | grep -E '/labelgate\.te$' | head -n1)"
  if [ -z "$te" ]; then
    fail module-source "the labelgate package ships no labelgate.te ($(dpkg -L labelgate | tr '\n' ' '))"
  else
    pass module-source
    # Every module source the package ships beside it: .te files are built
    # with the policy's development Makefile, .cil files loaded as they are.
    src="$(dirname "$te")"
    build=/root/labelgate-selinux
    rm -rf "$build"; mkdir -p "$build"
    cp "$src"/*.te "$src"/*.if "$src"/*.fc "$build/" 2>/dev/null
    mods=()
    for t in "$build"/*.te; do mods+=("${t%.te}.pp"); done
    if (cd "$build" && make -f /usr/share/selinux/devel/Makefile "${mods[@]##*/}") >"$LGT_OUT/module-build.log" 2>&1; then
      pass module-builds
    else
      fail module-builds "$(tail -n 5 "$LGT_OUT/module-build.log" | tr '\n' ' ')"
    fi
    for c in "$src"/*.cil; do [ -f "$c" ] && mods+=("$c"); done
    log "loading: ${mods[*]}"
    # -D: no dontaudit rules, so a permissive kernel logs every would-be denial.
    inst=(); for m in "${mods[@]}"; do inst+=(-i "$m"); done
    if semodule -D "${inst[@]}" >"$LGT_OUT/semodule.log" 2>&1; then
      pass module-loads
    else
      fail module-loads "$(tail -n 5 "$LGT_OUT/semodule.log" | tr '\n' ' ')"
    fi
    check module-listed bash -c 'semodule -l | grep -qx labelgate'
    check dontaudit-off test -e /var/lib/selinux/default/active/disable_dontaudit
  fi
  # Records of every would-be denial must reach the log.
  auditctl -b 16384 >/dev/null 2>&1
  mkdir -p /var/log/labelgate /run/labelgate
  restorecon -RF /usr/sbin/labelgate /etc/labelgate /var/log/labelgate /run/labelgate
  expect_eq exec-label "$(stat -c %C /usr/sbin/labelgate)" system_u:object_r:labelgate_exec_t:s0 "/usr/sbin/labelgate"
  expect_eq etc-label "$(stat -c %C /etc/labelgate/policy.toml)" system_u:object_r:labelgate_etc_t:s0 "/etc/labelgate/policy.toml"
  expect_eq log-label "$(stat -c %C /var/log/labelgate)" system_u:object_r:labelgate_log_t:s0 "/var/log/labelgate"
  # The unit with the packaged starter policy (permissive, accept), kept for
  # the scenarios that start from it.
  cp /etc/labelgate/policy.toml "$LGT_OUT/packaged-policy.toml"
  # As an administrator would once a policy is written: enable and start.
  systemctl enable labelgate.service >/dev/null 2>&1 || fail unit-enables "systemctl enable failed"
  lg_restart unit-starts
  expect_eq runs-in-labelgate_t "$(lg_ctx)" system_u:system_r:labelgate_t:s0 "labelgate's context"
  echo "$SCENARIO_FAILS" >"$STATE"
  exit 0
fi

# final
setup_fails="$(cat "$STATE" 2>/dev/null || echo 1)"
[ -f "$STATE" ] || fail setup-ran "the setup phase left no state"
SCENARIO_FAILS=$((SCENARIO_FAILS + setup_fails))
stage "selinux-module final check begins ($(getenforce) kernel)"
# Positive control: a denial of another domain, made now, is in the log.
runcon "$CTX_HTTPD" cat /etc/shadow >/dev/null 2>&1
for ((i = 0; i < 30; i++)); do
  grep -q 'avc:  denied .*comm="cat".*scontext=system_u:system_r:httpd_t:s0 .*tcontext=system_u:object_r:shadow_t' /var/log/audit/audit.log && break
  sleep 1
done
check log-catches-denials grep -q 'avc:  denied .*comm="cat".*scontext=system_u:system_r:httpd_t:s0 .*tcontext=system_u:object_r:shadow_t' /var/log/audit/audit.log
# Every kernel AVC denial, and every object manager's (USER_AVC) except
# labelgate's own decision records, whose source is labelgate_t; and
# SELINUX_ERR lines (a refused transition) naming it. Set apart: { noatsecure
# siginh rlimitinh } on the transition to iptables_t, which the reference
# policy's domain_transition_pattern dontaudits on every transition (their
# denial is the safe outcome: AT_SECURE set, signals and limits reset), and
# which show here only because the dontaudit rules are off.
grep -E '^type=(AVC|USER_AVC) ' /var/log/audit/audit.log | grep -F 'denied' \
  | grep -F 'scontext=system_u:system_r:labelgate_t:s0 ' | grep -vF 'exe="/usr/sbin/labelgate"' \
  >"$LGT_OUT/labelgate_t-all-denials.txt"
transition_noise='denied  \{ ((noatsecure|siginh|rlimitinh) ?)+ \} .* tclass=process '
grep -E "$transition_noise" "$LGT_OUT/labelgate_t-all-denials.txt" >"$LGT_OUT/labelgate_t-transition-dontaudit.txt"
grep -vE "$transition_noise" "$LGT_OUT/labelgate_t-all-denials.txt" >"$LGT_OUT/labelgate_t-denials.txt"
log "set apart (refpolicy dontaudits them on every transition): $(wc -l <"$LGT_OUT/labelgate_t-transition-dontaudit.txt") lines"
grep -E '^type=SELINUX_ERR ' /var/log/audit/audit.log | grep -F labelgate_t >>"$LGT_OUT/labelgate_t-denials.txt"
if [ -s "$LGT_OUT/labelgate_t-denials.txt" ]; then
  fail no-denials-for-labelgate_t "$(wc -l <"$LGT_OUT/labelgate_t-denials.txt") denial(s), e.g. $(head -n 3 "$LGT_OUT/labelgate_t-denials.txt" | sed 's/.*avc:/avc:/' | tr '\n' ' ')"
  audit2allow -i "$LGT_OUT/labelgate_t-denials.txt" >"$LGT_OUT/labelgate_t-audit2allow.txt" 2>&1
else
  pass no-denials-for-labelgate_t
fi
lost="$(auditctl -s | awk '$1 == "lost" {print $2}')"
expect_eq audit-lost-nothing "${lost:-unknown}" 0 "auditd lost records"
scenario_end
