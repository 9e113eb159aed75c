use super::spec::normalize;
use super::*;
use crate::policy::Policy;
use std::fmt::Write as _;

fn policy(t: &str) -> Policy {
    Policy::from_toml(t, "t").unwrap()
}

const SCOPED: &str = "default = \"drop\"\n[[scope]]\nproto = \"tcp\"\ndport = 5432\n\
    [[rule]]\nname = \"a\"\nhook = \"output\"\nuid = 1001\nproto = \"tcp\"\ndport = 5432\nverdict = \"accept\"\n";

fn spec(t: &str, queues: Vec<u16>, flow: bool, bypass: bool) -> RuleSpec {
    RuleSpec::for_policy(&policy(t), queues, flow, bypass)
}

fn queue_lines(t: &str) -> Vec<&str> {
    t.lines().filter(|l| !l.starts_with('#') && (l.contains("NFQUEUE") || l.contains(" queue "))).collect()
}

#[test]
fn iptables_text_follows_the_declared_scope() {
    let t = iptables_restore(&spec(SCOPED, vec![0], false, false), false);
    assert!(t.starts_with("# labelgate queue rules for IPv4: iptables-restore --noflush\n"), "{t}");
    assert!(t.contains("*security\n:LABELGATE_OUT - [0:0]\n-A OUTPUT -j LABELGATE_OUT\n"), "{t}");
    assert_eq!(
        queue_lines(&t),
        ["-A LABELGATE_OUT -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0"],
        "{t}"
    );
    assert!(t.contains("# fail closed (no --queue-bypass)"), "{t}");
    assert!(t.ends_with("COMMIT\n"));
    assert!(!t.contains("LABELGATE_IN") && !t.contains("FORWARD"), "{t}");
    let t = iptables_restore(&spec(SCOPED, vec![2, 3], true, true), true);
    assert!(t.contains(
        "-A LABELGATE_OUT -m mark --mark 0x200000/0x600000 -j CONNMARK --set-xmark 0x200000/0x200000\n\
         -A LABELGATE_OUT -m mark --mark 0x200000/0x600000 -j MARK --set-xmark 0x0/0x600000\n\
         -A LABELGATE_OUT -m connmark --mark 0x200000/0x200000 -j RETURN\n"
    ));
    assert!(t.contains(
        "-A LABELGATE_OUT -p tcp --dport 5432 -m conntrack --ctstate NEW,RELATED -j NFQUEUE --queue-balance 2:3 --queue-cpu-fanout --queue-bypass\n"
    ));
    assert!(t.contains("# fail open (--queue-bypass)"), "{t}");
}

#[test]
fn every_family_is_printed_and_addresses_go_to_their_own() {
    let t = "default = \"drop\"\n[[scope]]\nproto = \"udp\"\ndport = [53, \"6000-6010\"]\n\
             daddr = [\"198.18.0.0/15\", \"fd00::/8\"]\n[[scope]]\nhook = \"input\"\nproto = \"icmpv6\"\n\
             [[rule]]\nname = \"a\"\nverdict = \"accept\"\n";
    let sp = spec(t, vec![7], false, false);
    let v4 = iptables_restore(&sp, false);
    let v6 = iptables_restore(&sp, true);
    assert_eq!(
        queue_lines(&v4),
        [
            "-A LABELGATE_IN -p udp -d 198.18.0.0/15 --dport 53 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
            "-A LABELGATE_IN -p udp -d 198.18.0.0/15 --dport 6000:6010 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
            "-A LABELGATE_IN -p icmpv6 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
            "-A LABELGATE_OUT -p udp -d 198.18.0.0/15 --dport 53 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
            "-A LABELGATE_OUT -p udp -d 198.18.0.0/15 --dport 6000:6010 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 7",
        ],
        "{v4}"
    );
    assert!(v6.contains("-A LABELGATE_IN -p udp -d fd00::/8 --dport 53 -m conntrack"), "{v6}");
    assert!(!v6.contains("198.18") && !v4.contains("fd00"), "{v4}{v6}");
    // Both: a shell script feeding each family to its own tool.
    let both = iptables_script(&sp);
    let (a, b) = both.split_once("ip6tables-restore --noflush <<'LABELGATE_IPV6'\n").unwrap();
    assert!(a.contains(&format!("iptables-restore --noflush <<'LABELGATE_IPV4'\n{v4}LABELGATE_IPV4\n")), "{both}");
    assert_eq!(b, format!("{v6}LABELGATE_IPV6\n"));
    assert!(both.lines().find(|l| !l.starts_with('#')) == Some("set -e"), "{both}");
}

