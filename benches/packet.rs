//! Packet parsing: `labelgate::packet::parse` on the headers the queue copies.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use labelgate::packet::{self, build};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

const KERNEL_CIPSO: [u8; 12] = [0x86, 0x0b, 0x00, 0x00, 0x00, 0x10, 0x01, 0x05, 0x00, 0x01, 0x80, 0x00];

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("packet_parse");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    let a = Ipv4Addr::new(198, 18, 0, 1);
    let b = Ipv4Addr::new(198, 18, 0, 2);
    let payload = [0u8; 36]; // 20 + 8 + 36 = a 64-byte datagram
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ipv4_udp64", build::ipv4(a, b, 17, &[], &build::udp(40000, 9000, &payload))),
        ("ipv4_tcp_syn", build::ipv4(a, b, 6, &[], &build::tcp(40000, 5432, 0x02))),
        ("ipv4_cipso_tcp", build::ipv4(a, b, 6, &KERNEL_CIPSO, &build::tcp(40000, 5432, 0x02))),
        ("ipv6_tcp_syn", build::ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 6, &[], &build::tcp(40000, 5432, 0x02))),
        ("ipv6_hbh_udp", {
            // Hop-by-hop header (8 bytes: next = UDP, length 0, PadN of 4).
            let ext = [17u8, 0, 1, 4, 0, 0, 0, 0];
            build::ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 0, &ext, &build::udp(1, 2, b"x"))
        }),
    ];
    for (name, bytes) in &cases {
        assert!(packet::parse(bytes).is_ok(), "{name} must parse");
        g.bench_function(*name, |bch| bch.iter(|| black_box(packet::parse(black_box(bytes)))));
    }
    let truncated = &cases[0].1[..30];
    g.bench_function("malformed_truncated", |bch| bch.iter(|| black_box(packet::parse(black_box(truncated)))));
    g.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
