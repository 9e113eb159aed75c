#!/usr/bin/env python3
"""labelgate's end-to-end benchmark (run through bench/run.sh, as root).

Every measurement runs in a fresh network namespace made for it (traffic on
its loopback only), with the traffic generator pinned to CPU 0 and the queue
consumer to CPU 1. The variants are interleaved over several rounds and the
medians reported; the final table holds ratios between variants measured in
the same run. Every load loop is bounded in count and time.

    bench.py --labelgate PATH --tools DIR [--quick] [--rounds N] [--out FILE]
"""
import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.path.join(HERE, "gen-policy.py")
NS_PREFIX = "lgb-%d-" % os.getpid()
CLK_TCK = os.sysconf("SC_CLK_TCK")
LAT_BOUNDS = [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 1e-1, 1.0]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Ctx:
    pass


C = Ctx()
_ns_counter = [0]
_live = []  # Popen objects to kill on the way out


def sh(cmd, check=True, capture=True, timeout=60):
    r = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=capture, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s %s" % (cmd, r.returncode, r.stdout, r.stderr))
    return r.stdout if capture else ""


class Netns:
    """A fresh network namespace with loopback up; deleted on exit."""

    def __init__(self):
        _ns_counter[0] += 1
        self.name = NS_PREFIX + str(_ns_counter[0])
        sh(["ip", "netns", "add", self.name])
        self.x(["ip", "link", "set", "lo", "up"])
        self.x(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"])
        self.x(["sysctl", "-q", "-w", "net.core.somaxconn=4096"])
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *a):
        for p in reversed(self.procs):
            stop(p)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def argv(self, argv, cpu=None):
        pre = ["ip", "netns", "exec", self.name]
        if cpu is not None:
            pre += ["taskset", "-c", str(cpu)]
        return pre + argv

    def x(self, argv, cpu=None, timeout=120):
        return sh(self.argv(argv, cpu), timeout=timeout)

    def spawn(self, argv, cpu=None, ready=False, stderr=None):
        p = subprocess.Popen(self.argv(argv, cpu), stdout=subprocess.PIPE, stderr=stderr or subprocess.DEVNULL, text=True)
        self.procs.append(p)
        _live.append(p)
        if ready:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError("%s did not start: %r" % (argv[0], line))
        return p

    def queue_stats(self):
        """{queue: (waiting, queue_dropped, user_dropped, id_sequence)}"""
        out = self.x(["cat", "/proc/net/netfilter/nfnetlink_queue"])
        res = {}
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 8:
                res[int(f[0])] = (int(f[2]), int(f[5]), int(f[6]), int(f[7]))
        return res

    def wait_bound(self, queues, proc, seconds=30):
        end = time.time() + seconds
        while time.time() < end:
            if all(q in self.queue_stats() for q in queues):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("consumer did not bind queues %s" % queues)


def stop(p, sig=signal.SIGTERM, wait=10):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    if p in _live:
        _live.remove(p)


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK
    except OSError:
        return float("nan")


def vm_hwm_kib(pid, field="VmHWM:"):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return float("nan")


def policy(n):
    path = os.path.join(C.tmp, "policy-%d.toml" % n)
    if not os.path.exists(path):
        with open(path, "w") as f:
            subprocess.run([sys.executable, GEN, str(n)], stdout=f, check=True)
    return path


