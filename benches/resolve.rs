//! Label resolution on the hot path: `SocketResolver::resolve` for a flow
//! between two of this process's own UDP sockets once its caches are warm
//! (flow cache and owner cache hits): the owner re-validated with one
//! readlink per packet (no receive time known), once per batch of 64 packets
//! read together (as the queue threads do), or every 5 ms; the first packet
//! of a new TCP connection between two of its sockets (a SYN: both ends
//! looked up afresh, the new client socket attributed, the listener's holder
//! re-validated); and CIPSO option parsing.
#![allow(unsafe_code)] // a libc call the bench makes itself (bind)

use criterion::{criterion_group, criterion_main, Criterion};
use labelgate::labels::{QueueMeta, Resolver};
use labelgate::packet::{self, build, Proto};
use labelgate::resolve::{flow_packet, peer, PeerConfig, ResolverConfig, SocketResolver};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
        let l = r.resolve(&pkt, &out);
        assert_eq!(l.source_process.map(|p| p.pid), Some(std::process::id()), "own socket attributed");
        g.bench_function(name, |bch| bch.iter(|| black_box(r.resolve(black_box(&pkt), &out))));
        if name == "socket_cache_hit" {
            // Batches of 64 packets read at one instant: one check per batch.
            g.bench_function("socket_cache_hit_batch64", |bch| {
                bch.iter(|| {
                    let m = QueueMeta { received: Some(std::time::Instant::now()), ..out.clone() };
                    for _ in 0..64 {
                        black_box(r.resolve(black_box(&pkt), &m));
                    }
                })
            });
        }
    }

    // A SYN: the client socket stays in SYN_SENT (the listener's accept
    // queue is full, so it drops SYNs), the listener is its own process's.
    let (listener, to) = full_listener();
    let r = SocketResolver::new(PeerConfig::default(), ResolverConfig::default()).expect("socket resolver");
    let syn_from = |c: &SynSent| {
        let mut p = flow_packet(Proto::Tcp, c.1, to);
        p.tcp_syn = true;
        p
    };
    let first = syn_sent(to);
    let l = r.resolve(&syn_from(&first), &out);
    assert_eq!(l.source_process.as_ref().map(|p| p.pid), Some(std::process::id()), "client attributed: {l:?}");
    assert_eq!(l.dest_process.map(|p| p.pid), Some(std::process::id()), "listener attributed");
    g.bench_function("new_tcp_connection_syn", |bch| {
        bch.iter_batched(
            || syn_sent(to),
            |c| {
                let m = QueueMeta { received: Some(std::time::Instant::now()), ..out.clone() };
                black_box(r.resolve(black_box(&syn_from(&c)), &m));
                c
            },
            criterion::BatchSize::PerIteration,
        )
    });
    drop(listener);
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
        bch.iter(|| black_box(labelgate::resolve::peer_label(&cfg, black_box(&cpkt))))
    });
    g.finish();
}

/// A listening TCP socket on 127.0.0.1 whose accept queue is full (backlog
/// 0, one connection never accepted), and its address.
fn full_listener() -> (OwnedFd, SocketAddr) {
    let l = tcp_socket(0);
    let (a, len) = sockaddr_in(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    // SAFETY: `a` is a valid sockaddr_in of `len` bytes; `l` is open.
    let rc = unsafe { libc::bind(l.as_raw_fd(), (&a as *const libc::sockaddr_in).cast(), len) };
    assert_eq!(rc, 0, "bind");
    // SAFETY: plain listen(2) on an open socket.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0, "listen");
    let to = local_addr(&l);
    // Fill the accept queue (backlog 0 holds one), then let the handshake end.
    let filler = std::net::TcpStream::connect(to).expect("connect");
    std::mem::forget(filler);
    std::thread::sleep(Duration::from_millis(50));
    (l, to)
}

/// A client socket whose SYN the full listener drops: it stays in SYN_SENT
/// (closed when dropped), and its address.
struct SynSent(#[allow(dead_code)] OwnedFd, SocketAddr);

fn syn_sent(to: SocketAddr) -> SynSent {
    let s = tcp_socket(libc::SOCK_NONBLOCK);
    let SocketAddr::V4(v4) = to else { panic!("IPv4 listener") };
    let (a, len) = sockaddr_in(v4);
    // SAFETY: `a` is a valid sockaddr_in of `len` bytes; `s` is open.
    let rc = unsafe { libc::connect(s.as_raw_fd(), (&a as *const libc::sockaddr_in).cast(), len) };
    assert!(rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EINPROGRESS), "connect");
    let local = local_addr(&s);
    SynSent(s, local)
}

/// `addr` as the C API takes it, and its length.
fn sockaddr_in(addr: SocketAddrV4) -> (libc::sockaddr_in, libc::socklen_t) {
    let a = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    };
    (a, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
}

fn tcp_socket(flags: libc::c_int) -> OwnedFd {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags, 0) };
    assert!(fd >= 0, "socket");
    // SAFETY: a fresh descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn local_addr(s: &OwnedFd) -> SocketAddr {
    // SAFETY: all-zero sockaddr_in is valid; getsockname writes at most `len` bytes.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: as above.
    let rc = unsafe { libc::getsockname(s.as_raw_fd(), (&mut a as *mut libc::sockaddr_in).cast(), &mut len) };
    assert_eq!(rc, 0, "getsockname");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))), u16::from_be(a.sin_port))
}

criterion_group!(benches, bench_resolve);
criterion_main!(benches);
