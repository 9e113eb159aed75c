#!/bin/bash
# Scenario selinux-flow (issue 18): `verdict = "selinux"` on the reference
# policy. labelgate's table says which traffic (tcp to 5432) and the loaded
# SELinux policy decides, in labelgate's class labelgate_flow (declared by the
# packaged labelgate_flow.cil, which selinux-module setup loaded), with the
# package's defaults (LABELGATE_FAIL=closed: no --queue-bypass). The
# administrator's loop, without restarting labelgate (same MainPID):
#   a. no allow rule: apache (httpd_t, /db proxied to 5432) is refused, and
#      so is a root login shell (unconfined_t); both reach the echo port;
#   b. audit2allow on apache's records proposes exactly
#      `allow httpd_t postgresql_t:labelgate_flow send;` (the SYN was dropped
#      at output: the input hook was never asked); `audit2allow -M web_db`
#      and `semodule -i web_db.pp` load it: apache's SYN now passes output
#      and is refused at input (`denied { recv }`);
#   c. the same commands again propose exactly the send rule (marked as
#      allowed in the current policy) and the recv rule; the new web_db.pp
#      replaces the first; apache reaches PostgreSQL; the root shell is
#      still refused;
#   d. the same rule as a hand-written .te module (built with the reference
#      policy's devel Makefile) in place of web_db;
#   e. `semanage permissive -a unconfined_t` lets the root shell through
#      (recorded permissive=1), `semanage permissive -d` refuses it again.
# Every refusal is paired with the same client reaching the echo port.
set -uo pipefail
. /usr/local/lib/labelgate-tests/common.sh
scenario_begin selinux-flow
W=/root/selinux-flow
rm -rf "$W"; mkdir -p "$W"

flow_policy() {
  cat <<'TOML'
# The article, with the SELinux policy deciding who may reach the database.
mode = "enforcing"
default = "accept"

[[rule]]
name = "root-to-echo"
source = "unconfined_t"
dest = "unconfined_t"
proto = "tcp"
dport = 5433
verdict = "accept"
audit = true

# Which traffic: tcp to 5432. Who may: the loaded policy, class labelgate_flow.
[[rule]]
name = "db-by-selinux"
proto = "tcp"
dport = 5432
verdict = "selinux"
audit = true
TOML
}

