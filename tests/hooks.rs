//! Flow mode across hooks on one host: a loopback connection crosses
//! OUTPUT and then INPUT, and each hook's rules decide it. labelgate's
//! flow rules remember an acceptance per hook (one connmark bit each), so a
//! connection accepted at OUTPUT is still decided at INPUT. (PREROUTING and
//! FORWARD with container namespaces: tests/containers.rs.) The flow test
//! needs root (see `support::can_run`); `explain` across hooks does not.

mod support;
use support::*;

const POLICY: &str = r#"
default = "drop"
[[scope]]
proto = "tcp"
dport = 5432
[[rule]]
name = "out-all"
hook = "output"
verdict = "accept"
[[rule]]
name = "in-uid1001"
hook = "input"
uid = 1001
verdict = "accept"
"#;

#[test]
fn flow_mode_acceptance_at_output_does_not_skip_input() {
    if !can_run_with(&["ip", "iptables", "python3", "setpriv", "conntrack"]) {
        return;
    }
    let ns = Netns::new();
    let pfile = ns.dir.path().join("rules.toml");
    std::fs::write(&pfile, POLICY).expect("write policy");
    run_ok(ns.cmd(LABELGATE).args(["rules", "--policy"]).arg(&pfile).args([
        "--queues",
        "84",
        "--flow",
        "--fail",
        "closed",
        "--install",
    ]));
    let saved = ns.sh("iptables-save -t security");
    assert!(saved.contains("-A OUTPUT -j LABELGATE_OUT") && saved.contains("-A INPUT -j LABELGATE_IN"), "{saved}");
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    let d = Daemon::start(&ns, POLICY, 84, &["--flow", "--audit-format", "json"]);
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]), "uid 1001 passes both hooks");
    let marks = ns.sh("conntrack -L -p tcp --dport 5432 2>/dev/null || true");
    assert!(
        !ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "2"]),
        "uid 1002 is accepted at OUTPUT and must still be refused at INPUT"
    );
    let audit = d.audit.clone();
    let err = d.stop();
    assert!(err.contains("labelgate rule out-all: hits="), "{err}");
    assert!(err.contains("labelgate rule in-uid1001: hits=1"), "{err}");
    let denied: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["outcome"] == "denied")
        .map(|v| v["hook"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(denied.iter().all(|h| h == "input"), "refused at input only: {denied:?}");
    assert!(!denied.is_empty(), "the refusal is recorded");
    // uid 1001's connection carries the OUTPUT and INPUT bits (0x200000 | 0x400000).
    assert!(marks.contains("mark=6291456"), "both hooks' bits on the connection: {marks}");
}

/// `labelgate explain --hook` takes every hook, and a rule naming
/// `prerouting` matches there only (no root needed).
#[test]
fn explain_asks_each_hook_its_own_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "default = \"drop\"\n[[rule]]\nname = \"pre\"\nhook = \"prerouting\"\nverdict = \"accept\"\n")
        .expect("write policy");
    let explain = |hook: &str| {
        let out = std::process::Command::new(LABELGATE)
            .args(["explain", "--policy"])
            .arg(&p)
            .args(["--source", "a_t", "--dest", "b_t", "--dport", "5432", "--hook", hook])
            .output()
            .expect("run explain");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for (hook, verdict) in
        [("prerouting", "accept"), ("input", "drop"), ("forward", "drop"), ("output", "drop"), ("postrouting", "drop")]
    {
        let (ok, out) = explain(hook);
        assert!(ok, "{hook}: {out}");
        assert!(out.starts_with(&format!("packet: hook={hook} ")), "{out}");
        assert!(out.contains(&format!("\nverdict: {verdict} ")), "{hook}: {out}");
    }
    assert!(!explain("bogus").0);
}

/// Flow mode settles a loopback connection's INPUT decision at OUTPUT when
/// that is exact: the policy below decides both hooks alike, so uid 1001's
/// SYN is queued once (at OUTPUT) and its connection carries both hooks'
/// bits; the same policy with a `gid` condition cannot be judged for INPUT
/// at OUTPUT (INPUT has no gid), so there the SYN is queued twice. uid
/// 1002 is refused in both runs (the same client, allowed target above).
#[test]
fn flow_mode_settles_input_at_output_only_when_exact() {
    if !can_run_with(&["ip", "iptables", "python3", "setpriv", "conntrack"]) {
        return;
    }
    let portable = "default = \"drop\"\n[[scope]]\nproto = \"tcp\"\ndport = 5432\n\
                    [[rule]]\nname = \"uid1001\"\nuid = 1001\nverdict = \"accept\"\n";
    let with_gid = format!("{portable}[[rule]]\nname = \"gid-never\"\ngid = 4242\nverdict = \"drop\"\n");
    for (policy, queued_per_conn) in [(portable.to_string(), 1), (with_gid, 2)] {
        let ns = Netns::new();
        let pfile = ns.dir.path().join("rules.toml");
        std::fs::write(&pfile, &policy).expect("write policy");
        run_ok(ns.cmd(LABELGATE).args(["rules", "--policy"]).arg(&pfile).args([
            "--queues",
            "85",
            "--flow",
            "--fail",
            "closed",
            "--install",
        ]));
        let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
        let d = Daemon::start(&ns, &policy, 85, &["--flow"]);
        let seq = |ns: &Netns| ns.queue_stats(85).and_then(|v| v.get(7).copied()).expect("queue 85 line");
        let before = seq(&ns);
        assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]), "uid 1001 passes: {policy}");
        let after = seq(&ns);
        let marks = ns.sh("conntrack -L -p tcp --dport 5432 2>/dev/null || true");
        assert!(!ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "2"]), "uid 1002 refused: {policy}");
        let err = d.stop();
        assert_eq!(after - before, queued_per_conn, "packets queued for one connection: {policy}\n{err}");
        assert!(marks.contains("mark=6291456"), "OUTPUT and INPUT bits on the connection: {marks}");
    }
}
