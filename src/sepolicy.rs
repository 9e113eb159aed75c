//! The loaded SELinux policy as a policy source: the access check that
//! rules with `verdict = "selinux"` defer to, making labelgate a userspace
//! object manager for the `labelgate_flow` class ([`CLASS`], and the
//! [`permission`] a hook asks of it, which audit records name too).
//!
//! Owns the [`AccessOracle`] trait (what a decision asks), the kernel's
//! implementation ([`KernelAccess`], `security_compute_av_flags` through the
//! `selinux` crate, the class and permission numbers read from selinuxfs),
//! and the cache in front of it ([`CachedOracle`]), which drops every answer
//! when the policy status page says the policy, a boolean or the enforcing
//! mode changed (`load_policy`, `semodule -i`, `setsebool`, `setenforce`).

use crate::context::SecurityContext;
use crate::labels::Hook;
use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// The SELinux object class labelgate's records name (`tclass=`): a
/// userspace class of its own, declared by packaging/selinux/labelgate_flow.cil,
/// so that audit2allow proposes rules about labelgate's decisions and not
/// about the kernel's `packet` class (checked against secmark types).
pub const CLASS: &str = "labelgate_flow";

/// The permission of [`CLASS`] a decision at `hook` is about: `send` for
/// packets leaving (output and postrouting), `recv` for packets arriving
/// (input and prerouting), `forward` for forwarded ones.
pub fn permission(hook: Hook) -> &'static str {
    match hook {
        Hook::Output | Hook::Postrouting => "send",
        Hook::Input | Hook::Prerouting => "recv",
        Hook::Forward => "forward",
    }
}

/// What went wrong asking the loaded policy.
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    #[error("SELinux is not active on this host")]
    Inactive,
    #[error("the loaded SELinux policy has no class {class} (load packaging/selinux/labelgate_flow.cil): {source}")]
    NoClass { class: &'static str, source: std::io::Error },
    #[error("class {class} has no permission {perm} in the loaded policy: {source}")]
    NoPerm { class: &'static str, perm: &'static str, source: std::io::Error },
    #[error("the SELinux policy status page cannot be opened: {0}")]
    Status(std::io::Error),
    #[error("the kernel's access check failed: {0}")]
    Check(String),
}

/// The loaded policy's answer for one (source, dest, permission).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The permission is allowed.
    pub allowed: bool,
    /// A denial would not be enforced: the source domain is permissive
    /// (`permissive`/`typepermissive`, `semanage permissive -a`). The
    /// kernel's global mode (`setenforce 0`) is not asked: labelgate's own
    /// `mode` is its global switch.
    pub permissive: bool,
    /// The policy wants the answer recorded: a denial not `dontaudit`ed,
    /// or a grant it `auditallow`s.
    pub audited: bool,
}

/// Answers access checks on labelgate's class.
pub trait AccessOracle: Send + Sync {
    /// May `source` do `perm` (`send`, `recv` or `forward`) on `dest`?
    fn ask(&self, source: &SecurityContext, dest: &SecurityContext, perm: &'static str) -> Result<Answer, OracleError>;
    /// The cache's counters, for an oracle with a cache.
    fn cache_counts(&self) -> Option<CacheCounts> {
        None
    }
}

/// A snapshot of [`CacheStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Answers served from the cache.
    pub hits: u64,
    /// Questions that went to the loaded policy.
    pub misses: u64,
    /// Times a policy, boolean or mode change emptied the cache.
    pub resets: u64,
}

/// The uncached check behind [`CachedOracle`], and how it learns that its
/// answers went stale.
pub trait Backend: Send + Sync {
    fn ask(&self, source: &SecurityContext, dest: &SecurityContext, perm: &'static str) -> Result<Answer, OracleError>;
    /// Whether the policy changed since the last call.
    fn changed(&self) -> bool;
    /// Forget what was derived from the old policy (class numbers).
    fn reset(&self) {}
}

/// Entries kept at most; past this the cache starts over.
const CAPACITY: usize = 8192;

struct Entry {
    source: SecurityContext,
    dest: SecurityContext,
    perm: &'static str,
    generation: u64,
    answer: Answer,
}

/// Cache hits and misses, and how many times a policy change emptied it.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub resets: AtomicU64,
}

