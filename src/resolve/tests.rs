//! Unit tests of the resolver: peer labels from byte vectors, and socket
//! attribution against this test process's own real sockets (no root needed:
//! sock_diag answers any user, and our own /proc entries are readable).

use super::*;
use crate::context::SecurityContext;
use crate::packet::{self, build};
use crate::policy::{AddressLabel, DoiMap};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const KERNEL_CIPSO: [u8; 12] = [0x86, 0x0b, 0x00, 0x00, 0x00, 0x10, 0x01, 0x05, 0x00, 0x01, 0x80, 0x00];

fn ctx(s: &str) -> SecurityContext {
    s.parse().unwrap()
}

fn peer_cfg() -> PeerConfig {
    PeerConfig {
        address_labels: vec![
            AddressLabel { net: "198.18.1.0/24".parse().unwrap(), context: ctx("system_u:object_r:db_peer_t:s0") },
            AddressLabel { net: "198.18.0.0/15".parse().unwrap(), context: ctx("system_u:object_r:bench_peer_t:s0") },
        ],
        dois: [(16, DoiMap::Pass)].into_iter().collect(),
    }
}

fn v4(src: &str, opts: &[u8]) -> PacketInfo {
    let p = build::ipv4(src.parse().unwrap(), "198.18.0.1".parse().unwrap(), 17, opts, &build::udp(1000, 2000, b"x"));
    packet::parse(&p).unwrap()
}

#[test]
fn peer_label_table() {
    let cfg = peer_cfg();
    // Static only: longest prefix wins.
    let pkt = v4("198.18.1.7", &[]);
    let (l, o) = peer_label(&cfg, &pkt);
    let l = l.unwrap();
    assert_eq!(
        (l.context.to_string(), l.origin, o),
        ("system_u:object_r:db_peer_t:s0".to_string(), Origin::Static, PeerOutcome::None)
    );
    // Static refined by CIPSO.
    let pkt = v4("198.18.2.7", &KERNEL_CIPSO);
    let l = peer_label(&cfg, &pkt).0.unwrap();
    assert_eq!(l.context.to_string(), "system_u:object_r:bench_peer_t:s1:c0");
    assert_eq!(l.origin, Origin::PeerOption);
    // CIPSO without a static label.
    let pkt = v4("127.0.0.1", &KERNEL_CIPSO);
    let l = peer_label(&cfg, &pkt).0.unwrap();
    assert_eq!(l.context.to_string(), "system_u:object_r:netlabel_peer_t:s1:c0");
    // Nothing.
    let pkt = v4("127.0.0.1", &[]);
    assert_eq!(peer_label(&cfg, &pkt), (None, PeerOutcome::None));
    // Unknown DOI.
    let mut other = KERNEL_CIPSO;
    other[5] = 17;
    let pkt = v4("127.0.0.1", &other);
    let (l, o) = peer_label(&cfg, &pkt);
    assert_eq!(l.unwrap().origin, Origin::Unlabeled("unknown_doi"));
    assert_eq!(o, PeerOutcome::UnknownDoi);
    // Malformed (tag length lies), even with a static label.
    let mut bad = KERNEL_CIPSO;
    bad[7] = 40;
    let pkt = v4("198.18.1.7", &bad);
    let (l, o) = peer_label(&cfg, &pkt);
    assert_eq!(l.unwrap().origin, Origin::Unlabeled("bad_peer_option"));
    assert!(matches!(o, PeerOutcome::Malformed(_)));
}

#[test]
fn calipso_peer_label_from_a_parsed_ipv6_packet() {
    let mut opt = vec![7u8, 12, 0, 0, 0, 16, 1, 2, 0, 0, 0x20, 0, 0, 0];
    let sum = peer::calipso_checksum(&opt);
    opt[8..10].copy_from_slice(&sum.to_le_bytes());
    // Hop-by-hop header: next = UDP, length 1 (16 bytes): 14 option + PadN(0).
    let mut ext = vec![17u8, 1];
    ext.extend_from_slice(&opt);
    assert_eq!(ext.len(), 16);
    let l6: Ipv6Addr = "::1".parse().unwrap();
    let p = build::ipv6(l6, l6, 0, &ext, &build::udp(1, 2, b""));
    let pkt = packet::parse(&p).unwrap();
    let l = peer_label(&peer_cfg(), &pkt).0.unwrap();
    assert_eq!(l.context.to_string(), "system_u:object_r:netlabel_peer_t:s2:c2");
}

