//! The compiled policy table and the decision: first matching rule wins,
//! looked up through a type index, with permissive modes applied.
//!
//! Owns rule semantics. It never reads the kernel: everything it decides on
//! arrives as a [`Facts`] value.

mod parse;
pub mod pattern;

pub use parse::{PolicyError, RawPolicy};
use pattern::{ContextPattern, IdSet, LevelCond, NetSet, PortSet};

use crate::labels::{Hook, Labels};
use crate::packet::{PacketInfo, Proto};
use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Drop,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        })
    }
}

/// Enforcing drops what the table denies; permissive records it and lets it pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforcing,
    Permissive,
}

/// Which hook a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookSel {
    Input,
    Output,
    Forward,
    Any,
}

impl HookSel {
    fn matches(self, h: Hook) -> bool {
        match self {
            HookSel::Any => true,
            HookSel::Input => matches!(h, Hook::Input | Hook::Prerouting),
            HookSel::Output => matches!(h, Hook::Output | Hook::Postrouting),
            HookSel::Forward => h == Hook::Forward,
        }
    }
}

/// An MLS relation required between the source and destination contexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlsRelation {
    /// The source's low level dominates the destination's low level.
    SourceDominatesDest,
    /// The destination's low level dominates the source's low level.
    DestDominatesSource,
    /// The low levels are equal.
    Equal,
    /// The source's whole range lies within the destination's range.
    SourceWithinDest,
}

/// A static label for remote addresses (like NetLabel's static labels).
#[derive(Clone, Debug)]
pub struct AddressLabel {
    pub net: IpNet,
    pub context: crate::context::SecurityContext,
}

/// How a CIPSO/CALIPSO DOI maps to MLS levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoiMap {
    /// Levels and categories are taken as they are (NetLabel's `pass`).
    Pass,
}

/// One compiled rule. Context patterns and level conditions are shared
/// (`Arc`) among the rules that write them the same way.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub hook: HookSel,
    pub source: Option<Arc<ContextPattern>>,
    pub dest: Option<Arc<ContextPattern>>,
    pub secmark: Option<Arc<ContextPattern>>,
    pub peer: Option<Arc<ContextPattern>>,
    pub source_level: Option<Arc<LevelCond>>,
    pub dest_level: Option<Arc<LevelCond>>,
    pub peer_level: Option<Arc<LevelCond>>,
    pub mls: Option<MlsRelation>,
    pub uid: Option<IdSet>,
    pub gid: Option<IdSet>,
    pub proto: Option<Proto>,
    pub sport: Option<PortSet>,
    pub dport: Option<PortSet>,
    pub saddr: Option<NetSet>,
    pub daddr: Option<NetSet>,
    pub iif: Option<Box<str>>,
    pub oif: Option<Box<str>>,
    pub verdict: Verdict,
    pub permissive: bool,
    pub audit: bool,
    /// Line of the rule in the policy file.
    pub line: usize,
    pub hits: AtomicU64,
}

/// The facts a decision is made on.
pub struct Facts<'a> {
    pub hook: Hook,
    pub pkt: &'a PacketInfo,
    pub labels: &'a Labels,
    /// Interface names, looked up only when a rule needs them.
    pub iif: &'a dyn Fn() -> Option<String>,
    pub oif: &'a dyn Fn() -> Option<String>,
}

/// Why a rule did not match (for `explain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    Hook,
    Proto,
    Sport,
    Dport,
    Saddr,
    Daddr,
    Uid,
    Gid,
    Iif,
    Oif,
    Source,
    Dest,
    Secmark,
    Peer,
    SourceLevel,
    DestLevel,
    PeerLevel,
    Mls,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Mismatch::Hook => "hook",
            Mismatch::Proto => "proto",
            Mismatch::Sport => "sport",
            Mismatch::Dport => "dport",
            Mismatch::Saddr => "saddr",
            Mismatch::Daddr => "daddr",
            Mismatch::Uid => "uid",
            Mismatch::Gid => "gid",
            Mismatch::Iif => "iif",
            Mismatch::Oif => "oif",
            Mismatch::Source => "source",
            Mismatch::Dest => "dest",
            Mismatch::Secmark => "secmark",
            Mismatch::Peer => "peer",
            Mismatch::SourceLevel => "source_level",
            Mismatch::DestLevel => "dest_level",
            Mismatch::PeerLevel => "peer_level",
            Mismatch::Mls => "mls",
        };
        f.write_str(s)
    }
}

