//! The policy's vocabulary: verdicts and modes, one compiled [`Rule`] with
//! its conditions, the [`Facts`] a rule is checked against and the
//! [`Mismatch`] that says why it missed. The parser builds these; the table
//! in `mod.rs` indexes and decides with them.

use super::pattern::{ContextPattern, IdSet, LevelCond, NetSet, PortCond, PortSet, ProcessCond, ProcessField};
use crate::labels::{Hook, Labels};
use crate::packet::{PacketInfo, Proto};
use ipnet::IpNet;
use std::fmt;
use std::sync::atomic::AtomicU64;
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

/// What a rule (or the policy's `default`) decides: a verdict of its own,
/// or `selinux`: ask the loaded SELinux policy whether the source context
/// may do the hook's permission (`send`, `recv`, `forward`) on the
/// destination context in class `labelgate_flow` (see [`crate::sepolicy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleVerdict {
    Accept,
    Drop,
    Selinux,
}

impl fmt::Display for RuleVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleVerdict::Accept => "accept",
            RuleVerdict::Drop => "drop",
            RuleVerdict::Selinux => "selinux",
        })
    }
}

/// What the loaded SELinux policy answered a `selinux` verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// The policy's answer.
    Answered(crate::sepolicy::Answer),
    /// The policy could not be asked (SELinux inactive, class missing, the
    /// check failed): decided as a denial, never let through silently.
    Failed,
}

/// Enforcing drops what the table denies; permissive records it and lets it pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforcing,
    Permissive,
}

/// Which hook a rule (or scope entry) applies to: a named hook matches the
/// packets queued at that hook only (a packet queued at PREROUTING is not
/// an `input` packet, even when it is then delivered locally); `any`
/// matches every hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookSel {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Any,
}

