use super::*;
use crate::labels::{Label, Labels, Origin};
use crate::packet::build;
use std::net::Ipv4Addr;
use std::sync::Arc;

fn labels(src: &str, dst: &str) -> Labels {
    let mut l = Labels::unresolved("test");
    l.source = Label { context: src.parse().unwrap(), origin: Origin::Socket };
    l.dest = Label { context: dst.parse().unwrap(), origin: Origin::Socket };
    l
}

fn tcp_to(dport: u16) -> PacketInfo {
    let lo = Ipv4Addr::LOCALHOST;
    crate::packet::parse(&build::ipv4(lo, lo, 6, &[], &build::tcp(40000, dport, 0x02))).unwrap()
}

fn decide(p: &Policy, hook: Hook, pkt: &PacketInfo, l: &Labels) -> Decision {
    let none = || None;
    let f = Facts { hook, pkt, labels: l, iif: &none, oif: &none };
    p.decide(&f, p.mode)
}

const ARTICLE: &str = r#"
default = "drop"
[sets]
web = ["httpd_t", "nginx_t"]

[[rule]]
name = "web-to-db"
hook = "output"
source = "@web"
dest = "postgresql_t"
proto = "tcp"
dport = 5432
verdict = "accept"

[[rule]]
name = "web-elsewhere"
source = "@web"
proto = "tcp"
dport = [80, "8000-8080"]
verdict = "accept"
audit = true

[[rule]]
name = "no-db"
dest = "postgresql_t"
verdict = "drop"
"#;

#[test]
fn first_match_wins_and_default_applies() {
    let p = Policy::from_toml(ARTICLE, "t.toml").unwrap();
    let web_db = labels("system_u:system_r:httpd_t:s0", "system_u:system_r:postgresql_t:s0");
    let d = decide(&p, Hook::Output, &tcp_to(5432), &web_db);
    assert_eq!((d.verdict, p.rule_name(d.rule), d.audit), (Verdict::Accept, "web-to-db", false));
    // Same labels on input: rule 1 is output-only, rule 2 needs port 80, rule 3 drops.
    let d = decide(&p, Hook::Input, &tcp_to(5432), &web_db);
    assert_eq!((d.verdict, p.rule_name(d.rule), d.audit), (Verdict::Drop, "no-db", true));
    let intruder = labels("system_u:system_r:intruder_t:s0", "system_u:system_r:postgresql_t:s0");
    let d = decide(&p, Hook::Output, &tcp_to(5432), &intruder);
    assert_eq!(p.rule_name(d.rule), "no-db");
    let d = decide(&p, Hook::Output, &tcp_to(8080), &labels("u:r:nginx_t:s0", "u:r:x_t:s0"));
    assert_eq!((d.verdict, p.rule_name(d.rule), d.audit), (Verdict::Accept, "web-elsewhere", true));
    let d = decide(&p, Hook::Output, &tcp_to(22), &labels("u:r:sshd_t:s0", "u:r:x_t:s0"));
    assert_eq!((d.verdict, d.rule, d.audit), (Verdict::Drop, None, true));
    assert_eq!(p.rules[0].hits.load(Ordering::Relaxed), 1);
    assert_eq!(p.rules[2].hits.load(Ordering::Relaxed), 2);
}

#[test]
fn permissive_global_domain_and_rule() {
    let text = format!("mode = \"permissive\"\n{ARTICLE}");
    let p = Policy::from_toml(&text, "t").unwrap();
    let l = labels("u:r:intruder_t:s0", "u:r:postgresql_t:s0");
    let d = decide(&p, Hook::Output, &tcp_to(5432), &l);
    assert_eq!((d.verdict, d.table_verdict, d.permissive), (Verdict::Accept, Verdict::Drop, true));

    let text = format!("permissive_domains = [\"intruder_t\"]\n{ARTICLE}");
    let p = Policy::from_toml(&text, "t").unwrap();
    assert!(decide(&p, Hook::Output, &tcp_to(5432), &l).permissive);
    let other = labels("u:r:other_t:s0", "u:r:postgresql_t:s0");
    let d = decide(&p, Hook::Output, &tcp_to(5432), &other);
    assert_eq!((d.verdict, d.permissive), (Verdict::Drop, false));

    let text = ARTICLE.replace("verdict = \"drop\"", "verdict = \"drop\"\npermissive = true");
    let p = Policy::from_toml(&text, "t").unwrap();
    let d = decide(&p, Hook::Output, &tcp_to(5432), &other);
    assert_eq!((d.verdict, d.permissive, p.rule_name(d.rule)), (Verdict::Accept, true, "no-db"));
    // The default verdict is not covered by a rule's permissive flag.
    let d = decide(&p, Hook::Output, &tcp_to(22), &labels("u:r:a_t", "u:r:b_t"));
    assert_eq!((d.verdict, d.permissive), (Verdict::Drop, false));
}

