//! Label resolution on the hot path: `SocketResolver::resolve` for a flow
//! between two of this process's own UDP sockets once its caches are warm
//! (flow cache and owner cache hits): the owner re-validated with one
//! readlink per packet (no receive time known), once per batch of 64 packets
//! read together (as the queue threads do), or every 5 ms; and CIPSO option
//! parsing.

use criterion::{criterion_group, criterion_main, Criterion};
use labelgate::labels::{QueueMeta, Resolver};
use labelgate::packet::{self, build, Proto};
use labelgate::resolve::{flow_packet, peer, PeerConfig, ResolverConfig, SocketResolver};
use std::hint::black_box;
use std::net::UdpSocket;
use std::time::Duration;

const KERNEL_CIPSO: [u8; 12] = [0x86, 0x0b, 0x00, 0x00, 0x00, 0x10, 0x01, 0x05, 0x00, 0x01, 0x80, 0x00];

fn bench_resolve(c: &mut Criterion) {
    let mut g = c.benchmark_group("resolve");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pkt = flow_packet(Proto::Udp, a.local_addr().unwrap(), b.local_addr().unwrap());
    let out = QueueMeta { hook: 3, ..QueueMeta::default() };
    for (name, cfg) in [
        ("socket_cache_hit", ResolverConfig::default()),
        (
            "socket_cache_hit_revalidate_5ms",
            ResolverConfig { owner_revalidate_after: Duration::from_millis(5), ..ResolverConfig::default() },
        ),
    ] {
        let r = SocketResolver::new(PeerConfig::default(), cfg).expect("socket resolver");
        // Warm the caches (first call scans /proc and asks sock_diag).
        let l = r.resolve(&pkt, &out, &[]);
        assert_eq!(l.source_process.map(|p| p.pid), Some(std::process::id()), "own socket attributed");
        g.bench_function(name, |bch| bch.iter(|| black_box(r.resolve(black_box(&pkt), &out, &[]))));
        if name == "socket_cache_hit" {
            // Batches of 64 packets read at one instant: one check per batch.
            g.bench_function("socket_cache_hit_batch64", |bch| {
                bch.iter(|| {
                    let m = QueueMeta { received: Some(std::time::Instant::now()), ..out.clone() };
                    for _ in 0..64 {
                        black_box(r.resolve(black_box(&pkt), &m, &[]));
                    }
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("peer");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g.bench_function("parse_cipso", |bch| bch.iter(|| black_box(peer::parse_cipso(black_box(&KERNEL_CIPSO)))));
    let none: [u8; 4] = [1, 1, 1, 0];
    g.bench_function("parse_cipso_absent", |bch| bch.iter(|| black_box(peer::parse_cipso(black_box(&none)))));
    let lo = std::net::Ipv4Addr::LOCALHOST;
    let bytes = build::ipv4(lo, lo, 17, &KERNEL_CIPSO, &build::udp(1, 2, b"x"));
    let cpkt = packet::parse(&bytes).unwrap();
    let cfg =
        PeerConfig { dois: [(16, labelgate::policy::DoiMap::Pass)].into_iter().collect(), ..PeerConfig::default() };
    g.bench_function("peer_label_cipso_packet", |bch| {
        bch.iter(|| black_box(labelgate::resolve::peer_label(&cfg, black_box(&cpkt), &bytes)))
    });
    g.finish();
}

criterion_group!(benches, bench_resolve);
criterion_main!(benches);
