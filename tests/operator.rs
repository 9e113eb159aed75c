//! Operator workflow against the real kernel: queue rules installed and
//! removed in a network namespace, flow mode's connmark fast path, and the
//! permissive-to-enforcing tools on a real audit file. Root only.

mod support;
use std::process::Command;
use support::*;

const UID_POLICY: &str = r#"
default = "drop"
[[rule]]
name = "uid1001-db"
hook = "output"
uid = 1001
proto = "tcp"
dport = 5432
verdict = "accept"
"#;

fn labelgate(ns: &Netns, args: &[&str]) -> std::process::Output {
    ns.cmd(LABELGATE).args(args).output().expect("run labelgate")
}

/// A fresh network namespace running, for 60 s, one probe.py server
/// (`serve-tcp` or `udp-echo`) at each `(kind, host, port)`; `None` when
/// root-only tests cannot run here (see `can_run`).
fn ns_serving(servers: &[(&str, &str, &str)]) -> Option<(Netns, Vec<Bg>)> {
    if !can_run() {
        return None;
    }
    let ns = Netns::new();
    let bg = servers.iter().map(|&(kind, host, port)| ns.spawn_probe(&[kind, host, port, "60"])).collect();
    Some((ns, bg))
}

/// `uid` cannot connect to `host` port 5432, and in the same run reaches
/// port 8080 there: the refusal is the queue's, not a broken harness.
fn refused_at_5432_but_reaches_8080(ns: &Netns, uid: u32, host: &str, why: &str) {
    assert!(!ns.probe_as(Some(uid), &["connect-tcp", host, "5432", "2"]), "{why}");
    assert!(ns.probe_as(Some(uid), &["connect-tcp", host, "8080", "3"]), "{why}: uid {uid} reaches {host}:8080");
}

/// [`labelgate`], which must succeed.
fn labelgate_ok(ns: &Netns, args: &[&str]) -> std::process::Output {
    run_ok(ns.cmd(LABELGATE).args(args))
}

fn write_policy(ns: &Netns, text: &str) -> String {
    let p = ns.dir.path().join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn rules_install_and_remove_leave_other_rules_alone() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let policy = write_policy(&ns, UID_POLICY);
    ns.sh("iptables -t security -A OUTPUT -p udp --dport 7 -j ACCEPT; iptables -A INPUT -p tcp --dport 22 -j ACCEPT");
    ns.sh("ip6tables -t security -A OUTPUT -p udp --dport 7 -j ACCEPT");
    let before4 = ns.sh("iptables-save | grep -v '^#' | grep -v LABELGATE");

    labelgate_ok(&ns, &["rules", "--policy", &policy, "--queues", "20", "--install"]);
    let saved = ns.sh("iptables-save -t security");
    assert!(saved.contains(":LABELGATE_OUT - "), "{saved}");
    assert!(saved.contains("-A OUTPUT -j LABELGATE_OUT"), "{saved}");
    // An enforcing policy fails closed: no --queue-bypass.
    assert!(saved.contains("--ctstate NEW -j NFQUEUE --queue-num 20\n"), "{saved}");
    assert!(!saved.contains("--queue-bypass"), "{saved}");
    assert!(!saved.contains("LABELGATE_IN"), "an output-only policy queues no input: {saved}");
    assert!(saved.contains("--dport 7 -j ACCEPT"), "{saved}");
    assert!(ns.sh("ip6tables-save -t security").contains("-A OUTPUT -j LABELGATE_OUT"));

    // The installed rules really divert traffic to a running labelgate.
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    let d = Daemon::start(&ns, UID_POLICY, 20, &[]);
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]));
    assert!(!ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "2"]));
    d.stop();

    // Installing twice replaces, never duplicates.
    let out = labelgate(&ns, &["rules", "--policy", &policy, "--queues", "20", "--install"]);
    assert!(out.status.success());
    assert_eq!(ns.sh("iptables-save -t security").matches("-A OUTPUT -j LABELGATE_OUT").count(), 1);

    for _ in 0..2 {
        labelgate_ok(&ns, &["rules", "--policy", &policy, "--remove"]);
    }
    let after4 = ns.sh("iptables-save | grep -v '^#'");
    assert!(!after4.contains("LABELGATE"), "{after4}");
    assert_eq!(after4, before4, "other rules are untouched");
    assert!(!ns.sh("ip6tables-save").contains("LABELGATE"));
    assert!(ns.sh("ip6tables-save -t security").contains("--dport 7 -j ACCEPT"));
}

