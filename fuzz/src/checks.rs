//! What each fuzz target checks, one public function per target, taking the
//! raw fuzz input and panicking when a parser panics or an invariant breaks.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, through the
//! `labelgate_fuzz` lib) and by the stable-toolchain corpus replay test
//! (`tests/fuzz_corpus.rs`, which includes this file with `#[path]`), so the
//! committed corpus is checked on every `cargo test` exactly as the fuzzers
//! check it. Only `std` and `labelgate` may be used here: the replay test has
//! no other dependencies.

use labelgate::context::{is_identifier, SecurityContext};
use labelgate::labels::{Hook, Label, Labels, Origin};
use labelgate::mls::{Level, Range};
use labelgate::packet::{self, LabelOption, PacketInfo, Proto};
use labelgate::policy::pattern::{ContextPattern, LevelCond, PortSet, TypePattern, TypeSet};
use labelgate::policy::{Facts, Mode, Policy, PolicyError, Verdict};
use labelgate::sys::nfqueue;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

// ------------------------------------------------------------------ packet

/// `packet`: `labelgate::packet::parse` on raw IP packet bytes.
pub fn packet(data: &[u8]) {
    check_packet(data);
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn check_packet(data: &[u8]) {
    let parsed = packet::parse(data);
    assert_eq!(parsed, packet::parse(data), "parse is not deterministic");
    let info = match parsed {
        Ok(info) => info,
        Err(e) => {
            assert!(!e.reason().is_empty() && !e.to_string().is_empty());
            return;
        }
    };
    let version = data[0] >> 4;
    assert_eq!(Proto::from_number(info.proto.number()), info.proto, "protocol number does not round-trip");
    assert_eq!(info.sport.is_some(), info.dport.is_some(), "{info:?}");
    if info.sport.is_some() {
        assert!(info.proto.has_ports(), "ports on a portless protocol: {info:?}");
    }
    if info.icmp.is_some() {
        assert!(matches!(info.proto, Proto::Icmp | Proto::Icmpv6), "{info:?}");
    }
    if info.tcp_syn {
        assert_eq!(info.proto, Proto::Tcp, "{info:?}");
    }
    match version {
        4 => {
            let hlen = usize::from(data[0] & 0x0f) * 4;
            let addr = |at: usize| IpAddr::from([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            assert_eq!((info.src, info.dst), (addr(12), addr(16)));
            assert_eq!(Proto::from_number(data[9]), info.proto);
            match &info.label_option {
                Some(LabelOption::Ipv4Options(r)) => {
                    assert_eq!(*r, 20..hlen, "IPv4 options area");
                    assert!(hlen > 20 && hlen <= data.len());
                }
                Some(other) => panic!("IPv4 packet with {other:?}"),
                None => assert_eq!(hlen, 20, "IPv4 options not reported"),
            }
            let first_fragment = be16(data, 6).is_some_and(|f| f & 0x1fff == 0);
            if first_fragment && info.proto.has_ports() {
                assert_eq!(info.sport, be16(data, hlen), "source port is not at the L4 start");
                assert_eq!(info.dport, be16(data, hlen + 2));
            }
            if !first_fragment {
                assert!(info.sport.is_none() && info.icmp.is_none() && !info.tcp_syn);
            }
        }
        6 => {
            let addr = |at: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&data[at..at + 16]);
                IpAddr::from(a)
            };
            assert_eq!((info.src, info.dst), (addr(8), addr(24)));
            match &info.label_option {
                Some(LabelOption::Ipv6HopByHop(r)) => {
                    assert_eq!(data[6], 0, "hop-by-hop options must come first");
                    assert_eq!(r.start, 42);
                    assert_eq!(r.end, 40 + (usize::from(data[41]) + 1) * 8);
                    assert!(r.end <= data.len());
                }
                Some(other) => panic!("IPv6 packet with {other:?}"),
                None => assert_ne!(data[6], 0, "hop-by-hop header not reported"),
            }
        }
        v => panic!("parsed a packet of IP version {v}"),
    }
    // The CIPSO/CALIPSO parsers (resolve::peer, not written yet) will read
    // `&data[range]` of `info.label_option` here, as the daemon does; see the
    // note at the end of this file.
}

// ------------------------------------------------------------------ nfqueue_msg

/// `nfqueue_msg`: `labelgate::sys::nfqueue::parse_packet` on the body of an
/// NFQNL_MSG_PACKET netlink message (after the 16-byte nlmsghdr), then what
/// the daemon does with it: the payload through [`packet`], the secmark
/// through the context parser.
pub fn nfqueue_msg(data: &[u8]) {
    let Ok(m) = nfqueue::parse_packet(data) else {
        return;
    };
    assert_eq!(Some(m.queue), be16(data, 2), "queue number is nfgenmsg.res_id");
    let inside = |s: &[u8]| {
        let (d, p) = (data.as_ptr_range(), s.as_ptr_range());
        d.start <= p.start && p.end <= d.end
    };
    if !m.payload.is_empty() {
        assert!(inside(m.payload), "payload is not a slice of the message");
    }
    if let Some(s) = m.secctx {
        assert!(!s.contains('\0'), "secctx keeps its NUL: {s:?}");
        assert!(s.is_empty() || inside(s.as_bytes()));
        context_str(s);
    }
    let _ = Hook::from_nf(m.hook);
    check_packet(m.payload);
}

// ------------------------------------------------------------------ context

/// `context`: the input as one string through every label-text parser:
/// `SecurityContext`, `mls::Level`, `mls::Range`, `LevelCond::parse` and
/// `ContextPattern::parse` (with one type set, `@web`).
pub fn context(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        context_str(s);
    }
}

