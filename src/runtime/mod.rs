//! Queue threads: one per NFQUEUE number, each reading its socket, deciding
//! through the [`Engine`] and answering every packet exactly once.
//!
//! With `workers > 0` (`--workers N`) the queue threads share a pool of N
//! resolver workers. A queue thread decides a packet itself when that needs
//! no slow work ([`Engine::decide_cached`]); otherwise it hands the parsed
//! packet (not its bytes) to the worker its flow hashes to, over that
//! worker's bounded channel, and the worker sends the verdict back over the
//! queue thread's result channel and wakes it through an eventfd. See `pool::Pool` for how one
//! flow's packets keep their order.
//!
//! The queue thread's loop (reading, deciding, sending verdicts, shutdown)
//! is in `queue.rs`; the worker pool and its ordering in `pool.rs`.
//!
//! Shutdown: when the stop flag is set a thread sets its queue's maximum
//! length to 0 (the kernel then applies the queue's fail-open/fail-closed
//! behaviour to new packets instead of queueing them), answers every packet
//! already queued (waiting for those still at workers), and only then
//! unbinds.

mod pool;
mod queue;

use crate::engine::Engine;
use crate::sys::nfqueue::{self, QueueParams, QueueSocket};
use pool::start_pool;
use queue::{queue_loop, LoopOpts};
use std::sync::atomic::AtomicBool;
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
