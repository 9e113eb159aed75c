//! Edges of the command line and the daemon's life, against the real
//! binary and kernel: policy paths that are not regular files, huge values
//! in a policy, signals during a slow start, rule hits over a reload,
//! start-up as a non-root user, metrics endpoints that cannot be used,
//! explain's labels against the daemon's, and a rotated audit file owned by
//! another user. Root only (each test says why it runs the daemon).
#![allow(unsafe_code)] // libc calls the test makes itself (getrusage)

mod support;
use std::io::Read as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Run `c` with a deadline: `None` if it had to be killed.
fn output_within(c: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `labelgate run --queue QUEUE ARGS...` in `ns`, which must fail (within
/// `limit`) without ever binding the queue; its stderr.
fn run_fails_unbound(ns: &Netns, queue: u16, args: &[&std::ffi::OsStr], limit: Duration) -> String {
    let mut run = ns.cmd(LABELGATE);
    run.args(["run", "--queue", &queue.to_string()]).args(args);
    let out = output_within(&mut run, limit).unwrap_or_else(|| panic!("labelgate run {args:?} did not exit"));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(ns.queue_stats(queue).is_none(), "queue {queue} bound by a daemon that could not start: {err}");
    err
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Wait (bounded) until the daemon's stderr contains `what`.
fn wait_for(d: &Daemon, what: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let err = d.stderr_text();
        if err.contains(what) {
            return err;
        }
        assert!(Instant::now() < deadline, "no {what:?} within {limit:?}: {err}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mkfifo(path: &std::path::Path) {
    run_ok(Command::new("mkfifo").arg(path));
}

/// The daemon's resident set, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// `check`, `run` and a SIGHUP reload given a FIFO or /dev/zero all answer
/// promptly with an error naming what the path is; the running daemon
/// keeps its policy, still answers SIGUSR1, and stops on one SIGTERM.
/// Root: `run` and the reload need a queue.
#[test]
fn fifo_and_device_policy_paths_are_refused_promptly() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let fifo = ns.dir.path().join("policy.fifo");
    mkfifo(&fifo);
    for (path, what) in [(fifo.as_path(), "a FIFO"), (std::path::Path::new("/dev/zero"), "a character device")] {
        let out = output_within(Command::new(LABELGATE).arg("check").arg(path), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("check {} hung", path.display()));
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains(what) && err.contains("must be a regular file"), "{err}");

        let err = run_fails_unbound(&ns, 40, &["--policy".as_ref(), path.as_os_str()], Duration::from_secs(10));
        assert!(err.contains(what), "{err}");
    }

    // A running daemon whose policy path is replaced by a FIFO, then by a
    // link to /dev/zero, and reloaded.
    let d = Daemon::start(&ns, "default = \"accept\"\n", 41, &[]);
    let pfile = ns.dir.path().join("policy-41.toml");
    std::fs::remove_file(&pfile).unwrap();
    mkfifo(&pfile);
    d.signal("HUP");
    wait_for(&d, "reload refused", Duration::from_secs(10));
    d.signal("USR1");
    let err = wait_for(&d, "labelgate counters:", Duration::from_secs(5));
    assert!(err.contains("a FIFO: a policy must be a regular file"), "{err}");
    std::fs::remove_file(&pfile).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &pfile).unwrap();
    d.signal("HUP");
    let err = wait_for(&d, "a character device", Duration::from_secs(10));
    assert!(rss_kib(d.pid()) < 200 * 1024, "RSS {} KiB after reading /dev/zero", rss_kib(d.pid()));
    // The regular file path still reloads (the refusals above are not a broken reload).
    std::fs::remove_file(&pfile).unwrap();
    std::fs::write(&pfile, "default = \"accept\"\n").unwrap();
    d.signal("HUP");
    wait_for(&d, "reloaded", Duration::from_secs(10));
    assert_eq!(err.matches("reload refused").count(), 2, "{err}");
    d.stop();
}

/// A 8 MB value in a policy comes back from `check` and from a refused
/// reload as a bounded excerpt, not as an 8 MB message. Root: the reload.
#[test]
fn a_huge_value_gives_a_bounded_message() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let huge = "x".repeat(8 << 20);
    let bad = format!("default = \"accept\"\n[[rule]]\nname = \"r\"\nverdict = \"drop\"\nproto = \"{huge}\"\n");
    let path = ns.dir.path().join("huge.toml");
    std::fs::write(&path, &bad).unwrap();
    let out = Command::new(LABELGATE).arg("check").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.len() < 2048, "check printed {} bytes", err.len());
    assert!(err.contains(&format!("{}:5:9: unknown proto", path.display())) && err.contains("bytes cut"), "{err}");

    let d = Daemon::start(&ns, "default = \"accept\"\n", 42, &[]);
    let before = d.stderr_text().len();
    std::fs::write(ns.dir.path().join("policy-42.toml"), &bad).unwrap();
    d.signal("HUP");
    let err = wait_for(&d, "reload refused", Duration::from_secs(30));
    assert!(err.len() - before < 4096, "the reload logged {} bytes", err.len() - before);
    d.stop();
}

