//! `labelgate check` diagnostics beyond compiling: rules that can never
//! match, rules shadowed by earlier ones, and (with SELinux active) types
//! the loaded SELinux policy does not know.

use crate::policy::pattern::{ContextPattern, TypePattern};
use crate::policy::{HookSel, Policy, Rule};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Warning,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub line: usize,
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
    let pat = |x: &ContextPattern, y: &ContextPattern| x.covers(y);
    (a.hook == HookSel::Any || a.hook == b.hook)
        && opt_covers(&a.proto, &b.proto, |x, y| x == y)
        && opt_covers(&a.sport, &b.sport, |x, y| x.covers(y))
        && opt_covers(&a.dport, &b.dport, |x, y| x.covers(y))
        && opt_covers(&a.saddr, &b.saddr, |x, y| x.covers(y))
        && opt_covers(&a.daddr, &b.daddr, |x, y| x.covers(y))
        && opt_covers(&a.uid, &b.uid, |x, y| x.covers(y))
        && opt_covers(&a.gid, &b.gid, |x, y| x.covers(y))
        && opt_covers(&a.iif, &b.iif, |x, y| x == y)
        && opt_covers(&a.oif, &b.oif, |x, y| x == y)
        && opt_covers(&a.source, &b.source, pat)
        && opt_covers(&a.dest, &b.dest, pat)
        && opt_covers(&a.secmark, &b.secmark, pat)
        && opt_covers(&a.peer, &b.peer, pat)
        && opt_covers(&a.source_level, &b.source_level, |x, y| x == y)
        && opt_covers(&a.dest_level, &b.dest_level, |x, y| x == y)
        && opt_covers(&a.peer_level, &b.peer_level, |x, y| x == y)
        && opt_covers(&a.mls, &b.mls, |x, y| x == y)
}

/// Every type a policy names (patterns, sets, permissive domains).
pub fn named_types(p: &Policy) -> Vec<String> {
    let mut v: Vec<String> = p.permissive_domains.clone();
    for types in p.sets.values() {
        v.extend(types.iter().cloned());
    }
    for r in &p.rules {
        for pat in [&r.source, &r.dest, &r.secmark, &r.peer].into_iter().flatten() {
            if let TypePattern::One(t) = &pat.type_ {
                v.push(t.to_string());
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

/// Findings that need no SELinux.
pub fn lint(p: &Policy) -> Vec<Finding> {
    let mut out = Vec::new();
    let warn = |line, message| Finding { severity: Severity::Warning, line, message };
    for (j, b) in p.rules.iter().enumerate() {
        if let Some((_, a)) = p.rules.iter().enumerate().take(j).find(|(_, a)| covers(a, b)) {
            let what = if a.verdict == b.verdict { "redundant" } else { "never used, and its verdict differs" };
            out.push(warn(
                b.line,
                format!(
                    "rule {:?} is shadowed by rule {:?} (line {}), which matches everything it does: {what}",
                    b.name, a.name, a.line
                ),
            ));
        }
        if (b.peer.is_some() || b.peer_level.is_some()) && p.dois.is_empty() && p.address_labels.is_empty() {
            out.push(warn(
                b.line,
                format!("rule {:?} can never match: it needs a peer label, but the policy has no [[doi]] and no [[address_label]]", b.name),
            ));
        }
        if b.hook == HookSel::Forward && b.dest.as_ref().is_some_and(|d| !d.type_.matches("unlabeled_t")) {
            out.push(warn(
                b.line,
                format!("rule {:?} can never match: forwarded packets have no local destination socket, so dest is unlabeled_t", b.name),
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

    fn lint_text(t: &str) -> Vec<String> {
        lint(&Policy::from_toml(t, "t").unwrap()).into_iter().map(|f| format!("{}: {}", f.line, f.message)).collect()
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
        assert!(f[0].starts_with("10: rule \"httpd-80\" is shadowed by rule \"web-any\" (line 4)"), "{f:?}");
        assert!(f[0].contains("verdict differs"));
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
    }

    #[test]
    fn selinux_check_is_skipped_when_inactive() {
        let p = Policy::from_toml("permissive_domains = [\"x_t\"]\n", "t").unwrap();
        assert_eq!(named_types(&p), vec!["x_t".to_string()]);
        if selinux::kernel_support() == selinux::KernelSupport::Unsupported {
            assert_eq!(unknown_types(&p), None);
        }
    }
}