fn resolver() -> SocketResolver {
    SocketResolver::new(peer_cfg(), ResolverConfig::default()).unwrap()
}

fn udp_pkt(src: SocketAddr, dst: SocketAddr) -> PacketInfo {
    flow_packet(Proto::Udp, src, dst)
}

fn meta(hook: Hook) -> QueueMeta {
    QueueMeta {
        hook: match hook {
            Hook::Input => 1,
            Hook::Output => 3,
            _ => 2,
        },
        ..QueueMeta::default()
    }
}

fn inode(fd: &impl AsRawFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap().ino()
}

/// The socket inode the flow cache holds for a flow.
fn cached_inode(r: &SocketResolver, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> u64 {
    let k = FlowKey::new(proto, local, remote);
    let e = r.flows.get(&k, &CacheCounters::default()).expect("flow cached");
    u64::from(e.socket().expect("flow has a socket").inode)
}

fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[test]
fn own_udp_sockets_are_attributed_both_ways() {
    let r = resolver();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    // OUTPUT a -> b: source is a (found after a rescan: a is newer than the
    // first scan), dest is b (loopback is local).
    let l = r.resolve(&udp_pkt(aa, ba), &meta(Hook::Output));
    let me = std::process::id();
    assert_eq!(l.source_process.as_ref().map(|p| p.pid), Some(me));
    assert_eq!(l.dest_process.as_ref().map(|p| p.pid), Some(me));
    assert_eq!(l.uid, Some(my_uid()));
    assert_eq!(&*l.source_process.unwrap().exe, std::env::current_exe().unwrap().to_str().unwrap());
    // Socket labels: whatever this host has, never "not_resolved".
    assert_ne!(l.source.origin, Origin::Unlabeled("not_resolved"));
    assert_eq!(l.peer, None);
    // Second time: flow and owner caches hit, no new scan.
    let scans = r.stats().proc_scans.load(Relaxed);
    let hits = r.stats().owner.hits.load(Relaxed);
    let l2 = r.resolve(&udp_pkt(aa, ba), &meta(Hook::Output));
    assert_eq!(l2.source, l.source);
    assert_eq!(r.stats().proc_scans.load(Relaxed), scans);
    assert!(r.stats().owner.hits.load(Relaxed) >= hits + 2);
    // And to the right sockets (by inode).
    assert_eq!(cached_inode(&r, DiagProto::Udp, aa, ba), inode(&a));
    assert_eq!(cached_inode(&r, DiagProto::Udp, ba, aa), inode(&b));
}

#[test]
fn closed_socket_and_kernel_packets() {
    let r = resolver();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let aa = a.local_addr().unwrap();
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let l = r.resolve(&udp_pkt(aa, peer), &meta(Hook::Output));
    assert!(l.source_process.is_some(), "{l:?}");
    drop(a);
    // Within the flow TTL: the cached owner fails re-validation, sock_diag
    // finds nothing, and the flow is known to have had a socket.
    let l = r.resolve(&udp_pkt(aa, peer), &meta(Hook::Output));
    assert_eq!(l.source.origin, Origin::Unlabeled("socket_closed"));
    assert!(l.source_process.is_none());
    assert!(r.stats().owner.invalidations.load(Relaxed) >= 1);
    // A flow no socket ever had.
    let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let l = r.resolve(&udp_pkt(nobody, peer), &meta(Hook::Output));
    assert_eq!(l.source.origin, Origin::Unlabeled("no_socket"));
}

#[test]
fn tcp_listener_established_and_ipv6() {
    let r = resolver();
    for host in ["127.0.0.1", "[::1]"] {
        let Ok(lst) = TcpListener::bind(format!("{host}:0")) else {
            eprintln!("SKIP {host}: cannot bind");
            continue;
        };
        let la = lst.local_addr().unwrap();
        let c = TcpStream::connect(la).unwrap();
        let (s, _) = lst.accept().unwrap();
        let ca = c.local_addr().unwrap();
        let tcp = |src: SocketAddr, dst: SocketAddr| PacketInfo { proto: Proto::Tcp, ..udp_pkt(src, dst) };
        // Client -> server on OUTPUT: source = client socket, dest = accepted socket.
        let l = r.resolve(&tcp(ca, la), &meta(Hook::Output));
        assert_eq!(l.source_process.map(|p| p.pid), Some(std::process::id()));
        assert_eq!(l.dest_process.map(|p| p.pid), Some(std::process::id()));
        // The flows were attributed to the right sockets (by inode).
        let fk = |local, remote| FlowKey::new(DiagProto::Tcp, local, remote);
        let c_ino = r.flows.get(&fk(ca, la), &CacheCounters::default()).unwrap().socket().unwrap().inode;
        let s_ino = r.flows.get(&fk(la, ca), &CacheCounters::default()).unwrap().socket().unwrap().inode;
        assert_eq!(u64::from(c_ino), inode(&c));
        assert_eq!(u64::from(s_ino), inode(&s));
        // A SYN from a port no one connected from goes to the listener.
        let stranger: SocketAddr = SocketAddr::new(la.ip(), 1);
        let l = r.resolve(&tcp(stranger, la), &meta(Hook::Input));
        assert!(l.dest_process.is_some(), "{l:?}");
        let l_ino = r.flows.get(&fk(la, stranger), &CacheCounters::default()).unwrap().socket().unwrap().inode;
        assert_eq!(u64::from(l_ino), inode(&lst));
    }
}

#[test]
fn icmp_has_no_socket_and_remote_sources_take_peer_labels() {
    let r = resolver();
    let p = build::ipv4(
        "198.18.1.9".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        1,
        &KERNEL_CIPSO,
        &[8, 0, 0, 0, 0, 1, 0, 1],
    );
    let pkt = packet::parse(&p).unwrap();
    let l = r.resolve(&pkt, &meta(Hook::Input));
    assert_eq!(l.source.context.to_string(), "system_u:object_r:db_peer_t:s1:c0");
    assert_eq!(l.peer.as_ref(), Some(&l.source));
    assert_eq!(l.dest.origin, Origin::Unlabeled("unsupported_proto"));
    assert_eq!(r.stats().peer_options.load(Relaxed), 1);
    let mut bad = p.clone();
    bad[20 + 1] = 3; // CIPSO length below its header
    let pkt = packet::parse(&bad).unwrap();
    let l = r.resolve(&pkt, &meta(Hook::Input));
    assert_eq!(l.peer.unwrap().origin, Origin::Unlabeled("bad_peer_option"));
    assert_eq!(r.stats().bad_peer_options.load(Relaxed), 1);
}

#[test]
fn resolver_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SocketResolver>();
}

