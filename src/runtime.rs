//! Queue threads: one per NFQUEUE number, each reading its socket, deciding
//! through the [`Engine`] and answering every packet exactly once.
//!
//! Shutdown: when the stop flag is set a thread sets its queue's maximum
//! length to 0 (the kernel then applies the queue's fail-open/fail-closed
//! behaviour to new packets instead of queueing them), answers every packet
//! already queued, and only then unbinds.

use crate::counters::Counters;
use crate::engine::{Engine, Scratch};
use crate::labels::QueueMeta;
use crate::policy::Verdict;
use crate::sys::nfqueue::{self, QueueParams, QueueSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

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
}

/// Why the queues could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot bind NFQUEUE {queue}: {source}{hint}")]
    Bind { queue: u16, source: std::io::Error, hint: &'static str },
    #[error("cannot start queue thread: {0}")]
    Thread(std::io::Error),
}

/// Running queue threads.
pub struct Runtime {
    threads: Vec<JoinHandle<()>>,
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
        let mut threads = Vec::new();
        for sock in sockets {
            let engine = engine.clone();
            let stop = stop.clone();
            let opts = LoopOpts { batch: cfg.batch.max(1), flow: cfg.flow };
            let t = std::thread::Builder::new()
                .name(format!("queue-{}", sock.queue()))
                .spawn(move || queue_loop(sock, &engine, &stop, opts))
                .map_err(RuntimeError::Thread)?;
            threads.push(t);
        }
        log::info!(
            "bound NFQUEUE {:?} (copy range {}, fail-{})",
            cfg.queues,
            cfg.copy_range,
            if cfg.fail_open { "open" } else { "closed" }
        );
        Ok(Runtime { threads })
    }

    /// Wait for every queue thread to finish its shutdown.
    pub fn join(self) {
        for t in self.threads {
            if t.join().is_err() {
                log::error!("a queue thread panicked");
            }
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

#[derive(Clone, Copy)]
struct LoopOpts {
    batch: usize,
    flow: bool,
}

/// Read what is waiting (up to `batch`), decide, and send the verdicts,
/// grouping runs of equal verdicts into batch verdicts (flow mode: one
/// marking verdict each). Returns how many packets were handled.
fn service(
    sock: &mut QueueSocket,
    engine: &Engine,
    scratch: &mut Scratch,
    opts: LoopOpts,
    out: &mut Vec<Answer>,
) -> std::io::Result<usize> {
    let c = &engine.counters;
    out.clear();
    let n = sock.recv(
        opts.batch,
        |p| {
            let meta = QueueMeta {
                hook: p.hook,
                uid: p.uid,
                gid: p.gid,
                secctx: p.secctx.map(str::to_string),
                indev: p.indev,
                outdev: p.outdev,
                mark: p.mark,
            };
            let verdict = engine.handle(p.payload, &meta, scratch);
            out.push(Answer { id: p.id, verdict, mark: p.mark });
        },
        |e| {
            // A message without a packet id cannot be answered; the kernel
            // keeps that packet until the queue is unbound. Count it loudly.
            Counters::bump(&c.recv_errors);
            log::error!("unreadable queue message: {e}");
        },
    )?;
    if opts.flow {
        send_flow_verdicts(sock, out, c);
    } else {
        send_verdicts(sock, out, c);
    }
    Ok(n)
}

fn to_kernel(v: Verdict) -> nfqueue::Verdict {
    match v {
        Verdict::Accept => nfqueue::Verdict::Accept,
        Verdict::Drop => nfqueue::Verdict::Drop,
    }
}

/// Send verdicts in order. A run of equal verdicts becomes one batch verdict
/// (it covers every id up to the last of the run, and every earlier id was
/// answered before the run started).
fn send_verdicts(sock: &mut QueueSocket, answers: &[Answer], c: &Counters) {
    let mut i = 0;
    while let Some(&Answer { id: first_id, verdict: v, .. }) = answers.get(i) {
        let mut j = i + 1;
        while answers.get(j).is_some_and(|a| a.verdict == v) {
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

fn queue_loop(mut sock: QueueSocket, engine: &Engine, stop: &AtomicBool, opts: LoopOpts) {
    let q = sock.queue();
    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(opts.batch);
    let mut handled: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        match crate::sys::poll_readable(sock.fd(), 100) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                log::error!("queue {q}: poll failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        }
        match service(&mut sock, engine, &mut scratch, opts, &mut out) {
            Ok(n) => handled += n as u64,
            Err(e) => {
                Counters::bump(&engine.counters.recv_errors);
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    log::warn!("queue {q}: socket receive buffer overran; the kernel counted the packets it could not deliver (see /proc/net/netfilter/nfnetlink_queue)");
                } else {
                    log::error!("queue {q}: receive failed: {e}");
                }
            }
        }
    }
    // Stop taking new packets, then answer everything already queued.
    if let Err(e) = sock.set_max_len(0) {
        log::error!("queue {q}: cannot close the queue to new packets: {e}");
    }
    loop {
        match service(&mut sock, engine, &mut scratch, opts, &mut out) {
            Ok(0) => break,
            Ok(n) => handled += n as u64,
            Err(e) => {
                log::error!("queue {q}: receive failed during shutdown: {e}");
                break;
            }
        }
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
}
