//! Audit records of decisions (USER_AVC text or JSON lines), written by one
//! writer thread fed through a channel with a bounded backlog, with counted
//! rate limiting.
//!
//! The packet path only builds a [`Record`] and hands it over; formatting and
//! I/O happen on the writer thread. Nothing is dropped silently: records the
//! rate limit holds back are counted as suppressed, records that do not fit
//! the channel or fail to write are counted as lost, and both are logged.
//! A record is written whole or counted lost, never both: records are
//! formatted into a buffer and written together, and a write that stops
//! part way (a full disk) is cut back to the last whole record.

use crate::context::SecurityContext;
use crate::counters::Counters;
use crate::labels::{Hook, Label, ProcessInfo};
use crate::packet::PacketInfo;
use crate::policy::PolicyDigest;
use crate::sepolicy::{permission, CLASS};
use crossbeam_channel::{Receiver, Sender};
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Output format of audit records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `type=USER_AVC msg=audit(...)` lines, read by ausearch and audit2allow.
    Avc,
    /// One JSON object per line with the same fields.
    Json,
}

/// Whether the record is for a denial or an audited grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Denied,
    Granted,
}

/// The word that opens a record's message: `avc:` for denials, which the
/// SELinux tools read as access vector denials, and `labelgate:` for
/// grants, which no tool mistakes for one (`audit2allow -w` reports every
/// `avc:` record it reads as a missing allow rule, granted or not).
pub fn message_tag(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Denied => "avc:  denied",
        Outcome::Granted => "labelgate:  granted",
    }
}

/// One decision to record.
#[derive(Clone, Debug)]
pub struct Record {
    pub time: SystemTime,
    pub outcome: Outcome,
    pub hook: Hook,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub proto: Option<u8>,
    /// Interface index (input interface on input/forward, output interface otherwise).
    pub ifindex: u32,
    pub source: Label,
    pub dest: Label,
    pub secmark: Option<SecurityContext>,
    pub peer: Option<Label>,
    /// Owner (uid and gid) of the sending socket, as the kernel gave them.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The process owning the source socket.
    pub process: Option<ProcessInfo>,
    /// The process owning the destination socket.
    pub dest_process: Option<ProcessInfo>,
    pub rule: String,
    pub permissive: bool,
    /// Why a packet could not be parsed, for malformed packets.
    pub malformed: Option<&'static str>,
    /// The digest of the policy that decided.
    pub policy: PolicyDigest,
}

impl Record {
    /// Address and port facts from a parsed packet.
    pub fn set_packet(&mut self, p: &PacketInfo) {
        self.src = Some(p.src);
        self.dst = Some(p.dst);
        self.sport = p.sport;
        self.dport = p.dport;
        self.proto = Some(p.proto.number());
    }
}

/// Static facts about the writer put in every record.
#[derive(Clone, Debug)]
pub struct Identity {
    pub pid: u32,
    pub subj: String,
    pub exe: String,
}

impl Identity {
    /// labelgate's own pid, SELinux context (or `unconfined` when SELinux is
    /// off) and executable path.
    pub fn current() -> Identity {
        let subj = std::fs::read_to_string("/proc/self/attr/current")
            .ok()
            .map(|s| s.trim_end_matches(['\0', '\n']).to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unconfined".to_string());
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "labelgate".to_string());
        Identity { pid: std::process::id(), subj, exe }
    }
}

fn quote_safe(s: &str) -> String {
    s.chars().map(|c| if c == '"' || c == '\'' || c.is_control() { '?' } else { c }).collect()
}

fn proto_name(n: u8) -> String {
    crate::packet::Proto::from_number(n).to_string()
}

/// Render a record as a USER_AVC line. `serial` is the audit serial number,
/// `netif` the interface name.
pub fn format_avc(r: &Record, id: &Identity, serial: u64, netif: Option<&str>) -> String {
    let t = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "type=USER_AVC msg=audit({}.{:03}:{}): pid={} uid=0 auid=4294967295 ses=4294967295 subj={} msg='{}'",
        t.as_secs(),
        t.subsec_millis(),
        serial,
        id.pid,
        id.subj,
        avc_message(r, id, netif)
    )
}

