//! Ending the kernel-side pass of an accepted UDP flow when a local socket
//! of that flow goes away.
//!
//! One file on purpose: its ~440 lines of code are one concept (the table
//! of accepted flows and the thread that keeps it), and the rest are tests.
//!
//! With `--ctstate NEW` queue rules (or flow mode's accept connmark) only a
//! flow's first packet is decided; conntrack then passes the rest. A UDP
//! 4-tuple is not tied to a socket: when the socket that was decided for
//! closes, another process can bind the same port and send to (or receive
//! from) the same peer, and conntrack would pass its packets on the old
//! verdict. So labelgate remembers every UDP flow it accepted at INPUT or
//! OUTPUT ([`FlowTable`], bounded) and listens to the kernel's socket-destroy
//! notifications (`sys::sockdestroy`, on the `flowwatch` thread). When a
//! UDP socket whose port is either port of remembered flows is destroyed,
//! those flows' conntrack entries are deleted (`sys::ctnetlink`): the next
//! packet of the tuple is `NEW` again, queued and decided for the socket
//! that sends or receives it then.
//!
//! Matching is by port only, both ends, any address and family: a socket's
//! address can change after it sent (a UDP `connect()` sets it, a
//! disconnect resets it, a dual-stack socket sends IPv4), its port cannot.
//! That deletes more than needed when an unrelated socket with the same
//! port number closes; such a flow's next packet is only decided again.
//!
//! Every accepted flow is either in the table or has had its entry deleted:
//! when the table is full its oldest flow's entry is deleted, and when
//! notifications were lost (the listener's buffer overflowed) every
//! remembered flow's entry is deleted.
//!
//! What is left open is written in docs/ARCHITECTURE.md ("UDP flows and the
//! sockets they were decided for"): chiefly the time between `close()`
//! releasing the port and the kernel's asynchronous notification being
//! handled here.

use crate::counters::Counters;
use crate::labels::Hook;
use crate::packet::{PacketInfo, Proto};
use crate::sys::ctnetlink::{CtLink, CtTuple, Direction};
use crate::sys::sockdestroy::{DestroyListener, Destroyed, Received};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most flows remembered by default. A full table holds about 94 bytes
/// of heap per flow, the 256 KiB port array included: about 1.5 MiB
/// (`tests/flowwatch_memory.rs`); past it,
/// the oldest flow's conntrack entry is deleted (its next packet is decided
/// again).
pub const DEFAULT_CAPACITY: usize = 16_384;

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot listen to UDP socket-destroy notifications (sock_diag): {0}")]
    Listen(std::io::Error),
    #[error("cannot open a conntrack netlink socket: {0}")]
    Conntrack(std::io::Error),
    #[error("cannot start the flowwatch thread: {0}")]
    Thread(std::io::Error),
}

/// One accepted UDP flow: both ends as the decided packet had them (the
/// conntrack entry's original tuple, unless NAT rewrote it), kept in 38
/// bytes (IPv4 addresses in the first 4 of the 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    v6: bool,
}

impl Flow {
    /// The flow of a UDP packet queued at INPUT or OUTPUT (the hooks with a
    /// local socket at one end); `None` for anything else.
    pub fn of(pkt: &PacketInfo, hook: Hook) -> Option<Flow> {
        if pkt.proto != Proto::Udp || !matches!(hook, Hook::Input | Hook::Output) {
            return None;
        }
        let bytes = |ip: IpAddr| match ip {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                for (d, s) in b.iter_mut().zip(a.octets()) {
                    *d = s;
                }
                b
            }
            IpAddr::V6(a) => a.octets(),
        };
        if pkt.src.is_ipv4() != pkt.dst.is_ipv4() {
            return None;
        }
        Some(Flow {
            src: bytes(pkt.src),
            dst: bytes(pkt.dst),
            sport: pkt.sport?,
            dport: pkt.dport?,
            v6: pkt.src.is_ipv6(),
        })
    }

    /// The conntrack tuple.
    pub fn tuple(&self) -> CtTuple {
        let ip = |b: [u8; 16]| {
            if self.v6 {
                IpAddr::from(b)
            } else {
                IpAddr::from([b[0], b[1], b[2], b[3]])
            }
        };
        CtTuple::udp(SocketAddr::new(ip(self.src), self.sport), SocketAddr::new(ip(self.dst), self.dport))
    }

    fn ports(&self) -> (u16, u16) {
        (self.sport, self.dport)
    }
}

