//! Reliability against the real kernel: crashes mid-flood (injected panic,
//! SIGKILL) with and without --queue-bypass, queue overload with fail-open
//! and fail-closed, and a bounded soak. Root only; see docs/RELIABILITY.md.

mod support;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

/// Sent and received datagrams of a flood.
struct Flood {
    sent: u64,
    received: u64,
}

/// Start a UDP sink and the queue rule; returns (sink, count file).
fn udp_setup(ns: &Netns, queue: u16, bypass: bool) -> (Bg, std::path::PathBuf) {
    let count = ns.dir.path().join(format!("count-{queue}"));
    let sink = ns.spawn_probe(&["udp-sink", "127.0.0.1", "9999", "3", count.to_str().unwrap()]);
    let bypass = if bypass { " --queue-bypass" } else { "" };
    ns.sh(&format!("iptables -A OUTPUT -o lo -p udp --dport 9999 -j NFQUEUE --queue-num {queue}{bypass}"));
    (sink, count)
}

fn flood(ns: &Netns, count: u64, secs: u64, pps: u64) -> std::process::Child {
    ns.cmd("/usr/bin/python3")
        .args([PROBE, "udp-flood", "127.0.0.1", "9999", &count.to_string(), &secs.to_string(), &pps.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(flood: std::process::Child, sink: Bg, count: &std::path::Path) -> Flood {
    let sent = String::from_utf8_lossy(&flood.wait_with_output().unwrap().stdout).trim().parse().unwrap();
    sink.wait();
    let received = std::fs::read_to_string(count).unwrap().trim().parse().unwrap();
    Flood { sent, received }
}

enum Crash {
    Panic,
    Kill,
}

/// Flood 15k datagrams/s for 4 s; the daemon dies after about one second.
fn crash_mid_flood(queue: u16, crash: Crash, bypass: bool) -> Flood {
    let ns = Netns::new();
    let (sink, count) = udp_setup(&ns, queue, bypass);
    let env: &[(&str, &str)] = match crash {
        Crash::Panic => &[("LABELGATE_FAULT_PANIC_AFTER", "15000")],
        Crash::Kill => &[],
    };
    let mut d = Daemon::start_env(&ns, "default = \"accept\"\n", queue, &[], env);
    let f = flood(&ns, 60_000, 8, 15_000);
    let status = match crash {
        Crash::Panic => d.wait_exit(Duration::from_secs(6)).expect("the injected panic stops the daemon"),
        Crash::Kill => {
            std::thread::sleep(Duration::from_millis(1000));
            d.signal("KILL");
            d.wait_exit(Duration::from_secs(5)).expect("SIGKILL stops the daemon")
        }
    };
    match crash {
        Crash::Panic => {
            assert_eq!(status.signal(), Some(libc_sigabrt()), "a panic aborts the daemon: {status:?}");
            let err = d.stderr_text();
            assert!(err.contains("injected fault") && err.contains("aborting"), "{err}");
        }
        Crash::Kill => assert_eq!(status.signal(), Some(9)),
    }
    finish(f, sink, &count)
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn crash_with_queue_bypass_lets_traffic_through() {
    if !can_run() {
        return;
    }
    for (queue, crash) in [(40, Crash::Panic), (41, Crash::Kill)] {
        let f = crash_mid_flood(queue, crash, true);
        // Only the packets waiting in the queue at the moment of death are
        // lost (the kernel drops them when the socket closes); at most the
        // queue's contents, a small fraction of the flood.
        assert!(f.received + 8192 >= f.sent, "bypass: sent {} received {}", f.sent, f.received);
        assert!(f.received * 10 >= f.sent * 9, "bypass: sent {} received {}", f.sent, f.received);
    }
}

#[test]
fn crash_without_queue_bypass_fails_closed() {
    if !can_run() {
        return;
    }
    for (queue, crash) in [(42, Crash::Panic), (43, Crash::Kill)] {
        let f = crash_mid_flood(queue, crash, false);
        // After the crash no listener is bound: the rule drops everything.
        assert!(f.received * 2 < f.sent, "fail-closed: sent {} received {}", f.sent, f.received);
        assert!(f.received > 1000, "traffic passed while labelgate ran: {}", f.received);
    }
}

/// Kernel figures the daemon logs before unbinding.
fn kernel_field(err: &str, k: &str) -> u64 {
    let line = err.lines().find(|l| l.contains("kernel id_sequence=")).unwrap_or_else(|| panic!("{err}"));
    line.split([' ', ';'])
        .find_map(|kv| kv.strip_prefix(&format!("{k}=")).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("{k} in {line}"))
}

#[test]
fn overload_follows_the_fail_choice_and_recovers() {
    if !can_run() {
        return;
    }
    for (queue, fail) in [(44u16, "open"), (45, "closed")] {
        let ns = Netns::new();
        let (sink, count) = udp_setup(&ns, queue, true);
        let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
        ns.sh(&format!("iptables -A OUTPUT -o lo -p tcp --dport 5432 -j NFQUEUE --queue-num {queue}"));
        // A tiny queue and receive buffer, flooded without pacing.
        let d = Daemon::start(
            &ns,
            "default = \"accept\"\n",
            queue,
            &["--fail", fail, "--queue-maxlen", "8", "--rcvbuf", "4096"],
        );
        let f = flood(&ns, 100_000, 6, 0);
        let f = finish(f, sink, &count);
        // Recovery: right after the flood a connection through the same queue works.
        let t = Instant::now();
        assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "1"]), "{fail}: not recovered");
        assert!(t.elapsed() < Duration::from_secs(1), "{fail}: recovery took {:?}", t.elapsed());
        let err = d.stop();
        let dropped = kernel_field(&err, "queue_dropped") + kernel_field(&err, "user_dropped");
        let answered: u64 = counter(&err, "packets");
        assert_eq!(kernel_field(&err, "id_sequence") - kernel_field(&err, "user_dropped"), answered, "{err}");
        if fail == "open" {
            assert_eq!(f.received, f.sent, "fail-open: everything passes ({} of {})", f.received, f.sent);
            assert_eq!(dropped, 0);
        } else {
            assert!(dropped > 0, "fail-closed: the kernel counted what it dropped: {err}");
            assert!(f.received < f.sent, "fail-closed: {} of {}", f.received, f.sent);
            assert_eq!(f.received + dropped, f.sent, "every datagram is either delivered or counted dropped");
        }
    }
}

#[test]
fn soak_keeps_memory_and_descriptors_flat() {
    if !can_run() {
        return;
    }
    let secs: u64 = std::env::var("LABELGATE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let ns = Netns::new();
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", &(secs + 30).to_string()]);
    let _echo = ns.spawn_probe(&["udp-echo", "127.0.0.1", "5353", &(secs + 30).to_string()]);
    ns.sh("iptables -A OUTPUT -o lo -p tcp --dport 5432 -m conntrack --ctstate NEW -j NFQUEUE --queue-num 46");
    ns.sh("iptables -A OUTPUT -o lo -p udp -j NFQUEUE --queue-num 46 --queue-bypass");
    ns.sh("iptables -A OUTPUT -o lo -p icmp -j NFQUEUE --queue-num 46");
    let audit_policy = "default = \"accept\"\n[[rule]]\nname = \"deny-1002\"\nuid = 1002\nverdict = \"drop\"\n";
    let d = Daemon::start(&ns, audit_policy, 46, &[]);
    // Background UDP load for the whole soak.
    let f = flood(&ns, secs * 3000, secs + 5, 3000);
    let start = Instant::now();
    let mut baseline = None;
    let mut rounds = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        // Short-lived processes under two uids: TCP, UDP request/response, ICMP.
        // Generous timeouts: the machine may be busy; the soak is about stability.
        assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "5"]));
        assert!(!ns.probe_as(Some(1002), &["connect-tcp", "127.0.0.1", "5432", "0.2"]));
        assert!(ns.probe_as(Some(1001), &["udp-ask", "127.0.0.1", "5353", "5"]));
        let _ = ns.cmd("ping").args(["-c", "1", "-W", "1", "127.0.0.1"]).stdout(Stdio::null()).status();
        rounds += 1;
        if baseline.is_none() && start.elapsed() > Duration::from_secs(secs.min(60) / 4) {
            baseline = Some(d.rss_and_fds());
        }
    }
    let (rss0, fds0, _) = baseline.expect("warm-up reading");
    let (rss1, fds1, links) = d.rss_and_fds();
    let _ = f.wait_with_output();
    let err = d.stop();
    assert!(rss1 <= rss0 + 1024, "RSS grew from {rss0} KiB to {rss1} KiB");
    assert_eq!(fds1, fds0, "open descriptors changed");
    // The resolver's links to /proc/PID/fd/N are a bounded cache (256).
    assert!(links <= 256, "{links} links into /proc open");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(kernel_field(&err, "id_sequence"), counter(&err, "packets"), "every packet got a verdict: {err}");
    assert_eq!(kernel_field(&err, "queue_dropped") + kernel_field(&err, "user_dropped"), 0, "{err}");
    eprintln!(
        "soak: {secs} s, {rounds} rounds, {} packets, RSS {rss0}->{rss1} KiB, fds {fds0}->{fds1}, {links} /proc links",
        counter(&err, "packets")
    );
}