/// The `avc:  denied  { send } for ...` text inside a USER_AVC record (what
/// the kernel's audit subsystem wraps itself when sent AUDIT_USER_AVC);
/// a grant reads `labelgate:  granted  { send } for ...`.
pub fn avc_message(r: &Record, id: &Identity, netif: Option<&str>) -> String {
    let mut s = String::with_capacity(512);
    let _ = write!(s, "{}  {{ {} }} for ", message_tag(r.outcome), permission(r.hook));
    if let Some(p) = &r.process {
        let _ = write!(s, " pid={} comm=\"{}\" path=\"{}\"", p.pid, quote_safe(&p.comm), quote_safe(&p.exe));
    }
    if let Some(p) = &r.dest_process {
        let _ = write!(s, " tpid={} tcomm=\"{}\"", p.pid, quote_safe(&p.comm));
    }
    // `saddr` would be read by ausearch -i as a hex sockaddr, and `proto` as a
    // number; see docs/AUDIT.md for why these names and forms were chosen.
    if let Some(a) = r.src {
        let _ = write!(s, " src_addr={a}");
    }
    if let Some(p) = r.sport {
        let _ = write!(s, " src={p}");
    }
    if let Some(a) = r.dst {
        let _ = write!(s, " dst_addr={a}");
    }
    if let Some(p) = r.dport {
        let _ = write!(s, " dest={p}");
    }
    if let Some(n) = netif {
        let _ = write!(s, " netif={}", quote_safe(n));
    }
    if let Some(p) = r.proto {
        let _ = write!(s, " proto={p}");
    }
    if let Some(u) = r.uid {
        let _ = write!(s, " ouid={u}");
    }
    if let Some(g) = r.gid {
        let _ = write!(s, " ogid={g}");
    }
    if let Some(m) = &r.secmark {
        let _ = write!(s, " secmark={m}");
    }
    if let Some(p) = &r.peer {
        let _ = write!(s, " peer={} peer_label={}", p.context, p.origin.token());
    }
    if let Some(m) = r.malformed {
        let _ = write!(s, " malformed={m}");
    }
    let _ = write!(
        s,
        " slabel={} tlabel={} scontext={} tcontext={} tclass={CLASS} permissive={} rule={} policy={} exe=\"{}\" sauid=0 hostname=? addr=? terminal=?",
        r.source.origin.token(),
        r.dest.origin.token(),
        r.source.context,
        r.dest.context,
        u8::from(r.permissive),
        quote_safe(&r.rule),
        r.policy,
        quote_safe(&id.exe),
    );
    s
}