/// SIGHUP and SIGUSR1 sent while a large policy is still loading (the
/// queue not bound yet) neither kill the daemon nor are lost: the counters
/// are printed and the policy reloaded once it runs. Root: a queue.
#[test]
fn signals_during_a_slow_start_are_kept_for_later() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let gen = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/gen-policy.py");
    let policy = run_ok(Command::new("python3").args([gen, "10000", "--default", "accept"])).stdout;
    let pfile = ns.dir.path().join("big.toml");
    std::fs::write(&pfile, policy).unwrap();
    let errfile = ns.dir.path().join("big.err");
    let mut child = ns
        .cmd(LABELGATE)
        .args(["run", "--queue", "43", "--policy"])
        .arg(&pfile)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errfile).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the process catches SIGHUP and SIGUSR1 (SigCgt; `ip netns
    // exec` execs labelgate, so the pid is labelgate's), or 2 s at most, as
    // a daemon that installs its handlers late never shows them.
    let caught = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).map(str::trim).unwrap_or("0");
        let mask = u64::from_str_radix(mask, 16).unwrap_or(0);
        mask & (1 << (libc_sig::HUP - 1)) != 0 && mask & (1 << (libc_sig::USR1 - 1)) != 0
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while !caught(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(ns.queue_stats(43).is_none(), "the policy loaded too fast for this test to send signals during it");
    for sig in ["HUP", "USR1"] {
        run_ok(Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let err = loop {
        let err = std::fs::read_to_string(&errfile).unwrap_or_default();
        if let Some(st) = child.try_wait().unwrap() {
            panic!("labelgate died during start-up with {st}: {err}");
        }
        if err.contains("reloaded") && err.contains("labelgate counters:") {
            break err;
        }
        assert!(Instant::now() < deadline, "signals not honoured after start-up: {err}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(err.contains("labelgate running"), "{err}");
    assert!(ns.queue_stats(43).is_some());
    run_ok(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.success(), "{st}");
}

/// Signal numbers (x86-64 and aarch64 Linux).
mod libc_sig {
    pub const HUP: u32 = 1;
    pub const USR1: u32 = 10;
}

/// The hit count of a rule in the counters (last `labelgate rule NAME:` line).
fn hits(stderr: &str, rule: &str) -> u64 {
    let prefix = format!("labelgate rule {rule}: hits=");
    stderr
        .lines()
        .rev()
        .find_map(|l| l.split_once(&prefix).and_then(|(_, v)| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no hits for {rule} in {stderr}"))
}

/// A rule that survives a reload keeps its hits; totals at exit include
/// the hits from before the reload. Root: a queue.
#[test]
fn rule_hits_survive_a_reload() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    ns.sh("iptables -A OUTPUT -o lo -p udp --dport 9999 -j NFQUEUE --queue-num 44");
    let keep = "[[rule]]\nname = \"keep\"\nproto = \"udp\"\ndport = 9999\nverdict = \"accept\"\n";
    let d = Daemon::start(&ns, &format!("default = \"accept\"\n{keep}"), 44, &[]);
    let _sink = ns.spawn_probe(&["udp-echo", "127.0.0.1", "9999", "60"]);
    let send = |n: &str| ns.sh(&format!("python3 {PROBE} udp-flood 127.0.0.1 9999 {n} 5 100"));
    send("5");
    d.signal("USR1");
    let err = wait_for(&d, "labelgate rule keep:", Duration::from_secs(5));
    assert_eq!(hits(&err, "keep"), 5, "{err}");
    let other = "[[rule]]\nname = \"new\"\nproto = \"udp\"\ndport = 1\nverdict = \"drop\"\n";
    std::fs::write(ns.dir.path().join("policy-44.toml"), format!("default = \"accept\"\n{other}{keep}")).unwrap();
    d.signal("HUP");
    wait_for(&d, "reloaded", Duration::from_secs(10));
    send("3");
    let err = d.stop();
    assert_eq!(hits(&err, "keep"), 8, "5 before the reload and 3 after: {err}");
    assert_eq!(hits(&err, "new"), 0);
    assert_eq!(counter(&err, "packets"), 8);
}

/// As a user without CAP_NET_ADMIN, `run` says so first, with or without
/// --no-confine; as root the same command binds the queue. Root: setpriv
/// and a queue.
#[test]
fn a_non_root_start_says_it_needs_cap_net_admin() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    run_ok(Command::new("chmod").arg("755").arg(dir.path()));
    let pfile = dir.path().join("p.toml");
    std::fs::write(&pfile, "default = \"accept\"\n").unwrap();
    for extra in [&[][..], &["--no-confine"][..]] {
        let out = ns
            .cmd("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", LABELGATE])
            .args(["run", "--queue", "45", "--policy"])
            .arg(&pfile)
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("needs CAP_NET_ADMIN") && err.contains("run it as root"), "{extra:?}: {err}");
        assert!(!err.contains("cannot drop privileges"), "{err}");
    }
    let d = Daemon::start(&ns, "default = \"accept\"\n", 45, &[]);
    d.stop();
}

/// A metrics port that is taken stops start-up before the queue is bound
/// (the queue never appears in nfnetlink_queue and nothing logs it bound);
/// with a free port the same command binds it. Root: a queue.
#[test]
fn a_taken_metrics_port_stops_start_up_before_the_queue() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let _holder = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "9797", "60"]);
    let pfile = ns.dir.path().join("p.toml");
    std::fs::write(&pfile, "default = \"accept\"\n").unwrap();
    let args = ["--metrics".as_ref(), "127.0.0.1:9797".as_ref(), "--policy".as_ref(), pfile.as_os_str()];
    let err = run_fails_unbound(&ns, 46, &args, Duration::from_secs(30));
    assert!(err.contains("cannot serve metrics") && err.contains("127.0.0.1:9797"), "{err}");
    assert!(!err.contains("bound NFQUEUE"), "the queue was bound before the metrics port: {err}");
    // localhost resolves to loopback and serves.
    let d = Daemon::start(&ns, "default = \"accept\"\n", 46, &["--metrics", "localhost:9798"]);
    let body = scrape_tcp(&ns, 9798);
    assert!(body.contains("labelgate_packets_total"), "{body}");
    d.stop();
}

