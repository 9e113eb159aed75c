//! Container traffic through FORWARD: sockets in other network namespaces.
//!
//! A "host" network namespace runs labelgate with an NFQUEUE rule on
//! FORWARD; two "container" namespaces, A and B, are routed through it by
//! veth pairs (198.18.x.y addresses, ip_forward=1 in the host namespace).
//! A TCP listener runs in B, clients in A under two uids: the policy lets
//! uid 1001 through and refuses uid 1002, which only works if labelgate
//! finds the client's socket inside A (a forwarded packet carries no
//! NFQA_UID). The JSON audit records name the pid and exe of both ends,
//! checked against `ss -tanpH` run inside each namespace. The same
//! connections decided at PREROUTING instead, with the queue rules
//! `labelgate rules --install` writes in the mangle table, and in flow mode
//! across PREROUTING and FORWARD. Needs root; see `support::can_run`.

mod support;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const TOOLS: &[&str] = &["ip", "iptables", "python3", "setpriv", "ss"];
const PORT: u16 = 8080;

/// A client that connects to HOST:PORT within TIMEOUT seconds, prints
/// "connected SPORT" or "failed SPORT", then keeps its socket HOLD seconds.
const CLIENT: &str = r#"
import socket, sys, time
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected", s.getsockname()[1], flush=True)
except OSError:
    print("failed", s.getsockname()[1], flush=True)
time.sleep(float(sys.argv[4]))
"#;

/// Host namespace `h` with containers `a` and `b` routed through it; the
/// containers' addresses.
struct Net {
    h: Netns,
    a: Netns,
    b: Netns,
    a_ip: String,
    b_ip: String,
}

fn net() -> Net {
    // Subnets unlikely to be used by another test at the same time.
    let x = 100 + (std::process::id() % 50) * 2;
    let (h, a, b) = (Netns::new(), Netns::new(), Netns::new());
    for (c, n, tag) in [(&a, x, "a"), (&b, x + 1, "b")] {
        let (outer, inner) = (format!("lgh{tag}{}", std::process::id() % 100000), format!("lgc{tag}"));
        // Made inside the namespaces: no name is ever taken in the root one.
        run_ok(
            Command::new("ip")
                .args(["link", "add", &outer, "netns", &h.name, "type", "veth", "peer", "name"])
                .args([&inner, "netns", &c.name]),
        );
        h.sh(&format!("ip addr add 198.18.{n}.1/24 dev {outer} && ip link set {outer} up"));
        c.sh(&format!(
            "ip addr add 198.18.{n}.2/24 dev {inner} && ip link set {inner} up && ip route add default via 198.18.{n}.1"
        ));
    }
    h.sh("sysctl -qw net.ipv4.ip_forward=1");
    Net { h, a, b, a_ip: format!("198.18.{x}.2"), b_ip: format!("198.18.{}.2", x + 1) }
}

/// Start `CLIENT` in `ns` as `uid`; its first line and the child.
fn client(ns: &Netns, uid: u32, host: &str, timeout: &str, hold: &str) -> (String, Kill, u32) {
    use std::io::{BufRead, BufReader};
    let mut c = ns.cmd("setpriv");
    c.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "/usr/bin/python3", "-c", CLIENT]);
    c.args([host, &PORT.to_string(), timeout, hold]).stdout(Stdio::piped());
    let mut child = c.spawn().expect("spawn client");
    let out = child.stdout.take().expect("stdout");
    let pid = child.id();
    let bg = Kill(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("client line");
    (line.trim().to_string(), bg, pid)
}

/// A child killed and reaped on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid `ss -tanpH` inside `ns` shows for a socket whose local end is
/// `local` (`users:(("comm",pid=N,fd=M))`).
fn ss_pid(ns: &Netns, local: &str) -> Option<u32> {
    let out = ns.sh("ss -tanpH");
    out.lines().find(|l| l.split_whitespace().nth(3) == Some(local)).and_then(|l| {
        let at = l.find("pid=")? + 4;
        l[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    })
}

fn exe(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default()
}

/// The JSON audit record of the connection from source port `sport`.
fn record(d: &Daemon, sport: u16) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = d
            .audit_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["src"].as_u64() == Some(u64::from(sport)));
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn policy() -> String {
    format!(
        r#"
default = "drop"
[[rule]]
name = "uid1001-forward"
hook = "forward"
uid = 1001
proto = "tcp"
dport = {PORT}
audit = true
verdict = "accept"
"#
    )
}