#[test]
fn flow_mode_queues_only_the_first_packet_of_a_connection() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let policy = write_policy(&ns, UID_POLICY);
    labelgate_ok(&ns, &["rules", "--policy", &policy, "--queues", "21", "--flow", "--install"]);
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    let d = Daemon::start(&ns, UID_POLICY, 21, &["--flow"]);
    for _ in 0..5 {
        assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]));
    }
    let marks = ns.sh("conntrack -L -p tcp --dport 5432 2>/dev/null || true");
    let err = d.stop();
    // Each connection sends SYN, ACK, FIN, ACK from the client and SYN-ACK,
    // FIN-ACK from the server on OUTPUT; only the SYN reaches labelgate.
    assert_eq!(counter(&err, "packets"), 5, "only first packets queued; conntrack: {marks}\n{err}");
    assert_eq!(marks.matches("mark=2097152").count(), 5, "accepted flows carry the accept connmark: {marks}");
    let saved = ns.sh("iptables-save -c -t security");
    assert!(
        saved.lines().any(|l| l.contains("--ctstate NEW,RELATED") && l.starts_with("[5:")),
        "five packets queued: {saved}"
    );
}

#[test]
fn permissive_run_feeds_audit2rules_and_would_break() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    ns.sh("iptables -A OUTPUT -o lo -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 22");
    let d = Daemon::start(&ns, "mode = \"permissive\"\ndefault = \"drop\"\n", 22, &[]);
    assert!(ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "3"]));
    d.stop();
    let audit = ns.dir.path().join("audit-22.log");
    let audit = audit.to_str().unwrap();

    let out = Command::new(LABELGATE).args(["would-break", audit]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("switching to enforcing would block 1 recorded packet(s):"), "{text}");
    assert!(text.contains("unlabeled_t -> unlabeled_t") && text.contains("tcp/5432"), "{text}");

    let out = Command::new(LABELGATE).args(["audit2rules", audit]).output().unwrap();
    let proposed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(proposed.contains("dport = 5432") && proposed.contains("hook = \"output\""), "{proposed}");
    // The proposal compiles and, placed first, accepts what was denied.
    let pfile = ns.dir.path().join("proposed.toml");
    std::fs::write(&pfile, format!("default = \"drop\"\n{proposed}")).unwrap();
    let out = Command::new(LABELGATE).args(["check", pfile.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(LABELGATE)
        .args(["explain", "--policy", pfile.to_str().unwrap(), "--source", "system_u:object_r:unlabeled_t:s0"])
        .args(["--dest", "system_u:object_r:unlabeled_t:s0", "--dport", "5432"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict: accept"), "{text}");
}

fn scrape(ns: &Netns, script: &str) -> String {
    let out = ns.cmd("/usr/bin/python3").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metrics_are_scraped_over_tcp_and_a_root_only_unix_socket() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    ns.sh("iptables -A OUTPUT -o lo -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 23");
    let sock = ns.dir.path().join("metrics.sock");
    let d = Daemon::start(&ns, UID_POLICY, 23, &["--metrics", "127.0.0.1:9797"]);
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]));
    assert!(!ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "1"]));
    let text = scrape(
        &ns,
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9797/metrics', timeout=5).read().decode())",
    );
    // Another user is refused.
    let out = ns
        .cmd("setpriv")
        .args(["--reuid=1001", "--regid=1001", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg("import urllib.request as u\ntry:\n  u.urlopen('http://127.0.0.1:9797/metrics', timeout=5)\nexcept Exception as e: print(e)")
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&out.stdout);
    assert!(refused.contains("403"), "a non-root scrape must be refused: {refused}");
    d.stop();
    for want in [
        "labelgate_verdicts_total{verdict=\"accept\"} 1",
        "labelgate_rule_hits_total{rule=\"uid1001-db\"} 1",
        "labelgate_kernel_queue_dropped_total{queue=\"23\"} 0",
        "labelgate_kernel_queue_waiting{queue=\"23\"} 0",
        "# TYPE labelgate_decision_seconds histogram",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let dropped: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("labelgate_verdicts_total{verdict=\"drop\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(dropped >= 1, "{text}");
    let count: u64 =
        text.lines().find_map(|l| l.strip_prefix("labelgate_decision_seconds_count ")).unwrap().parse().unwrap();
    let packets: u64 = text.lines().find_map(|l| l.strip_prefix("labelgate_packets_total ")).unwrap().parse().unwrap();
    assert_eq!(count, packets);

    let d = Daemon::start(&ns, UID_POLICY, 24, &["--metrics", &format!("unix:{}", sock.display())]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "metrics socket is root-only");
    let script = format!(
        "import socket; s=socket.socket(socket.AF_UNIX); s.connect('{}'); s.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n'); print(s.makefile().read())",
        sock.display()
    );
    let text = scrape(&ns, &script);
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    assert!(text.contains("labelgate_packets_total 0"), "{text}");
    d.stop();
}

#[test]
fn audit_records_also_reach_the_kernel_audit_subsystem() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    // A rule name unique to this run finds our record among the kernel's messages.
    let rule = format!("kaudit-{}", std::process::id());
    let policy =
        format!("default = \"accept\"\n[[rule]]\nname = \"{rule}\"\nproto = \"udp\"\ndport = 9\nverdict = \"drop\"\n");
    ns.sh("iptables -A OUTPUT -o lo -p udp --dport 9 -j NFQUEUE --queue-num 25");
    let d = Daemon::start(&ns, &policy, 25, &["--audit-kernel"]);
    assert!(!ns.probe_as(None, &["udp-ask", "127.0.0.1", "9", "1"]));
    let err = d.stop();
    assert_eq!(counter(&err, "audit_kernel_lost"), 0, "{err}");
    // Without auditd the kernel prints audit records to its log.
    let log = String::from_utf8_lossy(&Command::new("dmesg").output().unwrap().stdout).into_owned();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("rule={rule} ")))
        .unwrap_or_else(|| panic!("no kernel record for {rule}"));
    assert!(line.contains("type=1107"), "{line}");
    assert!(line.contains("avc:  denied  { send }") && line.contains("dest=9") && line.contains("proto=17"), "{line}");
}

