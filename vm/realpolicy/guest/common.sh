# Guest-side helpers of the real-policy tier (vm/realpolicy). Source, do not
# run. The runner (run.sh) runs as root in unconfined_t (the context of a root
# login under Debian's reference policy); clients that stand for "a root login
# shell" run through `su -l root`.

LGT_DIR=/usr/local/lib/labelgate-tests
LGT_OUT=/var/log/labelgate-tests
LG_AUDIT=/var/log/labelgate/audit.log
LG_POLICY=/etc/labelgate/policy.toml
CTX_ROOT="unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"
CTX_HTTPD="system_u:system_r:httpd_t:s0"
CTX_PG="system_u:system_r:postgresql_t:s0"
ECHO_PORT=5433
SCENARIO="${SCENARIO:-runner}"
SCENARIO_FAILS=0

log() { printf '%s [%s] %s\n' "$(date +%T)" "$SCENARIO" "$*"; }

# console LINE: one line on the serial console (the host reads the results
# from there) and in the runner's log.
console() {
  printf '%s\n' "$1" >/dev/ttyS0 2>/dev/null || true
  printf '%s\n' "$1"
}
stage() { console "STAGE $*"; }
pass() { console "RESULT PASS $SCENARIO/$1"; }
fail() {
  SCENARIO_FAILS=$((SCENARIO_FAILS + 1))
  console "RESULT FAIL $SCENARIO/$1 ${2:-}"
}
# check NAME CMD...: pass when CMD succeeds, fail otherwise.
check() {
  local n="$1"; shift
  if "$@"; then pass "$n"; else fail "$n" "($*)"; fi
}
# expect_eq NAME GOT WANT [WHAT]
expect_eq() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "${4:-value}: got '$2', want '$3'"; fi
}

# ------------------------------------------------------------ clients ----
# as_root_login CMD: run the shell command CMD in a root login shell.
as_root_login() { su -l root -s /bin/bash -c "$1"; }

# http_db: the HTTP status of apache's /db (proxied by apache to 5432),
# requested from a root login shell.
http_db() {
  as_root_login "curl -s -o /dev/null -w '%{http_code}' --max-time 40 http://127.0.0.1/db" 2>/dev/null || true
}

# psql_tcp [SOURCEPORT-ignored]: `select 42` over TCP from a root login
# shell; prints psql's answer or its error (10 s connect timeout).
psql_tcp() {
  as_root_login "PGCONNECT_TIMEOUT=10 psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -XAtc 'select 42'" 2>&1 || true
}

# psql_unix: `select 42` over PostgreSQL's unix socket, as the postgres user.
psql_unix() {
  runuser -u postgres -- psql -XAtc 'select 42' 2>&1 || true
}

# tcp_try PORT [SOURCEPORT]: connect from a root login shell to
# 127.0.0.1:PORT with socat; prints what the server answered (empty when
# refused). 8 s to connect: a dropped SYN is resent after 1 s and 3 s.
tcp_try() {
  local sp=""
  [ -n "${2:-}" ] && sp=",sourceport=$2,reuseaddr"
  as_root_login "timeout 25 socat -T8 -t8 - TCP4:127.0.0.1:$1,connect-timeout=8$sp </dev/null" 2>/dev/null || true
}

# echo_server_start: socat answering "pong-5433" on 127.0.0.1:5433 (the
# allowed target of the positive controls), in the runner's context.
ECHO_PID=""
echo_server_start() {
  [ -n "$ECHO_PID" ] && kill -0 "$ECHO_PID" 2>/dev/null && return 0
  socat -t8 "TCP4-LISTEN:$ECHO_PORT,bind=127.0.0.1,reuseaddr,fork" "SYSTEM:echo pong-$ECHO_PORT" \
    >"$LGT_OUT/echo-server.log" 2>&1 &
  ECHO_PID=$!
  wait_listen "$ECHO_PORT" 30
}
echo_server_stop() {
  [ -n "$ECHO_PID" ] && kill "$ECHO_PID" 2>/dev/null
  ECHO_PID=""
}

# wait_listen PORT SECONDS
wait_listen() {
  local i
  for ((i = 0; i < $2; i++)); do
    ss -Htln "sport = :$1" | grep -q . && return 0
    sleep 1
  done
  log "nothing listens on port $1"; return 1
}

# --------------------------------------------------------- labelgate ----
lg_pid() { systemctl show -p MainPID --value labelgate.service; }
lg_ctx() {
  local p; p="$(lg_pid)"
  [ -n "$p" ] && [ "$p" != 0 ] && tr -d '\0' <"/proc/$p/attr/current" 2>/dev/null
}
# queue_portid N: the netlink port bound to queue N ("" when none).
queue_portid() { awk -v q="$1" '$1 == q {print $2}' /proc/net/netfilter/nfnetlink_queue 2>/dev/null; }
queue_field() { awk -v q="$1" -v f="$2" '$1 == q {print $f}' /proc/net/netfilter/nfnetlink_queue 2>/dev/null; }

