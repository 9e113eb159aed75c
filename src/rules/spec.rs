//! What is queued: the policy's scope (or rules) turned into per-chain
//! [`Match`]es, widened past [`MAX_MATCHES`], with the queue numbers, flow
//! mode and fail-open choice: the [`RuleSpec`] both backends render.

use crate::packet::Proto;
use crate::policy::pattern::{NetSet, PortSet};
use crate::policy::{HookSel, Policy, RuleVerdict};
use ipnet::IpNet;
use std::fmt::Write as _;

/// Packet mark bits reserved for flow mode: labelgate answers an accepted
/// packet with `NF_REPEAT` and [`FLOW_MARK_ACCEPT`] set in them. The rules
/// of the hook it was queued at turn that bit into the hook's own
/// connection mark bit ([`Chain::flow_bit`]) and clear it, so a packet
/// accepted at one hook carries nothing to the next. Drops are not
/// remembered: a dropped first packet never confirms its connection, so a
/// retry is decided afresh.
pub const FLOW_MARK_MASK: u32 = 0x0060_0000;
/// Mark of a packet labelgate accepted (flow mode).
pub const FLOW_MARK_ACCEPT: u32 = 0x0020_0000;
/// With [`FLOW_MARK_ACCEPT`], on a packet accepted at OUTPUT: labelgate
/// also decided it as INPUT would and accepted it there too (a packet
/// between two local sockets, see `Engine::with_input_settling`); the
/// OUTPUT chain then sets the OUTPUT and the INPUT connection mark bits,
/// so the packet is not queued again at INPUT.
pub const FLOW_MARK_SETTLED: u32 = 0x0040_0000;
/// Connection mark bits reserved for flow mode: one per hook
/// ([`Chain::flow_bit`]), set when labelgate accepted the connection at
/// that hook. A hook's chain lets a connection pass without asking only on
/// its own bit: a connection accepted at OUTPUT is still decided at INPUT
/// (loopback), one accepted at PREROUTING still at FORWARD or INPUT.
pub const FLOW_CONNMARK_MASK: u32 = 0x03E0_0000;

/// Which firewall to generate for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nft,
}

/// Which address families to print or install (iptables: one family per
/// tool; nftables' `inet` table always covers both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only: iptables-restore input.
    Ipv4,
    /// IPv6 only: ip6tables-restore input.
    Ipv6,
    /// Both: a shell script feeding each family to its own tool.
    Both,
}

/// The address families a queue match applies to, from its addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Families {
    /// No address: both families.
    Both,
    V4,
    V6,
    /// Its addresses mix families: it can match nothing.
    Neither,
}

/// At most this many queue rules per chain and family: past it the matches
/// are widened (ports left out, then addresses), which queues more and
/// never less; the daemon accepts what it then receives outside the scope.
pub const MAX_MATCHES: usize = 256;

/// The conditions of one queue rule; an absent field matches anything.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Match {
    /// IP protocol number.
    pub proto: Option<u8>,
    pub dport: Option<(u16, u16)>,
    pub saddr: Option<IpNet>,
    pub daddr: Option<IpNet>,
}

impl Match {
    pub(super) const ALL: Match = Match { proto: None, dport: None, saddr: None, daddr: None };

    /// Whether every packet `o` matches, this one matches too.
    pub(super) fn covers(&self, o: &Match) -> bool {
        fn opt<T>(a: &Option<T>, b: &Option<T>, f: impl Fn(&T, &T) -> bool) -> bool {
            match (a, b) {
                (None, _) => true,
                (Some(a), Some(b)) => f(a, b),
                (Some(_), None) => false,
            }
        }
        opt(&self.proto, &o.proto, |a, b| a == b)
            && opt(&self.dport, &o.dport, |a, b| a.0 <= b.0 && b.1 <= a.1)
            && opt(&self.saddr, &o.saddr, |a, b| a.contains(b))
            && opt(&self.daddr, &o.daddr, |a, b| a.contains(b))
    }

    /// The address families the match can apply to.
    pub(super) fn families(&self) -> Families {
        match (self.saddr.map(|n| n.addr().is_ipv6()), self.daddr.map(|n| n.addr().is_ipv6())) {
            (Some(a), Some(b)) if a != b => Families::Neither,
            (Some(true), _) | (_, Some(true)) => Families::V6,
            (Some(false), _) | (_, Some(false)) => Families::V4,
            (None, None) => Families::Both,
        }
    }