#[test]
fn default_accept_queues_what_selinux_rules_can_match() {
    let t = "default = \"accept\"\n[[rule]]\nname = \"db\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"selinux\"\n";
    let v4 = iptables_restore(&spec(t, vec![0], false, false), false);
    assert_eq!(
        queue_lines(&v4),
        [
            "-A LABELGATE_IN -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
            "-A LABELGATE_OUT -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
        ],
        "{v4}"
    );
}

#[test]
fn default_accept_queues_only_what_drop_and_audited_rules_can_match() {
    let t = "default = \"accept\"\n\
             [[rule]]\nname = \"ok\"\nproto = \"tcp\"\ndport = 22\nverdict = \"accept\"\n\
             [[rule]]\nname = \"no-db\"\nhook = \"output\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"drop\"\n\
             [[rule]]\nname = \"seen\"\nhook = \"input\"\nproto = \"udp\"\nsaddr = \"10.0.0.0/8\"\nverdict = \"accept\"\naudit = true\n\
             [[rule]]\nname = \"no-db-wide\"\nhook = \"output\"\nproto = \"tcp\"\ndport = \"5000-6000\"\nverdict = \"drop\"\npermissive = true\n";
    let sp = spec(t, vec![0], false, false);
    assert_eq!(sp.source, ScopeSource::Derived);
    let v4 = iptables_restore(&sp, false);
    assert_eq!(
        queue_lines(&v4),
        [
            "-A LABELGATE_IN -p udp -s 10.0.0.0/8 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
            // tcp/5432 is inside 5000-6000: one rule.
            "-A LABELGATE_OUT -p tcp --dport 5000:6000 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
        ],
        "{v4}"
    );
    assert!(queue_lines(&iptables_restore(&sp, true)).len() == 1, "the IPv4 source is not queued on IPv6");
    // Nothing to decide: nothing queued, and the text says so.
    let sp = spec("default = \"accept\"\n[[rule]]\nname = \"a\"\nverdict = \"accept\"\n", vec![0], false, true);
    assert!(sp.chains.is_empty());
    let v4 = iptables_restore(&sp, false);
    assert!(queue_lines(&v4).is_empty() && v4.contains("# nothing to queue"), "{v4}");
    // A drop rule without conditions: everything on its hook.
    let sp = spec(
        "default = \"accept\"\n[[rule]]\nname = \"d\"\nhook = \"input\"\nverdict = \"drop\"\n",
        vec![0],
        false,
        true,
    );
    assert_eq!(sp.chains, vec![(Chain::Input, vec![Match::ALL])]);
}

#[test]
fn squeezing_a_long_list_early_gives_what_normalizing_it_whole_gives() {
    // Drop rules of 16 x 16 address pairs each: past 4 x MAX_MATCHES the
    // list is squeezed while it is built; the result must be the one
    // normalizing every expansion at once gives.
    for (rules, mixed) in [(3, false), (5, false), (40, false), (40, true)] {
        let mut t = String::from("default = \"accept\"\n");
        for r in 0..rules {
            let s: Vec<String> = (0..16).map(|i| format!("\"10.{r}.{i}.0/24\"")).collect();
            let mut d: Vec<String> = (0..16).map(|i| format!("\"192.168.{i}.0/24\"")).collect();
            if mixed && r % 2 == 0 {
                d[0] = "\"fd00::/8\"".into();
            }
            let _ = write!(
                t,
                "[[rule]]\nname = \"r{r}\"\nhook = \"output\"\nproto = \"udp\"\ndport = {}\nsaddr = [{}]\ndaddr = [{}]\nverdict = \"drop\"\n",
                100 + r % 7,
                s.join(","),
                d.join(",")
            );
        }
        let p = policy(&t);
        let mut widened = false;
        let all = p
            .rules
            .iter()
            .flat_map(|r| Match::expand(r.proto, r.dport.get(), r.saddr.as_deref(), r.daddr.as_deref(), &mut widened))
            .collect();
        let (whole, w) = normalize(all);
        let sp = RuleSpec::for_policy(&p, vec![0], false, false);
        assert_eq!(sp.chains, vec![(Chain::Output, whole)], "{rules} rules");
        assert_eq!(sp.widened, w || widened, "{rules} rules");
    }
}