fn scrape_tcp(ns: &Netns, port: u16) -> String {
    let py = format!(
        "import socket\ns=socket.create_connection(('localhost',{port}),5)\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
         b=b''\nwhile True:\n  d=s.recv(65536)\n  if not d: break\n  b+=d\nprint(b.decode())"
    );
    text(&run_ok(ns.cmd("python3").args(["-c", &py])).stdout)
}

/// `--metrics unix:PATH` refuses a regular file at PATH (and leaves it
/// alone, binding no queue), and removes its own socket at exit. Root: a
/// queue.
#[test]
fn a_unix_metrics_path_refuses_a_file_and_is_removed_at_exit() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    let precious = ns.dir.path().join("precious");
    std::fs::write(&precious, "keep me").unwrap();
    let pfile = ns.dir.path().join("p.toml");
    std::fs::write(&pfile, "default = \"accept\"\n").unwrap();
    let metrics = std::ffi::OsString::from(format!("unix:{}", precious.display()));
    let args = ["--policy".as_ref(), pfile.as_os_str(), "--metrics".as_ref(), metrics.as_os_str()];
    let err = run_fails_unbound(&ns, 47, &args, Duration::from_secs(30));
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");

    let sock = ns.dir.path().join("metrics.sock");
    let d = Daemon::start(&ns, "default = \"accept\"\n", 47, &["--metrics", &format!("unix:{}", sock.display())]);
    let mut conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut conn, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(body.contains("labelgate_packets_total"), "{body}");
    d.stop();
    assert!(!sock.exists(), "the metrics socket was left behind");
}

