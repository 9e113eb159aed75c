#!/bin/bash
# (2) Real workload: Debian's PostgreSQL 15 in postgresql_t; psql from httpd_t
# gets its answer, psql from intruder_t (same uid) does not.
set -euo pipefail
. "$(dirname "$0")/../guest/common.sh"
scenario_begin postgres
lg_require

PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
PGROOT=/run/lg-postgres   # tmpfs: 9p rwdir does not let the postgres user write
mkdir -p "$PGROOT"
mountpoint -q "$PGROOT" || mount -t tmpfs -o size=256m tmpfs "$PGROOT"
mkdir -p "$PGROOT/data" "$PGROOT/sock"
chown -R postgres:postgres "$PGROOT"
as_pg() { runcon "$CTX_PG" setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

t0=$(date +%s)
if as_pg "$PGBIN/initdb" -D "$PGROOT/data" -U postgres -A trust --no-sync >"$LG_WORK/postgres-initdb.log" 2>&1; then
  pass initdb
else
  fail initdb "$(tail -n3 "$LG_WORK/postgres-initdb.log")"; scenario_end; exit 1
fi
log "initdb took $(( $(date +%s) - t0 ))s"
start_in "$CTX_PG" "$LG_WORK/postgres-server.log" \
  setpriv --reuid=postgres --regid=postgres --init-groups \
  "$PGBIN/postgres" -D "$PGROOT/data" -k "$PGROOT/sock" -p 5432 \
  -c listen_addresses=127.0.0.1 -c fsync=off
wait_listen 5432 60 || { fail server-up "$(tail -n5 "$LG_WORK/postgres-server.log")"; scenario_end; exit 1; }
log "server listening after $(( $(date +%s) - t0 ))s: $(ss -Htlnpz 'sport = :5432' | head -n1)"

# probe_psql CLIENT PORT (target psql:PORT, see probe in common.sh): run
# `select 42` as CLIENT over TCP; reached if 42 comes back, refused if the
# connection timed out, broken otherwise.
probe_psql() {
  local err="$LG_WORK/postgres-psql.err" out
  client_cmd "$1"
  out="$(timeout 90 "${CLIENT_CMD[@]}" env PGCONNECT_TIMEOUT="$LG_CONNECT_TIMEOUT" \
    psql -X -w -At -h 127.0.0.1 -p "$2" -U postgres -c 'select 42' 2>"$err")" || true
  if [ "$out" = 42 ]; then PROBE_DETAIL="got 42"; return 0; fi
  if grep -q 'timeout expired' "$err"; then PROBE_DETAIL="no connection: timeout expired"; return 1; fi
  PROBE_DETAIL="psql: out '${out:0:60}', $(head -n2 "$err" | tr '\n' ' ' | cut -c1-200)"
  return 2
}
expect_reached baseline-intruder "$CTX_INTRUDER" psql:5432

AUDIT="$LG_WORK/postgres-audit.log"
POL="$(web_db_policy policy)"   # vm/policies/web-db.toml
queue_out 5432
lg_start "$POL" "$AUDIT"

expect_reached psql-httpd "$CTX_HTTPD" psql:5432
expect_refused psql-intruder-refused "$CTX_INTRUDER" psql:5432 "$CTX_HTTPD" "$LG_CONTROL_PORT"

lg_stop || fail labelgate-exit "labelgate exited non-zero on SIGTERM"
check_avc avc-intruder "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=5432 .*permissive=0"
check_no_avc avc-no-httpd-denial "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG"

stop_all
umount "$PGROOT" 2>/dev/null || true
scenario_end
