//! The audit writer on a full file system (root: mounts a small tmpfs).
//!
//! A record is written whole or counted lost, never both and never torn;
//! the write failure is logged at most once a second; once space returns
//! records are written again. Checked against the file's bytes exactly.

mod support;

use labelgate::audit::{Outcome, Record};
use labelgate::counters::Counters;
use labelgate::labels::{Hook, ProcessInfo};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// A denial from a `psql` process, its rule named after `i`.
fn record(i: usize) -> Record {
    let mut r =
        support::audit::record(Outcome::Denied, Hook::Output, "httpd_t", "postgresql_t", &format!("rec-{i:05}"));
    r.labels.source_process =
        Some(ProcessInfo { pid: 1234, comm: "psql".into(), exe: "/usr/bin/psql".into(), cgroup: None, netns: None });
    r
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

    let (sink, writer, c) = support::audit::file_writer(&audit, 100_000);
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

fn digest_of(text: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(text.as_bytes());
    format!("sha256:{}", d.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>())
}

fn json_records(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Issue 15 item 4 and issue 14 item 9, end to end: the daemon's JSON
/// records carry the digest of the policy that decided (before and after a
/// reload), the sender's uid and gid under names of their own, and the
/// start and reload log lines carry the digest too.
#[test]
fn daemon_records_name_the_policy_and_the_sender() {
    if !support::can_run() {
        return;
    }
    let ns = support::Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "60"]);
    ns.sh("iptables -A OUTPUT -o lo -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 31");
    let first =
        "mode = \"enforcing\"\ndefault = \"drop\"\n[[rule]]\nname = \"staff\"\ngid = 1001\nverdict = \"accept\"\n";
    let sock = ns.dir.path().join("metrics.sock");
    let metrics_arg = format!("unix:{}", sock.display());
    let d = support::Daemon::start(&ns, first, 31, &["--audit-format", "json", "--metrics", &metrics_arg]);
    let scrape = || {
        let script = format!(
            "import socket; s=socket.socket(socket.AF_UNIX); s.connect('{}'); s.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n'); print(s.makefile().read())",
            sock.display()
        );
        let out = ns.cmd("/usr/bin/python3").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let d1 = digest_of(first);
    let m = scrape();
    assert!(m.contains(&format!("labelgate_policy_info{{policy=\"{d1}\"}} 1\n")), "{m}");
    // Positive control: gid 1001 passes; uid/gid 1002 is refused.
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]), "gid 1001 must pass");
    assert!(!ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "3"]), "gid 1002 must be refused");

    // A reload to a policy that audits gid 1001's grants.
    let second = first.replace("verdict = \"accept\"", "verdict = \"accept\"\naudit = true");
    std::fs::write(ns.dir.path().join("policy-31.toml"), &second).unwrap();
    d.signal("HUP");
    wait_until("the reload", Duration::from_secs(20), || d.stderr_text().contains("reloaded"));
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]), "gid 1001 must pass after reload");
    let m = scrape();
    assert!(m.contains(&format!("labelgate_policy_info{{policy=\"{}\"}} 1\n", digest_of(&second))), "{m}");
    let audit = d.audit.clone();
    let daemon_pid = d.pid();
    let log = d.stop();

    let d2 = digest_of(&second);
    assert_ne!(d1, d2);
    let start = log.lines().find(|l| l.contains("labelgate running")).unwrap_or_else(|| panic!("{log}"));
    assert!(start.contains(&format!("policy={d1}")), "{start}");
    let reload = log.lines().find(|l| l.contains("reloaded")).unwrap_or_else(|| panic!("{log}"));
    assert!(reload.contains(&format!("policy={d2}")), "{reload}");

    let recs = json_records(&audit);
    let denial = recs.iter().find(|r| r["outcome"] == "denied").unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!(denial["policy"], d1.as_str(), "{denial}");
    assert_eq!((denial["sender_uid"].as_u64(), denial["sender_gid"].as_u64()), (Some(1002), Some(1002)), "{denial}");
    assert_eq!(denial["tclass"], "labelgate_flow");
    assert_eq!(denial["labelgate_pid"].as_u64(), Some(u64::from(daemon_pid)), "{denial}");
    assert_ne!(denial["process"]["pid"].as_u64(), Some(u64::from(daemon_pid)), "{denial}");
    assert!(denial.get("uid").is_none() && denial.get("pid").is_none(), "{denial}");
    let grant = recs.iter().find(|r| r["outcome"] == "granted").unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!(grant["policy"], d2.as_str(), "{grant}");
    assert_eq!((grant["sender_gid"].as_u64(), grant["rule"].as_str()), (Some(1001), Some("staff")), "{grant}");
}