fn status_field(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let v = status.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).unwrap_or_else(|| panic!("{name}"));
    let v = v.trim();
    if name.starts_with("Cap") {
        u64::from_str_radix(v, 16).unwrap()
    } else {
        v.parse().unwrap()
    }
}

#[test]
fn daemon_keeps_only_the_capabilities_it_needs() {
    if !can_run() {
        return;
    }
    const NET_ADMIN: u64 = 1 << 12;
    const DAC_READ_SEARCH: u64 = 1 << 2;
    const SYS_PTRACE: u64 = 1 << 19;
    const AUDIT_WRITE: u64 = 1 << 29;
    const SYS_ADMIN: u64 = 1 << 21;
    // Daemon::start always passes `--audit FILE`: the daemon keeps
    // CAP_DAC_OVERRIDE to reopen a rotated file owned by another user.
    const DAC_OVERRIDE: u64 = 1 << 1;
    let ns = Netns::new();
    for (queue, extra, want) in [
        (27u16, vec![], NET_ADMIN | DAC_READ_SEARCH | SYS_PTRACE | DAC_OVERRIDE),
        (28, vec!["--audit-kernel"], NET_ADMIN | DAC_READ_SEARCH | SYS_PTRACE | AUDIT_WRITE | DAC_OVERRIDE),
    ] {
        let d = Daemon::start(&ns, "default = \"accept\"\n", queue, &extra);
        let pid = d.pid();
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(status_field(pid, set), want, "{set} of the running daemon");
        }
        assert_eq!(status_field(pid, "CapInh"), 0);
        assert_eq!(status_field(pid, "CapAmb"), 0);
        assert_eq!(status_field(pid, "NoNewPrivs"), 1);
        // Every thread, not only the main one, runs with the reduced set.
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let tid: u32 = t.unwrap().file_name().to_string_lossy().parse().unwrap();
            assert_eq!(status_field(tid, "CapEff"), want, "thread {tid}");
        }
        let err = d.stop();
        assert!(err.contains("confined: capabilities"), "{err}");
    }
    // The opt-out really keeps everything (so the check above can fail).
    let d = Daemon::start(&ns, "default = \"accept\"\n", 29, &["--no-confine"]);
    assert_ne!(status_field(d.pid(), "CapEff") & SYS_ADMIN, 0);
    d.stop();
}

