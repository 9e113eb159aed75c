//! `labelgate run --flow --offload` (the prototype of docs/OFFLOAD.md) on
//! the real kernel: clients in real cgroup v2 directories, inside a fresh
//! network namespace with the flow-mode queue rules. Each test shows that
//! the kernel-side accept works (a connection that is not queued), and
//! that it never lets through what the table refuses: a process that execs
//! another program, a reload, a process moved into the cgroup (and what
//! the element timeout bounds there). Every refusal is paired with the
//! same client reaching an allowed port in the same run. Needs root, a
//! cgroup2 mount, `ip`, `iptables`, `nft` and `python3`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The client: reads commands on stdin, answers one line each.
/// `c PORT`: connect, answer `ok|fail QUEUED` (packets queued meanwhile,
/// from the queue's id sequence); `exec PATH`: become PATH running this
/// script; `loop PORT FLAG`: connect again and again (paced, at most 40,000
/// times in 20 s) until FLAG exists and five more attempts were made after
/// it, answer
/// `BEFORE_OK BEFORE_FAIL AFTER_OK AFTER_FAIL`.
const DRIVER: &str = r#"
import os, socket, sys, time
Q = sys.argv[1]
def seq():
    for l in open("/proc/net/netfilter/nfnetlink_queue"):
        f = l.split()
        if f and f[0] == Q:
            return int(f[7])
    return -1
def conn(port, timeout):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
print("ready", os.readlink("/proc/self/exe"), flush=True)
while True:
    line = sys.stdin.readline()
    w = line.split()
    if not w:
        break
    if w[0] == "c":
        a = seq(); ok = conn(int(w[1]), 1.5); b = seq()
        print("ok" if ok else "fail", b - a, flush=True)
    elif w[0] == "exec":
        os.execv(w[1], [w[1], sys.argv[0], Q])
    elif w[0] == "loop":
        n = [0, 0, 0, 0]; after = 0; end = time.time() + 20
        while after < 5 and time.time() < end and sum(n) < 40000:
            flag = os.path.exists(w[2])
            ok = conn(int(w[1]), 0.3)
            n[(2 if flag else 0) + (0 if ok else 1)] += 1
            after += flag
            time.sleep(0.0005)
        print(*n, flush=True)
"#;

const ALLOWED_ONLY_PY: u16 = 7101;
const ALLOWED_ANY: u16 = 7102;

/// Python 3 under /usr/bin may reach 7101; anything may reach 7102. The
/// rules are output rules, so only OUTPUT is queued: the offload accepts at
/// OUTPUT only, and with INPUT queued as well (rules for any hook) a
/// loopback connection is still decided at INPUT (each hook by its own
/// rules; docs/OFFLOAD.md).
fn policy(py_port_verdict: &str) -> String {
    format!(
        "default = \"drop\"\n\
         [[rule]]\nname = \"python\"\nhook = \"output\"\nsource_exe = \"/usr/bin/python3*\"\nproto = \"tcp\"\ndport = {ALLOWED_ONLY_PY}\nverdict = \"{py_port_verdict}\"\n\
         [[rule]]\nname = \"anyone\"\nhook = \"output\"\nproto = \"tcp\"\ndport = {ALLOWED_ANY}\nverdict = \"accept\"\n"
    )
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `…/unified` on a hybrid host).
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f.get(1).copied().unwrap_or_default()))
    })
}

/// A namespace with the flow-mode queue rules, two servers, labelgate with
/// `--offload`, a copy of python3 under another path, and cgroups
/// `<mount>/lgoff-<pid>-<name>/{a,b}` (level 2), removed on drop.
struct Setup {
    ns: Netns,
    daemon: Option<Daemon>,
    _servers: Vec<Bg>,
    cg: PathBuf,
    other_py: PathBuf,
    queue: u16,
}

