//! Rules by the owning process's unit, container, cgroup and exe, on the
//! real kernel with real cgroups: servers and clients are moved into
//! cgroup v2 directories made like systemd's and podman's
//! (`…/system.slice/web.service`, `…/machine.slice/libpod-<id>.scope`),
//! inside a fresh network namespace, and labelgate decides their
//! connections by those keys. Needs root, a cgroup2 mount, `ip`,
//! `iptables` and `python3` (see `support::can_run_with`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const ID_A: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const ID_B: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf";

/// Where cgroup v2 is mounted (pure v2: `/sys/fs/cgroup`; hybrid:
/// `/sys/fs/cgroup/unified`), from `/proc/self/mounts`.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f.get(1).copied().unwrap_or_default()))
    })
}

/// A tree of cgroups under `<mount>/lgtest-<pid>`, removed (deepest first)
/// on drop, once the processes in them are gone.
struct Cgroups {
    root: PathBuf,
    leaves: Vec<PathBuf>,
    /// The tree's path as `/proc/PID/cgroup` shows it (from the mount's root).
    rel: String,
}

impl Cgroups {
    fn new(mount: &Path, leaves: &[&str]) -> Cgroups {
        let name = format!("lgtest-{}", std::process::id());
        let root = mount.join(&name);
        let mut cg = Cgroups { root: root.clone(), leaves: Vec::new(), rel: format!("/{name}") };
        for l in leaves {
            let dir = root.join(l);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            cg.leaves.push(dir);
        }
        cg
    }

    /// A shell command that moves itself into cgroup `leaf`, then execs
    /// `args` in the namespace (the pid stays the same through the execs).
    fn cmd(&self, ns: &Netns, leaf: &str, args: &[&str]) -> Command {
        let procs = self.root.join(leaf).join("cgroup.procs");
        let mut c = Command::new("sh");
        c.args(["-c", "echo $$ > \"$0\" && exec ip netns exec \"$@\"", procs.to_str().unwrap(), &ns.name]);
        c.args(args);
        c
    }