#[test]
fn two_queues_with_cpu_fanout_each_get_a_pinned_thread() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let policy = write_policy(
        &ns,
        "default = \"accept\"\n[[scope]]\nhook = \"output\"\n[[rule]]\nname = \"out\"\nhook = \"output\"\nverdict = \"accept\"\n",
    );
    labelgate_ok(&ns, &["rules", "--policy", &policy, "--queues", "50-51", "--all-packets", "--install"]);
    let saved = ns.sh("iptables-save -t security");
    assert!(saved.contains("--queue-balance 50:51") && saved.contains("--queue-cpu-fanout"), "{saved}");
    let d = Daemon::start(&ns, "default = \"accept\"\n", 50, &["--queues", "50-51"]);
    assert!(ns.queue_stats(51).is_some(), "both queues bound");
    // Traffic from each CPU: the fanout sends CPU k's packets to queue 50+k.
    let _echo = ns.spawn_probe(&["udp-echo", "127.0.0.1", "5353", "30"]);
    for cpu in ["0", "1"] {
        for _ in 0..5 {
            let st = ns
                .cmd("taskset")
                .args(["-c", cpu, "/usr/bin/python3", PROBE, "udp-ask", "127.0.0.1", "5353", "2"])
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
    let seq = |q| ns.queue_stats(q).unwrap()[7];
    assert!(seq(50) > 0 && seq(51) > 0, "both queues received packets: {} {}", seq(50), seq(51));
    let mut pinned = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap().trim().to_string();
        if let Some(q) = comm.strip_prefix("queue-") {
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string();
            pinned.push((q.to_string(), cpus));
        }
    }
    pinned.sort();
    assert_eq!(pinned, vec![("50".to_string(), "0".to_string()), ("51".to_string(), "1".to_string())]);
    d.stop();
}

/// The uid policy with a scope: it governs tcp/5432 and nothing else.
const SCOPED_UID_POLICY: &str = r#"
default = "drop"
[[scope]]
proto = "tcp"
dport = 5432
[[rule]]
name = "uid1001-db"
hook = "output"
uid = 1001
proto = "tcp"
dport = 5432
verdict = "accept"
"#;

fn ping(ns: &Netns, addr: &str) -> bool {
    ns.cmd("ping").args(["-c1", "-W2", addr]).output().expect("run ping").status.success()
}

