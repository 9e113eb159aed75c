//! The compiled policy table and the decision: first matching rule wins,
//! looked up through a type index, with permissive modes applied.
//!
//! Owns rule semantics. It never reads the kernel: everything it decides on
//! arrives as a [`Facts`] value.
//!
//! Its parts import one way: `pattern` (matchers) and `rule` (verdicts,
//! modes, the compiled rule) use nothing of the others; `scope`, `index`
//! and `digest` build on them; `parse` compiles a file into a [`Policy`]
//! (its rules indexed); this module takes its digest and decides.

mod digest;
mod index;
mod parse;
pub mod pattern;
mod rule;
mod scope;

pub use digest::PolicyDigest;
use index::{Index, Merged};
pub use parse::{excerpt, open_policy, resolve_id, IdError, PolicyError, RawPolicy, MAX_POLICY_BYTES, MAX_RULE_NAME};
pub use rule::{
    AddressLabel, Asked, DoiMap, Facts, HookSel, Mismatch, MlsRelation, Mode, RareConds, Rule, RuleVerdict, Verdict,
};
pub use scope::ScopeEntry;

use crate::labels::{Hook, Labels};
use crate::packet::PacketInfo;
use crate::sepolicy::AccessOracle;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the table decided for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The verdict given to the kernel.
    pub verdict: Verdict,
    /// What the table said before permissive modes were applied.
    pub table_verdict: Verdict,
    /// Index of the deciding rule; `None` for the default verdict.
    pub rule: Option<usize>,
    /// A denial let through by a permissive mode.
    pub permissive: bool,
    /// Whether this decision must be written to the audit log.
    pub audit: bool,
    /// The loaded SELinux policy's answer, when a `selinux` verdict asked it.
    pub selinux: Option<Asked>,
}

/// A compiled, immutable policy.
#[derive(Debug)]
pub struct Policy {
    pub mode: Mode,
    /// The verdict when no rule matches.
    pub default: RuleVerdict,
    /// The verdict for a packet that cannot be parsed.
    pub malformed: Verdict,
    /// Source types whose denials are let through and recorded.
    pub permissive_domains: Vec<String>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// Static labels of remote addresses, longest prefix first.
    pub address_labels: Vec<AddressLabel>,
    /// How each CIPSO/CALIPSO DOI maps to MLS levels.
    pub dois: HashMap<u32, DoiMap>,
    /// The type sets as written (name without `@` to member types).
    pub sets: HashMap<String, Vec<String>>,
    /// The `[[scope]]` entries; `None` when the policy declares none (it
    /// then governs every packet queued to it).
    pub scope: Option<Vec<ScopeEntry>>,
    /// Digest of the policy text as loaded, put in every record, the
    /// metrics and the start and reload log lines.
    pub digest: PolicyDigest,
    index: Index,
}

/// What identifies one version of a file without reading it: a change of
/// contents between two of these changes the modification or change time.
fn file_version(m: &std::fs::Metadata) -> (u64, u64, u64, i64, i64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
}

/// Ask the loaded policy about a packet's source and dest contexts, for
/// the hook's permission; a failure is logged (at most once a second).
fn ask(oracle: Option<&dyn AccessOracle>, f: &Facts<'_>) -> Asked {
    let perm = crate::sepolicy::permission(f.hook);
    let answer = match oracle {
        Some(o) => o.ask(&f.labels.source.context, &f.labels.dest.context, perm),
        None => Err(crate::sepolicy::OracleError::Inactive),
    };
    match answer {
        Ok(a) => Asked::Answered(a),
        Err(e) => {
            static LAST: AtomicU64 = AtomicU64::new(0);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if LAST.swap(now, Ordering::Relaxed) != now {
                log::warn!("verdict selinux: cannot ask the loaded policy, denying: {e}");
            }
            Asked::Failed
        }
    }
}

