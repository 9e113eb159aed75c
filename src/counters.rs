//! Process-wide counters of packets and verdicts, printed on SIGUSR1 and at
//! exit, and carrying per-rule hits over a policy reload ([`carry_hits`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the verdict-latency histogram buckets.
pub const LATENCY_BOUNDS: [f64; 12] = [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// A histogram of how long deciding one packet took (receive to decision).
#[derive(Default, Debug)]
pub struct Latency {
    /// Non-cumulative counts per bucket; the last is +Inf.
    pub buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    pub sum_ns: AtomicU64,
    pub count: AtomicU64,
}

impl Latency {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BOUNDS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

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
    /// Records the kernel audit subsystem refused (with `--audit-kernel`).
    pub audit_kernel_lost: AtomicU64,
    /// Packets decided on a resolver worker (`--workers`) instead of the
    /// queue thread.
    pub offloaded: AtomicU64,
    /// Packets that found their resolver worker's channel full: decided on
    /// the queue thread instead, or (when earlier packets of their flow were
    /// still at that worker) waited for room.
    pub worker_full: AtomicU64,
    /// UDP flows accepted at INPUT/OUTPUT and remembered, so that their
    /// conntrack entries are deleted when a socket at their ports goes away
    /// (`flowwatch`).
    pub flows_watched: AtomicU64,
    /// Remembered flows pushed out of the full table (their entries are
    /// deleted at once).
    pub flows_evicted: AtomicU64,
    /// Conntrack entries of remembered flows deleted.
    pub ct_deleted: AtomicU64,
    /// Entries to delete that conntrack no longer had (expired, or never
    /// confirmed).
    pub ct_gone: AtomicU64,
    /// Deletes the kernel refused or did not answer.
    pub ct_delete_errors: AtomicU64,
    /// Times socket-destroy notifications were lost (every remembered
    /// flow's entry was then deleted).
    pub destroy_overruns: AtomicU64,
    pub latency: Latency,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// `name value` pairs in a stable order.
    pub fn pairs(&self) -> [(&'static str, u64); 19] {
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
            ("audit_kernel_lost", Self::get(&self.audit_kernel_lost)),
            ("offloaded", Self::get(&self.offloaded)),
            ("worker_full", Self::get(&self.worker_full)),
            ("flows_watched", Self::get(&self.flows_watched)),
            ("flows_evicted", Self::get(&self.flows_evicted)),
            ("ct_deleted", Self::get(&self.ct_deleted)),
            ("ct_gone", Self::get(&self.ct_gone)),
            ("ct_delete_errors", Self::get(&self.ct_delete_errors)),
            ("destroy_overruns", Self::get(&self.destroy_overruns)),
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

/// Move the per-rule hit counts of `old` (the policy a reload replaced)
/// onto the rules of `new` with the same name: a rule that survives a
/// reload keeps counting from where it was; the hits of a rule the new
/// policy no longer has are dropped with it. Hits are moved (the old
/// counters are left at 0), so calling it again later moves only the hits
/// that packets still being decided with `old` counted since. Returns the
/// number of rules whose hits were carried over.
pub fn carry_hits(old: &crate::policy::Policy, new: &crate::policy::Policy) -> usize {
    let by_name: std::collections::HashMap<&str, &AtomicU64> =
        new.rules.iter().map(|r| (r.name.as_str(), &r.hits)).collect();
    let mut carried = 0;
    for r in &old.rules {
        if let Some(to) = by_name.get(r.name.as_str()) {
            let n = r.hits.swap(0, Relaxed);
            to.fetch_add(n, Relaxed);
            carried += 1;
        }
    }
    carried
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_buckets() {
        let l = Latency::default();
        l.observe(Duration::from_nanos(500));
        l.observe(Duration::from_micros(30));
        l.observe(Duration::from_secs(5));
        let got: Vec<u64> = l.buckets.iter().map(|b| b.load(Relaxed)).collect();
        assert_eq!(got[0], 1);
        assert_eq!(got[5], 1, "30us falls in the 50us bucket");
        assert_eq!(got[LATENCY_BOUNDS.len()], 1, "+Inf");
        assert_eq!(l.count.load(Relaxed), 3);
    }

    #[test]
    fn hits_follow_rules_by_name_over_a_reload() {
        use crate::policy::Policy;
        let rule = |n: &str| format!("[[rule]]\nname = \"{n}\"\nverdict = \"accept\"\n");
        let old = Policy::from_toml(&format!("{}{}", rule("kept"), rule("gone")), "old").unwrap();
        let new = Policy::from_toml(&format!("{}{}", rule("new"), rule("kept")), "new").unwrap();
        old.rules[0].hits.store(5, Relaxed);
        old.rules[1].hits.store(7, Relaxed);
        new.rules[1].hits.store(1, Relaxed);
        assert_eq!(carry_hits(&old, &new), 1);
        assert_eq!(new.rules[1].hits.load(Relaxed), 6, "kept: 5 before the reload + 1 after");
        assert_eq!(new.rules[0].hits.load(Relaxed), 0, "a new rule starts at 0");
        // Hits counted on the old policy after the first carry move once more.
        old.rules[0].hits.fetch_add(2, Relaxed);
        carry_hits(&old, &new);
        assert_eq!(new.rules[1].hits.load(Relaxed), 8);
        carry_hits(&old, &new);
        assert_eq!(new.rules[1].hits.load(Relaxed), 8, "nothing is counted twice");
    }
}
