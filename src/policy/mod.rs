//! The compiled policy table and the decision: first matching rule wins,
//! looked up through a type index, with permissive modes applied.
//!
//! Owns rule semantics. It never reads the kernel: everything it decides on
//! arrives as a [`Facts`] value.

mod parse;
pub mod pattern;
mod rule;
mod scope;

pub use parse::{excerpt, open_policy, resolve_id, IdError, PolicyError, RawPolicy, MAX_POLICY_BYTES, MAX_RULE_NAME};
pub use rule::{
    AddressLabel, Asked, DoiMap, Facts, HookSel, Mismatch, MlsRelation, Mode, RareConds, Rule, RuleVerdict, Verdict,
};
pub use scope::ScopeEntry;

use crate::labels::{Hook, Labels};
use crate::packet::{PacketInfo, Proto};
use crate::sepolicy::AccessOracle;
use std::collections::HashMap;
use std::fmt;
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
    pub default: RuleVerdict,
    pub malformed: Verdict,
    pub permissive_domains: Vec<String>,
    pub rules: Vec<Rule>,
    pub address_labels: Vec<AddressLabel>,
    pub dois: HashMap<u32, DoiMap>,
    pub sets: HashMap<String, Vec<String>>,
    /// The `[[scope]]` entries; `None` when the policy declares none (it
    /// then governs every packet queued to it).
    pub scope: Option<Vec<ScopeEntry>>,
    /// Digest of the policy text as loaded, put in every record, the
    /// metrics and the start and reload log lines.
    pub digest: PolicyDigest,
    index: Index,
}

/// The first 8 bytes of the SHA-256 of a policy file's bytes as loaded,
/// printed `sha256:<16 hex digits>`: enough to tell apart the policies a
/// fleet of hosts enforces (`sha256sum FILE | cut -c1-16` gives the same
/// digits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyDigest([u8; 8]);

impl PolicyDigest {
    /// The digest of policy bytes.
    pub fn of(bytes: &[u8]) -> PolicyDigest {
        use sha2::Digest as _;
        let full = sha2::Sha256::digest(bytes);
        let mut d = [0u8; 8];
        d.iter_mut().zip(full.iter()).for_each(|(a, b)| *a = *b);
        PolicyDigest(d)
    }

    /// The digest of a regular file's bytes, read in pieces (a policy of
    /// 100,000 rules is never held whole for it).
    fn of_file(mut file: &std::fs::File) -> std::io::Result<PolicyDigest> {
        use sha2::Digest as _;
        use std::io::{Read as _, Seek as _};
        file.rewind()?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let full = h.finalize();
        let mut d = [0u8; 8];
        d.iter_mut().zip(full.iter()).for_each(|(a, b)| *a = *b);
        Ok(PolicyDigest(d))
    }
}

impl fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What identifies one version of a file without reading it: a change of
/// contents between two of these changes the modification or change time.
fn file_version(m: &std::fs::Metadata) -> (u64, u64, u64, i64, i64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
}

/// Rules grouped by the types their source and destination patterns name, so
/// a decision looks only at rules that can match. A rule naming both a
/// source and a destination type is listed under each (source, dest) pair it
/// names; one naming only a source type under each source type, likewise for
/// dest; the rest (naming neither) are in `wild`. A packet's candidates are
/// then the lists under (its source, its dest), its source alone, its dest
/// alone, and `wild`: every rule that can match it is in exactly one of them.
///
/// Type names are interned to dense ids; all lists are spans of one flat
/// vector, so there is no allocation per type or per pair (at 100,000 rules
/// and 70,000 distinct pairs the index is about 1.3 MiB).
#[derive(Debug, Default)]
struct Index {
    /// Every type a source or destination pattern names, to its id.
    types: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    /// By type id: the lists of rules naming it.
    by_type: Vec<TypeLists>,
    /// The pair lists, grouped by source type, by dest id within a group.
    pairs: Vec<PairList>,
    /// Rule indices, grouped by list, ascending within each list.
    lists: Vec<u32>,
    /// Rules naming no source and no destination type, ascending.
    wild: Vec<u32>,
    /// Hook, protocol and destination ports of each rule of `wild`, in the
    /// same order: every packet scans `wild`, and with these beside it the
    /// scan reads one dense array instead of one rule each (at 100,000
    /// rules, each in its own cold cache line).
    wild_pre: Vec<Prefilter>,
}

