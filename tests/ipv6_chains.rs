//! Real-kernel test of issue 14 item 15: well-formed IPv6 packets whose
//! extension headers are long (a 328-byte destination-options header, and
//! the longest chain RFC 8200 allows: hop-by-hop, destination options and
//! routing headers of 2048 bytes each, a fragment header, a 1028-byte AH
//! and a second 2048-byte destination-options header) go through NFQUEUE
//! in a network namespace and are decided by the policy's rules under the
//! default `--copy-range`, not dropped as malformed. Needs root.

mod support;
use support::*;

const CHAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helpers/v6chain.py");

const POLICY: &str = r#"
default = "drop"
[[rule]]
name = "v6-long-headers"
proto = "udp"
dport = 5360
audit = true
verdict = "accept"
"#;

/// Run the chain helper inside the namespace as root; its success.
fn chain(ns: &Netns, args: &[&str]) -> bool {
    let out = ns.cmd("/usr/bin/python3").arg(CHAIN).args(args).output().expect("run v6chain.py");
    eprintln!("v6chain {args:?}: {}", String::from_utf8_lossy(&out.stdout).trim());
    out.status.success()
}

/// The audit lines for destination port `port` (the avc form's `dest=`).
fn lines_for(audit: &[String], port: u16) -> Vec<&String> {
    audit.iter().filter(|l| l.contains(&format!(" dest={port} "))).collect()
}

#[test]
fn long_ipv6_header_chains_are_decided_by_the_rules() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let _allowed = ns.spawn_probe(&["udp-echo", "::1", "5360", "60"]);
    let _refused = ns.spawn_probe(&["udp-echo", "::1", "5361", "60"]);
    ns.sh("ip6tables -A OUTPUT -o lo -p udp --dport 5360:5361 -j NFQUEUE --queue-num 71");
    // ip6tables -p udp looks past the extension headers except AH, which
    // it takes as the protocol: queue AH packets (only the test sends any)
    // for labelgate to read through to their UDP header.
    ns.sh("ip6tables -A OUTPUT -o lo -p ah -j NFQUEUE --queue-num 71");
    let d = Daemon::start(&ns, POLICY, 71, &[]);

    // Headers the kernel builds from socket options: the 328-byte
    // destination-options header of the issue, then hop-by-hop and
    // destination options of 2040 bytes each (setsockopt refuses 2048 with
    // EINVAL; the hand-built chains below carry 2048).
    assert!(chain(&ns, &["sockopt", "::1", "5360", "3", "0", "328"]), "328-byte dest opts to the allowed port");
    assert!(chain(&ns, &["sockopt", "::1", "5360", "3", "2040", "2040"]), "2040-byte hbh + dest opts, allowed port");
    // The same client and headers to a port no rule allows: refused.
    assert!(!chain(&ns, &["sockopt", "::1", "5361", "2", "0", "328"]), "328-byte dest opts to the refused port");
    // Hand-built longest chains (with and without AH), to both ports.
    for ah in ["0", "1"] {
        assert!(chain(&ns, &["raw-chain", "::1", "5360", ah]));
        assert!(chain(&ns, &["raw-chain", "::1", "5361", ah]));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lines_for(&d.audit_lines(), 5361).len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let err = d.stop();
    let audit = std::fs::read_to_string(ns.dir.path().join("audit-71.log")).unwrap();
    let lines: Vec<String> = audit.lines().map(str::to_string).collect();
    assert!(!audit.contains("malformed="), "a long chain was called malformed:\n{audit}");
    assert_eq!(counter(&err, "malformed"), 0, "{err}");
    let allowed = lines_for(&lines, 5360);
    let refused = lines_for(&lines, 5361);
    // Two socket-option datagrams and two raw chains reached the rule that
    // needs their UDP port; three went to the default drop.
    assert_eq!(allowed.len(), 4, "{audit}");
    assert!(allowed.iter().all(|l| l.contains("rule=v6-long-headers") && l.contains("granted")), "{audit}");
    assert_eq!(refused.len(), 3, "{audit}");
    assert!(refused.iter().all(|l| l.contains("rule=default") && l.contains("denied")), "{audit}");
}

/// With `--copy-range` set below a packet's headers, the record names the
/// cause (`beyond_copy_range`, from the kernel's NFQA_CAP_LEN) and still
/// carries the addresses; the same client with short headers is accepted.
#[test]
fn headers_past_a_short_copy_range_are_named_and_keep_their_addresses() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let _allowed = ns.spawn_probe(&["udp-echo", "::1", "5360", "60"]);
    ns.sh("ip6tables -A OUTPUT -o lo -p udp --dport 5360 -j NFQUEUE --queue-num 72");
    let d = Daemon::start(&ns, POLICY, 72, &["--copy-range", "256"]);
    assert!(chain(&ns, &["sockopt", "::1", "5360", "3", "0", "8"]), "short headers fit 256 bytes: accepted");
    assert!(!chain(&ns, &["sockopt", "::1", "5360", "2", "0", "328"]), "328-byte dest opts past 256 bytes");
    let err = d.stop();
    let audit = std::fs::read_to_string(ns.dir.path().join("audit-72.log")).unwrap();
    let cut: Vec<&str> = audit.lines().filter(|l| l.contains("malformed=beyond_copy_range")).collect();
    assert_eq!(cut.len(), 1, "{audit}");
    assert!(cut[0].contains("src_addr=::1") && cut[0].contains("dst_addr=::1"), "{audit}");
    assert!(cut[0].contains("rule=malformed"), "{audit}");
    assert_eq!(counter(&err, "malformed"), 1, "{err}");
}
