//! The policy's `[[scope]]` entries: the traffic the policy governs.
//! `labelgate rules` queues only what an entry matches, and the daemon
//! accepts, without consulting the rules, a queued packet no entry matches
//! (queued by hand-written rules wider than the scope). The parser
//! (`parse/head.rs`) compiles them from the file.

use super::pattern::{NetSet, PortSet};
use super::rule::HookSel;
use crate::labels::Hook;
use crate::packet::{PacketInfo, Proto};

/// One `[[scope]]` entry; an absent key matches anything.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeEntry {
    pub hook: HookSel,
    pub proto: Option<Proto>,
    pub dport: Option<PortSet>,
    pub saddr: Option<NetSet>,
    pub daddr: Option<NetSet>,
}

impl ScopeEntry {
    /// Whether a packet on `hook` is in this entry.
    pub fn matches(&self, hook: Hook, p: &PacketInfo) -> bool {
        self.hook.matches(hook)
            && self.proto.is_none_or(|x| x == p.proto)
            && self.dport.as_ref().is_none_or(|s| p.dport.is_some_and(|d| s.contains(d)))
            && self.saddr.as_ref().is_none_or(|s| s.contains(&p.src))
            && self.daddr.as_ref().is_none_or(|s| s.contains(&p.dst))
    }
}

#[cfg(test)]
mod tests {
    use crate::labels::Hook;
    use crate::packet::{PacketInfo, Proto};
    use crate::policy::Policy;

    fn pkt(proto: Proto, dst: &str, dport: Option<u16>) -> PacketInfo {
        PacketInfo {
            src: "127.0.0.1".parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport: dport.map(|_| 40000),
            dport,
            icmp: None,
            tcp_syn: proto == Proto::Tcp,
            label_option: None,
        }
    }

    const SCOPED: &str = "default = \"drop\"\n[[scope]]\nproto = \"tcp\"\ndport = [5432, \"6000-6001\"]\n\
                          [[scope]]\nhook = \"input\"\ndaddr = [\"198.18.0.0/15\", \"fd00::/8\"]\n";

    #[test]
    fn entries_match_what_they_name() {
        let p = Policy::from_toml(SCOPED, "t").unwrap();
        assert_eq!(p.scope.as_ref().map(Vec::len), Some(2));
        let tcp = |port| pkt(Proto::Tcp, "127.0.0.1", Some(port));
        assert!(p.in_scope(Hook::Output, &tcp(5432)));
        assert!(p.in_scope(Hook::Input, &tcp(6001)));
        assert!(!p.in_scope(Hook::Output, &tcp(6002)));
        assert!(!p.in_scope(Hook::Output, &pkt(Proto::Udp, "127.0.0.1", Some(5432))));
        assert!(!p.in_scope(Hook::Output, &pkt(Proto::Icmp, "127.0.0.1", None)));
        // The address entry is for input only, every protocol.
        assert!(p.in_scope(Hook::Input, &pkt(Proto::Icmp, "198.19.1.1", None)));
        assert!(p.in_scope(Hook::Input, &pkt(Proto::Udp, "fd00::1", Some(53))));
        assert!(!p.in_scope(Hook::Output, &pkt(Proto::Icmp, "198.19.1.1", None)));
        // No scope: everything is in scope.
        let p = Policy::from_toml("default = \"drop\"\n", "t").unwrap();
        assert!(p.in_scope(Hook::Output, &pkt(Proto::Icmp, "127.0.0.1", None)));
    }

    #[test]
    fn the_daemon_accepts_what_is_outside_the_scope_without_the_rules() {
        use crate::labels::Labels;
        use crate::policy::{Facts, Mode, Verdict};
        let text = "default = \"drop\"\n[[scope]]\nproto = \"tcp\"\ndport = 5432\n\
                    [[rule]]\nname = \"all\"\nverdict = \"drop\"\naudit = true\n";
        let p = Policy::from_toml(text, "t").unwrap();
        let l = Labels::unresolved("test");
        let none = || None;
        let decide = |pkt: &PacketInfo, mode| {
            p.decide(&Facts { hook: Hook::Output, pkt, labels: &l, iif: &none, oif: &none }, mode)
        };
        for mode in [Mode::Enforcing, Mode::Permissive] {
            let d = decide(&pkt(Proto::Udp, "127.0.0.1", Some(53)), mode);
            assert_eq!(
                (d.verdict, d.table_verdict, d.rule, d.audit, d.permissive),
                (Verdict::Accept, Verdict::Accept, None, false, false)
            );
            let d = decide(&pkt(Proto::Icmp, "127.0.0.1", None), mode);
            assert_eq!((d.verdict, d.rule, d.audit), (Verdict::Accept, None, false));
        }
        assert_eq!(p.rules[0].hits.load(std::sync::atomic::Ordering::Relaxed), 0, "the rules were not consulted");
        let d = decide(&pkt(Proto::Tcp, "127.0.0.1", Some(5432)), Mode::Enforcing);
        assert_eq!((d.verdict, d.rule, d.audit), (Verdict::Drop, Some(0), true));
    }

    #[test]
    fn the_file_loader_reads_scope_between_rule_sections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let text = "default = \"drop\"\n[[rule]]\nname = \"a\"\nverdict = \"accept\"\n\
                    [[scope]]\nproto = \"udp\"\n[[rule]]\nname = \"b\"\nverdict = \"drop\"\n";
        std::fs::write(&path, text).unwrap();
        let p = Policy::load(&path).unwrap();
        let whole = Policy::from_toml(text, "t").unwrap();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.scope, whole.scope);
        assert_eq!(p.scope.as_ref().and_then(|s| s.first()).and_then(|e| e.proto), Some(Proto::Udp));
    }

    #[test]
    fn bad_entries_are_refused_with_their_place() {
        for (text, want) in [
            ("scope = []\n", "t:1:9: scope is empty"),
            ("[[scope]]\ndport = 5\n", "t:2:9: dport needs proto"),
            ("[[scope]]\nproto = \"tcpp\"\n", "t:2:9: unknown proto \"tcpp\""),
            ("[[scope]]\nproto = \"udp\"\ndport = \"9-1\"\n", "runs backwards"),
            ("[[scope]]\ndaddr = []\n", "t:2:9: addresses must be"),
            ("[[scope]]\nsaddr = \"10.0.0.300\"\n", "bad address"),
            ("[[scope]]\nport = 5\n", "unknown field `port`"),
        ] {
            let e = Policy::from_toml(text, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
