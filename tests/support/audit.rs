//! Records and a file writer for the tests that drive the library's audit
//! writer directly (no daemon).

use labelgate::audit::{AuditSink, Config, Format, Outcome, Record, Target, Writer};
use labelgate::counters::Counters;
use labelgate::labels::{Hook, Label, Labels, Origin};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// A permissive record of `outcome` at `hook` for TCP 127.0.0.1:40000 ->
/// 127.0.0.1:5432 sent by uid and gid 33, from socket label
/// `system_u:system_r:SOURCE:s0` to `system_u:system_r:DEST:s0`, decided
/// by `rule`.
pub fn record(outcome: Outcome, hook: Hook, source: &str, dest: &str, rule: &str) -> Record {
    let ctx = |t: &str| Label { context: format!("system_u:system_r:{t}:s0").parse().unwrap(), origin: Origin::Socket };
    Record {
        time: SystemTime::now(),
        outcome,
        hook,
        src: Some("127.0.0.1".parse().unwrap()),
        dst: Some("127.0.0.1".parse().unwrap()),
        sport: Some(40000),
        dport: Some(5432),
        proto: Some(6),
        ifindex: 0,
        labels: Labels {
            source: ctx(source),
            dest: ctx(dest),
            uid: Some(33),
            gid: Some(33),
            ..Labels::unresolved("test")
        },
        rule: rule.into(),
        permissive: true,
        malformed: None,
        policy: Default::default(),
    }
}

/// A writer of USER_AVC lines to the file at `path`, without rate limit
/// and with a backlog of `capacity` records, and the counters it keeps.
pub fn file_writer(path: &Path, capacity: usize) -> (AuditSink, Writer, Arc<Counters>) {
    let c = Arc::new(Counters::default());
    let cfg = Config {
        target: Some(Target::File(path.to_path_buf())),
        kernel: false,
        format: Format::Avc,
        rate: 0,
        capacity,
    };
    let (sink, writer) = Writer::start(cfg, c.clone()).unwrap();
    (sink, writer, c)
}