/// [`net`] with new TCP connections to B's port queued on FORWARD to
/// `queue`, and a server in B accepting for `secs` seconds.
fn forwarding(queue: u16, secs: u32) -> (Net, Bg) {
    let n = net();
    n.h.sh(&format!(
        "iptables -A FORWARD -p tcp --dport {PORT} -m conntrack --ctstate NEW -j NFQUEUE --queue-num {queue}"
    ));
    let server = n.b.spawn_probe(&["serve-tcp", &n.b_ip, &PORT.to_string(), &secs.to_string()]);
    (n, server)
}

#[test]
fn forwarded_container_traffic_is_attributed_in_its_namespace() {
    if !can_run_with(TOOLS) {
        return;
    }
    let queue = 41;
    let (n, server) = forwarding(queue, 60);
    let server_pid = server.pid();
    // --other-netns: confined as by default, keeping CAP_SYS_ADMIN to enter
    // the other namespaces.
    // the default confinement drops.
    // A container's first process (its "init") is there before its traffic.
    let _init_a = Kill(n.a.cmd("sleep").arg("60").spawn().expect("sleep in A"));
    let d = Daemon::start(&n.h, &policy(), queue, &["--audit-format", "json", "--other-netns"]);
    wait_held(&d, &[&n.a, &n.b]);

    let (ok, _ok_client, ok_pid) = client(&n.a, 1001, &n.b_ip, "5", "6");
    assert!(ok.starts_with("connected "), "uid 1001 must get through FORWARD: {ok}\n{}", d.stderr_text());
    let (bad, _bad_client, bad_pid) = client(&n.a, 1002, &n.b_ip, "2", "6");
    assert!(bad.starts_with("failed "), "uid 1002 must be refused: {bad}");

    let listener = format!("{}:{PORT}", n.b_ip);
    assert_eq!(ss_pid(&n.b, &listener), Some(server_pid), "ss in B names the listener's pid");
    for (line, uid, pid, outcome) in [(&ok, 1001u32, ok_pid, "granted"), (&bad, 1002, bad_pid, "denied")] {
        let sport: u16 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let local = format!("{}:{sport}", n.a_ip);
        let ss = ss_pid(&n.a, &local).unwrap_or_else(|| panic!("ss in A shows {local}"));
        assert_eq!(ss, pid, "ss in A names the client (setpriv execs python)");
        let r = record(&d, sport).unwrap_or_else(|| panic!("no record for {local}: {:?}", d.audit_lines()));
        assert_eq!(r["outcome"], outcome, "{r}");
        assert_eq!(r["hook"], "forward", "{r}");
        assert_eq!(r["sender_uid"].as_u64(), Some(u64::from(uid)), "{r}");
        assert_eq!(r["process"]["pid"].as_u64(), Some(u64::from(ss)), "source pid as ss in A: {r}");
        assert_eq!(r["process"]["exe"].as_str(), Some(exe(ss).as_str()), "{r}");
        assert_eq!(r["dest_process"]["pid"].as_u64(), Some(u64::from(server_pid)), "dest pid as ss in B: {r}");
        assert_eq!(r["dest_process"]["exe"].as_str(), Some(exe(server_pid).as_str()), "{r}");
        // Each end names the namespace its socket was found in.
        assert_eq!(r["process"]["netns"].as_u64(), Some(netns_inode(&n.a)), "source end in A: {r}");
        assert_eq!(r["dest_process"]["netns"].as_u64(), Some(netns_inode(&n.b)), "dest end in B: {r}");
    }
    let err = d.stop();
    assert!(err.contains("labelgate rule uid1001-forward: hits=1"), "{err}");
    let lookups = err
        .lines()
        .find(|l| l.starts_with("labelgate resolver:"))
        .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("netns_lookups=")))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(lookups.unwrap_or(0) >= 4, "both ends of both SYNs looked up in A and B: {err}");
}

/// Connects to HOST:PORT again and again (each within 3 s, at most 5000
/// times) until SECONDS pass; prints how many tries and how many got through.
const LOOP: &str = r#"
import socket, sys, time
ok, tries, end = 0, 0, time.time() + float(sys.argv[3])
while time.time() < end and tries < 5000:
    tries += 1
    time.sleep(0.002)
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        ok += 1
    except OSError:
        pass
    s.close()
print(tries, ok, flush=True)
"#;

