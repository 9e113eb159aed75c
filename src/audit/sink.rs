//! Where records go: the [`AuditSink`] the packet path hands records to
//! without blocking, and the writer thread behind it (rate limit, batches
//! written whole or counted lost, file rotation, the kernel audit socket).

use super::record::{avc_message, format_avc, format_json, Format, Identity, Record};
use crate::counters::Counters;
use crossbeam_channel::{Receiver, Sender};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where records go.
pub enum Target {
    Stdout,
    File(std::path::PathBuf),
}

/// Writer settings.
pub struct Config {
    /// The file or stdout; `None` with `kernel` alone.
    pub target: Option<Target>,
    /// Also send each record to the kernel audit subsystem (AUDIT_USER_AVC).
    pub kernel: bool,
    pub format: Format,
    /// Records per second; 0 means unlimited.
    pub rate: u32,
    /// Most records waiting for the writer; beyond it records are counted
    /// as lost. Memory follows the records actually waiting (the channel
    /// grows and shrinks in small blocks), not this bound.
    pub capacity: usize,
}

/// The packet path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct AuditSink {
    tx: Option<Sender<Record>>,
    counters: Arc<Counters>,
    /// Records sent and not yet taken by the writer, and their bound.
    backlog: Arc<AtomicUsize>,
    capacity: usize,
}

impl AuditSink {
    /// A sink that records nothing (no `--audit`).
    pub fn disabled(counters: Arc<Counters>) -> Self {
        AuditSink { tx: None, counters, backlog: Arc::default(), capacity: 0 }
    }

    pub(super) fn new(tx: Sender<Record>, counters: Arc<Counters>, backlog: Arc<AtomicUsize>, capacity: usize) -> Self {
        AuditSink { tx: Some(tx), counters, backlog, capacity: capacity.max(1) }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Hand a record to the writer; a full backlog (or a writer that is
    /// gone) counts the record as lost.
    pub fn submit(&self, r: Record) {
        if let Some(tx) = &self.tx {
            if self.backlog.fetch_add(1, Ordering::AcqRel) >= self.capacity || tx.send(r).is_err() {
                self.backlog.fetch_sub(1, Ordering::AcqRel);
                Counters::bump(&self.counters.audit_lost);
            }
        }
    }
}

/// A running writer thread. [`Writer::finish`] drains what was submitted,
/// flushes and joins it (also when some [`AuditSink`] is still alive).
pub struct Writer {
    handle: std::thread::JoinHandle<()>,
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl Writer {
    /// Open the target and start the writer thread.
    pub fn start(cfg: Config, counters: Arc<Counters>) -> std::io::Result<(AuditSink, Writer)> {
        let out = match &cfg.target {
            None => Output::None,
            Some(Target::Stdout) => Output::Stdout(std::io::stdout()),
            Some(Target::File(p)) => Output::open(p)?,
        };
        let kernel = if cfg.kernel { Some(crate::sys::KernelAudit::open()?) } else { None };
        let (tx, rx) = crossbeam_channel::unbounded();
        let backlog = Arc::new(AtomicUsize::new(0));
        let taken = backlog.clone();
        let capacity = cfg.capacity;
        let c = counters.clone();
        let id = Identity::current();
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = closing.clone();
        let handle = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write_loop(rx, &taken, out, kernel, cfg, id, c, &done))?;
        Ok((AuditSink::new(tx, counters, backlog, capacity), Writer { handle, closing }))
    }

    /// Write everything submitted so far, flush, and stop the writer. Call
    /// it once nothing submits any more (after the queue threads stopped).
    pub fn finish(self) {
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.handle.join();
    }
}

/// The open audit output, written without a buffer of its own (the
/// [`Batch`] is the buffer). A file is reopened when it is rotated away
/// (its path no longer names the open inode), so records land in the new
/// file.
pub(super) enum Output {
    None,
    Stdout(std::io::Stdout),
    File { path: std::path::PathBuf, file: std::fs::File, ino: u64 },
}

impl Output {
    pub(super) fn open(path: &std::path::Path) -> std::io::Result<Output> {
        use std::os::unix::fs::MetadataExt;
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let ino = f.metadata()?.ino();
        Ok(Output::File { path: path.to_path_buf(), file: f, ino })
    }

    /// One write call; returns how many bytes went out.
    pub(super) fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::None => Ok(buf.len()),
            Output::Stdout(w) => w.write(buf),
            Output::File { file, .. } => file.write(buf),
        }
    }

    /// Take back the last `n` bytes written (the start of a record that did
    /// not fit). Only a file can; the file is appended to by this writer
    /// alone, so its last `n` bytes are those.
    pub(super) fn take_back(&mut self, n: u64) -> std::io::Result<()> {
        match self {
            Output::File { file, .. } => {
                let len = file.metadata()?.len();
                file.set_len(len.saturating_sub(n))
            }
            Output::Stdout(_) | Output::None => {
                Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "standard output cannot be cut back"))
            }
        }
    }

    /// Reopen a rotated file; returns whether it did.
    pub(super) fn follow_rotation(&mut self) -> std::io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let Output::File { path, ino, .. } = self else { return Ok(false) };
        let current = std::fs::metadata(&*path).map(|m| m.ino()).ok();
        if current == Some(*ino) {
            return Ok(false);
        }
        let path = path.clone();
        *self = Output::open(&path)?;
        Ok(true)
    }
}

/// Records formatted and not yet written: their bytes (each ending in a
/// newline) and where each record ends.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) buf: Vec<u8>,
    pub(super) ends: Vec<usize>,
}

/// Write the buffer at most this big in one go.
pub(super) const BATCH_BYTES: usize = 64 * 1024;