/// No slot: the end of a port's list.
const NIL: u32 = u32::MAX;

/// One remembered flow and its place in the two lists of flows by port
/// (link 0: the flows with its source port, link 1: those with its
/// destination port; a flow whose two ports are equal is in one list, by
/// link 0).
#[derive(Clone, Copy, Debug)]
struct Slot {
    flow: Flow,
    /// Bumped whenever the slot is given a flow: an order entry with
    /// another generation is stale.
    generation: u32,
    live: bool,
    prev: [u32; 2],
    next: [u32; 2],
}

/// The accepted flows, indexed by both ports, at most `capacity` of them,
/// oldest first out.
///
/// Laid out for a small heap (about 94 bytes per flow when full, the port
/// array included; see `tests/flowwatch_memory.rs`): each flow is stored once, in a slot of a
/// vector; an index by flow holds slot numbers only; the flows of one port
/// are a list threaded through the slots, whose heads are one flat array
/// of 65,536 entries (zeroed, so untouched pages cost no memory); the
/// insertion order is (slot, generation) pairs.
#[derive(Debug)]
pub struct FlowTable {
    capacity: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    /// Slot numbers, by their flow's hash.
    index: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Per port: 1 + the first slot of its list, 0 for none.
    heads: Vec<u32>,
    /// Insertion order; entries whose generation no longer matches their
    /// slot's are stale (the flow was taken) and skipped.
    order: VecDeque<(u32, u32)>,
}

