//! Queue threads: one per NFQUEUE number, each reading its socket, deciding
//! through the [`Engine`] and answering every packet exactly once.
//!
//! With `workers > 0` (`--workers N`) the queue threads share a pool of N
//! resolver workers. A queue thread decides a packet itself when that needs
//! no slow work ([`Engine::decide_cached`]); otherwise it copies the packet
//! to the worker its flow hashes to, over that worker's bounded channel,
//! and the worker sends the verdict back over the queue thread's result
//! channel and wakes it through an eventfd. See [`Pool`] for how one flow's
//! packets keep their order.
//!
//! Shutdown: when the stop flag is set a thread sets its queue's maximum
//! length to 0 (the kernel then applies the queue's fail-open/fail-closed
//! behaviour to new packets instead of queueing them), answers every packet
//! already queued (waiting for those still at workers), and only then
//! unbinds.

use crate::counters::Counters;
use crate::engine::{Engine, Parsed, Scratch};
use crate::labels::QueueMeta;
use crate::packet::{PacketInfo, Proto};
use crate::policy::Verdict;
use crate::sys::nfqueue::{self, QueueParams, QueueSocket};
use crate::sys::EventFd;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Packets each resolver worker's channel holds before a queue thread finds
/// it full.
const WORKER_CHANNEL: usize = 1024;

/// How the queues are set up.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub queues: Vec<u16>,
    /// Bytes of each packet copied to user space (headers are enough).
    pub copy_range: u32,
    /// Kernel queue length before fail-open/fail-closed applies.
    pub max_len: u32,
    /// Socket receive buffer in bytes.
    pub rcvbuf: usize,
    /// Accept (true) or drop (false) packets the queue cannot take.
    pub fail_open: bool,
    /// Packets read per wake-up before verdicts are sent.
    pub batch: usize,
    /// Flow mode: each verdict also marks the connection (see `rules`), so
    /// the kernel decides the rest of the flow; verdicts are sent singly.
    pub flow: bool,
    /// Resolver worker threads shared by all queues; 0: every packet is
    /// decided on its queue thread.
    pub workers: usize,
}

/// Why the queues could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot bind NFQUEUE {queue}: {source}{hint}")]
    Bind { queue: u16, source: std::io::Error, hint: &'static str },
    #[error("cannot start queue thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot start the resolver workers: {0}")]
    Workers(std::io::Error),
}