/// The daemon labels an end it cannot label `system_u:object_r:unlabeled_t:s0`
/// (ICMP ends always: no socket to look up), and `explain --source
/// unlabeled_t` builds that same context: a rule on
/// `system_u:object_r:unlabeled_t` drops in both, and neither drops a
/// packet the rule does not name. Root: a queue and ping.
#[test]
fn explain_labels_unlabeled_ends_as_the_daemon_does() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    ns.sh("iptables -A OUTPUT -o lo -p icmp --icmp-type echo-request -j NFQUEUE --queue-num 48");
    let policy =
        "default = \"accept\"\n[[rule]]\nname = \"no-unlabeled\"\nsource = \"system_u:object_r:unlabeled_t\"\n\
                  proto = \"icmp\"\ndaddr = \"127.0.0.2\"\nverdict = \"drop\"\n";
    let d = Daemon::start(&ns, policy, 48, &[]);
    let ping = |dst: &str| ns.cmd("ping").args(["-c", "1", "-W", "2", dst]).stdout(Stdio::null()).status().unwrap();
    assert!(ping("127.0.0.1").success(), "the allowed ping failed");
    assert!(!ping("127.0.0.2").success(), "the ping the rule names passed");
    let err = d.stop();
    let denial = std::fs::read_to_string(ns.dir.path().join("audit-48.log")).unwrap();
    assert!(denial.contains("scontext=system_u:object_r:unlabeled_t:s0"), "{denial}");
    assert_eq!(hits(&err, "no-unlabeled"), 1, "{err}");

    let pfile = ns.dir.path().join("policy-48.toml");
    for (daddr, verdict) in [("127.0.0.2", "verdict: drop"), ("127.0.0.1", "verdict: accept")] {
        let out = Command::new(LABELGATE)
            .args(["explain", "--policy"])
            .arg(&pfile)
            .args(["--source", "unlabeled_t", "--dest", "unlabeled_t", "--proto", "icmp", "--daddr", daddr])
            .output()
            .unwrap();
        let t = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(t.contains("source=system_u:object_r:unlabeled_t:s0"), "{t}");
        assert!(t.contains(verdict), "{daddr}: {t}");
    }
    // --uid takes a name as a policy's uid does.
    let out = Command::new(LABELGATE)
        .args(["explain", "--policy"])
        .arg(&pfile)
        .args(["--source", "unlabeled_t", "--dest", "unlabeled_t", "--uid", "root"])
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("uid=0"), "{}{}", text(&out.stdout), text(&out.stderr));
}