#[test]
fn policy_views_share_caches_but_not_peer_config() {
    let core = Arc::new(SocketResolver::new(PeerConfig::default(), ResolverConfig::default()).unwrap());
    let plain = core.for_policy(PeerConfig::default());
    let labelled = core.for_policy(peer_cfg());
    let pkt = v4("198.18.1.7", &[]);
    let m = meta(Hook::Input);
    assert_eq!(plain.resolve(&pkt, &m).peer, None);
    let l = labelled.resolve(&pkt, &m);
    assert_eq!(l.peer.unwrap().context.to_string(), "system_u:object_r:db_peer_t:s0");
    // Remote destination with a static label (OUTPUT to 198.18.1.7).
    let out = flow_packet(Proto::Udp, "127.0.0.1:5000".parse().unwrap(), "198.18.1.7:53".parse().unwrap());
    let l = labelled.resolve(&out, &meta(Hook::Output));
    assert_eq!((l.dest.origin, l.dest.context.type_()), (Origin::Static, "db_peer_t"));
    let l = plain.resolve(&out, &meta(Hook::Output));
    assert_eq!(l.dest.origin, Origin::Unlabeled("remote"));
    // One set of counters.
    assert_eq!(labelled.core().stats().flow.misses.load(Relaxed), core.stats().flow.misses.load(Relaxed));
    assert!(core.stats().flow.misses.load(Relaxed) >= 2);
}

