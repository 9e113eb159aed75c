#!/bin/sh
# labelgate's end-to-end benchmark: one command, as root.
#
#   bench/run.sh [--quick] [--rounds N] [--out FILE] [--json FILE] [--only W1,W2] [--big-rules N] [LABELGATE_BINARY]
#
# The labelgate binary is the positional argument, else $LABELGATE, else
# ${CARGO_TARGET_DIR:-target}/release/labelgate (build it with
# `cargo build --release`). Builds the C tools (bench/*.c) into a cache
# folder, installs missing Debian packages (iperf3, libnetfilter-queue-dev,
# gcc, curl), then runs bench/bench.py: every measurement in a fresh network
# namespace on its loopback, about 10 minutes (--quick: about 2).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

args=""
bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) args="$args --quick" ;;
        --rounds|--out|--json|--only|--big-rules) args="$args $1 $2"; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) bin=$1 ;;
    esac
    shift
done
bin=${bin:-${LABELGATE:-${CARGO_TARGET_DIR:-$root/target}/release/labelgate}}
if [ ! -x "$bin" ]; then
    echo "no labelgate binary at $bin: run 'cargo build --release' or pass its path" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "bench/run.sh needs root (network namespaces, iptables, NFQUEUE)" >&2
    exit 2
fi

need=""
command -v iperf3 >/dev/null 2>&1 || need="$need iperf3"
command -v gcc >/dev/null 2>&1 || need="$need gcc"
command -v curl >/dev/null 2>&1 || need="$need curl"
command -v iptables >/dev/null 2>&1 || need="$need iptables"
command -v taskset >/dev/null 2>&1 || need="$need util-linux"
[ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || need="$need libnetfilter-queue-dev"
if [ -n "$need" ]; then
    echo "installing:$need" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "warning: fewer than 2 CPUs; generator and consumer will share one" >&2
fi

tools=${XDG_CACHE_HOME:-$HOME/.cache}/labelgate-bench
mkdir -p "$tools"
cflags="-O2 -Wall -Wextra"
gcc $cflags -o "$tools/nfq-accept" "$here/nfq-accept.c" -lnetfilter_queue
gcc $cflags -o "$tools/udpflood" "$here/udpflood.c"
gcc $cflags -o "$tools/netprobe" "$here/netprobe.c"

exec python3 "$here/bench.py" --labelgate "$bin" --tools "$tools" $args