impl Policy {
    /// Read and compile a policy file.
    ///
    /// The file is compiled, then its digest taken; a file that changed
    /// meanwhile (another version: times, size or inode differ before the
    /// compile and after the digest) is loaded again, at most three times,
    /// so the digest is always of the bytes compiled.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        // One open file serves the compile and the digest, so both see the
        // same inode; a write between them changes its version and the
        // load is tried again.
        for _ in 0..3 {
            let file = parse::open_policy(path)?;
            let before = file.metadata().map_err(|e| PolicyError::io(path, e))?;
            let mut p = parse::load_from(path, &file)?;
            let digest = PolicyDigest::of_file(&file).map_err(|e| PolicyError::io(path, e))?;
            let after = file.metadata().map_err(|e| PolicyError::io(path, e))?;
            if file_version(&before) == file_version(&after) {
                p.digest = digest;
                return Ok(p);
            }
        }
        let e = std::io::Error::new(std::io::ErrorKind::Interrupted, "the file kept changing while it was loaded");
        Err(PolicyError::io(path, e))
    }

    /// Compile policy text; `origin` names it in error messages. The
    /// digest is of `text`.
    pub fn from_toml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let mut p = parse::compile(text, origin)?;
        p.digest = PolicyDigest::of(text.as_bytes());
        Ok(p)
    }

    /// Indices of the rules that could match, in rule order.
    pub fn candidates<'a>(&'a self, labels: &Labels) -> impl Iterator<Item = u32> + 'a {
        Merged { lists: self.index.lists(labels.source.context.type_(), labels.dest.context.type_()) }
    }

    /// The first matching rule, if any: the candidates in rule order, the
    /// rules naming no type only if their [`Prefilter`](index::Prefilter) admits the packet.
    pub fn first_match(&self, f: &Facts<'_>) -> Option<usize> {
        let [pair, source, dest, wild] =
            self.index.lists(f.labels.source.context.type_(), f.labels.dest.context.type_());
        let mut typed = Merged { lists: [pair, source, dest] }.peekable();
        let mut wild =
            wild.iter().zip(&self.index.wild_pre).filter(|(_, pre)| pre.admits(f)).map(|(&i, _)| i).peekable();
        let matches = |i: u32| self.rules.get(i as usize).is_some_and(|r| r.check(f).is_ok());
        loop {
            // A rule is in `wild` or in the typed lists, never both.
            let next = match (typed.peek(), wild.peek()) {
                (Some(&t), Some(&w)) if t < w => typed.next(),
                (_, Some(_)) => wild.next(),
                (Some(_), None) => typed.next(),
                (None, None) => return None,
            }?;
            if matches(next) {
                return Some(next as usize);
            }
        }
    }

    /// Whether a source domain runs permissive.
    pub fn domain_permissive(&self, source_type: &str) -> bool {
        self.permissive_domains.iter().any(|d| d == source_type)
    }

    /// Whether a packet is in the policy's scope (every packet is when the
    /// policy declares no `[[scope]]`).
    pub fn in_scope(&self, hook: Hook, pkt: &PacketInfo) -> bool {
        self.scope.as_ref().is_none_or(|s| s.iter().any(|e| e.matches(hook, pkt)))
    }

    /// Whether a rule or the default asks the loaded SELinux policy.
    pub fn asks_selinux(&self) -> bool {
        self.default == RuleVerdict::Selinux || self.rules.iter().any(|r| r.verdict == RuleVerdict::Selinux)
    }

    /// Decide one packet with no SELinux oracle: a `selinux` verdict is
    /// decided as a failed check (a denial). See [`decide_with`](Self::decide_with).
    pub fn decide(&self, f: &Facts<'_>, mode: Mode) -> Decision {
        self.decide_with(f, mode, None)
    }

    /// Decide one packet. `mode` is the effective global mode (the command
    /// line may override the file). A packet outside the policy's scope is
    /// accepted without consulting the rules (no hit, no audit record). A
    /// `selinux` verdict asks `oracle`; the policy's denial in a domain it
    /// runs permissive is let through and recorded, as any permissive denial.
    pub fn decide_with(&self, f: &Facts<'_>, mode: Mode, oracle: Option<&dyn AccessOracle>) -> Decision {
        if !self.in_scope(f.hook, f.pkt) {
            let verdict = Verdict::Accept;
            return Decision {
                verdict,
                table_verdict: verdict,
                rule: None,
                permissive: false,
                audit: false,
                selinux: None,
            };
        }
        let rule = self.first_match(f);
        let (rule_verdict, rule_permissive, rule_audit) = match rule.and_then(|i| self.rules.get(i)) {
            Some(r) => {
                r.hits.fetch_add(1, Ordering::Relaxed);
                (r.verdict, r.permissive, r.audit)
            }
            None => (self.default, false, false),
        };
        let (table_verdict, selinux) = match rule_verdict {
            RuleVerdict::Accept => (Verdict::Accept, None),
            RuleVerdict::Drop => (Verdict::Drop, None),
            RuleVerdict::Selinux => {
                let asked = ask(oracle, f);
                let allowed = matches!(asked, Asked::Answered(a) if a.allowed);
                (if allowed { Verdict::Accept } else { Verdict::Drop }, Some(asked))
            }
        };
        let mut d =
            self.finish(table_verdict, rule, rule_permissive, rule_audit, f.labels.source.context.type_(), mode);
        if let Some(asked) = selinux {
            d.selinux = Some(asked);
            // Recorded as libselinux's AVC would: denials unless the policy
            // says `dontaudit`, grants when it says `auditallow` (or the
            // rule says `audit = true`); a failed check always.
            d.audit = rule_audit || !matches!(asked, Asked::Answered(a) if !a.audited);
            if let Asked::Answered(a) = asked {
                if d.table_verdict == Verdict::Drop && a.permissive {
                    d.permissive = true;
                    d.verdict = Verdict::Accept;
                }
            }
        }
        d
    }

    /// The decision for a packet that could not be parsed.
    pub fn decide_malformed(&self, mode: Mode) -> Decision {
        self.finish(self.malformed, None, false, false, "", mode)
    }

    fn finish(
        &self,
        table_verdict: Verdict,
        rule: Option<usize>,
        rule_permissive: bool,
        rule_audit: bool,
        source_type: &str,
        mode: Mode,
    ) -> Decision {
        match table_verdict {
            Verdict::Accept => Decision {
                verdict: Verdict::Accept,
                table_verdict,
                rule,
                permissive: false,
                audit: rule_audit,
                selinux: None,
            },
            Verdict::Drop => {
                let permissive = mode == Mode::Permissive || rule_permissive || self.domain_permissive(source_type);
                Decision {
                    verdict: if permissive { Verdict::Accept } else { Verdict::Drop },
                    table_verdict,
                    rule,
                    permissive,
                    audit: true,
                    selinux: None,
                }
            }
        }
    }

    /// The name of a rule, or `default` for the default verdict.
    pub fn rule_name(&self, rule: Option<usize>) -> &str {
        rule.and_then(|i| self.rules.get(i)).map_or("default", |r| r.name.as_str())
    }
}

#[cfg(test)]
mod tests;
