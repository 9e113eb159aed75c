//! `labelgate explain`: decide a hypothetical packet and say why, rule by rule.
//!
//! Owns the question's labels as the daemon would build them
//! ([`label_arg`]: a type alone is filled in the way the daemon fills in
//! that kind of label) and the rule-by-rule text.

use crate::context::{ContextError, SecurityContext};
use crate::labels::{Hook, Label, Labels, Origin};
use crate::packet::{PacketInfo, Proto};
use crate::policy::{Facts, Mode, Policy, RuleVerdict, Verdict};
use crate::sepolicy::AccessOracle;
use std::fmt::Write as _;
use std::net::IpAddr;

/// A context argument that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Both parts are cut to a bounded excerpt of the argument.
    #[error("bad context {arg:?}: {message}")]
    Context { arg: String, message: String },
}

/// Which label a context argument stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// A local socket's label (`--source`, `--dest`).
    Socket,
    /// The packet's secmark (`--secmark`).
    Secmark,
    /// The peer label (`--peer`).
    Peer,
}

/// The label the daemon gives for a context argument: a full context as
/// written, or a type alone completed as the daemon completes that label:
///
/// * `unlabeled_t`: the daemon's own unlabeled label
///   ([`Label::unlabeled`], `system_u:object_r:unlabeled_t:s0`), which it
///   gives to every end it cannot label;
/// * `netlabel_peer_t`: the peer label of a CIPSO/CALIPSO option at `s0`
///   with no static label ([`crate::resolve::netlabel_peer`],
///   `system_u:object_r:netlabel_peer_t:s0`);
/// * any other type: `system_u:system_r:TYPE:s0` for a socket or peer (a
///   system process), `system_u:object_r:TYPE:s0` for a secmark (packet
///   types are objects).
pub fn label_arg(arg: &str, end: End) -> Result<Label, ExplainError> {
    let bad = |e: ContextError| ExplainError::Context {
        arg: crate::policy::excerpt(arg).into_owned(),
        message: crate::policy::excerpt(&e.to_string()).into_owned(),
    };
    let origin = match end {
        End::Socket => Origin::Socket,
        End::Secmark => Origin::Secmark,
        End::Peer => Origin::Static,
    };
    if arg.contains(':') {
        return arg.parse().map(|context| Label { context, origin }).map_err(bad);
    }
    match arg {
        "unlabeled_t" => return Ok(Label::unlabeled("explain")),
        "netlabel_peer_t" => {
            return Ok(Label {
                context: crate::resolve::netlabel_peer(crate::mls::Level::s0()),
                origin: Origin::PeerOption,
            })
        }
        _ => {}
    }
    let role = if end == End::Secmark { "object_r" } else { "system_r" };
    let level = crate::mls::Range::single(crate::mls::Level::s0());
    SecurityContext::new("system_u", role, arg, Some(level)).map(|context| Label { context, origin }).map_err(bad)
}

/// The packet and labels to explain.
#[derive(Clone, Debug)]
pub struct Question {
    pub hook: Hook,
    /// The labels as the daemon's resolver would give them (`labelgate
    /// explain` sets no process, so rules keyed on one never match).
    pub labels: Labels,
    pub proto: Proto,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub iif: Option<String>,
    pub oif: Option<String>,
}

/// Explain the decision as text. The decision is the daemon's own
/// (`Policy::decide` through the index); the walk over every rule shows why
/// the earlier ones did not match.
pub fn explain(p: &Policy, q: &Question, mode: Mode) -> String {
    explain_with(p, q, mode, None)
}