#[test]
fn uid_cidr_secmark_and_levels() {
    let text = r#"
default = "accept"
[[rule]]
name = "uid-db"
uid = [0, "root"]
proto = "tcp"
dport = 5432
daddr = "127.0.0.0/8"
verdict = "accept"
[[rule]]
name = "secmark"
secmark = "postgresql_packet_t"
verdict = "drop"
[[rule]]
name = "mls"
source_level = ">= s1:c0"
mls = "source_dominates_dest"
verdict = "drop"
"#;
    let p = Policy::from_toml(text, "t").unwrap();
    let mut l = labels("u:r:a_t:s0", "u:r:b_t:s0");
    l.uid = Some(0);
    assert_eq!(p.rule_name(decide(&p, Hook::Output, &tcp_to(5432), &l).rule), "uid-db");
    l.uid = Some(1000);
    assert_eq!(decide(&p, Hook::Output, &tcp_to(5432), &l).rule, None);
    l.secmark = Some("system_u:object_r:postgresql_packet_t:s0".parse().unwrap());
    assert_eq!(p.rule_name(decide(&p, Hook::Output, &tcp_to(5432), &l).rule), "secmark");
    let l = labels("u:r:a_t:s1:c0,c1", "u:r:b_t:s1:c0");
    assert_eq!(p.rule_name(decide(&p, Hook::Output, &tcp_to(1), &l).rule), "mls");
    let l = labels("u:r:a_t:s1:c0", "u:r:b_t:s1:c1");
    assert_eq!(decide(&p, Hook::Output, &tcp_to(1), &l).rule, None, "incomparable levels");
}

#[test]
fn index_keeps_first_match_order_across_buckets() {
    // A wildcard rule before a typed rule must still win.
    let text = r#"
[[rule]]
name = "wild"
proto = "tcp"
dport = 1
verdict = "drop"
[[rule]]
name = "typed"
source = "httpd_t"
verdict = "accept"
[[rule]]
name = "by-dest"
dest = "postgresql_t"
verdict = "accept"
"#;
    let p = Policy::from_toml(text, "t").unwrap();
    let l = labels("u:r:httpd_t:s0", "u:r:postgresql_t:s0");
    assert_eq!(p.rule_name(decide(&p, Hook::Output, &tcp_to(1), &l).rule), "wild");
    assert_eq!(p.rule_name(decide(&p, Hook::Output, &tcp_to(2), &l).rule), "typed");
    let l = labels("u:r:other_t:s0", "u:r:postgresql_t:s0");
    assert_eq!(p.rule_name(decide(&p, Hook::Output, &tcp_to(2), &l).rule), "by-dest");
    assert_eq!(p.candidates(&labels("u:r:zzz_t", "u:r:yyy_t")).collect::<Vec<_>>(), vec![0]);
}