class Consumer:
    """B1 (nfq-accept), B2 (labelgate, every packet or new only), B3 (labelgate --flow), B0 (none), or B0ct
    (no queue, but a rule that tracks connections, as every queue rule set here does)."""

    def __init__(self, ns, variant, rules_mode, nrules=1000, queues=(0,), cpu=1):
        self.ns, self.variant, self.queues = ns, variant, list(queues)
        self.proc = None
        self.metrics = os.path.join(C.tmp, ns.name + ".metrics.sock")
        if variant == "B0ct":
            for chain in ["INPUT", "OUTPUT"]:
                ns.x(["iptables", "-t", "security", "-A", chain, "-m", "conntrack", "--ctstate", "INVALID", "-j",
                      "DROP"])
            return
        if variant == "B0":
            return
        qarg = "%d-%d" % (self.queues[0], self.queues[-1]) if len(self.queues) > 1 else str(self.queues[0])
        rules = [C.labelgate, "rules", "--policy", policy(nrules), "--queues", qarg, "--install"]
        if variant == "B3":
            rules.append("--flow")
        elif rules_mode == "all":
            rules.append("--all-packets")
        ns.x(rules)
        self.err = open(os.path.join(C.tmp, "%s-%s.stderr" % (ns.name, variant)), "w")
        if variant == "B1":
            assert len(self.queues) == 1
            argv = [C.nfq_accept, str(self.queues[0]), "600"]
        else:
            argv = [C.labelgate, "--log-level", "warn", "run", "--policy", policy(nrules), "--queues", qarg,
                    "--mode", "enforcing", "--fail", "closed", "--copy-range", "256", "--queue-maxlen", "8192",
                    "--rcvbuf", str(16 << 20), "--metrics", "unix:" + self.metrics]
            if variant == "B3":
                argv.append("--flow")
        self.proc = ns.spawn(argv, cpu=cpu, stderr=self.err)
        ns.wait_bound(self.queues, self.proc)
        if variant != "B1":
            end = time.time() + 10
            while not os.path.exists(self.metrics) and time.time() < end:
                time.sleep(0.05)

    def snap(self):
        if not self.proc:
            return {"cpu": 0.0, "q": {}}
        return {"cpu": cpu_seconds(self.proc.pid), "q": self.ns.queue_stats()}

    def delta(self, a, b):
        """Queued packets (id_sequence), drops and consumer CPU seconds between two snaps."""
        queued = drops = 0
        for q, v in b["q"].items():
            w = a["q"].get(q, (0, 0, 0, 0))
            queued += v[3] - w[3]
            drops += (v[1] - w[1]) + (v[2] - w[2])
        return {"queued": queued, "drops": drops, "cpu": b["cpu"] - a["cpu"]}

    def scrape(self):
        if not self.proc or self.variant == "B1":
            return ""
        return sh(["curl", "-s", "--max-time", "5", "--unix-socket", self.metrics, "http://x/metrics"], check=False)

    def hwm_kib(self):
        return vm_hwm_kib(self.proc.pid) if self.proc else float("nan")

    def close(self):
        if self.proc:
            stop(self.proc)
            self.err.close()