/// An [`AccessOracle`] that caches a [`Backend`]'s answers per (source,
/// dest, permission) until the backend says the policy changed.
///
/// Entries carry the generation they were asked in; a change bumps the
/// generation before anything else, so an answer asked of the old policy
/// and stored after the change is never served.
pub struct CachedOracle<B> {
    backend: B,
    map: RwLock<HashMap<u64, Entry>>,
    generation: AtomicU64,
    hasher: foldhash::fast::FixedState,
    pub stats: CacheStats,
}

impl<B: Backend> CachedOracle<B> {
    pub fn new(backend: B) -> CachedOracle<B> {
        CachedOracle {
            backend,
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            hasher: foldhash::fast::FixedState::default(),
            stats: CacheStats::default(),
        }
    }

    fn key(&self, source: &SecurityContext, dest: &SecurityContext, perm: &str) -> u64 {
        self.hasher.hash_one((source, dest, perm))
    }
}

impl<B: Backend> AccessOracle for CachedOracle<B> {
    fn ask(&self, source: &SecurityContext, dest: &SecurityContext, perm: &'static str) -> Result<Answer, OracleError> {
        if self.backend.changed() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.backend.reset();
            self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
            self.stats.resets.fetch_add(1, Ordering::Relaxed);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let key = self.key(source, dest, perm);
        {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = map.get(&key) {
                if e.generation == generation && e.perm == perm && e.source == *source && e.dest == *dest {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(e.answer);
                }
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        // Errors are not cached: the next packet asks again.
        let answer = self.backend.ask(source, dest, perm)?;
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, Entry { source: source.clone(), dest: dest.clone(), perm, generation, answer });
        Ok(answer)
    }

    fn cache_counts(&self) -> Option<CacheCounts> {
        let s = &self.stats;
        Some(CacheCounts {
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            resets: s.resets.load(Ordering::Relaxed),
        })
    }
}

/// The class and permission numbers of the loaded policy.
#[derive(Clone, Copy)]
struct ClassBits {
    class: selinux::SecurityClass,
    send: u32,
    recv: u32,
    forward: u32,
}

/// The kernel's access check: `security_compute_av_flags` on the loaded
/// policy (MLS constraints, booleans and permissive domains included).
pub struct KernelAccess {
    bits: Mutex<Option<ClassBits>>,
}

/// Read the class's number and the bit of one of its permissions from
/// selinuxfs, as libselinux's class discovery does (read afresh after each
/// policy change, as the numbers may change with the policy).
fn read_index(path: &str) -> std::io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{path}: {text:?}")))
}

fn class_bits() -> Result<ClassBits, OracleError> {
    let class = CLASS;
    let root = "/sys/fs/selinux/class";
    let index =
        read_index(&format!("{root}/{class}/index")).map_err(|source| OracleError::NoClass { class, source })?;
    let class_id = u16::try_from(index)
        .ok()
        .and_then(|i| selinux::SecurityClass::new(i).ok())
        .ok_or_else(|| OracleError::Check(format!("class {class} has index {index}")))?;
    let bit = |perm: &'static str| -> Result<u32, OracleError> {
        let n = read_index(&format!("{root}/{class}/perms/{perm}")).map_err(|source| OracleError::NoPerm {
            class,
            perm,
            source,
        })?;
        n.checked_sub(1)
            .and_then(|s| 1u32.checked_shl(s))
            .ok_or_else(|| OracleError::Check(format!("{perm} has bit {n}")))
    };
    Ok(ClassBits { class: class_id, send: bit("send")?, recv: bit("recv")?, forward: bit("forward")? })
}

impl KernelAccess {
    /// Check that SELinux is active and the loaded policy declares the
    /// class with its permissions, and open the policy status page.
    pub fn open() -> Result<KernelAccess, OracleError> {
        if selinux::kernel_support() == selinux::KernelSupport::Unsupported {
            return Err(OracleError::Inactive);
        }
        crate::sys::selinux_status::open().map_err(OracleError::Status)?;
        let bits = class_bits()?;
        Ok(KernelAccess { bits: Mutex::new(Some(bits)) })
    }

