//! One packet's way from bytes to verdict: parse, resolve labels, decide,
//! count and audit. Shared by every queue thread; holds the current policy
//! and resolver behind an atomic pointer so a reload swaps both at once.

use crate::audit::{AuditSink, Outcome, Record};
use crate::counters::Counters;
use crate::labels::{Hook, Labels, QueueMeta, Resolver};
use crate::packet::PacketInfo;
use crate::policy::{Decision, Facts, Mode, Policy, Verdict};
use crate::sepolicy::AccessOracle;
use crate::sys::IfNames;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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
    /// The loaded SELinux policy, asked by `selinux` verdicts.
    oracle: Option<Arc<dyn AccessOracle>>,
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
        let loaded = ArcSwap::from_pointee(Loaded { policy, resolver });
        Engine { loaded, factory, mode_override, counters, audit, oracle: None }
    }

    /// Ask `oracle` for rules with verdict `selinux`.
    pub fn with_oracle(mut self, oracle: Arc<dyn AccessOracle>) -> Engine {
        self.oracle = Some(oracle);
        self
    }

    /// Whether `selinux` verdicts can be asked.
    pub fn has_oracle(&self) -> bool {
        self.oracle.is_some()
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

    /// Decide one packet on the calling thread, slow lookups included.
    /// Never panics on packet bytes; always returns a verdict.
    pub fn handle(&self, payload: &[u8], meta: &QueueMeta, scratch: &mut Scratch) -> Verdict {
        self.decide(&Parsed::new(payload, meta), payload, meta, scratch)
    }

    /// Decide one packet only if that needs no slow work (see
    /// [`decide_cached`](Self::decide_cached)).
    pub fn handle_fast(&self, payload: &[u8], meta: &QueueMeta, scratch: &mut Scratch) -> Option<Verdict> {
        self.decide_cached(&Parsed::new(payload, meta), payload, meta, scratch)
    }

    /// Decide a parsed packet, resolving its labels in full.
    pub fn decide(&self, p: &Parsed, payload: &[u8], meta: &QueueMeta, scratch: &mut Scratch) -> Verdict {
        let loaded = self.loaded.load();
        let input = match &p.kind {
            Kind::Packet(pkt, hook) => Ok((pkt, *hook, loaded.resolver.resolve(pkt, meta, payload))),
            Kind::Malformed { why, hook } => Err((*why, *hook)),
        };
        self.finish(&loaded, p, input, meta, scratch)
    }

    /// Decide a parsed packet if its labels are known without slow work
    /// ([`Resolver::resolve_cached`]); a malformed packet always is. `None`:
    /// nothing was decided, counted or audited; call [`decide`](Self::decide)
    /// (on a resolver worker).
    pub fn decide_cached(
        &self,
        p: &Parsed,
        payload: &[u8],
        meta: &QueueMeta,
        scratch: &mut Scratch,
    ) -> Option<Verdict> {
        let loaded = self.loaded.load();
        let input = match &p.kind {
            Kind::Packet(pkt, hook) => Ok((pkt, *hook, loaded.resolver.resolve_cached(pkt, meta, payload)?)),
            Kind::Malformed { why, hook } => Err((*why, *hook)),
        };
        Some(self.finish(&loaded, p, input, meta, scratch))
    }

    /// Decide, count and audit one packet, given its labels (or why it is
    /// malformed). Every packet passes here exactly once.
    fn finish(
        &self,
        loaded: &Loaded,
        p: &Parsed,
        input: Result<(&PacketInfo, Hook, Labels), (&'static str, Option<Hook>)>,
        meta: &QueueMeta,
        scratch: &mut Scratch,
    ) -> Verdict {
        let c = &self.counters;
        Counters::bump(&c.packets);
        let policy = &loaded.policy;
        let mode = self.mode(policy);
        let ifindex = if meta.outdev != 0 { meta.outdev } else { meta.indev };
        let (decision, record) = match input {
            Ok((pkt, hook, labels)) => {
                let names = std::cell::RefCell::new(&mut scratch.ifnames);
                let iif = || names.borrow_mut().name(meta.indev);
                let oif = || names.borrow_mut().name(meta.outdev);
                let facts = Facts { hook, pkt, labels: &labels, iif: &iif, oif: &oif };
                let d = policy.decide_with(&facts, mode, self.oracle.as_deref());
                let rec = (d.audit && self.audit.enabled()).then(|| {
                    let mut r = base_record(hook, ifindex, labels, &d, policy);
                    r.set_packet(pkt);
                    r
                });
                (d, rec)
            }
            Err((why, hook)) => {
                Counters::bump(&c.malformed);
                let d = policy.decide_malformed(mode);
                let rec = self.audit.enabled().then(|| {
                    let mut labels = Labels::unresolved("malformed");
                    labels.secmark = crate::labels::secmark_context(meta);
                    labels.uid = meta.uid;
                    labels.gid = meta.gid;
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
        c.latency.observe(p.started.elapsed());
        decision.verdict
    }
}

/// A queued packet, parsed (once, on the queue thread) but not decided.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// When it was received: the latency histogram runs from here to the
    /// decision, wherever that is made.
    started: Instant,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Packet(PacketInfo, Hook),
    /// Bytes that do not parse, or an unknown hook: decided without labels.
    Malformed {
        why: &'static str,
        hook: Option<Hook>,
    },
}

impl Parsed {
    /// Parse the packet bytes and the hook; never panics.
    pub fn new(payload: &[u8], meta: &QueueMeta) -> Parsed {
        let started = Instant::now();
        let hook = Hook::from_nf(meta.hook);
        let kind = match (crate::packet::parse(payload), hook) {
            (Ok(pkt), Some(hook)) => Kind::Packet(pkt, hook),
            (Err(e), hook) => Kind::Malformed { why: e.reason(), hook },
            (Ok(_), None) => Kind::Malformed { why: "unknown_hook", hook },
        };
        Parsed { started, kind }
    }

    /// The parsed packet; `None` for a malformed one (which needs no labels).
    pub fn packet(&self) -> Option<&PacketInfo> {
        match &self.kind {
            Kind::Packet(pkt, _) => Some(pkt),
            Kind::Malformed { .. } => None,
        }
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
        gid: labels.gid,
        rule: policy.rule_name(d.rule).to_string(),
        permissive: d.permissive,
        malformed: None,
        policy: policy.digest,
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

    /// Knows nothing without slow work; counts its full resolutions.
    struct SlowResolver(Arc<std::sync::atomic::AtomicU64>);

    impl Resolver for SlowResolver {
        fn resolve(&self, pkt: &PacketInfo, meta: &QueueMeta, payload: &[u8]) -> Labels {
            Counters::bump(&self.0);
            KernelMetaResolver.resolve(pkt, meta, payload)
        }
    }

    #[test]
    fn fast_path_decides_only_what_needs_no_slow_work_and_counts_once() {
        let policy = "default = \"drop\"\n[[rule]]\nname = \"root\"\nuid = 0\nverdict = \"accept\"\n";
        let lo = Ipv4Addr::LOCALHOST;
        let pkt = build::ipv4(lo, lo, 6, &[], &build::tcp(1, 5432, 2));
        let mut s = Scratch::default();
        // NFQUEUE metadata alone is always cheap.
        let e = engine(policy);
        assert_eq!(e.handle_fast(&pkt, &meta(3, 0), &mut s), Some(Verdict::Accept));
        assert_eq!(Counters::get(&e.counters.packets), 1);

        let resolves = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r = resolves.clone();
        let c = Arc::new(Counters::default());
        let p = Policy::from_toml(policy, "t").unwrap();
        let e = Engine::new(
            p,
            Box::new(move |_| Box::new(SlowResolver(r.clone()))),
            None,
            c.clone(),
            AuditSink::disabled(c),
        );
        let c = &e.counters;
        let hits = |e: &Engine| e.current().policy.rules[0].hits.load(std::sync::atomic::Ordering::Relaxed);
        // A well-formed packet needs the slow path: nothing decided or counted.
        assert_eq!(e.handle_fast(&pkt, &meta(3, 0), &mut s), None);
        assert_eq!((Counters::get(&c.packets), Counters::get(&c.latency.count), hits(&e)), (0, 0, 0));
        assert_eq!(Counters::get(&resolves), 0);
        // A malformed one never does.
        assert_eq!(e.handle_fast(&[0x45, 1, 2], &meta(3, 0), &mut s), Some(Verdict::Drop));
        assert_eq!((Counters::get(&c.packets), Counters::get(&c.malformed)), (1, 1));
        // The full path decides the first packet, counted once.
        let parsed = Parsed::new(&pkt, &meta(3, 0));
        assert!(parsed.packet().is_some());
        assert_eq!(e.decide(&parsed, &pkt, &meta(3, 0), &mut s), Verdict::Accept);
        assert_eq!(Counters::get(&resolves), 1);
        assert_eq!(
            (Counters::get(&c.packets), Counters::get(&c.accepted), Counters::get(&c.latency.count), hits(&e)),
            (2, 1, 2, 1)
        );
    }
}
