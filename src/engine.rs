//! One packet's way from bytes to verdict: parse, resolve labels, decide,
//! count and audit. Shared by every queue thread; holds the current policy
//! and resolver behind an atomic pointer so a reload swaps both at once.

use crate::audit::{AuditSink, Outcome, Record};
use crate::counters::Counters;
use crate::labels::{Hook, Labels, QueueMeta, Resolver, Unread};
use crate::packet::{PacketError, PacketInfo, Partial};
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
    /// The policy's decision at INPUT for a packet between two local
    /// sockets can be known at OUTPUT (see [`input_known_at_output`]).
    input_known_at_output: bool,
    /// A rule has a process key (see [`uses_process_keys`]).
    process_keys: bool,
}

impl Loaded {
    fn new(policy: Policy, resolver: Box<dyn Resolver>) -> Loaded {
        let input_known_at_output = input_known_at_output(&policy);
        let process_keys = uses_process_keys(&policy);
        Loaded { policy, resolver, input_known_at_output, process_keys }
    }
}

/// Whether a rule matches on the process holding a socket (`source_exe`,
/// `dest_unit`, `*_cgroup`, `*_container`...): then the decision needs the
/// holder's exe and cgroup, read for the packet's socket before deciding.
fn uses_process_keys(p: &Policy) -> bool {
    p.rules.iter().any(|r| r.rare.as_deref().is_some_and(|c| c.source_process.is_some() || c.dest_process.is_some()))
}

/// Whether a packet's decision at INPUT can be computed at OUTPUT from the
/// labels found there, for a packet from one local socket to another: the
/// rules see the same ends, addresses, ports, peer label and sending
/// socket's uid at both hooks, but no `gid` at INPUT (the kernel gives it
/// with locally sent packets only), another interface, and possibly a
/// secmark set by other rules. So: no rule with `gid`, `iif`, `oif` or
/// `secmark`. (`verdict = "selinux"` rules are asked for `recv`, as at
/// INPUT.)
fn input_known_at_output(p: &Policy) -> bool {
    p.rules.iter().all(|r| {
        r.rare.as_deref().is_none_or(|c| c.gid.is_none() && c.iif.is_none() && c.oif.is_none() && c.secmark.is_none())
    })
}

/// The decision engine.
pub struct Engine {
    loaded: ArcSwap<Loaded>,
    factory: ResolverFactory,
    mode_override: Option<Mode>,
    pub counters: Arc<Counters>,
    audit: AuditSink,
    /// Where accepted UDP flows are remembered (see [`crate::flowwatch`]).
    flow_watch: std::sync::OnceLock<Arc<crate::flowwatch::FlowWatch>>,
    /// The loaded SELinux policy, asked by `selinux` verdicts.
    oracle: Option<Arc<dyn AccessOracle>>,
    /// Where accepted first packets are offered for offloading (`--offload`).
    offload: std::sync::OnceLock<Arc<crate::offload::Offload>>,
    /// Flow mode: tell the queue thread when an OUTPUT acceptance settles
    /// the INPUT decision too ([`Scratch::take_input_settled`]).
    settle_input: bool,
}

/// Per-thread scratch state (interface-name cache).
#[derive(Default)]
pub struct Scratch {
    ifnames: IfNames,
    /// The UDP flow this thread last remembered (see
    /// [`FlowWatch::accepted_again`](crate::flowwatch::FlowWatch::accepted_again)).
    watched: Option<(crate::flowwatch::Flow, u64)>,
    /// The last packet decided with this scratch was accepted at OUTPUT,
    /// goes to a local socket, and the policy accepts it at INPUT too
    /// without a record.
    input_settled: bool,
}

