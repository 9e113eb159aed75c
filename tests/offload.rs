//! `labelgate run --flow --offload` (the prototype of docs/OFFLOAD.md) on
//! the real kernel: clients in real cgroup v2 directories, inside a fresh
//! network namespace with the flow-mode queue rules. Each test shows that
//! the kernel-side accept works (a connection that is not queued), and
//! that it never lets through what the table refuses: a decision that
//! depends on the program (before and after an exec), a reload, a cgroup
//! below or beside the offloaded one, a process moved into the cgroup.
//! Every refusal is paired with the same client reaching an allowed port in
//! the same run. Needs root, a cgroup2 mount, `ip`, `iptables`, `nft` and
//! `python3`.

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

/// Open to the sockets of cgroup `a` (a rule naming the cgroup only).
const CGROUP_A: u16 = 7101;
/// Open to any process.
const ALLOWED_ANY: u16 = 7102;
/// Open to Python 3 under /usr/bin (a rule naming the program).
const ONLY_PY: u16 = 7103;

/// By default the rules are output rules, so only OUTPUT is queued. With
/// `input`, the cgroup and `anyone` rules are for any hook (INPUT is queued too, and
/// labelgate settles INPUT's decision at OUTPUT) and `input` is written
/// before it. `a`: the cgroup path of leaf `a` as /proc/PID/cgroup names
/// it.
fn policy(a: &str, a_verdict: &str, input: Option<&str>) -> String {
    let (before, hook) = match input {
        Some(rules) => (rules, ""),
        None => ("", "hook = \"output\"\n"),
    };
    format!(
        "default = \"drop\"\n{before}\
         [[rule]]\nname = \"cgroup-a\"\n{hook}source_cgroup = \"{a}\"\nproto = \"tcp\"\ndport = {CGROUP_A}\nverdict = \"{a_verdict}\"\n\
         [[rule]]\nname = \"anyone\"\n{hook}proto = \"tcp\"\ndport = {ALLOWED_ANY}\nverdict = \"accept\"\n\
         [[rule]]\nname = \"python\"\nhook = \"output\"\nsource_exe = \"/usr/bin/python3*\"\nproto = \"tcp\"\ndport = {ONLY_PY}\nverdict = \"accept\"\n"
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

/// A namespace with the flow-mode queue rules, three servers, labelgate
/// with `--offload`, a copy of python3 under another path, and cgroups
/// `<mount>/lgoff-<pid>-<name>/{a,a/sub,b}` (levels 2 and 3), removed on
/// drop.
struct Setup {
    ns: Netns,
    daemon: Option<Daemon>,
    _servers: Vec<Bg>,
    cg: PathBuf,
    /// The cgroup path of leaf `a`, as the rules name it.
    a: String,
    /// The policy's INPUT variant (see [`policy`]).
    input: Option<&'static str>,
    other_py: PathBuf,
    queue: u16,
}

const LEAVES: [&str; 3] = ["a", "a/sub", "b"];

impl Setup {
    fn new(name: &str, queue: u16, timeout_ms: u64) -> Option<Setup> {
        Setup::with_input(name, queue, timeout_ms, None)
    }

    fn with_input(name: &str, queue: u16, timeout_ms: u64, input: Option<&'static str>) -> Option<Setup> {
        if !can_run_with(&["ip", "iptables", "nft", "python3"]) {
            return None;
        }
        let Some(mount) = cgroup2_mount() else {
            assert!(std::env::var_os("CI").is_none(), "no cgroup2 mount; CI must provide one");
            eprintln!("SKIP: no cgroup2 mount");
            return None;
        };
        let top = format!("lgoff-{}-{name}", std::process::id());
        let a = format!("/{top}/a");
        let ns = Netns::new();
        let pfile = ns.dir.path().join("rules-policy.toml");
        std::fs::write(&pfile, policy(&a, "accept", input)).unwrap();
        let q = queue.to_string();
        run_ok(ns.cmd(LABELGATE).args(["rules", "--policy"]).arg(&pfile).args(["--flow", "--queues", &q, "--install"]));
        let servers = [CGROUP_A, ALLOWED_ANY, ONLY_PY]
            .iter()
            .map(|p| ns.spawn_probe(&["serve-tcp", "127.0.0.1", &p.to_string(), "120"]))
            .collect();
        let cg = mount.join(&top);
        for leaf in LEAVES {
            std::fs::create_dir_all(cg.join(leaf)).unwrap();
        }
        let py = std::fs::canonicalize("/usr/bin/python3").unwrap();
        let other_py = ns.dir.path().join("pyother");
        std::fs::copy(&py, &other_py).unwrap();
        std::fs::write(ns.dir.path().join("driver.py"), DRIVER).unwrap();
        let t = timeout_ms.to_string();
        let daemon = Daemon::start(
            &ns,
            &policy(&a, "accept", input),
            queue,
            &["--flow", "--offload", "--offload-timeout-ms", &t, "--log-level", "debug"],
        );
        Some(Setup { ns, daemon: Some(daemon), _servers: servers, cg, a, input, other_py, queue })
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

    /// Wait (bounded) until a level-2 IPv4 set (cgroup `a`'s level)
    /// holds an element for `port`.
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

    /// The level-2 IPv4 sets: `v4_l2` (OUTPUT only), then `v4i_l2` (INPUT
    /// settled too).
    fn elements(&self) -> String {
        self.ns.sh("nft list set inet labelgate_offload v4_l2 2>&1 || true; echo '-- settled'; \
             nft list set inet labelgate_offload v4i_l2 2>&1 || true")
    }

    fn settled_elements(&self) -> String {
        self.ns.sh("nft list set inet labelgate_offload v4i_l2 2>&1 || true")
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
        for leaf in LEAVES.iter().rev() {
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

/// `c`'s connection to `port` is queued and refused (labelgate's log in
/// the message if it passed), and the same client then reaches the port
/// open to anyone: the refusal is not a broken harness.
fn refused_but_reaches_any(s: &mut Setup, c: &mut Client, port: u16, who: &str) {
    let (ok, queued) = c.connect(port);
    if ok {
        let err = s.stop();
        panic!("{who} must be refused on {port} (queued {queued}): {err}");
    }
    assert!(queued >= 1, "{who}: refused on {port} after being queued");
    let (ok, _) = c.connect(ALLOWED_ANY);
    assert!(ok, "{who}: the same client reaches the port open to anyone");
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
    offloaded(&s, &mut c, CGROUP_A);
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
    let d = Daemon::start(&s.ns, &policy(&s.a, "accept", None), s.queue, &["--flow", "--offload"]);
    let table = s.ns.sh("nft list table inet labelgate_offload");
    let err = d.stop();
    assert!(table.contains("set v4_l1") && !table.contains("leftover"), "{table}\n{err}");
}

#[test]
fn a_rule_that_names_the_program_is_never_offloaded_before_or_after_an_exec() {
    let Some(mut s) = Setup::new("exec", 82, 5000) else { return };
    let mut c = s.py("a");
    // Accepted by the program rule each time, and each time queued: the
    // worker refuses the offers (another program may run in the cgroup).
    for _ in 0..3 {
        let (ok, queued) = c.connect(ONLY_PY);
        assert!(ok && queued >= 1, "python reaches {ONLY_PY}, queued ({ok}, {queued})");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(!s.elements().contains(&format!(". {ONLY_PY} ")), "{}", s.elements());
    offloaded(&s, &mut c, CGROUP_A);
    let ready = c.exec(&s.other_py);
    assert!(ready.ends_with("pyother"), "the client now runs the copy: {ready}");
    // At once after the exec: the program rule is decided by labelgate.
    refused_but_reaches_any(&mut s, &mut c, ONLY_PY, "the copy, just exec'd,");
    // The cgroup's element still answers for the cgroup rule: the table
    // accepts the copy there too (the rule names the cgroup only).
    let (ok, queued) = c.connect(CGROUP_A);
    assert!(ok && queued == 0, "the cgroup rule's element accepts the copy ({ok}, {queued})");
    drop(c);
    let err = s.stop();
    assert!(offload_counter(&err, "refused") >= 3, "{err}");
}

#[test]
fn a_reload_that_refuses_the_flow_lets_none_through_after_it() {
    let Some(mut s) = Setup::new("reload", 83, 5000) else { return };
    let mut c = s.py("a");
    offloaded(&s, &mut c, CGROUP_A);
    // A second client in the same cgroup loops on the offloaded port
    // through the reload; the flag is set once labelgate said it reloaded.
    let mut looper = s.py("a");
    let flag = s.ns.dir.path().join("reloaded.flag");
    looper.send(&format!("loop {CGROUP_A} {}", flag.display()));
    std::thread::sleep(Duration::from_millis(300));
    let pfile = s.ns.dir.path().join(format!("policy-{}.toml", s.queue));
    std::fs::write(&pfile, policy(&s.a, "drop", s.input)).unwrap();
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
    refused_but_reaches_any(&mut s, &mut c, CGROUP_A, "after the reload, python");
    drop((c, looper));
    let err = s.stop();
    assert!(offload_counter(&err, "flushes") >= 1, "{err}");
}

#[test]
fn a_cgroup_below_or_beside_the_offloaded_one_is_not_let_through() {
    let Some(mut s) = Setup::new("below", 84, 5000) else { return };
    let mut c = s.py("a");
    offloaded(&s, &mut c, CGROUP_A);
    // The same program in the cgroup below `a` (its level-2 ancestor is
    // `a`) and in the cgroup beside it: the rule names `a` only.
    for leaf in ["a/sub", "b"] {
        let mut other = s.py(leaf);
        refused_but_reaches_any(&mut s, &mut other, CGROUP_A, &format!("a client in {leaf}"));
    }
    let (ok, queued) = c.connect(CGROUP_A);
    assert!(ok && queued == 0, "`a` itself is still offloaded ({ok}, {queued})");
    drop(c);
    s.stop();
}

#[test]
fn a_process_moved_in_gets_the_cgroups_answer_and_no_more() {
    let timeout = Duration::from_millis(1500);
    let Some(mut s) = Setup::new("movein", 85, timeout.as_millis() as u64) else { return };
    let mut other = s.client("b", &s.other_py.clone());
    let mut c = s.py("a");
    let (ok, queued) = other.connect(CGROUP_A);
    assert!(!ok && queued >= 1, "from `b`, the copy is refused on {CGROUP_A}");
    offloaded(&s, &mut c, CGROUP_A);
    std::fs::write(s.cg.join("a").join("cgroup.procs"), other.pid().to_string()).unwrap();
    // Its new sockets are in `a`: the element accepts them, and so does
    // the table (the rule names the cgroup only; checked below, queued,
    // once the element has timed out).
    let (ok, queued) = other.connect(CGROUP_A);
    assert!(ok && queued == 0, "moved in: accepted by the element ({ok}, {queued})");
    // Not for the program rule: the copy is queued and refused there.
    let (ok, queued) = other.connect(ONLY_PY);
    assert!(!ok && queued >= 1, "the copy is refused on {ONLY_PY}, queued");
    std::thread::sleep(timeout + Duration::from_millis(500));
    let (ok, queued) = other.connect(CGROUP_A);
    assert!(ok && queued >= 1, "after the timeout, queued, and the table accepts it too ({ok}, {queued})");
    drop((c, other));
    s.stop();
}

#[test]
fn with_input_queued_too_a_settled_element_skips_both_hooks_only_when_input_is_fixed() {
    // INPUT's decision for the key is fixed: the element settles it, and
    // the next connection is not queued at either hook.
    let Some(mut s) = Setup::with_input("settle", 86, 5000, Some("")) else { return };
    let mut c = s.py("a");
    offloaded(&s, &mut c, CGROUP_A);
    assert!(s.settled_elements().contains(&format!(". {CGROUP_A} ")), "{}", s.elements());
    drop(c);
    let err = s.stop();
    assert!(offload_counter(&err, "settled") >= 1, "{err}");
    drop(s);
    // A uid rule at INPUT for the same port may match another process of
    // the cgroup there: OUTPUT is offloaded, INPUT still queued (and
    // decided: the uid is not ours, so it accepts).
    let uid_rule = "[[rule]]\nname = \"uid-at-input\"\nhook = \"input\"\nuid = 4242\nproto = \"tcp\"\ndport = 7101\nverdict = \"drop\"\n";
    let Some(mut s) = Setup::with_input("nosettle", 87, 5000, Some(uid_rule)) else { return };
    let mut c = s.py("a");
    let (ok, queued) = c.connect(CGROUP_A);
    assert!(ok && queued >= 1, "first connection queued and accepted ({ok}, {queued})");
    assert!(s.wait_element(CGROUP_A), "no element: {}\n{}", s.elements(), s.daemon().stderr_text());
    assert!(!s.settled_elements().contains(&format!(". {CGROUP_A} ")), "{}", s.elements());
    let (ok, queued) = c.connect(CGROUP_A);
    assert!(ok && queued == 1, "OUTPUT offloaded, INPUT queued once ({ok}, {queued})");
    // The port the uid rule does not name is settled, in the same run.
    let (ok, _) = c.connect(ALLOWED_ANY);
    assert!(ok);
    assert!(s.wait_element(ALLOWED_ANY), "{}", s.elements());
    let settled = s.settled_elements();
    assert!(
        settled.contains(&format!(". {ALLOWED_ANY} ")) && !settled.contains(&format!(". {CGROUP_A} ")),
        "{settled}"
    );
    drop(c);
    s.stop();
}