#[test]
fn cache_only_answers_after_a_full_resolution() {
    let r = resolver();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pkt = udp_pkt(a.local_addr().unwrap(), b.local_addr().unwrap());
    let m = meta(Hook::Output);
    // Nothing cached yet: no answer, and nothing asked, scanned or counted.
    let before = r.stats().snapshot();
    assert_eq!(r.resolve_cached(&pkt, &m), None);
    assert_eq!(r.stats().snapshot(), before);
    let full = r.resolve(&pkt, &m);
    assert!(full.source_process.is_some() && full.dest_process.is_some(), "{full:?}");
    // Now both ends come from the caches, with the same labels, and only
    // the hits are counted.
    let before = r.stats().snapshot();
    let cached = r.resolve_cached(&pkt, &m).expect("answered from the caches");
    assert_eq!(cached, full);
    let after = r.stats().snapshot();
    let delta = |name: &str| {
        let get = |v: &[(&str, u64)]| v.iter().find(|(k, _)| *k == name).map(|(_, v)| *v).unwrap();
        get(&after) - get(&before)
    };
    assert_eq!((delta("flow_hits"), delta("owner_hits")), (2, 2));
    assert_eq!(
        (delta("flow_misses"), delta("owner_misses"), delta("sock_diag_queries"), delta("proc_scans")),
        (0, 0, 0, 0)
    );
    // The holder closed the socket: re-validation fails, so no cheap answer,
    // and the stale owner is left for the full path to invalidate.
    drop(a);
    assert_eq!(r.resolve_cached(&pkt, &m), None);
    assert_eq!(r.stats().owner.invalidations.load(Relaxed), 0);
    let l = r.resolve(&pkt, &m);
    assert_eq!(l.source.origin, Origin::Unlabeled("socket_closed"));
    assert_eq!(r.stats().owner.invalidations.load(Relaxed), 1);
    // "No socket any more" is remembered (negative TTL) and answered cheaply.
    let again = r.resolve_cached(&pkt, &m).expect("negative entry answers");
    assert_eq!(again, l);
}

#[test]
fn cache_only_needs_fresh_local_addresses_for_non_loopback_ends() {
    let cfg = ResolverConfig { local_addr_ttl: Duration::ZERO, ..ResolverConfig::default() };
    let core = Arc::new(SocketResolver::new(PeerConfig::default(), cfg).unwrap());
    let view = core.for_policy(peer_cfg());
    // ICMP has no socket to look up: between loopback addresses it is
    // answered at once ...
    let lo = build::ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, &[], &[8, 0, 0, 0, 0, 1, 0, 1]);
    let pkt = packet::parse(&lo).unwrap();
    let m = meta(Hook::Input);
    assert_eq!(view.resolve_cached(&pkt, &m), Some(view.resolve(&pkt, &m)));
    // ... but whether 198.18.1.9 is this host's needs the address list,
    // which is stale here (TTL 0): that is slow work.
    let p = build::ipv4("198.18.1.9".parse().unwrap(), Ipv4Addr::LOCALHOST, 1, &[], &[8, 0, 0, 0, 0, 1, 0, 1]);
    let pkt = packet::parse(&p).unwrap();
    assert_eq!(view.resolve_cached(&pkt, &m), None);
    assert_eq!(view.resolve(&pkt, &m).source.context.type_(), "db_peer_t");
}