impl FlowTable {
    pub fn new(capacity: usize) -> FlowTable {
        FlowTable {
            capacity: capacity.max(1),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            index: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            heads: vec![0; 1 << 16],
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn hash(&self, f: &Flow) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(f)
    }

    fn slot(&self, s: u32) -> Option<&Slot> {
        self.slots.get(s as usize)
    }

    fn slot_mut(&mut self, s: u32) -> Option<&mut Slot> {
        self.slots.get_mut(s as usize)
    }

    fn head(&self, port: u16) -> u32 {
        self.heads.get(port as usize).map_or(NIL, |h| h.wrapping_sub(1))
    }

    fn set_head(&mut self, port: u16, s: u32) {
        if let Some(h) = self.heads.get_mut(port as usize) {
            *h = s.wrapping_add(1);
        }
    }

    /// Which of slot `s`'s links threads the list of `port`.
    fn link(&self, s: u32, port: u16) -> usize {
        match self.slot(s) {
            Some(x) if x.flow.sport != port => 1,
            _ => 0,
        }
    }

    /// The ports whose lists slot `s` is in, with the link of each.
    fn lists(f: &Flow) -> impl Iterator<Item = (usize, u16)> {
        let (a, b) = f.ports();
        [(0, a)].into_iter().chain((a != b).then_some((1, b)))
    }

    fn find(&self, f: &Flow) -> Option<u32> {
        let h = self.hash(f);
        self.index.find(h, |&s| self.slot(s).is_some_and(|x| x.flow == *f)).copied()
    }

    /// Remember `flow`. Returns the flow pushed out to make room, whose
    /// conntrack entry must then be deleted. A flow already remembered
    /// keeps its place.
    pub fn record(&mut self, flow: Flow) -> Option<Flow> {
        if self.find(&flow).is_some() {
            return None;
        }
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                let Ok(s) = u32::try_from(self.slots.len()) else { return Some(flow) };
                self.slots.push(Slot { flow, generation: 0, live: false, prev: [NIL; 2], next: [NIL; 2] });
                s
            }
        };
        let mut next = [NIL; 2];
        for (k, port) in Self::lists(&flow) {
            let first = self.head(port);
            if let Some(n) = next.get_mut(k) {
                *n = first;
            }
            if first != NIL {
                let l = self.link(first, port);
                if let Some(p) = self.slot_mut(first).and_then(|x| x.prev.get_mut(l)) {
                    *p = s;
                }
            }
            self.set_head(port, s);
        }
        let generation = match self.slot_mut(s) {
            Some(x) => {
                x.generation = x.generation.wrapping_add(1);
                *x = Slot { flow, generation: x.generation, live: true, prev: [NIL; 2], next };
                x.generation
            }
            None => return Some(flow),
        };
        let h = self.hash(&flow);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(h, s, |&t| {
            use std::hash::BuildHasher;
            slots.get(t as usize).map_or(0, |x| hasher.hash_one(x.flow))
        });
        self.live += 1;
        self.order.push_back((s, generation));
        let mut evicted = None;
        if self.live > self.capacity {
            while let Some((t, g)) = self.order.pop_front() {
                if let Some(f) = self.slot(t).filter(|x| x.live && x.generation == g).map(|x| x.flow) {
                    self.forget(t);
                    evicted = Some(f);
                    break;
                }
            }
        }
        if self.order.len() > 2 * self.capacity + 16 {
            self.compact();
        }
        evicted
    }

    /// Take out every flow with `port` at either end.
    pub fn take_port(&mut self, port: u16) -> Vec<Flow> {
        let mut found = Vec::new();
        let mut s = self.head(port);
        while let Some(x) = self.slot(s) {
            found.push(s);
            let l = self.link(s, port);
            s = x.next.get(l).copied().unwrap_or(NIL);
        }
        found
            .into_iter()
            .filter_map(|s| {
                let f = self.slot(s).map(|x| x.flow);
                self.forget(s);
                f
            })
            .collect()
    }

    /// Unthread slot `s` from its ports' lists, drop it from the index and
    /// free it.
    fn forget(&mut self, s: u32) {
        let Some(x) = self.slot(s).copied().filter(|x| x.live) else { return };
        for (k, port) in Self::lists(&x.flow) {
            let (prev, next) = (x.prev.get(k).copied().unwrap_or(NIL), x.next.get(k).copied().unwrap_or(NIL));
            if prev == NIL {
                self.set_head(port, next);
            } else {
                let l = self.link(prev, port);
                if let Some(n) = self.slot_mut(prev).and_then(|p| p.next.get_mut(l)) {
                    *n = next;
                }
            }
            if next != NIL {
                let l = self.link(next, port);
                if let Some(p) = self.slot_mut(next).and_then(|n| n.prev.get_mut(l)) {
                    *p = prev;
                }
            }
        }
        let h = self.hash(&x.flow);
        if let Ok(e) = self.index.find_entry(h, |&t| t == s) {
            e.remove();
        }
        if let Some(x) = self.slot_mut(s) {
            x.live = false;
        }
        self.free.push(s);
        self.live -= 1;
    }

    /// Take out every flow.
    pub fn take_all(&mut self) -> Vec<Flow> {
        let all: Vec<Flow> = self.slots.iter().filter(|x| x.live).map(|x| x.flow).collect();
        for f in &all {
            for (_, port) in Self::lists(f) {
                self.set_head(port, NIL);
            }
        }
        self.slots.clear();
        self.free.clear();
        self.index.clear();
        self.order.clear();
        self.live = 0;
        all
    }

    /// Drop the stale entries of the order.
    fn compact(&mut self) {
        let slots = &self.slots;
        self.order.retain(|&(s, g)| slots.get(s as usize).is_some_and(|x| x.live && x.generation == g));
    }
}

/// Deletes conntrack entries; the kernel's (`CtLink`) or a test's.
pub trait Deleter {
    /// As [`CtLink::delete`].
    fn delete(&mut self, tuple: &CtTuple, dir: Direction) -> std::io::Result<bool>;
}

impl Deleter for CtLink {
    fn delete(&mut self, tuple: &CtTuple, dir: Direction) -> std::io::Result<bool> {
        CtLink::delete(self, tuple, dir)
    }
}

