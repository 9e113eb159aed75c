//! Generation, installation and removal of the firewall rules that divert
//! packets to labelgate's queues, for iptables and nftables.
//!
//! labelgate only ever touches its own chains (iptables: `LABELGATE_*` in the
//! `security` table, jumped to from the built-in chains) or its own table
//! (nftables: `inet labelgate`); other rules are left as they are.

use crate::packet::Proto;
use crate::policy::pattern::{NetSet, PortSet};
use crate::policy::{HookSel, Policy, RuleVerdict};
use ipnet::IpNet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Packet/connection mark bits reserved for flow mode. Drops are not
/// remembered: a dropped first packet never confirms its connection, so a
/// retry is decided afresh.
pub const FLOW_MARK_MASK: u32 = 0x0060_0000;
/// Mark of a flow labelgate accepted.
pub const FLOW_MARK_ACCEPT: u32 = 0x0020_0000;

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
enum Families {
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
    const ALL: Match = Match { proto: None, dport: None, saddr: None, daddr: None };

    /// Whether every packet `o` matches, this one matches too.
    fn covers(&self, o: &Match) -> bool {
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
    fn families(&self) -> Families {
        match (self.saddr.map(|n| n.addr().is_ipv6()), self.daddr.map(|n| n.addr().is_ipv6())) {
            (Some(a), Some(b)) if a != b => Families::Neither,
            (Some(true), _) | (_, Some(true)) => Families::V6,
            (Some(false), _) | (_, Some(false)) => Families::V4,
            (None, None) => Families::Both,
        }
    }

    fn in_family(&self, v6: bool) -> bool {
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
    fn expand(
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

/// A chain labelgate queues from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    Input,
    Output,
    Forward,
}

impl Chain {
    /// (built-in chain, labelgate chain, nft hook)
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Chain::Input => ("INPUT", "LABELGATE_IN", "input"),
            Chain::Output => ("OUTPUT", "LABELGATE_OUT", "output"),
            Chain::Forward => ("FORWARD", "LABELGATE_FWD", "forward"),
        }
    }

    fn takes(self, h: HookSel) -> bool {
        match self {
            Chain::Input => matches!(h, HookSel::Input | HookSel::Any),
            Chain::Output => matches!(h, HookSel::Output | HookSel::Any),
            Chain::Forward => matches!(h, HookSel::Forward | HookSel::Any),
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
const WIDEN: [fn(&mut Match); 2] = [|m| m.dport = None, |m| (m.saddr, m.daddr) = (None, None)];

/// Deduplicate `v`, widening it (all of it, from step `steps` of [`WIDEN`]
/// on) while it is longer than [`MAX_MATCHES`]; returns the steps now
/// applied. Widening part of the list early is what [`normalize`] would do
/// to the whole: a step applies when the list is too long after the
/// earlier ones, and a list too long has every longer list too long.
fn squeeze(v: &mut Vec<Match>, mut steps: usize) -> usize {
    loop {
        v.retain(|m| m.families() != Families::Neither);
        v.sort_unstable();
        v.dedup();
        let Some(step) = WIDEN.get(steps).filter(|_| v.len() > MAX_MATCHES) else { return steps };
        v.iter_mut().for_each(step);
        steps += 1;
    }
}

fn normalize(mut v: Vec<Match>) -> (Vec<Match>, bool) {
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
        let (mut input, mut output, mut forward) = (false, false, false);
        for r in &p.rules {
            match r.hook {
                HookSel::Input => input = true,
                HookSel::Output => output = true,
                HookSel::Forward => forward = true,
                HookSel::Any => (input, output) = (true, true),
            }
        }
        if !(input || output || forward) {
            (input, output) = (true, true);
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
        for (chain, on) in [(Chain::Input, input), (Chain::Output, output), (Chain::Forward, forward)] {
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

    fn iptables_target(&self) -> String {
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

    fn nft_queue(&self) -> String {
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
    fn describe(&self) -> String {
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

fn ipt_match(m: &Match) -> String {
    let mut s = String::new();
    if let Some(p) = m.proto {
        let _ = write!(s, " -p {}", Proto::from_number(p));
    }
    if let Some(n) = m.saddr {
        let _ = write!(s, " -s {n}");
    }
    if let Some(n) = m.daddr {
        let _ = write!(s, " -d {n}");
    }
    match m.dport {
        Some((a, b)) if a == b => {
            let _ = write!(s, " --dport {a}");
        }
        Some((a, b)) => {
            let _ = write!(s, " --dport {a}:{b}");
        }
        None => {}
    }
    s
}

fn nft_match(m: &Match) -> String {
    let mut s = String::new();
    for (dir, n) in [("saddr", m.saddr), ("daddr", m.daddr)] {
        if let Some(n) = n {
            let fam = if n.addr().is_ipv6() { "ip6" } else { "ip" };
            let _ = write!(s, "{fam} {dir} {n} ");
        }
    }
    match (m.proto.map(Proto::from_number), m.dport) {
        (Some(p), Some((a, b))) if a == b => {
            let _ = write!(s, "{p} dport {a} ");
        }
        (Some(p), Some((a, b))) => {
            let _ = write!(s, "{p} dport {a}-{b} ");
        }
        (Some(Proto::Icmpv6), None) => s.push_str("meta l4proto ipv6-icmp "),
        (Some(p), None) => {
            let _ = write!(s, "meta l4proto {p} ");
        }
        (None, _) => {}
    }
    s
}

/// The iptables-restore text for one family (`v6`: for
/// `ip6tables-restore --noflush`, else `iptables-restore --noflush`).
pub fn iptables_restore(spec: &RuleSpec, v6: bool) -> String {
    let tool = if v6 { "ip6tables-restore" } else { "iptables-restore" };
    let mut s = format!(
        "# labelgate queue rules for {}: {tool} --noflush\n\
         # (security table: after SECMARK labelling in mangle and security)\n",
        if v6 { "IPv6" } else { "IPv4" }
    );
    s.push_str(&spec.describe());
    s.push_str("*security\n");
    let chains: Vec<_> = spec
        .chains
        .iter()
        .map(|(c, m)| (c.names(), m.iter().filter(|m| m.in_family(v6)).collect::<Vec<_>>()))
        .filter(|(_, m)| !m.is_empty())
        .collect();
    for ((_, chain, _), _) in &chains {
        let _ = writeln!(s, ":{chain} - [0:0]");
    }
    for ((builtin, chain, _), _) in &chains {
        let _ = writeln!(s, "-A {builtin} -j {chain}");
    }
    let target = spec.iptables_target();
    for ((_, chain, _), matches) in &chains {
        let state = if spec.flow {
            let (acc, mask) = (FLOW_MARK_ACCEPT, FLOW_MARK_MASK);
            // An accepted connection bypasses the queue.
            let _ = writeln!(s, "-A {chain} -m connmark --mark {acc:#x}/{mask:#x} -j RETURN");
            // A packet labelgate accepted comes back (NF_REPEAT) with the
            // accept bit in its mark: remember it on the connection.
            let _ = writeln!(
                s,
                "-A {chain} -m mark --mark {acc:#x}/{mask:#x} -j CONNMARK --save-mark --nfmask {mask:#x} --ctmask {mask:#x}"
            );
            let _ = writeln!(s, "-A {chain} -m mark --mark {acc:#x}/{mask:#x} -j RETURN");
            " -m conntrack --ctstate NEW,RELATED"
        } else if spec.new_only {
            " -m conntrack --ctstate NEW"
        } else {
            ""
        };
        for m in matches {
            let _ = writeln!(s, "-A {chain}{}{state} {target}", ipt_match(m));
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// Both families as one shell script (`sh`), each family's rules fed to its
/// own tool. Fed to iptables-restore itself it fails at its first line,
/// before anything is applied.
pub fn iptables_script(spec: &RuleSpec) -> String {
    let mut s = String::from(
        "# labelgate queue rules for IPv4 and IPv6: a shell script, run it with sh.\n\
         # (--family ipv4 or --family ipv6 prints one family's iptables-restore input.)\n\
         # It adds to what is installed: `labelgate rules --remove` first to replace (--install does both).\n\
         set -e\n",
    );
    for (v6, tool, end) in
        [(false, "iptables-restore", "LABELGATE_IPV4"), (true, "ip6tables-restore", "LABELGATE_IPV6")]
    {
        let _ = write!(s, "{tool} --noflush <<'{end}'\n{}{end}\n", iptables_restore(spec, v6));
    }
    s
}

/// The nft script that atomically (re)creates labelgate's table (both families).
pub fn nft_install(spec: &RuleSpec) -> String {
    let mut s = String::from("# labelgate queue rules: own table, priority after the security table (SECMARK)\n");
    s.push_str(&spec.describe());
    s.push_str("table inet labelgate {}\ndelete table inet labelgate\ntable inet labelgate {\n");
    let queue = spec.nft_queue();
    for (c, matches) in &spec.chains {
        let (_, chain, hook) = c.names();
        let chain = chain.to_lowercase();
        let _ = writeln!(s, "  chain {chain} {{\n    type filter hook {hook} priority security + 10; policy accept;");
        let state = if spec.flow {
            let (acc, mask, keep) = (FLOW_MARK_ACCEPT, FLOW_MARK_MASK, !FLOW_MARK_MASK);
            let _ = writeln!(s, "    ct mark and {mask:#x} == {acc:#x} return");
            let _ = writeln!(
                s,
                "    meta mark and {mask:#x} == {acc:#x} ct mark set ct mark and {keep:#x} or {acc:#x} return"
            );
            "ct state new,related "
        } else if spec.new_only {
            "ct state new "
        } else {
            ""
        };
        for m in matches {
            let _ = writeln!(s, "    {}{state}{queue}", nft_match(m));
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

/// Why installing or removing rules failed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot run {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

fn pipe(cmd: &str, args: &[&str], input: &str) -> Result<(), RulesError> {
    let spawn_err = |source| RulesError::Spawn { cmd: cmd.to_string(), source };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(RulesError::Failed {
            cmd: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn run(cmd: &str, args: &[&str]) -> Result<bool, RulesError> {
    let st = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| RulesError::Spawn { cmd: cmd.to_string(), source })?;
    Ok(st.success())
}

/// Install the rules, replacing labelgate's previous ones. iptables: each
/// family asked for gets one `iptables-restore --noflush` transaction that
/// declares labelgate's chains (which empties a chain that exists) and
/// fills them, so a family's queue rules are replaced at once and never
/// absent in between (a reload must not let packets pass unqueued); a
/// transaction that fails leaves that family's previous rules in place.
/// Chains the new rules no longer use, and the families not asked for, are
/// removed afterwards. nft: its `inet` table, both families, atomically.
pub fn install(backend: Backend, family: Family, spec: &RuleSpec) -> Result<(), RulesError> {
    match backend {
        Backend::Iptables => {
            for (v6, tool, restore) in
                [(false, "iptables", "iptables-restore"), (true, "ip6tables", "ip6tables-restore")]
            {
                if !(family == Family::Both || v6 == (family == Family::Ipv6)) {
                    for (builtin, chain) in CHAINS {
                        remove_chain(tool, builtin, chain)?;
                    }
                    continue;
                }
                let text = iptables_restore(spec, v6);
                let mut input = String::with_capacity(text.len());
                for line in text.lines() {
                    // A jump that is already there is not added twice.
                    let present = CHAINS.iter().find(|(b, c)| line == format!("-A {b} -j {c}"));
                    if let Some((builtin, chain)) = present {
                        if run(tool, &["-t", "security", "-C", builtin, "-j", chain])? {
                            continue;
                        }
                    }
                    input.push_str(line);
                    input.push('\n');
                }
                pipe(restore, &["--noflush"], &input)?;
                for (builtin, chain) in CHAINS {
                    if !text.contains(&format!("\n:{chain} - [0:0]\n")) {
                        remove_chain(tool, builtin, chain)?;
                    }
                }
            }
            Ok(())
        }
        Backend::Nft => pipe("nft", &["-f", "-"], &nft_install(spec)),
    }
}

/// labelgate's iptables chains and the built-in chains that jump to them.
const CHAINS: [(&str, &str); 3] =
    [("INPUT", "LABELGATE_IN"), ("OUTPUT", "LABELGATE_OUT"), ("FORWARD", "LABELGATE_FWD")];

/// Remove one of labelgate's chains and every jump to it (`tool`: iptables
/// or ip6tables); a chain that is not there is not an error.
fn remove_chain(tool: &str, builtin: &str, chain: &str) -> Result<(), RulesError> {
    while run(tool, &["-t", "security", "-C", builtin, "-j", chain])? {
        run(tool, &["-t", "security", "-D", builtin, "-j", chain])?;
    }
    if run(tool, &["-t", "security", "-L", chain, "-n"])? {
        run(tool, &["-t", "security", "-F", chain])?;
        if !run(tool, &["-t", "security", "-X", chain])? {
            return Err(RulesError::Failed {
                cmd: format!("{tool} -t security -X {chain}"),
                stderr: "chain still referenced".into(),
            });
        }
    }
    Ok(())
}

/// Remove labelgate's rules (and only those). Removing what is not there is
/// not an error.
pub fn remove(backend: Backend) -> Result<(), RulesError> {
    match backend {
        Backend::Iptables => {
            for tool in ["iptables", "ip6tables"] {
                for (builtin, chain) in CHAINS {
                    remove_chain(tool, builtin, chain)?;
                }
            }
            Ok(())
        }
        Backend::Nft => {
            if run("nft", &["list", "table", "inet", "labelgate"])? {
                pipe("nft", &["-f", "-"], "delete table inet labelgate\n")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(t: &str) -> Policy {
        Policy::from_toml(t, "t").unwrap()
    }

    const SCOPED: &str = "default = \"drop\"\n[[scope]]\nproto = \"tcp\"\ndport = 5432\n\
        [[rule]]\nname = \"a\"\nhook = \"output\"\nuid = 1001\nproto = \"tcp\"\ndport = 5432\nverdict = \"accept\"\n";

    fn spec(t: &str, queues: Vec<u16>, flow: bool, bypass: bool) -> RuleSpec {
        RuleSpec::for_policy(&policy(t), queues, flow, bypass)
    }

    fn queue_lines(t: &str) -> Vec<&str> {
        t.lines().filter(|l| !l.starts_with('#') && (l.contains("NFQUEUE") || l.contains(" queue "))).collect()
    }

    #[test]
    fn iptables_text_follows_the_declared_scope() {
        let t = iptables_restore(&spec(SCOPED, vec![0], false, false), false);
        assert!(t.starts_with("# labelgate queue rules for IPv4: iptables-restore --noflush\n"), "{t}");
        assert!(t.contains("*security\n:LABELGATE_OUT - [0:0]\n-A OUTPUT -j LABELGATE_OUT\n"), "{t}");
        assert_eq!(
            queue_lines(&t),
            ["-A LABELGATE_OUT -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0"],
            "{t}"
        );
        assert!(t.contains("# fail closed (no --queue-bypass)"), "{t}");
        assert!(t.ends_with("COMMIT\n"));
        assert!(!t.contains("LABELGATE_IN") && !t.contains("FORWARD"), "{t}");
        let t = iptables_restore(&spec(SCOPED, vec![2, 3], true, true), true);
        assert!(t.contains("-A LABELGATE_OUT -m connmark --mark 0x200000/0x600000 -j RETURN\n"));
        assert!(t.contains("-A LABELGATE_OUT -m mark --mark 0x200000/0x600000 -j CONNMARK --save-mark --nfmask 0x600000 --ctmask 0x600000\n"));
        assert!(t.contains(
            "-A LABELGATE_OUT -p tcp --dport 5432 -m conntrack --ctstate NEW,RELATED -j NFQUEUE --queue-balance 2:3 --queue-cpu-fanout --queue-bypass\n"
        ));
        assert!(t.contains("# fail open (--queue-bypass)"), "{t}");
    }

    #[test]
    fn every_family_is_printed_and_addresses_go_to_their_own() {
        let t = "default = \"drop\"\n[[scope]]\nproto = \"udp\"\ndport = [53, \"6000-6010\"]\n\
                 daddr = [\"198.18.0.0/15\", \"fd00::/8\"]\n[[scope]]\nhook = \"input\"\nproto = \"icmpv6\"\n\
                 [[rule]]\nname = \"a\"\nverdict = \"accept\"\n";
        let sp = spec(t, vec![7], false, false);
        let v4 = iptables_restore(&sp, false);
        let v6 = iptables_restore(&sp, true);
        assert_eq!(
            queue_lines(&v4),
            [
                "-A LABELGATE_IN -p udp -d 198.18.0.0/15 --dport 53 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
                "-A LABELGATE_IN -p udp -d 198.18.0.0/15 --dport 6000:6010 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
                "-A LABELGATE_IN -p icmpv6 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
                "-A LABELGATE_OUT -p udp -d 198.18.0.0/15 --dport 53 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
                "-A LABELGATE_OUT -p udp -d 198.18.0.0/15 --dport 6000:6010 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
            ],
            "{v4}"
        );
        assert!(v6.contains("-A LABELGATE_IN -p udp -d fd00::/8 --dport 53 -m conntrack"), "{v6}");
        assert!(!v6.contains("198.18") && !v4.contains("fd00"), "{v4}{v6}");
        // Both: a shell script feeding each family to its own tool.
        let both = iptables_script(&sp);
        let (a, b) = both.split_once("ip6tables-restore --noflush <<'LABELGATE_IPV6'\n").unwrap();
        assert!(a.contains(&format!("iptables-restore --noflush <<'LABELGATE_IPV4'\n{v4}LABELGATE_IPV4\n")), "{both}");
        assert_eq!(b, format!("{v6}LABELGATE_IPV6\n"));
        assert!(both.lines().find(|l| !l.starts_with('#')) == Some("set -e"), "{both}");
    }

    #[test]
    fn default_accept_queues_what_selinux_rules_can_match() {
        let t = "default = \"accept\"\n[[rule]]\nname = \"db\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"selinux\"\n";
        let v4 = iptables_restore(&spec(t, vec![0], false, false), false);
        assert_eq!(
            queue_lines(&v4),
            [
                "-A LABELGATE_IN -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
                "-A LABELGATE_OUT -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
            ],
            "{v4}"
        );
    }

    #[test]
    fn default_accept_queues_only_what_drop_and_audited_rules_can_match() {
        let t = "default = \"accept\"\n\
                 [[rule]]\nname = \"ok\"\nproto = \"tcp\"\ndport = 22\nverdict = \"accept\"\n\
                 [[rule]]\nname = \"no-db\"\nhook = \"output\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"drop\"\n\
                 [[rule]]\nname = \"seen\"\nhook = \"input\"\nproto = \"udp\"\nsaddr = \"10.0.0.0/8\"\nverdict = \"accept\"\naudit = true\n\
                 [[rule]]\nname = \"no-db-wide\"\nhook = \"output\"\nproto = \"tcp\"\ndport = \"5000-6000\"\nverdict = \"drop\"\npermissive = true\n";
        let sp = spec(t, vec![0], false, false);
        assert_eq!(sp.source, ScopeSource::Derived);
        let v4 = iptables_restore(&sp, false);
        assert_eq!(
            queue_lines(&v4),
            [
                "-A LABELGATE_IN -p udp -s 10.0.0.0/8 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
                // tcp/5432 is inside 5000-6000: one rule.
                "-A LABELGATE_OUT -p tcp --dport 5000:6000 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
            ],
            "{v4}"
        );
        assert!(queue_lines(&iptables_restore(&sp, true)).len() == 1, "the IPv4 source is not queued on IPv6");
        // Nothing to decide: nothing queued, and the text says so.
        let sp = spec("default = \"accept\"\n[[rule]]\nname = \"a\"\nverdict = \"accept\"\n", vec![0], false, true);
        assert!(sp.chains.is_empty());
        let v4 = iptables_restore(&sp, false);
        assert!(queue_lines(&v4).is_empty() && v4.contains("# nothing to queue"), "{v4}");
        // A drop rule without conditions: everything on its hook.
        let sp = spec(
            "default = \"accept\"\n[[rule]]\nname = \"d\"\nhook = \"input\"\nverdict = \"drop\"\n",
            vec![0],
            false,
            true,
        );
        assert_eq!(sp.chains, vec![(Chain::Input, vec![Match::ALL])]);
    }

    #[test]
    fn squeezing_a_long_list_early_gives_what_normalizing_it_whole_gives() {
        // Drop rules of 16 x 16 address pairs each: past 4 x MAX_MATCHES the
        // list is squeezed while it is built; the result must be the one
        // normalizing every expansion at once gives.
        for (rules, mixed) in [(3, false), (5, false), (40, false), (40, true)] {
            let mut t = String::from("default = \"accept\"\n");
            for r in 0..rules {
                let s: Vec<String> = (0..16).map(|i| format!("\"10.{r}.{i}.0/24\"")).collect();
                let mut d: Vec<String> = (0..16).map(|i| format!("\"192.168.{i}.0/24\"")).collect();
                if mixed && r % 2 == 0 {
                    d[0] = "\"fd00::/8\"".into();
                }
                let _ = write!(
                    t,
                    "[[rule]]\nname = \"r{r}\"\nhook = \"output\"\nproto = \"udp\"\ndport = {}\nsaddr = [{}]\ndaddr = [{}]\nverdict = \"drop\"\n",
                    100 + r % 7,
                    s.join(","),
                    d.join(",")
                );
            }
            let p = policy(&t);
            let mut widened = false;
            let all = p
                .rules
                .iter()
                .flat_map(|r| {
                    Match::expand(r.proto, r.dport.get(), r.saddr.as_deref(), r.daddr.as_deref(), &mut widened)
                })
                .collect();
            let (whole, w) = normalize(all);
            let sp = RuleSpec::for_policy(&p, vec![0], false, false);
            assert_eq!(sp.chains, vec![(Chain::Output, whole)], "{rules} rules");
            assert_eq!(sp.widened, w || widened, "{rules} rules");
        }
    }

    #[test]
    fn default_drop_without_scope_queues_everything_and_says_so() {
        let sp = spec(
            "default = \"drop\"\n[[rule]]\nname = \"a\"\nproto = \"tcp\"\ndport = 1\nverdict = \"accept\"\n",
            vec![0],
            false,
            false,
        );
        assert_eq!(sp.source, ScopeSource::Everything);
        let t = iptables_restore(&sp, false);
        assert!(t.contains("# scope: EVERYTHING"), "{t}");
        assert_eq!(
            queue_lines(&t),
            [
                "-A LABELGATE_IN -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
                "-A LABELGATE_OUT -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0"
            ]
        );
    }

    #[test]
    fn many_matches_are_widened_never_narrowed() {
        let ports: Vec<String> = (0..300).map(|i| (1000 + 2 * i).to_string()).collect();
        let t = format!(
            "default = \"drop\"\n[[scope]]\nproto = \"udp\"\ndport = [{}]\nsaddr = \"10.0.0.0/8\"\n",
            ports.join(",")
        );
        let sp = spec(&t, vec![0], false, false);
        assert!(sp.widened);
        assert_eq!(
            queue_lines(&iptables_restore(&sp, false)),
            [
                "-A LABELGATE_IN -p udp -s 10.0.0.0/8 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
                "-A LABELGATE_OUT -p udp -s 10.0.0.0/8 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0"
            ]
        );
        let t = format!("default = \"drop\"\n[[scope]]\nproto = \"udp\"\ndport = [{}]\n", ports[..200].join(","));
        let sp = spec(&t, vec![0], false, false);
        assert!(!sp.widened);
        assert_eq!(queue_lines(&iptables_restore(&sp, false)).len(), 400);
    }

    #[test]
    fn nft_text() {
        let t = nft_install(&spec(SCOPED, vec![0, 1], true, true));
        assert!(t.starts_with("# labelgate"));
        assert!(t.contains("table inet labelgate {}\ndelete table inet labelgate\n"));
        assert!(t.contains("type filter hook output priority security + 10; policy accept;"));
        assert!(t.contains("    tcp dport 5432 ct state new,related queue flags fanout,bypass to 0-1\n"), "{t}");
        assert!(
            t.contains("meta mark and 0x600000 == 0x200000 ct mark set ct mark and 0xff9fffff or 0x200000 return\n")
        );
        let p = "default = \"drop\"\n[[scope]]\nproto = \"udp\"\ndport = \"6000-6010\"\n\
                 daddr = [\"198.18.0.0/15\", \"fd00::/8\"]\n[[scope]]\nproto = \"icmpv6\"\n\
                 [[scope]]\nhook = \"output\"\nsaddr = \"::1\"\n";
        let t = nft_install(&spec(p, vec![4], false, false));
        for want in [
            "    meta l4proto ipv6-icmp ct state new queue num 4\n",
            "    ip daddr 198.18.0.0/15 udp dport 6000-6010 ct state new queue num 4\n",
            "    ip6 daddr fd00::/8 udp dport 6000-6010 ct state new queue num 4\n",
            "    ip6 saddr ::1/128 ct state new queue num 4\n",
        ] {
            assert!(t.contains(want), "{want:?} in\n{t}");
        }
        assert_eq!(t.matches("ip6 saddr ::1/128").count(), 1, "output only: {t}");
        let t = nft_install(&spec("default = \"drop\"\n", vec![4], false, false));
        assert!(t.contains("    ct state new queue num 4\n"), "{t}");
    }

    #[test]
    fn hooks_follow_the_policy() {
        let p = policy("[[rule]]\nname = \"a\"\nhook = \"forward\"\nverdict = \"drop\"\n");
        let s = RuleSpec::for_policy(&p, vec![0], false, true);
        assert_eq!(s.chains.iter().map(|c| c.0).collect::<Vec<_>>(), [Chain::Forward]);
        let s = RuleSpec::for_policy(&policy(""), vec![0], false, true);
        assert_eq!(s.chains.iter().map(|c| c.0).collect::<Vec<_>>(), [Chain::Input, Chain::Output]);
    }
}