#[test]
fn default_drop_without_scope_queues_everything_and_says_so() {
    let sp = spec(
        "default = \"drop\"\n[[rule]]\nname = \"a\"\nproto = \"tcp\"\ndport = 1\nverdict = \"accept\"\n",
        vec![0],
        false,
        false,
    );
    assert_eq!(sp.source, ScopeSource::Everything);
    let t = iptables_restore(&sp, false);
    assert!(t.contains("# scope: EVERYTHING"), "{t}");
    assert_eq!(
        queue_lines(&t),
        [
            "-A LABELGATE_IN -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
            "-A LABELGATE_OUT -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0"
        ]
    );
}

#[test]
fn many_matches_are_widened_never_narrowed() {
    let ports: Vec<String> = (0..300).map(|i| (1000 + 2 * i).to_string()).collect();
    let t = format!(
        "default = \"drop\"\n[[scope]]\nproto = \"udp\"\ndport = [{}]\nsaddr = \"10.0.0.0/8\"\n",
        ports.join(",")
    );
    let sp = spec(&t, vec![0], false, false);
    assert!(sp.widened);
    assert_eq!(
        queue_lines(&iptables_restore(&sp, false)),
        [
            "-A LABELGATE_IN -p udp -s 10.0.0.0/8 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0",
            "-A LABELGATE_OUT -p udp -s 10.0.0.0/8 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 0"
        ]
    );
    let t = format!("default = \"drop\"\n[[scope]]\nproto = \"udp\"\ndport = [{}]\n", ports[..200].join(","));
    let sp = spec(&t, vec![0], false, false);
    assert!(!sp.widened);
    assert_eq!(queue_lines(&iptables_restore(&sp, false)).len(), 400);
}

#[test]
fn nft_text() {
    let t = nft_install(&spec(SCOPED, vec![0, 1], true, true));
    assert!(t.starts_with("# labelgate"));
    assert!(t.contains("table inet labelgate {}\ndelete table inet labelgate\n"));
    assert!(t.contains("type filter hook output priority security + 10; policy accept;"));
    assert!(t.contains("    tcp dport 5432 ct state new,related queue flags fanout,bypass to 0-1\n"), "{t}");
    assert!(t.contains(
        "    meta mark and 0x600000 == 0x200000 ct mark set ct mark or 0x200000 meta mark set meta mark and 0xff9fffff\n\
         \x20   ct mark and 0x200000 == 0x200000 return\n"
    ));
    let p = "default = \"drop\"\n[[scope]]\nproto = \"udp\"\ndport = \"6000-6010\"\n\
             daddr = [\"198.18.0.0/15\", \"fd00::/8\"]\n[[scope]]\nproto = \"icmpv6\"\n\
             [[scope]]\nhook = \"output\"\nsaddr = \"::1\"\n";
    let t = nft_install(&spec(p, vec![4], false, false));
    for want in [
        "    meta l4proto ipv6-icmp ct state new queue num 4\n",
        "    ip daddr 198.18.0.0/15 udp dport 6000-6010 ct state new queue num 4\n",
        "    ip6 daddr fd00::/8 udp dport 6000-6010 ct state new queue num 4\n",
        "    ip6 saddr ::1/128 ct state new queue num 4\n",
    ] {
        assert!(t.contains(want), "{want:?} in\n{t}");
    }
    assert_eq!(t.matches("ip6 saddr ::1/128").count(), 1, "output only: {t}");
    let t = nft_install(&spec("default = \"drop\"\n", vec![4], false, false));
    assert!(t.contains("    ct state new queue num 4\n"), "{t}");
}

#[test]
fn hooks_follow_the_policy() {
    let p = policy("[[rule]]\nname = \"a\"\nhook = \"forward\"\nverdict = \"drop\"\n");
    let s = RuleSpec::for_policy(&p, vec![0], false, true);
    assert_eq!(s.chains.iter().map(|c| c.0).collect::<Vec<_>>(), [Chain::Forward]);
    let s = RuleSpec::for_policy(&policy(""), vec![0], false, true);
    assert_eq!(s.chains.iter().map(|c| c.0).collect::<Vec<_>>(), [Chain::Input, Chain::Output]);
}