/// What can be told about a rule from the packet's hook, protocol and
/// destination port alone: a rule it refuses cannot match (a rule it admits
/// may still not).
#[derive(Clone, Copy, Debug)]
struct Prefilter {
    hook: HookSel,
    proto: Option<Proto>,
    /// The hull of the rule's destination ports; (0, 65535) when it has
    /// no dport condition.
    dport: (u16, u16),
}

impl Prefilter {
    fn of(r: &Rule) -> Prefilter {
        let dport = r.dport.get().map_or((0, u16::MAX), |p| {
            let rs = p.ranges();
            (rs.iter().map(|r| r.0).min().unwrap_or(0), rs.iter().map(|r| r.1).max().unwrap_or(u16::MAX))
        });
        Prefilter { hook: r.hook, proto: r.proto, dport }
    }

    fn admits(&self, f: &Facts<'_>) -> bool {
        self.hook.matches(f.hook)
            && self.proto.is_none_or(|p| p == f.pkt.proto)
            && (self.dport == (0, u16::MAX) || f.pkt.dport.is_some_and(|d| self.dport.0 <= d && d <= self.dport.1))
    }
}

/// A run of `Index::lists` or `Index::pairs`.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of<T>(self, v: &[T]) -> &[T] {
        v.get(self.start as usize..self.start as usize + self.len as usize).unwrap_or(&[])
    }
}

/// The lists of one type.
#[derive(Clone, Copy, Debug, Default)]
struct TypeLists {
    /// Rules naming this source type and no dest type.
    source: Span,
    /// Rules naming this dest type and no source type.
    dest: Span,
    /// This source type's pair lists in `Index::pairs`.
    pairs: Span,
}

/// The rules naming one (source, dest) pair; the source is the group's.
#[derive(Clone, Copy, Debug)]
struct PairList {
    dest: u32,
    rules: Span,
}

/// The id of "no type named" on one side of an index entry.
const NO_TYPE: u32 = u32::MAX;

/// A rule naming more (source, dest) type pairs than this (two large sets)
/// is listed under the types of its smaller side alone instead, so a rule
/// never costs more index entries than this or the types it names.
const MAX_PAIRS: usize = 64;

/// The types a rule is indexed under, on each side; `None` for a side it
/// is not indexed by.
fn index_keys(r: &Rule) -> (Option<Vec<&str>>, Option<Vec<&str>>) {
    let src = r.source.as_ref().and_then(|p| p.type_.named_types());
    let dst = r.dest.as_ref().and_then(|p| p.type_.named_types());
    match (src, dst) {
        // Too many pairs: keep only the smaller side (still sound: the rule
        // matches only packets whose type on that side it names).
        (Some(s), Some(d)) if s.len().saturating_mul(d.len()) > MAX_PAIRS => {
            if s.len() <= d.len() {
                (Some(s), None)
            } else {
                (None, Some(d))
            }
        }
        other => other,
    }
}

fn intern(types: &mut HashMap<Box<str>, u32, foldhash::fast::RandomState>, t: &str) -> u32 {
    if let Some(&id) = types.get(t) {
        return id;
    }
    let id = types.len() as u32;
    types.insert(t.into(), id);
    id
}