/// Running queue threads (and resolver workers).
pub struct Runtime {
    threads: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Bind every queue (failing early with a clear error), then start one
    /// thread per queue.
    pub fn start(cfg: &RuntimeConfig, engine: Arc<Engine>, stop: Arc<AtomicBool>) -> Result<Runtime, RuntimeError> {
        let mut flags = nfqueue::F_UID_GID | nfqueue::F_SECCTX | nfqueue::F_GSO;
        if cfg.fail_open {
            flags |= nfqueue::F_FAIL_OPEN;
        }
        let params = QueueParams { copy_range: cfg.copy_range, max_len: cfg.max_len, flags };
        let mut sockets = Vec::new();
        for &q in &cfg.queues {
            let sock = QueueSocket::bind(q, &params).map_err(|source| {
                let hint = match source.raw_os_error() {
                    Some(libc::EPERM) => " (labelgate needs CAP_NET_ADMIN: run it as root)",
                    Some(libc::EBUSY) => " (another process is bound to this queue)",
                    _ => "",
                };
                RuntimeError::Bind { queue: q, source, hint }
            })?;
            match crate::sys::set_rcvbuf(sock.fd(), cfg.rcvbuf) {
                Ok(got) => log::debug!("queue {q}: receive buffer {got} bytes"),
                Err(e) => log::warn!("queue {q}: cannot set receive buffer: {e}"),
            }
            sockets.push(sock);
        }
        let (pools, workers) = if cfg.workers > 0 {
            start_pool(cfg.workers, WORKER_CHANNEL, &engine, sockets.len()).map_err(RuntimeError::Workers)?
        } else {
            (Vec::new(), Vec::new())
        };
        // One pool handle per queue thread, in order; none without workers.
        let mut pools = pools.into_iter();
        let mut threads = Vec::new();
        // With several queues (--queue-cpu-fanout sends CPU k's packets to
        // the k-th queue), the k-th queue's thread runs on CPU k, next to
        // the packets it serves.
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pin = cfg.queues.len() > 1 && ncpu > 1;
        for (k, sock) in sockets.into_iter().enumerate() {
            let engine = engine.clone();
            let stop = stop.clone();
            let opts = LoopOpts { batch: cfg.batch.max(1), flow: cfg.flow };
            let pool = pools.next();
            let cpu = pin.then_some(k % ncpu);
            let t = std::thread::Builder::new()
                .name(format!("queue-{}", sock.queue()))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        match crate::sys::pin_to_cpu(cpu) {
                            Ok(()) => log::debug!("queue {}: thread pinned to CPU {cpu}", sock.queue()),
                            Err(e) => log::warn!("queue {}: cannot pin to CPU {cpu}: {e}", sock.queue()),
                        }
                    }
                    queue_loop(sock, &engine, &stop, opts, pool)
                })
                .map_err(RuntimeError::Thread)?;
            threads.push(t);
        }
        log::info!(
            "bound NFQUEUE {:?} (copy range {}, fail-{}, {} resolver workers)",
            cfg.queues,
            cfg.copy_range,
            if cfg.fail_open { "open" } else { "closed" },
            cfg.workers
        );
        Ok(Runtime { threads, workers })
    }

    /// Wait for every queue thread to finish its shutdown, then for the
    /// resolver workers (they stop once no queue thread can send them work).
    pub fn join(self) {
        for t in self.threads {
            if t.join().is_err() {
                log::error!("a queue thread panicked");
            }
        }
        for t in self.workers {
            if t.join().is_err() {
                log::error!("a resolver worker panicked");
            }
        }
    }
}

/// A packet's flow for worker assignment: protocol and both ends, in a
/// fixed order so that both directions of a connection are one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    proto: Proto,
    ends: [(IpAddr, u16); 2],
}