fn web_set(name: &str) -> Option<TypeSet> {
    (name == "web").then(|| Arc::new(["httpd_t".into(), "nginx_t".into()].into()))
}

fn context_str(s: &str) {
    if let Ok(c) = s.parse::<SecurityContext>() {
        let shown = c.to_string();
        let again: SecurityContext =
            shown.parse().unwrap_or_else(|e| panic!("{shown:?} (from {s:?}) does not re-parse: {e}"));
        assert_eq!(again, c, "{s:?} -> {shown:?}");
        assert_eq!(again.to_string(), shown);
        for id in [c.user(), c.role(), c.type_()] {
            assert!(is_identifier(id), "{id:?} in {s:?}");
        }
        if let Some(r) = c.range() {
            check_range(r);
            assert_eq!(c.with_range(*r), c);
        }
        let p = ContextPattern::parse(&shown, &web_set)
            .unwrap_or_else(|e| panic!("context {shown:?} is not a pattern: {e}"));
        assert!(p.matches(&c), "pattern {shown:?} does not match its own context");
    }
    let level = s.parse::<Level>();
    if let Ok(l) = &level {
        check_level(l);
        assert_eq!(s.parse::<Range>(), Ok(Range::single(*l)), "{s:?}");
    }
    if let Ok(r) = s.parse::<Range>() {
        check_range(&r);
        assert_eq!(LevelCond::parse(s), Ok(LevelCond::Within(r)), "{s:?}");
    }
    if let Ok(cond) = LevelCond::parse(s) {
        check_level_cond(&cond);
    }
    if let Ok(p) = ContextPattern::parse(s, &web_set) {
        check_pattern(&p, &web_set);
    }
}

fn check_level(l: &Level) {
    let shown = l.to_string();
    assert_eq!(shown.parse::<Level>().as_ref(), Ok(l), "level {shown:?}");
    assert!(l.dominates(l));
    assert!(l.dominates(&Level::s0()));
}

fn check_range(r: &Range) {
    let shown = r.to_string();
    assert_eq!(shown.parse::<Range>().as_ref(), Ok(r), "range {shown:?}");
    check_level(r.low());
    check_level(r.high());
    assert!(r.high().dominates(r.low()), "range {shown:?} runs backwards");
    assert!(r.contains(r.low()) && r.contains(r.high()) && r.contains_range(r));
}

fn check_level_cond(c: &LevelCond) {
    let shown = c.to_string();
    assert_eq!(LevelCond::parse(&shown).as_ref(), Ok(c), "condition {shown:?}");
    let own = match c {
        LevelCond::Dominates(l) | LevelCond::DominatedBy(l) | LevelCond::Equal(l) => Range::single(*l),
        LevelCond::Within(r) => *r,
    };
    assert!(c.matches(&own), "{shown:?} does not match its own level");
}