#[test]
fn scoped_default_drop_policy_leaves_unrelated_traffic_alone() {
    let Some((ns, _servers)) = ns_serving(&[
        ("serve-tcp", "127.0.0.1", "5432"),
        ("serve-tcp", "127.0.0.1", "8080"),
        ("udp-echo", "127.0.0.1", "5353"),
    ]) else {
        return;
    };
    let policy = write_policy(&ns, SCOPED_UID_POLICY);
    labelgate_ok(&ns, &["rules", "--policy", &policy, "--queues", "30", "--install"]);
    let saved = ns.sh("iptables-save -t security");
    assert!(
        saved.contains(
            "-A LABELGATE_OUT -p tcp -m tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 30\n"
        ),
        "{saved}"
    );
    assert_eq!(saved.matches("NFQUEUE").count(), 1, "only the governed port is queued: {saved}");

    // Enforcing fails closed: with no labelgate reading the queue the
    // governed port is refused even to the allowed uid, which still reaches
    // everything else.
    refused_at_5432_but_reaches_8080(&ns, 1001, "127.0.0.1", "fail closed");
    assert!(ping(&ns, "127.0.0.1"));

    let d = Daemon::start(&ns, SCOPED_UID_POLICY, 30, &[]);
    // The governed port is decided: allowed for uid 1001, refused for 1002.
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]));
    assert!(!ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "2"]));
    // Unrelated traffic of the refused uid, and ping, pass untouched.
    assert!(ns.probe_as(Some(1002), &["udp-ask", "127.0.0.1", "5353", "3"]));
    assert!(ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "8080", "3"]));
    assert!(ping(&ns, "127.0.0.1"));
    let err = d.stop();
    // Only uid 1001's SYN was accepted by labelgate: nothing unrelated reached it.
    assert_eq!(counter(&err, "accepted"), 1, "{err}");
    assert!(counter(&err, "dropped") >= 1, "{err}");

    // Negative control in the same run: without [[scope]] the same policy
    // queues everything, and the same probes then see ping and DNS cut off.
    let unscoped = write_policy(&ns, UID_POLICY);
    let out = labelgate_ok(&ns, &["rules", "--policy", &unscoped, "--queues", "30", "--install"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[scope]]"), "rules warns");
    let d = Daemon::start(&ns, UID_POLICY, 30, &[]);
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]));
    assert!(!ns.probe_as(Some(1002), &["udp-ask", "127.0.0.1", "5353", "2"]));
    assert!(!ping(&ns, "127.0.0.1"));
    d.stop();

    // A permissive policy fails open: --queue-bypass, so with no labelgate
    // the governed port is reached.
    let permissive = write_policy(&ns, &format!("mode = \"permissive\"\n{SCOPED_UID_POLICY}"));
    labelgate_ok(&ns, &["rules", "--policy", &permissive, "--queues", "30", "--install"]);
    assert!(ns.sh("iptables-save -t security").contains("--queue-num 30 --queue-bypass"));
    assert!(ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "3"]), "fail open");
    // --fail closed overrides the mode.
    labelgate_ok(&ns, &["rules", "--policy", &permissive, "--queues", "30", "--fail", "closed", "--install"]);
    assert!(!ns.sh("iptables-save -t security").contains("--queue-bypass"));
    refused_at_5432_but_reaches_8080(&ns, 1002, "127.0.0.1", "fail closed");
}

