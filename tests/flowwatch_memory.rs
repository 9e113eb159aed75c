//! Heap bytes per remembered UDP flow (`flowwatch::FlowTable`): fills a
//! table to its capacity with distinct flows, each with its own client
//! port (the costliest case for the port index), and reports the heap it
//! holds, counted by a global allocator. Ignored by default:
//!
//! ```text
//! cargo nextest run --release --test flowwatch_memory --run-ignored only --no-capture
//! ```
#![allow(unsafe_code)] // a counting global allocator (GlobalAlloc is an unsafe trait)

use labelgate::flowwatch::{Flow, FlowTable, DEFAULT_CAPACITY};
use labelgate::labels::Hook;
use labelgate::packet::{build, parse};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Relaxed);
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

#[test]
#[ignore]
fn full_table_heap_per_flow() {
    let flows: Vec<Flow> = (0..DEFAULT_CAPACITY as u32)
        .map(|i| {
            let src = Ipv4Addr::from(0x7f00_0000 | (i >> 16));
            let pkt = build::ipv4(src, Ipv4Addr::LOCALHOST, 17, &[], &build::udp(i as u16, 5353, b"x"));
            Flow::of(&parse(&pkt).unwrap(), Hook::Output).unwrap()
        })
        .collect();
    let before = LIVE.load(Relaxed);
    let mut t = FlowTable::new(DEFAULT_CAPACITY);
    for f in &flows {
        assert!(t.record(*f).is_none());
    }
    // Past capacity: each new flow pushes the oldest out.
    for f in flows.iter().take(1000) {
        let _ = t.record(*f);
    }
    let held = LIVE.load(Relaxed) - before;
    println!(
        "{} flows: {held} heap bytes, {} per flow ({:.1} MiB)",
        t.len(),
        held / t.len(),
        held as f64 / (1 << 20) as f64
    );
    assert!(held / t.len() < 120, "{held}");
}