fn check_pattern(p: &ContextPattern, sets: &dyn Fn(&str) -> Option<TypeSet>) {
    let shown = p.to_string();
    let again =
        ContextPattern::parse(&shown, sets).unwrap_or_else(|e| panic!("pattern {shown:?} does not re-parse: {e}"));
    assert_eq!(&again, p, "pattern {shown:?}");
    if let Some(cond) = &p.level {
        check_level_cond(cond);
    }
}

// ------------------------------------------------------------------ policy

/// `policy`: `Policy::from_toml` on the input as text. A compiled policy's
/// patterns, level conditions and port sets must print back to what they
/// parse from, and its indexed decision must equal a plain first-match scan
/// over every rule, for a few packets, label sets, hooks and modes.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.matches('\n').count() + 1;
    let p = match Policy::from_toml(text, "fuzz.toml") {
        Ok(p) => p,
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.toml:"), "{shown}");
            if let PolicyError::Invalid { line, column, .. } = e {
                assert!((1..=lines).contains(&line) && column >= 1, "{shown}");
            }
            return;
        }
    };
    let sets = |name: &str| -> Option<TypeSet> {
        let members = p.sets.get(name)?;
        Some(Arc::new(members.iter().map(|m| m.as_str().into()).collect()))
    };
    let mut names = HashSet::new();
    for r in &p.rules {
        assert!(names.insert(r.name.as_str()), "duplicate rule {:?}", r.name);
        assert!(!r.name.is_empty() && !r.name.contains(char::is_whitespace));
        assert!((1..=lines).contains(&r.line), "rule {:?} at line {}", r.name, r.line);
        for pat in [&r.source, &r.dest, &r.secmark, &r.peer].into_iter().flatten() {
            check_pattern(pat, &sets);
        }
        for cond in [&r.source_level, &r.dest_level, &r.peer_level].into_iter().flatten() {
            check_level_cond(cond);
        }
        for ports in [&r.sport, &r.dport].into_iter().flatten() {
            let shown = ports.to_string();
            let items = shown.split(',').map(PortSet::parse_item).collect::<Result<Vec<_>, _>>();
            assert_eq!(items.and_then(PortSet::new).as_ref(), Ok(ports), "ports {shown:?}");
            assert!(r.proto.is_some_and(Proto::has_ports));
        }
        for iface in [&r.iif, &r.oif].into_iter().flatten() {
            assert!(!iface.is_empty() && iface.len() < 16 && !iface.contains('/'));
        }
    }
    for pair in p.address_labels.windows(2) {
        assert!(pair[0].net.prefix_len() >= pair[1].net.prefix_len(), "address labels unsorted");
    }
    for a in &p.address_labels {
        context_str(&a.context.to_string());
    }
    check_decisions(&p);
}

fn labels(src_type: &str, dst_type: &str, mls_swap: bool) -> Labels {
    let ctx = |u: &str, t: &str, range: &str| -> SecurityContext {
        format!("{u}:object_r:{t}:{range}").parse().unwrap_or_else(|e| panic!("test context for {t:?}: {e}"))
    };
    let (lo, hi) = ("s1:c0", "s0-s2:c0.c3");
    let (sr, dr) = if mls_swap { (hi, lo) } else { (lo, hi) };
    let mut l = Labels::unresolved("fuzz");
    l.source = Label { context: ctx("system_u", src_type, sr), origin: Origin::Socket };
    l.dest = Label { context: ctx("staff_u", dst_type, dr), origin: Origin::Process };
    l.secmark = Some(ctx("system_u", dst_type, "s0"));
    l.peer = Some(Label { context: ctx("system_u", "lab_peer_t", "s1:c0"), origin: Origin::Static });
    l.uid = Some(48);
    l.gid = Some(0);
    l
}

/// The type names a policy's rules mention, so label sets hit its index.
fn mentioned_types(p: &Policy) -> Vec<String> {
    let mut out = vec!["unlabeled_t".to_string()];
    for r in &p.rules {
        for pat in [&r.source, &r.dest].into_iter().flatten() {
            let named = match &pat.type_ {
                TypePattern::Any => None,
                TypePattern::One(t) => Some(t.to_string()),
                TypePattern::Set { types, .. } => types.iter().min().map(|t| t.to_string()),
            };
            if let Some(t) = named.filter(|t| !out.contains(t)) {
                out.push(t);
            }
        }
        if out.len() >= 3 {
            break;
        }
    }
    out
}