/// The accepted-flow table shared by the queue threads (which record) and
/// the `flowwatch` thread (which takes and deletes).
pub struct FlowWatch {
    table: Mutex<FlowTable>,
    /// Flows pushed out of a full table, for the thread to delete.
    evicted: Mutex<Vec<Flow>>,
    /// Bumped (under the table's lock) after flows were taken out of the
    /// table: a queue thread that recorded a flow at an earlier value must
    /// record it again (see [`accepted_again`](Self::accepted_again)).
    removals: AtomicU64,
    counters: Arc<Counters>,
}

impl FlowWatch {
    pub fn new(capacity: usize, counters: Arc<Counters>) -> FlowWatch {
        FlowWatch {
            table: Mutex::new(FlowTable::new(capacity)),
            evicted: Mutex::new(Vec::new()),
            removals: AtomicU64::new(0),
            counters,
        }
    }

    /// [`accepted`](Self::accepted), skipped when `last` (a queue thread's
    /// own memory) says this thread recorded the same flow and nothing has
    /// been taken out of the table since: a flood of one flow's packets
    /// (every packet queued) then costs one atomic load per packet.
    pub fn accepted_again(&self, flow: Flow, last: &mut Option<(Flow, u64)>) {
        // Read before recording: a removal after this read changes the value.
        let now = self.removals.load(Ordering::Acquire);
        if *last == Some((flow, now)) {
            return;
        }
        self.accepted(flow);
        *last = Some((flow, now));
    }

    /// A packet of `flow` was accepted: remember it. Called on the queue
    /// threads before the verdict is sent, so before the kernel can free
    /// the socket that sent it (a datagram holds its socket until it is
    /// sent) and send that socket's destroy notification.
    pub fn accepted(&self, flow: Flow) {
        let Ok(mut t) = self.table.lock() else { return };
        let before = t.len();
        let evicted = t.record(flow);
        let grew = t.len() > before || evicted.is_some();
        if evicted.is_some() {
            self.removals.fetch_add(1, Ordering::Release);
        }
        drop(t);
        if grew {
            Counters::bump(&self.counters.flows_watched);
        }
        if let Some(f) = evicted {
            Counters::bump(&self.counters.flows_evicted);
            if let Ok(mut e) = self.evicted.lock() {
                e.push(f);
            }
        }
    }

    /// How many flows are remembered.
    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handle what the listener received: the flows whose entries were
    /// deleted, for tests and logs.
    pub fn handle(&self, got: Received, ct: &mut impl Deleter, log: &mut RateLimitedLog) -> usize {
        let flows = match got {
            Received::Sockets(socks) => {
                let Ok(mut t) = self.table.lock() else { return 0 };
                let taken = socks.iter().flat_map(|d: &Destroyed| t.take_port(d.sport)).collect::<Vec<_>>();
                if !taken.is_empty() {
                    self.removals.fetch_add(1, Ordering::Release);
                }
                taken
            }
            Received::Overrun => {
                Counters::bump(&self.counters.destroy_overruns);
                log.warn(|| {
                    "socket-destroy notifications were lost (buffer overflow): ending every watched UDP flow's pass"
                        .into()
                });
                self.table
                    .lock()
                    .map(|mut t| {
                        let all = t.take_all();
                        self.removals.fetch_add(1, Ordering::Release);
                        all
                    })
                    .unwrap_or_default()
            }
        };
        let mut evicted = self.evicted.lock().map(|mut e| std::mem::take(&mut *e)).unwrap_or_default();
        evicted.extend(flows);
        let n = evicted.len();
        for f in &evicted {
            self.delete(f, ct, log);
        }
        n
    }

    /// Delete one flow's entry: by its tuple as the original direction,
    /// else (DNAT, or a packet of the reply direction) by the reversed
    /// tuple as the reply direction, else by the reversed tuple as the
    /// original direction.
    fn delete(&self, f: &Flow, ct: &mut impl Deleter, log: &mut RateLimitedLog) {
        let c = &self.counters;
        let tries = [
            (f.tuple(), Direction::Original),
            (f.tuple().reversed(), Direction::Reply),
            (f.tuple().reversed(), Direction::Original),
        ];
        for (t, dir) in tries {
            match ct.delete(&t, dir) {
                Ok(true) => {
                    Counters::bump(&c.ct_deleted);
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    Counters::bump(&c.ct_delete_errors);
                    log.warn(|| format!("cannot delete the conntrack entry of {:?}: {e}", f.tuple()));
                    return;
                }
            }
        }
        Counters::bump(&c.ct_gone);
    }
}

