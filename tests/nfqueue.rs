//! Real-kernel tests of the core enforcer: each test makes its own network
//! namespace, installs real iptables NFQUEUE rules, runs the labelgate binary
//! and checks what real sockets can and cannot do. They need root; see
//! `support::can_run`.

mod support;
use support::*;

/// Accept uid 1001 on tcp/5432, drop everything else that is queued.
const UID_POLICY: &str = r#"
default = "drop"
[[rule]]
name = "uid1001-db"
uid = 1001
proto = "tcp"
dport = 5432
verdict = "accept"
"#;

fn queue_tcp_5432(ns: &Netns, queue: u16) {
    // Only the first packet of a connection is queued, as docs/POLICY.md advises.
    ns.sh(&format!(
        "iptables -A OUTPUT -o lo -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num {queue}"
    ));
}

/// uid 1001 connects, uid 1002 is refused and audited; returns the daemon's stderr.
fn uid_allow_and_deny(queue: u16, extra: &[&str]) -> String {
    let ns = Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    queue_tcp_5432(&ns, queue);
    let d = Daemon::start(&ns, UID_POLICY, queue, extra);
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]), "uid 1001 must connect");
    assert!(!ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "2"]), "uid 1002 must be refused");
    let err = d.stop();
    let audit = std::fs::read_to_string(ns.dir.path().join(format!("audit-{queue}.log"))).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("denied  { send }")
            && l.contains("ouid=1002")
            && l.contains("permissive=0")
            && l.contains("rule=default")),
        "no enforcing denial for uid 1002 in:\n{audit}"
    );
    assert!(!audit.contains("ouid=1001"), "uid 1001 was granted without audit = true:\n{audit}");
    assert!(counter(&err, "accepted") >= 1);
    assert!(counter(&err, "dropped") >= 1);
    assert!(err.contains("labelgate rule uid1001-db: hits=1"), "{err}");
    err
}

#[test]
fn uid_allow_and_deny_enforcing() {
    if !can_run() {
        return;
    }
    let err = uid_allow_and_deny(10, &[]);
    assert_eq!(counter(&err, "offloaded"), 0, "no workers, nothing offloaded");
}

#[test]
fn uid_allow_and_deny_with_resolver_workers() {
    if !can_run() {
        return;
    }
    let err = uid_allow_and_deny(27, &["--workers", "2"]);
    // Each queued SYN starts a flow the caches do not know yet.
    assert!(counter(&err, "offloaded") >= 2, "{err}");
    assert_eq!(counter(&err, "packets"), counter(&err, "accepted") + counter(&err, "dropped"), "{err}");
}

#[test]
fn permissive_mode_lets_denials_through_and_records_them() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    queue_tcp_5432(&ns, 11);
    let d = Daemon::start(&ns, UID_POLICY, 11, &["--mode", "permissive"]);
    assert!(ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "3"]), "permissive must let uid 1002 in");
    let err = d.stop();
    let audit = std::fs::read_to_string(ns.dir.path().join("audit-11.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("denied  { send }") && l.contains("ouid=1002") && l.contains("permissive=1")),
        "no permissive denial in:\n{audit}"
    );
    assert!(counter(&err, "would_deny") >= 1);
    assert_eq!(counter(&err, "dropped"), 0);
}