/// [`explain`], asking `oracle` (the loaded SELinux policy) for a rule or
/// default with verdict `selinux`; with `None` it says it cannot ask.
pub fn explain_with(p: &Policy, q: &Question, mode: Mode, oracle: Option<&dyn AccessOracle>) -> String {
    let pkt = PacketInfo {
        src: q.saddr,
        dst: q.daddr,
        proto: q.proto,
        sport: q.sport,
        dport: q.dport,
        icmp: None,
        tcp_syn: q.proto == Proto::Tcp,
        label_option: None,
    };
    let labels = &q.labels;
    let iif = || q.iif.clone();
    let oif = || q.oif.clone();
    let facts = Facts { hook: q.hook, pkt: &pkt, labels, iif: &iif, oif: &oif };

    let mut s = String::new();
    let _ = writeln!(
        s,
        "packet: hook={} {} {}{} -> {}{} source={} dest={}{}{}",
        q.hook,
        q.proto,
        q.saddr,
        q.sport.map(|p| format!(":{p}")).unwrap_or_default(),
        q.daddr,
        q.dport.map(|p| format!(":{p}")).unwrap_or_default(),
        labels.source.context,
        labels.dest.context,
        labels.uid.map(|u| format!(" uid={u}")).unwrap_or_default(),
        labels.secmark.as_ref().map(|m| format!(" secmark={m}")).unwrap_or_default(),
    );
    if let Some(gid) = labels.gid {
        let _ = writeln!(s, "        gid={gid}");
    }
    if let Some(peer) = &labels.peer {
        let _ = writeln!(s, "        peer={}", peer.context);
    }
    if !p.in_scope(q.hook, &pkt) {
        let _ = writeln!(
            s,
            "outside the policy's [[scope]]: `labelgate rules` does not queue it, and a queued one is accepted \
             without consulting the rules\nverdict: accept (outside scope, mode: {})",
            format!("{mode:?}").to_lowercase()
        );
        return s;
    }
    let decided = p.first_match(&facts);
    for (i, r) in p.rules.iter().enumerate() {
        match r.check(&facts) {
            Ok(()) => {
                let _ = writeln!(s, "rule {} {:?} (line {}): MATCHES -> {}", i + 1, r.name, r.line, r.verdict);
                break;
            }
            Err(why) => {
                let _ = writeln!(s, "rule {} {:?} (line {}): no match ({why} differs)", i + 1, r.name, r.line);
            }
        }
    }
    if decided.is_none() {
        let _ = writeln!(s, "no rule matches: default verdict {}", p.default);
    }
    // Rule hit counters are not touched: decide on a copy of the facts only
    // through the pure parts.
    let asked = decided.and_then(|i| p.rules.get(i)).map_or(p.default, |r| r.verdict);
    let mut policy_permissive = false;
    let table = match asked {
        RuleVerdict::Accept => Verdict::Accept,
        RuleVerdict::Drop => Verdict::Drop,
        RuleVerdict::Selinux => {
            let perm = crate::sepolicy::permission(q.hook);
            let asker = format!("{} asks the loaded SELinux policy", p.rule_name(decided));
            match oracle.map(|o| o.ask(&labels.source.context, &labels.dest.context, perm)) {
                Some(Ok(a)) => {
                    let _ = writeln!(
                        s,
                        "selinux: {asker}: {} {{ {perm} }} for scontext={} tcontext={} tclass={}{}",
                        if a.allowed { "allowed" } else { "denied" },
                        labels.source.context,
                        labels.dest.context,
                        crate::sepolicy::CLASS,
                        if a.permissive { " (the policy runs this domain permissive)" } else { "" }
                    );
                    policy_permissive = a.permissive && !a.allowed;
                    if a.allowed {
                        Verdict::Accept
                    } else {
                        Verdict::Drop
                    }
                }
                Some(Err(e)) => {
                    let _ = writeln!(s, "selinux: {asker}, which cannot be asked here ({e}): decided as a denial");
                    Verdict::Drop
                }
                None => {
                    let _ = writeln!(
                        s,
                        "selinux: {asker}, which cannot be asked here (SELinux is not active): decided as a denial"
                    );
                    Verdict::Drop
                }
            }
        }
    };
    let rule_permissive = decided.and_then(|i| p.rules.get(i)).is_some_and(|r| r.permissive);
    let domain_permissive = p.domain_permissive(labels.source.context.type_());
    let verdict = if table == Verdict::Drop
        && (mode == Mode::Permissive || rule_permissive || domain_permissive || policy_permissive)
    {
        let why = if mode == Mode::Permissive {
            "global mode is permissive"
        } else if rule_permissive {
            "the rule is permissive"
        } else if domain_permissive {
            "the source domain is in permissive_domains"
        } else {
            "the loaded SELinux policy runs the source domain permissive"
        };
        let _ =
            writeln!(s, "permissive: {why}; the denial would be recorded with permissive=1 and the packet accepted");
        Verdict::Accept
    } else {
        table
    };
    let _ = writeln!(
        s,
        "verdict: {verdict} (table: {table}, rule: {}, mode: {})",
        p.rule_name(decided),
        format!("{mode:?}").to_lowercase()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(src: &str, dport: u16) -> Question {
        Question {
            hook: Hook::Output,
            labels: Labels {
                source: label_arg(src, End::Socket).unwrap(),
                dest: label_arg("system_u:system_r:postgresql_t:s0", End::Socket).unwrap(),
                ..Labels::unresolved("explain")
            },
            proto: Proto::Tcp,
            sport: None,
            dport: Some(dport),
            saddr: "127.0.0.1".parse().unwrap(),
            daddr: "127.0.0.1".parse().unwrap(),
            iif: None,
            oif: None,
        }
    }

    #[test]
    fn explains_the_article() {
        let p =
            Policy::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/article.toml"))).unwrap();
        let out = explain(&p, &q("system_u:system_r:intruder_t:s0", 5432), Mode::Enforcing);
        assert!(out.contains("rule 1 \"web-to-db-out\" (line 10): no match (source differs)"), "{out}");
        assert!(out.contains("rule 2 \"web-to-db-in\" (line 19): no match (hook differs)"), "{out}");
        assert!(out.contains("rule 3 \"db-port-others\" (line 28): MATCHES -> drop"), "{out}");
        assert!(out.ends_with("verdict: drop (table: drop, rule: db-port-others, mode: enforcing)\n"), "{out}");
        let out = explain(&p, &q("system_u:system_r:httpd_t:s0", 5432), Mode::Permissive);
        assert!(out.ends_with("verdict: accept (table: accept, rule: web-to-db-out, mode: permissive)\n"), "{out}");
        let out = explain(&p, &q("system_u:system_r:intruder_t:s0", 5432), Mode::Permissive);
        assert!(out.contains("permissive: global mode is permissive"), "{out}");
        let out = explain(&p, &q("system_u:system_r:intruder_t:s0", 22), Mode::Enforcing);
        assert!(out.contains("no rule matches: default verdict accept"), "{out}");
        assert_eq!(p.rules[2].hits.load(std::sync::atomic::Ordering::Relaxed), 0, "explain counts no hits");
    }

    #[test]
    fn a_packet_outside_the_scope_is_accepted_as_the_daemon_does() {
        let p = Policy::from_toml(
            "default = \"drop\"\n[[scope]]\nproto = \"tcp\"\ndport = 5432\n[[rule]]\nname = \"no\"\nverdict = \"drop\"\n",
            "t",
        )
        .unwrap();
        let out = explain(&p, &q("system_u:system_r:httpd_t:s0", 22), Mode::Enforcing);
        assert!(out.contains("outside the policy's [[scope]]") && out.contains("verdict: accept"), "{out}");
        let out = explain(&p, &q("system_u:system_r:httpd_t:s0", 5432), Mode::Enforcing);
        assert!(out.contains("MATCHES -> drop") && out.contains("verdict: drop"), "{out}");
    }

    /// A type alone becomes the label the daemon gives that kind of end:
    /// `unlabeled_t` is the daemon's own unlabeled context (object_r), so a
    /// rule on `system_u:object_r:unlabeled_t` matches in explain exactly
    /// as it does in the daemon.
    #[test]
    fn a_type_alone_is_completed_as_the_daemon_labels() {
        let l = label_arg("unlabeled_t", End::Socket).unwrap();
        assert_eq!(l.context, crate::labels::Label::unlabeled("no_socket").context);
        assert_eq!(l.context.to_string(), "system_u:object_r:unlabeled_t:s0");
        assert_eq!(label_arg("httpd_t", End::Socket).unwrap().context.to_string(), "system_u:system_r:httpd_t:s0");
        assert_eq!(
            label_arg("postgresql_packet_t", End::Secmark).unwrap().context.to_string(),
            "system_u:object_r:postgresql_packet_t:s0"
        );
        assert_eq!(
            label_arg("netlabel_peer_t", End::Peer).unwrap().context,
            crate::resolve::netlabel_peer(crate::mls::Level::s0())
        );
        let full = label_arg("staff_u:staff_r:staff_t:s0-s0:c0.c1023", End::Socket).unwrap();
        assert_eq!(full.context.to_string(), "staff_u:staff_r:staff_t:s0-s0:c0.c1023");
        assert!(label_arg("bad type", End::Socket).is_err());
        let long = "x".repeat(100_000);
        let e = label_arg(&format!("a:b:{long}"), End::Socket).unwrap_err().to_string();
        assert!(e.len() < 2048, "{} bytes", e.len());

        let p = Policy::from_toml(
            "default = \"accept\"\n[[rule]]\nname = \"no-unlabeled\"\nsource = \"system_u:object_r:unlabeled_t\"\nverdict = \"drop\"\n",
            "t",
        )
        .unwrap();
        let out = explain(&p, &q("unlabeled_t", 5432), Mode::Enforcing);
        assert!(out.contains("source=system_u:object_r:unlabeled_t:s0"), "{out}");
        assert!(out.ends_with("verdict: drop (table: drop, rule: no-unlabeled, mode: enforcing)\n"), "{out}");
    }

    #[test]
    fn a_selinux_verdict_shows_the_policys_answer_and_the_rule_that_asked() {
        use crate::sepolicy::fake::{oracle, FakePolicy};
        let p = Policy::from_toml(
            "default = \"drop\"\n[[rule]]\nname = \"db-by-selinux\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"selinux\"\n",
            "t",
        )
        .unwrap();
        let (fake, o) = oracle(FakePolicy::allowing(&[("httpd_t", "postgresql_t", "send")]));
        fake.permissive_types.lock().unwrap().push("unconfined_t".into());
        let out = explain_with(&p, &q("system_u:system_r:httpd_t:s0", 5432), Mode::Enforcing, Some(&o));
        assert!(out.contains("rule 1 \"db-by-selinux\" (line 2): MATCHES -> selinux"), "{out}");
        assert!(out.contains("selinux: db-by-selinux asks the loaded SELinux policy: allowed { send }"), "{out}");
        assert!(out.ends_with("verdict: accept (table: accept, rule: db-by-selinux, mode: enforcing)\n"), "{out}");
        let out = explain_with(&p, &q("system_u:system_r:intruder_t:s0", 5432), Mode::Enforcing, Some(&o));
        assert!(
            out.contains("denied { send }")
                && out.ends_with("verdict: drop (table: drop, rule: db-by-selinux, mode: enforcing)\n"),
            "{out}"
        );
        let out = explain_with(&p, &q("system_u:system_r:unconfined_t:s0", 5432), Mode::Enforcing, Some(&o));
        assert!(out.contains("the loaded SELinux policy runs the source domain permissive"), "{out}");
        assert!(out.contains("verdict: accept (table: drop"), "{out}");
        let out = explain(&p, &q("system_u:system_r:httpd_t:s0", 5432), Mode::Enforcing);
        assert!(out.contains("cannot be asked here (SELinux is not active): decided as a denial"), "{out}");
        assert!(out.contains("verdict: drop"), "{out}");
    }
}
