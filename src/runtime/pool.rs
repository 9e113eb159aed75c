//! The resolver workers ([`start_pool`], `worker_loop`) and a queue
//! thread's handle on them ([`Pool`]): which worker a packet goes to (by
//! its flow, [`WorkerKey`]), and how one flow's packets keep their order.

use crate::counters::Counters;
use crate::engine::{Engine, Parsed, Scratch};
use crate::labels::QueueMeta;
use crate::packet::{PacketInfo, Proto};
use crate::policy::Verdict;
use crate::sys::EventFd;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A decided packet waiting for its verdict to be sent.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub id: u32,
    pub verdict: Verdict,
    /// The packet's mark when it was queued.
    pub mark: u32,
    /// Flow mode: the acceptance settles the packet's INPUT decision too
    /// ([`Scratch::take_input_settled`](crate::engine::Scratch::take_input_settled)).
    pub input_settled: bool,
}

/// A packet's flow for worker assignment: protocol and both ends, in a
/// fixed order so that both directions of a connection are one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct WorkerKey {
    proto: Proto,
    ends: [(IpAddr, u16); 2],
}

impl WorkerKey {
    fn of(pkt: &PacketInfo) -> WorkerKey {
        let a = (pkt.src, pkt.sport.unwrap_or(0));
        let b = (pkt.dst, pkt.dport.unwrap_or(0));
        WorkerKey { proto: pkt.proto, ends: if a <= b { [a, b] } else { [b, a] } }
    }

    /// The worker (of `n`) that handles this flow: the same for every
    /// packet of the flow, from every queue thread.
    fn worker(&self, n: usize) -> usize {
        // SipHash with fixed keys: stable for the life of the process.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        (h.finish() % n.max(1) as u64) as usize
    }
}

/// A parsed packet handed to a resolver worker (its facts, peer-label
/// option included: the packet's bytes stay with the queue thread).
struct Job {
    /// Index of the queue thread that must send the verdict.
    queue: usize,
    id: u32,
    flow: WorkerKey,
    parsed: Parsed,
    meta: QueueMeta,
}

/// A worker's decision, on its way back to the queue thread.
struct Done {
    answer: Answer,
    flow: WorkerKey,
}

/// How a worker reaches one queue thread.
struct Reply {
    tx: Sender<Done>,
    wake: Arc<EventFd>,
}

/// Start `n` resolver workers, each with a channel of `capacity` packets,
/// serving `queues` queue threads; returns each queue thread's [`Pool`]
/// handle and the worker threads. The workers stop when every `Pool` is
/// dropped.
pub fn start_pool(
    n: usize,
    capacity: usize,
    engine: &Arc<Engine>,
    queues: usize,
) -> std::io::Result<(Vec<Pool>, Vec<JoinHandle<()>>)> {
    let mut replies = Vec::with_capacity(queues);
    let mut ends = Vec::with_capacity(queues);
    for _ in 0..queues {
        // Unbounded, so that a worker never waits on a queue thread (which
        // may be waiting for room at that worker); it holds at most the
        // packets in flight, which the workers' channels bound.
        let (tx, rx) = crossbeam_channel::unbounded();
        let wake = Arc::new(EventFd::new()?);
        replies.push(Reply { tx, wake: wake.clone() });
        ends.push((rx, wake));
    }
    let replies = Arc::new(replies);
    let mut senders = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let engine = engine.clone();
        let replies = replies.clone();
        let t = std::thread::Builder::new()
            .name(format!("resolver-{i}"))
            .spawn(move || worker_loop(&engine, &rx, &replies))?;
        senders.push(tx);
        threads.push(t);
    }
    let pools = ends
        .into_iter()
        .enumerate()
        .map(|(queue, (results, wake))| Pool {
            queue,
            workers: senders.clone(),
            results,
            wake,
            inflight: HashMap::new(),
        })
        .collect();
    Ok((pools, threads))
}