/// Render a record as one JSON object (fields in docs/AUDIT.md). Fields
/// about labelgate itself are `labelgate_*`, those about the sending
/// socket's owner `sender_*`, so neither is taken for the other.
pub fn format_json(r: &Record, id: &Identity, serial: u64, netif: Option<&str>) -> String {
    let t = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let v = serde_json::json!({
        "time": format!("{}.{:03}", t.as_secs(), t.subsec_millis()),
        "serial": serial,
        "labelgate_pid": id.pid,
        "labelgate_subj": id.subj,
        "labelgate_exe": id.exe,
        "policy": r.policy.to_string(),
        "outcome": match r.outcome { Outcome::Denied => "denied", Outcome::Granted => "granted" },
        "tclass": CLASS,
        "perm": permission(r.hook),
        "hook": r.hook.to_string(),
        "process": r.process.as_ref().map(|p| serde_json::json!({"pid": p.pid, "comm": &*p.comm, "exe": &*p.exe})),
        "dest_process": r.dest_process.as_ref().map(|p| serde_json::json!({"pid": p.pid, "comm": &*p.comm, "exe": &*p.exe})),
        "saddr": r.src.map(|a| a.to_string()),
        "src": r.sport,
        "daddr": r.dst.map(|a| a.to_string()),
        "dest": r.dport,
        "netif": netif,
        "proto": r.proto.map(proto_name),
        "sender_uid": r.uid,
        "sender_gid": r.gid,
        "secmark": r.secmark.as_ref().map(|c| c.to_string()),
        "peer": r.peer.as_ref().map(|p| p.context.to_string()),
        "peer_label": r.peer.as_ref().map(|p| p.origin.token()),
        "malformed": r.malformed,
        "slabel": r.source.origin.token(),
        "tlabel": r.dest.origin.token(),
        "scontext": r.source.context.to_string(),
        "tcontext": r.dest.context.to_string(),
        "permissive": u8::from(r.permissive),
        "rule": r.rule,
    });
    v.to_string()
}

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

    fn new(tx: Sender<Record>, counters: Arc<Counters>, backlog: Arc<AtomicUsize>, capacity: usize) -> Self {
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
enum Output {
    None,
    Stdout(std::io::Stdout),
    File { path: std::path::PathBuf, file: std::fs::File, ino: u64 },
}

impl Output {
    fn open(path: &std::path::Path) -> std::io::Result<Output> {
        use std::os::unix::fs::MetadataExt;
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let ino = f.metadata()?.ino();
        Ok(Output::File { path: path.to_path_buf(), file: f, ino })
    }

    /// One write call; returns how many bytes went out.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::None => Ok(buf.len()),
            Output::Stdout(w) => w.write(buf),
            Output::File { file, .. } => file.write(buf),
        }
    }

    /// Take back the last `n` bytes written (the start of a record that did
    /// not fit). Only a file can; the file is appended to by this writer
    /// alone, so its last `n` bytes are those.
    fn take_back(&mut self, n: u64) -> std::io::Result<()> {
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
    fn follow_rotation(&mut self) -> std::io::Result<bool> {
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
struct Batch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

/// Write the buffer at most this big in one go.
const BATCH_BYTES: usize = 64 * 1024;

impl Batch {
    fn push(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.ends.push(self.buf.len());
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Write every record, and return how many were written whole and how
    /// many were lost, with the error that stopped the write. Bytes of a
    /// record that did not go out whole are cut back from the file, so
    /// the file holds whole records only.
    fn write(&mut self, out: &mut Output) -> (u64, u64, Option<std::io::Error>) {
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
fn whole_records(ends: &[usize], done: usize) -> (usize, usize) {
    let whole = ends.iter().take_while(|&&end| end <= done).count();
    (whole, whole.checked_sub(1).and_then(|i| ends.get(i)).copied().unwrap_or(0))
}

/// Write failures, logged at most once a second.
#[derive(Default)]
struct Failures {
    /// When a failure was last logged (kept across writes that succeed, so
    /// a disk that fails every other write is not logged more often).
    logged: Option<Instant>,
    /// Records lost to failed writes since the last write that succeeded.
    lost: u64,
}

impl Failures {
    fn failed(&mut self, lost: u64, e: &std::io::Error) {
        self.lost += lost;
        if self.logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            log::error!(
                "audit write failed: {e} ({} record(s) lost so far; counted as audit_lost, logged at most once a second)",
                self.lost
            );
            self.logged = Some(Instant::now());
        }
    }

    fn succeeded(&mut self) {
        if self.lost > 0 {
            log::warn!("audit writes succeed again, after {} record(s) lost", self.lost);
        }
        self.lost = 0;
    }
}

/// Write the batch and count each record written or lost.
fn flush(out: &mut Output, batch: &mut Batch, c: &Counters, failures: &mut Failures) {
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
fn write_loop(
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::labels::Origin;

    /// A denial of httpd_t -> postgresql_t at output, for tests.
    pub(crate) fn record() -> Record {
        Record {
            time: UNIX_EPOCH + Duration::from_millis(1_764_100_000_123),
            outcome: Outcome::Denied,
            hook: Hook::Output,
            src: Some("127.0.0.1".parse().unwrap()),
            dst: Some("127.0.0.1".parse().unwrap()),
            sport: Some(43210),
            dport: Some(5432),
            proto: Some(6),
            ifindex: 0,
            source: Label { context: "system_u:system_r:httpd_t:s0".parse().unwrap(), origin: Origin::Socket },
            dest: Label { context: "system_u:system_r:postgresql_t:s0".parse().unwrap(), origin: Origin::Socket },
            secmark: None,
            peer: None,
            uid: Some(48),
            gid: None,
            process: Some(ProcessInfo { pid: 1234, comm: "psql".into(), exe: "/usr/bin/psql".into() }),
            dest_process: None,
            rule: "db-port-others".into(),
            permissive: true,
            malformed: None,
            policy: PolicyDigest::of(b"mode = \"permissive\"\n"),
        }
    }

    fn id() -> Identity {
        Identity { pid: 99, subj: "unconfined".into(), exe: "/usr/sbin/labelgate".into() }
    }

    #[test]
    fn avc_line_has_the_fields_audit_tools_read() {
        let line = format_avc(&record(), &id(), 42, Some("lo"));
        assert_eq!(
            line,
            "type=USER_AVC msg=audit(1764100000.123:42): pid=99 uid=0 auid=4294967295 ses=4294967295 subj=unconfined \
             msg='avc:  denied  { send } for  pid=1234 comm=\"psql\" path=\"/usr/bin/psql\" src_addr=127.0.0.1 src=43210 \
             dst_addr=127.0.0.1 dest=5432 netif=lo proto=6 ouid=48 slabel=socket tlabel=socket \
             scontext=system_u:system_r:httpd_t:s0 tcontext=system_u:system_r:postgresql_t:s0 tclass=labelgate_flow \
             permissive=1 rule=db-port-others policy=sha256:716159393d62e3f6 exe=\"/usr/sbin/labelgate\" sauid=0 \
             hostname=? addr=? terminal=?'"
        );
    }

    #[test]
    fn grants_are_not_avc_messages_and_carry_the_gid() {
        let mut r = record();
        r.outcome = Outcome::Granted;
        r.hook = Hook::Forward;
        r.gid = Some(70);
        let line = format_avc(&r, &id(), 43, None);
        assert!(line.contains(" msg='labelgate:  granted  { forward } for "), "{line}");
        assert!(!line.contains("avc:"), "{line}");
        assert!(line.contains(" ouid=48 ogid=70 "), "{line}");
        // Each hook's permission of the class.
        let perms: Vec<&str> =
            [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting].map(permission).to_vec();
        assert_eq!(perms, ["recv", "recv", "forward", "send", "send"]);
    }

    #[test]
    fn hostile_strings_cannot_break_the_record() {
        let mut r = record();
        r.process = Some(ProcessInfo { pid: 1, comm: "a' b\"\n".into(), exe: "/x'y".into() });
        let line = format_avc(&r, &id(), 1, Some("e'th0"));
        assert_eq!(line.matches('\'').count(), 2, "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn json_carries_the_same_fields() {
        let v: serde_json::Value = serde_json::from_str(&format_json(&record(), &id(), 7, Some("lo"))).unwrap();
        assert_eq!(v["outcome"], "denied");
        assert_eq!(v["perm"], "send");
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["saddr"], "127.0.0.1");
        assert_eq!(v["dest"], 5432);
        assert_eq!(v["scontext"], "system_u:system_r:httpd_t:s0");
        assert_eq!(v["permissive"], 1);
        assert_eq!(v["process"]["comm"], "psql");
        assert_eq!(v["serial"], 7);
        assert_eq!(v["tclass"], "labelgate_flow");
        assert_eq!(v["policy"], "sha256:716159393d62e3f6");
        // labelgate's own pid and the sender's uid cannot be taken for
        // each other.
        assert_eq!((v["labelgate_pid"].as_u64(), v["sender_uid"].as_u64()), (Some(99), Some(48)));
        assert!(v.get("pid").is_none() && v.get("uid").is_none(), "{v}");
        assert!(v["sender_gid"].is_null());
        let mut r = record();
        r.gid = Some(70);
        let v: serde_json::Value = serde_json::from_str(&format_json(&r, &id(), 8, None)).unwrap();
        assert_eq!(v["sender_gid"], 70);
        // Every field docs/AUDIT.md lists, and no other.
        let doc = include_str!("../docs/AUDIT.md");
        let json_part = doc.split("## JSON lines").nth(1).and_then(|d| d.split("\n## ").next()).unwrap();
        let documented: Vec<&str> = json_part
            .lines()
            .filter(|l| l.starts_with("| `"))
            .flat_map(|l| l.split('|').nth(1).unwrap().split(',').map(|f| f.trim().trim_matches('`')))
            .collect();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut documented_sorted = documented.clone();
        keys.sort_unstable();
        documented_sorted.sort_unstable();
        assert_eq!(keys, documented_sorted, "the JSON fields and those docs/AUDIT.md lists");
    }

    #[test]
    fn a_write_that_stops_part_way_is_cut_back_to_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut out = Output::open(&path).unwrap();
        let mut b = Batch::default();
        b.push("first");
        b.push("second");
        b.push("third");
        assert_eq!(b.ends, [6, 13, 19]);
        // Where a write that stopped after `done` bytes is cut back to.
        assert_eq!(whole_records(&b.ends, 0), (0, 0));
        assert_eq!(whole_records(&b.ends, 5), (0, 0));
        assert_eq!(whole_records(&b.ends, 6), (1, 6));
        assert_eq!(whole_records(&b.ends, 15), (2, 13));
        assert_eq!(whole_records(&b.ends, 19), (3, 19));
        assert_eq!(b.write(&mut out).0, 3);
        // A record that went out in part is taken back.
        out.write(b"fou").unwrap();
        out.take_back(3).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\nsecond\nthird\n");
    }

    #[test]
    fn write_failures_are_logged_at_most_once_a_second() {
        let mut f = Failures::default();
        let e = std::io::Error::from_raw_os_error(28);
        f.failed(3, &e);
        let first = f.logged;
        assert!(first.is_some());
        f.failed(2, &e);
        assert_eq!(f.logged, first, "a second failure within the second is not logged");
        assert_eq!(f.lost, 5);
        f.succeeded();
        f.failed(1, &e);
        assert_eq!((f.lost, f.logged), (1, first), "not even after a write that succeeded");
        f.logged = first.and_then(|t| t.checked_sub(Duration::from_secs(1)));
        f.failed(1, &e);
        assert!(f.logged > first, "logged again a second later");
    }

    #[test]
    fn writer_counts_suppressed_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let c = Arc::new(Counters::default());
        let cfg = Config {
            target: Some(Target::File(path.clone())),
            kernel: false,
            format: Format::Avc,
            rate: 5,
            capacity: 1000,
        };
        let (sink, w) = Writer::start(cfg, c.clone()).unwrap();
        for _ in 0..20 {
            sink.submit(record());
        }
        // The sink stays alive (as the engine's does while metrics run).
        w.finish();
        drop(sink);
        let text = std::fs::read_to_string(path).unwrap();
        let written = text.lines().count() as u64;
        assert_eq!(written, Counters::get(&c.audit_written));
        assert_eq!(written + Counters::get(&c.audit_suppressed), 20);
        assert!((5..20).contains(&written), "rate limit applied: {written}");
    }

    #[test]
    fn full_channel_counts_lost_records() {
        let c = Arc::new(Counters::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let backlog = Arc::new(AtomicUsize::new(0));
        let sink = AuditSink::new(tx, c.clone(), backlog.clone(), 2);
        for _ in 0..5 {
            sink.submit(record());
        }
        assert_eq!(Counters::get(&c.audit_lost), 3);
        assert_eq!(rx.len(), 2);
        // The writer takes one: room for one more.
        let _ = rx.try_recv().unwrap();
        backlog.fetch_sub(1, Ordering::AcqRel);
        sink.submit(record());
        sink.submit(record());
        assert_eq!(Counters::get(&c.audit_lost), 4);
        assert_eq!(rx.len(), 2);
        // A writer that is gone: lost, and the backlog is not left counting it.
        drop(rx);
        backlog.store(0, Ordering::Release);
        sink.submit(record());
        assert_eq!(Counters::get(&c.audit_lost), 5);
        assert_eq!(backlog.load(Ordering::Acquire), 0);
    }
}

#[cfg(test)]
mod rotation_tests {
    use super::*;

    #[test]
    fn rotated_file_is_reopened_and_disk_errors_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut out = Output::open(&path).unwrap();
        out.write(b"one\n").unwrap();
        assert!(!out.follow_rotation().unwrap());
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        assert!(out.follow_rotation().unwrap());
        out.write(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("a.log.1")).unwrap(), "one\n");

        // /dev/full fails every write with ENOSPC: the writer counts them lost.
        let c = Arc::new(Counters::default());
        let cfg = Config {
            target: Some(Target::File("/dev/full".into())),
            kernel: false,
            format: Format::Avc,
            rate: 0,
            capacity: 100,
        };
        let (sink, w) = Writer::start(cfg, c.clone()).unwrap();
        for _ in 0..3 {
            sink.submit(tests_record());
        }
        w.finish();
        assert_eq!((Counters::get(&c.audit_written), Counters::get(&c.audit_lost)), (0, 3));
    }

    fn tests_record() -> Record {
        use crate::labels::Label;
        Record {
            time: SystemTime::now(),
            outcome: Outcome::Denied,
            hook: Hook::Output,
            src: None,
            dst: None,
            sport: None,
            dport: None,
            proto: None,
            ifindex: 0,
            source: Label::unlabeled("test"),
            dest: Label::unlabeled("test"),
            secmark: None,
            peer: None,
            uid: None,
            gid: None,
            process: None,
            dest_process: None,
            rule: "r".into(),
            permissive: false,
            malformed: None,
            policy: PolicyDigest::of(b"mode = \"permissive\"\n"),
        }
    }
}
