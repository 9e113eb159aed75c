//! The policy's `[[scope]]` entries: the traffic the policy governs.
//! `labelgate rules` queues only what an entry matches, and the daemon
//! accepts, without consulting the rules, a queued packet no entry matches
//! (queued by hand-written rules wider than the scope).

use super::pattern::{NetSet, PortSet};
use super::HookSel;
use crate::labels::Hook;
use crate::packet::{PacketInfo, Proto};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::ops::Range;

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

/// A `[[scope]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScope {
    hook: Option<HookSel>,
    proto: Option<Spanned<String>>,
    dport: Option<Spanned<toml::Value>>,
    saddr: Option<Spanned<toml::Value>>,
    daddr: Option<Spanned<toml::Value>>,
}

/// A protocol as policies name it; `any` is `None`.
pub(super) fn parse_proto(s: &str) -> Result<Option<Proto>, String> {
    Ok(Some(match s {
        "any" => return Ok(None),
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "icmpv6" => Proto::Icmpv6,
        "sctp" => Proto::Sctp,
        other => return Err(format!("unknown proto {other:?} (expected tcp, udp, icmp, icmpv6, sctp or any)")),
    }))
}

/// Compile the `[[scope]]` entries; `err` makes a located error. An
/// explicitly empty list (`scope = []`) is refused: it would queue nothing.
pub(super) fn compile<E>(
    raw: &Spanned<Vec<Spanned<RawScope>>>,
    err: &dyn Fn(Range<usize>, String) -> E,
) -> Result<Vec<ScopeEntry>, E> {
    if raw.get_ref().is_empty() {
        return Err(err(raw.span(), "scope is empty: list the traffic the policy governs, or leave scope out".into()));
    }
    let mut out = Vec::with_capacity(raw.get_ref().len());
    for e in raw.get_ref() {
        let r = e.get_ref();
        let proto = match &r.proto {
            None => None,
            Some(p) => parse_proto(p.get_ref()).map_err(|m| err(p.span(), m))?,
        };
        let dport = match &r.dport {
            None => None,
            Some(d) => {
                if !proto.is_some_and(|p| p.has_ports()) {
                    return Err(err(d.span(), "dport needs proto = \"tcp\", \"udp\" or \"sctp\"".into()));
                }
                let items = super::parse::scalar_items(d.get_ref()).ok_or_else(|| {
                    err(d.span(), "ports must be a number, a \"lo-hi\" string, or a list of them".into())
                })?;
                let parsed: Result<Vec<_>, _> = items.iter().map(|i| PortSet::parse_item(i)).collect();
                Some(parsed.and_then(PortSet::new).map_err(|m| err(d.span(), m))?)
            }
        };
        let nets = |v: &Option<Spanned<toml::Value>>| -> Result<Option<NetSet>, E> {
            let Some(v) = v else { return Ok(None) };
            let items = super::parse::scalar_items(v.get_ref())
                .filter(|i| !i.is_empty())
                .ok_or_else(|| err(v.span(), "addresses must be a CIDR string or a non-empty list of them".into()))?;
            let nets: Result<Vec<_>, _> = items.iter().map(|s| super::parse::parse_net(s)).collect();
            nets.map(|n| Some(NetSet(n.into()))).map_err(|m| err(v.span(), m))
        };
        out.push(ScopeEntry {
            hook: r.hook.unwrap_or(HookSel::Any),
            proto,
            dport,
            saddr: nets(&r.saddr)?,
            daddr: nets(&r.daddr)?,
        });
    }
    Ok(out)
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