    /// Start a probe server in `leaf`; returns once it is ready.
    fn serve(&self, ns: &Netns, leaf: &str, port: &str) -> std::process::Child {
        let mut c = self.cmd(ns, leaf, &["/usr/bin/python3", PROBE, "serve-tcp", "127.0.0.1", port, "60"]);
        let mut child = c.stdout(Stdio::piped()).spawn().expect("spawn server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "server in {leaf} did not start");
        child
    }

    /// Connect from a client in `leaf`; (connected, client pid).
    fn connect(&self, ns: &Netns, leaf: &str, port: &str) -> (bool, u32) {
        let mut c = self.cmd(ns, leaf, &["/usr/bin/python3", PROBE, "connect-tcp", "127.0.0.1", port, "2"]);
        let child = c.stdout(Stdio::null()).spawn().expect("spawn client");
        let pid = child.id();
        (child.wait_with_output().unwrap().status.success(), pid)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for l in &self.leaves {
            let mut d = l.clone();
            while d.starts_with(&self.root) {
                if !dirs.contains(&d) {
                    dirs.push(d.clone());
                }
                if !d.pop() {
                    break;
                }
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            // A process just reaped may still count for a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The cgroup2 mount, when the tools are there and it is mounted (under
/// CI, both must be: fails loudly then).
fn can_run_in_cgroups() -> Option<PathBuf> {
    if !can_run_with(&["ip", "iptables", "python3"]) {
        return None;
    }
    let mount = cgroup2_mount();
    if mount.is_none() {
        assert!(std::env::var_os("CI").is_none(), "no cgroup2 mount; CI must provide one");
        eprintln!("SKIP: no cgroup2 mount");
    }
    mount
}

fn kill(mut c: std::process::Child) {
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn rules_by_unit_container_cgroup_and_exe() {
    let Some(mount) = can_run_in_cgroups() else { return };
    let web = "system.slice/web.service";
    let other = "system.slice/other.service";
    let ctr_a = format!("machine.slice/libpod-{ID_A}.scope");
    let ctr_b = format!("machine.slice/libpod-{ID_B}.scope");
    let cg = Cgroups::new(&mount, &[web, other, &ctr_a, &ctr_b]);
    let ns = Netns::new();
    ns.sh("iptables -A OUTPUT -o lo -p tcp -m conntrack --ctstate NEW -j NFQUEUE --queue-num 61");
    let policy = format!(
        r#"
default = "drop"
[[rule]]
name = "web-to-a"
source_unit = "web.service"
dest_container = "{a12}"
proto = "tcp"
dport = 5432
verdict = "accept"
audit = true

[[rule]]
name = "services-to-b"
source_cgroup = "{rel}/system.slice/*"
source_exe = "/usr/bin/python3*"
dest_container = "{b}"
proto = "tcp"
dport = 5433
verdict = "accept"
audit = true

[[rule]]
name = "sbin-to-b"
source_exe = "/usr/sbin/*"
dest_unit = "libpod-*.scope"
proto = "tcp"
dport = 5434
verdict = "accept"
"#,
        a12 = &ID_A[..12].to_uppercase(),
        b = ID_B,
        rel = cg.rel,
    );
    let server_a = cg.serve(&ns, &ctr_a, "5432");
    let server_b = cg.serve(&ns, &ctr_b, "5433");
    let server_b2 = cg.serve(&ns, &ctr_b, "5434");
    let (a_pid, b_pid) = (server_a.id(), server_b.id());
    let d = Daemon::start(&ns, &policy, 61, &["--audit-format", "json"]);

    // The unit rule: web.service reaches container A, other.service does
    // not; other.service reaches container B (its positive control).
    let (web_a, web_pid) = cg.connect(&ns, web, "5432");
    let (other_a, other_pid) = cg.connect(&ns, other, "5432");
    let (other_b, other_b_pid) = cg.connect(&ns, other, "5433");
    // The exe rule: python3 is not under /usr/sbin; the same client is let
    // through by its cgroup and exe to B on 5433 (just above).
    let (other_b2, _) = cg.connect(&ns, other, "5434");
    // A client in container B is neither in system.slice nor web.service.
    let (ctr_to_a, _) = cg.connect(&ns, &ctr_b, "5432");
    let (ctr_to_b, _) = cg.connect(&ns, &ctr_b, "5433");
    let err = d.stop();
    for c in [server_a, server_b, server_b2] {
        kill(c);
    }
    assert!(web_a, "web.service must reach container A: {err}");
    assert!(!other_a, "other.service must be refused by container A");
    assert!(other_b, "other.service must reach container B by its cgroup and exe");
    assert!(!other_b2, "python3 is not /usr/sbin/*: refused");
    assert!(!ctr_to_a && !ctr_to_b, "container B's own process matches no rule");

    let audit = std::fs::read_to_string(ns.dir.path().join("audit-61.log")).unwrap();
    let recs: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |rule: &str, pid: u32| {
        recs.iter()
            .find(|r| r["rule"] == rule && r["process"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no {rule} record for pid {pid} in:\n{audit}"))
    };
    let g = find("web-to-a", web_pid);
    assert_eq!(g["outcome"], "granted");
    assert_eq!(g["process"]["unit"], "web.service");
    assert_eq!(g["process"]["cgroup"], format!("{}/{web}", cg.rel));
    assert!(g["process"]["container"].is_null(), "{g}");
    assert_eq!(g["dest_process"]["pid"], a_pid);
    assert_eq!(g["dest_process"]["container"], ID_A);
    assert_eq!(g["dest_process"]["unit"], format!("libpod-{ID_A}.scope"));
    let denied = find("default", other_pid);
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["process"]["unit"], "other.service");
    assert_eq!(denied["dest_process"]["container"], ID_A);
    let g = find("services-to-b", other_b_pid);
    assert_eq!(g["dest_process"]["pid"], b_pid);
    assert_eq!(g["dest_process"]["container"], ID_B);
    assert!(g["process"]["exe"].as_str().unwrap().starts_with("/usr/bin/python3"), "{g}");
}

/// Without a rule that names a process key, labelgate reads a holder's
/// exe and cgroup only for a decision that writes a record: the record of
/// a refused connection still carries them (and its netns) for both ends,
/// and the same client reaches an allowed port in the same run.
#[test]
fn records_carry_process_facts_without_process_keys() {
    let Some(mount) = can_run_in_cgroups() else { return };
    let web = "system.slice/web.service";
    let ctr = format!("machine.slice/libpod-{ID_B}.scope");
    let cg = Cgroups::new(&mount, &[web, &ctr]);
    let ns = Netns::new();
    ns.sh("iptables -A OUTPUT -o lo -p tcp -m conntrack --ctstate NEW -j NFQUEUE --queue-num 62");
    let policy = "default = \"drop\"\n[[rule]]\nname = \"db\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"accept\"\n";
    let open = cg.serve(&ns, &ctr, "5432");
    let closed = cg.serve(&ns, &ctr, "5433");
    let closed_pid = closed.id();
    let d = Daemon::start(&ns, policy, 62, &["--audit-format", "json"]);
    let (allowed, _) = cg.connect(&ns, web, "5432");
    let (refused, client_pid) = cg.connect(&ns, web, "5433");
    let err = d.stop();
    kill(open);
    kill(closed);
    assert!(allowed, "the client must reach the allowed port: {err}");
    assert!(!refused, "the client must be refused on 5433");

    let audit = std::fs::read_to_string(ns.dir.path().join("audit-62.log")).unwrap_or_default();
    let recs: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(recs.iter().all(|r| r["rule"] != "db"), "an unaudited grant writes no record:\n{audit}");
    let r = recs
        .iter()
        .find(|r| r["outcome"] == "denied" && r["process"]["pid"] == client_pid)
        .unwrap_or_else(|| panic!("no denied record for pid {client_pid} in:\n{audit}"));
    let p = &r["process"];
    assert!(p["exe"].as_str().unwrap().starts_with("/usr/bin/python3"), "{r}");
    assert!(!p["comm"].as_str().unwrap().is_empty(), "{r}");
    assert_eq!(p["cgroup"], format!("{}/{web}", cg.rel), "{r}");
    assert_eq!(p["unit"], "web.service", "{r}");
    assert!(p["netns"].as_u64().is_some(), "{r}");
    let q = &r["dest_process"];
    assert_eq!(q["pid"], closed_pid, "{r}");
    assert_eq!(q["container"], ID_B, "{r}");
    assert!(q["exe"].as_str().unwrap().starts_with("/usr/bin/python3"), "{r}");
    assert_eq!(q["netns"], p["netns"], "{r}");
}