# http_status PATH: apache's answer to PATH, asked from a root login shell.
http_status() {
  as_root_login "curl -s -o /dev/null -w '%{http_code}' --max-time 40 http://127.0.0.1$1" 2>/dev/null || true
}
# apache_reaches_echo NAME: apache's connect to the echo port was accepted
# (its reply is no HTTP: 502, or 200 as HTTP/0.9; 503 = the connect failed).
apache_reaches_echo() {
  local s; s="$(http_status /echo)"
  case "$s" in 502|200) pass "$1";; *) fail "$1" "HTTP status of /echo: '$s' (want 502 or 200: connect accepted)";; esac
}
# apache_db NAME WANT: /db's status (502 reached, 503 refused), paired with
# apache reaching the echo port in the same breath.
apache_db() {
  expect_eq "$1" "$(http_status /db)" "$2" "HTTP status of /db (502: apache reached 5432, 503: refused)"
  apache_reaches_echo "$1-control-echo"
}
# root_refused NAME: the root login shell cannot reach 5432 (socat, psql),
# and reaches the echo port.
root_refused() {
  local out
  expect_eq "$1-socat" "$(tcp_try 5432)" "" "socat from the root shell to 5432"
  out="$(psql_tcp)"
  if grep -qiE 'timeout expired|timed out' <<<"$out"; then pass "$1-psql"
  else fail "$1-psql" "psql answered '$out' (want a connect timeout)"; fi
  expect_eq "$1-control-echo" "$(tcp_try "$ECHO_PORT")" "pong-$ECHO_PORT" "socat from the root shell to the allowed port"
}
# same_labelgate NAME: the unit still runs the process it ran at the start.
same_labelgate() {
  expect_eq "$1" "$(lg_pid)/$(queue_portid 0)" "$pid0/$port0" "labelgate's MainPID/queue 0 port id"
}
# explain NAME SOURCE WANT_PERM_ANSWER WANT_VERDICT
explain() {
  local f="$LGT_OUT/selinux-flow-explain-$1.txt"
  labelgate explain --policy "$LG_POLICY" --source "$2" --dest postgresql_t --dport 5432 >"$f" 2>&1
  check "$1" bash -c "grep -qE 'db-by-selinux asks the loaded SELinux policy: $3' '$f' && grep -qE '^verdict: $4' '$f'"
}
# rules_of FILE: the allow rules in FILE (audit2allow's output or a .te).
rules_of() { grep -E '^allow ' "$1" | sort -u | tr '\n' ' ' | sed 's/ $//'; }
# propose ROUND MARK WANT: the administrator's loop, as docs/AUDIT.md shows
# it: apache's records (labelgate's file, from MARK on: denials, and grants
# that audit2allow leaves alone) through `audit2allow` propose exactly WANT;
# `audit2allow -M web_db` writes the module and `semodule -i web_db.pp` loads
# it (round 2 replaces round 1's module of the same name).
propose() {
  local round="$1" mark="$2" want="$3" d="$W/$1"
  mkdir -p "$d"
  records_since "$mark" | grep -F "scontext=$CTX_HTTPD " >"$d/web_db.log"
  cp "$d/web_db.log" "$LGT_OUT/selinux-flow-$round-apache-records.log"
  check "$round-apache-denials" test -n "$(grep -E 'avc: +denied ' "$d/web_db.log")"
  audit2allow -i "$d/web_db.log" >"$d/proposal.txt" 2>&1
  cp "$d/proposal.txt" "$LGT_OUT/selinux-flow-$round-audit2allow.txt"
  expect_eq "$round-audit2allow-proposes" "$(rules_of "$d/proposal.txt")" "$want" "audit2allow's rules"
  (cd "$d" && audit2allow -M web_db -i web_db.log) >"$d/module.log" 2>&1
  cp "$d/web_db.te" "$LGT_OUT/selinux-flow-$round-web_db.te" 2>/dev/null
  expect_eq "$round-module-rules" "$(rules_of "$d/web_db.te" 2>/dev/null)" "$want" "the rules of audit2allow -M's web_db.te"
  if semodule -i "$d/web_db.pp" >"$d/semodule.log" 2>&1; then pass "$round-loads"
  else fail "$round-loads" "$(tail -n 3 "$d/semodule.log" | tr '\n' ' ')"; fi
}

echo_server_start || fail echo-server "socat did not listen on $ECHO_PORT"
check class-loaded test -d /sys/fs/selinux/class/labelgate_flow
check class-perms bash -c 'ls /sys/fs/selinux/class/labelgate_flow/perms | sort | tr "\n" " " | grep -qx "forward recv send "'
flow_policy >"$LGT_OUT/selinux-flow-policy.toml"
install_policy "$LGT_OUT/selinux-flow-policy.toml"
lg_restart unit-restarts || { echo_server_stop; scenario_end; exit 1; }
pid0="$(lg_pid)"; port0="$(queue_portid 0)"
expect_eq labelgate-in-labelgate_t "$(lg_ctx)" system_u:system_r:labelgate_t:s0 "labelgate's context"
iptables -t security -S >"$LGT_OUT/selinux-flow-rules.txt" 2>&1
check queue-rules-installed grep -q -- '-j NFQUEUE --queue-num 0' "$LGT_OUT/selinux-flow-rules.txt"
check queue-rules-fail-closed bash -c "! grep -q -- '--queue-bypass' '$LGT_OUT/selinux-flow-rules.txt'"