fn check_decisions(p: &Policy) {
    let lo4 = Ipv4Addr::LOCALHOST;
    let lo6 = Ipv6Addr::LOCALHOST;
    let b = |bytes: Vec<u8>| packet::parse(&bytes).unwrap_or_else(|e| panic!("test packet: {e}"));
    use packet::build;
    let pkts: [PacketInfo; 3] = [
        b(build::ipv4(lo4, lo4, 6, &[], &build::tcp(40000, 5432, 0x02))),
        b(build::ipv4([198, 18, 0, 7].into(), lo4, 17, &[], &build::udp(5353, 53, b"q"))),
        b(build::ipv6(lo6, lo6, 58, &[], &[128, 0, 0, 0])),
    ];
    let iif = || Some("lo".to_string());
    let oif = || None::<String>;
    let types = mentioned_types(p);
    for (i, src) in types.iter().enumerate() {
        for dst in &types {
            let l = labels(src, dst, i % 2 == 1);
            for pkt in &pkts {
                for hook in [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting] {
                    let f = Facts { hook, pkt, labels: &l, iif: &iif, oif: &oif };
                    let scan = p.rules.iter().position(|r| r.check(&f).is_ok());
                    assert_eq!(p.first_match(&f), scan, "indexed lookup disagrees with a scan");
                    for mode in [Mode::Enforcing, Mode::Permissive] {
                        let hits = scan.map(|i| p.rules[i].hits.load(Ordering::Relaxed));
                        let d = p.decide(&f, mode);
                        assert_eq!(d.rule, scan);
                        let rule = scan.map(|i| &p.rules[i]);
                        if let (Some(r), Some(h)) = (rule, hits) {
                            assert_eq!(r.hits.load(Ordering::Relaxed), h + 1, "hit not counted");
                        }
                        assert_eq!(d.table_verdict, rule.map_or(p.default, |r| r.verdict));
                        assert_eq!(p.rule_name(d.rule), rule.map_or("default", |r| &r.name));
                        let permissive = d.table_verdict == Verdict::Drop
                            && (mode == Mode::Permissive
                                || rule.is_some_and(|r| r.permissive)
                                || p.domain_permissive(src));
                        assert_eq!(d.permissive, permissive, "{d:?}");
                        let expect = if permissive { Verdict::Accept } else { d.table_verdict };
                        assert_eq!(d.verdict, expect, "{d:?}");
                        if d.table_verdict == Verdict::Drop {
                            assert!(d.audit, "denials are always audited");
                        } else {
                            assert_eq!(d.audit, rule.is_some_and(|r| r.audit), "{d:?}");
                        }
                    }
                }
            }
        }
    }
    for mode in [Mode::Enforcing, Mode::Permissive] {
        let d = p.decide_malformed(mode);
        assert_eq!((d.rule, d.table_verdict), (None, p.malformed));
    }
}

// ------------------------------------------------------------------ later targets
//
// Parsers that other engineers are adding; give each a function here, a
// `[[bin]]` in fuzz/Cargo.toml (commented out there now), a target file in
// fuzz/fuzz_targets/, seeds in fuzz/seeds/<target>/ and a line in
// tests/fuzz_corpus.rs:
//
// - `peer_option` — resolve::peer's CIPSO (IPv4 option 134) and CALIPSO
//   (IPv6 option 7) parsers. Suggested input: the options area alone, tried
//   as both kinds. Invariants: never panics; a parsed label's level is a
//   valid mls::Level whose Display round-trips; categories past c1023 are
//   refused, not truncated. fuzz/seeds/packet/ already holds CIPSO
//   (v4-cipso-*) and CALIPSO (v6-hbh-calipso-*) packets to cut seeds from,
//   and check_packet above should also feed its label_option range to them.
// - `audit_log` — the audit2rules reader of labelgate audit records (and
//   kernel AVC lines). Invariants: never panics; a record it reads back and
//   prints reads back the same; rules it proposes compile with Policy::from_toml.