fn level_ok(cond: &Option<Arc<LevelCond>>, ctx: Option<&crate::context::SecurityContext>) -> bool {
    match cond {
        None => true,
        Some(c) => ctx.and_then(|c| c.range()).is_some_and(|r| c.matches(r)),
    }
}

fn check(ok: bool, why: Mismatch) -> Result<(), Mismatch> {
    if ok {
        Ok(())
    } else {
        Err(why)
    }
}

impl Rule {
    /// Whether the rule matches; on a miss, the first condition that failed.
    pub fn check(&self, f: &Facts<'_>) -> Result<(), Mismatch> {
        let l = f.labels;
        let p = f.pkt;
        check(self.hook.matches(f.hook), Mismatch::Hook)?;
        check(self.proto.is_none_or(|x| x == p.proto), Mismatch::Proto)?;
        check(self.sport.as_ref().is_none_or(|s| p.sport.is_some_and(|v| s.contains(v))), Mismatch::Sport)?;
        check(self.dport.as_ref().is_none_or(|s| p.dport.is_some_and(|v| s.contains(v))), Mismatch::Dport)?;
        check(self.saddr.as_ref().is_none_or(|s| s.contains(&p.src)), Mismatch::Saddr)?;
        check(self.daddr.as_ref().is_none_or(|s| s.contains(&p.dst)), Mismatch::Daddr)?;
        check(self.uid.as_ref().is_none_or(|s| l.uid.is_some_and(|u| s.contains(u))), Mismatch::Uid)?;
        check(self.gid.as_ref().is_none_or(|s| l.gid.is_some_and(|g| s.contains(g))), Mismatch::Gid)?;
        check(self.iif.as_ref().is_none_or(|n| (f.iif)().as_deref() == Some(&**n)), Mismatch::Iif)?;
        check(self.oif.as_ref().is_none_or(|n| (f.oif)().as_deref() == Some(&**n)), Mismatch::Oif)?;
        check(self.source.as_ref().is_none_or(|c| c.matches(&l.source.context)), Mismatch::Source)?;
        check(self.dest.as_ref().is_none_or(|c| c.matches(&l.dest.context)), Mismatch::Dest)?;
        check(
            self.secmark.as_ref().is_none_or(|c| l.secmark.as_ref().is_some_and(|s| c.matches(s))),
            Mismatch::Secmark,
        )?;
        check(
            self.peer.as_ref().is_none_or(|c| l.peer.as_ref().is_some_and(|s| c.matches(&s.context))),
            Mismatch::Peer,
        )?;
        check(level_ok(&self.source_level, Some(&l.source.context)), Mismatch::SourceLevel)?;
        check(level_ok(&self.dest_level, Some(&l.dest.context)), Mismatch::DestLevel)?;
        check(level_ok(&self.peer_level, l.peer.as_ref().map(|p| &p.context)), Mismatch::PeerLevel)?;
        if let Some(rel) = self.mls {
            let ok = match (l.source.context.range(), l.dest.context.range()) {
                (Some(s), Some(d)) => match rel {
                    MlsRelation::SourceDominatesDest => s.low().dominates(d.low()),
                    MlsRelation::DestDominatesSource => d.low().dominates(s.low()),
                    MlsRelation::Equal => s.low() == d.low(),
                    MlsRelation::SourceWithinDest => d.contains_range(s),
                },
                _ => false,
            };
            check(ok, Mismatch::Mls)?;
        }
        Ok(())
    }
}

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
}

/// A compiled, immutable policy.
#[derive(Debug)]
pub struct Policy {
    pub mode: Mode,
    pub default: Verdict,
    pub malformed: Verdict,
    pub permissive_domains: Vec<String>,
    pub rules: Vec<Rule>,
    pub address_labels: Vec<AddressLabel>,
    pub dois: HashMap<u32, DoiMap>,
    pub sets: HashMap<String, Vec<String>>,
    index: Index,
}