/// A warning at most once per interval, with how many were held back.
pub struct RateLimitedLog {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl RateLimitedLog {
    pub fn new(every: Duration) -> RateLimitedLog {
        RateLimitedLog { every, last: None, held: 0 }
    }

    /// Log `msg()` unless one was logged within the interval (then count it).
    /// Returns whether it was logged.
    pub fn warn(&mut self, msg: impl FnOnce() -> String) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.held += 1;
            return false;
        }
        let held = std::mem::take(&mut self.held);
        if held > 0 {
            log::warn!("{} ({held} similar warnings held back)", msg());
        } else {
            log::warn!("{}", msg());
        }
        self.last = Some(now);
        true
    }
}

/// The running `flowwatch` thread.
pub struct Watcher {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Subscribe to UDP socket destroys, open the conntrack socket, and
    /// start the thread that handles them until `stop` is set.
    pub fn start(watch: Arc<FlowWatch>, stop: Arc<AtomicBool>) -> Result<Watcher, WatchError> {
        let timeout = Duration::from_millis(100);
        let mut listener = DestroyListener::open(4 << 20, timeout).map_err(WatchError::Listen)?;
        let mut ct = CtLink::open(Duration::from_secs(1)).map_err(WatchError::Conntrack)?;
        let thread = std::thread::Builder::new()
            .name("flowwatch".into())
            .spawn(move || {
                let mut log = RateLimitedLog::new(Duration::from_secs(1));
                while !stop.load(Ordering::Relaxed) {
                    match listener.recv() {
                        Ok(got) => {
                            watch.handle(got, &mut ct, &mut log);
                        }
                        Err(e) => {
                            // Not knowing what was destroyed is handled as
                            // an overrun: every watched pass ends.
                            log.warn(|| format!("socket-destroy listener: {e}"));
                            watch.handle(Received::Overrun, &mut ct, &mut log);
                            std::thread::sleep(timeout);
                        }
                    }
                }
            })
            .map_err(WatchError::Thread)?;
        Ok(Watcher { thread: Some(thread) })
    }