# a. No allow rule for labelgate_flow: the policy refuses everyone.
stage "selinux-flow a: no allow rule"
m0="$(records_mark)"
apache_db a-apache-refused 503
root_refused a-root-refused
explain a-explain-denied httpd_t 'denied \{ send \}' drop
records_since "$m0" >"$LGT_OUT/selinux-flow-records-a.log"
r="$LGT_OUT/selinux-flow-records-a.log"
check a-record-apache-denied-send test -n "$(avc_select denied "$CTX_HTTPD" "$CTX_PG" '\{ send \} .*comm="apache2".* dest=5432 .*tclass=labelgate_flow permissive=0 rule=db-by-selinux' <"$r")"
check a-record-root-denied-send test -n "$(avc_select denied "$CTX_ROOT" "$CTX_PG" '\{ send \} .* dest=5432 .*tclass=labelgate_flow permissive=0 rule=db-by-selinux' <"$r")"
check a-record-echo-granted test -n "$(avc_select granted "$CTX_ROOT" "$CTX_ROOT" 'dest=5433 .*rule=root-to-echo' <"$r")"
check a-no-recv-asked test -z "$(grep -E '\{ recv \}' <"$r" | grep -F "tcontext=$CTX_PG ")"

# b. audit2allow on apache's records: the send at output. Loaded, without
# restarting labelgate: apache's SYN passes output and is refused at input.
stage "selinux-flow b: audit2allow round 1"
propose b "$m0" "allow httpd_t postgresql_t:labelgate_flow send;"
same_labelgate b-same-labelgate
m1="$(records_mark)"
apache_db b-apache-refused-at-input 503
root_refused b-root-refused
records_since "$m1" >"$LGT_OUT/selinux-flow-records-b.log"
r="$LGT_OUT/selinux-flow-records-b.log"
check b-record-apache-granted-send test -n "$(avc_select granted "$CTX_HTTPD" "$CTX_PG" '\{ send \} .*comm="apache2".* dest=5432 .*tclass=labelgate_flow permissive=0 rule=db-by-selinux' <"$r")"
check b-record-apache-denied-recv test -n "$(avc_select denied "$CTX_HTTPD" "$CTX_PG" '\{ recv \} .* dest=5432 .*tclass=labelgate_flow permissive=0 rule=db-by-selinux' <"$r")"
check b-no-send-denial-for-apache test -z "$(avc_select denied "$CTX_HTTPD" "$CTX_PG" '\{ send \}' <"$r")"

# c. The same commands again: the recv at input joins the send. Loaded:
# apache reaches PostgreSQL; the root shell, which no rule names, is still
# refused.
stage "selinux-flow c: audit2allow round 2"
propose c "$m0" "allow httpd_t postgresql_t:labelgate_flow recv; allow httpd_t postgresql_t:labelgate_flow send;"
# audit2allow read the records against the loaded policy: round 1's send is
# in it now.
check c-audit2allow-says-send-allowed bash -c "grep -A1 -F '#!!!! This avc is allowed in the current policy' '$W/c/proposal.txt' | grep -qx 'allow httpd_t postgresql_t:labelgate_flow send;'"
same_labelgate c-same-labelgate
m2="$(records_mark)"
apache_db c-apache-reaches-db 502
root_refused c-root-refused
explain c-explain-allowed httpd_t 'allowed \{ send \}' accept
explain c-explain-root-denied "$CTX_ROOT" 'denied \{ send \}' drop
records_since "$m2" >"$LGT_OUT/selinux-flow-records-c.log"
r="$LGT_OUT/selinux-flow-records-c.log"
check c-record-apache-granted-send test -n "$(avc_select granted "$CTX_HTTPD" "$CTX_PG" '\{ send \} .*comm="apache2".* dest=5432 .*rule=db-by-selinux' <"$r")"
check c-record-apache-granted-recv test -n "$(avc_select granted "$CTX_HTTPD" "$CTX_PG" '\{ recv \} .* dest=5432 .*rule=db-by-selinux' <"$r")"
check c-no-denial-for-apache test -z "$(avc_select denied "$CTX_HTTPD" "$CTX_PG" <"$r")"
check c-record-root-denied test -n "$(avc_select denied "$CTX_ROOT" "$CTX_PG" '\{ send \} .* dest=5432 .*permissive=0 rule=db-by-selinux' <"$r")"

