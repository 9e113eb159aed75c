#!/usr/bin/env python3
"""New connections per second with `labelgate run --flow --offload` (docs/OFFLOAD.md), as root.

    bench/offload.py [--rounds N] [--seconds S] [--clients 1,8] [LABELGATE_BINARY]

Runs bench.py's `conn` workload (netprobe tcp-connect on the loopback of a
fresh network namespace, the 1000-rule bench policy) for B0 (no queue), B3
(labelgate --flow) and B3o (labelgate --flow --offload), interleaved over
the rounds, and prints the medians, and the medians of the ratios to B0
within each round.
The client and server processes run in a cgroup of their own (the bench
policy's accepting rule names no process, so the decision qualifies for
offloading); B0 and B3 run in it too, so only the flag differs. Needs the C tools that bench/run.sh builds
(it builds them here the same way). Bounded: each run lasts S seconds.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402


def cgroup2_mount():
    for line in open("/proc/self/mounts"):
        f = line.split()
        if len(f) > 2 and f[2] == "cgroup2":
            return f[1]
    raise SystemExit("no cgroup2 mount")


def wrapper(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("labelgate", nargs="?", default=os.path.join(os.path.dirname(HERE), "target/release/labelgate"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", default="1,8")
    a = ap.parse_args()
    tools = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "labelgate-bench")
    os.makedirs(tools, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", os.path.join(tools, "netprobe"), os.path.join(HERE, "netprobe.c")], check=True)
    B.C.tmp = tempfile.mkdtemp(prefix="labelgate-offload-bench-")
    B.C.dur = a.seconds
    real = os.path.abspath(a.labelgate)
    cg = os.path.join(cgroup2_mount(), "lgbench-offload-%d" % os.getpid())
    os.mkdir(cg)
    # netprobe (server and clients) moves itself into the cgroup, then runs
    # (through this process's root: `ip netns exec` mounts a fresh /sys).
    procs = "/proc/%d/root%s/cgroup.procs" % (os.getpid(), cg)
    B.C.netprobe = wrapper(os.path.join(B.C.tmp, "netprobe"),
                           'echo $$ > %s && exec %s "$@"\n' % (procs, os.path.join(tools, "netprobe")))
    # `labelgate run` with --offload appended (B3o); `rules` unchanged.
    offload = wrapper(os.path.join(B.C.tmp, "labelgate-offload"),
                      'case " $* " in *" run "*) exec %s "$@" --offload ;; *) exec %s "$@" ;; esac\n' % (real, real))
    clients = [int(c) for c in a.clients.split(",")]
    res = {n: {v: [] for v in ["B0", "B3", "B3o"]} for n in clients}
    B.log("offload bench: %s; %d round(s) of %.1f s; clients %s" % (B.machine(), a.rounds, a.seconds, clients))
    try:
        B.policy(1000)
        for rnd in range(a.rounds):
            for n in clients:
                for v in B.xs_rot(["B0", "B3", "B3o"], rnd):
                    B.C.labelgate = offload if v == "B3o" else real
                    r = B.w_conn("B3" if v == "B3o" else v, n)
                    res[n][v].append(r)
                    B.log("  round %d clients %d %s: %.0f conn/s p99 %.0f us queued %d" %
                          (rnd, n, v, r["conn_s"], r["p99_us"], r["queued"]))
    finally:
        try:
            os.rmdir(cg)
        except OSError:
            pass
    print("| clients | B0 conn/s | B3 conn/s | B3o conn/s | B3/B0 | B3o/B0 (min-max) | p99 µs B0 / B3 / B3o | "
          "queued per conn B3 / B3o |")
    print("|---|---|---|---|---|---|---|---|")
    for n in clients:
        m = {v: statistics.median(x["conn_s"] for x in res[n][v]) for v in res[n]}
        p99 = {v: statistics.median(x["p99_us"] for x in res[n][v]) for v in res[n]}
        q = {v: sum(x["queued"] for x in res[n][v]) / max(1, sum(x["conns"] for x in res[n][v])) for v in res[n]}
        # Ratios within each round (same minute of a shared machine), then their median.
        ratio = lambda v: [x["conn_s"] / b["conn_s"] for x, b in zip(res[n][v], res[n]["B0"])]  # noqa: E731
        ro = ratio("B3o")
        print("| %d | %.0f | %.0f | %.0f | %.2f | %.2f (%.2f-%.2f) | %.0f / %.0f / %.0f | %.3f / %.4f |" %
              (n, m["B0"], m["B3"], m["B3o"], statistics.median(ratio("B3")), statistics.median(ro), min(ro),
               max(ro), p99["B0"], p99["B3"], p99["B3o"], q["B3"], q["B3o"]))

if __name__ == "__main__":
    main()