impl Batch {
    pub(super) fn push(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.ends.push(self.buf.len());
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Write every record, and return how many were written whole and how
    /// many were lost, with the error that stopped the write. Bytes of a
    /// record that did not go out whole are cut back from the file, so
    /// the file holds whole records only.
    pub(super) fn write(&mut self, out: &mut Output) -> (u64, u64, Option<std::io::Error>) {
        let mut done = 0usize;
        let mut err = None;
        while done < self.buf.len() {
            match out.write(self.buf.get(done..).unwrap_or_default()) {
                Ok(0) => {
                    err = Some(std::io::Error::new(std::io::ErrorKind::WriteZero, "the output took no bytes"));
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let (whole, boundary) = whole_records(&self.ends, done);
        if done > boundary {
            if let Err(e) = out.take_back((done - boundary) as u64) {
                log::error!("audit: a record was written in part and cannot be cut back: {e}");
            }
        }
        let lost = self.ends.len() - whole;
        self.buf.clear();
        self.ends.clear();
        (whole as u64, lost as u64, err)
    }
}

/// Of records ending at `ends`, how many a write of `done` bytes put out
/// whole, and where the last of them ends.
pub(super) fn whole_records(ends: &[usize], done: usize) -> (usize, usize) {
    let whole = ends.iter().take_while(|&&end| end <= done).count();
    (whole, whole.checked_sub(1).and_then(|i| ends.get(i)).copied().unwrap_or(0))
}

/// Write failures, logged at most once a second.
#[derive(Default)]
pub(super) struct Failures {
    /// When a failure was last logged (kept across writes that succeed, so
    /// a disk that fails every other write is not logged more often).
    pub(super) logged: Option<Instant>,
    /// Records lost to failed writes since the last write that succeeded.
    pub(super) lost: u64,
}

impl Failures {
    pub(super) fn failed(&mut self, lost: u64, e: &std::io::Error) {
        self.lost += lost;
        if self.logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            log::error!(
                "audit write failed: {e} ({} record(s) lost so far; counted as audit_lost, logged at most once a second)",
                self.lost
            );
            self.logged = Some(Instant::now());
        }
    }

    pub(super) fn succeeded(&mut self) {
        if self.lost > 0 {
            log::warn!("audit writes succeed again, after {} record(s) lost", self.lost);
        }
        self.lost = 0;
    }
}

/// Write the batch and count each record written or lost.
pub(super) fn flush(out: &mut Output, batch: &mut Batch, c: &Counters, failures: &mut Failures) {
    if batch.is_empty() {
        return;
    }
    let (written, lost, err) = batch.write(out);
    c.audit_written.fetch_add(written, Ordering::Relaxed);
    c.audit_lost.fetch_add(lost, Ordering::Relaxed);
    match err {
        Some(e) => failures.failed(lost, &e),
        None => failures.succeeded(),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn write_loop(
    rx: Receiver<Record>,
    backlog: &AtomicUsize,
    mut out: Output,
    kernel: Option<crate::sys::KernelAudit>,
    cfg: Config,
    id: Identity,
    c: Arc<Counters>,
    closing: &std::sync::atomic::AtomicBool,
) {
    let mut serial: u64 = 0;
    let mut names = crate::sys::IfNames::default();
    let mut window = Instant::now();
    let mut in_window: u32 = 0;
    let mut suppressed_in_window: u64 = 0;
    let mut lost_reported = 0u64;
    let mut batch = Batch::default();
    let mut failures = Failures::default();
    loop {
        if closing.load(std::sync::atomic::Ordering::SeqCst) && rx.is_empty() {
            break;
        }
        let r = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => {
                backlog.fetch_sub(1, Ordering::AcqRel);
                Some(r)
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        if window.elapsed() >= Duration::from_secs(1) {
            if suppressed_in_window > 0 {
                log::warn!("audit rate limit: suppressed {suppressed_in_window} records in the last second");
            }
            flush(&mut out, &mut batch, &c, &mut failures);
            let lost = Counters::get(&c.audit_lost);
            if lost > lost_reported {
                log::warn!("audit: {} records lost (writer behind or write failed)", lost - lost_reported);
                lost_reported = lost;
            }
            window = Instant::now();
            in_window = 0;
            suppressed_in_window = 0;
            match out.follow_rotation() {
                Ok(true) => log::info!("audit file was rotated; writing to the new file"),
                Ok(false) => {}
                Err(e) => log::error!("audit file rotated but cannot be reopened: {e}"),
            }
        }
        let Some(r) = r else {
            flush(&mut out, &mut batch, &c, &mut failures);
            continue;
        };
        if cfg.rate > 0 && in_window >= cfg.rate {
            suppressed_in_window += 1;
            Counters::bump(&c.audit_suppressed);
            continue;
        }
        in_window += 1;
        serial += 1;
        let netif = names.name(r.ifindex);
        if let Some(k) = &kernel {
            if let Err(e) = k.send_user_avc(&avc_message(&r, &id, netif.as_deref())) {
                Counters::bump(&c.audit_kernel_lost);
                log::debug!("kernel audit: {e}");
            }
        }
        if matches!(out, Output::None) {
            if kernel.is_some() {
                Counters::bump(&c.audit_written);
            }
            continue;
        }
        let line = match cfg.format {
            Format::Avc => format_avc(&r, &id, serial, netif.as_deref()),
            Format::Json => format_json(&r, &id, serial, netif.as_deref()),
        };
        batch.push(&line);
        if rx.is_empty() || batch.buf.len() >= BATCH_BYTES {
            flush(&mut out, &mut batch, &c, &mut failures);
        }
    }
    flush(&mut out, &mut batch, &c, &mut failures);
}
