//! Reading labelgate's own audit records back (USER_AVC or JSON lines) for
//! `audit2rules` and `would-break`.
//!
//! Audit files are input like any other: lines that are not labelgate
//! records are skipped and counted, never a panic. Records of both classes
//! are read: `tclass=labelgate_flow` (permissions `send`, `recv`,
//! `forward`) and the `tclass=packet` of older versions (`send`, `recv`,
//! `forward_in`, `forward_out`); grants written `labelgate:  granted` and
//! the older `avc:  granted`.

use crate::context::SecurityContext;
use crate::packet::Proto;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One decision read from an audit file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub denied: bool,
    /// `send`, `recv`, `forward` (and `forward_in`, `forward_out` in
    /// records of older versions).
    pub perm: String,
    /// The hook the packet was queued at, when the record says it (JSON
    /// records' `hook`; the USER_AVC form names only the permission).
    pub queued_at: Option<crate::labels::Hook>,
    pub scontext: SecurityContext,
    pub tcontext: SecurityContext,
    pub proto: Option<Proto>,
    pub dport: Option<u16>,
    pub permissive: bool,
    pub rule: String,
}

impl Entry {
    /// The policy hook that matches where the packet was queued: the
    /// record's own hook when it names one (JSON), else from the permission
    /// (`sepolicy::permission`): `send` is `output`, `recv` is `input` (a
    /// USER_AVC record does not tell PREROUTING from INPUT, nor POSTROUTING
    /// from OUTPUT), the older `forward_out` (written at POSTROUTING) is
    /// `postrouting`, `forward` (older: `forward_in`) is `forward`; a
    /// permission labelgate does not write is `any`.
    pub fn hook(&self) -> &'static str {
        use crate::labels::Hook;
        if let Some(h) = self.queued_at {
            return match h {
                Hook::Prerouting => "prerouting",
                Hook::Input => "input",
                Hook::Forward => "forward",
                Hook::Output => "output",
                Hook::Postrouting => "postrouting",
            };
        }
        match self.perm.as_str() {
            "send" => "output",
            "forward_out" => "postrouting",
            "recv" => "input",
            "forward" | "forward_in" => "forward",
            _ => "any",
        }
    }

    /// The protocol as a policy names it; `None` also for protocols a
    /// policy has no name for (numbers).
    fn policy_proto(&self) -> Option<Proto> {
        self.proto.filter(|p| !matches!(p, Proto::Other(_)))
    }

    /// The destination port, for protocols that have ports.
    fn port(&self) -> Option<u16> {
        self.dport.filter(|_| self.policy_proto().is_some_and(|p| p.has_ports()))
    }
}

/// Split `k=v k="v w" ...` into pairs (quoted values may hold spaces).
fn fields(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].rsplit(' ').next().unwrap_or("").trim();
        let after = &rest[eq + 1..];
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(' ') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, val));
        rest = next;
    }
    out
}

/// The classes labelgate's records name: its own, and the one older
/// versions wrote.
fn labelgate_class(c: &str) -> bool {
    c == crate::sepolicy::CLASS || c == "packet"
}

fn parse_avc(line: &str) -> Option<Entry> {
    // Denials (and older grants) are `avc:` messages, grants `labelgate:`.
    let (tag, body) = match (line.split_once("msg='avc:"), line.split_once("msg='labelgate:")) {
        (Some((a, b)), Some((l, _))) if a.len() < l.len() => ("avc", b),
        (_, Some((_, b))) => ("labelgate", b),
        (Some((_, b)), None) => ("avc", b),
        (None, None) => return None,
    };
    let body = body.strip_suffix('\'').unwrap_or(body);
    let denied = match (tag, body.split_whitespace().next()?) {
        ("avc", "denied") => true,
        (_, "granted") => false,
        _ => return None,
    };
    let perm = body.split_once('{')?.1.split_once('}')?.0.trim().to_string();
    let after = body.split_once('}')?.1;
    let f = fields(after);
    let get = |k: &str| f.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    if !labelgate_class(get("tclass")?) {
        return None;
    }
    Some(Entry {
        denied,
        perm,
        queued_at: None,
        scontext: get("scontext")?.parse().ok()?,
        tcontext: get("tcontext")?.parse().ok()?,
        proto: get("proto").and_then(|p| p.parse::<u8>().ok()).map(Proto::from_number),
        dport: get("dest").and_then(|p| p.parse().ok()),
        permissive: get("permissive") == Some("1"),
        rule: get("rule").unwrap_or("?").to_string(),
    })
}

