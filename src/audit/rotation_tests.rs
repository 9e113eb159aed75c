use super::sink::Output;
use super::*;
use crate::counters::Counters;
use crate::labels::Hook;
use crate::policy::PolicyDigest;
use std::sync::Arc;
use std::time::SystemTime;

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
    use crate::labels::Labels;
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
        labels: Labels::unresolved("test"),
        rule: "r".into(),
        permissive: false,
        malformed: None,
        policy: PolicyDigest::of(b"mode = \"permissive\"\n"),
    }
}
