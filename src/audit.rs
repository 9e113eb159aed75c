//! Audit records of decisions (USER_AVC text or JSON lines), written by one
//! writer thread fed through a channel with a bounded backlog, with counted
//! rate limiting.
//!
//! The packet path only builds a [`Record`] and hands it over; formatting and
//! I/O happen on the writer thread. Nothing is dropped silently: records the
//! rate limit holds back are counted as suppressed, records that do not fit
//! the channel or fail to write are counted as lost, and both are logged.

use crate::context::SecurityContext;
use crate::counters::Counters;
use crate::labels::{Hook, Label, ProcessInfo};
use crate::packet::PacketInfo;
use crossbeam_channel::{Receiver, Sender};
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Output format of audit records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
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
    pub uid: Option<u32>,
    /// The process owning the source socket.
    pub process: Option<ProcessInfo>,
    /// The process owning the destination socket.
    pub dest_process: Option<ProcessInfo>,
    pub rule: String,
    pub permissive: bool,
    /// Why a packet could not be parsed, for malformed packets.
    pub malformed: Option<&'static str>,
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
/// the kernel's audit subsystem wraps itself when sent AUDIT_USER_AVC).
pub fn avc_message(r: &Record, id: &Identity, netif: Option<&str>) -> String {
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "avc:  {}  {{ {} }} for ",
        match r.outcome {
            Outcome::Denied => "denied",
            Outcome::Granted => "granted",
        },
        r.hook.permission(),
    );
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
        " slabel={} tlabel={} scontext={} tcontext={} tclass=packet permissive={} rule={} exe=\"{}\" sauid=0 hostname=? addr=? terminal=?",
        r.source.origin.token(),
        r.dest.origin.token(),
        r.source.context,
        r.dest.context,
        u8::from(r.permissive),
        quote_safe(&r.rule),
        quote_safe(&id.exe),
    );
    s
}

/// Render a record as one JSON object.
pub fn format_json(r: &Record, id: &Identity, serial: u64, netif: Option<&str>) -> String {
    let t = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let v = serde_json::json!({
        "time": format!("{}.{:03}", t.as_secs(), t.subsec_millis()),
        "serial": serial,
        "pid": id.pid,
        "subj": id.subj,
        "outcome": match r.outcome { Outcome::Denied => "denied", Outcome::Granted => "granted" },
        "perm": r.hook.permission(),
        "hook": r.hook.to_string(),
        "process": r.process.as_ref().map(|p| serde_json::json!({"pid": p.pid, "comm": &*p.comm, "exe": &*p.exe})),
        "dest_process": r.dest_process.as_ref().map(|p| serde_json::json!({"pid": p.pid, "comm": &*p.comm, "exe": &*p.exe})),
        "saddr": r.src.map(|a| a.to_string()),
        "src": r.sport,
        "daddr": r.dst.map(|a| a.to_string()),
        "dest": r.dport,
        "netif": netif,
        "proto": r.proto.map(proto_name),
        "uid": r.uid,
        "secmark": r.secmark.as_ref().map(|c| c.to_string()),
        "peer": r.peer.as_ref().map(|p| p.context.to_string()),
        "peer_label": r.peer.as_ref().map(|p| p.origin.token()),
        "malformed": r.malformed,
        "slabel": r.source.origin.token(),
        "tlabel": r.dest.origin.token(),
        "scontext": r.source.context.to_string(),
        "tcontext": r.dest.context.to_string(),
        "tclass": "packet",
        "permissive": u8::from(r.permissive),
        "rule": r.rule,
        "exe": id.exe,
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
            Some(Target::Stdout) => Output::Stdout(std::io::BufWriter::new(std::io::stdout())),
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

/// The open audit output. A file is reopened when it is rotated away (its
/// path no longer names the open inode), so records land in the new file.
enum Output {
    None,
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File { path: std::path::PathBuf, file: std::io::BufWriter<std::fs::File>, ino: u64 },
}

impl Output {
    fn open(path: &std::path::Path) -> std::io::Result<Output> {
        use std::os::unix::fs::MetadataExt;
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let ino = f.metadata()?.ino();
        Ok(Output::File { path: path.to_path_buf(), file: std::io::BufWriter::new(f), ino })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Output::None => Ok(()),
            Output::Stdout(w) => writeln!(w, "{line}"),
            Output::File { file, .. } => writeln!(file, "{line}"),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::None => Ok(()),
            Output::Stdout(w) => w.flush(),
            Output::File { file, .. } => file.flush(),
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
        self.flush()?;
        *self = Output::open(&path)?;
        Ok(true)
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
    // Lines in the buffer, counted as written once a flush succeeds.
    let mut pending: u64 = 0;
    let flush = |out: &mut Output, pending: &mut u64| match out.flush() {
        Ok(()) => {
            c.audit_written.fetch_add(*pending, std::sync::atomic::Ordering::Relaxed);
            *pending = 0;
        }
        Err(e) => {
            c.audit_lost.fetch_add(*pending, std::sync::atomic::Ordering::Relaxed);
            *pending = 0;
            log::error!("audit write failed: {e}");
        }
    };
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
            let lost = Counters::get(&c.audit_lost);
            if lost > lost_reported {
                log::warn!("audit: {} records lost (writer behind or write failed)", lost - lost_reported);
                lost_reported = lost;
            }
            window = Instant::now();
            in_window = 0;
            suppressed_in_window = 0;
            flush(&mut out, &mut pending);
            match out.follow_rotation() {
                Ok(true) => log::info!("audit file was rotated; writing to the new file"),
                Ok(false) => {}
                Err(e) => log::error!("audit file rotated but cannot be reopened: {e}"),
            }
        }
        let Some(r) = r else {
            flush(&mut out, &mut pending);
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
        let line = match cfg.format {
            Format::Avc => format_avc(&r, &id, serial, netif.as_deref()),
            Format::Json => format_json(&r, &id, serial, netif.as_deref()),
        };
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
        match out.write_line(&line) {
            Ok(()) => pending += 1,
            Err(e) => {
                Counters::bump(&c.audit_lost);
                log::error!("audit write failed: {e}");
            }
        }
        if rx.is_empty() {
            flush(&mut out, &mut pending);
        }
    }
    flush(&mut out, &mut pending);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Origin;

    fn record() -> Record {
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
            process: Some(ProcessInfo { pid: 1234, comm: "psql".into(), exe: "/usr/bin/psql".into() }),
            dest_process: None,
            rule: "db-port-others".into(),
            permissive: true,
            malformed: None,
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
             scontext=system_u:system_r:httpd_t:s0 tcontext=system_u:system_r:postgresql_t:s0 tclass=packet \
             permissive=1 rule=db-port-others exe=\"/usr/sbin/labelgate\" sauid=0 hostname=? addr=? terminal=?'"
        );
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
        out.write_line("one").unwrap();
        out.flush().unwrap();
        assert!(!out.follow_rotation().unwrap());
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        assert!(out.follow_rotation().unwrap());
        out.write_line("two").unwrap();
        out.flush().unwrap();
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
            process: None,
            dest_process: None,
            rule: "r".into(),
            permissive: false,
            malformed: None,
        }
    }
}
