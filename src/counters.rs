//! Process-wide counters of packets and verdicts, printed on SIGUSR1 and at exit.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters shared by every queue thread. Per-rule hits live in the policy.
#[derive(Default, Debug)]
pub struct Counters {
    pub packets: AtomicU64,
    pub accepted: AtomicU64,
    pub dropped: AtomicU64,
    /// Denials let through by a permissive mode.
    pub would_deny: AtomicU64,
    pub malformed: AtomicU64,
    /// Verdicts the kernel did not take (send failed).
    pub verdict_errors: AtomicU64,
    /// Receive errors on the queue socket other than "would block".
    pub recv_errors: AtomicU64,
    pub audit_written: AtomicU64,
    /// Records held back by the audit rate limit (reported, never silent).
    pub audit_suppressed: AtomicU64,
    /// Records lost because the audit writer fell behind or could not write.
    pub audit_lost: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// `name value` pairs in a stable order.
    pub fn pairs(&self) -> [(&'static str, u64); 10] {
        [
            ("packets", Self::get(&self.packets)),
            ("accepted", Self::get(&self.accepted)),
            ("dropped", Self::get(&self.dropped)),
            ("would_deny", Self::get(&self.would_deny)),
            ("malformed", Self::get(&self.malformed)),
            ("verdict_errors", Self::get(&self.verdict_errors)),
            ("recv_errors", Self::get(&self.recv_errors)),
            ("audit_written", Self::get(&self.audit_written)),
            ("audit_suppressed", Self::get(&self.audit_suppressed)),
            ("audit_lost", Self::get(&self.audit_lost)),
        ]
    }

    /// A one-line summary, `packets=.. accepted=.. ...`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (i, (k, v)) in self.pairs().iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            let _ = write!(s, "{k}={v}");
        }
        s
    }
}