/// Rules grouped by the source (or, failing that, destination) type they name,
/// so a decision looks only at rules that can match.
#[derive(Debug, Default)]
struct Index {
    by_source: HashMap<Box<str>, Vec<u32>>,
    by_dest: HashMap<Box<str>, Vec<u32>>,
    wild: Vec<u32>,
}

impl Index {
    fn build(rules: &[Rule]) -> Index {
        let mut ix = Index::default();
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            let src = r.source.as_ref().and_then(|p| p.type_.named_types());
            let dst = r.dest.as_ref().and_then(|p| p.type_.named_types());
            match (src, dst) {
                (Some(types), _) => {
                    for t in types {
                        ix.by_source.entry(t.into()).or_default().push(i);
                    }
                }
                (None, Some(types)) => {
                    for t in types {
                        ix.by_dest.entry(t.into()).or_default().push(i);
                    }
                }
                (None, None) => ix.wild.push(i),
            }
        }
        ix
    }
}

/// Visit the union of up to three ascending index lists in ascending order.
fn merged<'a>(a: &'a [u32], b: &'a [u32], c: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
    let (mut i, mut j, mut k) = (0, 0, 0);
    std::iter::from_fn(move || {
        let x = a.get(i).copied().unwrap_or(u32::MAX);
        let y = b.get(j).copied().unwrap_or(u32::MAX);
        let z = c.get(k).copied().unwrap_or(u32::MAX);
        let m = x.min(y).min(z);
        if m == u32::MAX {
            return None;
        }
        if x == m {
            i += 1;
        }
        if y == m {
            j += 1;
        }
        if z == m {
            k += 1;
        }
        Some(m)
    })
}

impl Policy {
    /// Read and compile a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        parse::load(path)
    }

    /// Compile policy text; `origin` names it in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        parse::compile(text, origin)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        mode: Mode,
        default: Verdict,
        malformed: Verdict,
        permissive_domains: Vec<String>,
        rules: Vec<Rule>,
        address_labels: Vec<AddressLabel>,
        dois: HashMap<u32, DoiMap>,
        sets: HashMap<String, Vec<String>>,
    ) -> Policy {
        let index = Index::build(&rules);
        Policy { mode, default, malformed, permissive_domains, rules, address_labels, dois, sets, index }
    }

    /// Indices of the rules that could match, in rule order.
    pub fn candidates<'a>(&'a self, labels: &Labels) -> impl Iterator<Item = u32> + 'a {
        let s = self.index.by_source.get(labels.source.context.type_()).map_or(&[][..], |v| v);
        let d = self.index.by_dest.get(labels.dest.context.type_()).map_or(&[][..], |v| v);
        merged(s, d, &self.index.wild)
    }

    /// The first matching rule, if any.
    pub fn first_match(&self, f: &Facts<'_>) -> Option<usize> {
        self.candidates(f.labels).map(|i| i as usize).find(|&i| self.rules.get(i).is_some_and(|r| r.check(f).is_ok()))
    }

    /// Whether a source domain runs permissive.
    pub fn domain_permissive(&self, source_type: &str) -> bool {
        self.permissive_domains.iter().any(|d| d == source_type)
    }

    /// Decide one packet. `mode` is the effective global mode (the command
    /// line may override the file).
    pub fn decide(&self, f: &Facts<'_>, mode: Mode) -> Decision {
        let rule = self.first_match(f);
        let (table_verdict, rule_permissive, rule_audit) = match rule.and_then(|i| self.rules.get(i)) {
            Some(r) => {
                r.hits.fetch_add(1, Ordering::Relaxed);
                (r.verdict, r.permissive, r.audit)
            }
            None => (self.default, false, false),
        };
        self.finish(table_verdict, rule, rule_permissive, rule_audit, f.labels.source.context.type_(), mode)
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
            Verdict::Accept => {
                Decision { verdict: Verdict::Accept, table_verdict, rule, permissive: false, audit: rule_audit }
            }
            Verdict::Drop => {
                let permissive = mode == Mode::Permissive || rule_permissive || self.domain_permissive(source_type);
                Decision {
                    verdict: if permissive { Verdict::Accept } else { Verdict::Drop },
                    table_verdict,
                    rule,
                    permissive,
                    audit: true,
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