    /// Wait for the thread to end (after `stop` was set).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn flow(sport: u16, dport: u16) -> Flow {
        let mut lo = [0u8; 16];
        lo[..4].copy_from_slice(&[127, 0, 0, 1]);
        Flow { src: lo, dst: lo, sport, dport, v6: false }
    }

    #[test]
    fn flow_of_takes_udp_at_input_and_output_only() {
        let lo = Ipv4Addr::LOCALHOST;
        let udp = crate::packet::parse(&crate::packet::build::ipv4(
            lo,
            lo,
            17,
            &[],
            &crate::packet::build::udp(42001, 5353, b"x"),
        ))
        .unwrap();
        assert_eq!(Flow::of(&udp, Hook::Output), Some(flow(42001, 5353)));
        assert_eq!(Flow::of(&udp, Hook::Input), Some(flow(42001, 5353)));
        assert_eq!(Flow::of(&udp, Hook::Forward), None);
        let tcp =
            crate::packet::parse(&crate::packet::build::ipv4(lo, lo, 6, &[], &crate::packet::build::tcp(1, 2, 2)))
                .unwrap();
        assert_eq!(Flow::of(&tcp, Hook::Output), None);
    }

    #[test]
    fn a_port_takes_the_flows_at_either_end_once() {
        let mut t = FlowTable::new(10);
        assert_eq!(t.record(flow(42001, 5353)), None);
        assert_eq!(t.record(flow(42001, 5353)), None, "already there");
        t.record(flow(42002, 5353));
        t.record(flow(7, 7));
        assert_eq!(t.len(), 3);
        assert_eq!(t.take_port(42001), vec![flow(42001, 5353)]);
        assert!(t.take_port(42001).is_empty());
        // The server's port takes what is left of it, once.
        assert_eq!(t.take_port(5353), vec![flow(42002, 5353)]);
        assert_eq!(t.take_port(7), vec![flow(7, 7)]);
        assert!(t.is_empty());
        assert!(t.take_port(9).is_empty());
    }

    #[test]
    fn a_full_table_gives_up_its_oldest_flow_and_stays_bounded() {
        let mut t = FlowTable::new(3);
        for p in 1..=3 {
            assert_eq!(t.record(flow(p, 5353)), None);
        }
        assert_eq!(t.record(flow(4, 5353)), Some(flow(1, 5353)));
        // A taken flow is skipped when the oldest is looked for.
        assert_eq!(t.take_port(2), vec![flow(2, 5353)]);
        assert_eq!(t.record(flow(5, 5353)), None, "room left by the taken flow");
        assert_eq!(t.record(flow(6, 5353)), Some(flow(3, 5353)));
        assert_eq!(t.take_port(6), vec![flow(6, 5353)]);
        // Churn within the room left: the order and index stay bounded.
        for p in 100..5_000u16 {
            t.record(flow(p, 53));
            t.take_port(p);
        }
        assert!(t.order.len() <= 2 * 3 + 16, "{}", t.order.len());
        assert_eq!(t.heads.iter().filter(|&&h| h != 0).count(), 3, "ports 4, 5 and 5353 have lists");
        assert!(t.slots.len() <= 4, "slots are reused: {}", t.slots.len());
        assert_eq!(t.len(), 2);
        let mut all = t.take_all();
        all.sort_by_key(|f| f.ports());
        assert_eq!(all, vec![flow(4, 5353), flow(5, 5353)]);
    }

    /// The table against a plain model (a vector, oldest first) under a
    /// long random mix of records, port takes and full takes, with few
    /// ports so that lists are long, flows share ports and some have equal
    /// ports.
    #[test]
    fn the_table_behaves_as_a_list_of_flows_oldest_first() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for cap in [1usize, 2, 7, 64] {
            let mut t = FlowTable::new(cap);
            let mut model: Vec<Flow> = Vec::new();
            for step in 0..20_000 {
                match rnd(20) {
                    0 => {
                        let p = rnd(12) as u16;
                        let mut got = t.take_port(p);
                        let mut want: Vec<Flow> =
                            model.iter().copied().filter(|f| f.sport == p || f.dport == p).collect();
                        model.retain(|f| f.sport != p && f.dport != p);
                        got.sort();
                        want.sort();
                        assert_eq!(got, want, "take_port({p}) at step {step}, capacity {cap}");
                    }
                    1 if rnd(50) == 0 => {
                        let mut got = t.take_all();
                        got.sort();
                        model.sort();
                        assert_eq!(got, model, "take_all at step {step}");
                        model.clear();
                    }
                    _ => {
                        let f = flow(rnd(12) as u16, rnd(12) as u16);
                        let want = if model.contains(&f) {
                            None
                        } else {
                            model.push(f);
                            (model.len() > cap).then(|| model.remove(0))
                        };
                        assert_eq!(t.record(f), want, "record({f:?}) at step {step}, capacity {cap}");
                    }
                }
                assert_eq!(t.len(), model.len(), "step {step}");
                assert!(t.order.len() <= 2 * cap + 17);
                assert!(t.slots.len() <= cap + 1);
            }
        }
    }

    /// Answers as told, and says what it was asked.
    struct FakeCt {
        answers: VecDeque<std::io::Result<bool>>,
        asked: Vec<(CtTuple, Direction)>,
    }

    impl Deleter for FakeCt {
        fn delete(&mut self, tuple: &CtTuple, dir: Direction) -> std::io::Result<bool> {
            self.asked.push((*tuple, dir));
            self.answers.pop_front().unwrap_or(Ok(false))
        }
    }

    fn destroyed(sport: u16) -> Destroyed {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Destroyed { src: any, sport, dst: any, dport: 0, cookie: 1 }
    }

    #[test]
    fn a_destroyed_socket_deletes_its_flows_entries_and_counts_the_outcome() {
        let c = Arc::new(Counters::default());
        let w = FlowWatch::new(2, c.clone());
        let mut log = RateLimitedLog::new(Duration::from_secs(60));
        w.accepted(flow(42001, 5353));
        w.accepted(flow(42001, 5353));
        w.accepted(flow(42002, 5353));
        assert_eq!((w.len(), Counters::get(&c.flows_watched)), (2, 2));
        let mut ct = FakeCt { answers: VecDeque::from([Ok(true)]), asked: vec![] };
        // An unrelated socket: nothing asked.
        assert_eq!(w.handle(Received::Sockets(vec![destroyed(9)]), &mut ct, &mut log), 0);
        assert!(ct.asked.is_empty());
        // The client's socket: its flow's entry, by the original tuple.
        assert_eq!(w.handle(Received::Sockets(vec![destroyed(42001)]), &mut ct, &mut log), 1);
        assert_eq!(ct.asked, vec![(flow(42001, 5353).tuple(), Direction::Original)]);
        assert_eq!(Counters::get(&c.ct_deleted), 1);
        // Not found as sent: the reversed tuple as reply, then as original.
        ct.asked.clear();
        ct.answers = VecDeque::from([Ok(false), Ok(false), Ok(false)]);
        assert_eq!(w.handle(Received::Sockets(vec![destroyed(5353)]), &mut ct, &mut log), 1);
        let f = flow(42002, 5353).tuple();
        assert_eq!(
            ct.asked,
            vec![(f, Direction::Original), (f.reversed(), Direction::Reply), (f.reversed(), Direction::Original)]
        );
        assert_eq!(Counters::get(&c.ct_gone), 1);
        assert!(w.is_empty());
        // An error is counted; a full table's oldest flow is deleted at the
        // next wake-up; an overrun deletes every flow.
        w.accepted(flow(1, 53));
        w.accepted(flow(2, 53));
        w.accepted(flow(3, 53));
        assert_eq!(Counters::get(&c.flows_evicted), 1);
        ct.asked.clear();
        ct.answers = VecDeque::from([Err(std::io::Error::from_raw_os_error(libc::EPERM)), Ok(true), Ok(true)]);
        assert_eq!(w.handle(Received::Overrun, &mut ct, &mut log), 3);
        assert_eq!(ct.asked.first().map(|a| a.0), Some(flow(1, 53).tuple()), "the evicted flow first");
        assert_eq!(
            (Counters::get(&c.ct_delete_errors), Counters::get(&c.ct_deleted), Counters::get(&c.destroy_overruns)),
            (1, 3, 1)
        );
        assert!(w.is_empty());
    }

    #[test]
    fn a_thread_records_its_flow_again_once_flows_were_taken() {
        let c = Arc::new(Counters::default());
        let w = FlowWatch::new(8, c.clone());
        let mut log = RateLimitedLog::new(Duration::from_secs(60));
        let mut ct = FakeCt { answers: VecDeque::new(), asked: vec![] };
        let mut last = None;
        for _ in 0..3 {
            w.accepted_again(flow(42001, 5353), &mut last);
        }
        assert_eq!((w.len(), Counters::get(&c.flows_watched)), (1, 1));
        // Another thread's flow does not make this one re-record...
        w.accepted(flow(9, 9));
        w.accepted_again(flow(42001, 5353), &mut last);
        // ...but a destroy that takes it does: the same tuple accepted
        // again (for a new socket) is remembered again.
        w.handle(Received::Sockets(vec![destroyed(42001)]), &mut ct, &mut log);
        assert_eq!(w.len(), 1);
        w.accepted_again(flow(42001, 5353), &mut last);
        assert_eq!((w.len(), Counters::get(&c.flows_watched)), (2, 3));
    }

    #[test]
    fn the_log_is_rate_limited() {
        let mut l = RateLimitedLog::new(Duration::from_secs(60));
        assert!(l.warn(|| "a".into()));
        assert!(!l.warn(|| "b".into()));
        assert_eq!(l.held, 1);
        let mut l = RateLimitedLog::new(Duration::ZERO);
        assert!(l.warn(|| "a".into()) && l.warn(|| "b".into()));
    }
}
