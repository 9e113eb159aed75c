#!/bin/sh
# The exec race of `labelgate run --offload` (docs/OFFLOAD.md), measured, as root:
#
#   bench/offload-execrace.sh [LABELGATE_BINARY] [ROUNDS]
#
# ROUNDS times (default 100): a process in a cgroup of its own connects until
# the kernel accepts it without queueing (the element is in), then execs
# another path to the same program, which the policy refuses, and that
# connects at once. Prints how often that connection was let through by the
# element ("ok 0": labelgate had not removed it yet), queued and accepted
# ("ok N": labelgate's own decision, see OFFLOAD.md on the resolver), or
# refused. A fresh network namespace, loopback only; every wait bounded.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$(dirname "$here")/target/release/labelgate}
rounds=${2:-100}
work=$(mktemp -d)
ns=lg-execrace-$$
q=90
port=7201
mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
cg=$mnt/lg-execrace-$$
gcc -O2 -Wall -Wextra -o "$work/race-a" "$here/offload-execrace.c"
cp "$work/race-a" "$work/race-b"
cat > "$work/policy.toml" <<POL
default = "drop"
[[rule]]
name = "race-a"
source_exe = "$work/race-a"
proto = "tcp"
dport = $port
verdict = "accept"
POL
ip netns add "$ns"
cleanup() {
    [ -n "${lg:-}" ] && kill "$lg" 2>/dev/null && wait "$lg" 2>/dev/null
    [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null
    ip netns del "$ns" 2>/dev/null || true
    rmdir "$cg" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" "$bin" rules --policy "$work/policy.toml" --flow --queues $q --install >/dev/null 2>&1
ip netns exec "$ns" python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(128); s.settimeout(0.2); end = time.time() + 600
while time.time() < end:
    try: s.accept()[0].close()
    except socket.timeout: pass" &
srv=$!
ip netns exec "$ns" "$bin" run --policy "$work/policy.toml" --queue $q --flow --offload 2>"$work/labelgate.log" &
lg=$!
i=0
while ! ip netns exec "$ns" grep -q "^ *$q " /proc/net/netfilter/nfnetlink_queue; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "labelgate did not start" >&2; cat "$work/labelgate.log" >&2; exit 1; }
    sleep 0.05
done
mkdir "$cg"
through=0; decided_ok=0; refused=0; none=0
i=0
while [ $i -lt "$rounds" ]; do
    out=$(timeout 10 sh -c 'echo $$ > "$0/cgroup.procs" && exec ip netns exec "$1" "$2/race-a" "$3" "$4" "$2/race-b"' \
        "$cg" "$ns" "$work" $q $port || echo error)
    case "$out" in
        "ok 0") through=$((through + 1)) ;;
        ok*) decided_ok=$((decided_ok + 1)) ;;
        fail*) refused=$((refused + 1)) ;;
        *) none=$((none + 1)) ;;
    esac
    i=$((i + 1))
done
echo "rounds=$rounds let_through_by_element=$through queued_and_accepted=$decided_ok refused=$refused no_element_or_error=$none"
