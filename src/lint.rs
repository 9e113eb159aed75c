//! `labelgate check` diagnostics beyond compiling: rules that can never
//! match, rules shadowed by earlier ones, a default-drop policy without a
//! scope, and (with SELinux active) types the loaded SELinux policy does
//! not know. Every finding is a warning, and every warning is counted.

use crate::policy::pattern::{ContextPattern, TypePattern};
use crate::policy::{HookSel, Policy, Rule, RuleVerdict, ScopeEntry};
use std::collections::HashMap;

/// At most this many rule pairs are compared in the shadowed-rule check
/// (after pruning by type, a generated 100,000-rule policy needs about
/// 7 million); past it the check stops and says so.
pub const SHADOW_BUDGET: u64 = 200_000_000;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Warning,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub line: u32,
    pub message: String,
}

fn opt_covers<T>(a: &Option<T>, b: &Option<T>, covers: impl Fn(&T, &T) -> bool) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => covers(a, b),
    }
}

/// Whether rule `a` matches every packet rule `b` matches (conservative).
pub fn covers(a: &Rule, b: &Rule) -> bool {
    let pat = |x: &std::sync::Arc<ContextPattern>, y: &std::sync::Arc<ContextPattern>| x.covers(y);
    let (ra, rb) = (a.rare(), b.rare());
    (a.hook == HookSel::Any || a.hook == b.hook)
        && opt_covers(&a.proto, &b.proto, |x, y| x == y)
        && opt_covers(&ra.sport, &rb.sport, |x, y| x.covers(y))
        && opt_covers(&a.dport.get(), &b.dport.get(), |x, y| x.covers(y))
        && opt_covers(&a.saddr, &b.saddr, |x, y| x.covers(y))
        && opt_covers(&a.daddr, &b.daddr, |x, y| x.covers(y))
        && opt_covers(&a.uid, &b.uid, |x, y| x.covers(y))
        && opt_covers(&ra.gid, &rb.gid, |x, y| x.covers(y))
        && opt_covers(&ra.iif, &rb.iif, |x, y| x == y)
        && opt_covers(&ra.oif, &rb.oif, |x, y| x == y)
        && opt_covers(&a.source, &b.source, pat)
        && opt_covers(&a.dest, &b.dest, pat)
        && opt_covers(&ra.secmark, &rb.secmark, pat)
        && opt_covers(&ra.peer, &rb.peer, pat)
        && opt_covers(&ra.source_level, &rb.source_level, |x, y| x == y)
        && opt_covers(&ra.dest_level, &rb.dest_level, |x, y| x == y)
        && opt_covers(&ra.peer_level, &rb.peer_level, |x, y| x == y)
        && opt_covers(&ra.mls, &rb.mls, |x, y| x == y)
        && opt_covers(&ra.source_process, &rb.source_process, |x, y| x == y)
        && opt_covers(&ra.dest_process, &rb.dest_process, |x, y| x == y)
}