#[test]
fn errors_name_line_and_column() {
    let cases: &[(&str, &str)] = &[
        ("mode = \"strict\"\n", "t:1:8:"),
        ("[[rule]]\nname = \"a\"\nverdict = \"accept\"\nbogus = 1\n", "t:4:1:"),
        ("[[rule]]\nname = \"a\"\nverdict = \"accept\"\nsource = \"a:b\"\n", "t:4:10: context pattern"),
        ("[[rule]]\nname = \"a\"\nverdict = \"accept\"\nproto = \"tcp\"\ndport = 70000\n", "t:5:9: bad port"),
        ("[[rule]]\nname = \"a\"\nverdict = \"accept\"\ndport = 80\n", "t:4:9: sport/dport need proto"),
        ("[sets]\nweb = []\n", "t:2:7: type set @web is empty"),
        ("[[rule]]\nname = \"a\"\nverdict = \"accept\"\nsource = \"@nope\"\n", "unknown type set @nope"),
        ("[[rule]]\nname = \"a\"\nverdict = \"accept\"\nuid = \"no-such-user-xyz\"\n", "t:4:7: unknown user"),
        (
            "[[rule]]\nname = \"a\"\nverdict = \"accept\"\n[[rule]]\nname = \"a\"\nverdict = \"drop\"\n",
            "t:5:8: duplicate rule name",
        ),
        ("[[rule]]\nname = \"a\"\nverdict = \"accept\"\ndaddr = \"10.0.0.300/8\"\n", "t:4:9: bad address"),
        ("[[rule]]\nname = \"a\"\n", "missing field `verdict`"),
        ("[[rule]]\nname = \"a\"\nverdict = \"accept\"\nsource_level = \">= s1:c9999\"\n", "t:4:16: bad category"),
    ];
    for (text, want) in cases {
        let e = Policy::from_toml(text, "t").unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
    }
}

#[test]
fn example_policies_compile() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 1, "no example policies found");
}

#[test]
fn rule_lines_are_right_in_a_large_policy() {
    let mut text = String::from("# big\n");
    for i in 0..20_000 {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nproto = \"tcp\"\ndport = {}\nverdict = \"accept\"\n",
            i % 60000
        ));
    }
    let p = Policy::from_toml(&text, "big").unwrap();
    assert_eq!(p.rules[0].line, 2);
    assert_eq!(p.rules[19_999].line, 2 + 19_999 * 5);
    assert_eq!(p.rules[12_345].line, 2 + 12_345 * 5);
}

