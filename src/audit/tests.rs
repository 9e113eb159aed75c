use super::sink::{whole_records, Batch, Failures, Output};
use super::*;
use crate::counters::Counters;
use crate::labels::{Hook, Label, Labels, Origin, ProcessInfo};
use crate::policy::PolicyDigest;
use crate::sepolicy::permission;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

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
        labels: Labels {
            source: Label { context: "system_u:system_r:httpd_t:s0".parse().unwrap(), origin: Origin::Socket },
            dest: Label { context: "system_u:system_r:postgresql_t:s0".parse().unwrap(), origin: Origin::Socket },
            secmark: None,
            peer: None,
            uid: Some(48),
            gid: None,
            source_process: Some(ProcessInfo {
                pid: 1234,
                comm: "psql".into(),
                exe: "/usr/bin/psql".into(),
                cgroup: None,
                netns: None,
            }),
            dest_process: None,
        },
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
    r.labels.gid = Some(70);
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
    r.labels.source_process =
        Some(ProcessInfo { pid: 1, comm: "a' b\"\n".into(), exe: "/x'y".into(), cgroup: None, netns: None });
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
    r.labels.gid = Some(70);
    let v: serde_json::Value = serde_json::from_str(&format_json(&r, &id(), 8, None)).unwrap();
    assert_eq!(v["sender_gid"], 70);
    // Every field docs/AUDIT.md lists, and no other.
    let doc = include_str!("../../docs/AUDIT.md");
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

#[test]
fn each_end_carries_its_unit_cgroup_and_container() {
    let cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cg = |p: &str| Some(Arc::new(crate::labels::CgroupInfo::from_path(p)));
    let mut r = record();
    let p = &mut r.labels;
    p.source_process =
        Some(ProcessInfo { cgroup: cg("/system.slice/my web.service"), ..p.source_process.clone().unwrap() });
    p.dest_process = Some(ProcessInfo {
        pid: 5,
        comm: "db".into(),
        exe: "/db".into(),
        cgroup: cg(&format!("/machine.slice/libpod-{cid}.scope/container")),
        netns: Some(4026532301),
    });
    let line = format_avc(&r, &id(), 1, None);
    assert!(line.contains(" unit=\"my?web.service\" cgroup=\"/system.slice/my?web.service\" tpid="), "{line}");
    assert!(
        line.contains(&format!(
            " tpid=5 tcomm=\"db\" tunit=\"libpod-{cid}.scope\" tcgroup=\"/machine.slice/libpod-{cid}.scope/container\" tcontainer={cid} tnetns=4026532301 src_addr="
        )),
        "{line}"
    );
    assert!(!line.contains(" container="), "{line}");
    let v: serde_json::Value = serde_json::from_str(&format_json(&r, &id(), 7, None)).unwrap();
    assert_eq!(v["process"]["unit"], "my web.service");
    assert_eq!(v["process"]["cgroup"], "/system.slice/my web.service");
    assert!(v["process"]["container"].is_null());
    assert_eq!(v["dest_process"]["container"], cid);
    assert_eq!(v["dest_process"]["pid"], 5);
    assert_eq!(v["dest_process"]["netns"], 4026532301u64);
    assert!(v["process"]["netns"].is_null() && !line.contains(" netns="), "{line}");
    // Unknown cgroup: the fields are absent from the line and null in JSON.
    let line = format_avc(&record(), &id(), 1, None);
    assert!(!line.contains("unit=") && !line.contains("cgroup="), "{line}");
    let v: serde_json::Value = serde_json::from_str(&format_json(&record(), &id(), 7, None)).unwrap();
    assert!(v["process"]["unit"].is_null() && v["process"]["cgroup"].is_null(), "{v}");
}