impl Index {
    fn build(rules: &[Rule]) -> Index {
        let mut ix = Index::default();
        // Counted first so the (transient) entry vector is allocated once.
        let n: usize = rules
            .iter()
            .map(|r| match index_keys(r) {
                (None, None) => 0,
                (s, d) => s.map_or(1, |s| s.len()) * d.map_or(1, |d| d.len()),
            })
            .sum();
        let mut entries: Vec<(u32, u32, u32)> = Vec::with_capacity(n);
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            match index_keys(r) {
                (None, None) => {
                    ix.wild.push(i);
                    ix.wild_pre.push(Prefilter::of(r));
                }
                (Some(s), None) => s.into_iter().for_each(|t| entries.push((intern(&mut ix.types, t), NO_TYPE, i))),
                (None, Some(d)) => d.into_iter().for_each(|t| entries.push((NO_TYPE, intern(&mut ix.types, t), i))),
                (Some(s), Some(d)) => {
                    for a in &s {
                        let a = intern(&mut ix.types, a);
                        d.iter().for_each(|b| entries.push((a, intern(&mut ix.types, b), i)));
                    }
                }
            }
        }
        ix.types.shrink_to_fit();
        ix.wild.shrink_to_fit();
        ix.wild_pre.shrink_to_fit();
        entries.sort_unstable();
        entries.dedup();
        let groups = entries.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1));
        let n_pairs = groups.clone().filter(|g| g.first().is_some_and(|e| e.0 != NO_TYPE && e.1 != NO_TYPE)).count();
        ix.pairs = Vec::with_capacity(n_pairs);
        ix.lists = Vec::with_capacity(entries.len());
        ix.by_type = vec![TypeLists::default(); ix.types.len()];
        for group in groups {
            let Some(&(s, d, _)) = group.first() else { continue };
            let rules = Span { start: ix.lists.len() as u32, len: group.len() as u32 };
            ix.lists.extend(group.iter().map(|e| e.2));
            if s == NO_TYPE {
                if let Some(t) = ix.by_type.get_mut(d as usize) {
                    t.dest = rules;
                }
            } else if let Some(t) = ix.by_type.get_mut(s as usize) {
                if d == NO_TYPE {
                    t.source = rules;
                } else {
                    // Sorted by source, then dest: this source's pairs are contiguous.
                    if t.pairs.len == 0 {
                        t.pairs.start = ix.pairs.len() as u32;
                    }
                    t.pairs.len += 1;
                    ix.pairs.push(PairList { dest: d, rules });
                }
            }
        }
        ix
    }

    /// The candidate lists for a packet's source and dest types: the pair's,
    /// the source's, the dest's, and the wild rules.
    fn lists(&self, source: &str, dest: &str) -> [&[u32]; 4] {
        let s = self.types.get(source).and_then(|&id| self.by_type.get(id as usize));
        let d_id = self.types.get(dest).copied();
        let d = d_id.and_then(|id| self.by_type.get(id as usize));
        let pair = match (s, d_id) {
            (Some(s), Some(d_id)) => {
                let ps = s.pairs.of(&self.pairs);
                ps.binary_search_by_key(&d_id, |p| p.dest)
                    .ok()
                    .and_then(|i| ps.get(i))
                    .map_or(&[][..], |p| p.rules.of(&self.lists))
            }
            _ => &[],
        };
        [
            pair,
            s.map_or(&[][..], |s| s.source.of(&self.lists)),
            d.map_or(&[][..], |d| d.dest.of(&self.lists)),
            &self.wild,
        ]
    }
}

/// Visit the union of ascending index lists in ascending order.
struct Merged<'a, const N: usize> {
    lists: [&'a [u32]; N],
}

impl<const N: usize> Iterator for Merged<'_, N> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let m = self.lists.iter().filter_map(|l| l.first()).min().copied()?;
        for l in &mut self.lists {
            if let Some((&x, rest)) = l.split_first() {
                if x == m {
                    *l = rest;
                }
            }
        }
        Some(m)
    }
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
            let mut p = Policy::assemble(parse::load_from(path, &file)?);
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
        let mut p = Policy::assemble(parse::compile(text, origin)?);
        p.digest = PolicyDigest::of(text.as_bytes());
        Ok(p)
    }

    /// The table for a compiled policy: its rules indexed, its digest not
    /// yet taken.
    fn assemble(parts: parse::Compiled) -> Policy {
        let parse::Compiled { mode, default, malformed, permissive_domains, rules, address_labels, dois, sets, scope } =
            parts;
        let index = Index::build(&rules);
        Policy {
            mode,
            default,
            malformed,
            permissive_domains,
            rules,
            address_labels,
            dois,
            sets,
            scope,
            digest: PolicyDigest::default(),
            index,
        }
    }

    /// Indices of the rules that could match, in rule order.
    pub fn candidates<'a>(&'a self, labels: &Labels) -> impl Iterator<Item = u32> + 'a {
        Merged { lists: self.index.lists(labels.source.context.type_(), labels.dest.context.type_()) }
    }

    /// The first matching rule, if any: the candidates in rule order, the
    /// rules naming no type only if their [`Prefilter`] admits the packet.
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

#[cfg(test)]
mod digest_tests {
    use super::*;

    #[test]
    fn digest_is_of_the_bytes_loaded() {
        // `printf 'mode = "permissive"\n' | sha256sum | cut -c1-16`
        let text = "mode = \"permissive\"\n";
        assert_eq!(Policy::from_toml(text, "t").unwrap().digest.to_string(), "sha256:716159393d62e3f6");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        assert_eq!(Policy::load(&path).unwrap().digest.to_string(), "sha256:716159393d62e3f6");
        std::fs::write(&path, "mode = \"permissive\"\n\n").unwrap();
        assert_ne!(Policy::load(&path).unwrap().digest.to_string(), "sha256:716159393d62e3f6");
    }
}
