//! Policy lookup cost against policy size: `Policy::decide` over generated
//! policies of 10, 1,000, 10,000 and 100,000 rules (the same shape as
//! `bench/gen-policy.py`). The decision cost should stay flat: the type
//! index means a packet is checked only against the rules naming its types.
//! `policy_load` times compiling the 10,000-rule text (`Policy::from_toml`)
//! and linting it (`lint::lint`).
//!
//! `policy_selinux` compares a decision by a table rule with the same
//! decision by a `verdict = "selinux"` rule answered from the access cache
//! (`sepolicy::CachedOracle`); the backend behind the cache is a table in
//! the bench, not the kernel, as the cached path never reaches the kernel
//! (and the bench host may run without SELinux).
//!
//! `LABELGATE_BENCH_RULES=10,1000` chooses other sizes for `policy_decide`
//! (compiling 100,000 rules takes about 2 s of the run).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use labelgate::context::SecurityContext;
use labelgate::labels::{Hook, Label, Labels, Origin};
use labelgate::lint;
use labelgate::packet::{self, build, PacketInfo};
use labelgate::policy::{Facts, Policy};
use labelgate::sepolicy::{AccessOracle, Answer, Backend, CachedOracle, OracleError};
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

const PROTOS: [&str; 3] = ["tcp", "udp", "tcp"];

/// A policy of `n` rules over many source/destination types, ports and uids,
/// ending with the rule that accepts the benchmark traffic (udp to 9000 from
/// `bench_client_t`, and anything from `unlabeled_t` to port 9000).
fn policy_text(n: usize) -> String {
    let mut s = String::from("mode = \"enforcing\"\ndefault = \"drop\"\n\n[sets]\nweb = [\"httpd_t\", \"nginx_t\"]\n");
    let body = n.saturating_sub(1);
    for i in 0..body {
        let src = format!("app{}_t", i % 997);
        let dst = format!("svc{}_t", i % 1009);
        let proto = PROTOS[i % PROTOS.len()];
        let port = 1024 + (i * 7) % 60000;
        let verdict = if i % 5 == 0 { "drop" } else { "accept" };
        let _ = write!(
            s,
            "\n[[rule]]\nname = \"r{i}\"\nhook = \"{}\"\nsource = \"{src}\"\ndest = \"{dst}\"\nproto = \"{proto}\"\ndport = {port}\n",
            if i % 2 == 0 { "output" } else { "input" }
        );
        if i % 3 == 0 {
            let _ = writeln!(s, "uid = {}", 1000 + i % 500);
        }
        let _ = writeln!(s, "verdict = \"{verdict}\"");
    }
    s.push_str("\n[[rule]]\nname = \"bench-traffic\"\nproto = \"udp\"\ndport = 9000\nverdict = \"accept\"\n");
    s
}

fn labels(src: &str, dst: &str) -> Labels {
    let mut l = Labels::unresolved("bench");
    l.source = Label { context: src.parse().unwrap(), origin: Origin::Socket };
    l.dest = Label { context: dst.parse().unwrap(), origin: Origin::Socket };
    l.uid = Some(1000);
    l
}

fn udp_to(dport: u16) -> PacketInfo {
    let lo = Ipv4Addr::LOCALHOST;
    packet::parse(&build::ipv4(lo, lo, 17, &[], &build::udp(40000, dport, b"x"))).unwrap()
}

fn tcp_to(dport: u16) -> PacketInfo {
    let lo = Ipv4Addr::LOCALHOST;
    packet::parse(&build::ipv4(lo, lo, 6, &[], &build::tcp(40000, dport, 0x02))).unwrap()
}