# d. The same rule written by hand as a .te module, built with the reference
# policy's development Makefile, in place of audit2allow's web_db (one
# transaction): the outcome is the same.
stage "selinux-flow d: a hand-written .te module"
cat >"$W/web_db_flow.te" <<'TE'
policy_module(web_db_flow, 1.0)
require {
	type httpd_t;
	type postgresql_t;
	class labelgate_flow { send recv };
}
# Only the web server may talk to the database (labelgate decides the flow).
allow httpd_t postgresql_t:labelgate_flow { send recv };
TE
cp "$W/web_db_flow.te" "$LGT_OUT/selinux-flow-web_db_flow.te"
if (cd "$W" && make -f /usr/share/selinux/devel/Makefile web_db_flow.pp) >"$LGT_OUT/selinux-flow-te-build.log" 2>&1; then
  pass d-te-builds
else
  fail d-te-builds "$(tail -n 3 "$LGT_OUT/selinux-flow-te-build.log" | tr '\n' ' ')"
fi
if semodule -r web_db -i "$W/web_db_flow.pp" >"$W/semodule-d.log" 2>&1; then pass d-te-replaces-proposals
else fail d-te-replaces-proposals "$(tail -n 3 "$W/semodule-d.log" | tr '\n' ' ')"; fi
check d-modules-listed bash -c 'm="$(semodule -l)"; grep -qx web_db_flow <<<"$m" && ! grep -qx web_db <<<"$m"'
same_labelgate d-same-labelgate
m3="$(records_mark)"
apache_db d-apache-reaches-db 502
root_refused d-root-refused
records_since "$m3" >"$LGT_OUT/selinux-flow-records-d.log"
r="$LGT_OUT/selinux-flow-records-d.log"
check d-no-denial-for-apache test -z "$(avc_select denied "$CTX_HTTPD" "$CTX_PG" <"$r")"
check d-record-apache-granted test -n "$(avc_select granted "$CTX_HTTPD" "$CTX_PG" '\{ send \} .*comm="apache2".* dest=5432 .*rule=db-by-selinux' <"$r")"

# e. The root shell's domain made permissive by the policy: let through in
# labelgate too, recorded permissive=1; made enforcing again: refused.
stage "selinux-flow e: semanage permissive"
if semanage permissive -a unconfined_t >"$W/permissive-a.log" 2>&1; then pass e-permissive-added
else fail e-permissive-added "$(tail -n 3 "$W/permissive-a.log" | tr '\n' ' ')"; fi
same_labelgate e-same-labelgate
m4="$(records_mark)"
expect_eq e-root-psql-reaches-db "$(psql_tcp)" 42 "psql over TCP from the root shell, unconfined_t permissive"
records_since "$m4" >"$LGT_OUT/selinux-flow-records-e.log"
r="$LGT_OUT/selinux-flow-records-e.log"
check e-record-root-permissive test -n "$(avc_select denied "$CTX_ROOT" "$CTX_PG" '\{ send \} .*comm="psql".* dest=5432 .*tclass=labelgate_flow permissive=1 rule=db-by-selinux' <"$r")"
if semanage permissive -d unconfined_t >"$W/permissive-d.log" 2>&1; then pass e-permissive-removed
else fail e-permissive-removed "$(tail -n 3 "$W/permissive-d.log" | tr '\n' ' ')"; fi
same_labelgate e-same-labelgate-after
m5="$(records_mark)"
root_refused e-root-refused-again
apache_db e-apache-reaches-db 502
records_since "$m5" >"$LGT_OUT/selinux-flow-records-e2.log"
r="$LGT_OUT/selinux-flow-records-e2.log"
check e-record-root-denied-again test -n "$(avc_select denied "$CTX_ROOT" "$CTX_PG" '\{ send \} .* dest=5432 .*permissive=0 rule=db-by-selinux' <"$r")"

echo_server_stop
scenario_end