impl Setup {
    fn new(name: &str, queue: u16, timeout_ms: u64) -> Option<Setup> {
        if !can_run_with(&["ip", "iptables", "nft", "python3"]) {
            return None;
        }
        let Some(mount) = cgroup2_mount() else {
            assert!(std::env::var_os("CI").is_none(), "no cgroup2 mount; CI must provide one");
            eprintln!("SKIP: no cgroup2 mount");
            return None;
        };
        let ns = Netns::new();
        let pfile = ns.dir.path().join("rules-policy.toml");
        std::fs::write(&pfile, policy("accept")).unwrap();
        let q = queue.to_string();
        run_ok(ns.cmd(LABELGATE).args(["rules", "--policy"]).arg(&pfile).args(["--flow", "--queues", &q, "--install"]));
        let servers = [ALLOWED_ONLY_PY, ALLOWED_ANY]
            .iter()
            .map(|p| ns.spawn_probe(&["serve-tcp", "127.0.0.1", &p.to_string(), "120"]))
            .collect();
        let cg = mount.join(format!("lgoff-{}-{name}", std::process::id()));
        for leaf in ["a", "b"] {
            std::fs::create_dir_all(cg.join(leaf)).unwrap();
        }
        let py = std::fs::canonicalize("/usr/bin/python3").unwrap();
        let other_py = ns.dir.path().join("pyother");
        std::fs::copy(&py, &other_py).unwrap();
        std::fs::write(ns.dir.path().join("driver.py"), DRIVER).unwrap();
        let t = timeout_ms.to_string();
        let daemon = Daemon::start(
            &ns,
            &policy("accept"),
            queue,
            &["--flow", "--offload", "--offload-timeout-ms", &t, "--log-level", "debug"],
        );
        Some(Setup { ns, daemon: Some(daemon), _servers: servers, cg, other_py, queue })
    }