/// logrotate's `create 0640 otheruser`: after the audit file is renamed
/// and a new one owned by another user takes its path, the daemon reopens
/// it and records land there. Root: a queue, chown.
#[test]
fn a_rotated_audit_file_owned_by_another_user_is_reopened() {
    if !can_run() {
        return;
    }
    let ns = Netns::new();
    ns.sh("iptables -A OUTPUT -o lo -p udp --dport 9 -j NFQUEUE --queue-num 49");
    let policy = "default = \"drop\"\n";
    let d = Daemon::start(&ns, policy, 49, &[]);
    let send = || ns.sh(&format!("python3 {PROBE} udp-flood 127.0.0.1 9 1 1 10"));
    send();
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.audit_lines().is_empty() {
        assert!(Instant::now() < deadline, "no audit record: {}", d.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let rotated = ns.dir.path().join("audit-49.log.1");
    std::fs::rename(&d.audit, &rotated).unwrap();
    std::fs::write(&d.audit, "").unwrap();
    run_ok(Command::new("chown").args(["65534:65534"]).arg(&d.audit));
    run_ok(Command::new("chmod").arg("0640").arg(&d.audit));
    // The writer checks for rotation about once a second; keep sending.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.audit_lines().is_empty() {
        assert!(Instant::now() < deadline, "nothing written to the new file: {}", d.stderr_text());
        send();
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = d.stop();
    assert!(!err.contains("cannot be reopened"), "{err}");
    assert!(std::fs::read_to_string(&rotated).unwrap().contains("denied"));
}

/// A missing policy file names its OS error once; a bad `--audit` path is
/// named, and the daemon stops before binding its queue; with a good path
/// the same command runs. Root: a queue.
#[test]
fn messages_name_the_path_and_the_error_once() {
    if !can_run() {
        return;
    }
    let out = Command::new(LABELGATE).args(["check", "/nonexistent/labelgate.toml"]).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err, "labelgate: /nonexistent/labelgate.toml: No such file or directory (os error 2)\n");

    let ns = Netns::new();
    let pfile = ns.dir.path().join("p.toml");
    std::fs::write(&pfile, "default = \"accept\"\n").unwrap();
    let args = ["--audit".as_ref(), "/nonexistent/dir/audit.log".as_ref(), "--policy".as_ref(), pfile.as_os_str()];
    let err = run_fails_unbound(&ns, 50, &args, Duration::from_secs(30));
    assert!(err.contains("cannot open the audit file /nonexistent/dir/audit.log"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let d = Daemon::start(&ns, "default = \"accept\"\n", 50, &[]);
    d.stop();
}

/// `labelgate rules` on a large default-accept policy whose drop rules each
/// expand to 256 matches (16 sources by 16 destinations) holds about what
/// the policy itself needs, not every rule's expansion at once. No daemon,
/// no root: the peak resident size of the child, from getrusage.
#[test]
fn rules_memory_stays_near_the_policy_size() {
    let dir = tempfile::tempdir().unwrap();
    let nets = |p: &str| (0..16).map(|i| format!("\"{p}.{i}.0/24\"")).collect::<Vec<_>>().join(",");
    let (s, d) = (nets("10.0"), nets("192.168"));
    let mut policy = String::from("default = \"accept\"\n");
    for r in 0..8000 {
        policy.push_str(&format!(
            "[[rule]]\nname = \"r{r}\"\nproto = \"tcp\"\nsaddr = [{s}]\ndaddr = [{d}]\ndport = {}\nverdict = \"drop\"\n",
            1000 + r
        ));
    }
    let path = dir.path().join("big.toml");
    std::fs::write(&path, &policy).unwrap();
    let out = Command::new(LABELGATE).arg("rules").arg("--policy").arg(&path).output().expect("run labelgate rules");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rules = text(&out.stdout);
    assert!(
        rules.contains("# widened:")
            && rules.contains("-A LABELGATE_OUT -p tcp -s 10.0.15.0/24 -d 192.168.15.0/24 -m conntrack")
            && !rules.contains("--dport"),
        "{rules}"
    );
    // SAFETY: a zeroed rusage is valid and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) }, 0);
    let peak_mib = ru.ru_maxrss / 1024;
    assert!(peak_mib < 64, "labelgate rules peaked at {peak_mib} MiB for a {} MiB policy", policy.len() >> 20);
}
