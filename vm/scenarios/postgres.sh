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

# psql CTX: run `select 42` as CTX over TCP; print the answer.
psql_in() {
  timeout 20 runcon "$1" env PGCONNECT_TIMEOUT=5 psql -X -w -At -h 127.0.0.1 -p 5432 \
    -U postgres -c 'select 42' 2>>"$LG_WORK/postgres-psql.err"
}
check baseline-intruder test "$(psql_in "$CTX_INTRUDER")" = 42

AUDIT="$LG_WORK/postgres-audit.log"
POL="$(write_policy policy <<'TOML'
mode = "enforcing"
default = "drop"
[sets]
web = ["httpd_t"]
[[rule]]
name = "web-to-db"
hook = "output"
source = "@web"
dest = "postgresql_t"
proto = "tcp"
dport = 5432
verdict = "accept"
TOML
)"
queue_out 5432
lg_start "$POL" "$AUDIT"

out="$(psql_in "$CTX_HTTPD" || true)"
if [ "$out" = 42 ]; then pass psql-httpd; else fail psql-httpd "got '$out': $(tail -n2 "$LG_WORK/postgres-psql.err")"; fi
out="$(psql_in "$CTX_INTRUDER" || true)"
if [ -z "$out" ]; then pass psql-intruder-refused; else fail psql-intruder-refused "got '$out'"; fi

lg_stop || fail labelgate-exit "labelgate exited non-zero on SIGTERM"
check_avc avc-intruder "$AUDIT" denied send "$CTX_INTRUDER" "$CTX_PG" "dest=5432 .*permissive=0"
check_no_avc avc-no-httpd-denial "$AUDIT" denied send "$CTX_HTTPD" "$CTX_PG"

stop_all
umount "$PGROOT" 2>/dev/null || true
scenario_end