fn bench_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_decide");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let none = || None;
    let sizes = std::env::var("LABELGATE_BENCH_RULES").unwrap_or_else(|_| "10,1000,10000,100000".to_string());
    for n in sizes.split(',').filter_map(|x| x.trim().parse::<usize>().ok()) {
        let p = Policy::from_toml(&policy_text(n), "bench.toml").unwrap();
        // The benchmark traffic: typed source, reaches the final catch rule.
        let l = labels("system_u:system_r:app5_t:s0", "system_u:system_r:svc5_t:s0");
        let pkt = udp_to(9000);
        g.bench_with_input(BenchmarkId::new("final_rule", n), &n, |b, _| {
            b.iter(|| {
                let f = Facts { hook: Hook::Output, pkt: &pkt, labels: &l, iif: &none, oif: &none };
                black_box(p.decide(black_box(&f), p.mode))
            })
        });
        // Unlabeled traffic (what this host's kernel reports without SELinux).
        let ul = Labels::unresolved("selinux_disabled");
        g.bench_with_input(BenchmarkId::new("unlabeled", n), &n, |b, _| {
            b.iter(|| {
                let f = Facts { hook: Hook::Output, pkt: &pkt, labels: &ul, iif: &none, oif: &none };
                black_box(p.decide(black_box(&f), p.mode))
            })
        });
        // A packet that falls to the default verdict after every candidate rule of its type.
        let tpkt = tcp_to(1);
        g.bench_with_input(BenchmarkId::new("default_miss", n), &n, |b, _| {
            b.iter(|| {
                let f = Facts { hook: Hook::Output, pkt: &tpkt, labels: &l, iif: &none, oif: &none };
                black_box(p.decide(black_box(&f), p.mode))
            })
        });
    }
    g.finish();
}

fn bench_load(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_load");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3));
    let n = 10_000;
    let text = policy_text(n);
    g.bench_with_input(BenchmarkId::new("compile", n), &n, |b, _| {
        b.iter(|| black_box(Policy::from_toml(black_box(&text), "bench.toml").unwrap()))
    });
    let p = Policy::from_toml(&text, "bench.toml").unwrap();
    g.bench_with_input(BenchmarkId::new("lint", n), &n, |b, _| b.iter(|| black_box(lint::lint(black_box(&p)))));
    g.finish();
}

/// The bench's stand-in for the kernel behind the cache: allows
/// httpd_t -> postgresql_t, never reports a policy change.
struct TableBackend;

impl Backend for TableBackend {
    fn ask(&self, s: &SecurityContext, d: &SecurityContext, _perm: &'static str) -> Result<Answer, OracleError> {
        let allowed = s.type_() == "httpd_t" && d.type_() == "postgresql_t";
        Ok(Answer { allowed, permissive: false, audited: !allowed })
    }
    fn changed(&self) -> bool {
        false
    }
}

fn bench_selinux(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_selinux");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let none = || None;
    let rule = |verdict: &str| {
        format!(
            "default = \"drop\"\n[[rule]]\nname = \"db\"\nsource = \"httpd_t\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"{verdict}\"\n"
        )
    };
    let table = Policy::from_toml(&rule("accept"), "table.toml").unwrap();
    let asks = Policy::from_toml(&rule("selinux"), "selinux.toml").unwrap();
    let oracle = CachedOracle::new(TableBackend);
    let l = labels("system_u:system_r:httpd_t:s0", "system_u:system_r:postgresql_t:s0");
    let pkt = tcp_to(5432);
    g.bench_function("table_rule", |b| {
        b.iter(|| {
            let f = Facts { hook: Hook::Output, pkt: &pkt, labels: &l, iif: &none, oif: &none };
            black_box(table.decide(black_box(&f), table.mode))
        })
    });
    g.bench_function("selinux_rule_cached", |b| {
        b.iter(|| {
            let f = Facts { hook: Hook::Output, pkt: &pkt, labels: &l, iif: &none, oif: &none };
            black_box(asks.decide_with(black_box(&f), asks.mode, Some(&oracle as &dyn AccessOracle)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decide, bench_load, bench_selinux);
criterion_main!(benches);