impl Scratch {
    /// Whether the packet just decided with this scratch had its INPUT
    /// decision settled at OUTPUT (see [`Engine::with_input_settling`]);
    /// reading clears it.
    pub fn take_input_settled(&mut self) -> bool {
        std::mem::take(&mut self.input_settled)
    }
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
        Engine {
            loaded: ArcSwap::from_pointee(Loaded::new(policy, resolver)),
            factory,
            mode_override,
            counters,
            audit,
            flow_watch: std::sync::OnceLock::new(),
            oracle: None,
            offload: std::sync::OnceLock::new(),
            settle_input: false,
        }
    }

    /// Flow mode: for a packet accepted at OUTPUT from one local socket to
    /// another, also decide it as INPUT would (the same labels; only for
    /// policies where that is exact, see `input_known_at_output`), and when
    /// that is an acceptance without a record, say so through
    /// [`Scratch::take_input_settled`]: the queue thread then marks the
    /// packet so that the OUTPUT chain records the connection as accepted
    /// at INPUT as well ([`crate::rules::FLOW_MARK_SETTLED`]), and its SYN
    /// is queued once instead of twice.
    pub fn with_input_settling(mut self) -> Engine {
        self.settle_input = true;
        self
    }

    /// Remember every UDP flow accepted from now on in `w` (once; later
    /// calls are ignored).
    pub fn watch_flows(&self, w: Arc<crate::flowwatch::FlowWatch>) {
        let _ = self.flow_watch.set(w);
    }
    /// Offer every accepted first packet to `o` from now on (once; later
    /// calls are ignored).
    pub fn offload_to(&self, o: Arc<crate::offload::Offload>) {
        let _ = self.offload.set(o);
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

    /// The counters of the SELinux access cache, when labelgate asks the
    /// loaded policy (a `selinux` verdict found it active at start).
    pub fn oracle_cache_counts(&self) -> Option<crate::sepolicy::CacheCounts> {
        self.oracle.as_ref().and_then(|o| o.cache_counts())
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.loaded.load_full()
    }

    /// Swap in a new policy (built off the packet path by the caller).
    pub fn replace(&self, policy: Policy) {
        let resolver = (self.factory)(&policy);
        self.loaded.store(Arc::new(Loaded::new(policy, resolver)));
    }

    /// The effective global mode.
    pub fn mode(&self, p: &Policy) -> Mode {
        self.mode_override.unwrap_or(p.mode)
    }

    /// Decide one packet on the calling thread, slow lookups included.
    /// Never panics on packet bytes; always returns a verdict.
    pub fn handle(&self, payload: &[u8], meta: &QueueMeta, scratch: &mut Scratch) -> Verdict {
        self.decide(&Parsed::new(payload, meta), meta, scratch)
    }

    /// Decide one packet only if that needs no slow work (see
    /// [`decide_cached`](Self::decide_cached)).
    pub fn handle_fast(&self, payload: &[u8], meta: &QueueMeta, scratch: &mut Scratch) -> Option<Verdict> {
        self.decide_cached(&Parsed::new(payload, meta), meta, scratch)
    }

    /// Whether the decision needs each socket holder's exe and cgroup
    /// before it is made: a rule has a process key, or an offload is
    /// attached (it keys its sets by the sending holder's cgroup). Else they
    /// are read only for a packet whose decision writes a record
    /// ([`Resolver::resolve_deferred`], [`Resolver::complete`]).
    fn reads_process_first(&self, loaded: &Loaded) -> bool {
        loaded.process_keys || self.offload.get().is_some()
    }

    /// Decide a parsed packet, resolving its labels in full.
    pub fn decide(&self, p: &Parsed, meta: &QueueMeta, scratch: &mut Scratch) -> Verdict {
        let loaded = self.loaded.load();
        let input = match &p.kind {
            Kind::Packet(pkt, hook) if self.reads_process_first(&loaded) => {
                Ok((pkt, *hook, loaded.resolver.resolve(pkt, meta), Unread::default()))
            }
            Kind::Packet(pkt, hook) => {
                let (labels, unread) = loaded.resolver.resolve_deferred(pkt, meta);
                Ok((pkt, *hook, labels, unread))
            }
            Kind::Malformed { why, hook, known } => Err((*why, *hook, known)),
        };
        self.finish(&loaded, p, input, meta, scratch)
    }

    /// Decide a parsed packet if its labels are known without slow work
    /// ([`Resolver::resolve_cached`]); a malformed packet always is. `None`:
    /// nothing was decided, counted or audited; call [`decide`](Self::decide)
    /// (on a resolver worker). A decision that writes a record reads the
    /// process facts it left unread on the calling thread (a few reads of
    /// `/proc`, once per socket: then kept with it).
    pub fn decide_cached(&self, p: &Parsed, meta: &QueueMeta, scratch: &mut Scratch) -> Option<Verdict> {
        let loaded = self.loaded.load();
        let input = match &p.kind {
            Kind::Packet(pkt, hook) if self.reads_process_first(&loaded) => {
                Ok((pkt, *hook, loaded.resolver.resolve_cached(pkt, meta)?, Unread::default()))
            }
            Kind::Packet(pkt, hook) => {
                let (labels, unread) = loaded.resolver.resolve_cached_deferred(pkt, meta)?;
                Ok((pkt, *hook, labels, unread))
            }
            Kind::Malformed { why, hook, known } => Err((*why, *hook, known)),
        };
        Some(self.finish(&loaded, p, input, meta, scratch))
    }

    /// Decide, count and audit one packet, given its labels and the
    /// process facts left unread in them (or why it is malformed). Every
    /// packet passes here exactly once. Unread process facts are read after
    /// deciding, before a record is written (the record carries them).
    fn finish(
        &self,
        loaded: &Loaded,
        p: &Parsed,
        input: Result<(&PacketInfo, Hook, Labels, Unread), Unparsed<'_>>,
        meta: &QueueMeta,
        scratch: &mut Scratch,
    ) -> Verdict {
        let c = &self.counters;
        Counters::bump(&c.packets);
        scratch.input_settled = false;
        let policy = &loaded.policy;
        let mode = self.mode(policy);
        let ifindex = if meta.outdev != 0 { meta.outdev } else { meta.indev };
        let watched = input.as_ref().ok().and_then(|(pkt, hook, ..)| crate::flowwatch::Flow::of(pkt, *hook));
        let (decision, record) = match input {
            Ok((pkt, hook, mut labels, unread)) => {
                let names = std::cell::RefCell::new(&mut scratch.ifnames);
                let iif = || names.borrow_mut().name(meta.indev);
                let oif = || names.borrow_mut().name(meta.outdev);
                let facts = Facts { hook, pkt, labels: &labels, iif: &iif, oif: &oif };
                let d = policy.decide_with(&facts, mode, self.oracle.as_deref());
                scratch.input_settled = self.settle_input
                    && loaded.input_known_at_output
                    && hook == Hook::Output
                    && plain_accept(&d)
                    && between_local_sockets(&labels)
                    && {
                        // INPUT's view: the same labels, no gid (policies
                        // that could tell the rest apart were excluded).
                        let at_input = Labels { gid: None, ..labels.clone() };
                        let f = Facts { hook: Hook::Input, pkt, labels: &at_input, iif: &iif, oif: &oif };
                        plain_accept(&policy.decide_with(&f, mode, self.oracle.as_deref()))
                    };
                if let Some(o) = self.offload.get() {
                    let at_output = (hook == Hook::Output).then_some(scratch.input_settled);
                    o.offer(policy, mode, &d, at_output, pkt, &labels);
                }
                let rec = (d.audit && self.audit.enabled()).then(|| {
                    if !unread.is_empty() {
                        loaded.resolver.complete(&mut labels, unread);
                    }
                    let mut r = base_record(hook, ifindex, labels, &d, policy);
                    r.set_packet(pkt);
                    r
                });
                (d, rec)
            }
            Err((why, hook, known)) => {
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
                    // What the headers did show, as for a parsed packet.
                    (r.src, r.dst) = (known.addrs.map(|a| a.0), known.addrs.map(|a| a.1));
                    r.proto = known.proto.map(|p| p.number());
                    (r.sport, r.dport) = (known.ports.map(|p| p.0), known.ports.map(|p| p.1));
                    r
                });
                (d, rec)
            }
        };
        if let Some(r) = record {
            self.audit.submit(r);
        }
        match decision.verdict {
            Verdict::Accept => {
                Counters::bump(&c.accepted);
                // Before the verdict is sent: see FlowWatch::accepted.
                if let (Some(w), Some(f)) = (self.flow_watch.get(), watched) {
                    w.accepted_again(f, &mut scratch.watched);
                }
            }
            Verdict::Drop => Counters::bump(&c.dropped),
        }
        if decision.permissive {
            Counters::bump(&c.would_deny);
        }
        c.latency.observe(p.started.elapsed());
        decision.verdict
    }
}