    /// A client running `exe` in cgroup `leaf`.
    fn client(&self, leaf: &str, exe: &Path) -> Client {
        let procs = self.cg.join(leaf).join("cgroup.procs");
        let mut c = Command::new("sh");
        c.args(["-c", "echo $$ > \"$0\" && exec ip netns exec \"$@\"", procs.to_str().unwrap(), &self.ns.name])
            .arg(exe)
            .arg(self.ns.dir.path().join("driver.py"))
            .arg(self.queue.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = c.spawn().expect("spawn client");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut cl = Client { child, stdin, out };
        let ready = cl.line();
        assert!(ready.starts_with("ready"), "client: {ready}");
        cl
    }

    fn py(&self, leaf: &str) -> Client {
        self.client(leaf, Path::new("/usr/bin/python3"))
    }

    /// Wait (bounded) until the level-2 IPv4 set holds an element for `port`.
    fn wait_element(&self, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.elements().contains(&format!(". {port} ")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn elements(&self) -> String {
        self.ns.sh("nft list set inet labelgate_offload v4_l2 2>&1 || true")
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    /// Stop labelgate; its stderr (with the offload counters).
    fn stop(&mut self) -> String {
        self.daemon.take().unwrap().stop()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.daemon.take();
        for leaf in ["a", "b"] {
            let d = self.cg.join(leaf);
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir(&self.cg);
    }
}

struct Client {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Client {
    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        assert!(!l.is_empty(), "the client ended");
        l.trim().to_string()
    }

    /// Connect to `port`: (connected, packets queued meanwhile).
    fn connect(&mut self, port: u16) -> (bool, i64) {
        self.send(&format!("c {port}"));
        let l = self.line();
        let mut w = l.split_whitespace();
        let ok = w.next() == Some("ok");
        (ok, w.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("client said {l}")))
    }

    /// Exec `exe` (running the same script); its ready line.
    fn exec(&mut self, exe: &Path) -> String {
        self.send(&format!("exec {}", exe.display()));
        self.line()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A first connection is queued and accepted; the element appears; the
/// same client's next connection is accepted without being queued.
fn offloaded(s: &Setup, c: &mut Client, port: u16) {
    let (ok, queued) = c.connect(port);
    assert!(ok && queued >= 1, "first connection: queued and accepted ({ok}, {queued})");
    assert!(s.wait_element(port), "no element for {port}: {}\n{}", s.elements(), s.daemon().stderr_text());
    let (ok, queued) = c.connect(port);
    assert!(ok, "the offloaded connection is accepted");
    assert_eq!(queued, 0, "the offloaded connection is accepted in the kernel, not queued");
}

fn offload_counter(stderr: &str, name: &str) -> u64 {
    let line = stderr.lines().rev().find(|l| l.contains("labelgate offload:")).unwrap_or_else(|| panic!("{stderr}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

#[test]
fn offload_needs_flow_mode() {
    let out = Command::new(LABELGATE).args(["run", "--policy", "/nonexistent", "--offload"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--flow"), "{err}");
    let out = Command::new(LABELGATE)
        .args(["run", "--policy", "/nonexistent", "--flow", "--offload-timeout-ms", "100"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--offload"), "{err}");
}

#[test]
fn a_second_connection_is_accepted_in_the_kernel_and_the_table_is_removed_at_stop() {
    let Some(mut s) = Setup::new("works", 81, 5000) else { return };
    let mut c = s.py("a");
    offloaded(&s, &mut c, ALLOWED_ONLY_PY);
    offloaded(&s, &mut c, ALLOWED_ANY);
    drop(c);
    let err = s.stop();
    assert!(offload_counter(&err, "added") >= 2, "{err}");
    let tables = s.ns.sh("nft list tables");
    assert!(!tables.contains("labelgate_offload"), "the table outlived labelgate: {tables}");
    // A leftover table (a crash) is replaced at the next start.
    s.ns.sh(
        "nft add table inet labelgate_offload && nft add set inet labelgate_offload leftover '{ type ipv4_addr; }'",
    );
    let d = Daemon::start(&s.ns, &policy("accept"), s.queue, &["--flow", "--offload"]);
    let table = s.ns.sh("nft list table inet labelgate_offload");
    let err = d.stop();
    assert!(table.contains("set v4_l1") && !table.contains("leftover"), "{table}\n{err}");
}

#[test]
fn an_exec_into_another_program_is_queued_and_refused() {
    let Some(mut s) = Setup::new("exec", 82, 5000) else { return };
    let mut c = s.py("a");
    offloaded(&s, &mut c, ALLOWED_ONLY_PY);
    let ready = c.exec(&s.other_py);
    let exec_done = Instant::now();
    assert!(ready.ends_with("pyother"), "the client now runs the copy: {ready}");
    // The element is gone as soon as the new program runs (the exec event
    // is handled while the new program starts).
    let mut polls = 0;
    while s.elements().contains(&format!(". {ALLOWED_ONLY_PY} ")) {
        // Generous: the event is handled on an ordinary thread of a busy machine.
        assert!(exec_done.elapsed() < Duration::from_secs(5), "the element outlived the exec: {}", s.elements());
        std::thread::sleep(Duration::from_millis(10));
        polls += 1;
    }
    eprintln!("element gone after {polls} polls of the set once the new program ran");
    // At once: labelgate reads the holder's exe again for every new
    // socket, so the queued connection is judged as the new program.
    let (ok, queued) = c.connect(ALLOWED_ONLY_PY);
    if ok {
        let err = s.stop();
        panic!("another program in the offloaded cgroup must be refused: {err}");
    }
    assert!(queued >= 1, "and its connection queued");
    let (ok, _) = c.connect(ALLOWED_ANY);
    assert!(ok, "the same client reaches the port open to any program");
    drop(c);
    let err = s.stop();
    assert!(offload_counter(&err, "exec_removed") >= 1, "{err}");
}

#[test]
fn a_reload_that_refuses_the_flow_lets_none_through_after_it() {
    let Some(mut s) = Setup::new("reload", 83, 5000) else { return };
    let mut c = s.py("a");
    offloaded(&s, &mut c, ALLOWED_ONLY_PY);
    // A second client of the same program loops on the offloaded port
    // through the reload; the flag is set once labelgate said it reloaded.
    let mut looper = s.py("a");
    let flag = s.ns.dir.path().join("reloaded.flag");
    looper.send(&format!("loop {ALLOWED_ONLY_PY} {}", flag.display()));
    std::thread::sleep(Duration::from_millis(300));
    let pfile = s.ns.dir.path().join(format!("policy-{}.toml", s.queue));
    std::fs::write(&pfile, policy("drop")).unwrap();
    s.daemon().signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.daemon().stderr_text().contains("reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", s.daemon().stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&flag, "").unwrap();
    let counts: Vec<u64> = looper.line().split_whitespace().map(|n| n.parse().unwrap()).collect();
    let [before_ok, _before_fail, after_ok, after_fail] = counts[..] else { panic!("{counts:?}") };
    assert!(before_ok >= 1, "the loop was let through before the reload: {counts:?}");
    assert_eq!(after_ok, 0, "a connection passed after the reload: {counts:?}");
    assert!(after_fail >= 5, "{counts:?}");
    let (ok, queued) = c.connect(ALLOWED_ONLY_PY);
    assert!(!ok && queued >= 1, "refused by the new table, after being queued");
    let (ok, _) = c.connect(ALLOWED_ANY);
    assert!(ok, "the same client still reaches the port the new table allows");
    drop((c, looper));
    let err = s.stop();
    assert!(offload_counter(&err, "flushes") >= 1, "{err}");
}

#[test]
fn a_process_moved_in_before_the_element_is_never_let_through() {
    let Some(mut s) = Setup::new("movebefore", 84, 5000) else { return };
    let mut other = s.client("b", &s.other_py.clone());
    let mut c = s.py("a");
    // The other program joins the python client's cgroup before anything
    // was offloaded.
    std::fs::write(s.cg.join("a").join("cgroup.procs"), other.pid().to_string()).unwrap();
    for _ in 0..2 {
        let (ok, queued) = c.connect(ALLOWED_ONLY_PY);
        assert!(ok && queued >= 1, "python is let through, but always queued: a mixed cgroup is not offloaded");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, queued) = other.connect(ALLOWED_ONLY_PY);
    assert!(!ok && queued >= 1, "the other program is refused");
    let (ok, _) = other.connect(ALLOWED_ANY);
    assert!(ok, "the same client reaches the port open to any program");
    drop((c, other));
    let err = s.stop();
    assert_eq!(offload_counter(&err, "added"), 0, "{err}");
}

#[test]
fn a_process_moved_in_after_the_element_is_refused_once_it_times_out() {
    let timeout = Duration::from_millis(1500);
    let Some(mut s) = Setup::new("moveafter", 85, timeout.as_millis() as u64) else { return };
    let mut other = s.client("b", &s.other_py.clone());
    let mut c = s.py("a");
    offloaded(&s, &mut c, ALLOWED_ONLY_PY);
    std::fs::write(s.cg.join("a").join("cgroup.procs"), other.pid().to_string()).unwrap();
    let moved = Instant::now();
    // The kernel tells nobody of the move: until the element times out,
    // a socket the moved process creates has the cgroup's key. This is
    // the hole docs/OFFLOAD.md states; the test shows it is there and
    // bounded by the timeout.
    let (ok, queued) = other.connect(ALLOWED_ONLY_PY);
    assert!(moved.elapsed() < timeout, "too slow to see the window");
    assert!(ok && queued == 0, "within the timeout the moved process is let through by the element ({ok}, {queued})");
    std::thread::sleep(timeout + Duration::from_millis(500));
    let (ok, queued) = other.connect(ALLOWED_ONLY_PY);
    assert!(!ok && queued >= 1, "after the timeout the moved process is queued and refused");
    // The python client is queued again, and its cgroup (now mixed) is not
    // offloaded again.
    for _ in 0..2 {
        let (ok, queued) = c.connect(ALLOWED_ONLY_PY);
        assert!(ok && queued >= 1, "python is let through, queued");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, queued) = other.connect(ALLOWED_ONLY_PY);
    assert!(!ok && queued >= 1, "still refused");
    let (ok, _) = other.connect(ALLOWED_ANY);
    assert!(ok, "the same client reaches the port open to any program");
    drop((c, other));
    s.stop();
}