/// A policy naming every hook: input and output (`any`), forward,
/// prerouting and postrouting, each with its own scope.
const EVERY_HOOK: &str = "default = \"drop\"\n\
    [[scope]]\nhook = \"prerouting\"\nproto = \"tcp\"\ndport = 8080\ndaddr = [\"198.18.10.0/24\", \"fd00:10::/64\"]\n\
    [[scope]]\nhook = \"postrouting\"\nproto = \"udp\"\ndport = 53\n\
    [[scope]]\nhook = \"forward\"\nproto = \"tcp\"\n\
    [[scope]]\nproto = \"tcp\"\ndport = 5432\n\
    [[rule]]\nname = \"pre\"\nhook = \"prerouting\"\nproto = \"tcp\"\ndport = 8080\nverdict = \"accept\"\n\
    [[rule]]\nname = \"post\"\nhook = \"postrouting\"\nproto = \"udp\"\nverdict = \"accept\"\n\
    [[rule]]\nname = \"fwd\"\nhook = \"forward\"\nproto = \"tcp\"\nverdict = \"accept\"\n\
    [[rule]]\nname = \"db\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"accept\"\n";

#[test]
fn prerouting_and_postrouting_are_queued_when_rules_name_them() {
    let sp = spec(EVERY_HOOK, vec![3], false, true);
    assert_eq!(
        sp.chains.iter().map(|c| c.0).collect::<Vec<_>>(),
        [Chain::Input, Chain::Output, Chain::Forward, Chain::Prerouting, Chain::Postrouting]
    );
    // A `[[scope]]` entry without a hook (`any`) is queued on every chain
    // that is on; one naming a hook only on that hook's chain.
    let v4 = iptables_restore(&sp, false);
    let (security, mangle) = v4.split_once("*mangle\n").unwrap_or_else(|| panic!("no mangle table:\n{v4}"));
    assert!(
        security.contains("*security\n:LABELGATE_IN - [0:0]\n:LABELGATE_OUT - [0:0]\n:LABELGATE_FWD - [0:0]\n"),
        "{v4}"
    );
    assert!(!security.contains("-A PREROUTING") && !security.contains("LABELGATE_POST"), "{v4}");
    assert!(security.ends_with("COMMIT\n"), "{v4}");
    assert!(
        mangle.starts_with(
            ":LABELGATE_PRE - [0:0]\n:LABELGATE_POST - [0:0]\n\
             -A PREROUTING -j LABELGATE_PRE\n-A POSTROUTING -j LABELGATE_POST\n"
        ),
        "{v4}"
    );
    assert!(mangle.ends_with("COMMIT\n") && mangle.matches("COMMIT").count() == 1, "{v4}");
    assert!(security.contains("\n# (PREROUTING and POSTROUTING, which security lacks: mangle table"), "{v4}");
    assert_eq!(
        queue_lines(mangle),
        [
            "-A LABELGATE_PRE -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 3 --queue-bypass",
            "-A LABELGATE_PRE -p tcp -d 198.18.10.0/24 --dport 8080 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 3 --queue-bypass",
            "-A LABELGATE_POST -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 3 --queue-bypass",
            "-A LABELGATE_POST -p udp --dport 53 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 3 --queue-bypass",
        ],
        "{v4}"
    );
    assert!(!security.contains("8080") && !security.contains("--dport 53 "), "hook-named scope only on its hook: {v4}");
    // IPv6: the same chains, the IPv6 address in its own family only.
    let v6 = iptables_restore(&sp, true);
    assert!(v6.contains("-A LABELGATE_PRE -p tcp -d fd00:10::/64 --dport 8080 -m conntrack"), "{v6}");
    assert!(!v6.contains("198.18") && !v4.contains("fd00"), "{v6}");
    assert!(v6.contains("*mangle\n:LABELGATE_PRE - [0:0]\n:LABELGATE_POST - [0:0]\n"), "{v6}");
    // nft: one table, chains on those hooks after mangle, before NAT.
    let nft = nft_install(&sp);
    for want in [
        "  chain labelgate_pre {\n    type filter hook prerouting priority mangle + 10; policy accept;\n",
        "  chain labelgate_post {\n    type filter hook postrouting priority mangle + 10; policy accept;\n",
        "  chain labelgate_in {\n    type filter hook input priority security + 10; policy accept;\n",
        "    ip daddr 198.18.10.0/24 tcp dport 8080 ct state new queue flags bypass to 3\n",
        "    ip6 daddr fd00:10::/64 tcp dport 8080 ct state new queue flags bypass to 3\n",
        "    udp dport 53 ct state new queue flags bypass to 3\n",
    ] {
        assert!(nft.contains(want), "{want:?} in\n{nft}");
    }
    // A policy without prerouting or postrouting rules writes no mangle
    // table and no such nft chain.
    let plain = spec(SCOPED, vec![0], false, false);
    assert!(!iptables_restore(&plain, false).contains("mangle table"));
    assert!(!iptables_restore(&plain, false).contains("*mangle"));
    assert!(!nft_install(&plain).contains("routing priority"));
}