impl FlowKey {
    fn of(pkt: &PacketInfo) -> FlowKey {
        let a = (pkt.src, pkt.sport.unwrap_or(0));
        let b = (pkt.dst, pkt.dport.unwrap_or(0));
        FlowKey { proto: pkt.proto, ends: if a <= b { [a, b] } else { [b, a] } }
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
    flow: FlowKey,
    parsed: Parsed,
    meta: QueueMeta,
}

/// A worker's decision, on its way back to the queue thread.
struct Done {
    answer: Answer,
    flow: FlowKey,
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
fn start_pool(
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
        let done = Done { answer: Answer { id: job.id, verdict, mark: job.meta.mark }, flow: job.flow };
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
/// goes to the same worker (by [`FlowKey::worker`]), which decides its
/// packets one at a time in channel order and sends the results back over
/// one FIFO channel; the queue thread sends each result's verdict as it
/// takes it. While a flow has packets at its worker (`inflight`), its later
/// packets go there too, even those the caches could answer at once, so
/// they cannot overtake. A packet decided on the queue thread belongs to a
/// flow with nothing in flight: every earlier packet of it already has its
/// verdict sent, or is earlier in the same list of answers.
struct Pool {
    /// This queue thread's index among the replies.
    queue: usize,
    workers: Vec<Sender<Job>>,
    results: Receiver<Done>,
    wake: Arc<EventFd>,
    /// Packets at workers, per flow (no entry: none).
    inflight: HashMap<FlowKey, u32>,
}

impl Pool {
    /// Whether any packet of this queue is still at a worker.
    fn busy(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// Decide a packet here if it needs no slow work and its flow has
    /// nothing in flight; otherwise send it to its flow's worker (`None`).
    /// A full worker channel is counted (`worker_full`): the packet is then
    /// decided here in full, unless its flow has packets at that worker, in
    /// which case this waits for room (workers never wait on queue threads).
    fn submit(
        &mut self,
        engine: &Engine,
        id: u32,
        payload: &[u8],
        meta: QueueMeta,
        scratch: &mut Scratch,
    ) -> Option<Verdict> {
        let parsed = Parsed::new(payload, &meta);
        // A malformed packet has no flow and needs no labels.
        let Some(flow) = parsed.packet().map(FlowKey::of) else {
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
    fn drain(&mut self, out: &mut Vec<Answer>) {
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

/// A decided packet waiting for its verdict to be sent.
#[derive(Clone, Copy, Debug)]
struct Answer {
    id: u32,
    verdict: Verdict,
    /// The packet's mark when it was queued.
    mark: u32,
}

#[derive(Clone, Copy, Debug)]
struct LoopOpts {
    batch: usize,
    flow: bool,
}

/// Read what is waiting (up to `batch`), decide (or, with a pool, send to
/// the workers), and send the verdicts decided here, grouping runs of equal
/// verdicts into batch verdicts when nothing is at the workers (flow mode:
/// one marking verdict each). Returns how many packets were read.
fn service(
    sock: &mut QueueSocket,
    engine: &Engine,
    scratch: &mut Scratch,
    opts: LoopOpts,
    out: &mut Vec<Answer>,
    mut pool: Option<&mut Pool>,
    wait: bool,
) -> std::io::Result<usize> {
    let c = &engine.counters;
    out.clear();
    let n = sock.recv(
        opts.batch,
        wait,
        |p, received| {
            let meta = QueueMeta {
                hook: p.hook,
                uid: p.uid,
                gid: p.gid,
                secctx: p.secctx.map(str::to_string),
                indev: p.indev,
                outdev: p.outdev,
                mark: p.mark,
                cap_len: p.cap_len,
                received: Some(received),
            };
            let verdict = match pool.as_deref_mut() {
                None => Some(engine.handle(p.payload, &meta, scratch)),
                Some(pool) => pool.submit(engine, p.id, p.payload, meta, scratch),
            };
            if let Some(verdict) = verdict {
                out.push(Answer { id: p.id, verdict, mark: p.mark });
            }
        },
        |e| {
            // A message without a packet id cannot be answered; the kernel
            // keeps that packet until the queue is unbound. Count it loudly.
            Counters::bump(&c.recv_errors);
            log::error!("unreadable queue message: {e}");
        },
    )?;
    // A batch verdict covers every id up to its last: only safe when no
    // earlier packet is still at a worker.
    let batch = !pool.is_some_and(|p| p.busy());
    send_answers(sock, out, c, opts.flow, batch);
    Ok(n)
}

fn send_answers(sock: &mut QueueSocket, answers: &[Answer], c: &Counters, flow: bool, batch: bool) {
    if flow {
        send_flow_verdicts(sock, answers, c);
    } else {
        send_verdicts(sock, answers, c, batch);
    }
}

fn to_kernel(v: Verdict) -> nfqueue::Verdict {
    match v {
        Verdict::Accept => nfqueue::Verdict::Accept,
        Verdict::Drop => nfqueue::Verdict::Drop,
    }
}

/// Send verdicts in order. With `batch`, a run of equal verdicts becomes one
/// batch verdict (it covers every id up to the last of the run, and every
/// earlier id was answered before the run started: the caller vouches for
/// that); without, each packet gets its own.
fn send_verdicts(sock: &mut QueueSocket, answers: &[Answer], c: &Counters, batch: bool) {
    let mut i = 0;
    while let Some(&Answer { id: first_id, verdict: v, .. }) = answers.get(i) {
        let mut j = i + 1;
        while batch && answers.get(j).is_some_and(|a| a.verdict == v) {
            j += 1;
        }
        let last_id = answers.get(j - 1).map_or(first_id, |a| a.id);
        let res = if j - i == 1 {
            sock.verdict(first_id, to_kernel(v), None, None)
        } else {
            sock.verdict_batch(last_id, to_kernel(v), None)
        };
        if let Err(e) = res {
            for _ in i..j {
                Counters::bump(&c.verdict_errors);
            }
            log::error!("verdict for packets {first_id}..={last_id} failed: {e}");
        }
        i = j;
    }
}

/// One queue's line of `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelQueueStats {
    pub queue: u16,
    pub portid: u32,
    pub waiting: u64,
    pub queue_dropped: u64,
    pub user_dropped: u64,
    pub id_sequence: u64,
}

impl KernelQueueStats {
    /// Parse the file's text and pick `queue`'s line.
    pub fn parse(text: &str, queue: u16) -> Option<KernelQueueStats> {
        text.lines().find_map(|l| {
            let v: Vec<u64> = l.split_whitespace().map(|x| x.parse().ok()).collect::<Option<_>>()?;
            let (&q, &portid, &waiting, &dropped, &user, &seq) =
                (v.first()?, v.get(1)?, v.get(2)?, v.get(5)?, v.get(6)?, v.get(7)?);
            (q == u64::from(queue)).then_some(KernelQueueStats {
                queue,
                portid: u32::try_from(portid).ok()?,
                waiting,
                queue_dropped: dropped,
                user_dropped: user,
                id_sequence: seq,
            })
        })
    }

    /// Read the current figures for `queue` (in this network namespace).
    pub fn read(queue: u16) -> Option<KernelQueueStats> {
        let text = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
        Self::parse(&text, queue)
    }
}

/// Flow mode (the repeat-mark technique): an accepted packet goes back
/// through its hook (NF_REPEAT) carrying the accept bit in its mark; the
/// rules from `labelgate rules --flow` copy that bit to the connection mark
/// and let the packet pass, so the rest of the connection never reaches the
/// queue. A dropped packet is simply dropped.
fn send_flow_verdicts(sock: &mut QueueSocket, answers: &[Answer], c: &Counters) {
    use crate::rules::{FLOW_MARK_ACCEPT, FLOW_MARK_MASK};
    for a in answers {
        let res = match a.verdict {
            Verdict::Accept => {
                let mark = (a.mark & !FLOW_MARK_MASK) | FLOW_MARK_ACCEPT;
                sock.verdict(a.id, nfqueue::Verdict::Repeat, Some(mark), None)
            }
            Verdict::Drop => sock.verdict(a.id, nfqueue::Verdict::Drop, None, None),
        };
        if let Err(e) = res {
            Counters::bump(&c.verdict_errors);
            log::error!("verdict for packet {} failed: {e}", a.id);
        }
    }
}

fn queue_loop(mut sock: QueueSocket, engine: &Engine, stop: &AtomicBool, opts: LoopOpts, mut pool: Option<Pool>) {
    let q = sock.queue();
    let c = &engine.counters;
    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(opts.batch);
    let mut handled: u64 = 0;
    // Without workers there is nothing but the queue to wait for: the first
    // read of a batch blocks (up to 100 ms, to see `stop`), and an idle
    // thread's wake-up costs one system call instead of a poll and a read.
    let blocking = pool.is_none()
        && sock
            .set_wait_timeout(std::time::Duration::from_millis(100))
            .map_err(|e| log::warn!("queue {q}: no receive timeout ({e}); waiting with poll"))
            .is_ok();
    while !stop.load(Ordering::Relaxed) {
        let ready = match &pool {
            None if blocking => Ok((true, false)),
            None => crate::sys::poll_readable(sock.fd(), 100).map(|r| (r, false)),
            Some(p) => crate::sys::poll_either(sock.fd(), p.wake.fd(), 100),
        };
        match ready {
            Ok((sock_ready, woken)) => {
                if let Some(p) = pool.as_mut().filter(|_| woken) {
                    answer_done(&mut sock, p, c, opts, &mut out);
                }
                if !sock_ready {
                    continue;
                }
            }
            Err(e) => {
                log::error!("queue {q}: poll failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        }
        match service(&mut sock, engine, &mut scratch, opts, &mut out, pool.as_mut(), blocking) {
            Ok(n) => handled += n as u64,
            Err(e) => {
                Counters::bump(&c.recv_errors);
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    log::warn!("queue {q}: socket receive buffer overran; the kernel counted the packets it could not deliver (see /proc/net/netfilter/nfnetlink_queue)");
                } else {
                    log::error!("queue {q}: receive failed: {e}");
                }
            }
        }
    }
    // Stop taking new packets, then answer everything already queued: read
    // until nothing is left, waiting for the workers' results in between.
    if let Err(e) = sock.set_max_len(0) {
        log::error!("queue {q}: cannot close the queue to new packets: {e}");
    }
    if let Some(p) = pool.as_ref().filter(|p| p.busy()) {
        log::info!("queue {q}: {} packets still at resolver workers", p.inflight.values().sum::<u32>());
    }
    loop {
        match service(&mut sock, engine, &mut scratch, opts, &mut out, pool.as_mut(), false) {
            Ok(0) => match pool.as_mut().filter(|p| p.busy()) {
                Some(p) => wait_for_workers(&mut sock, p, c, opts, &mut out),
                None => break,
            },
            Ok(n) => handled += n as u64,
            Err(e) => {
                log::error!("queue {q}: receive failed during shutdown: {e}");
                break;
            }
        }
    }
    // (After a receive error the loop above may have left packets at workers.)
    while let Some(p) = pool.as_mut().filter(|p| p.busy()) {
        wait_for_workers(&mut sock, p, c, opts, &mut out);
    }
    // Every packet the kernel queued has now been answered: its id sequence
    // should equal the packets this thread handled.
    match KernelQueueStats::read(q) {
        Some(k) => log::info!(
            "queue {q}: kernel id_sequence={} queue_dropped={} user_dropped={} waiting={}; labelgate answered {handled}",
            k.id_sequence,
            k.queue_dropped,
            k.user_dropped,
            k.waiting
        ),
        None => log::warn!("queue {q}: kernel queue statistics unavailable; labelgate answered {handled}"),
    }
    if let Err(e) = sock.unbind() {
        log::error!("queue {q}: unbind failed: {e}");
    }
    log::info!("queue {q}: stopped");
}

/// Send the verdicts of every result the workers have sent back, one each,
/// in the order they arrived.
fn answer_done(sock: &mut QueueSocket, pool: &mut Pool, c: &Counters, opts: LoopOpts, out: &mut Vec<Answer>) {
    out.clear();
    pool.drain(out);
    send_answers(sock, out, c, opts.flow, false);
}

/// Wait (up to 100 ms) for a worker's wake-up, then answer what came back.
fn wait_for_workers(sock: &mut QueueSocket, pool: &mut Pool, c: &Counters, opts: LoopOpts, out: &mut Vec<Answer>) {
    if let Err(e) = crate::sys::poll_readable(pool.wake.fd(), 100) {
        log::error!("queue {}: poll failed: {e}", sock.queue());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    answer_done(sock, pool, c, opts, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_queue_lines() {
        let text = "    0  17589     0 2   256     0     0       10  1\n    3  42 5 2 128 7 8 99 1\n";
        let k = KernelQueueStats::parse(text, 3).unwrap();
        assert_eq!((k.portid, k.waiting, k.queue_dropped, k.user_dropped, k.id_sequence), (42, 5, 7, 8, 99));
        assert_eq!(KernelQueueStats::parse(text, 0).unwrap().id_sequence, 10);
        assert_eq!(KernelQueueStats::parse(text, 1), None);
        assert_eq!(KernelQueueStats::parse("garbage 1 2\n", 0), None);
    }

    use crate::audit::AuditSink;
    use crate::labels::{KernelMetaResolver, Labels, Resolver};
    use crate::packet::build;
    use crate::policy::Policy;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;
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
        let a = FlowKey::of(&parse([10, 0, 0, 1], 1000, [10, 0, 0, 2], 53));
        assert_eq!(a, FlowKey::of(&parse([10, 0, 0, 2], 53, [10, 0, 0, 1], 1000)));
        assert_ne!(a, FlowKey::of(&parse([10, 0, 0, 1], 1001, [10, 0, 0, 2], 53)));
        assert_eq!(a.worker(7), a.worker(7));
        assert!(a.worker(7) < 7);
        // Flows spread over the workers.
        let used: HashSet<usize> =
            (0..64).map(|p| FlowKey::of(&parse([10, 0, 0, 1], 1000 + p, [10, 0, 0, 2], 53)).worker(4)).collect();
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
                got.push(Answer { id, verdict, mark: 0 });
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
