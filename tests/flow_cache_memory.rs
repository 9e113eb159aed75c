//! Heap bytes per flow-cache entry: fills a resolver's flow cache past its
//! capacity with distinct flows (a packet from 127.0.0.1 to a non-local
//! address at OUTPUT: one local end, one sock_diag lookup that finds no
//! socket, one cache entry) and reports the heap it holds, counted by a
//! global allocator. Ignored by default (a few seconds in a release build,
//! longer in a debug one):
//!
//! ```text
//! cargo nextest run --release --test flow_cache_memory --run-ignored only --no-capture
//! ```
#![allow(unsafe_code)] // a counting global allocator (GlobalAlloc is an unsafe trait)

use labelgate::labels::{QueueMeta, Resolver};
use labelgate::packet::Proto;
use labelgate::resolve::{flow_packet, PeerConfig, ResolverConfig, SocketResolver};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting the bytes currently allocated and the peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// (flows held, heap bytes held by the resolver, peak heap bytes above the
/// empty resolver) after `flows` distinct flows went through a resolver
/// whose flow cache holds `capacity`.
fn fill(capacity: usize, flows: u32) -> (u64, usize, usize) {
    let cfg = ResolverConfig { flow_cache_size: capacity, ..ResolverConfig::default() };
    let r = SocketResolver::new(PeerConfig::default(), cfg).expect("resolver");
    let out = QueueMeta { hook: 3, ..QueueMeta::default() };
    let _ = r.resolve(&flow_packet(Proto::Udp, "127.0.0.1:1".parse().unwrap(), "198.18.0.1:1".parse().unwrap()), &out);
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    for i in 0..flows {
        // Distinct remote ends: 198.18.0.0/15 and all ports.
        let [_, b, c, d] = i.to_be_bytes();
        let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18 + (b & 1), c, d)), 1 + (i >> 17) as u16);
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);
        let l = r.resolve(&flow_packet(Proto::Udp, local, remote), &out);
        assert!(l.source.is_unlabeled(), "no socket for {local} -> {remote}");
    }
    let snap: std::collections::HashMap<_, _> = r.stats().snapshot().into_iter().collect();
    let held = snap["sock_diag_queries"] - snap["flow_evictions"] - snap["flow_expirations"];
    let live = LIVE.load(Relaxed).saturating_sub(base);
    (held, live, PEAK.load(Relaxed).saturating_sub(base))
}

#[test]
#[ignore = "slow: fills a flow cache through sock_diag; run by hand to measure"]
fn flow_cache_bytes_per_entry() {
    let mut worst = 0.0f64;
    for capacity in [ResolverConfig::default().flow_cache_size, 65_536, 131_072] {
        let (held, live, peak) = fill(capacity, 2 * capacity as u32 + 10_000);
        let per_held = live as f64 / held as f64;
        let per_slot = peak as f64 / capacity as f64;
        println!(
            "capacity {capacity}: {held} flows held in {:.2} MiB ({per_held:.1} B/flow held); \
             peak {:.2} MiB ({per_slot:.1} B per capacity slot)",
            live as f64 / 1048576.0,
            peak as f64 / 1048576.0,
        );
        if capacity == ResolverConfig::default().flow_cache_size {
            worst = per_slot;
        }
    }
    let cap = ResolverConfig::default().flow_cache_size;
    assert!(cap >= 100_000, "default flow cache {cap} < 100,000 flows");
    assert!(worst <= 100.0, "default flow cache: {worst:.1} bytes per entry at capacity");
}