    /// The cached kernel oracle the daemon and `explain` use.
    pub fn cached() -> Result<CachedOracle<KernelAccess>, OracleError> {
        Ok(CachedOracle::new(KernelAccess::open()?))
    }
}

fn c_context(c: &SecurityContext) -> Result<std::ffi::CString, OracleError> {
    std::ffi::CString::new(c.to_string()).map_err(|_| OracleError::Check("context holds a NUL byte".into()))
}

impl Backend for KernelAccess {
    fn ask(&self, source: &SecurityContext, dest: &SecurityContext, perm: &'static str) -> Result<Answer, OracleError> {
        let bits = {
            let mut b = self.bits.lock().unwrap_or_else(|e| e.into_inner());
            match *b {
                Some(bits) => bits,
                None => {
                    let bits = class_bits()?;
                    *b = Some(bits);
                    bits
                }
            }
        };
        let want = match perm {
            "send" => bits.send,
            "recv" => bits.recv,
            "forward" => bits.forward,
            other => return Err(OracleError::Check(format!("unknown permission {other}"))),
        };
        let (s, d) = (c_context(source)?, c_context(dest)?);
        let s = selinux::SecurityContext::from_c_str(&s, true);
        let d = selinux::SecurityContext::from_c_str(&d, true);
        let avd = s.query_access_decision(&d, bits.class, want).map_err(|e| OracleError::Check(e.to_string()))?;
        let domain_permissive = avd.flags & (selinux_sys::SELINUX_AVD_FLAGS_PERMISSIVE as u32) != 0;
        let allowed = avd.allowed & want == want;
        let audited = if allowed { avd.auditallow & want != 0 } else { avd.auditdeny & want != 0 };
        Ok(Answer { allowed, permissive: domain_permissive, audited })
    }

    fn changed(&self) -> bool {
        crate::sys::selinux_status::updated()
    }