fn parse_json(line: &str) -> Option<Entry> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str());
    if v.get("tclass").is_some_and(|c| !c.as_str().is_some_and(labelgate_class)) {
        return None;
    }
    let proto = match s("proto") {
        Some("tcp") => Some(Proto::Tcp),
        Some("udp") => Some(Proto::Udp),
        Some("icmp") => Some(Proto::Icmp),
        Some("icmpv6") => Some(Proto::Icmpv6),
        Some("sctp") => Some(Proto::Sctp),
        Some(n) => n.parse::<u8>().ok().map(Proto::from_number),
        None => None,
    };
    Some(Entry {
        denied: s("outcome")? == "denied",
        perm: s("perm")?.to_string(),
        queued_at: match s("hook") {
            Some("prerouting") => Some(crate::labels::Hook::Prerouting),
            Some("input") => Some(crate::labels::Hook::Input),
            Some("forward") => Some(crate::labels::Hook::Forward),
            Some("output") => Some(crate::labels::Hook::Output),
            Some("postrouting") => Some(crate::labels::Hook::Postrouting),
            _ => None,
        },
        scontext: s("scontext")?.parse().ok()?,
        tcontext: s("tcontext")?.parse().ok()?,
        proto,
        dport: v.get("dest").and_then(|d| d.as_u64()).and_then(|d| u16::try_from(d).ok()),
        permissive: v.get("permissive").and_then(|p| p.as_u64()) == Some(1),
        rule: s("rule").unwrap_or("?").to_string(),
    })
}

/// Parse one line (USER_AVC or JSON); `None` for anything else.
pub fn parse_line(line: &str) -> Option<Entry> {
    let t = line.trim();
    if t.starts_with('{') {
        parse_json(t)
    } else if t.contains("type=USER_AVC") {
        parse_avc(t)
    } else {
        None
    }
}

/// Entries of a whole text, and the number of non-empty lines skipped.
pub fn parse_text(text: &str) -> (Vec<Entry>, usize) {
    let mut skipped = 0;
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some(e) => entries.push(e),
            None => skipped += 1,
        }
    }
    (entries, skipped)
}

type Key = (String, String, String, Option<String>, Option<u16>);

fn key(e: &Entry) -> Key {
    (
        e.hook().to_string(),
        e.scontext.type_().to_string(),
        e.tcontext.type_().to_string(),
        e.policy_proto().map(|p| p.to_string()),
        e.port(),
    )
}

/// What `audit2rules` does with the MLS levels the records carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Levels {
    /// Each proposed rule requires the low (effective) levels seen, on each
    /// side that had one (`source_level = "= s1:c5,c7"`): a rule proposed
    /// from what `nginx_t:s1:c5,c7` did does not let `nginx_t:s0` through.
    #[default]
    AsSeen,
    /// No level conditions: one rule per type pair, whatever the levels
    /// (`--generalize-levels`).
    Generalize,
}

/// A proposal's group: hook, source and dest types, protocol and port, and
/// the source and dest low levels when they are kept.
type ProposalKey = (String, String, String, Option<String>, Option<u16>, Option<String>, Option<String>);

fn low_level(c: &SecurityContext) -> Option<String> {
    c.range().map(|r| r.low().to_string())
}

/// A level as part of a rule name: itself when short, else a digest of it
/// (a level with many categories would make a very long name).
fn level_in_name(level: &str) -> String {
    if level.len() <= 32 {
        level.to_string()
    } else {
        let d = crate::policy::PolicyDigest::of(level.as_bytes()).to_string();
        format!("level-{}", d.trim_start_matches("sha256:"))
    }
}

/// Propose policy rules that would accept the denials, grouped and
/// deduplicated by hook, source type, destination type, protocol and port
/// (most frequent first), as TOML ready to paste before the deny rules.
/// Levels seen are kept as conditions ([`Levels::AsSeen`]).
pub fn audit2rules(entries: &[Entry]) -> String {
    audit2rules_with(entries, Levels::AsSeen)
}