#[test]
fn flow_mode_remembers_each_hook_on_its_own_connmark_bit() {
    let sp = spec(EVERY_HOOK, vec![3], true, false);
    let v4 = iptables_restore(&sp, false);
    let nft = nft_install(&sp);
    let mut bits = Vec::new();
    for (c, _) in &sp.chains {
        let (_, chain, _) = c.names();
        let bit = c.flow_bit();
        assert_eq!(bit & FLOW_CONNMARK_MASK, bit, "{chain}");
        bits.push(bit);
        // The accept bit becomes this chain's connmark bit and is cleared
        // before anything else the chain does; only that bit lets a
        // connection pass unqueued. At OUTPUT, the accept and settled bits
        // together become OUTPUT's and INPUT's bits (the daemon settled
        // INPUT's decision at OUTPUT); no other chain knows the settled bit.
        let (ipt_settled, nft_settled) = if *c == Chain::Output {
            (
                format!(
                    "-A {chain} -m mark --mark 0x600000/0x600000 -j CONNMARK --set-xmark 0x600000/0x600000\n\
                     -A {chain} -m mark --mark 0x600000/0x600000 -j MARK --set-xmark 0x0/0x600000\n"
                ),
                "meta mark and 0x600000 == 0x600000 ct mark set ct mark or 0x600000 meta mark set meta mark and 0xff9fffff\n    "
                    .to_string(),
            )
        } else {
            (String::new(), String::new())
        };
        let want = format!(
            "{ipt_settled}-A {chain} -m mark --mark 0x200000/0x600000 -j CONNMARK --set-xmark {bit:#x}/{bit:#x}\n\
             -A {chain} -m mark --mark 0x200000/0x600000 -j MARK --set-xmark 0x0/0x600000\n\
             -A {chain} -m connmark --mark {bit:#x}/{bit:#x} -j RETURN\n-A {chain} -p "
        );
        assert!(v4.contains(&want), "{want}\nin\n{v4}");
        assert_eq!(v4.matches("--mark 0x600000/0x600000").count(), 2, "the settled bit at OUTPUT only: {v4}");
        let want = format!(
            "  chain {} {{\n    type filter hook {} priority {}; policy accept;\n    \
             {nft_settled}meta mark and 0x600000 == 0x200000 ct mark set ct mark or {bit:#x} meta mark set meta mark and 0xff9fffff\n    \
             ct mark and {bit:#x} == {bit:#x} return\n",
            chain.to_lowercase(),
            c.names().2,
            c.nft_priority()
        );
        assert!(nft.contains(&want), "{want}\nin\n{nft}");
    }
    bits.sort_unstable();
    bits.dedup();
    assert_eq!(bits.len(), 5, "one bit per hook");
    assert_eq!(bits.iter().fold(0, |a, b| a | b), FLOW_CONNMARK_MASK);
    assert!(!v4.contains("save-mark"), "no chain copies the whole mask: {v4}");
}

#[test]
fn any_queues_input_and_output_and_named_hooks_only_their_own() {
    let chains = |t: &str| spec(t, vec![0], false, true).chains.iter().map(|c| c.0).collect::<Vec<_>>();
    let r = |hook: &str| format!("[[rule]]\nname = \"{hook}\"\nhook = \"{hook}\"\nverdict = \"drop\"\n");
    assert_eq!(chains(&r("prerouting")), [Chain::Prerouting]);
    assert_eq!(chains(&r("postrouting")), [Chain::Postrouting]);
    assert_eq!(chains(&r("any")), [Chain::Input, Chain::Output]);
    assert_eq!(chains(&(r("prerouting") + &r("input"))), [Chain::Input, Chain::Prerouting]);
    // default accept: a drop rule on prerouting queues everything there
    // and nothing on input.
    let sp = spec(&format!("default = \"accept\"\n{}", r("prerouting")), vec![0], false, true);
    assert_eq!(sp.chains, vec![(Chain::Prerouting, vec![Match::ALL])]);
}
