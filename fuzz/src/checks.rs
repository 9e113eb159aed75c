//! What each fuzz target checks, one public function per target, taking the
//! raw fuzz input and panicking when a parser panics or an invariant breaks.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, through the
//! `labelgate_fuzz` lib) and by the stable-toolchain corpus replay test
//! (`tests/fuzz_corpus.rs`, which includes this file with `#[path]`), so the
//! committed corpus is checked on every `cargo test` exactly as the fuzzers
//! check it. Only `std` and `labelgate` may be used here: the replay test has
//! no other dependencies.

use labelgate::auditlog::{self, Entry};
use labelgate::context::{is_identifier, SecurityContext};
use labelgate::labels::{Hook, Label, Labels, Origin};
use labelgate::mls::{Level, Range, CATEGORY_COUNT};
use labelgate::packet::{self, LabelOption, PacketInfo, Proto};
use labelgate::policy::pattern::{ContextPattern, LevelCond, PortSet, TypePattern, TypeSet};
use labelgate::policy::{AddressLabel, DoiMap, Facts, Mode, Policy, PolicyError, RareConds, RuleVerdict, Verdict};
use labelgate::resolve::{self, peer, PeerConfig, PeerOutcome};
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
            check_partial(data, e);
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
            assert!(hlen >= 20 && hlen <= data.len());
            check_label_option(&info, (hlen > 20).then(|| &data[20..hlen]), peer::parse_cipso);
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
            let hop_by_hop = (data[6] == 0).then(|| &data[42..40 + (usize::from(data[41]) + 1) * 8]);
            check_label_option(&info, hop_by_hop, peer::parse_calipso);
        }
        v => panic!("parsed a packet of IP version {v}"),
    }
    // What the daemon does with the parsed option: resolve::peer_label.
    check_peer_label(&info);
}