/// An acceptance that writes no record: not audited, not a permissive
/// pass of a denial.
fn plain_accept(d: &Decision) -> bool {
    d.verdict == Verdict::Accept && !d.audit && !d.permissive
}

/// Both ends are sockets held by processes in the same network namespace
/// (at OUTPUT: labelgate's own), so the packet is delivered to INPUT here.
fn between_local_sockets(l: &Labels) -> bool {
    match (&l.source_process, &l.dest_process) {
        (Some(s), Some(d)) => s.netns.is_some() && s.netns == d.netns,
        _ => false,
    }
}

/// A malformed packet as [`Engine::finish`] takes it: why, its hook if
/// known, and what its headers showed.
type Unparsed<'a> = (&'static str, Option<Hook>, &'a Partial);

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
        /// What the headers showed, for the audit record.
        known: Partial,
    },
}

impl Parsed {
    /// Parse the packet bytes and the hook; never panics.
    pub fn new(payload: &[u8], meta: &QueueMeta) -> Parsed {
        let started = Instant::now();
        let hook = Hook::from_nf(meta.hook);
        let kind = match (crate::packet::parse_partial(payload), hook) {
            (Ok(pkt), Some(hook)) => Kind::Packet(pkt, hook),
            (Err((e, known)), hook) => Kind::Malformed { why: malformed_reason(e, payload, meta), hook, known },
            (Ok(pkt), None) => Kind::Malformed { why: "unknown_hook", hook, known: Partial::from(&pkt) },
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

/// Why a packet did not parse: its parse error's reason, except that headers
/// cut short by the copy range (the kernel's NFQA_CAP_LEN says the packet
/// is longer than the bytes copied) are `beyond_copy_range`, not malformed
/// bytes: the packet may be well formed, the copy was too short.
fn malformed_reason(e: PacketError, payload: &[u8], meta: &QueueMeta) -> &'static str {
    let cut = meta.cap_len.is_some_and(|whole| usize::try_from(whole).is_ok_and(|w| w > payload.len()));
    match e {
        PacketError::Truncated(_) if cut => "beyond_copy_range",
        e => e.reason(),
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
        labels,
        rule: policy.rule_name(d.rule).to_string(),
        permissive: d.permissive,
        malformed: None,
        policy: policy.digest,
    }
}

/// An engine deciding with `policy` over the resolvers `factory` makes,
/// writing JSON records to a file: `run` drives it; the records' lines.
#[cfg(test)]
pub(crate) fn audited_with(policy: &str, factory: ResolverFactory, run: impl FnOnce(&Engine)) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.json");
    let c = Arc::new(Counters::default());
    let cfg = crate::audit::Config {
        target: Some(crate::audit::Target::File(path.clone())),
        kernel: false,
        format: crate::audit::Format::Json,
        rate: 0,
        capacity: 1000,
    };
    let (sink, writer) = crate::audit::Writer::start(cfg, c.clone()).unwrap();
    let e = Engine::new(Policy::from_toml(policy, "t").unwrap(), factory, None, c, sink);
    run(&e);
    drop(e);
    writer.finish();
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
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

    #[test]
    fn the_access_cache_counters_reach_the_metrics() {
        let (policy, oracle) = crate::sepolicy::fake::oracle(crate::sepolicy::fake::FakePolicy::default());
        let e = engine("default = \"selinux\"\n");
        assert_eq!(e.oracle_cache_counts(), None, "no oracle, no counters");
        let e = e.with_oracle(Arc::new(oracle));
        let lo = Ipv4Addr::LOCALHOST;
        let pkt = build::ipv4(lo, lo, 6, &[], &build::tcp(1, 5432, 2));
        let mut s = Scratch::default();
        for _ in 0..3 {
            assert_eq!(e.handle(&pkt, &meta(3, 0), &mut s), Verdict::Drop, "the fake policy allows nothing");
        }
        assert_eq!(policy.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        let want = crate::sepolicy::CacheCounts { hits: 2, misses: 1, resets: 0 };
        assert_eq!(e.oracle_cache_counts(), Some(want));
        let mut out = Vec::new();
        crate::metrics::write_all(&mut out, &e, &[]).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in [
            "labelgate_selinux_cache_total{event=\"hit\"} 2",
            "labelgate_selinux_cache_total{event=\"miss\"} 1",
            "labelgate_selinux_cache_total{event=\"reset\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    /// An engine that writes JSON records to a file; returns the records.
    fn audited(policy: &str, packets: &[(&[u8], QueueMeta)]) -> Vec<String> {
        audited_with(policy, Box::new(|_| Box::new(KernelMetaResolver)), |e| {
            let mut s = Scratch::default();
            for (pkt, meta) in packets {
                e.handle(pkt, meta, &mut s);
            }
        })
    }

    #[test]
    fn malformed_records_carry_what_the_headers_showed() {
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        let short = build::ipv4(a, b, 6, &[], &[0; 10]);
        let good = build::ipv4(a, b, 17, &[], &build::udp(4000, 53, b""));
        let recs =
            audited("default = \"accept\"\n", &[(&short, meta(3, 0)), (&good, meta(77, 0)), (&[0x45, 1], meta(3, 0))]);
        assert_eq!(recs.len(), 3, "{recs:?}");
        assert!(recs[0].contains(r#""malformed":"truncated""#), "{}", recs[0]);
        assert!(recs[0].contains("198.18.0.1") && recs[0].contains("198.18.0.2"), "{}", recs[0]);
        assert!(recs[0].contains(r#""proto":"tcp""#), "{}", recs[0]);
        // An unknown hook: the packet parsed, its ports are known too.
        assert!(recs[1].contains(r#""malformed":"unknown_hook""#) && recs[1].contains("4000"), "{}", recs[1]);
        assert!(recs[1].contains("198.18.0.2") && recs[1].contains(r#""proto":"udp""#), "{}", recs[1]);
        // Too short for an IP header: no addresses.
        assert!(!recs[2].contains("198.18"), "{}", recs[2]);
    }

    #[test]
    fn headers_past_the_copy_range_are_not_called_truncated() {
        let l6 = std::net::Ipv6Addr::LOCALHOST;
        let mut dst_opts = vec![17u8, 40];
        dst_opts.resize(328, 0);
        let whole = build::ipv6(l6, l6, 60, &dst_opts, &build::udp(1, 5360, b"x"));
        let copied = &whole[..256];
        let cut = QueueMeta { cap_len: Some(whole.len() as u32), ..meta(3, 0) };
        let p = Parsed::new(copied, &cut);
        assert!(matches!(p.kind, Kind::Malformed { why: "beyond_copy_range", .. }), "{p:?}");
        // The same bytes without NFQA_CAP_LEN: the packet itself is short.
        let p = Parsed::new(copied, &meta(3, 0));
        assert!(matches!(p.kind, Kind::Malformed { why: "truncated", .. }), "{p:?}");
        // Copied whole, it parses.
        assert!(Parsed::new(&whole, &meta(3, 0)).packet().is_some());
    }

    /// Knows nothing without slow work; counts its full resolutions.
    struct SlowResolver(Arc<std::sync::atomic::AtomicU64>);

    impl Resolver for SlowResolver {
        fn resolve(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Labels {
            Counters::bump(&self.0);
            KernelMetaResolver.resolve(pkt, meta)
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
        assert_eq!(e.decide(&parsed, &meta(3, 0), &mut s), Verdict::Accept);
        assert_eq!(Counters::get(&resolves), 1);
        assert_eq!(
            (Counters::get(&c.packets), Counters::get(&c.accepted), Counters::get(&c.latency.count), hits(&e)),
            (2, 1, 2, 1)
        );
    }
}