    pub(super) fn in_family(&self, v6: bool) -> bool {
        match self.families() {
            Families::Both => true,
            Families::V4 => !v6,
            Families::V6 => v6,
            Families::Neither => false,
        }
    }

    /// Every combination of the given conditions (each `None` matches
    /// anything), widened first (ports left out, then addresses) if there
    /// would be more than [`MAX_MATCHES`].
    pub(super) fn expand(
        proto: Option<Proto>,
        dport: Option<&PortSet>,
        saddr: Option<&NetSet>,
        daddr: Option<&NetSet>,
        widened: &mut bool,
    ) -> Vec<Match> {
        let list = |n: Option<&NetSet>| n.map_or(vec![None], |n| n.0.iter().copied().map(Some).collect());
        let mut ports: Vec<Option<(u16, u16)>> =
            dport.map_or(vec![None], |p| p.ranges().iter().copied().map(Some).collect());
        let (mut s, mut d) = (list(saddr), list(daddr));
        if ports.len() > MAX_MATCHES {
            ports = vec![None];
            *widened = true;
        }
        if ports.len().saturating_mul(s.len()).saturating_mul(d.len()) > MAX_MATCHES {
            (s, d) = (vec![None], vec![None]);
            *widened = true;
        }
        let proto = proto.map(Proto::number);
        let mut out = Vec::new();
        for dport in &ports {
            for saddr in &s {
                for daddr in &d {
                    out.push(Match { proto, dport: *dport, saddr: *saddr, daddr: *daddr });
                }
            }
        }
        out
    }
}

/// Where the queued traffic was taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeSource {
    /// The policy's `[[scope]]` entries.
    Declared,
    /// No `[[scope]]` and `default = "accept"`: what the drop rules and the
    /// audited rules can match (nothing else can be decided differently
    /// from plain acceptance).
    Derived,
    /// No `[[scope]]` and `default = "drop"`: everything.
    Everything,
}

/// A chain labelgate queues from, one per netfilter hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    Input,
    Output,
    Forward,
    Prerouting,
    Postrouting,
}

impl Chain {
    /// Every chain, in the order the rules are written.
    pub const ALL: [Chain; 5] = [Chain::Input, Chain::Output, Chain::Forward, Chain::Prerouting, Chain::Postrouting];

    /// (built-in chain, labelgate chain, nft hook)
    pub(super) fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Chain::Input => ("INPUT", "LABELGATE_IN", "input"),
            Chain::Output => ("OUTPUT", "LABELGATE_OUT", "output"),
            Chain::Forward => ("FORWARD", "LABELGATE_FWD", "forward"),
            Chain::Prerouting => ("PREROUTING", "LABELGATE_PRE", "prerouting"),
            Chain::Postrouting => ("POSTROUTING", "LABELGATE_POST", "postrouting"),
        }
    }

    /// The iptables table holding the chain: `security` where it has the
    /// hook (after SECMARK labelling), `mangle` for PREROUTING and
    /// POSTROUTING, which `security` does not have (priority -150: before
    /// DNAT and SNAT, as labelgate's nft chains on those hooks).
    pub(super) fn table(self) -> &'static str {
        match self {
            Chain::Input | Chain::Output | Chain::Forward => "security",
            Chain::Prerouting | Chain::Postrouting => "mangle",
        }
    }

    /// The nft chain priority: after the security table (50) where it has
    /// the hook; on PREROUTING and POSTROUTING just after iptables' mangle
    /// (-150), before DNAT (-100) and SNAT (100), as the iptables rules.
    pub(super) fn nft_priority(self) -> &'static str {
        match self {
            Chain::Input | Chain::Output | Chain::Forward => "security + 10",
            Chain::Prerouting | Chain::Postrouting => "mangle + 10",
        }
    }

    /// The connection mark bit remembering that labelgate accepted the
    /// connection at this hook (flow mode); inside [`FLOW_CONNMARK_MASK`].
    pub fn flow_bit(self) -> u32 {
        match self {
            Chain::Output => 0x0020_0000,
            Chain::Input => 0x0040_0000,
            Chain::Forward => 0x0080_0000,
            Chain::Prerouting => 0x0100_0000,
            Chain::Postrouting => 0x0200_0000,
        }
    }

    /// Whether a rule or scope entry on `h` is decided at this chain's hook.
    pub(super) fn takes(self, h: HookSel) -> bool {
        h == HookSel::Any
            || h == match self {
                Chain::Input => HookSel::Input,
                Chain::Output => HookSel::Output,
                Chain::Forward => HookSel::Forward,
                Chain::Prerouting => HookSel::Prerouting,
                Chain::Postrouting => HookSel::Postrouting,
            }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    pub queues: Vec<u16>,
    /// Connmark fast path: queue only new and related packets, let the rest
    /// of an accepted flow pass (and drop the rest of a dropped one) in the kernel.
    pub flow: bool,
    /// Queue only the first packet of each connection (ignored in flow mode,
    /// which does that and more). Off: every packet is queued.
    pub new_only: bool,
    /// Fail open: let packets pass when no labelgate is bound to the queue
    /// (`--queue-bypass`); otherwise they are dropped.
    pub bypass: bool,
    /// The chains queued, each with the matches of its queue rules (never empty).
    pub chains: Vec<(Chain, Vec<Match>)>,
    pub source: ScopeSource,
    /// Whether some matches were widened (see [`MAX_MATCHES`]).
    pub widened: bool,
}