/// Every type a policy names (patterns, sets, permissive domains).
pub fn named_types(p: &Policy) -> Vec<String> {
    let mut v: Vec<String> = p.permissive_domains.clone();
    for types in p.sets.values() {
        v.extend(types.iter().cloned());
    }
    for r in &p.rules {
        for pat in [&r.source, &r.dest, &r.rare().secmark, &r.rare().peer].into_iter().flatten() {
            if let TypePattern::One(t) = &pat.type_ {
                v.push(t.to_string());
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

/// One type a context pattern names, if it names any (`covers` needs an
/// earlier pattern to match every named type, so in particular this one).
fn some_type(p: &Option<std::sync::Arc<ContextPattern>>) -> Option<&str> {
    match &p.as_ref()?.type_ {
        TypePattern::Any => None,
        TypePattern::One(t) => Some(t),
        TypePattern::Set { types, .. } => types.iter().next().map(|t| &**t),
    }
}

/// Rules grouped by the source and destination types they name, so that the
/// shadowed-rule check compares a rule only with earlier rules that can
/// cover it. A rule that names a source type can only be covered by rules
/// whose source names that type or no type at all; likewise for dest.
#[derive(Default)]
struct ShadowIndex<'a> {
    /// Neither source nor dest names a type.
    neither: Vec<u32>,
    /// Source names no type; by the dest types named.
    by_dest: HashMap<&'a str, Vec<u32>>,
    /// Dest names no type; by the source types named.
    by_source: HashMap<&'a str, Vec<u32>>,
    /// Both name types; by the source types named.
    by_both: HashMap<&'a str, Vec<u32>>,
}

impl<'a> ShadowIndex<'a> {
    fn build(rules: &'a [Rule]) -> Self {
        let mut ix = ShadowIndex::default();
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            let src = r.source.as_ref().and_then(|p| p.type_.named_types());
            let dst = r.dest.as_ref().and_then(|p| p.type_.named_types());
            match (src, dst) {
                (None, None) => ix.neither.push(i),
                (None, Some(d)) => d.into_iter().for_each(|t| ix.by_dest.entry(t).or_default().push(i)),
                (Some(s), None) => s.into_iter().for_each(|t| ix.by_source.entry(t).or_default().push(i)),
                (Some(s), Some(_)) => s.into_iter().for_each(|t| ix.by_both.entry(t).or_default().push(i)),
            }
        }
        ix
    }

    /// Indices of the rules before `j` that may cover `b`, ascending (a
    /// superset of those that do).
    fn candidates(&self, b: &Rule, j: u32, out: &mut Vec<u32>) {
        out.clear();
        let (s, d) = (some_type(&b.source), some_type(&b.dest));
        let none: &[u32] = &[];
        fn get<'m>(m: &'m HashMap<&str, Vec<u32>>, t: Option<&str>) -> &'m [u32] {
            t.and_then(|t| m.get(t)).map_or(&[], |v| v)
        }
        let lists: [&[u32]; 4] = [
            &self.neither,
            get(&self.by_dest, d),
            get(&self.by_source, s),
            // Both must name types for an earlier rule naming both to cover.
            if d.is_some() { get(&self.by_both, s) } else { none },
        ];
        for l in lists {
            out.extend(l.iter().copied().take_while(|&i| i < j));
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// Findings that need no SELinux.
pub fn lint(p: &Policy) -> Vec<Finding> {
    lint_with_budget(p, SHADOW_BUDGET)
}

/// Everything `labelgate check` reports: [`lint`], then one finding per type
/// in `unknown` (the types the loaded SELinux policy does not know, from
/// [`unknown_types`]; `None` when SELinux is not active), at the line of the
/// first rule naming it (0: named only by a set or `permissive_domains`).
pub fn check_findings(p: &Policy, unknown: Option<&[String]>) -> Vec<Finding> {
    let mut out = lint(p);
    for t in unknown.unwrap_or_default() {
        let names = |r: &&Rule| {
            [&r.source, &r.dest, &r.rare().secmark, &r.rare().peer]
                .into_iter()
                .flatten()
                .any(|pat| pat.type_.named_types().is_some_and(|ts| ts.contains(&t.as_str())))
        };
        let line = p.rules.iter().find(names).map_or(0, |r| r.line);
        out.push(Finding {
            severity: Severity::Warning,
            line,
            message: format!("type {t} is not known to the loaded SELinux policy: a rule naming it never matches it"),
        });
    }
    out
}

/// Whether some packet can match both the rule and the scope entry (a
/// conservative answer: conditions the entry does not have are ignored).
fn overlaps(r: &Rule, e: &ScopeEntry) -> bool {
    fn both<T>(a: Option<&T>, b: Option<&T>, f: impl Fn(&T, &T) -> bool) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => f(a, b),
            _ => true,
        }
    }
    let nets = |a: &crate::policy::pattern::NetSet, b: &crate::policy::pattern::NetSet| {
        a.0.iter().any(|x| b.0.iter().any(|y| x.contains(&y.network()) || y.contains(&x.network())))
    };
    (r.hook == HookSel::Any || e.hook == HookSel::Any || r.hook == e.hook)
        && both(r.proto.as_ref(), e.proto.as_ref(), |a, b| a == b)
        && both(r.dport.get(), e.dport.as_ref(), |a, b| {
            a.ranges().iter().any(|(lo, hi)| b.ranges().iter().any(|(l, h)| lo <= h && l <= hi))
        })
        && both(r.saddr.as_deref(), e.saddr.as_ref(), nets)
        && both(r.daddr.as_deref(), e.daddr.as_ref(), nets)
}

/// [`lint`] with a bound on the rule pairs the shadowed-rule check compares.
pub fn lint_with_budget(p: &Policy, budget: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let warn = |line, message| Finding { severity: Severity::Warning, line, message };
    let ix = ShadowIndex::build(&p.rules);
    let mut cands = Vec::new();
    let mut compared: u64 = 0;
    let mut shadow_check = true;
    if p.default != RuleVerdict::Accept && p.scope.is_none() {
        out.push(warn(
            0,
            "default = \"drop\" and no [[scope]]: `labelgate rules` queues every new connection on the hooks the \
             rules name, so when enforcing everything the rules do not accept is dropped (the host's DNS, ping and \
             SSH included); add [[scope]] entries naming the traffic this policy governs (docs/POLICY.md)"
                .to_string(),
        ));
    }
    for (j, b) in p.rules.iter().enumerate() {
        if let Some(scope) = &p.scope {
            if !scope.iter().any(|e| overlaps(b, e)) {
                out.push(warn(
                    b.line,
                    format!(
                        "rule {:?} can never match: it names no traffic in the policy's [[scope]], and packets \
                         outside the scope are accepted without consulting the rules",
                        b.name
                    ),
                ));
            }
        }
        if shadow_check {
            ix.candidates(b, j as u32, &mut cands);
            compared += cands.len() as u64;
            if compared > budget {
                shadow_check = false;
                out.push(warn(
                    b.line,
                    format!(
                        "shadowed-rule check stopped at rule {:?} after comparing {budget} rule pairs: \
                         it and the rules after it were not checked for shadowing",
                        b.name
                    ),
                ));
            } else if let Some(a) = cands.iter().filter_map(|&i| p.rules.get(i as usize)).find(|a| covers(a, b)) {
                let what = if a.verdict == b.verdict { "redundant" } else { "never used, and its verdict differs" };
                out.push(warn(
                    b.line,
                    format!(
                        "rule {:?} is shadowed by rule {:?} (line {}), which matches everything it does: {what}",
                        b.name, a.name, a.line
                    ),
                ));
            }
        }
        if (b.rare().peer.is_some() || b.rare().peer_level.is_some())
            && p.dois.is_empty()
            && p.address_labels.is_empty()
        {
            out.push(warn(
                b.line,
                format!("rule {:?} can never match: it needs a peer label, but the policy has no [[doi]] and no [[address_label]]", b.name),
            ));
        }
        if b.hook == HookSel::Forward && b.dest.as_ref().is_some_and(|d| !d.type_.matches("unlabeled_t")) {
            out.push(warn(
                b.line,
                format!(
                    "rule {:?} matches only under `labelgate run --other-netns`: without it forwarded packets have \
                     no destination socket on this host, so dest is unlabeled_t",
                    b.name
                ),
            ));
        }
    }
    out
}

/// With SELinux active, the types the loaded policy does not know. `None`
/// when SELinux is not active here.
pub fn unknown_types(p: &Policy) -> Option<Vec<String>> {
    let mls = match selinux::kernel_support() {
        selinux::KernelSupport::SELinux => false,
        selinux::KernelSupport::SELinuxMLS => true,
        _ => return None,
    };
    let mut unknown = Vec::new();
    for t in named_types(p) {
        let text = if mls { format!("system_u:object_r:{t}:s0") } else { format!("system_u:object_r:{t}") };
        let Ok(c) = std::ffi::CString::new(text) else {
            continue;
        };
        let ctx = selinux::SecurityContext::from_c_str(&c, false);
        if ctx.check() == Some(false) {
            unknown.push(t);
        }
    }
    Some(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Findings as "LINE: message"; a text without a `default` gets
    /// `default = "accept"` (so it needs no scope).
    fn lint_text(t: &str) -> Vec<String> {
        let t = if t.contains("default =") { t.to_string() } else { format!("default = \"accept\"\n{t}") };
        lint(&Policy::from_toml(&t, "t").unwrap()).into_iter().map(|f| format!("{}: {}", f.line, f.message)).collect()
    }

    #[test]
    fn finds_shadowed_rules() {
        let t = r#"
[sets]
web = ["httpd_t", "nginx_t"]
[[rule]]
name = "web-any"
source = "@web"
proto = "tcp"
dport = "1-1024"
verdict = "accept"
[[rule]]
name = "httpd-80"
hook = "output"
source = "httpd_t"
proto = "tcp"
dport = [80, 443]
verdict = "drop"
[[rule]]
name = "other"
source = "sshd_t"
verdict = "drop"
"#;
        let f = lint_text(t);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("11: rule \"httpd-80\" is shadowed by rule \"web-any\" (line 5)"), "{f:?}");
        assert!(f[0].contains("verdict differs"));
    }

    #[test]
    fn process_keys_narrow_a_rule_for_shadowing() {
        let r = |name: &str, keys: &str| {
            format!("[[rule]]\nname = \"{name}\"\nsource = \"httpd_t\"\n{keys}verdict = \"drop\"\n")
        };
        // A rule with process keys does not shadow one without them, nor
        // one with the same keys at the other end.
        let t = r("a", "source_unit = \"web.service\"\n") + &r("b", "");
        assert!(lint_text(&t).is_empty(), "{:?}", lint_text(&t));
        let t = r("a", "source_container = \"0123456789ab\"\n") + &r("b", "dest_container = \"0123456789ab\"\n");
        assert!(lint_text(&t).is_empty(), "{:?}", lint_text(&t));
        // One without them shadows one with them; equal keys shadow.
        let t = r("a", "") + &r("b", "dest_exe = \"/usr/sbin/*\"\n");
        assert_eq!(lint_text(&t).len(), 1, "{:?}", lint_text(&t));
        let t = r("a", "dest_exe = \"/usr/sbin/*\"\n") + &r("b", "dest_exe = \"/usr/sbin/*\"\n");
        assert_eq!(lint_text(&t).len(), 1, "{:?}", lint_text(&t));
    }

    #[test]
    fn narrower_earlier_rules_do_not_shadow() {
        let t = "[[rule]]\nname = \"a\"\nproto = \"tcp\"\ndport = 80\nverdict = \"drop\"\n[[rule]]\nname = \"b\"\nproto = \"tcp\"\ndport = \"1-1024\"\nverdict = \"drop\"\n";
        assert!(lint_text(t).is_empty());
        let t = "[[rule]]\nname = \"a\"\nuid = [1, 2]\nverdict = \"drop\"\n[[rule]]\nname = \"b\"\nuid = [2, 3]\nverdict = \"drop\"\n";
        assert!(lint_text(t).is_empty());
    }

    #[test]
    fn finds_rules_that_can_never_match() {
        let f = lint_text("[[rule]]\nname = \"p\"\npeer_level = \">= s1\"\nverdict = \"accept\"\n");
        assert!(f[0].contains("needs a peer label"), "{f:?}");
        let f = lint_text("[[rule]]\nname = \"f\"\nhook = \"forward\"\ndest = \"httpd_t\"\nverdict = \"accept\"\n");
        assert!(f[0].contains("forwarded packets"), "{f:?}");
        // With --other-netns a forwarded packet's dest is a container's
        // socket: the rule can match then, and the warning says so.
        assert!(f[0].contains("matches only under `labelgate run --other-netns`"), "{f:?}");
        assert!(!f[0].contains("never match"), "{f:?}");
    }

    #[test]
    fn every_warning_is_counted_unknown_types_included() {
        let t = "default = \"accept\"\npermissive_domains = [\"x_t\"]\n[[rule]]\nname = \"a\"\nsource = \"httpd_t\"\nverdict = \"accept\"\n\
                 [[rule]]\nname = \"b\"\nsource = \"bakup_t\"\nverdict = \"drop\"\n";
        let p = Policy::from_toml(t, "t").unwrap();
        assert!(check_findings(&p, None).is_empty());
        assert!(check_findings(&p, Some(&[])).is_empty());
        let f = check_findings(&p, Some(&["bakup_t".to_string(), "x_t".to_string()]));
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!((f[0].line, f[1].line), (7, 0), "{f:?}");
        assert!(f[0].message.starts_with("type bakup_t is not known"), "{f:?}");
    }

    #[test]
    fn default_drop_without_scope_is_a_warning() {
        let f = lint_text("default = \"drop\"\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("0: default = \"drop\" and no [[scope]]"), "{f:?}");
        // The default is drop when not written.
        assert_eq!(lint(&Policy::from_toml("", "t").unwrap()).len(), 1);
        assert!(lint_text("default = \"drop\"\n[[scope]]\nproto = \"tcp\"\n").is_empty());
        assert!(lint_text("default = \"accept\"\n").is_empty());
    }

    #[test]
    fn rules_outside_the_scope_are_found() {
        let head = "default = \"drop\"\n[[scope]]\nhook = \"output\"\nproto = \"tcp\"\ndport = \"5000-5500\"\ndaddr = \"10.0.0.0/8\"\n";
        for (rule, never) in [
            ("proto = \"tcp\"\ndport = 5432\n", false),
            ("proto = \"tcp\"\ndport = [22, 5499]\n", false),
            ("", false),
            ("daddr = \"10.1.0.0/16\"\n", false),
            ("daddr = \"0.0.0.0/0\"\n", false),
            ("proto = \"tcp\"\ndport = 22\n", true),
            ("proto = \"udp\"\n", true),
            ("hook = \"input\"\n", true),
            ("daddr = \"192.168.0.0/16\"\n", true),
        ] {
            let f = lint_text(&format!("{head}[[rule]]\nname = \"r\"\n{rule}verdict = \"accept\"\n"));
            assert_eq!(
                f.iter().any(|f| f.contains("names no traffic in the policy's [[scope]]")),
                never,
                "{rule}: {f:?}"
            );
        }
    }

    #[test]
    fn selinux_check_is_skipped_when_inactive() {
        let p = Policy::from_toml("permissive_domains = [\"x_t\"]\n", "t").unwrap();
        assert_eq!(named_types(&p), vec!["x_t".to_string()]);
        if selinux::kernel_support() == selinux::KernelSupport::Unsupported {
            assert_eq!(unknown_types(&p), None);
        }
    }

    /// The shadowed-rule check as it was: every earlier rule, in order.
    fn shadowed_by_all_pairs(p: &Policy) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, b) in p.rules.iter().enumerate() {
            if let Some(i) = p.rules.iter().take(j).position(|a| covers(a, b)) {
                out.push((j, i));
            }
        }
        out
    }

    fn shadowed(p: &Policy, findings: &[Finding]) -> Vec<(usize, usize)> {
        let line_of = |l: u32| p.rules.iter().position(|r| r.line == l).unwrap();
        findings
            .iter()
            .filter(|f| f.message.contains("is shadowed by"))
            .map(|f| {
                let by = f.message.split("(line ").nth(1).unwrap().split(')').next().unwrap();
                (line_of(f.line), line_of(by.parse().unwrap()))
            })
            .collect()
    }

    #[test]
    fn pruned_shadow_check_finds_what_all_pairs_find() {
        // Few types, sets, wildcards, full contexts and ports, so that many
        // rules shadow others through every index bucket.
        let mut t = String::from("[sets]\nab = [\"a_t\", \"b_t\"]\nbc = [\"b_t\", \"c_t\"]\n");
        let pats = ["a_t", "b_t", "c_t", "@ab", "@bc", "*", "u:r:a_t", "*:*:b_t:s0", ""];
        for i in 0..600usize {
            t.push_str(&format!("[[rule]]\nname = \"r{i}\"\n"));
            let (s, d) = (pats[i * 7 % pats.len()], pats[i * 5 / 3 % pats.len()]);
            if !s.is_empty() {
                t.push_str(&format!("source = \"{s}\"\n"));
            }
            if !d.is_empty() {
                t.push_str(&format!("dest = \"{d}\"\n"));
            }
            if i % 3 != 0 {
                t.push_str(&format!("proto = \"tcp\"\ndport = \"{}-{}\"\n", i % 5 * 10, i % 5 * 10 + i % 4 * 20));
            }
            t.push_str(&format!("verdict = \"{}\"\n", if i % 2 == 0 { "accept" } else { "drop" }));
        }
        let p = Policy::from_toml(&t, "t").unwrap();
        let want = shadowed_by_all_pairs(&p);
        assert!(want.len() > 100, "{}", want.len());
        assert_eq!(shadowed(&p, &lint(&p)), want);
    }

    #[test]
    fn shadow_check_stops_at_its_budget_and_says_so() {
        let t = "default = \"accept\"\n[[rule]]\nname = \"a\"\nverdict = \"drop\"\n[[rule]]\nname = \"b\"\nverdict = \"drop\"\n[[rule]]\nname = \"c\"\nverdict = \"drop\"\n";
        let p = Policy::from_toml(t, "t").unwrap();
        assert_eq!(lint(&p).len(), 2);
        let f = lint_with_budget(&p, 1);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[1].message.contains("shadowed-rule check stopped at rule \"c\""), "{f:?}");
    }
}