/// `Debug` of rules with the members of each type set sorted (a `HashSet`
/// prints in no fixed order).
fn debug_sorted(rules: &[Rule]) -> String {
    let text = format!("{rules:?}");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("types: {") {
        let (head, tail) = rest.split_at(i + "types: {".len());
        let end = tail.find('}').unwrap();
        let mut members: Vec<&str> = tail[..end].split(", ").collect();
        members.sort();
        out.push_str(head);
        out.push_str(&members.join(", "));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The section-by-section fast path and the whole-document parse compile
/// the same rules (lines included), and awkward layouts either split right
/// or fall back.
#[test]
fn section_parse_matches_whole_document_parse() {
    let tricky = r#"
# [[rule]] in a comment
mode = "enforcing" # trailing comment
[sets]
web = [
  "httpd_t",   # a comment ]
  "nginx_t",
]
[[rule]]   # with a comment
name = "a"
source = "@web"
dest = "system_u:object_r:postgresql_t:s0"
proto = "tcp"
dport = [
  80,
  "8000-8080",
]
verdict = "accept"
  [[ rule ]]
name = "b"
saddr = ["10.0.0.0/8",
"192.168.0.0/16"
]
verdict = "drop"
[[rule]]
name = "c"
daddr = "127.0.0.1"
iif = "lo"
verdict = "accept"
[[address_label]]
address = "10.0.0.0/8"
context = "system_u:object_r:netlabel_peer_t:s0"
[[rule]]
name = "d"
source_level = ">= s1"
dest_level = ">= s1"
verdict = "drop"
[[doi]]
doi = 3
"#;
    let generated = {
        let mut t = String::from("[sets]\ns = [\"x_t\", \"y_t\"]\n");
        for i in 0..300 {
            t.push_str(&format!(
                "\n[[rule]]\nname = \"g{i}\"\nsource = \"{}\"\nproto = \"udp\"\nsport = {}\nverdict = \"accept\"\n",
                if i % 7 == 0 { "@s".to_string() } else { format!("t{}_t", i % 13) },
                i
            ));
        }
        t
    };
    for text in [ARTICLE, tricky, generated.as_str()] {
        let whole = parse::compile_whole(text, "t").unwrap();
        let fast = parse::compile_sections(&mut parse::TextLines(text), "t").expect("the fast path takes it");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let loaded = Policy::load(file.path()).unwrap();
        assert_eq!(debug_sorted(&loaded.rules), debug_sorted(&whole.rules));
        assert_eq!(debug_sorted(&fast.rules), debug_sorted(&whole.rules));
        assert_eq!(format!("{:?}", fast.address_labels), format!("{:?}", whole.address_labels));
        assert_eq!((fast.mode, fast.default, fast.malformed), (whole.mode, whole.default, whole.malformed));
        assert_eq!(fast.dois, whole.dois);
        assert_eq!(fast.sets, whole.sets);
    }
    // Rules as an inline array of tables, a quoted header, or a header-like
    // line inside a multi-line string: no split, or a split the fast path
    // refuses; the whole-document parse then decides.
    for text in [
        "rule = [{ name = \"a\", verdict = \"accept\" }]\n",
        "[[\"rule\"]]\nname = \"a\"\nverdict = \"accept\"\n",
        "[[rule]]\nname = \"a\"\niif = \"\"\"lo\n[[rule]]\n\"\"\"\nverdict = \"accept\"\n",
    ] {
        let whole = parse::compile_whole(text, "t").map(|p| format!("{:?}", p.rules)).map_err(|e| e.to_string());
        let fast = Policy::from_toml(text, "t").map(|p| format!("{:?}", p.rules)).map_err(|e| e.to_string());
        assert_eq!(fast, whole, "{text}");
    }
}

#[test]
fn identical_patterns_are_shared() {
    let p = Policy::from_toml(ARTICLE, "t").unwrap();
    let (a, b) = (p.rules[0].source.as_ref().unwrap(), p.rules[1].source.as_ref().unwrap());
    assert!(Arc::ptr_eq(a, b));
}

/// Context patterns for the randomized index test: absent, wildcards,
/// single types, sets (small, and large enough that a rule naming two of
/// them is indexed by one side only), full contexts with and without a type.
const PATTERNS: &[Option<&str>] = &[
    None,
    Some("*"),
    Some("t0_t"),
    Some("t1_t"),
    Some("t2_t"),
    Some("@small"),
    Some("@other"),
    Some("@big"),
    Some("u:r:t0_t"),
    Some("u:*:t1_t:s0"),
    Some("v:*:@small"),
    Some("*:*:*"),
    Some("u:*:*:s0"),
    Some("*:*:@big:s0"),
];

/// Packet types: named by patterns, only in a set, or named nowhere.
const TYPES: &[&str] = &["t0_t", "t1_t", "t2_t", "t3_t", "t7_t", "t11_t", "zz_t"];

fn random_policy_text(rules: &[(usize, usize, u8)]) -> String {
    let mut s = String::from(
        "default = \"drop\"\n[sets]\nsmall = [\"t0_t\", \"t3_t\"]\nother = [\"t1_t\", \"t2_t\", \"t3_t\"]\n\
         big = [\"t0_t\", \"t1_t\", \"t2_t\", \"t3_t\", \"t4_t\", \"t5_t\", \"t6_t\", \"t7_t\", \"t8_t\", \"t9_t\"]\n",
    );
    for (i, &(src, dst, extra)) in rules.iter().enumerate() {
        s.push_str(&format!("\n[[rule]]\nname = \"r{i}\"\n"));
        if let Some(p) = PATTERNS[src % PATTERNS.len()] {
            s.push_str(&format!("source = \"{p}\"\n"));
        }
        if let Some(p) = PATTERNS[dst % PATTERNS.len()] {
            s.push_str(&format!("dest = \"{p}\"\n"));
        }
        match extra % 6 {
            0 => s.push_str("proto = \"tcp\"\ndport = 1\n"),
            1 => s.push_str("hook = \"input\"\n"),
            2 => s.push_str("proto = \"udp\"\n"),
            3 => s.push_str("proto = \"tcp\"\ndport = [0, \"3-7\"]\n"),
            4 => s.push_str("hook = \"output\"\nproto = \"tcp\"\ndport = \"2-9\"\n"),
            _ => {}
        }
        s.push_str(if extra % 3 == 0 { "verdict = \"drop\"\n" } else { "verdict = \"accept\"\n" });
    }
    s
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// The indexed decision is the linear scan's, for random policies mixing
    /// type pairs, single types, sets and wildcards; candidates come in rule
    /// order without repeats.
    #[test]
    fn index_agrees_with_linear_scan(
        rules in proptest::collection::vec((0usize..64, 0usize..64, 0u8..12), 0..40),
        packets in proptest::collection::vec((0usize..16, 0usize..16, 0u8..2, 0u8..4, 0u16..12), 1..24),
    ) {
        let p = Policy::from_toml(&random_policy_text(&rules), "t").unwrap();
        for (s, d, user, hook, port) in packets {
            let ctx = |t: usize| {
                let user = if user == 0 { "u" } else { "v" };
                format!("{user}:r:{}:s0", TYPES[t % TYPES.len()])
            };
            let l = labels(&ctx(s), &ctx(d));
            let hook = [Hook::Input, Hook::Output, Hook::Forward, Hook::Prerouting][hook as usize];
            let pkt = tcp_to(port);
            let none = || None;
            let f = Facts { hook, pkt: &pkt, labels: &l, iif: &none, oif: &none };
            let scan = p.rules.iter().position(|r| r.check(&f).is_ok());
            proptest::prop_assert_eq!(p.first_match(&f), scan);
            let c: Vec<u32> = p.candidates(&l).collect();
            proptest::prop_assert!(c.windows(2).all(|w| w[0] < w[1]), "{:?}", c);
            // Every rule that matches is a candidate (not only the first).
            for (i, r) in p.rules.iter().enumerate() {
                if r.check(&f).is_ok() {
                    proptest::prop_assert!(c.contains(&(i as u32)), "rule {} matches but is no candidate", i);
                }
            }
        }
    }
}

#[test]
fn pairs_narrow_the_candidates() {
    // Many rules share a source type; a packet is checked only against those
    // naming its (source, dest) pair, its source alone, its dest alone, or neither.
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(&format!(
            "[[rule]]\nname = \"p{i}\"\nsource = \"a_t\"\ndest = \"d{i}_t\"\nverdict = \"accept\"\n"
        ));
    }
    text.push_str("[[rule]]\nname = \"src\"\nsource = \"a_t\"\nproto = \"udp\"\nverdict = \"drop\"\n");
    text.push_str("[[rule]]\nname = \"dst\"\ndest = \"d5_t\"\nproto = \"udp\"\nverdict = \"drop\"\n");
    text.push_str("[[rule]]\nname = \"any\"\nproto = \"udp\"\nverdict = \"drop\"\n");
    let p = Policy::from_toml(&text, "t").unwrap();
    assert_eq!(p.candidates(&labels("u:r:a_t", "u:r:d5_t")).collect::<Vec<_>>(), vec![5, 100, 101, 102]);
    assert_eq!(p.candidates(&labels("u:r:a_t", "u:r:x_t")).collect::<Vec<_>>(), vec![100, 102]);
    assert_eq!(p.candidates(&labels("u:r:x_t", "u:r:d7_t")).collect::<Vec<_>>(), vec![102]);
    assert_eq!(p.rule_name(decide(&p, Hook::Output, &tcp_to(1), &labels("u:r:a_t", "u:r:d7_t")).rule), "p7");
}

#[test]
fn a_rule_stays_small() {
    // At 100,000 rules every byte of `Rule` is 100 kB of resident memory
    // (docs/PERFORMANCE.md); the rare conditions live out of line.
    assert!(std::mem::size_of::<Rule>() <= 112, "Rule is {} bytes", std::mem::size_of::<Rule>());
}

#[test]
fn equal_address_and_id_sets_are_shared_and_rare_conditions_boxed_only_when_written() {
    let p = Policy::from_toml(
        r#"
        [[rule]]
        name = "a"
        proto = "tcp"
        dport = [80, 443]
        daddr = "198.18.0.0/15"
        uid = 48
        verdict = "accept"
        [[rule]]
        name = "b"
        proto = "tcp"
        dport = [80, 443]
        daddr = "198.18.0.0/15"
        uid = 48
        gid = 0
        verdict = "accept"
        "#,
        "t",
    )
    .unwrap();
    let (a, b) = (&p.rules[0], &p.rules[1]);
    assert_eq!(a.dport, b.dport);
    assert!(Arc::ptr_eq(a.daddr.as_ref().unwrap(), b.daddr.as_ref().unwrap()));
    assert!(Arc::ptr_eq(a.uid.as_ref().unwrap(), b.uid.as_ref().unwrap()));
    assert!(a.rare.is_none(), "rule a writes no rare condition");
    assert_eq!(b.rare().gid.as_deref().map(|g| &*g.0), Some(&[0u32][..]));
}

#[test]
fn digest_is_of_the_bytes_loaded() {
    // `printf 'mode = "permissive"\n' | sha256sum | cut -c1-16`
    let text = "mode = \"permissive\"\n";
    assert_eq!(Policy::from_toml(text, "t").unwrap().digest.to_string(), "sha256:716159393d62e3f6");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    assert_eq!(Policy::load(&path).unwrap().digest.to_string(), "sha256:716159393d62e3f6");
    std::fs::write(&path, "mode = \"permissive\"\n\n").unwrap();
    assert_ne!(Policy::load(&path).unwrap().digest.to_string(), "sha256:716159393d62e3f6");
}

fn proc_in(pid: u32, exe: &str, cgroup: Option<&str>) -> crate::labels::ProcessInfo {
    crate::labels::ProcessInfo {
        pid,
        comm: "t".into(),
        exe: exe.into(),
        cgroup: cgroup.map(|c| Arc::new(crate::labels::CgroupInfo::from_path(c))),
        netns: None,
    }
}

const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn process_keys_match_their_end_only() {
    let text = r#"
default = "drop"
[[rule]]
name = "by-unit"
source_unit = "web*.service"
dest_exe = "/usr/sbin/*"
verdict = "accept"
[[rule]]
name = "by-container"
dest_container = "0123456789AB"
source_cgroup = "/machine.slice/*"
verdict = "accept"
[[rule]]
name = "by-type"
source = "httpd_t"
verdict = "accept"
"#;
    let p = Policy::from_toml(text, "t.toml").unwrap();
    let pkt = tcp_to(80);
    let mut l = labels("system_u:system_r:curl_t:s0", "system_u:system_r:db_t:s0");
    let rule_of = |l: &Labels| {
        let d = decide(&p, Hook::Output, &pkt, l);
        (d.verdict, p.rule_name(d.rule).to_string())
    };
    // No process at either end: none of the process rules match.
    assert_eq!(rule_of(&l), (Verdict::Drop, "default".to_string()));
    l.source_process = Some(proc_in(1, "/usr/bin/curl", Some("/system.slice/web-1.service")));
    l.dest_process = Some(proc_in(2, "/usr/sbin/db", Some("/system.slice/db.service")));
    assert_eq!(rule_of(&l), (Verdict::Accept, "by-unit".to_string()));
    // The same keys at the other end do not match.
    std::mem::swap(&mut l.source_process, &mut l.dest_process);
    assert_eq!(rule_of(&l).1, "default");
    // Container prefix (written in upper case) and cgroup glob.
    l.source_process = Some(proc_in(3, "/x", Some("/machine.slice/libpod-conmon-1.scope")));
    l.dest_process = Some(proc_in(4, "/y", Some(&format!("/machine.slice/libpod-{CID}.scope"))));
    assert_eq!(rule_of(&l).1, "by-container");
    l.dest_process = Some(proc_in(4, "/y", Some(&format!("/machine.slice/libpod-f{}.scope", &CID[1..]))));
    assert_eq!(rule_of(&l).1, "default");
    // A process whose cgroup is unknown matches no unit/container/cgroup key.
    l.source_process = Some(proc_in(1, "/usr/bin/curl", None));
    l.dest_process = Some(proc_in(2, "/usr/sbin/db", None));
    assert_eq!(rule_of(&l).1, "default");
    // The rules without process keys still decide by type.
    let l = labels("system_u:system_r:httpd_t:s0", "system_u:system_r:db_t:s0");
    assert_eq!(rule_of(&l).1, "by-type");
    // Why the container rule missed, for explain.
    let r = p.rules.iter().find(|r| r.name == "by-container").unwrap();
    let none = || None;
    let mut l2 = labels("system_u:system_r:curl_t:s0", "system_u:system_r:db_t:s0");
    l2.source_process = Some(proc_in(3, "/x", Some("/machine.slice/a.scope")));
    let f = Facts { hook: Hook::Output, pkt: &pkt, labels: &l2, iif: &none, oif: &none };
    assert_eq!(r.check(&f).unwrap_err().to_string(), "dest_container");
    assert!(r.rare.is_some() && p.rules.iter().find(|r| r.name == "by-type").unwrap().rare.is_none());
}

#[test]
fn process_key_refusals() {
    for (rule, want) in [
        ("dest_container = \"0123456789a\"", "shorter than 12 hex digits"),
        ("dest_container = \"web-frontend\"", "is not hexadecimal (container names are not resolved"),
        ("source_container = \"\"", "is not hexadecimal"),
        (&format!("source_container = \"{CID}0\""), "longer than 64"),
        ("source_cgroup = \"machine.slice\"", "must start with '/' or '*'"),
        ("dest_exe = \"bin/sh\"", "must start with '/' or '*'"),
        ("source_unit = \"\"", "empty unit pattern"),
        ("source_unit = 3", "invalid type"),
    ] {
        let text = format!("[[rule]]\nname = \"r\"\n{rule}\nverdict = \"accept\"\n");
        let e = Policy::from_toml(&text, "t.toml").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("t.toml:3:"), "{rule}: {e}");
    }
    let ok = format!("[[rule]]\nname = \"r\"\nsource_container = \"{CID}\"\nverdict = \"accept\"\n");
    assert!(Policy::from_toml(&ok, "t.toml").is_ok());
}