# lg_wait_ready [OLD_PORTID]: wait (120 s) until the unit is active and a
# process other than OLD_PORTID's is bound to queue 0.
lg_wait_ready() {
  local old="${1:-}" i st p
  for ((i = 0; i < 240; i++)); do
    st="$(systemctl is-active labelgate.service)"
    p="$(queue_portid 0)"
    if [ "$st" = active ] && [ -n "$p" ] && [ "$p" != "$old" ]; then return 0; fi
    case "$st" in failed) break;; esac
    sleep 0.5
  done
  log "labelgate not ready: state=$st queue0=${p:-unbound}"
  journalctl -u labelgate.service -n 30 --no-pager | sed 's/^/    /'
  return 1
}

# lg_restart NAME: restart the unit and check it came up bound to the queue.
lg_restart() {
  local old; old="$(queue_portid 0)"
  systemctl restart labelgate.service || log "systemctl restart returned $?"
  if lg_wait_ready "$old"; then pass "$1"; else fail "$1" "unit not active and bound after restart"; return 1; fi
}

# install_policy FILE: make FILE the unit's policy.
install_policy() { install -m 600 "$1" "$LG_POLICY"; }

# records_mark / records_since: labelgate's audit file from a mark on.
records_mark() { wc -l <"$LG_AUDIT" 2>/dev/null || echo 0; }
records_since() { tail -n +"$(($1 + 1))" "$LG_AUDIT" 2>/dev/null; }

# avc_select OUTCOME SCTX TCTX [REGEX]: from standard input, labelgate's
# records of OUTCOME (denied|granted) from SCTX to TCTX matching REGEX.
# Denials read "avc:  denied", grants "labelgate:  granted" (no SELinux tool
# takes a grant for a missing allow rule; docs/AUDIT.md).
avc_select() {
  local prefix=avc
  [ "$1" = granted ] && prefix=labelgate
  grep -E "$prefix: +$1 " | grep -F "scontext=$2 " | grep -F "tcontext=$3 " | grep -E -- "${4:-.}" || true
}

# journal_mark: a cursor at the journal's end, for journal_wait.
journal_mark() { journalctl -n 0 --show-cursor --no-pager 2>/dev/null | sed -n 's/^-- cursor: //p'; }
# journal_poll SECS PATTERN JOURNALCTL_ARGS...: `journalctl -o cat ARGS`,
# asked again every 0.5 s until a line matches PATTERN (grep -E) or SECS
# have passed; prints the last answer. journald reads a service's stderr
# stream on its own time: a line written just before `systemctl stop`
# returns may reach the journal a moment later.
journal_poll() {
  local deadline=$((SECONDS + $1)) pattern="$2" out
  shift 2
  while :; do
    out="$(journalctl --no-pager -o cat "$@" 2>/dev/null)"
    if grep -qE -- "$pattern" <<<"$out" || [ "$SECONDS" -ge "$deadline" ]; then break; fi
    sleep 0.5
  done
  printf '%s\n' "$out"
}
# journal_wait MARK UNIT PATTERN [SECS]: the unit's journal from MARK on,
# once a line matches PATTERN or SECS (default 15) have passed. A line a
# service writes just before it exits can reach journald after its cgroup
# is gone and then lacks _SYSTEMD_UNIT: the unit's own lines are also
# matched by the identifier its stdout stream carries (SYSLOG_IDENTIFIER).
journal_wait() {
  journal_poll "${4:-15}" "$3" --after-cursor="$1" "_SYSTEMD_UNIT=$2" + "UNIT=$2" + "SYSLOG_IDENTIFIER=${2%.service}"
}
# journal_since MARK UNIT: the unit's journal from MARK on, as it is now
# (selected as journal_wait does; for checking that a line is absent).
journal_since() {
  journalctl --no-pager -o cat --after-cursor="$1" "_SYSTEMD_UNIT=$2" + "UNIT=$2" + "SYSLOG_IDENTIFIER=${2%.service}" 2>/dev/null
}

# article_policy: the article's table for these scenarios (queue rules come
# from it: every new connection on input and output is decided).
article_policy() {
  cat <<'TOML'
# The article for real: only the web server may talk to the database.
mode = "enforcing"
default = "accept"

[[rule]]
name = "web-to-db"
source = "httpd_t"
dest = "postgresql_t"
proto = "tcp"
dport = 5432
verdict = "accept"
audit = true

[[rule]]
name = "root-to-echo"
source = "unconfined_t"
dest = "unconfined_t"
proto = "tcp"
dport = 5433
verdict = "accept"
audit = true

[[rule]]
name = "db-port-others"
proto = "tcp"
dport = 5432
verdict = "drop"
TOML
}

# ---------------------------------------------------------- scenarios ----
scenario_begin() {
  SCENARIO="$1"; SCENARIO_FAILS=0
  stage "$SCENARIO begins ($(getenforce) kernel)"
}
scenario_end() {
  local v=PASS
  [ "$SCENARIO_FAILS" -eq 0 ] || v=FAIL
  console "SCENARIO $SCENARIO $v"
  [ "$v" = PASS ]
}