#[test]
fn per_rule_and_per_domain_permissive() {
    if !can_run() {
        return;
    }
    // Per rule: the drop rule for uid 1002 is permissive, uid 1003 hits the enforcing default.
    let ns = Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    queue_tcp_5432(&ns, 12);
    let policy =
        format!("{UID_POLICY}\n[[rule]]\nname = \"trial\"\nuid = 1002\nverdict = \"drop\"\npermissive = true\n");
    let d = Daemon::start(&ns, &policy, 12, &[]);
    assert!(ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "3"]), "permissive rule lets uid 1002 in");
    assert!(!ns.probe_as(Some(1003), &["connect-tcp", "127.0.0.1", "5432", "2"]), "uid 1003 still refused");
    d.stop();
    let audit = std::fs::read_to_string(ns.dir.path().join("audit-12.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("rule=trial") && l.contains("permissive=1") && l.contains("ouid=1002")),
        "{audit}"
    );
    assert!(
        audit.lines().any(|l| l.contains("rule=default") && l.contains("permissive=0") && l.contains("ouid=1003")),
        "{audit}"
    );

    // Per domain: on this host SELinux is off, so every socket resolves to
    // unlabeled_t; making that domain permissive lets its denials through
    // while the table stays enforcing. (Real domains are tested in the VM.)
    let ns = Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    queue_tcp_5432(&ns, 13);
    let policy = format!("permissive_domains = [\"unlabeled_t\"]\n{UID_POLICY}");
    let d = Daemon::start(&ns, &policy, 13, &[]);
    assert!(ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "3"]));
    let err = d.stop();
    assert!(counter(&err, "would_deny") >= 1);
    let audit = std::fs::read_to_string(ns.dir.path().join("audit-13.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("scontext=system_u:object_r:unlabeled_t:s0") && l.contains("permissive=1")),
        "{audit}"
    );
}

#[test]
fn default_verdict_applies_when_no_rule_matches() {
    if !can_run() {
        return;
    }
    for (default, expect) in [("accept", true), ("drop", false)] {
        let ns = Netns::new();
        let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
        queue_tcp_5432(&ns, 14);
        let policy = format!("default = \"{default}\"\n[[rule]]\nname = \"other\"\nuid = 4242\nverdict = \"accept\"\n");
        let d = Daemon::start(&ns, &policy, 14, &[]);
        let ok = ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "2"]);
        d.stop();
        assert_eq!(ok, expect, "default = {default}");
    }
}

#[test]
fn udp_and_icmp_and_ipv6() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let _echo4 = ns.spawn_probe(&["udp-echo", "127.0.0.1", "5353", "30"]);
    let _echo6 = ns.spawn_probe(&["udp-echo", "::1", "5353", "30"]);
    let _tcp6 = ns.spawn_probe(&["serve-tcp", "::1", "5432", "30"]);
    ns.sh("iptables -A OUTPUT -o lo -p udp --dport 5353 -j NFQUEUE --queue-num 15");
    ns.sh("iptables -A OUTPUT -o lo -p icmp --icmp-type echo-request -j NFQUEUE --queue-num 15");
    ns.sh("ip6tables -A OUTPUT -o lo -p udp --dport 5353 -j NFQUEUE --queue-num 15");
    ns.sh("ip6tables -A OUTPUT -o lo -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 15");
    let policy = r#"
default = "drop"
[[rule]]
name = "dns-1001"
uid = 1001
proto = "udp"
dport = 5353
verdict = "accept"
[[rule]]
name = "ping-from-root"
proto = "icmp"
uid = 0
verdict = "accept"
[[rule]]
name = "v6-db"
uid = 1001
proto = "tcp"
dport = 5432
daddr = "::1/128"
verdict = "accept"
"#;
    let d = Daemon::start(&ns, policy, 15, &[]);
    assert!(ns.probe_as(Some(1001), &["udp-ask", "127.0.0.1", "5353", "2"]), "udp v4 uid 1001");
    assert!(!ns.probe_as(Some(1002), &["udp-ask", "127.0.0.1", "5353", "1"]), "udp v4 uid 1002");
    assert!(ns.probe_as(Some(1001), &["udp-ask", "::1", "5353", "2"]), "udp v6 uid 1001");
    assert!(!ns.probe_as(Some(1002), &["udp-ask", "::1", "5353", "1"]), "udp v6 uid 1002");
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "::1", "5432", "3"]), "tcp v6 uid 1001");
    assert!(!ns.probe_as(Some(1002), &["connect-tcp", "::1", "5432", "2"]), "tcp v6 uid 1002");
    let ping = ns.cmd("ping").args(["-c", "1", "-W", "2", "127.0.0.1"]).status().unwrap();
    assert!(ping.success(), "root's ping is accepted");
    d.stop();
    let audit = std::fs::read_to_string(ns.dir.path().join("audit-15.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("proto=17") && l.contains("dst_addr=::1") && l.contains("ouid=1002")),
        "{audit}"
    );
    assert!(audit.lines().any(|l| l.contains("proto=6") && l.contains("dst_addr=::1")), "{audit}");
}