/// [`audit2rules`], with the levels kept or dropped as `levels` says.
pub fn audit2rules_with(entries: &[Entry], levels: Levels) -> String {
    type Group = (usize, std::collections::BTreeSet<String>, std::collections::BTreeSet<u8>);
    let mut groups: BTreeMap<ProposalKey, Group> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.denied) {
        let (hook, st, tt, proto, port) = key(e);
        let (sl, dl) = match levels {
            Levels::AsSeen => (low_level(&e.scontext), low_level(&e.tcontext)),
            Levels::Generalize => (None, None),
        };
        let g = groups.entry((hook, st, tt, proto, port, sl, dl)).or_default();
        g.0 += 1;
        g.1.insert(e.rule.clone());
        if let Some(Proto::Other(n)) = e.proto {
            g.2.insert(n);
        }
    }
    let mut v: Vec<_> = groups.into_iter().collect();
    v.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
    let mut s = String::new();
    if v.is_empty() {
        s.push_str("# no denials found\n");
    }
    for ((hook, st, tt, proto, dport, sl, dl), (n, rules, unnamed)) in v {
        // Rule names come from the log: escaped, so that no control
        // character (a newline least of all) can end the comment and put
        // text of the log's choosing into the proposal.
        let denied_by: Vec<String> = rules.iter().map(|r| r.escape_debug().to_string()).collect();
        let _ = writeln!(s, "# {n} denial(s), denied by: {}", denied_by.join(", "));
        if !unnamed.is_empty() {
            let list: Vec<String> = unnamed.iter().map(u8::to_string).collect();
            let _ = writeln!(
                s,
                "# protocol(s) {} have no name in a policy: this rule matches every protocol",
                list.join(", ")
            );
        }
        if sl.is_some() || dl.is_some() {
            let side = |what: &str, l: &Option<String>| l.as_ref().map(|l| format!("{what} {l}"));
            let seen: Vec<String> = [side("source", &sl), side("dest", &dl)].into_iter().flatten().collect();
            let _ = writeln!(
                s,
                "# levels as seen: {}; the rule requires these low levels (--generalize-levels drops them)",
                seen.join(", ")
            );
        }
        let at = |l: &Option<String>| l.as_deref().map(|l| format!("@{}", level_in_name(l))).unwrap_or_default();
        let mut name = format!("allow-{st}{}-to-{tt}{}", at(&sl), at(&dl));
        if let Some(p) = &proto {
            name.push('-');
            name.push_str(p);
        }
        if let Some(d) = dport {
            let _ = write!(name, "-{d}");
        }
        let _ = write!(name, "-{hook}");
        let _ = writeln!(s, "[[rule]]\nname = \"{name}\"\nhook = \"{hook}\"\nsource = \"{st}\"\ndest = \"{tt}\"");
        if let Some(l) = &sl {
            let _ = writeln!(s, "source_level = \"= {l}\"");
        }
        if let Some(l) = &dl {
            let _ = writeln!(s, "dest_level = \"= {l}\"");
        }
        if let Some(p) = proto {
            let _ = writeln!(s, "proto = \"{p}\"");
            if let Some(d) = dport {
                let _ = writeln!(s, "dport = {d}");
            }
        }
        s.push_str("verdict = \"accept\"\n\n");
    }
    s
}