/// A resolver worker: decide each packet in full, in the order received,
/// and hand the verdict back to its queue thread.
fn worker_loop(engine: &Engine, jobs: &Receiver<Job>, replies: &[Reply]) {
    let mut scratch = Scratch::default();
    for job in jobs {
        let verdict = engine.decide(&job.parsed, &job.meta, &mut scratch);
        Counters::bump(&engine.counters.offloaded);
        let Some(r) = replies.get(job.queue) else { continue };
        let input_settled = scratch.take_input_settled();
        let done = Done { answer: Answer { id: job.id, verdict, mark: job.meta.mark, input_settled }, flow: job.flow };
        // A send fails only once that queue thread is gone.
        if r.tx.send(done).is_ok() {
            if let Err(e) = r.wake.notify() {
                log::error!("resolver worker: cannot wake queue thread {}: {e}", job.queue);
            }
        }
    }
}

/// One queue thread's handle on the resolver workers.
///
/// Order: every packet of a flow that is not decided on the queue thread
/// goes to the same worker (by [`WorkerKey::worker`]), which decides its
/// packets one at a time in channel order and sends the results back over
/// one FIFO channel; the queue thread sends each result's verdict as it
/// takes it. While a flow has packets at its worker (`inflight`), its later
/// packets go there too, even those the caches could answer at once, so
/// they cannot overtake. A packet decided on the queue thread belongs to a
/// flow with nothing in flight: every earlier packet of it already has its
/// verdict sent, or is earlier in the same list of answers.
pub struct Pool {
    /// This queue thread's index among the replies.
    queue: usize,
    workers: Vec<Sender<Job>>,
    results: Receiver<Done>,
    wake: Arc<EventFd>,
    /// Packets at workers, per flow (no entry: none).
    inflight: HashMap<WorkerKey, u32>,
}

