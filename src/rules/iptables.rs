//! The iptables rendering: `iptables-restore` input per family, and the
//! shell script that feeds both families to their tools.

use super::spec::{Chain, Match, RuleSpec, FLOW_MARK_ACCEPT, FLOW_MARK_MASK, FLOW_MARK_SETTLED};
use crate::packet::Proto;
use std::fmt::Write as _;

pub(super) fn ipt_match(m: &Match) -> String {
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

/// The iptables-restore text for one family (`v6`: for
/// `ip6tables-restore --noflush`, else `iptables-restore --noflush`): the
/// `security` table's chains, then, when PREROUTING or POSTROUTING is
/// queued, the `mangle` table's.
pub fn iptables_restore(spec: &RuleSpec, v6: bool) -> String {
    let tool = if v6 { "ip6tables-restore" } else { "iptables-restore" };
    let mut s = format!(
        "# labelgate queue rules for {}: {tool} --noflush\n\
         # (security table: after SECMARK labelling in mangle and security)\n",
        if v6 { "IPv6" } else { "IPv4" }
    );
    let chains: Vec<_> = spec
        .chains
        .iter()
        .map(|(c, m)| (*c, m.iter().filter(|m| m.in_family(v6)).collect::<Vec<_>>()))
        .filter(|(_, m)| !m.is_empty())
        .collect();
    if chains.iter().any(|(c, _)| c.table() == "mangle") {
        s.push_str("# (PREROUTING and POSTROUTING, which security lacks: mangle table, before DNAT and SNAT)\n");
    }
    s.push_str(&spec.describe());
    let target = spec.iptables_target();
    for table in ["security", "mangle"] {
        let chains: Vec<_> = chains.iter().filter(|(c, _)| c.table() == table).collect();
        // The security table is always written (a transaction even when
        // nothing is queued); mangle only when it has a chain.
        if chains.is_empty() && table != "security" {
            continue;
        }
        let _ = writeln!(s, "*{table}");
        for (c, _) in &chains {
            let _ = writeln!(s, ":{} - [0:0]", c.names().1);
        }
        for (c, _) in &chains {
            let (builtin, chain, _) = c.names();
            let _ = writeln!(s, "-A {builtin} -j {chain}");
        }
        for (c, matches) in &chains {
            let chain = c.names().1;
            let state = if spec.flow {
                let (acc, mask, bit) = (FLOW_MARK_ACCEPT, FLOW_MARK_MASK, c.flow_bit());
                if *c == Chain::Output {
                    // Accepted and settled for INPUT as well: both hooks' bits.
                    let both = FLOW_MARK_ACCEPT | FLOW_MARK_SETTLED;
                    let bits = bit | Chain::Input.flow_bit();
                    let _ = writeln!(
                        s,
                        "-A {chain} -m mark --mark {both:#x}/{mask:#x} -j CONNMARK --set-xmark {bits:#x}/{bits:#x}"
                    );
                    let _ =
                        writeln!(s, "-A {chain} -m mark --mark {both:#x}/{mask:#x} -j MARK --set-xmark 0x0/{mask:#x}");
                }
                // A packet labelgate accepted comes back (NF_REPEAT) with the
                // accept bit in its mark: remember it on the connection as
                // this hook's bit, and clear it so that the next hook the
                // packet crosses decides it afresh.
                let _ = writeln!(
                    s,
                    "-A {chain} -m mark --mark {acc:#x}/{mask:#x} -j CONNMARK --set-xmark {bit:#x}/{bit:#x}"
                );
                let _ = writeln!(s, "-A {chain} -m mark --mark {acc:#x}/{mask:#x} -j MARK --set-xmark 0x0/{mask:#x}");
                // A connection accepted at this hook bypasses the queue.
                let _ = writeln!(s, "-A {chain} -m connmark --mark {bit:#x}/{bit:#x} -j RETURN");
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
    }
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