def hist(text):
    """labelgate_decision_seconds buckets -> (cumulative counts by bound, count, sum)."""
    cum, count, total = {}, 0, 0.0
    for line in text.splitlines():
        m = re.match(r'labelgate_decision_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
        if m:
            cum[m.group(1)] = int(m.group(2))
        elif line.startswith("labelgate_decision_seconds_count "):
            count = int(float(line.split()[1]))
        elif line.startswith("labelgate_decision_seconds_sum "):
            total = float(line.split()[1])
    return cum, count, total


def hist_quantile(cum, count, q):
    """Upper bound of the bucket holding quantile q, in seconds (Prometheus-style, no interpolation)."""
    if not count:
        return float("nan")
    for b in LAT_BOUNDS:
        for k, v in cum.items():
            if k != "+Inf" and abs(float(k) - b) < 1e-12 and v >= q * count:
                return b
    return float("inf")


def hist_delta(a, b):
    ca, na, sa = a
    cb, nb, sb = b
    return {k: v - ca.get(k, 0) for k, v in cb.items()}, nb - na, sb - sa


def resolver_events(text):
    ev = {}
    for line in text.splitlines():
        m = re.match(r'labelgate_resolver_events_total\{event="([^"]+)"\} (\d+)', line)
        if m:
            ev[m.group(1)] = int(m.group(2))
    return ev


def parse_kv(line):
    f = line.split()
    return {f[i]: float(f[i + 1]) for i in range(0, len(f) - 1, 2)}


# ---------------------------------------------------------------- workloads

def udp_run(ns, cons, seconds, pps=0, senders=((0,),), nports=1, naddrs=1, count=None):
    """Flood 64-byte UDP to a sink; returns delivered pps, drops, CPU per queued packet."""
    sink = ns.spawn([C.udpflood, "sink", "127.0.0.1", "9000", "0.5", str(seconds + 10)], cpu=0, ready=True)
    a = cons.snap()
    ha = hist(cons.scrape())
    count = count or int(5e6 * seconds)
    snd = [ns.spawn([C.udpflood, "send", "127.0.0.1", "9000", str(count // len(senders)), str(seconds), str(pps),
                     str(nports), str(naddrs)], cpu=s[0]) for s in senders]
    sent = errors = 0
    for p in snd:
        out = parse_kv(p.communicate(timeout=seconds + 30)[0])
        sent += out["sent"]
        errors += out["errors"]
    # Let the queue drain, then read the kernel's figures.
    time.sleep(0.3)
    b = cons.snap()
    hb = hist(cons.scrape())
    got = parse_kv(sink.communicate(timeout=30)[0])
    d = cons.delta(a, b)
    span = got["seconds"] or seconds
    r = {
        "pps": got["received"] / span,
        "received": got["received"],
        "sent": sent,
        "send_errors": errors,
        "drops": d["drops"],
        "queued": d["queued"],
        "cpu_us_per_pkt": 1e6 * d["cpu"] / d["queued"] if d["queued"] else float("nan"),
        # Packets the consumer answered per second: its throughput when overloaded (every
        # datagram passes the queue twice, on OUTPUT and INPUT; a drop on INPUT wastes the first).
        "answered_per_s": d["queued"] / seconds,
    }
    hd = hist_delta(ha, hb)
    if hd[1]:
        r["decision_mean_us"] = 1e6 * hd[2] / hd[1]
    return r


def w_udp(variant, nrules=1000, seconds=None):
    seconds = seconds or C.dur
    with Netns() as ns:
        cons = Consumer(ns, variant, "all", nrules=nrules)
        r = udp_run(ns, cons, seconds)
        lost = r["drops"] + r["send_errors"] + (r["sent"] - r["received"])
        r["zero_drop"] = lost == 0
        if not r["zero_drop"] and variant != "B0":
            # Not sustainable at full speed: pace to 85% of what got through and check again.
            paced = udp_run(ns, cons, seconds, pps=0.85 * r["pps"])
            plost = paced["drops"] + paced["send_errors"] + (paced["sent"] - paced["received"])
            r["paced_pps"] = paced["pps"]
            r["paced_zero_drop"] = plost == 0
        r["sustained_pps"] = r["pps"] if r["zero_drop"] else (r.get("paced_pps") if r.get("paced_zero_drop") else 0.0)
        cons.close()
    return r


def w_udp_queues(nq):
    """Two senders, one per CPU; labelgate unpinned on 1 or 2 queues (cpu fanout)."""
    with Netns() as ns:
        cons = Consumer(ns, "B2", "all", queues=tuple(range(nq)), cpu=None)
        r = udp_run(ns, cons, C.dur, senders=((0,), (1,)))
        cons.close()
    return r


def w_tcp(variant):
    with Netns() as ns:
        cons = Consumer(ns, variant, "new")
        srv = ns.spawn(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", "5201"], cpu=0)
        time.sleep(0.3)
        a = cons.snap()
        out = ns.x(["timeout", str(C.dur + 15), "iperf3", "-c", "127.0.0.1", "-p", "5201", "-t", str(C.dur), "-J",
                    "-A", "0"], cpu=0, timeout=C.dur + 30)
        b = cons.snap()
        stop(srv)
        cons.close()
    j = json.loads(out)
    d = cons.delta(a, b)
    return {"gbps": j["end"]["sum_received"]["bits_per_second"] / 1e9, "queued": d["queued"], "drops": d["drops"]}


def connect_run(ns, cons, seconds, count, clients=1):
    # As many acceptors as clients: a lone acceptor sharing CPU 0 with 64
    # clients gets 1/65 of it, its accept queue overflows and connects
    # time out, which measures the scheduler rather than the queue.
    srv = ns.spawn([C.netprobe, "tcp-serve", "127.0.0.1", "8000", str(seconds + 10), str(clients)], cpu=0,
                   ready=True)
    a = cons.snap()
    ha = hist(cons.scrape())
    out = parse_kv(ns.x([C.netprobe, "tcp-connect", "127.0.0.1", "8000", str(count), str(seconds), str(clients)],
                        cpu=0, timeout=seconds + 30))
    time.sleep(0.1)
    b = cons.snap()
    text = cons.scrape()
    hd = hist_delta(ha, hist(text))
    stop(srv)
    d = cons.delta(a, b)
    r = {"conn_s": out["conns"] / out["seconds"], "conns": out["conns"], "errors": out["errors"],
         "p50_us": out["p50_us"], "p99_us": out["p99_us"], "queued": d["queued"], "drops": d["drops"],
         "clients": clients,
         # The consumer's CPU (B1: nfq-accept, B2/B3: labelgate) per connection made.
         "cpu_us_per_conn": 1e6 * d["cpu"] / out["conns"] if out["conns"] else float("nan")}
    if hd[1]:
        r["dec_p50_us"] = 1e6 * hist_quantile(hd[0], hd[1], 0.5)
        r["dec_p99_us"] = 1e6 * hist_quantile(hd[0], hd[1], 0.99)
        r["dec_mean_us"] = 1e6 * hd[2] / hd[1]
        r["decisions"] = hd[1]
    r["resolver"] = resolver_events(text)
    return r


def w_conn(variant, clients=1):
    """New TCP connections per second: `clients` processes connecting one at a time each."""
    with Netns() as ns:
        cons = Consumer(ns, variant, "new")
        r = connect_run(ns, cons, C.dur, 200000, clients)
        cons.close()
    return r


# Concurrent clients of the connpar workload (the serial case is `conn`).
PAR_CLIENTS = (8, 64)


def w_connpar(order):
    """New connections with several concurrent clients: {clients: {variant: result}}."""
    return {n: {v: w_conn(v, n) for v in order(["B0", "B1", "B2", "B3"])} for n in PAR_CLIENTS}


def w_latency(variant):
    with Netns() as ns:
        cons = Consumer(ns, variant, "all")
        srv = ns.spawn([C.netprobe, "udp-echo", "127.0.0.1", "9100", str(C.dur + 10)], cpu=0, ready=True)
        out = parse_kv(ns.x([C.netprobe, "udp-ping", "127.0.0.1", "9100", "20000", str(C.dur)], cpu=0,
                            timeout=C.dur + 30))
        stop(srv)
        cons.close()
    return {"p50_us": out["p50_us"], "p99_us": out["p99_us"], "replies": out["replies"], "lost": out["lost"]}


def w_crowd(nproc, nsock):
    """First-packet attribution with nproc processes holding nproc*nsock sockets in the namespace."""
    res = {}
    with Netns() as ns:
        t = time.time()
        ns.spawn([C.netprobe, "hold", str(nproc), str(nsock), str(int(C.dur * 4 + 60))], ready=True)
        res["crowd_setup_s"] = time.time() - t
        for variant in C.order(["B0", "B3"]):
            cons = Consumer(ns, variant, "new")
            # Bounded: few connections, the point is the per-connection latency.
            res[variant] = connect_run(ns, cons, C.dur, 3000)
            cons.close()
    return res


def w_rss(nrules):
    """labelgate with nrules rules after 100,000 distinct flows (every packet queued)."""
    with Netns() as ns:
        cons = Consumer(ns, "B2", "all", nrules=nrules)
        start_kib = cons.hwm_kib()
        nflows = 100000
        r = udp_run(ns, cons, 10, pps=40000, nports=50000, naddrs=2, count=nflows)
        text = cons.scrape()
        r["hwm_kib"] = cons.hwm_kib()
        r["rss_kib"] = vm_hwm_kib(cons.proc.pid, "VmRSS:")
        r["hwm_start_kib"] = start_kib
        r["resolver"] = resolver_events(text)
        cons.close()
    return r


# ---------------------------------------------------------------- report

def med(rows, key):
    v = [r[key] for r in rows if isinstance(r, dict) and key in r and r[key] == r[key]]
    return statistics.median(v) if v else float("nan")


def fmt(x, nd=2):
    if isinstance(x, float) and x != x:
        return "n/a"
    if isinstance(x, float) and abs(x) >= 1000:
        return "{:,.0f}".format(x)
    return ("{:.%df}" % nd).format(x) if isinstance(x, float) else str(x)


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = open("/proc/loadavg").read().split()[:3]
    return "nproc %d, %s, kernel %s, load average at start %s" % (os.cpu_count(), model, platform.release(),
                                                                   " ".join(load))


def xs_rot(xs, k):
    """`xs` rotated left by `k`: the interleaving order of one run of the variants."""
    return xs[k % len(xs):] + xs[:k % len(xs)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelgate", required=True)
    ap.add_argument("--tools", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--out", help="also write the report (markdown) here")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--big-rules", type=int, default=100000,
                    help="size of the large policy (default 100,000)")
    ap.add_argument("--only", help="comma-separated workloads to run (udp,tcp,conn,connpar,lat,rules,queues,crowd,rss); "
                    "prints their raw figures as JSON instead of the report, for a quick check")
    a = ap.parse_args()
    C.labelgate = os.path.abspath(a.labelgate)
    C.nfq_accept = os.path.join(a.tools, "nfq-accept")
    C.udpflood = os.path.join(a.tools, "udpflood")
    C.netprobe = os.path.join(a.tools, "netprobe")
    C.rounds = a.rounds or (1 if a.quick else 3)
    C.dur = 1.5 if a.quick else 3.0
    # Runs per round of the two noisiest workloads (full runs only).
    C.tcp_reps, C.conn_reps = (1, 1) if a.quick else (3, 2)
    crowd = (2000, 10)
    C.tmp = tempfile.mkdtemp(prefix="labelgate-bench-")
    started = time.time()
    mach = machine()
    log("labelgate bench: %s; %d round(s) of %.1f s runs; work dir %s" % (mach, C.rounds, C.dur, C.tmp))
    big = a.big_rules
    for n in (10, 1000, big):
        policy(n)
    # How long labelgate takes to load the big policy (it must bind its queue before any run).
    with Netns() as ns:
        t = time.time()
        cons = Consumer(ns, "B2", "all", nrules=big)
        C.big_load_s = time.time() - t
        C.big_load_cpu = cpu_seconds(cons.proc.pid)
        cons.close()
    log("labelgate with %d rules bound its queue after %.1f s (%.1f s CPU)" % (big, C.big_load_s, C.big_load_cpu))

    R = {k: [] for k in ["udp", "tcp", "conn", "connpar", "lat", "rules", "queues", "crowd"]}
    if a.only:
        run = {
            "udp": lambda: {v: w_udp(v) for v in C.order(["B0", "B1", "B2", "B3"])},
            "tcp": lambda: {v: w_tcp(v) for v in C.order(["B0", "B0ct", "B1", "B2", "B3"])},
            "conn": lambda: {v: w_conn(v) for v in C.order(["B0", "B1", "B2", "B3"])},
            "connpar": lambda: w_connpar(C.order),
            "lat": lambda: {v: w_latency(v) for v in C.order(["B0", "B1", "B2", "B3"])},
            "rules": lambda: {n: w_udp("B2", nrules=n) for n in C.order([10, big])},
            "queues": lambda: {n: w_udp_queues(n) for n in C.order([1, 2])},
            "crowd": lambda: w_crowd(*crowd),
            "rss": lambda: w_rss(big),
        }
        out = {}
        for w in a.only.split(","):
            if w not in run:
                sys.exit("unknown workload %r (one of %s)" % (w, ", ".join(run)))
            out[w] = []
            for rnd in range(C.rounds):
                # Rotate the variants' order from round to round, as the full run does.
                C.order = lambda xs, rot=rnd: xs_rot(xs, rot)
                out[w].append(run[w]())
        text = json.dumps(out, indent=1, default=str)
        print(text)
        if a.json:
            with open(a.json, "w") as f:
                f.write(text)
        return
    for rnd in range(C.rounds):
        rot = rnd
        C.order = lambda xs, rot=rot: xs_rot(xs, rot)
        log("round %d/%d" % (rnd + 1, C.rounds))
        R["udp"].append({v: w_udp(v) for v in C.order(["B0", "B1", "B2", "B3"])})
        log("  udp %s" % {v: round(x["pps"]) for v, x in R["udp"][-1].items()})
        # TCP bulk and new connections vary most from run to run on a shared
        # machine: more samples per round (each rotated again) for their medians.
        for rep in range(C.tcp_reps):
            order = xs_rot(["B0", "B0ct", "B1", "B2", "B3"], rnd + rep)
            R["tcp"].append({v: w_tcp(v) for v in order})
            log("  tcp %s" % {v: round(x["gbps"], 2) for v, x in R["tcp"][-1].items()})
        for rep in range(C.conn_reps):
            R["conn"].append({v: w_conn(v) for v in xs_rot(["B0", "B1", "B2", "B3"], rnd + rep)})
            log("  conn %s" % {v: round(x["conn_s"]) for v, x in R["conn"][-1].items()})
        R["connpar"].append(w_connpar(C.order))
        log("  connpar %s" % {n: {v: round(x["conn_s"]) for v, x in r.items()} for n, r in R["connpar"][-1].items()})
        R["lat"].append({v: w_latency(v) for v in C.order(["B0", "B1", "B2", "B3"])})
        log("  lat %s" % {v: (x["p50_us"], x["p99_us"]) for v, x in R["lat"][-1].items()})
        R["rules"].append({n: w_udp("B2", nrules=n) for n in C.order([10, big])})
        log("  rules %s" % {n: round(x["pps"]) for n, x in R["rules"][-1].items()})
        R["queues"].append({n: w_udp_queues(n) for n in C.order([1, 2])})
        log("  queues %s" % {n: round(x["pps"]) for n, x in R["queues"][-1].items()})
        R["crowd"].append(w_crowd(*crowd))
        log("  crowd %s" % {v: (x["p50_us"], x["p99_us"], x.get("dec_p50_us"), x.get("dec_p99_us"))
                             for v, x in R["crowd"][-1].items() if isinstance(x, dict)})
    rss = w_rss(big)
    log("  rss %s" % rss)
    elapsed = time.time() - started

    def col(group, variant):
        return [r[variant] for r in R[group]]

    udp = {v: col("udp", v) for v in ["B0", "B1", "B2", "B3"]}
    tcp = {v: col("tcp", v) for v in ["B0", "B1", "B2", "B3"]}
    tcp_ct = col("tcp", "B0ct")
    conn = {v: col("conn", v) for v in ["B0", "B1", "B2", "B3"]}
    connpar = {n: {v: [r[n][v] for r in R["connpar"]] for v in ["B0", "B1", "B2", "B3"]} for n in PAR_CLIENTS}
    lat = {v: col("lat", v) for v in ["B0", "B1", "B2", "B3"]}
    rules = {n: col("rules", n) for n in [10, big]}
    queues = {n: col("queues", n) for n in [1, 2]}
    crowd_b3 = [r["B3"] for r in R["crowd"]]
    crowd_b0 = [r["B0"] for r in R["crowd"]]

    def ratio(x, y):
        return x / y if y else float("nan")

    L = []
    L.append("Machine: %s. Run took %.0f s, %d round(s) of %.1f s measurements, medians over rounds "
             "(TCP bulk %d and new connections %d runs of every variant per round)." % (
                 mach, elapsed, C.rounds, C.dur, C.tcp_reps, C.conn_reps))
    L.append("")
    L.append("### Raw figures (medians)")
    L.append("")
    L.append("| workload | B0 no queue | B1 C nfq-accept | B2 labelgate 1k rules | B3 labelgate --flow |")
    L.append("|---|---|---|---|---|")
    L.append("| UDP 64 B, delivered pps (full speed) | %s |" % " | ".join(fmt(med(udp[v], "pps")) for v in udp))
    L.append("| UDP sustained zero-drop pps | %s |" % " | ".join(fmt(med(udp[v], "sustained_pps")) for v in udp))
    L.append("| queue packets answered per s at full speed | %s |" % " | ".join(
        fmt(med(udp[v], "answered_per_s")) for v in udp))
    L.append("| UDP queue drops at full speed (sum of rounds) | %s |" % " | ".join(
        str(int(sum(x["drops"] + x["send_errors"] for x in udp[v]))) for v in udp))
    L.append("| consumer CPU µs per queued packet | %s |" % " | ".join(
        fmt(med(udp[v], "cpu_us_per_pkt"), 3) for v in udp))
    L.append("| consumer CPU s per million packets | %s |" % " | ".join(
        fmt(med(udp[v], "cpu_us_per_pkt"), 2) for v in udp))
    L.append("| TCP bulk (iperf3) Gbit/s | %s |" % " | ".join(fmt(med(tcp[v], "gbps")) for v in tcp))
    L.append("| TCP bulk, no queue but connection tracking on (B0ct) | %s | | | |" % fmt(med(tcp_ct, "gbps")))
    L.append("| new TCP conn/s | %s |" % " | ".join(fmt(med(conn[v], "conn_s")) for v in conn))
    L.append("| connect() p50 / p99 µs | %s |" % " | ".join(
        "%s / %s" % (fmt(med(conn[v], "p50_us"), 1), fmt(med(conn[v], "p99_us"), 1)) for v in conn))
    L.append("| consumer CPU µs per new connection | | %s |" % " | ".join(
        fmt(med(conn[v], "cpu_us_per_conn"), 1) for v in ["B1", "B2", "B3"]))
    for n in PAR_CLIENTS:
        cp = connpar[n]
        L.append("| new TCP conn/s, %d concurrent clients | %s |" % (n, " | ".join(fmt(med(cp[v], "conn_s")) for v in cp)))
        L.append("| connect() p50 / p99 µs, %d clients | %s |" % (n, " | ".join(
            "%s / %s" % (fmt(med(cp[v], "p50_us"), 1), fmt(med(cp[v], "p99_us"), 1)) for v in cp)))
        L.append("| consumer CPU µs per new connection, %d clients | | %s |" % (n, " | ".join(
            fmt(med(cp[v], "cpu_us_per_conn"), 1) for v in ["B1", "B2", "B3"])))
    L.append("| UDP request/response p50 / p99 µs | %s |" % " | ".join(
        "%s / %s" % (fmt(med(lat[v], "p50_us"), 1), fmt(med(lat[v], "p99_us"), 1)) for v in lat))
    L.append("| labelgate decision mean µs (UDP flood) | | | %s | |" % fmt(med(udp["B2"], "decision_mean_us"), 2))
    L.append("")
    L.append("B1 and B2 queue every packet for the UDP workloads (`labelgate rules --all-packets`) and new "
             "connections only for TCP (`labelgate rules`); B3 uses `labelgate rules --flow`. "
             "The same generated queue rules serve B1 and B2.")
    L.append("")

    b2b1_pps = ratio(med(udp["B2"], "sustained_pps") or med(udp["B2"], "pps"), med(udp["B1"], "sustained_pps")
                     or med(udp["B1"], "pps"))
    b2b1_cpu = ratio(med(udp["B2"], "cpu_us_per_pkt"), med(udp["B1"], "cpu_us_per_pkt"))
    b3b0_tcp = ratio(med(tcp["B3"], "gbps"), med(tcp["B0"], "gbps"))
    b3b1_conn = ratio(med(conn["B3"], "conn_s"), med(conn["B1"], "conn_s"))
    r_dec = ratio(med(rules[big], "decision_mean_us"), med(rules[10], "decision_mean_us"))
    r_cpu = ratio(med(rules[big], "cpu_us_per_pkt"), med(rules[10], "cpu_us_per_pkt"))
    r_pps = ratio(med(rules[big], "pps"), med(rules[10], "pps"))
    q_pps = ratio(med(queues[2], "pps"), med(queues[1], "pps"))
    fp50 = med(crowd_b3, "dec_p50_us")
    fp99 = med(crowd_b3, "dec_p99_us")
    rss_mib = rss["hwm_kib"] / 1024

    def verdict(ok):
        return "met" if ok else "**missed**"

    L.append("### Ratios and targets")
    L.append("")
    L.append("| ratio | value | target | result |")
    L.append("|---|---|---|---|")
    b2b1_ans = ratio(med(udp["B2"], "answered_per_s"), med(udp["B1"], "answered_per_s"))
    L.append("| B2/B1 queue packets answered per second (full speed) | %s | ≥ 0.95 | %s |" % (
        fmt(b2b1_ans), verdict(b2b1_ans >= 0.95)))
    L.append("| B2/B1 UDP delivered pps (sustained, zero drops; distorted by overload, see docs) | %s | ≥ 0.95 | %s |" % (
        fmt(b2b1_pps), verdict(b2b1_pps >= 0.95)))
    L.append("| B2/B1 CPU per packet | %s | ≤ 1.2 | %s |" % (fmt(b2b1_cpu), verdict(b2b1_cpu <= 1.2)))
    L.append("| B3/B0 TCP bulk throughput | %s | ≥ 0.95 | %s |" % (fmt(b3b0_tcp), verdict(b3b0_tcp >= 0.95)))
    b3ct_tcp = ratio(med(tcp["B3"], "gbps"), med(tcp_ct, "gbps"))
    L.append("| B3/B0ct TCP bulk throughput (B0 with connection tracking on, which every queue rule set needs) "
             "| %s | (info) | |" % fmt(b3ct_tcp))
    L.append("| B3/B1 new TCP conn/s | %s | ≥ 0.8 | %s |" % (fmt(b3b1_conn), verdict(b3b1_conn >= 0.8)))
    for n in PAR_CLIENTS:
        r = ratio(med(connpar[n]["B3"], "conn_s"), med(connpar[n]["B1"], "conn_s"))
        L.append("| B3/B1 new TCP conn/s, %d concurrent clients | %s | ≥ 0.9 | %s |" % (n, fmt(r), verdict(r >= 0.9)))
    p99r = ratio(med(conn["B3"], "p99_us"), med(conn["B1"], "p99_us"))
    L.append("| B3/B1 connect() p99, one client | %s | ≤ 1.5 | %s |" % (fmt(p99r), verdict(p99r <= 1.5)))
    bn = "{:,}".format(big)
    L.append("| %s/10 rules: decision mean time | %s | within 10%% (≤ 1.10) at 100,000 | %s |" % (
        bn, fmt(r_dec), verdict(r_dec <= 1.10)))
    L.append("| %s/10 rules: CPU per packet | %s | within 10%% (≤ 1.10) at 100,000 | %s |" % (
        bn, fmt(r_cpu), verdict(r_cpu <= 1.10)))
    L.append("| %s/10 rules: UDP pps | %s | (info) | |" % (bn, fmt(r_pps)))
    L.append("| labelgate start-up with %s rules (until its queue is bound) | %s s (%s s CPU) | (info) | |" % (
        bn, fmt(C.big_load_s, 1), fmt(C.big_load_cpu, 1)))
    L.append("| first-packet decision p50 (B3, %d procs / %d sockets) | ≤ %s µs | ≤ 50 µs | %s |" % (
        crowd[0], crowd[0] * crowd[1], fmt(fp50, 0), verdict(fp50 <= 50)))
    L.append("| first-packet decision p99 (same) | ≤ %s µs | ≤ 1 ms | %s |" % (fmt(fp99, 0), verdict(fp99 <= 1000)))
    L.append("| new-connection latency p50 / p99, B3 vs B0 (same crowd) | %s / %s µs vs %s / %s µs | (info) | |" % (
        fmt(med(crowd_b3, "p50_us"), 1), fmt(med(crowd_b3, "p99_us"), 1), fmt(med(crowd_b0, "p50_us"), 1),
        fmt(med(crowd_b0, "p99_us"), 1)))
    L.append("| peak RSS, %s rules, %d datagrams to 100,000 flows (VmHWM) | %s MiB | ≤ 32 MiB (100,000 rules) | %s |" % (
        bn, int(rss["sent"]), fmt(rss_mib, 1), verdict(rss_mib <= 32)))
    L.append("| B1/B0 UDP pps (cost of queueing at all) | %s | (info) | |" % fmt(ratio(med(udp["B1"], "pps"),
                                                                                       med(udp["B0"], "pps"))))
    L.append("| B2/B1 UDP request/response p99 | %s | (info) | |" % fmt(ratio(med(lat["B2"], "p99_us"),
                                                                             med(lat["B1"], "p99_us"))))
    L.append("| 2 queues / 1 queue UDP pps (two senders, one per CPU) | %s | (info) | |" % fmt(q_pps))
    L.append("")
    L.append("Decision-time quantiles come from labelgate's `labelgate_decision_seconds` histogram and are "
             "bucket upper bounds. RSS run: %d datagrams to 100,000 distinct flows, resolver events %s; "
             "VmHWM right after start (policy loaded) %s MiB; VmRSS at the end %s MiB." % (
                 rss["sent"], json.dumps(rss["resolver"], sort_keys=True), fmt(rss["hwm_start_kib"] / 1024, 1),
                 fmt(rss["rss_kib"] / 1024, 1)))
    report = "\n".join(L)
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"R": R, "rss": rss, "machine": mach, "elapsed": elapsed}, f, indent=1, default=str)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in list(_live):
            try:
                stop(p, sig=signal.SIGKILL, wait=5)
            except Exception:
                pass
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith(NS_PREFIX):
                subprocess.run(["ip", "netns", "del", line.split()[0]], capture_output=True)