impl Pool {
    /// Whether any packet of this queue is still at a worker.
    pub fn busy(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// How many packets of this queue are at workers.
    pub fn in_flight(&self) -> u32 {
        self.inflight.values().sum()
    }

    /// The eventfd the workers wake this queue thread through.
    pub fn wake(&self) -> &EventFd {
        &self.wake
    }

    /// Decide a packet here if it needs no slow work and its flow has
    /// nothing in flight; otherwise send it to its flow's worker (`None`).
    /// A full worker channel is counted (`worker_full`): the packet is then
    /// decided here in full, unless its flow has packets at that worker, in
    /// which case this waits for room (workers never wait on queue threads).
    pub fn submit(
        &mut self,
        engine: &Engine,
        id: u32,
        payload: &[u8],
        meta: QueueMeta,
        scratch: &mut Scratch,
    ) -> Option<Verdict> {
        let parsed = Parsed::new(payload, &meta);
        // A malformed packet has no flow and needs no labels.
        let Some(flow) = parsed.packet().map(WorkerKey::of) else {
            return Some(engine.decide(&parsed, &meta, scratch));
        };
        let busy = self.inflight.contains_key(&flow);
        if !busy {
            if let Some(v) = engine.decide_cached(&parsed, &meta, scratch) {
                return Some(v);
            }
        }
        let Some(tx) = self.workers.get(flow.worker(self.workers.len())) else {
            return Some(engine.decide(&parsed, &meta, scratch));
        };
        let job = Job { queue: self.queue, id, flow, parsed, meta };
        let sent = match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                Counters::bump(&engine.counters.worker_full);
                if busy {
                    tx.send(job).map_err(|e| e.into_inner())
                } else {
                    Err(job)
                }
            }
            Err(TrySendError::Disconnected(job)) => Err(job),
        };
        match sent {
            Ok(()) => {
                *self.inflight.entry(flow).or_insert(0) += 1;
                None
            }
            Err(job) => Some(engine.decide(&job.parsed, &job.meta, scratch)),
        }
    }

    /// Take every result waiting, in order, into `out`.
    pub fn drain(&mut self, out: &mut Vec<Answer>) {
        // Clear the wake-up first: a result sent after this is either taken
        // below or wakes the next poll.
        if let Err(e) = self.wake.clear() {
            log::error!("queue thread: cannot reset its wake-up eventfd: {e}");
        }
        while let Ok(Done { answer, flow }) = self.results.try_recv() {
            if let Entry::Occupied(mut e) = self.inflight.entry(flow) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            out.push(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::audit::AuditSink;
    use crate::labels::{KernelMetaResolver, Labels, Resolver};
    use crate::packet::build;
    use crate::policy::Policy;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// A resolver whose "cache" knows the source ports it resolved before;
    /// `resolve` takes a little while, and waits while the gate is closed
    /// for the packet's source port.
    #[derive(Default)]
    struct Learning {
        known: Mutex<HashSet<u16>>,
        gate: Mutex<Option<u16>>,
        opened: Condvar,
        waiting_at_gate: AtomicBool,
    }

    struct Shared(Arc<Learning>);

    impl Resolver for Shared {
        fn resolve(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Labels {
            let port = pkt.sport.unwrap_or(0);
            let mut gate = self.0.gate.lock().unwrap();
            while *gate == Some(port) {
                self.0.waiting_at_gate.store(true, Ordering::SeqCst);
                gate = self.0.opened.wait(gate).unwrap();
            }
            drop(gate);
            std::thread::sleep(Duration::from_micros(200));
            self.0.known.lock().unwrap().insert(port);
            KernelMetaResolver.resolve(pkt, meta)
        }

        fn resolve_cached(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Option<Labels> {
            let known = self.0.known.lock().unwrap().contains(&pkt.sport.unwrap_or(0));
            known.then(|| KernelMetaResolver.resolve(pkt, meta))
        }
    }

    fn engine(l: &Arc<Learning>) -> Arc<Engine> {
        let c = Arc::new(Counters::default());
        let p = Policy::from_toml("default = \"accept\"\n", "t").unwrap();
        let l = l.clone();
        Arc::new(Engine::new(
            p,
            Box::new(move |_| Box::new(Shared(l.clone()))),
            None,
            c.clone(),
            AuditSink::disabled(c),
        ))
    }

    fn udp(sport: u16) -> Vec<u8> {
        build::ipv4(Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2), 17, &[], &build::udp(sport, 53, b"x"))
    }

    fn out_meta() -> QueueMeta {
        QueueMeta { hook: 3, uid: Some(0), ..QueueMeta::default() }
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Take results until nothing is in flight.
    fn settle(pool: &mut Pool, got: &mut Vec<Answer>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.busy() {
            assert!(Instant::now() < deadline, "workers did not answer");
            crate::sys::poll_readable(pool.wake.fd(), 100).unwrap();
            pool.drain(got);
        }
    }

    /// One queue thread's pool of `workers` workers with channels of
    /// `capacity`, over a [`Learning`] resolver gated for `gate`.
    fn pool(
        workers: usize,
        capacity: usize,
        gate: Option<u16>,
    ) -> (Arc<Learning>, Arc<Engine>, Pool, Vec<JoinHandle<()>>) {
        let l = Arc::new(Learning { gate: Mutex::new(gate), ..Learning::default() });
        let e = engine(&l);
        let (mut pools, threads) = start_pool(workers, capacity, &e, 1).unwrap();
        let pool = pools.pop().unwrap();
        (l, e, pool, threads)
    }

    fn stop(pool: Pool, threads: Vec<JoinHandle<()>>) {
        drop(pool);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn flows_are_one_key_both_ways_and_one_worker() {
        let parse = |src: [u8; 4], sport, dst: [u8; 4], dport| {
            crate::packet::parse(&build::ipv4(src.into(), dst.into(), 17, &[], &build::udp(sport, dport, b""))).unwrap()
        };
        let a = WorkerKey::of(&parse([10, 0, 0, 1], 1000, [10, 0, 0, 2], 53));
        assert_eq!(a, WorkerKey::of(&parse([10, 0, 0, 2], 53, [10, 0, 0, 1], 1000)));
        assert_ne!(a, WorkerKey::of(&parse([10, 0, 0, 1], 1001, [10, 0, 0, 2], 53)));
        assert_eq!(a.worker(7), a.worker(7));
        assert!(a.worker(7) < 7);
        // Flows spread over the workers.
        let used: HashSet<usize> =
            (0..64).map(|p| WorkerKey::of(&parse([10, 0, 0, 1], 1000 + p, [10, 0, 0, 2], 53)).worker(4)).collect();
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn a_flow_with_packets_at_a_worker_sends_the_next_there_too() {
        let (l, e, mut pool, threads) = pool(2, 16, None);
        let mut s = Scratch::default();
        let a = udp(1000);
        // Unknown flow: to its worker.
        assert_eq!(pool.submit(&e, 1, &a, out_meta(), &mut s), None);
        assert!(pool.busy());
        // Once the worker has resolved it the caches could answer the next
        // packet, but packet 1 has not been answered yet: 2 must follow it.
        wait_until("the worker resolved packet 1", || l.known.lock().unwrap().contains(&1000));
        assert_eq!(pool.submit(&e, 2, &a, out_meta(), &mut s), None);
        let mut got = Vec::new();
        settle(&mut pool, &mut got);
        assert_eq!(
            got.iter().map(|a| (a.id, a.verdict)).collect::<Vec<_>>(),
            [(1, Verdict::Accept), (2, Verdict::Accept)]
        );
        assert_eq!(Counters::get(&e.counters.offloaded), 2);
        // Nothing in flight: decided on the spot from the cache.
        assert_eq!(pool.submit(&e, 3, &a, out_meta(), &mut s), Some(Verdict::Accept));
        // Malformed packets never go to a worker.
        assert_eq!(pool.submit(&e, 4, &[0x45, 0, 1], out_meta(), &mut s), Some(Verdict::Drop));
        assert_eq!(Counters::get(&e.counters.offloaded), 2);
        assert_eq!(Counters::get(&e.counters.packets), 4);
        stop(pool, threads);
    }

    #[test]
    fn every_flow_keeps_its_order_through_the_pool() {
        let (_, e, mut pool, threads) = pool(3, 8, None);
        let mut s = Scratch::default();
        // As the queue thread does: answers decided here are sent at once,
        // results are taken from time to time.
        let mut got = Vec::new();
        for id in 0..600u32 {
            let port = 2000 + (id % 7) as u16;
            if let Some(verdict) = pool.submit(&e, id, &udp(port), out_meta(), &mut s) {
                got.push(Answer { id, verdict, mark: 0, input_settled: false });
            }
            if id % 5 == 0 {
                pool.drain(&mut got);
            }
        }
        settle(&mut pool, &mut got);
        assert_eq!(got.len(), 600, "every packet answered once");
        let mut seen: HashSet<u32> = HashSet::new();
        for flow in 0..7 {
            let ids: Vec<u32> = got.iter().map(|a| a.id).filter(|id| id % 7 == flow).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "flow {flow} out of order: {ids:?}");
            seen.extend(ids);
        }
        assert_eq!(seen.len(), 600);
        let c = &e.counters;
        assert!(Counters::get(&c.offloaded) >= 7, "each flow's first packet went to a worker");
        assert_eq!(Counters::get(&c.packets), 600);
        stop(pool, threads);
    }

    #[test]
    fn a_full_worker_channel_decides_here_or_waits_for_a_busy_flow() {
        let (l, e, mut pool, threads) = pool(1, 1, Some(7000));
        let mut s = Scratch::default();
        let (g, h) = (udp(7000), udp(8000));
        // Packet 1 holds the only worker at the gate; packet 2 fills its channel.
        assert_eq!(pool.submit(&e, 1, &g, out_meta(), &mut s), None);
        wait_until("the worker is at the gate", || l.waiting_at_gate.load(Ordering::SeqCst));
        assert_eq!(pool.submit(&e, 2, &g, out_meta(), &mut s), None);
        // Another flow with nothing in flight is decided here instead.
        assert_eq!(pool.submit(&e, 3, &h, out_meta(), &mut s), Some(Verdict::Accept));
        assert_eq!(Counters::get(&e.counters.worker_full), 1);
        // A packet of the waiting flow must queue behind it: this waits
        // until the gate opens and the worker takes packet 2.
        let opener = {
            let l = l.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                *l.gate.lock().unwrap() = None;
                l.opened.notify_all();
            })
        };
        assert_eq!(pool.submit(&e, 4, &g, out_meta(), &mut s), None);
        opener.join().unwrap();
        assert_eq!(Counters::get(&e.counters.worker_full), 2);
        let mut got = Vec::new();
        settle(&mut pool, &mut got);
        assert_eq!(got.iter().map(|a| a.id).collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(Counters::get(&e.counters.offloaded), 3);
        assert_eq!(Counters::get(&e.counters.packets), 4);
        stop(pool, threads);
    }
}
