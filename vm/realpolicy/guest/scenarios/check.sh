#!/bin/bash
# Scenario check (issue 15, 2.4): `labelgate check` against the loaded
# reference policy: a policy naming real types passes, a misspelt type is
# reported. Run twice: from the root shell (unconfined_t), and by the packaged
# unit, whose ExecStartPre runs `labelgate check` in labelgate_t (where the
# module must let it see that SELinux is active); read from the journal.
set -uo pipefail
. /usr/local/lib/labelgate-tests/common.sh
scenario_begin check

article_policy >"$LGT_OUT/check-good.toml"
sed 's/dest = "postgresql_t"/dest = "postgresql_tt"/' "$LGT_OUT/check-good.toml" >"$LGT_OUT/check-misspelt.toml"
grep -q postgresql_tt "$LGT_OUT/check-misspelt.toml" || fail misspelt-policy-written "sed did not misspell the type"

out="$(as_root_login "labelgate check $LGT_OUT/check-good.toml" 2>&1)"; rc=$?
echo "$out" >"$LGT_OUT/check-good-root.txt"
expect_eq real-types-exit-root "$rc" 0 "exit status"
check real-types-known-root grep -q 'all types are known to the loaded SELinux policy' <<<"$out"
out="$(as_root_login "labelgate check $LGT_OUT/check-misspelt.toml" 2>&1)"
echo "$out" >"$LGT_OUT/check-misspelt-root.txt"
check misspelt-reported-root grep -qE 'postgresql_tt is not known to the loaded SELinux policy' <<<"$out"
check real-types-not-reported-root test -z "$(grep -E '(httpd_t|unconfined_t|postgresql_t) is not known' <<<"$out")"

# The unit's own check, in labelgate_t.
for which in good misspelt; do
  install_policy "$LGT_OUT/check-$which.toml"
  jm="$(journal_mark)"
  lg_restart "unit-restarts-$which"
  journal_wait "$jm" labelgate.service 'types are known|is not known' >"$LGT_OUT/check-$which-unit.txt"
done
check unit-real-types-known grep -q 'all types are known to the loaded SELinux policy' "$LGT_OUT/check-good-unit.txt"
check unit-not-said-inactive test -z "$(grep -i 'SELinux is not active' "$LGT_OUT/check-good-unit.txt")"
check unit-misspelt-reported grep -qE 'postgresql_tt is not known to the loaded SELinux policy' "$LGT_OUT/check-misspelt-unit.txt"
install_policy "$LGT_OUT/check-good.toml"
lg_restart unit-restarts-good-again
scenario_end