impl HookSel {
    pub(super) fn matches(self, h: Hook) -> bool {
        match self {
            HookSel::Any => true,
            HookSel::Prerouting => h == Hook::Prerouting,
            HookSel::Input => h == Hook::Input,
            HookSel::Forward => h == Hook::Forward,
            HookSel::Output => h == Hook::Output,
            HookSel::Postrouting => h == Hook::Postrouting,
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

/// One compiled rule. Context patterns, level conditions and port, id and
/// address sets are shared (`Arc`) among the rules that write them the same
/// way, and the conditions few rules use live out of line in [`RareConds`],
/// so a rule is 112 bytes (at 100,000 rules memory is a budget: see
/// docs/PERFORMANCE.md).
#[derive(Debug)]
pub struct Rule {
    pub name: compact_str::CompactString,
    pub source: Option<Arc<ContextPattern>>,
    pub dest: Option<Arc<ContextPattern>>,
    pub uid: Option<Arc<IdSet>>,
    /// Held inline: most port sets are one port, and most differ per rule.
    pub dport: PortCond,
    pub saddr: Option<Arc<NetSet>>,
    pub daddr: Option<Arc<NetSet>>,
    /// The rarely written conditions; `None` when the rule has none of them.
    pub rare: Option<Box<RareConds>>,
    pub hits: AtomicU64,
    /// Line of the rule in the policy file.
    pub line: u32,
    pub hook: HookSel,
    pub proto: Option<Proto>,
    pub verdict: RuleVerdict,
    pub permissive: bool,
    pub audit: bool,
}

/// The conditions of a rule that few rules write.
#[derive(Debug, Default, PartialEq)]
pub struct RareConds {
    pub sport: Option<PortSet>,
    pub secmark: Option<Arc<ContextPattern>>,
    pub peer: Option<Arc<ContextPattern>>,
    pub source_level: Option<Arc<LevelCond>>,
    pub dest_level: Option<Arc<LevelCond>>,
    pub peer_level: Option<Arc<LevelCond>>,
    pub mls: Option<MlsRelation>,
    pub gid: Option<Arc<IdSet>>,
    pub iif: Option<Box<str>>,
    pub oif: Option<Box<str>>,
    /// What the source end's process must be (`source_exe`, `source_unit`,
    /// `source_cgroup`, `source_container`).
    pub source_process: Option<Arc<ProcessCond>>,
    /// The same for the destination end (`dest_*`).
    pub dest_process: Option<Arc<ProcessCond>>,
}

static NO_RARE: RareConds = RareConds {
    sport: None,
    secmark: None,
    peer: None,
    source_level: None,
    dest_level: None,
    peer_level: None,
    mls: None,
    gid: None,
    iif: None,
    oif: None,
    source_process: None,
    dest_process: None,
};

impl RareConds {
    /// Boxed if any condition is set (a rule without any stores nothing).
    pub fn boxed(self) -> Option<Box<RareConds>> {
        (self != NO_RARE).then(|| Box::new(self))
    }
}

impl Rule {
    /// The rule's rare conditions (all `None` when it has none).
    pub fn rare(&self) -> &RareConds {
        self.rare.as_deref().unwrap_or(&NO_RARE)
    }
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
    /// A `source_*` process key; which one.
    SourceProcess(ProcessField),
    /// A `dest_*` process key; which one.
    DestProcess(ProcessField),
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
            Mismatch::SourceProcess(k) => match k {
                ProcessField::Exe => "source_exe",
                ProcessField::Unit => "source_unit",
                ProcessField::Cgroup => "source_cgroup",
                ProcessField::Container => "source_container",
            },
            Mismatch::DestProcess(k) => match k {
                ProcessField::Exe => "dest_exe",
                ProcessField::Unit => "dest_unit",
                ProcessField::Cgroup => "dest_cgroup",
                ProcessField::Container => "dest_container",
            },
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
        let rare = self.rare();
        check(self.hook.matches(f.hook), Mismatch::Hook)?;
        check(self.proto.is_none_or(|x| x == p.proto), Mismatch::Proto)?;
        check(rare.sport.as_ref().is_none_or(|s| p.sport.is_some_and(|v| s.contains(v))), Mismatch::Sport)?;
        check(self.dport.get().is_none_or(|s| p.dport.is_some_and(|v| s.contains(v))), Mismatch::Dport)?;
        check(self.saddr.as_ref().is_none_or(|s| s.contains(&p.src)), Mismatch::Saddr)?;
        check(self.daddr.as_ref().is_none_or(|s| s.contains(&p.dst)), Mismatch::Daddr)?;
        check(self.uid.as_ref().is_none_or(|s| l.uid.is_some_and(|u| s.contains(u))), Mismatch::Uid)?;
        check(rare.gid.as_ref().is_none_or(|s| l.gid.is_some_and(|g| s.contains(g))), Mismatch::Gid)?;
        check(rare.iif.as_ref().is_none_or(|n| (f.iif)().as_deref() == Some(&**n)), Mismatch::Iif)?;
        check(rare.oif.as_ref().is_none_or(|n| (f.oif)().as_deref() == Some(&**n)), Mismatch::Oif)?;
        check(self.source.as_ref().is_none_or(|c| c.matches(&l.source.context)), Mismatch::Source)?;
        check(self.dest.as_ref().is_none_or(|c| c.matches(&l.dest.context)), Mismatch::Dest)?;
        check(
            rare.secmark.as_ref().is_none_or(|c| l.secmark.as_ref().is_some_and(|s| c.matches(s))),
            Mismatch::Secmark,
        )?;
        check(
            rare.peer.as_ref().is_none_or(|c| l.peer.as_ref().is_some_and(|s| c.matches(&s.context))),
            Mismatch::Peer,
        )?;
        check(level_ok(&rare.source_level, Some(&l.source.context)), Mismatch::SourceLevel)?;
        check(level_ok(&rare.dest_level, Some(&l.dest.context)), Mismatch::DestLevel)?;
        check(level_ok(&rare.peer_level, l.peer.as_ref().map(|p| &p.context)), Mismatch::PeerLevel)?;
        if let Some(rel) = rare.mls {
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
        // Checked last, on the few rules that name them: string work only
        // for rules the cheaper conditions left standing.
        if let Some(c) = &rare.source_process {
            c.check(l.source_process.as_ref()).map_err(Mismatch::SourceProcess)?;
        }
        if let Some(c) = &rare.dest_process {
            c.check(l.dest_process.as_ref()).map_err(Mismatch::DestProcess)?;
        }
        Ok(())
    }
}