/// Run a bounded UDP flood through queue `queue` (80k datagrams paced over
/// 4 s, at most 8 s), call `during` while it runs, stop labelgate with
/// SIGTERM mid-flood, and check that every queued packet was answered and
/// every datagram arrived.
fn flood_and_check(queue: u16, during: impl FnOnce(&Netns, &Daemon)) {
    flood_and_check_with(queue, &[], 1, during);
}

/// [`flood_and_check`] with `extra` daemon arguments, the flood sent from
/// `flows` sockets one after the other; returns the daemon's stderr.
fn flood_and_check_with(queue: u16, extra: &[&str], flows: u32, during: impl FnOnce(&Netns, &Daemon)) -> String {
    let ns = Netns::new();
    let count = ns.dir.path().join("count");
    let sink = ns.spawn_probe(&["udp-sink", "127.0.0.1", "9999", "3", count.to_str().unwrap()]);
    // --queue-bypass: once labelgate has unbound, packets pass instead of being dropped.
    ns.sh(&format!("iptables -A OUTPUT -o lo -p udp --dport 9999 -j NFQUEUE --queue-num {queue} --queue-bypass"));
    let args: Vec<&str> = ["--fail", "open"].iter().chain(extra).copied().collect();
    let d = Daemon::start(&ns, "default = \"accept\"\n", queue, &args);
    let mut flood = ns
        .cmd("/usr/bin/python3")
        .args([PROBE, "udp-flood", "127.0.0.1", "9999", "80000", "8", "20000", &flows.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let mid = ns.queue_stats(queue).expect("queue bound");
    assert!(mid[7] > 1000, "the flood reached the queue: {mid:?}");
    during(&ns, &d);
    assert!(flood.try_wait().unwrap().is_none(), "the flood is still running when SIGTERM is sent");
    let err = d.stop();
    let sent: u64 = String::from_utf8_lossy(&flood.wait_with_output().unwrap().stdout).trim().parse().unwrap();
    sink.wait();
    let received: u64 = std::fs::read_to_string(&count).unwrap().trim().parse().unwrap();
    // The daemon reads the kernel's figures after its last verdict and before unbinding.
    let line = err.lines().find(|l| l.contains("kernel id_sequence=")).unwrap_or_else(|| panic!("{err}"));
    let field = |k: &str| -> u64 {
        line.split([' ', ';'])
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("{k} in {line}"))
    };
    let answered: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(field("queue_dropped"), 0, "{line}");
    assert_eq!(field("user_dropped"), 0, "{line}");
    assert_eq!(field("waiting"), 0, "{line}");
    assert_eq!(field("id_sequence"), answered, "every queued packet got a verdict: {line}");
    assert_eq!(counter(&err, "packets"), answered);
    assert_eq!(counter(&err, "verdict_errors"), 0);
    assert!(answered > 1000, "{line}");
    let snmp = ns.sh("grep Udp: /proc/net/snmp");
    assert_eq!(received, sent, "every datagram sent was delivered (sent {sent}, received {received}); {snmp}");
    err
}

#[test]
fn shutdown_under_load_answers_every_queued_packet() {
    if !can_run() {
        return;
    }
    flood_and_check(16, |_, _| {});
}

#[test]
fn shutdown_under_load_with_resolver_workers_answers_every_queued_packet() {
    if !can_run() {
        return;
    }
    // A new socket every 10 ms: each new flow's packets wait at a worker
    // for a lookup and a /proc scan, so packets are at the workers when
    // SIGTERM comes; they must be answered before the queue is unbound.
    let err = flood_and_check_with(28, &["--workers", "2"], 400, |_, _| {});
    assert!(counter(&err, "offloaded") > 0, "{err}");
}

#[test]
fn resolver_workers_keep_each_flows_order_and_verdict() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let file = |name: &str| ns.dir.path().join(name).to_str().unwrap().to_string();
    let (count, late, denied_count) = (file("count"), file("late"), file("denied-count"));
    let sink = ns.spawn_probe(&["udp-sink", "127.0.0.1", "9999", "3", &count, &late]);
    let denied_sink = ns.spawn_probe(&["udp-sink", "127.0.0.1", "9998", "3", &denied_count]);
    ns.sh("iptables -A OUTPUT -o lo -p udp --dport 9998 -j NFQUEUE --queue-num 29");
    ns.sh("iptables -A OUTPUT -o lo -p udp --dport 9999 -j NFQUEUE --queue-num 29");
    let policy =
        "default = \"accept\"\n[[rule]]\nname = \"no-9998\"\nproto = \"udp\"\ndport = 9998\nverdict = \"drop\"\n";
    let d = Daemon::start(&ns, policy, 29, &["--workers", "2", "--queue-maxlen", "65536"]);
    // Two senders at once, as fast as they can (the queue holds it all),
    // each from 10 sockets one after the other (1000 datagrams each): one to
    // the accepted port, one to the denied port. Each new socket's first
    // packets wait at a worker for a sock_diag lookup and a /proc scan while
    // its flow goes on; once its labels are cached the queue thread could
    // answer the flow at once, and must not let those packets overtake the
    // ones still at the worker. Meanwhile the other sender's packets are
    // decided on the queue thread: their verdicts must not be batched over
    // ids still at a worker (that would accept or drop those packets
    // whatever the worker decides).
    let flood = |port: &str| {
        ns.cmd("/usr/bin/python3")
            .args([PROBE, "udp-flood", "127.0.0.1", port, "10000", "8", "0", "10"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let sent: Vec<u64> = [flood("9999"), flood("9998")]
        .into_iter()
        .map(|f| String::from_utf8_lossy(&f.wait_with_output().unwrap().stdout).trim().parse::<u64>().unwrap())
        .collect();
    sink.wait();
    denied_sink.wait();
    let err = d.stop();
    let read = |f: &str| -> u64 { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
    assert_eq!(read(&count), sent[0], "every accepted datagram arrived: {err}");
    assert_eq!(read(&late), 0, "datagrams overtaken within their flow (of {})", sent[0]);
    assert_eq!(read(&denied_count), 0, "no denied datagram arrived (of {}): {err}", sent[1]);
    assert_eq!(counter(&err, "packets"), sent[0] + sent[1], "{err}");
    assert_eq!(counter(&err, "dropped"), sent[1], "{err}");
    assert!(counter(&err, "offloaded") >= 20, "each flow's first packet needs a worker: {err}");
    assert_eq!(counter(&err, "verdict_errors"), 0, "{err}");
}

#[test]
fn reload_under_load_loses_no_packet() {
    if !can_run() {
        return;
    }
    flood_and_check(19, |ns, d| {
        let pfile = ns.dir.path().join("policy-19.toml");
        for i in 0..10 {
            // Alternate between two valid policies and one broken file.
            let text = match i % 3 {
                0 => "default = \"accept\"\n[[rule]]\nname = \"r\"\nproto = \"udp\"\ndport = 9999\nverdict = \"accept\"\n",
                1 => "default = \"accept\"\n",
                _ => "not [ toml",
            };
            std::fs::write(&pfile, text).unwrap();
            d.signal("HUP");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::fs::write(&pfile, "default = \"accept\"\n").unwrap();
        let err = d.stderr_text();
        assert!(err.matches("reloaded").count() >= 5, "{err}");
        assert!(err.contains("reload refused"), "{err}");
    });
}

#[test]
fn sighup_reloads_and_refuses_a_bad_policy() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    queue_tcp_5432(&ns, 17);
    let d = Daemon::start(&ns, UID_POLICY, 17, &[]);
    assert!(!ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "2"]));
    let pfile = ns.dir.path().join("policy-17.toml");
    std::fs::write(&pfile, "default = \"accept\"\n").unwrap();
    d.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "3"]), "reloaded policy accepts");
    std::fs::write(&pfile, "this is { not toml").unwrap();
    d.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "3"]), "bad policy refused, old one stays");
    let err = d.stop();
    assert!(err.contains("reload refused"), "{err}");
}