#[test]
fn netlink_buffer_overrun_is_detected_counted_and_survived() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let (sink, count) = udp_setup(&ns, 47, true);
    // A long queue but a tiny socket buffer: the kernel fails to deliver
    // messages (user_dropped) and reports ENOBUFS on the socket.
    let d = Daemon::start(
        &ns,
        "default = \"accept\"\n",
        47,
        &["--fail", "closed", "--queue-maxlen", "4096", "--rcvbuf", "2048"],
    );
    let f = finish(flood(&ns, 100_000, 6, 0), sink, &count);
    // Still deciding afterwards.
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "30"]);
    ns.sh("iptables -A OUTPUT -o lo -p tcp --dport 5432 -j NFQUEUE --queue-num 47");
    assert!(ns.probe_as(Some(1001), &["connect-tcp", "127.0.0.1", "5432", "2"]));
    let err = d.stop();
    let user_dropped = kernel_field(&err, "user_dropped");
    assert!(user_dropped > 0, "the overrun happened: {err}");
    assert!(counter(&err, "recv_errors") > 0, "ENOBUFS was seen and counted: {err}");
    assert!(err.contains("receive buffer overran"), "{err}");
    assert_eq!(f.received + user_dropped + kernel_field(&err, "queue_dropped"), f.sent, "nothing vanished uncounted");
}
