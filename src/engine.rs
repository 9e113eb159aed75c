//! One packet's way from bytes to verdict: parse, resolve labels, decide,
//! count and audit. Shared by every queue thread; holds the current policy
//! and resolver behind an atomic pointer so a reload swaps both at once.

use crate::audit::{AuditSink, Outcome, Record};
use crate::counters::Counters;
use crate::labels::{Hook, Labels, QueueMeta, Resolver};
use crate::policy::{Decision, Facts, Mode, Policy, Verdict};
use crate::sys::IfNames;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::SystemTime;

/// Builds the resolver for a policy (the resolver reads address labels and
/// DOI maps from it).
pub type ResolverFactory = Box<dyn Fn(&Policy) -> Box<dyn Resolver> + Send + Sync>;

/// A policy and the resolver built for it, swapped together.
pub struct Loaded {
    pub policy: Policy,
    pub resolver: Box<dyn Resolver>,
}

/// The decision engine.
pub struct Engine {
    loaded: ArcSwap<Loaded>,
    factory: ResolverFactory,
    mode_override: Option<Mode>,
    pub counters: Arc<Counters>,
    audit: AuditSink,
}

/// Per-thread scratch state (interface-name cache).
#[derive(Default)]
pub struct Scratch {
    ifnames: IfNames,
}

impl Engine {
    pub fn new(
        policy: Policy,
        factory: ResolverFactory,
        mode_override: Option<Mode>,
        counters: Arc<Counters>,
        audit: AuditSink,
    ) -> Engine {
        let resolver = factory(&policy);
        Engine { loaded: ArcSwap::from_pointee(Loaded { policy, resolver }), factory, mode_override, counters, audit }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.loaded.load_full()
    }

    /// Swap in a new policy (built off the packet path by the caller).
    pub fn replace(&self, policy: Policy) {
        let resolver = (self.factory)(&policy);
        self.loaded.store(Arc::new(Loaded { policy, resolver }));
    }

    /// The effective global mode.
    pub fn mode(&self, p: &Policy) -> Mode {
        self.mode_override.unwrap_or(p.mode)
    }

    /// Decide one packet. Never panics on packet bytes; always returns a verdict.
    pub fn handle(&self, payload: &[u8], meta: &QueueMeta, scratch: &mut Scratch) -> Verdict {
        let started = std::time::Instant::now();
        let c = &self.counters;
        Counters::bump(&c.packets);
        let loaded = self.loaded.load();
        let policy = &loaded.policy;
        let mode = self.mode(policy);
        let ifindex = if meta.outdev != 0 { meta.outdev } else { meta.indev };

        let parsed = crate::packet::parse(payload);
        let hook = Hook::from_nf(meta.hook);
        let (decision, record) = match (parsed, hook) {
            (Ok(pkt), Some(hook)) => {
                let labels = loaded.resolver.resolve(&pkt, meta, payload);
                let names = std::cell::RefCell::new(&mut scratch.ifnames);
                let iif = || names.borrow_mut().name(meta.indev);
                let oif = || names.borrow_mut().name(meta.outdev);
                let facts = Facts { hook, pkt: &pkt, labels: &labels, iif: &iif, oif: &oif };
                let d = policy.decide(&facts, mode);
                let rec = (d.audit && self.audit.enabled()).then(|| {
                    let mut r = base_record(hook, ifindex, labels, &d, policy);
                    r.set_packet(&pkt);
                    r
                });
                (d, rec)
            }
            (parsed, hook) => {
                Counters::bump(&c.malformed);
                let why = match parsed {
                    Err(e) => e.reason(),
                    Ok(_) => "unknown_hook",
                };
                let d = policy.decide_malformed(mode);
                let rec = self.audit.enabled().then(|| {
                    let mut labels = Labels::unresolved("malformed");
                    labels.secmark = crate::labels::secmark_context(meta);
                    labels.uid = meta.uid;
                    let mut r = base_record(hook.unwrap_or(Hook::Input), ifindex, labels, &d, policy);
                    r.malformed = Some(why);
                    r.rule = "malformed".into();
                    r
                });
                (d, rec)
            }
        };
        if let Some(r) = record {
            self.audit.submit(r);
        }
        match decision.verdict {
            Verdict::Accept => Counters::bump(&c.accepted),
            Verdict::Drop => Counters::bump(&c.dropped),
        }
        if decision.permissive {
            Counters::bump(&c.would_deny);
        }
        c.latency.observe(started.elapsed());
        decision.verdict
    }
}

fn base_record(hook: Hook, ifindex: u32, labels: Labels, d: &Decision, policy: &Policy) -> Record {
    Record {
        time: SystemTime::now(),
        outcome: if d.table_verdict == Verdict::Drop { Outcome::Denied } else { Outcome::Granted },
        hook,
        src: None,
        dst: None,
        sport: None,
        dport: None,
        proto: None,
        ifindex,
        process: labels.source_process.clone(),
        dest_process: labels.dest_process.clone(),
        source: labels.source,
        dest: labels.dest,
        secmark: labels.secmark,
        peer: labels.peer,
        uid: labels.uid,
        rule: policy.rule_name(d.rule).to_string(),
        permissive: d.permissive,
        malformed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::KernelMetaResolver;
    use crate::packet::build;
    use std::net::Ipv4Addr;

    fn engine(text: &str) -> Engine {
        let p = Policy::from_toml(text, "t").unwrap();
        let c = Arc::new(Counters::default());
        Engine::new(p, Box::new(|_| Box::new(KernelMetaResolver)), None, c.clone(), AuditSink::disabled(c))
    }

    fn meta(hook: u8, uid: u32) -> QueueMeta {
        QueueMeta { hook, uid: Some(uid), ..Default::default() }
    }

    #[test]
    fn uid_rule_and_counters() {
        let e = engine("default = \"drop\"\n[[rule]]\nname = \"root\"\nuid = 0\nverdict = \"accept\"\n");
        let lo = Ipv4Addr::LOCALHOST;
        let pkt = build::ipv4(lo, lo, 6, &[], &build::tcp(1, 5432, 2));
        let mut s = Scratch::default();
        assert_eq!(e.handle(&pkt, &meta(3, 0), &mut s), Verdict::Accept);
        assert_eq!(e.handle(&pkt, &meta(3, 1000), &mut s), Verdict::Drop);
        assert_eq!(e.handle(&[0x45, 1, 2], &meta(3, 0), &mut s), Verdict::Drop);
        assert_eq!(e.handle(&pkt, &meta(77, 0), &mut s), Verdict::Drop, "unknown hook is malformed");
        let c = &e.counters;
        assert_eq!(
            (
                Counters::get(&c.packets),
                Counters::get(&c.accepted),
                Counters::get(&c.dropped),
                Counters::get(&c.malformed)
            ),
            (4, 1, 3, 2)
        );
        e.replace(Policy::from_toml("mode = \"permissive\"\ndefault = \"drop\"\n", "t").unwrap());
        assert_eq!(e.handle(&pkt, &meta(3, 1000), &mut s), Verdict::Accept);
        assert_eq!(Counters::get(&c.would_deny), 1);
    }
}