#[test]
fn globs() {
    use crate::policy::pattern::Glob;
    let g = |p: &str| Glob::parse(p, "t", false).unwrap();
    assert!(g("nginx.service").matches("nginx.service"));
    assert!(!g("nginx.service").matches("nginx.service2"));
    assert!(g("*").matches(""));
    assert!(g("/machine.slice/*").matches("/machine.slice/a/b"));
    assert!(!g("/machine.slice/*").matches("/machine.slice"));
    assert!(g("a*b*c").matches("abc") && g("a*b*c").matches("axxbyybc"));
    assert!(!g("a*a").matches("a") && g("a*a").matches("aa"));
    assert!(!g("*ab*ab").matches("ab") && g("*ab*ab").matches("xabab"));
    assert!(!g("a*b*c").matches("acb"));
}

/// Each named hook matches the packets queued at that hook only; `any`
/// matches every hook (a packet queued at PREROUTING is not an `input`
/// packet, one queued at POSTROUTING not an `output` one).
#[test]
fn named_hooks_match_their_own_hook_only() {
    let hooks = [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting];
    let l = labels("system_u:system_r:a_t:s0", "system_u:system_r:b_t:s0");
    for (i, name) in ["prerouting", "input", "forward", "output", "postrouting"].into_iter().enumerate() {
        let p = Policy::from_toml(
            &format!(
                "default = \"drop\"\n[[rule]]\nname = \"r\"\nhook = \"{name}\"\nverdict = \"accept\"\n\
                 [[rule]]\nname = \"all\"\nhook = \"any\"\nproto = \"tcp\"\ndport = 9\nverdict = \"accept\"\n"
            ),
            "t",
        )
        .unwrap();
        for (j, hook) in hooks.into_iter().enumerate() {
            let want = if i == j { Verdict::Accept } else { Verdict::Drop };
            assert_eq!(decide(&p, hook, &tcp_to(5432), &l).verdict, want, "hook = {name:?} at {hook}");
            assert_eq!(decide(&p, hook, &tcp_to(9), &l).verdict, Verdict::Accept, "any at {hook}");
        }
    }
}