#[test]
fn flow_cache_entries_stay_small() {
    use std::mem::size_of;
    // The flow cache's memory is about (key + entry + 1) bytes per table slot.
    assert!(size_of::<FlowKey>() <= 40, "FlowKey: {}", size_of::<FlowKey>());
    assert!(size_of::<FlowEntry>() <= 24, "FlowEntry: {}", size_of::<FlowEntry>());
    assert!(size_of::<(FlowKey, FlowEntry)>() <= 64, "slot: {}", size_of::<(FlowKey, FlowEntry)>());
}

#[test]
fn flow_keys_and_entries_round_trip() {
    // A v4-mapped IPv6 end and its IPv4 form are one key, given back as IPv4.
    let v4: SocketAddr = "10.1.2.3:80".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let k = FlowKey::new(DiagProto::Udp, mapped, v6);
    assert_eq!(k, FlowKey::new(DiagProto::Udp, v4, v6));
    assert_ne!(k, FlowKey::new(DiagProto::Tcp, v4, v6));
    assert_ne!(k, FlowKey::new(DiagProto::Udp, v6, v4));
    assert_eq!((k.local(), k.remote()), (v4, v6));

    let d = ResolverConfig::default();
    let cfg = FlowTtl { held: d.flow_ttl, negative: d.negative_ttl };
    let ds = DiagSocket { inode: 7, uid: 1000, state: sockdiag::TCP_ESTABLISHED, cookie: u64::MAX - 1 };
    // Times past 2^32 ms (49 days) keep their freshness.
    let t0 = (1u64 << 33) + 5;
    let held = FlowEntry::new(Ok(ds), None, t0);
    assert_eq!(held.socket(), Ok(ds));
    assert!(held.fresh(&cfg, t0) && held.fresh(&cfg, t0 + 4_999));
    assert!(!held.fresh(&cfg, t0 + 5_000));
    assert!(!held.fresh(&cfg, t0 + (1 << 32) + 1));
    // A socket without a holder keeps the socket and the reason; both
    // reasons are remembered for negative_ttl only.
    for r in [Reason::KernelSocket, Reason::ProcessGone] {
        let e = FlowEntry::new(Ok(ds), Some(r), t0);
        assert_eq!((e.socket(), e.gap), (Ok(ds), Some(r)));
        assert!(e.fresh(&cfg, t0 + 499) && !e.fresh(&cfg, t0 + 500));
        let end = e.answer(&cfg, t0, |_| panic!("no holder to look up"), |_| None).unwrap();
        assert_eq!(end.label.origin, Origin::Unlabeled(r.token()));
    }
    for r in [Reason::NoSocket, Reason::SocketClosed, Reason::SockDiagError] {
        let e = FlowEntry::new(Err(r), None, t0);
        assert_eq!(e.socket(), Err(r));
        assert!(!e.fresh(&cfg, t0 + 500));
        assert_eq!(e.answer(&cfg, t0, |_| None, |_| None).unwrap().label.origin, Origin::Unlabeled(r.token()));
    }
    for r in Reason::ALL {
        assert_eq!(Reason::of(r.token()), Some(r));
    }
    assert_eq!(Reason::of("remote"), None);
    // A held socket answers with what the owner cache finds; a listener
    // never answers from the cache.
    assert_eq!(
        held.answer(&cfg, t0, |d| Some(LocalEnd { uid: Some(d.uid), ..LocalEnd::unlabeled("x") }), |_| None)
            .unwrap()
            .uid,
        Some(1000)
    );
    let mut l = FlowEntry::new(Ok(ds), None, t0);
    l.flags |= VIA_LISTENER;
    assert!(l.answer(&cfg, t0, |_| panic!("listener answered"), |_| None).is_none());
    // A closed socket answers with the holder kept for its cookie, and not
    // at all once that is gone.
    let mut c = FlowEntry::new(Ok(ds), None, t0);
    c.flags |= CLOSED;
    assert!(c.answer(&cfg, t0, |_| panic!("a closed socket has no holder to check"), |_| None).is_none());
}
