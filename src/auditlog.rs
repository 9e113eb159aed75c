//! Reading labelgate's own audit records back (USER_AVC or JSON lines) for
//! `audit2rules` and `would-break`.
//!
//! Audit files are input like any other: lines that are not labelgate
//! records are skipped and counted, never a panic.

use crate::context::SecurityContext;
use crate::packet::Proto;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One decision read from an audit file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub denied: bool,
    /// `send`, `recv`, `forward_in`, `forward_out`.
    pub perm: String,
    pub scontext: SecurityContext,
    pub tcontext: SecurityContext,
    pub proto: Option<Proto>,
    pub dport: Option<u16>,
    pub permissive: bool,
    pub rule: String,
}

impl Entry {
    /// The policy hook that matches where the permission was recorded
    /// (`Hook::permission`): `send` at OUTPUT and `forward_out` at
    /// POSTROUTING are both `output`, `recv` is `input`, `forward_in` is
    /// `forward`; a permission labelgate does not write is `any`.
    pub fn hook(&self) -> &'static str {
        match self.perm.as_str() {
            "send" | "forward_out" => "output",
            "recv" => "input",
            "forward_in" => "forward",
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

fn parse_avc(line: &str) -> Option<Entry> {
    let body = line.split_once("msg='avc:")?.1;
    let body = body.strip_suffix('\'').unwrap_or(body);
    let denied = match body.split_whitespace().next()? {
        "denied" => true,
        "granted" => false,
        _ => return None,
    };
    let perm = body.split_once('{')?.1.split_once('}')?.0.trim().to_string();
    let after = body.split_once('}')?.1;
    let f = fields(after);
    let get = |k: &str| f.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    Some(Entry {
        denied,
        perm,
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

/// Propose policy rules that would accept the denials, grouped and
/// deduplicated by hook, source type, destination type, protocol and port
/// (most frequent first), as TOML ready to paste before the deny rules.
pub fn audit2rules(entries: &[Entry]) -> String {
    type Group = (usize, std::collections::BTreeSet<String>, std::collections::BTreeSet<u8>);
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.denied) {
        let g = groups.entry(key(e)).or_default();
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
    for ((hook, st, tt, proto, dport), (n, rules, unnamed)) in v {
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
        let mut name = format!("allow-{st}-to-{tt}");
        if let Some(p) = &proto {
            name.push('-');
            name.push_str(p);
        }
        if let Some(d) = dport {
            let _ = write!(name, "-{d}");
        }
        let _ = write!(name, "-{hook}");
        let _ = writeln!(s, "[[rule]]\nname = \"{name}\"\nhook = \"{hook}\"\nsource = \"{st}\"\ndest = \"{tt}\"");
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
        assert!(out.starts_with("# 2 denial(s), denied by: db-port-others\n[[rule]]\nname = \"allow-httpd_t-to-postgresql_t-tcp-5432-output\""), "{out}");
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
            (rec("forward_out", 6, 5432, "\"r\""), HookSel::Output),
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