/// Summarise, per deciding rule and domain pair, what enforcing would block:
/// the denials that were let through only because something was permissive.
pub fn would_break(entries: &[Entry]) -> String {
    let mut groups: BTreeMap<(String, Key), usize> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.denied && e.permissive) {
        *groups.entry((e.rule.clone(), key(e))).or_default() += 1;
    }
    let total: usize = groups.values().sum();
    let mut s = String::new();
    if total == 0 {
        s.push_str("nothing would break: no permissive denials in the input\n");
        return s;
    }
    let _ = writeln!(s, "switching to enforcing would block {total} recorded packet(s):");
    let _ = writeln!(s, "{:<24} {:<8} {:<40} {:<10} {:>8}", "rule", "hook", "source -> dest", "proto/port", "packets");
    let mut v: Vec<_> = groups.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for ((rule, (hook, st, tt, proto, dport)), n) in v {
        let pp = match (proto, dport) {
            (Some(p), Some(d)) => format!("{p}/{d}"),
            (Some(p), None) => p,
            _ => "any".into(),
        };
        let _ = writeln!(s, "{rule:<24} {hook:<8} {:<40} {pp:<10} {n:>8}", format!("{st} -> {tt}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: &str = "type=USER_AVC msg=audit(1764100000.123:42): pid=99 uid=0 auid=4294967295 ses=4294967295 subj=unconfined msg='avc:  denied  { send } for  pid=1234 comm=\"my app\" path=\"/usr/bin/x\" src_addr=127.0.0.1 src=43210 dst_addr=127.0.0.1 dest=5432 netif=lo proto=6 slabel=socket tlabel=socket scontext=system_u:system_r:httpd_t:s0 tcontext=system_u:system_r:postgresql_t:s0 tclass=packet permissive=1 rule=db-port-others exe=\"/usr/sbin/labelgate\" sauid=0 hostname=? addr=? terminal=?'";

    #[test]
    fn reads_avc_and_json() {
        let e = parse_line(DENY).unwrap();
        assert!(e.denied && e.permissive);
        assert_eq!((e.perm.as_str(), e.hook(), e.dport, e.proto), ("send", "output", Some(5432), Some(Proto::Tcp)));
        assert_eq!(e.scontext.type_(), "httpd_t");
        assert_eq!(e.rule, "db-port-others");
        let j = r#"{"outcome":"denied","perm":"recv","scontext":"u:r:a_t:s0","tcontext":"u:r:b_t:s0","proto":"udp","dest":53,"permissive":0,"rule":"default"}"#;
        let e = parse_line(j).unwrap();
        assert_eq!((e.hook(), e.proto, e.dport, e.permissive), ("input", Some(Proto::Udp), Some(53), false));
        assert_eq!(parse_line("type=SYSCALL msg=audit(1:2): arch=c000003e"), None);
        assert_eq!(parse_line("type=USER_AVC msg='avc:  denied  { send } for scontext=bad'"), None);
        let (v, skipped) = parse_text(&format!("{DENY}\ngarbage\n\n{j}\n"));
        assert_eq!((v.len(), skipped), (2, 1));
    }

    #[test]
    fn proposes_grouped_rules_that_compile() {
        let other = DENY.replace("dest=5432", "dest=5433");
        let text = format!("{DENY}\n{DENY}\n{other}\n");
        let (v, _) = parse_text(&text);
        let out = audit2rules(&v);
        assert!(
            out.starts_with(
                "# 2 denial(s), denied by: db-port-others\n\
                 # levels as seen: source s0, dest s0; the rule requires these low levels (--generalize-levels drops them)\n\
                 [[rule]]\nname = \"allow-httpd_t@s0-to-postgresql_t@s0-tcp-5432-output\""
            ),
            "{out}"
        );
        assert_eq!(out.matches("[[rule]]").count(), 2);
        let p = crate::policy::Policy::from_toml(&out, "proposed").unwrap();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(audit2rules(&[]), "# no denials found\n");
    }

    /// Found by the `audit_log` fuzz target: each proposal compiles and
    /// accepts the packet its denial was recorded for.
    #[test]
    fn proposals_from_odd_records_compile_and_accept() {
        use crate::policy::HookSel;
        let rec = |perm: &str, proto: u8, dest: u16, rule: &str| {
            format!(
                "{{\"outcome\":\"denied\",\"perm\":\"{perm}\",\"scontext\":\"u:r:a_t:s0\",\
                 \"tcontext\":\"u:r:b_t:s0\",\"proto\":\"{proto}\",\"dest\":{dest},\"permissive\":0,\"rule\":{rule}}}"
            )
        };
        for (line, hook) in [
            (rec("forward_out", 6, 5432, "\"r\""), HookSel::Postrouting),
            (rec("send", 1, 5432, "\"r\""), HookSel::Output),
            (rec("recv", 47, 0, "\"r\""), HookSel::Input),
            (rec("send", 6, 80, "\"x\\n[[rule]]\\nname = \\\"evil\\\"\\nverdict = \\\"accept\\\"\""), HookSel::Output),
        ] {
            let (entries, skipped) = parse_text(&line);
            assert_eq!((entries.len(), skipped), (1, 0), "{line}");
            let text = audit2rules(&entries);
            let p = crate::policy::Policy::from_toml(&text, "p.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(p.rules.len(), 1, "one rule, nothing injected:\n{text}");
            assert!(!text.contains("evil\"\n"), "{text}");
            let r = &p.rules[0];
            assert_eq!(r.hook, hook, "{text}");
            let e = &entries[0];
            if e.proto.is_some_and(|p| !p.has_ports()) {
                assert!(r.dport.get().is_none(), "{text}");
            }
        }
    }

    #[test]
    fn reads_the_labelgate_flow_class_and_both_forms_of_grant() {
        let new = DENY.replace("tclass=packet", "tclass=labelgate_flow");
        let e = parse_line(&new).unwrap();
        assert!(e.denied);
        let grant = new.replace("msg='avc:  denied", "msg='labelgate:  granted");
        let e = parse_line(&grant).unwrap();
        assert!(!e.denied);
        let old_grant = DENY.replace("avc:  denied", "avc:  granted");
        assert!(!parse_line(&old_grant).unwrap().denied);
        // No denial is read from a `labelgate:` message, and no other
        // object manager's USER_AVC is taken for labelgate's.
        assert_eq!(parse_line(&new.replace("msg='avc:", "msg='labelgate:")), None);
        assert_eq!(parse_line(&DENY.replace("tclass=packet", "tclass=dbus")), None);
        let fwd = new.replace("{ send }", "{ forward }");
        assert_eq!(parse_line(&fwd).unwrap().hook(), "forward");
        let j = r#"{"outcome":"denied","perm":"forward","tclass":"labelgate_flow","scontext":"u:r:a_t:s0","tcontext":"u:r:b_t:s0","permissive":0,"rule":"r"}"#;
        assert_eq!(parse_line(j).unwrap().hook(), "forward");
        assert_eq!(parse_line(&j.replace("labelgate_flow", "dbus")), None);
    }

    /// What the writer writes, the reader reads, in both formats and for
    /// both outcomes, at every hook.
    #[test]
    fn reads_what_the_writer_writes() {
        use crate::audit::{format_avc, format_json, Identity, Outcome};
        use crate::labels::{Hook, Label, Origin};
        let id = Identity { pid: 9, subj: "unconfined".into(), exe: "/usr/sbin/labelgate".into() };
        for outcome in [Outcome::Denied, Outcome::Granted] {
            // The USER_AVC form names the permission only (recv at
            // PREROUTING reads as input); JSON names the hook.
            for (hook, avc, json) in [
                (Hook::Output, "output", "output"),
                (Hook::Postrouting, "output", "postrouting"),
                (Hook::Input, "input", "input"),
                (Hook::Prerouting, "input", "prerouting"),
                (Hook::Forward, "forward", "forward"),
            ] {
                let mut r = crate::audit::tests::record();
                r.outcome = outcome;
                r.hook = hook;
                r.labels.source = Label { context: "u:r:a_t:s1:c5,c7".parse().unwrap(), origin: Origin::Socket };
                r.labels.dest = Label { context: "u:r:b_t:s1:c5".parse().unwrap(), origin: Origin::Socket };
                for (line, expect) in [(format_avc(&r, &id, 1, Some("lo")), avc), (format_json(&r, &id, 1, None), json)]
                {
                    let e = parse_line(&line).unwrap_or_else(|| panic!("{line}"));
                    assert_eq!(e.denied, outcome == Outcome::Denied, "{line}");
                    assert_eq!((e.hook(), e.dport, e.proto), (expect, Some(5432), Some(Proto::Tcp)), "{line}");
                    assert_eq!(e.scontext, r.labels.source.context);
                    assert_eq!(e.tcontext, r.labels.dest.context);
                }
            }
        }
    }

    /// Issue 14 item 7: a permissive run that saw only
    /// nginx_t:s1:c5,c7 -> mysqld_t:s1:c5 must not propose a rule that lets
    /// nginx_t:s0 through.
    #[test]
    fn proposals_keep_the_levels_seen_unless_generalized() {
        use crate::labels::{Label, Labels, Origin};
        use crate::policy::{Facts, Mode, Verdict};
        let line = DENY
            .replace("httpd_t:s0", "nginx_t:s1:c5,c7")
            .replace("postgresql_t:s0", "mysqld_t:s1:c5")
            .replace("dest=5432", "dest=3306");
        let (v, _) = parse_text(&line);
        let decide = |text: &str, source: &str| {
            let p = crate::policy::Policy::from_toml(text, "proposal").unwrap_or_else(|e| panic!("{e}\n{text}"));
            let pkt = crate::packet::PacketInfo {
                src: std::net::Ipv4Addr::LOCALHOST.into(),
                dst: std::net::Ipv4Addr::LOCALHOST.into(),
                proto: Proto::Tcp,
                sport: Some(40000),
                dport: Some(3306),
                icmp: None,
                tcp_syn: true,
                label_option: None,
            };
            let mut l = Labels::unresolved("test");
            l.source = Label { context: source.parse().unwrap(), origin: Origin::Socket };
            l.dest = Label { context: "system_u:system_r:mysqld_t:s1:c5".parse().unwrap(), origin: Origin::Socket };
            let none = || None::<String>;
            let f = Facts { hook: crate::labels::Hook::Output, pkt: &pkt, labels: &l, iif: &none, oif: &none };
            p.decide(&f, Mode::Enforcing).verdict
        };
        let out = audit2rules(&v);
        assert!(out.contains("# levels as seen: source s1:c5,c7, dest s1:c5;"), "{out}");
        assert!(out.contains("source_level = \"= s1:c5,c7\"\ndest_level = \"= s1:c5\"\n"), "{out}");
        let with_default_drop = format!("default = \"drop\"\n{out}");
        assert_eq!(decide(&with_default_drop, "system_u:system_r:nginx_t:s1:c5,c7"), Verdict::Accept);
        assert_eq!(decide(&with_default_drop, "system_u:system_r:nginx_t:s0"), Verdict::Drop);
        assert_eq!(decide(&with_default_drop, "system_u:system_r:nginx_t:s1:c5"), Verdict::Drop);
        // Generalised: types alone.
        let out = audit2rules_with(&v, Levels::Generalize);
        assert!(!out.contains("level"), "{out}");
        let with_default_drop = format!("default = \"drop\"\n{out}");
        assert_eq!(decide(&with_default_drop, "system_u:system_r:nginx_t:s0"), Verdict::Accept);
        // The same types at two levels: two rules with distinct names; a
        // context without MLS part gives no level condition.
        let other = line.replace("nginx_t:s1:c5,c7", "nginx_t:s0");
        let plain = line.replace("nginx_t:s1:c5,c7", "nginx_t").replace("mysqld_t:s1:c5", "mysqld_t");
        let (v, _) = parse_text(&format!("{line}\n{other}\n{plain}\n"));
        let out = audit2rules(&v);
        let p = crate::policy::Policy::from_toml(&out, "p").unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(p.rules.len(), 3, "{out}");
        assert!(out.contains("name = \"allow-nginx_t-to-mysqld_t-tcp-3306-output\"\nhook"), "{out}");
        assert_eq!(audit2rules_with(&v, Levels::Generalize).matches("[[rule]]").count(), 1);
        // A long category list is named by a digest, not spelt out.
        let cats: Vec<String> = (0..200).step_by(2).map(|c| format!("c{c}")).collect();
        let long = line.replace("s1:c5,c7", &format!("s1:{}", cats.join(",")));
        let (v, _) = parse_text(&long);
        let out = audit2rules(&v);
        let name = out.lines().find(|l| l.starts_with("name = ")).unwrap();
        assert!(name.len() < 100 && name.contains("@level-"), "{name}");
        crate::policy::Policy::from_toml(&out, "p").unwrap_or_else(|e| panic!("{e}\n{out}"));
    }

    #[test]
    fn would_break_counts_only_permissive_denials() {
        let enforced = DENY.replace("permissive=1", "permissive=0");
        let (v, _) = parse_text(&format!("{DENY}\n{DENY}\n{enforced}\n"));
        let out = would_break(&v);
        assert!(out.starts_with("switching to enforcing would block 2 recorded packet(s):"), "{out}");
        assert!(out.contains("db-port-others"), "{out}");
        assert!(out.contains("httpd_t -> postgresql_t"), "{out}");
        assert!(out.contains("tcp/5432"), "{out}");
        let (v, _) = parse_text(&enforced);
        assert!(would_break(&v).starts_with("nothing would break"));
    }

    proptest::proptest! {
        #[test]
        fn reader_never_panics(s in "\\PC{0,300}") {
            let _ = parse_text(&s);
            let _ = parse_line(&format!("type=USER_AVC msg='avc:  denied  {{ {s}"));
        }
    }
}
