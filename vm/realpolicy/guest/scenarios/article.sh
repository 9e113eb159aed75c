#!/bin/bash
# Scenario article (issue 15, 2.1): the article for real. labelgate is run by
# its packaged unit with the article's table in /etc/labelgate/policy.toml and
# the queue rules the unit installs with `labelgate rules --install`. apache
# (httpd_t, started by systemd) reaches PostgreSQL (postgresql_t, started by
# systemd) on 5432 through mod_proxy; psql and socat from a root login shell
# (unconfined_t) are refused, while the same shell reaches an allowed target
# (socat to 5433) and, before the table is installed, PostgreSQL itself (psql,
# under the packaged starter policy); PostgreSQL's unix-socket clients are
# untouched. Run twice: with the kernel permissive (as booted) and enforcing
# (the reference policy enforced on everything, labelgate_t included; apache
# needs the boolean httpd_can_network_connect_db to dial a database port).
set -uo pipefail
. /usr/local/lib/labelgate-tests/common.sh
scenario_begin article

# The real contexts, as systemd started the services.
ps -eZ >"$LGT_OUT/article-ps.txt"
check apache-in-httpd_t bash -c "ps -eo label,comm | grep -q '^system_u:system_r:httpd_t:s0 *apache2\$'"
check postgres-in-postgresql_t bash -c "ps -eo label,comm | grep -q '^system_u:system_r:postgresql_t:s0 *postgres\$'"
expect_eq root-login-context "$(as_root_login 'id -Z')" "$CTX_ROOT" "a root login shell's context"
check postgres-socket-context bash -c "ss -Htlnp -Z 'sport = :5432' | grep -q 'postgresql_t'"

echo_server_start || fail echo-server "socat did not listen on $ECHO_PORT"

# Same run, same clients, before the article's table: the packaged starter
# policy (permissive, accept) lets the root shell reach PostgreSQL. This is
# the positive control of the psql refusal below.
install_policy "$LGT_OUT/packaged-policy.toml"
lg_restart unit-restarts-starter
baseline="$(psql_tcp)"
expect_eq root-psql-reaches-db-before "$baseline" 42 "psql over TCP from the root shell, starter policy"

run_article() {   # SUFFIX
  local sfx="$1" mark out
  article_policy >"$LGT_OUT/article-policy.toml"
  install_policy "$LGT_OUT/article-policy.toml"
  out="$(labelgate check "$LG_POLICY" 2>&1)"
  check "policy-checks$sfx" grep -q 'all types are known to the loaded SELinux policy' <<<"$out"
  lg_restart "unit-restarts$sfx" || return 1
  expect_eq "labelgate-in-labelgate_t$sfx" "$(lg_ctx)" system_u:system_r:labelgate_t:s0 "labelgate's context"
  iptables -t security -S >"$LGT_OUT/article-rules$sfx.txt" 2>&1
  check "queue-rules-installed$sfx" grep -q -- '-j NFQUEUE --queue-num 0' "$LGT_OUT/article-rules$sfx.txt"
  mark="$(records_mark)"

  expect_eq "apache-reaches-db$sfx" "$(http_db)" 502 "HTTP status of /db (502: apache's connect to 5432 was accepted)"
  expect_eq "root-shell-reaches-echo$sfx" "$(tcp_try "$ECHO_PORT")" "pong-$ECHO_PORT" "socat from the root shell to the allowed port"
  out="$(psql_tcp)"
  log "psql from the root shell: $out"
  if grep -qiE 'timeout expired|timed out' <<<"$out"; then pass "root-psql-refused$sfx"
  else fail "root-psql-refused$sfx" "psql answered '$out' (want a connect timeout)"; fi
  expect_eq "root-socat-refused$sfx" "$(tcp_try 5432)" "" "socat from the root shell to 5432"
  expect_eq "unix-socket-untouched$sfx" "$(psql_unix)" 42 "psql over the unix socket"

  records_since "$mark" >"$LGT_OUT/article-records$sfx.log"
  local r="$LGT_OUT/article-records$sfx.log"
  check "record-psql-denied$sfx" test -n "$(avc_select denied "$CTX_ROOT" "$CTX_PG" 'comm="psql".* dest=5432 .*permissive=0' <"$r")"
  check "record-socat-denied$sfx" test -n "$(avc_select denied "$CTX_ROOT" "$CTX_PG" 'comm="socat".* dest=5432 .*permissive=0' <"$r")"
  check "record-apache-granted$sfx" test -n "$(avc_select granted "$CTX_HTTPD" "$CTX_PG" 'comm="apache2".* dest=5432 .*rule=web-to-db' <"$r")"
  check "record-echo-granted$sfx" test -n "$(avc_select granted "$CTX_ROOT" "$CTX_ROOT" 'dest=5433 .*rule=root-to-echo' <"$r")"
  check "no-denial-for-apache$sfx" test -z "$(avc_select denied "$CTX_HTTPD" "$CTX_PG" <"$r")"
}

run_article ""

# Enforcing kernel: the reference policy now decides too.
if setsebool httpd_can_network_connect_db 1; then pass boolean-db-connect
else fail boolean-db-connect "setsebool httpd_can_network_connect_db 1 failed"; fi
setenforce 1
expect_eq kernel-enforcing "$(getenforce)" Enforcing
run_article "-enforcing"
setenforce 0
expect_eq kernel-permissive-again "$(getenforce)" Permissive

echo_server_stop
scenario_end