#[test]
fn a_second_daemon_on_a_bound_queue_fails_clearly() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let d = Daemon::start(&ns, "default = \"accept\"\n", 18, &[]);
    // A second daemon on the same queue must fail with a clear message.
    let pfile = ns.dir.path().join("policy-18.toml");
    let out = ns.cmd(LABELGATE).args(["run", "--queue", "18", "--policy"]).arg(&pfile).output().unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("cannot bind NFQUEUE 18"), "{msg}");
    d.stop();
}

#[test]
fn daemon_attributes_packets_to_the_processes_on_both_ends() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    let server_pid = server.pid();
    ns.sh("iptables -A OUTPUT -o lo -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 26");
    ns.sh("iptables -A INPUT -i lo -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 26");
    // Record every grant, so each queued SYN leaves a record.
    let policy = "default = \"drop\"\n[[rule]]\nname = \"all-db\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"accept\"\naudit = true\n";
    let d = Daemon::start(&ns, policy, 26, &[]);
    // `ip netns exec` and `setpriv` exec the client, so its pid is the child's.
    let mut client = ns.cmd("setpriv");
    client.args([
        "--reuid=1001",
        "--regid=1001",
        "--clear-groups",
        "/usr/bin/python3",
        PROBE,
        "connect-tcp",
        "127.0.0.1",
        "5432",
        "3",
    ]);
    let child = client.spawn().unwrap();
    let client_pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    d.stop();
    let audit = std::fs::read_to_string(ns.dir.path().join("audit-26.log")).unwrap();
    let out = audit.lines().find(|l| l.contains("granted  { send }")).unwrap_or_else(|| panic!("{audit}"));
    let inp = audit.lines().find(|l| l.contains("granted  { recv }")).unwrap_or_else(|| panic!("{audit}"));
    for line in [out, inp] {
        assert!(line.contains(&format!(" pid={client_pid} comm=\"python3")), "source process: {line}");
        assert!(line.contains(&format!(" tpid={server_pid} tcomm=\"python3")), "destination process: {line}");
        assert!(line.contains("path=\"/usr/bin/python3"), "{line}");
        // SELinux is off on this host: the labels say so.
        assert!(line.contains("slabel=selinux_disabled tlabel=selinux_disabled"), "{line}");
    }
    assert!(out.contains("ouid=1001"), "{out}");
}

#[test]
fn sigusr1_prints_counters_while_running() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    queue_tcp_5432(&ns, 31);
    let d = Daemon::start(&ns, UID_POLICY, 31, &[]);
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "3"]));
    d.signal("USR1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !d.stderr_text().contains("labelgate counters:") {
        assert!(std::time::Instant::now() < deadline, "no counters after SIGUSR1: {}", d.stderr_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let text = d.stderr_text();
    assert_eq!(counter(&text, "accepted"), 1, "{text}");
    assert!(text.contains("labelgate rule uid1001-db: hits=1"), "{text}");
    let err = d.stop();
    assert_eq!(err.matches("labelgate counters:").count(), 2, "once on SIGUSR1, once at exit: {err}");
}