/// Sort, drop what another match covers, and widen past [`MAX_MATCHES`].
/// The ways a list too long is widened, in order: ports left out, then
/// addresses.
pub(super) const WIDEN: [fn(&mut Match); 2] = [|m| m.dport = None, |m| (m.saddr, m.daddr) = (None, None)];

/// Deduplicate `v`, widening it (all of it, from step `steps` of [`WIDEN`]
/// on) while it is longer than [`MAX_MATCHES`]; returns the steps now
/// applied. Widening part of the list early is what [`normalize`] would do
/// to the whole: a step applies when the list is too long after the
/// earlier ones, and a list too long has every longer list too long.
pub(super) fn squeeze(v: &mut Vec<Match>, mut steps: usize) -> usize {
    loop {
        v.retain(|m| m.families() != Families::Neither);
        v.sort_unstable();
        v.dedup();
        let Some(step) = WIDEN.get(steps).filter(|_| v.len() > MAX_MATCHES) else { return steps };
        v.iter_mut().for_each(step);
        steps += 1;
    }
}

pub(super) fn normalize(mut v: Vec<Match>) -> (Vec<Match>, bool) {
    v.retain(|m| m.families() != Families::Neither);
    let mut widened = false;
    for step in WIDEN {
        v.sort_unstable();
        v.dedup();
        if v.len() <= MAX_MATCHES {
            break;
        }
        widened = true;
        v.iter_mut().for_each(step);
    }
    v.sort_unstable();
    v.dedup();
    if v.contains(&Match::ALL) {
        return (vec![Match::ALL], widened);
    }
    let mut out: Vec<Match> = Vec::with_capacity(v.len());
    for (i, m) in v.iter().enumerate() {
        // Deduplicated: two distinct matches never cover each other.
        let covered = v.iter().enumerate().any(|(j, o)| j != i && o.covers(m));
        if !covered {
            out.push(m.clone());
        }
    }
    (out, widened)
}