/// What a packet that did not parse still shows: the addresses exactly when
/// the fixed header is whole, from their places in it; never ports.
fn check_partial(data: &[u8], e: packet::PacketError) {
    let Err((again, known)) = packet::parse_partial(data) else {
        panic!("parse_partial accepts what parse refuses");
    };
    assert_eq!(again, e);
    assert_eq!(known.ports, None, "ports of a packet that did not parse");
    let want = match data.first().map(|b| b >> 4) {
        Some(4) if data.len() >= 20 => {
            let a = |at: usize| IpAddr::from([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            Some((a(12), a(16)))
        }
        Some(6) if data.len() >= 40 => {
            let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&data[at..at + 16]).unwrap_or([0; 16]));
            Some((a(8), a(24)))
        }
        _ => None,
    };
    assert_eq!(known.addrs, want, "addresses of a packet that did not parse");
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
        assert!((1..=lines).contains(&(r.line as usize)), "rule {:?} at line {}", r.name, r.line);
        let rare = r.rare();
        if let Some(boxed) = &r.rare {
            assert!(**boxed != RareConds::default(), "rule {:?} boxes no rare condition", r.name);
        }
        for pat in [&r.source, &r.dest, &rare.secmark, &rare.peer].into_iter().flatten() {
            check_pattern(pat, &sets);
        }
        for cond in [&rare.source_level, &rare.dest_level, &rare.peer_level].into_iter().flatten() {
            check_level_cond(cond);
        }
        for ports in [rare.sport.as_ref(), r.dport.get()].into_iter().flatten() {
            let shown = ports.to_string();
            let items = shown.split(',').map(PortSet::parse_item).collect::<Result<Vec<_>, _>>();
            assert_eq!(items.and_then(PortSet::new).as_ref(), Ok(ports), "ports {shown:?}");
            assert!(r.proto.is_some_and(Proto::has_ports));
        }
        for iface in [&rare.iif, &rare.oif].into_iter().flatten() {
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
                        // With no SELinux oracle, a `selinux` verdict is a denial.
                        let want = match rule.map_or(p.default, |r| r.verdict) {
                            RuleVerdict::Accept => Verdict::Accept,
                            RuleVerdict::Drop | RuleVerdict::Selinux => Verdict::Drop,
                        };
                        assert_eq!(d.table_verdict, want);
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

// ------------------------------------------------------------------ peer_option

/// The DOI the fuzz peer configuration maps (`DoiMap::Pass`).
const FUZZ_DOI: u32 = 16;

/// The peer configuration of the `peer_option` checks: DOI 16 passed
/// through, and one static label, 127.0.0.0/8 (which `::ffff:127.0.0.1`
/// also reaches, since peer_label unmaps IPv4-mapped addresses).
fn peer_config() -> PeerConfig {
    let context = "system_u:object_r:lab_peer_t:s0".parse().unwrap_or_else(|e| panic!("static label: {e}"));
    let net = "127.0.0.0/8".parse().unwrap_or_else(|e| panic!("static net: {e:?}"));
    PeerConfig {
        address_labels: vec![AddressLabel { net, context }],
        dois: [(FUZZ_DOI, DoiMap::Pass)].into_iter().collect(),
    }
}

/// `peer_option`: the input as a bare options area through
/// `resolve::peer::parse_cipso` (IPv4 options) and `parse_calipso` (IPv6
/// hop-by-hop option data), then wrapped as the options of an IPv4 packet
/// (first 40 bytes) and the hop-by-hop header of an IPv6 packet, each from a
/// statically labelled and an unlabelled source, through `packet::parse` and
/// `resolve::peer_label`.
pub fn peer_option(data: &[u8]) {
    check_peer_result(data, peer::parse_cipso(data), peer::parse_cipso);
    check_peer_result(data, peer::parse_calipso(data), peer::parse_calipso);

    let opts = &data[..data.len().min(40)];
    let udp = packet::build::udp(40000, 9, b"x");
    for src in [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(198, 18, 0, 7)] {
        check_packet(&packet::build::ipv4(src, Ipv4Addr::LOCALHOST, 17, opts, &udp));
    }
    // Hop-by-hop header: next header (UDP), length in 8-byte units past the
    // first 8, then the option data padded with Pad1 (0) bytes.
    let body = &data[..data.len().min(2046)];
    let mut hbh = vec![17, 0];
    hbh.extend_from_slice(body);
    while hbh.len() % 8 != 0 {
        hbh.push(0);
    }
    hbh[1] = u8::try_from(hbh.len() / 8 - 1).unwrap_or_else(|_| unreachable!("at most 2048 bytes"));
    let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
    for src in [mapped, Ipv6Addr::LOCALHOST] {
        check_packet(&packet::build::ipv6(src, Ipv6Addr::LOCALHOST, 0, &hbh, &udp));
    }
}

/// A CIPSO/CALIPSO parse result: deterministic, errors with a reason, and a
/// label with a non-zero DOI whose level prints and parses back and encodes
/// back into options that parse to the same label.
/// What `peer::parse_cipso` and `peer::parse_calipso` return.
type PeerParse = Result<Option<(u32, Level)>, peer::PeerError>;

fn check_peer_result(data: &[u8], got: PeerParse, parse: fn(&[u8]) -> PeerParse) {
    assert_eq!(parse(data), got, "peer option parse is not deterministic");
    let (doi, level) = match got {
        Ok(Some(label)) => label,
        Ok(None) => return,
        Err(e) => {
            assert!(!e.reason().is_empty() && !e.to_string().is_empty());
            return;
        }
    };
    assert_ne!(doi, 0, "reserved DOI 0 accepted");
    assert!(level.sensitivity <= 255, "sensitivity {} from one byte", level.sensitivity);
    check_level(&level);
    assert!(level.categories.iter().all(|c| c < CATEGORY_COUNT));
    let want = Ok(Some((doi, level)));
    assert_eq!(peer::parse_calipso(&calipso_encode(doi, &level)), want, "CALIPSO re-encoding of {doi} {level}");
    for tag in cipso_encode(doi, &level) {
        assert_eq!(peer::parse_cipso(&tag), want, "CIPSO re-encoding {tag:02x?}");
    }
}

fn bitmap_encode(level: &Level, bytes: usize) -> Vec<u8> {
    let mut map = vec![0u8; bytes];
    for c in level.categories.iter() {
        map[c / 8] |= 0x80 >> (c % 8);
    }
    map
}

/// A CALIPSO option as the kernel's calipso_genopt builds it.
fn calipso_encode(doi: u32, level: &Level) -> Vec<u8> {
    let words = level.categories.iter().last().map_or(0, |c| c / 32 + 1);
    let mut v = vec![peer::IPV6_TLV_CALIPSO, (8 + words * 4) as u8];
    v.extend_from_slice(&doi.to_be_bytes());
    v.extend_from_slice(&[words as u8, level.sensitivity as u8, 0, 0]);
    v.extend_from_slice(&bitmap_encode(level, words * 4));
    let sum = peer::calipso_checksum(&v);
    v[8..10].copy_from_slice(&sum.to_le_bytes());
    v
}

/// The CIPSO options (tag 1 bitmap, tag 2 enumerated, tag 5 ranges) that
/// can carry `level`, each a whole options area.
fn cipso_encode(doi: u32, level: &Level) -> Vec<Vec<u8>> {
    let cats: Vec<usize> = level.categories.iter().collect();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &c in &cats {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == c => *hi = c,
            _ => ranges.push((c, c)),
        }
    }
    let mut tags: Vec<(u8, Vec<u8>)> = Vec::new();
    if cats.last().is_none_or(|&c| c < 240) {
        tags.push((1, bitmap_encode(level, cats.last().map_or(0, |c| c / 8 + 1))));
    }
    if cats.len() <= 15 {
        tags.push((2, cats.iter().flat_map(|&c| (c as u16).to_be_bytes()).collect()));
    }
    // Tag 5 as cipso_v4_map_cat_rng_hton writes it: (high, low) pairs from
    // the highest range down, a low of 0 left out; at most 30 bytes.
    let body: Vec<u8> = ranges
        .iter()
        .rev()
        .flat_map(|&(lo, hi)| std::iter::once(hi as u16).chain((lo != 0).then_some(lo as u16)))
        .flat_map(u16::to_be_bytes)
        .collect();
    if body.len() <= 30 {
        tags.push((5, body));
    }
    tags.into_iter()
        .map(|(ty, cats)| {
            let mut v = vec![peer::IPOPT_CIPSO, (10 + cats.len()) as u8];
            v.extend_from_slice(&doi.to_be_bytes());
            v.extend_from_slice(&[ty, (4 + cats.len()) as u8, 0, level.sensitivity as u8]);
            v.extend_from_slice(&cats);
            v
        })
        .collect()
}

/// The packet's label option as the option parser's result.
fn option_parse(info: &PacketInfo) -> PeerParse {
    match &info.label_option {
        None => Ok(None),
        Some(LabelOption::Level { doi, level }) => Ok(Some((*doi, **level))),
        Some(LabelOption::Malformed(e)) => Err(*e),
    }
}

/// The packet's label option is what the option parser makes of its
/// options area (`area`: the IPv4 options or the first hop-by-hop header's
/// data, if the packet has one), none without one.
fn check_label_option(info: &PacketInfo, area: Option<&[u8]>, parse: fn(&[u8]) -> PeerParse) {
    let want = area.map_or(Ok(None), parse);
    assert_eq!(option_parse(info), want, "label option of {area:02x?}");
    if let Some(a) = area {
        check_peer_result(a, want, parse);
    }
}

/// `resolve::peer_label` on a parsed packet: the outcome is what the
/// option parser said about the packet's options (its label option), and the label
/// is the static label, `netlabel_peer_t`, or unlabeled, as documented.
fn check_peer_label(info: &PacketInfo) {
    let cfg = peer_config();
    let (label, outcome) = resolve::peer_label(&cfg, info);
    assert_eq!(resolve::peer_label(&cfg, info), (label.clone(), outcome), "peer_label is not deterministic");
    let parsed = option_parse(info);
    let static_label = cfg.static_label(info.src).cloned();
    match parsed {
        Err(e) => {
            assert_eq!(outcome, PeerOutcome::Malformed(e));
            assert_eq!(label, Some(Label::unlabeled("bad_peer_option")));
        }
        Ok(Some((doi, _))) if doi != FUZZ_DOI => {
            assert_eq!(outcome, PeerOutcome::UnknownDoi);
            assert_eq!(label, Some(Label::unlabeled("unknown_doi")));
        }
        Ok(Some((_, level))) => {
            assert_eq!(outcome, PeerOutcome::Option);
            let label = label.unwrap_or_else(|| panic!("no peer label for a mapped option"));
            assert_eq!(label.origin, Origin::PeerOption);
            let want = match static_label {
                Some(c) => c.with_range(Range::single(level)),
                None => resolve::netlabel_peer(level),
            };
            assert_eq!(label.context, want);
            // Prints to text that reads back the same (the context target
            // checks contexts in depth; this one only the peer label's text).
            let shown = label.context.to_string();
            assert_eq!(shown.parse::<SecurityContext>().as_ref(), Ok(&label.context), "peer label {shown:?}");
        }
        Ok(None) => {
            assert_eq!(outcome, PeerOutcome::None);
            assert_eq!(label, static_label.map(|context| Label { context, origin: Origin::Static }));
        }
    }
}

// ------------------------------------------------------------------ audit_log

/// `audit_log`: the input as the text of an audit file (read as
/// `labelgate audit2rules` reads one, invalid UTF-8 replaced) through
/// `auditlog::parse_text` (and each line through `parse_line`), then
/// `audit2rules`, whose proposal must compile with `Policy::from_toml` and
/// accept every denial it was made from, and `would_break`.
///
/// Entries that trigger a known open bug of `audit2rules` (see
/// [`KNOWN_OPEN_BUGS`]) are left out of the `audit2rules` check, so that
/// fuzzing goes on looking for other bugs; [`audit_log_strict`] keeps them.
pub fn audit_log(data: &[u8]) {
    audit_log_with(data, true);
}

/// [`audit_log`] without leaving out the entries of known open bugs: what
/// their files in `fuzz/regressions/audit_log/` fail on until the bug is fixed.
pub fn audit_log_strict(data: &[u8]) {
    audit_log_with(data, false);
}

fn audit_log_with(data: &[u8], skip_known_bugs: bool) {
    // As `labelgate audit2rules` reads a file: invalid UTF-8 replaced.
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let (entries, skipped) = auditlog::parse_text(text);
    assert_eq!(auditlog::parse_text(text), (entries.clone(), skipped), "parse_text is not deterministic");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let per_line: Vec<Entry> = lines.iter().filter_map(|l| auditlog::parse_line(l)).collect();
    assert_eq!(per_line, entries, "parse_text is not parse_line on each line");
    assert_eq!(entries.len() + skipped, lines.len(), "every non-empty line is an entry or skipped");
    for e in &entries {
        check_entry(e);
    }
    check_would_break(&entries);
    if skip_known_bugs {
        let open: Vec<Entry> = entries.into_iter().filter(|e| !KNOWN_OPEN_BUGS.iter().any(|(_, hit)| hit(e))).collect();
        check_audit2rules(&open);
    } else {
        check_audit2rules(&entries);
    }
}

/// An entry prints back to a JSON line (always) and a USER_AVC line (when
/// its free-text fields are ones labelgate writes) that read back the same.
fn check_entry(e: &Entry) {
    // Contexts print to text that reads back the same (the `context` target
    // checks the context parser in depth).
    for c in [&e.scontext, &e.tcontext] {
        let shown = c.to_string();
        assert_eq!(shown.parse::<SecurityContext>().as_ref(), Ok(c), "context {shown:?}");
    }
    let json = entry_json(e);
    assert_eq!(auditlog::parse_line(&json).as_ref(), Some(e), "JSON line {json}");
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"\"'={}".contains(&b));
    if token(&e.perm) && token(&e.rule) {
        let avc = entry_avc(e);
        // The USER_AVC form does not name the hook.
        let unhooked = Entry { queued_at: None, ..e.clone() };
        assert_eq!(auditlog::parse_line(&avc).as_ref(), Some(&unhooked), "USER_AVC line {avc}");
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The fields `auditlog` reads, in the layout of `audit::format_json`.
fn entry_json(e: &Entry) -> String {
    let mut s = format!(
        "{{\"outcome\":{},\"perm\":{},\"scontext\":{},\"tcontext\":{},\"permissive\":{},\"rule\":{}",
        json_str(if e.denied { "denied" } else { "granted" }),
        json_str(&e.perm),
        json_str(&e.scontext.to_string()),
        json_str(&e.tcontext.to_string()),
        u8::from(e.permissive),
        json_str(&e.rule),
    );
    if let Some(p) = e.proto {
        s.push_str(&format!(",\"proto\":{}", json_str(&p.to_string())));
    }
    if let Some(d) = e.dport {
        s.push_str(&format!(",\"dest\":{d}"));
    }
    if let Some(h) = e.queued_at {
        s.push_str(&format!(",\"hook\":\"{h}\""));
    }
    s.push('}');
    s
}

/// The fields `auditlog` reads, in the layout of `audit::format_avc`.
fn entry_avc(e: &Entry) -> String {
    let mut s = format!(
        "type=USER_AVC msg=audit(1764100000.123:42): pid=99 uid=0 auid=4294967295 ses=4294967295 subj=unconfined \
         msg='avc:  {}  {{ {} }} for  pid=1234 comm=\"psql\" src_addr=127.0.0.1 src=43210",
        if e.denied { "denied" } else { "granted" },
        e.perm
    );
    if let Some(d) = e.dport {
        s.push_str(&format!(" dest={d}"));
    }
    if let Some(p) = e.proto {
        s.push_str(&format!(" proto={}", p.number()));
    }
    s.push_str(&format!(
        " slabel=socket tlabel=socket scontext={} tcontext={} tclass=packet permissive={} rule={} \
         exe=\"/usr/sbin/labelgate\" sauid=0 hostname=? addr=? terminal=?'",
        e.scontext,
        e.tcontext,
        u8::from(e.permissive),
        e.rule
    ));
    s
}

/// The hook labelgate records a permission at when the record does not
/// name its hook (the inverse of `Hook::permission`; `recv` is also
/// PREROUTING, `send` also POSTROUTING).
fn hook_of_perm(perm: &str) -> Option<Hook> {
    match perm {
        "send" => Some(Hook::Output),
        "recv" => Some(Hook::Input),
        "forward_in" => Some(Hook::Forward),
        "forward_out" => Some(Hook::Postrouting),
        _ => None,
    }
}

/// Known, reported and not yet fixed bugs of `auditlog::audit2rules`: the
/// file of each one's minimized input in `fuzz/regressions/audit_log/`, and
/// whether an entry triggers it. [`audit_log`] leaves such entries out of the
/// `audit2rules` check; `tests/fuzz_corpus.rs` checks that each file still
/// fails [`audit_log_strict`] and passes [`audit_log`], and fails once the bug
/// is fixed, so that its line here is removed.
pub type KnownBug = (&'static str, fn(&Entry) -> bool);
pub const KNOWN_OPEN_BUGS: &[KnownBug] = &[];

fn check_audit2rules(entries: &[Entry]) {
    let proposal = auditlog::audit2rules(entries);
    assert_eq!(auditlog::audit2rules(entries), proposal, "audit2rules is not deterministic");
    let p = Policy::from_toml(&proposal, "proposal.toml")
        .unwrap_or_else(|e| panic!("audit2rules proposes a policy that does not compile: {e}\n{proposal}"));
    let denials: Vec<&Entry> = entries.iter().filter(|e| e.denied).collect();
    assert_eq!(denials.is_empty(), p.rules.is_empty(), "{proposal}");
    assert!(p.rules.len() <= denials.len());
    for r in &p.rules {
        assert_eq!(r.verdict, RuleVerdict::Accept, "{proposal}");
    }
    // Every denial, replayed as a packet with its contexts, protocol and port
    // at the hook it was recorded at, is accepted by a proposed rule.
    for e in denials {
        let Some(hook) = e.queued_at.or_else(|| hook_of_perm(&e.perm)) else {
            continue;
        };
        let proto = e.proto.unwrap_or(Proto::Other(253));
        let (sport, dport) = match e.dport {
            Some(d) if proto.has_ports() => (Some(40000), Some(d)),
            _ => (None, None),
        };
        let pkt = PacketInfo {
            src: Ipv4Addr::LOCALHOST.into(),
            dst: Ipv4Addr::LOCALHOST.into(),
            proto,
            sport,
            dport,
            icmp: None,
            tcp_syn: false,
            label_option: None,
        };
        let mut l = Labels::unresolved("fuzz");
        l.source = Label { context: e.scontext.clone(), origin: Origin::Socket };
        l.dest = Label { context: e.tcontext.clone(), origin: Origin::Process };
        let none = || None::<String>;
        let f = Facts { hook, pkt: &pkt, labels: &l, iif: &none, oif: &none };
        let d = p.decide(&f, Mode::Enforcing);
        assert!(
            d.rule.is_some() && d.verdict == Verdict::Accept,
            "the proposal does not accept the denial {e:?} at {hook:?} ({d:?}):\n{proposal}"
        );
    }
}

fn check_would_break(entries: &[Entry]) {
    let report = auditlog::would_break(entries);
    let n = entries.iter().filter(|e| e.denied && e.permissive).count();
    if n == 0 {
        assert!(report.starts_with("nothing would break"), "{report}");
    } else {
        let head = format!("switching to enforcing would block {n} recorded packet(s):\n");
        assert!(report.starts_with(&head), "{report}");
    }
}
