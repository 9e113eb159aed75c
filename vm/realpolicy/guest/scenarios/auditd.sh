#!/bin/bash
# Scenario auditd (issue 15, 2.3): auditd for real. With `--audit-kernel`
# (LABELGATE_OPTS in /etc/default/labelgate, which the packaged unit reads)
# labelgate's records land in /var/log/audit/audit.log beside the kernel's own
# AVCs; `ausearch -m USER_AVC -i` and `audit2allow` (with the loaded policy)
# read them from there. Kernel permissive: the kernel AVC beside labelgate's
# records is a deliberate would-be denial (httpd_t reading /etc/shadow), which
# an enforcing kernel would log too but the scenario keeps harmless.
set -uo pipefail
. /usr/local/lib/labelgate-tests/common.sh
scenario_begin auditd
ALOG=/var/log/audit/audit.log
SPORT=40123   # the refused connection's source port: finds its records

echo_server_start || fail echo-server "socat did not listen on $ECHO_PORT"
article_policy >"$LGT_OUT/auditd-policy.toml"
install_policy "$LGT_OUT/auditd-policy.toml"
# /etc/default/labelgate (the package's conffile) with LABELGATE_OPTS set.
had_default=0
[ -f /etc/default/labelgate ] && { had_default=1; cp -p /etc/default/labelgate "$LGT_OUT/default-labelgate.orig"; }
echo 'LABELGATE_OPTS=--audit-kernel' >>/etc/default/labelgate
lg_restart unit-restarts || { scenario_end; exit 1; }
check runs-with-audit-kernel grep -q -- '--audit-kernel' <(tr '\0' ' ' <"/proc/$(lg_pid)/cmdline")

# The positive control (allowed, through the same queue) and the refusal.
expect_eq root-shell-reaches-echo "$(tcp_try "$ECHO_PORT")" "pong-$ECHO_PORT" "socat from the root shell to the allowed port"
expect_eq root-socat-refused "$(tcp_try 5432 "$SPORT")" "" "socat from the root shell to 5432"
# A kernel AVC of the reference policy, now.
runcon "$CTX_HTTPD" cat /etc/shadow >/dev/null 2>&1

want_user="avc: +denied .*src=$SPORT .*dest=5432 .*scontext=$CTX_ROOT tcontext=$CTX_PG "
for ((i = 0; i < 30; i++)); do
  grep -E '^type=USER_AVC ' "$ALOG" | grep -qE "$want_user" && break
  sleep 1
done
check record-in-audit-log bash -c "grep -E '^type=USER_AVC ' $ALOG | grep -E 'subj=system_u:system_r:labelgate_t:s0 ' | grep -qE '$want_user'"
check kernel-avc-beside bash -c "grep -E '^type=AVC ' $ALOG | grep -qE 'avc:  denied .*scontext=$CTX_HTTPD tcontext=system_u:object_r:shadow_t:s0 '"

ausearch -m USER_AVC -i >"$LGT_OUT/auditd-ausearch.txt" 2>&1
check ausearch-reads-record bash -c "grep -E 'src=$SPORT ' '$LGT_OUT/auditd-ausearch.txt' | grep -F 'scontext=$CTX_ROOT' | grep -qF 'tcontext=$CTX_PG'"
check ausearch-interprets-proto bash -c "grep -E 'src=$SPORT ' '$LGT_OUT/auditd-ausearch.txt' | grep -qE 'proto=tcp'"

# audit2allow reads the log itself, with the loaded policy.
audit2allow -i "$ALOG" >"$LGT_OUT/auditd-audit2allow.txt" 2>&1
check audit2allow-reads-labelgate grep -qE '^allow unconfined_t postgresql_t:[a-z_]+ ' "$LGT_OUT/auditd-audit2allow.txt"
check audit2allow-reads-kernel grep -qE '^allow httpd_t shadow_t:file ' "$LGT_OUT/auditd-audit2allow.txt"

# Back to the packaged defaults for the scenarios that follow.
if [ "$had_default" = 1 ]; then cp -p "$LGT_OUT/default-labelgate.orig" /etc/default/labelgate
else rm -f /etc/default/labelgate; fi
lg_restart unit-restarts-without-audit-kernel
echo_server_stop
scenario_end