/// A reinstall (the unit's ExecReload) replaces each family's queue rules in
/// one transaction: the old rules are still in place when the new ones are
/// applied, and a family whose transaction fails keeps its old rules, so a
/// fail-closed host never passes the governed port unqueued.
#[test]
fn reinstalling_rules_never_leaves_a_family_without_them() {
    let Some((ns, _servers)) = ns_serving(&[("serve-tcp", "::1", "5432"), ("serve-tcp", "::1", "8080")]) else {
        return;
    };
    let policy = write_policy(&ns, SCOPED_UID_POLICY);
    labelgate_ok(&ns, &["rules", "--policy", &policy, "--queues", "30", "--install"]);

    // Shims first on PATH: iptables-restore saves the IPv4 rules it finds
    // before applying; ip6tables-restore fails, as a broken tool would.
    let shims = ns.dir.path().join("shims");
    std::fs::create_dir(&shims).unwrap();
    let seen = ns.dir.path().join("seen-before-restore");
    let real = which("iptables-restore").expect("iptables-restore");
    let shim4 =
        format!("#!/bin/sh\niptables -t security -S > '{}'\nexec '{}' \"$@\"\n", seen.display(), real.display());
    for (name, body) in [
        ("iptables-restore", shim4.as_str()),
        ("ip6tables-restore", "#!/bin/sh\ncat >/dev/null\necho broken >&2\nexit 1\n"),
    ] {
        let f = shims.join(name);
        std::fs::write(&f, body).unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap_or_default());
    let moved = write_policy(&ns, &SCOPED_UID_POLICY.replace("5432", "5433"));
    let out = ns
        .cmd(LABELGATE)
        .env("PATH", &path)
        .args(["rules", "--policy", &moved, "--queues", "30", "--install"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the IPv6 transaction failed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken"), "{}", String::from_utf8_lossy(&out.stderr));
    let before = std::fs::read_to_string(&seen).expect("the shim ran");
    assert!(
        before.contains("--dport 5432") && before.contains("NFQUEUE"),
        "old rules in place until replaced: {before}"
    );
    let v4 = ns.sh("iptables -t security -S");
    assert!(v4.contains("--dport 5433") && !v4.contains("--dport 5432"), "IPv4 replaced: {v4}");
    let v6 = ns.sh("ip6tables -t security -S");
    assert!(v6.contains("--dport 5432") && v6.contains("NFQUEUE"), "IPv6 keeps its rules: {v6}");
    // No labelgate reads queue 30: the governed IPv6 port stays closed,
    // while the same client reaches another port.
    refused_at_5432_but_reaches_8080(&ns, 1001, "::1", "fail closed kept");
}

#[test]
fn printed_rules_queue_ipv6_as_well_as_ipv4() {
    let Some((ns, _servers)) = ns_serving(&[("serve-tcp", "::1", "5432"), ("serve-tcp", "127.0.0.1", "5432")]) else {
        return;
    };
    let policy = write_policy(&ns, SCOPED_UID_POLICY);
    let print = |family: &str| {
        let out = labelgate_ok(&ns, &["rules", "--policy", &policy, "--queues", "31", "--family", family]);
        let f = ns.dir.path().join(format!("rules-{family}"));
        std::fs::write(&f, &out.stdout).unwrap();
        f.to_str().unwrap().to_string()
    };
    let refused_everywhere = || {
        for host in ["::1", "127.0.0.1"] {
            assert!(ns.probe_as(Some(1001), &["connect-tcp", host, "5432", "3"]), "uid 1001 reaches {host}");
            assert!(!ns.probe_as(Some(1002), &["connect-tcp", host, "5432", "2"]), "uid 1002 refused on {host}");
        }
    };
    let d = Daemon::start(&ns, SCOPED_UID_POLICY, 31, &[]);

    // The default output is a shell script; fed to iptables-restore by
    // mistake it is refused at its first line and applies nothing.
    let both = print("both");
    let out = ns.cmd("sh").args(["-c", &format!("iptables-restore --noflush < {both}")]).output().unwrap();
    assert!(!out.status.success());
    assert!(!ns.sh("iptables-save").contains("LABELGATE"));

    // One family per tool.
    let (v4, v6) = (print("ipv4"), print("ipv6"));
    ns.sh(&format!("iptables-restore --noflush < {v4} && ip6tables-restore --noflush < {v6}"));
    refused_everywhere();
    assert!(ns.sh("ip6tables-save -t security").contains("--dport 5432 -m conntrack --ctstate NEW -j NFQUEUE"));

    // The shell script applies both.
    let out = labelgate(&ns, &["rules", "--policy", &policy, "--remove"]);
    assert!(out.status.success());
    assert!(!ns.sh("ip6tables-save").contains("LABELGATE"));
    // With no queue rule at all uid 1002 gets through: the refusals above were labelgate's.
    assert!(ns.probe_as(Some(1002), &["connect-tcp", "::1", "5432", "3"]));
    ns.sh(&format!("sh {both}"));
    refused_everywhere();
    let err = d.stop();
    assert_eq!(counter(&err, "accepted"), 4, "uid 1001's four SYNs: {err}");
}

#[test]
fn check_counts_every_warning_and_strict_fails_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let check = |args: &[&str]| Command::new(LABELGATE).arg("check").args(args).output().unwrap();
    // A default-drop policy without scope: one warning, counted.
    let unscoped = write("unscoped.toml", UID_POLICY);
    let out = check(&[&unscoped]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("{unscoped}: warning: default = \"drop\" and no [[scope]]")), "{text}");
    assert!(text.contains("OK (1 warning(s))"), "{text}");
    let out = check(&["--strict", &unscoped]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAILED (1 warning(s), --strict)"), "{text}");
    // Control: a clean policy passes --strict.
    let scoped = write("scoped.toml", SCOPED_UID_POLICY);
    let out = check(&["--strict", &scoped]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("OK (0 warning(s))"), "{text}");
}