/// The inodes of the network namespaces process `pid` holds open.
fn held_netns(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| t.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// Wait (at most 10 s) until labelgate holds each of `nss` open: it has
/// found them (the list is refreshed every second).
fn wait_held(d: &Daemon, nss: &[&Netns]) {
    let want: Vec<u64> = nss.iter().map(|n| netns_inode(n)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want.iter().all(|i| held_netns(d.pid()).contains(i)) {
        assert!(Instant::now() < deadline, "labelgate never took up namespaces {want:?}: {}", d.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn netns_inode(ns: &Netns) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{}", ns.name)).expect("namespace file").ino()
}

/// Namespaces created and deleted while forwarded connections are queued:
/// every queued packet is answered (the kernel's id_sequence equals the
/// verdicts labelgate gave), every allowed connection gets through, and a
/// deleted namespace is let go of (its descriptor closed) while one that
/// lives is held.
#[test]
fn namespaces_come_and_go_under_traffic_without_losing_a_verdict() {
    if !can_run_with(TOOLS) {
        return;
    }
    let queue = 42;
    let (n, _server) = forwarding(queue, 90);
    let _init_a = Kill(n.a.cmd("sleep").arg("90").spawn().expect("sleep in A"));
    let d = Daemon::start(&n.h, &policy(), queue, &["--other-netns"]);
    wait_held(&d, &[&n.a, &n.b]);
    let seconds = 6;
    let traffic =
        n.a.cmd("setpriv")
            .args(["--reuid=1001", "--regid=1001", "--clear-groups", "/usr/bin/python3", "-c", LOOP])
            .args([&n.b_ip, &PORT.to_string(), &seconds.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("traffic");

    let x = 100 + (std::process::id() % 50) * 2 + 2;
    let mut gone = Vec::new();
    for round in 0..4 {
        let c = Netns::new();
        let ino = netns_inode(&c);
        let outer = format!("lghc{}", std::process::id() % 100000);
        run_ok(
            Command::new("ip")
                .args(["link", "add", &outer, "netns", &n.h.name, "type", "veth", "peer", "name"])
                .args(["lgcc", "netns", &c.name]),
        );
        n.h.sh(&format!("ip addr add 198.18.{x}.1/24 dev {outer} && ip link set {outer} up"));
        c.sh(&format!("ip addr add 198.18.{x}.2/24 dev lgcc && ip link set lgcc up"));
        let init = Kill(c.cmd("sleep").arg("30").spawn().expect("sleep in C"));
        if round == 0 {
            // Positive control: a living namespace is found and held.
            wait_held(&d, &[&c]);
        } else {
            std::thread::sleep(Duration::from_millis(300 * round));
        }
        drop(init);
        // As container runtimes do: the veth pair is deleted, then the
        // namespace (which labelgate may hold for up to a refresh period).
        n.h.sh(&format!("ip link del {outer}"));
        drop(c);
        gone.push(ino);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while held_netns(d.pid()).iter().any(|i| gone.contains(i)) {
        assert!(Instant::now() < deadline, "deleted namespaces still held: {gone:?} in {:?}", held_netns(d.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = traffic.wait_with_output().expect("traffic result");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let nums: Vec<u64> = text.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let [tries, ok] = nums[..] else { panic!("traffic said {text:?}") };
    let err = d.stop();
    assert!(tries >= 100, "the traffic ran through the namespace churn: {tries} tries");
    assert_eq!(ok, tries, "every connection of uid 1001 got through: {err}");
    let line = err.lines().find(|l| l.contains("kernel id_sequence=")).unwrap_or_else(|| panic!("{err}"));
    let field = |k: &str| -> u64 {
        line.split([' ', ';'])
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("{k} in {line}"))
    };
    let answered: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(field("waiting"), 0, "{line}");
    assert_eq!(field("id_sequence"), answered, "every queued packet got a verdict: {line}");
    assert_eq!(counter(&err, "packets"), answered);
    assert!(answered >= tries, "{line}");
    assert_eq!(counter(&err, "dropped"), 0, "{err}");
}

/// Holds COUNT connections to HOST:PORT open, opened one after the other;
/// prints each one's source port on one line, then waits for stdin to close.
const HOLD: &str = r#"
import socket, sys
conns = []
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    s.settimeout(3)
    s.connect((sys.argv[1], int(sys.argv[2])))
    conns.append(s)
print(" ".join(str(s.getsockname()[1]) for s in conns), flush=True)
sys.stdin.read()
"#;

/// Measurement (run by hand: `cargo nextest run --test containers
/// --run-ignored only`): the resolver's time for the first packet (a SYN,
/// at FORWARD) of each of 400 new flows between two containers, with 50
/// network namespaces present, each with a process in it. Both ends must be
/// attributed to the processes holding them; prints p50/p99/max.
#[test]
#[ignore]
fn first_forwarded_packet_with_50_namespaces() {
    use labelgate::labels::{QueueMeta, Resolver};
    use labelgate::packet::Proto;
    use labelgate::resolve::{flow_packet, PeerConfig, ResolverConfig, SocketResolver};
    use std::io::{BufRead, BufReader};
    if !can_run_with(TOOLS) {
        return;
    }
    let n = net();
    let mut others = Vec::new();
    for i in 0..48u32 {
        let c = Netns::new();
        let outer = format!("lgm{i}x{}", std::process::id() % 10000);
        run_ok(
            Command::new("ip")
                .args(["link", "add", &outer, "netns", &n.h.name, "type", "veth", "peer", "name"])
                .args(["lgm", "netns", &c.name]),
        );
        c.sh(&format!("ip addr add 198.19.{i}.2/24 dev lgm && ip link set lgm up"));
        let init = Kill(c.cmd("sleep").arg("120").spawn().expect("sleep"));
        others.push((c, init));
    }
    // A server that keeps what it accepts (for at most 120 s).
    let keep = "import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                s.bind((__import__('sys').argv[1],8080));s.listen(512);s.settimeout(1);k=[];e=time.time()+120\n\
                while time.time()<e:\n try: k.append(s.accept()[0])\n except OSError: pass\n";
    let _server = Kill(n.b.cmd("/usr/bin/python3").args(["-c", keep, &n.b_ip]).spawn().expect("server"));
    let _init_a = Kill(n.a.cmd("sleep").arg("120").spawn().expect("sleep in A"));
    std::thread::sleep(Duration::from_millis(500));
    n.h.enter();
    let r =
        SocketResolver::new(PeerConfig::default(), ResolverConfig { other_netns: true, ..ResolverConfig::default() })
            .expect("resolver");
    let count = 400;
    let mut c =
        n.a.cmd("/usr/bin/python3")
            .args(["-c", HOLD, &n.b_ip, &PORT.to_string(), &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("holder");
    let client_pid = c.id();
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap()).read_line(&mut line).expect("ports");
    let ports: Vec<u16> = line.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(ports.len(), count);
    let m = QueueMeta { hook: 2, ..QueueMeta::default() };
    let mut times = Vec::new();
    for &p in &ports {
        let src = format!("{}:{p}", n.a_ip).parse().unwrap();
        let dst = format!("{}:{PORT}", n.b_ip).parse().unwrap();
        let pkt = labelgate::packet::PacketInfo { tcp_syn: true, ..flow_packet(Proto::Tcp, src, dst) };
        let t = Instant::now();
        let l = r.resolve(&pkt, &m);
        times.push(t.elapsed());
        assert_eq!(l.source_process.as_ref().map(|p| p.pid), Some(client_pid), "{l:?}");
        assert!(l.dest_process.is_some(), "{l:?}");
    }
    times.sort();
    let q = |f: f64| times[((times.len() as f64 * f) as usize).min(times.len() - 1)];
    let events = r.stats().snapshot();
    eprintln!(
        "first forwarded packet, 50 namespaces: p50 {:?} p99 {:?} max {:?}; {events:?}",
        q(0.5),
        q(0.99),
        times[times.len() - 1]
    );
    drop(c.stdin.take());
    let _ = c.wait();
}

/// Without `--other-netns` (the default) labelgate neither enters other
/// namespaces nor keeps CAP_SYS_ADMIN: a container's ends are `remote`, as
/// docs/POLICY.md states. The same client, through the same namespaces, is
/// then let through by a daemon started with the flag (the harness works).
#[test]
fn other_namespaces_are_looked_up_only_with_the_flag() {
    if !can_run_with(TOOLS) {
        return;
    }
    let queue = 43;
    let (n, _server) = forwarding(queue, 60);
    let _init_a = Kill(n.a.cmd("sleep").arg("60").spawn().expect("sleep in A"));
    let d = Daemon::start(&n.h, &policy(), queue, &["--audit-format", "json"]);
    let (bad, _c, _) = client(&n.a, 1001, &n.b_ip, "2", "0");
    assert!(bad.starts_with("failed "), "without the namespaces uid 1001 is unknown: {bad}");
    let sport: u16 = bad.rsplit(' ').next().unwrap().parse().unwrap();
    let r = record(&d, sport).expect("a denial record");
    assert_eq!((r["slabel"].as_str(), r["tlabel"].as_str()), (Some("remote"), Some("remote")), "{r}");
    let caps = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let eff = caps.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim).unwrap().to_string();
    let eff = u64::from_str_radix(&eff, 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "CAP_SYS_ADMIN (21) dropped without the flag: CapEff {eff:x}");
    assert!(!d.stderr_text().contains("other network namespaces"), "no warning without the flag: {}", d.stderr_text());
    drop(d);

    let d = Daemon::start(&n.h, &policy(), queue, &["--audit-format", "json", "--other-netns"]);
    wait_held(&d, &[&n.a, &n.b]);
    let (ok, _c, _) = client(&n.a, 1001, &n.b_ip, "5", "0");
    assert!(ok.starts_with("connected "), "with --other-netns uid 1001 gets through: {ok}\n{}", d.stderr_text());
}

/// `labelgate rules --install` (iptables) for `policy` in the host
/// namespace, queueing to `queue`, with extra options; the mangle table as
/// `iptables-save` then shows it.
fn install_rules(n: &Net, policy: &str, queue: u16, extra: &[&str]) -> String {
    let pfile = n.h.dir.path().join(format!("rules-{queue}.toml"));
    std::fs::write(&pfile, policy).expect("write policy");
    let out = run_ok(
        n.h.cmd(LABELGATE)
            .args(["rules", "--policy"])
            .arg(&pfile)
            .args(["--queues", &queue.to_string(), "--fail", "closed", "--install"])
            .args(extra),
    );
    assert!(out.status.success());
    n.h.sh("iptables-save -t mangle")
}

/// [`net`] with a server in B accepting for 60 seconds.
fn routed_with_server() -> (Net, Bg) {
    let n = net();
    let server = n.b.spawn_probe(&["serve-tcp", &n.b_ip, &PORT.to_string(), "60"]);
    (n, server)
}

/// A policy head: default drop, TCP to [`PORT`] in scope.
fn scoped_drop() -> String {
    format!("default = \"drop\"\n[[scope]]\nproto = \"tcp\"\ndport = {PORT}")
}

/// The source port of a client's "connected N" / "failed N" line.
fn sport(line: &str) -> u16 {
    line.rsplit(' ').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// Every JSON record of the connection from source port `sport`, once
/// `want` of them are written (bounded wait).
fn records(d: &Daemon, sport: u16, want: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<_> = d
            .audit_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["src"].as_u64() == Some(u64::from(sport)))
            .collect();
        if found.len() >= want || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A policy deciding forwarded connections at PREROUTING: `labelgate rules
/// --install` puts the queue rule in the mangle table's PREROUTING (through
/// LABELGATE_PRE); uid 1001 in container A reaches B, uid 1002 is refused
/// there. The `input` rule accepting uid 1002 is not asked at PREROUTING (a
/// named hook matches its own hook only).
#[test]
fn forwarded_connections_are_decided_at_prerouting() {
    if !can_run_with(TOOLS) {
        return;
    }
    let queue = 81;
    let (n, _server) = routed_with_server();
    let policy = format!(
        r#"{}
[[rule]]
name = "uid1001-pre"
hook = "prerouting"
uid = 1001
proto = "tcp"
dport = {PORT}
audit = true
verdict = "accept"
[[rule]]
name = "uid1002-input"
hook = "input"
uid = 1002
verdict = "accept"
"#,
        scoped_drop()
    );
    let mangle = install_rules(&n, &policy, queue, &[]);
    assert!(mangle.contains("-A PREROUTING -j LABELGATE_PRE"), "{mangle}");
    assert!(
        mangle.contains(&format!(
            "-A LABELGATE_PRE -p tcp -m tcp --dport {PORT} -m conntrack --ctstate NEW -j NFQUEUE --queue-num {queue}"
        )),
        "{mangle}"
    );
    assert!(!n.h.sh("iptables-save -t security").contains("LABELGATE_FWD"), "no forward rule, no FORWARD queue");
    let _init_a = Kill(n.a.cmd("sleep").arg("60").spawn().expect("sleep in A"));
    let d = Daemon::start(&n.h, &policy, queue, &["--audit-format", "json", "--other-netns"]);
    wait_held(&d, &[&n.a, &n.b]);

    let (ok, _c1, _) = client(&n.a, 1001, &n.b_ip, "5", "1");
    assert!(ok.starts_with("connected "), "uid 1001 must get through PREROUTING: {ok}\n{}", d.stderr_text());
    let (bad, _c2, _) = client(&n.a, 1002, &n.b_ip, "2", "1");
    assert!(bad.starts_with("failed "), "uid 1002 must be refused at PREROUTING: {bad}");
    for (line, uid, outcome, rule) in [(&ok, 1001u64, "granted", "uid1001-pre"), (&bad, 1002, "denied", "default")] {
        let r = record(&d, sport(line)).unwrap_or_else(|| panic!("no record for {line}: {:?}", d.audit_lines()));
        assert_eq!((r["hook"].as_str(), r["outcome"].as_str()), (Some("prerouting"), Some(outcome)), "{r}");
        assert_eq!(r["perm"], "recv", "{r}");
        assert_eq!(r["rule"], rule, "{r}");
        assert_eq!(r["sender_uid"].as_u64(), Some(uid), "the client's socket found in A: {r}");
        assert_eq!(r["daddr"].as_str(), Some(n.b_ip.as_str()), "{r}");
    }
    let err = d.stop();
    assert!(err.contains("labelgate rule uid1001-pre: hits=1"), "{err}");

    // Removed: the mangle chain and its jump go, the connection is not
    // queued any more (uid 1002 now reaches B, nothing else filters).
    run_ok(
        n.h.cmd(LABELGATE)
            .args(["rules", "--policy"])
            .arg(n.h.dir.path().join(format!("rules-{queue}.toml")))
            .arg("--remove"),
    );
    assert!(!n.h.sh("iptables-save").contains("LABELGATE"), "{}", n.h.sh("iptables-save"));
    let (again, _c3, _) = client(&n.a, 1002, &n.b_ip, "5", "1");
    assert!(again.starts_with("connected "), "without the rules nothing refuses: {again}");
}

/// Flow mode across hooks: a connection accepted at PREROUTING is still
/// decided by the FORWARD rules (each hook remembers its own accept bit in
/// the connmark). Every connection passes PREROUTING; only uid 1001 is let
/// through FORWARD.
#[test]
fn flow_mode_acceptance_at_prerouting_does_not_skip_forward() {
    if !can_run_with(&[TOOLS, &["conntrack"]].concat()) {
        return;
    }
    let queue = 82;
    let (n, _server) = routed_with_server();
    let policy = format!(
        r#"{}
[[rule]]
name = "pre-all"
hook = "prerouting"
audit = true
verdict = "accept"
[[rule]]
name = "fwd-uid1001"
hook = "forward"
uid = 1001
audit = true
verdict = "accept"
"#,
        scoped_drop()
    );
    install_rules(&n, &policy, queue, &["--flow"]);
    let _init_a = Kill(n.a.cmd("sleep").arg("60").spawn().expect("sleep in A"));
    let d = Daemon::start(&n.h, &policy, queue, &["--audit-format", "json", "--other-netns", "--flow"]);
    wait_held(&d, &[&n.a, &n.b]);

    let (ok, _c1, _) = client(&n.a, 1001, &n.b_ip, "5", "1");
    assert!(ok.starts_with("connected "), "uid 1001 must pass both hooks: {ok}\n{}", d.stderr_text());
    let (bad, _c2, _) = client(&n.a, 1002, &n.b_ip, "2", "1");
    assert!(bad.starts_with("failed "), "uid 1002 passes PREROUTING but not FORWARD: {bad}");
    let hooks = |line: &str, want: usize| {
        let mut v: Vec<(String, String)> = records(&d, sport(line), want)
            .iter()
            .map(|r| (r["hook"].as_str().unwrap_or("").to_string(), r["outcome"].as_str().unwrap_or("").to_string()))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let pair = |h: &str, o: &str| (h.to_string(), o.to_string());
    assert_eq!(hooks(&ok, 2), [pair("forward", "granted"), pair("prerouting", "granted")]);
    // The refused client's SYN (and its retries) pass PREROUTING and are
    // refused at FORWARD, every time.
    assert_eq!(hooks(&bad, 2), [pair("forward", "denied"), pair("prerouting", "granted")]);
    let marks = n.h.sh(&format!("conntrack -L -p tcp --dport {PORT} 2>/dev/null || true"));
    d.stop();
    // The accepted connection carries both hooks' bits (0x1000000 | 0x800000).
    assert!(marks.contains("mark=25165824"), "prerouting and forward bits on the connection: {marks}");
}