impl RuleSpec {
    /// The queue rules for a policy: on the hooks its rules name (`any` or
    /// an empty policy: input and output), queueing what its scope covers
    /// (see [`ScopeSource`]).
    pub fn for_policy(p: &Policy, queues: Vec<u16>, flow: bool, bypass: bool) -> RuleSpec {
        let mut on = [false; Chain::ALL.len()];
        for r in &p.rules {
            for (c, on) in Chain::ALL.iter().zip(on.iter_mut()) {
                // `any` queues input and output only.
                let named = r.hook != HookSel::Any && c.takes(r.hook);
                *on |= named || (r.hook == HookSel::Any && matches!(c, Chain::Input | Chain::Output));
            }
        }
        if !on.iter().any(|o| *o) {
            on = Chain::ALL.map(|c| matches!(c, Chain::Input | Chain::Output));
        }
        let mut widened = false;
        // What each entry matches is expanded one entry at a time, chain by
        // chain, and the chain's list squeezed as it grows: a large policy
        // never holds every rule's expansion at once.
        type Entry<'a> = (HookSel, Option<Proto>, Option<&'a PortSet>, Option<&'a NetSet>, Option<&'a NetSet>);
        let (source, entries): (ScopeSource, Vec<Entry<'_>>) = match &p.scope {
            Some(scope) => (
                ScopeSource::Declared,
                scope.iter().map(|e| (e.hook, e.proto, e.dport.as_ref(), e.saddr.as_ref(), e.daddr.as_ref())).collect(),
            ),
            None if p.default == RuleVerdict::Accept => (
                ScopeSource::Derived,
                p.rules
                    .iter()
                    .filter(|r| r.verdict != RuleVerdict::Accept || r.audit)
                    .map(|r| (r.hook, r.proto, r.dport.get(), r.saddr.as_deref(), r.daddr.as_deref()))
                    .collect(),
            ),
            None => (ScopeSource::Everything, vec![(HookSel::Any, None, None, None, None)]),
        };
        let mut chains = Vec::new();
        for (chain, on) in Chain::ALL.into_iter().zip(on) {
            if !on {
                continue;
            }
            let (mut all, mut steps) = (Vec::new(), 0);
            for (_, proto, dport, saddr, daddr) in entries.iter().filter(|e| chain.takes(e.0)) {
                let mut m = Match::expand(*proto, *dport, *saddr, *daddr, &mut widened);
                m.retain(|m| m.families() != Families::Neither);
                m.iter_mut().for_each(|m| WIDEN.iter().take(steps).for_each(|w| w(m)));
                all.extend(m);
                if all.len() > 4 * MAX_MATCHES {
                    steps = squeeze(&mut all, steps);
                }
            }
            let (matches, w) = normalize(all);
            widened |= w || steps > 0;
            if !matches.is_empty() {
                chains.push((chain, matches));
            }
        }
        RuleSpec { queues, flow, new_only: true, bypass, chains, source, widened }
    }

    pub(super) fn iptables_target(&self) -> String {
        let mut t = match self.queues.as_slice() {
            [q] => format!("-j NFQUEUE --queue-num {q}"),
            [first, .., last] => {
                format!("-j NFQUEUE --queue-balance {first}:{last} --queue-cpu-fanout")
            }
            [] => "-j NFQUEUE --queue-num 0".to_string(),
        };
        if self.bypass {
            t.push_str(" --queue-bypass");
        }
        t
    }

    pub(super) fn nft_queue(&self) -> String {
        let mut flags = Vec::new();
        let num = match self.queues.as_slice() {
            [q] => q.to_string(),
            [first, .., last] => {
                flags.push("fanout");
                format!("{first}-{last}")
            }
            [] => "0".to_string(),
        };
        if self.bypass {
            flags.push("bypass");
        }
        if flags.is_empty() {
            format!("queue num {num}")
        } else {
            format!("queue flags {} to {num}", flags.join(","))
        }
    }

    /// Comment lines saying what is queued and what happens without labelgate.
    pub(super) fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# scope: {}",
            match self.source {
                ScopeSource::Declared => "the policy's [[scope]] entries; queued packets outside them are accepted",
                ScopeSource::Derived => {
                    "default accept and no [[scope]]: only what drop, selinux or audited rules can match"
                }
                ScopeSource::Everything => {
                    "EVERYTHING: default drop and no [[scope]]; every new connection on these hooks is queued"
                }
            }
        );
        if self.widened {
            let _ = writeln!(s, "# widened: more than {MAX_MATCHES} matches, so ports or addresses are left out");
        }
        if self.chains.is_empty() {
            s.push_str("# nothing to queue: the policy decides nothing differently from accepting\n");
        }
        s.push_str(if self.bypass {
            "# fail open (--queue-bypass): while no labelgate reads the queue, these packets pass unchecked\n"
        } else {
            "# fail closed (no --queue-bypass): while no labelgate reads the queue, these packets are dropped\n"
        });
        s
    }
}
