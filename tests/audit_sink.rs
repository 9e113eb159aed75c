//! The audit writer on a full file system (root: mounts a small tmpfs).
//!
//! A record is written whole or counted lost, never both and never torn;
//! the write failure is logged at most once a second; once space returns
//! records are written again. Checked against the file's bytes exactly.

mod support;

use labelgate::audit::{Config, Format, Outcome, Record, Target, Writer};
use labelgate::counters::Counters;
use labelgate::labels::{Hook, Label, Origin, ProcessInfo};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Every log message, to count the write-failure warnings.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

static LOG: Capture = Capture(Mutex::new(Vec::new()));

fn messages(containing: &str) -> Vec<String> {
    LOG.0.lock().unwrap().iter().filter(|m| m.contains(containing)).cloned().collect()
}

fn record(i: usize) -> Record {
    Record {
        time: SystemTime::now(),
        outcome: Outcome::Denied,
        hook: Hook::Output,
        src: Some("127.0.0.1".parse().unwrap()),
        dst: Some("127.0.0.1".parse().unwrap()),
        sport: Some(40000),
        dport: Some(5432),
        proto: Some(6),
        ifindex: 0,
        source: Label { context: "system_u:system_r:httpd_t:s0".parse().unwrap(), origin: Origin::Socket },
        dest: Label { context: "system_u:system_r:postgresql_t:s0".parse().unwrap(), origin: Origin::Socket },
        secmark: None,
        peer: None,
        uid: Some(33),
        gid: Some(33),
        process: Some(ProcessInfo { pid: 1234, comm: "psql".into(), exe: "/usr/bin/psql".into() }),
        dest_process: None,
        rule: format!("rec-{i:05}"),
        permissive: true,
        malformed: None,
        policy: Default::default(),
    }
}

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs failed");
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fill the file system with `filler`, then give back exactly `free` bytes.
fn fill(filler: &Path, free: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(filler).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    f.sync_all().unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - free).unwrap();
}

fn libc_enospc() -> i32 {
    28
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The rule names of the file's records, checking every line is whole.
fn records_in(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8(bytes).expect("utf-8 audit file");
    assert!(text.is_empty() || text.ends_with('\n'), "the file ends in a torn record: {:?}", tail(&text));
    text.lines()
        .map(|l| {
            let e = labelgate::auditlog::parse_line(l).unwrap_or_else(|| panic!("torn or unreadable line: {l:?}"));
            assert!(l.ends_with("terminal=?'"), "torn line: {l:?}");
            e.rule
        })
        .collect()
}

fn tail(s: &str) -> &str {
    let start = s.char_indices().rev().nth(200).map_or(0, |(i, _)| i);
    s.get(start..).unwrap_or(s)
}

#[test]
fn full_disk_loses_whole_records_only_and_recovers() {
    if !support::can_run() {
        return;
    }
    log::set_logger(&LOG).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    let fs = Tmpfs::new("256k");
    let audit = fs.path().join("audit.log");
    let filler = fs.path().join("filler");
    std::fs::File::create(&audit).unwrap();
    // One page free: a few records fit, the next one only in part.
    fill(&filler, 4096);

    let c = Arc::new(Counters::default());
    let cfg = Config {
        target: Some(Target::File(audit.clone())),
        kernel: false,
        format: Format::Avc,
        rate: 0,
        capacity: 100_000,
    };
    let (sink, writer) = Writer::start(cfg, c.clone()).unwrap();
    let fate = || (Counters::get(&c.audit_written), Counters::get(&c.audit_lost));

    // Phase 1: records one by one (each flushed on its own) while the disk
    // fills up and stays full, for well under two seconds.
    let phase1 = 300;
    let t = Instant::now();
    for i in 0..phase1 {
        sink.submit(record(i));
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_until("phase 1 records written or lost", Duration::from_secs(30), || {
        let (w, l) = fate();
        w + l == phase1 as u64
    });
    let elapsed = t.elapsed();
    let (written1, lost1) = fate();
    assert!(written1 > 0 && lost1 > 0, "the disk filled up part way: written {written1}, lost {lost1}");
    let names = records_in(&audit);
    assert_eq!(names.len() as u64, written1, "lines in the file = records counted written");
    let expected: Vec<String> = (0..written1 as usize).map(|i| format!("rec-{i:05}")).collect();
    assert_eq!(names, expected, "the records written are the first ones, each once");
    let warnings = messages("audit write failed");
    let allowed = elapsed.as_secs() + 1;
    assert!(
        !warnings.is_empty() && warnings.len() as u64 <= allowed,
        "{} 'audit write failed' warnings in {elapsed:?} (at most one a second): {:?}",
        warnings.len(),
        warnings.iter().take(5).collect::<Vec<_>>()
    );

    // Phase 2: space returns; every new record is written, and none of the
    // lost ones shows up.
    std::fs::remove_file(&filler).unwrap();
    let phase2 = 50;
    for i in phase1..phase1 + phase2 {
        sink.submit(record(i));
        std::thread::sleep(Duration::from_millis(2));
    }
    writer.finish();
    drop(sink);
    let (written, lost) = fate();
    assert_eq!(lost, lost1, "no record lost once space returned");
    assert_eq!(written, written1 + phase2 as u64);
    let names = records_in(&audit);
    assert_eq!(names.len() as u64, written, "lines in the file = records counted written");
    let expected: Vec<String> =
        (0..written1 as usize).chain(phase1..phase1 + phase2).map(|i| format!("rec-{i:05}")).collect();
    assert_eq!(names, expected, "records counted lost never appear later");
}
