//! The nftables rendering: the script that atomically (re)creates
//! labelgate's `inet labelgate` table.

use super::spec::{Chain, Match, RuleSpec, FLOW_MARK_ACCEPT, FLOW_MARK_MASK, FLOW_MARK_SETTLED};
use crate::packet::Proto;
use std::fmt::Write as _;

pub(super) fn nft_match(m: &Match) -> String {
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

/// The nft script that atomically (re)creates labelgate's table (both families).
pub fn nft_install(spec: &RuleSpec) -> String {
    let mut s = String::from("# labelgate queue rules: own table, priority after the security table (SECMARK)\n");
    if spec.chains.iter().any(|(c, _)| matches!(c, Chain::Prerouting | Chain::Postrouting)) {
        s.push_str("# (prerouting and postrouting: after mangle, before DNAT and SNAT)\n");
    }
    s.push_str(&spec.describe());
    s.push_str("table inet labelgate {}\ndelete table inet labelgate\ntable inet labelgate {\n");
    let queue = spec.nft_queue();
    for (c, matches) in &spec.chains {
        let (_, chain, hook) = c.names();
        let chain = chain.to_lowercase();
        let prio = c.nft_priority();
        let _ = writeln!(s, "  chain {chain} {{\n    type filter hook {hook} priority {prio}; policy accept;");
        let state = if spec.flow {
            let (acc, mask, keep, bit) = (FLOW_MARK_ACCEPT, FLOW_MARK_MASK, !FLOW_MARK_MASK, c.flow_bit());
            if *c == Chain::Output {
                // Accepted and settled for INPUT as well: both hooks' bits.
                let (both, bits) = (FLOW_MARK_ACCEPT | FLOW_MARK_SETTLED, bit | Chain::Input.flow_bit());
                let _ = writeln!(
                    s,
                    "    meta mark and {mask:#x} == {both:#x} ct mark set ct mark or {bits:#x} meta mark set meta mark and {keep:#x}"
                );
            }
            // The accept bit of a packet labelgate accepted becomes this
            // hook's connection mark bit and is cleared (see the iptables
            // rules).
            let _ = writeln!(
                s,
                "    meta mark and {mask:#x} == {acc:#x} ct mark set ct mark or {bit:#x} meta mark set meta mark and {keep:#x}"
            );
            let _ = writeln!(s, "    ct mark and {bit:#x} == {bit:#x} return");
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