    fn reset(&self) {
        *self.bits.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A policy in a table, for tests: answers what it was told, counts the
    //! questions, and reports a change when told to.
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[derive(Default)]
    pub struct FakePolicy {
        /// (source type, dest type, perm) allowed.
        pub allow: Mutex<Vec<(String, String, &'static str)>>,
        pub permissive_types: Mutex<Vec<String>>,
        pub asked: AtomicU64,
        pub change: AtomicBool,
    }

    impl FakePolicy {
        pub fn allowing(rules: &[(&str, &str, &'static str)]) -> FakePolicy {
            let p = FakePolicy::default();
            *p.allow.lock().unwrap() = rules.iter().map(|(s, d, p)| (s.to_string(), d.to_string(), *p)).collect();
            p
        }
    }

    impl Backend for &'static FakePolicy {
        fn ask(&self, s: &SecurityContext, d: &SecurityContext, perm: &'static str) -> Result<Answer, OracleError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let allowed =
                self.allow.lock().unwrap().iter().any(|(a, b, p)| a == s.type_() && b == d.type_() && *p == perm);
            let permissive = self.permissive_types.lock().unwrap().iter().any(|t| t == s.type_());
            Ok(Answer { allowed, permissive, audited: !allowed })
        }
        fn changed(&self) -> bool {
            self.change.swap(false, Ordering::SeqCst)
        }
    }

    /// A cached oracle over a leaked fake (tests only).
    pub fn oracle(p: FakePolicy) -> (&'static FakePolicy, CachedOracle<&'static FakePolicy>) {
        let p: &'static FakePolicy = Box::leak(Box::new(p));
        (p, CachedOracle::new(p))
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    fn ctx(t: &str) -> SecurityContext {
        format!("system_u:system_r:{t}:s0").parse().unwrap()
    }

    #[test]
    fn answers_are_cached_per_source_dest_and_permission() {
        let (p, o) = oracle(FakePolicy::allowing(&[("httpd_t", "postgresql_t", "send")]));
        let (h, db) = (ctx("httpd_t"), ctx("postgresql_t"));
        assert!(o.ask(&h, &db, "send").unwrap().allowed);
        assert!(o.ask(&h, &db, "send").unwrap().allowed);
        assert_eq!(p.asked.load(Ordering::SeqCst), 1, "the second question is answered from the cache");
        assert!(!o.ask(&h, &db, "recv").unwrap().allowed, "another permission is another question");
        assert!(!o.ask(&db, &h, "send").unwrap().allowed, "the reverse direction is another question");
        assert_eq!(p.asked.load(Ordering::SeqCst), 3);
        assert_eq!(o.stats.hits.load(Ordering::SeqCst), 1);
        // A context parsed again (another allocation, equal value) hits too.
        assert!(o.ask(&ctx("httpd_t"), &ctx("postgresql_t"), "send").unwrap().allowed);
        assert_eq!(p.asked.load(Ordering::SeqCst), 3);
        // Another range is another context.
        let h2: SecurityContext = "system_u:system_r:httpd_t:s0:c1".parse().unwrap();
        assert!(o.ask(&h2, &db, "send").unwrap().allowed);
        assert_eq!(p.asked.load(Ordering::SeqCst), 4);
        assert_eq!(o.cache_counts(), Some(CacheCounts { hits: 2, misses: 4, resets: 0 }));
    }

    #[test]
    fn a_policy_change_empties_the_cache() {
        let (p, o) = oracle(FakePolicy::allowing(&[("httpd_t", "postgresql_t", "send")]));
        let (h, db) = (ctx("httpd_t"), ctx("postgresql_t"));
        assert!(o.ask(&h, &db, "send").unwrap().allowed);
        // `setsebool` turns the allow off: without the notification the
        // cache still answers the old policy's way...
        p.allow.lock().unwrap().clear();
        assert!(o.ask(&h, &db, "send").unwrap().allowed, "no notification yet: cached");
        // ...and after it, the new policy's.
        p.change.store(true, Ordering::SeqCst);
        assert!(!o.ask(&h, &db, "send").unwrap().allowed, "stale answer served after a policy change");
        assert_eq!(o.stats.resets.load(Ordering::SeqCst), 1);
        assert_eq!(p.asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_permissive_flag_is_the_policys() {
        let (p, o) = oracle(FakePolicy::allowing(&[]));
        p.permissive_types.lock().unwrap().push("httpd_t".into());
        let a = o.ask(&ctx("httpd_t"), &ctx("postgresql_t"), "send").unwrap();
        assert_eq!(a, Answer { allowed: false, permissive: true, audited: true });
        let a = o.ask(&ctx("intruder_t"), &ctx("postgresql_t"), "send").unwrap();
        assert_eq!(a, Answer { allowed: false, permissive: false, audited: true });
    }

    #[test]
    fn kernel_access_says_when_selinux_is_inactive() {
        let inactive = selinux::kernel_support() == selinux::KernelSupport::Unsupported;
        match KernelAccess::open() {
            Err(OracleError::Inactive) => assert!(inactive, "SELinux is active but was reported inactive"),
            Err(e) => assert!(!inactive, "inactive SELinux reported as {e}"),
            Ok(_) => assert!(!inactive, "an inactive SELinux answered"),
        }
    }

    fn facts_decide(
        p: &crate::policy::Policy,
        o: Option<&dyn AccessOracle>,
        src: &str,
        dport: u16,
    ) -> crate::policy::Decision {
        use crate::labels::{Hook, Label, Labels, Origin};
        use crate::packet::{PacketInfo, Proto};
        let lo = std::net::IpAddr::from([127, 0, 0, 1]);
        let pkt = PacketInfo {
            src: lo,
            dst: lo,
            proto: Proto::Tcp,
            sport: Some(40000),
            dport: Some(dport),
            icmp: None,
            tcp_syn: true,
            label_option: None,
        };
        let labels = Labels {
            source: Label { context: ctx(src), origin: Origin::Socket },
            dest: Label { context: ctx("postgresql_t"), origin: Origin::Socket },
            ..Labels::unresolved("test")
        };
        let none = || None;
        let f = crate::policy::Facts { hook: Hook::Output, pkt: &pkt, labels: &labels, iif: &none, oif: &none };
        p.decide_with(&f, crate::policy::Mode::Enforcing, o)
    }

    const POLICY: &str = "default = \"accept\"\n\
        [[rule]]\nname = \"no-intruder\"\nsource = \"intruder_t\"\nverdict = \"drop\"\n\
        [[rule]]\nname = \"db-by-policy\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"selinux\"\n";

    #[test]
    fn the_rule_asks_only_after_its_conditions_and_earlier_rules() {
        use crate::policy::{Asked, Policy, Verdict};
        let p = Policy::from_toml(POLICY, "t").unwrap();
        let (fake, o) = oracle(FakePolicy::allowing(&[("httpd_t", "postgresql_t", "send")]));
        let d = facts_decide(&p, Some(&o), "httpd_t", 5432);
        assert_eq!((d.verdict, d.rule), (Verdict::Accept, Some(1)));
        assert!(matches!(d.selinux, Some(Asked::Answered(a)) if a.allowed));
        assert!(!d.audit, "a grant the policy does not auditallow is not recorded");
        let d = facts_decide(&p, Some(&o), "sshd_t", 5432);
        assert_eq!((d.verdict, d.rule, d.audit, d.permissive), (Verdict::Drop, Some(1), true, false));
        // An earlier table rule decides before the policy is asked.
        let d = facts_decide(&p, Some(&o), "intruder_t", 5432);
        assert_eq!((d.verdict, d.rule, d.selinux), (Verdict::Drop, Some(0), None));
        // The rule's own conditions first: another port never asks.
        let d = facts_decide(&p, Some(&o), "sshd_t", 22);
        assert_eq!((d.verdict, d.rule, d.selinux), (Verdict::Accept, None, None));
        assert_eq!(fake.asked.load(Ordering::SeqCst), 2);
        // Asked again: from the cache.
        facts_decide(&p, Some(&o), "httpd_t", 5432);
        assert_eq!(fake.asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_permissive_domain_is_recorded_and_let_through() {
        use crate::policy::{Policy, Verdict};
        let p = Policy::from_toml(POLICY, "t").unwrap();
        let (fake, o) = oracle(FakePolicy::allowing(&[]));
        fake.permissive_types.lock().unwrap().push("unconfined_t".into());
        let d = facts_decide(&p, Some(&o), "unconfined_t", 5432);
        assert_eq!((d.verdict, d.table_verdict, d.permissive, d.audit), (Verdict::Accept, Verdict::Drop, true, true));
        let d = facts_decide(&p, Some(&o), "sshd_t", 5432);
        assert_eq!((d.verdict, d.permissive), (Verdict::Drop, false));
    }

    #[test]
    fn the_policy_default_can_ask_and_no_oracle_is_a_denial() {
        use crate::policy::{Asked, Policy, Verdict};
        let p = Policy::from_toml("default = \"selinux\"\n", "t").unwrap();
        assert!(p.asks_selinux());
        let (_, o) = oracle(FakePolicy::allowing(&[("httpd_t", "postgresql_t", "send")]));
        assert_eq!(facts_decide(&p, Some(&o), "httpd_t", 80).verdict, Verdict::Accept);
        let d = facts_decide(&p, None, "httpd_t", 80);
        assert_eq!((d.verdict, d.selinux, d.audit), (Verdict::Drop, Some(Asked::Failed), true));
        assert!(!Policy::from_toml(POLICY.replace("selinux", "accept").as_str(), "t").unwrap().asks_selinux());
    }

    #[test]
    fn a_boolean_change_reaches_the_next_decision() {
        use crate::policy::{Policy, Verdict};
        let p = Policy::from_toml(POLICY, "t").unwrap();
        let (fake, o) = oracle(FakePolicy::allowing(&[("httpd_t", "postgresql_t", "send")]));
        assert_eq!(facts_decide(&p, Some(&o), "httpd_t", 5432).verdict, Verdict::Accept);
        fake.allow.lock().unwrap().clear();
        fake.change.store(true, Ordering::SeqCst);
        assert_eq!(facts_decide(&p, Some(&o), "httpd_t", 5432).verdict, Verdict::Drop);
    }
}
