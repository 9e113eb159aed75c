//! Shared helpers for the root-only integration tests: network namespaces,
//! a running labelgate, and traffic probes. Everything stays on loopback
//! inside a namespace the test made, and every wait is bounded.
#![allow(dead_code)]
#![allow(unsafe_code)] // setns, for Netns::enter

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod audit;

pub const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helpers/probe.py");
pub const LABELGATE: &str = env!("CARGO_BIN_EXE_labelgate");

/// Whether root-only tests can run here. Outside CI a missing prerequisite
/// skips with a clear line; under CI (CI=true) it fails the test instead.
pub fn can_run() -> bool {
    can_run_with(&["ip", "iptables", "ip6tables", "python3", "setpriv"])
}

/// [`can_run`] for a test that needs root and `tools` (found on PATH or in
/// /usr/sbin, /sbin): skips outside CI, fails under CI.
pub fn can_run_with(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix_is_root() {
        missing.push("root");
    }
    for &tool in tools {
        if which(tool).is_none() {
            missing.push(tool);
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("SKIP: this test needs {} (run as root with {} installed)", missing.join(", "), tools.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI must provide it");
    }
    eprintln!("{msg}");
    false
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .chain(["/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(tool)))
        .find(|p| p.is_file())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace with loopback up, deleted on drop.
pub struct Netns {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!("lgt-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name, dir: tempfile::tempdir().expect("tempdir") };
        ns.sh("ip link set lo up");
        ns
    }

    /// Move the calling thread into the namespace: its sockets, and the
    /// processes it spawns from now on, are in it. (Only for a test that
    /// runs on its own thread, as every Rust test does.)
    pub fn enter(&self) {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open the namespace");
        // SAFETY: setns on a valid, open namespace fd; it changes only this
        // thread's network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {}: {}", self.name, std::io::Error::last_os_error());
    }

    /// A command that runs inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run a shell snippet inside the namespace; panics if it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = run_ok(self.cmd("sh").args(["-c", script]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run the probe as `uid` (None: root); returns its exit status success.
    pub fn probe_as(&self, uid: Option<u32>, args: &[&str]) -> bool {
        let mut c = match uid {
            Some(u) => {
                let mut c = self.cmd("setpriv");
                c.args([&format!("--reuid={u}"), &format!("--regid={u}"), "--clear-groups", "/usr/bin/python3", PROBE]);
                c
            }
            None => {
                let mut c = self.cmd("/usr/bin/python3");
                c.arg(PROBE);
                c
            }
        };
        c.args(args);
        let out = c.output().expect("run probe");
        out.status.success()
    }

    /// Start a background helper (the probe) and wait for its "ready" line.
    pub fn spawn_probe(&self, args: &[&str]) -> Bg {
        let mut c = self.cmd("/usr/bin/python3");
        c.arg(PROBE).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn probe");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("probe ready line");
        assert_eq!(line.trim(), "ready", "probe did not start");
        Bg(Some(child))
    }

    /// The namespace's nfnetlink_queue line for `queue`, as numbers.
    pub fn queue_stats(&self, queue: u16) -> Option<Vec<u64>> {
        let text = self.sh("cat /proc/net/netfilter/nfnetlink_queue 2>/dev/null || true");
        text.lines()
            .map(|l| l.split_whitespace().filter_map(|x| x.parse::<u64>().ok()).collect::<Vec<_>>())
            .find(|v| v.first() == Some(&u64::from(queue)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A background process that is killed and reaped when dropped.
pub struct Bg(Option<Child>);

impl Bg {
    /// The process id (the probe is exec'd by `ip netns exec`, so it is the probe's own).
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    /// Wait for the process to exit by itself.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.0.take().expect("child").wait().expect("wait")
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A labelgate daemon running inside a namespace.
pub struct Daemon {
    child: Option<Child>,
    pub audit: PathBuf,
    pub stderr: PathBuf,
    pub queue: u16,
}

impl Daemon {
    /// Write `policy` to a file and start `labelgate run` on `queue` with extra args.
    pub fn start(ns: &Netns, policy: &str, queue: u16, extra: &[&str]) -> Daemon {
        Self::start_env(ns, policy, queue, extra, &[])
    }

    /// As [`Daemon::start`], with extra environment variables.
    pub fn start_env(ns: &Netns, policy: &str, queue: u16, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let pfile = ns.dir.path().join(format!("policy-{queue}.toml"));
        std::fs::write(&pfile, policy).expect("write policy");
        let audit = ns.dir.path().join(format!("audit-{queue}.log"));
        let stderr = ns.dir.path().join(format!("stderr-{queue}.log"));
        let err = std::fs::File::create(&stderr).expect("stderr file");
        // `--queues N-M` in `extra` replaces `--queue N` (N is then the first queue).
        let queue_arg =
            if extra.contains(&"--queues") { vec![] } else { vec!["--queue".to_string(), queue.to_string()] };
        let child = ns
            .cmd(LABELGATE)
            .args(["run", "--policy"])
            .arg(&pfile)
            .args(&queue_arg)
            .arg("--audit")
            .arg(&audit)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn labelgate");
        let d = Daemon { child: Some(child), audit, stderr, queue };
        let deadline = Instant::now() + Duration::from_secs(10);
        while ns.queue_stats(queue).is_none() {
            assert!(Instant::now() < deadline, "labelgate did not bind queue {queue}: {}", d.stderr_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn signal(&self, sig: &str) {
        run_ok(Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]));
    }

    /// SIGTERM and wait (bounded) for exit; returns the stderr text.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "labelgate exited with {status}: {}", self.stderr_text());
                break;
            }
            assert!(Instant::now() < deadline, "labelgate did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stderr_text()
    }

    /// Wait (bounded) for the daemon to exit by itself; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait().ok().flatten() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident set size (VmRSS, KiB) and open file descriptors of the daemon.
    /// Resident KiB, open descriptors other than links into `/proc` (the
    /// resolver's bounded cache of open `/proc/PID/fd/N` links), and those.
    pub fn rss_and_fds(&self) -> (u64, usize, usize) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        let (mut fds, mut links) = (0, 0);
        for e in std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten() {
            match std::fs::read_link(e.path()) {
                Ok(t) if t.starts_with("/proc/") => links += 1,
                _ => fds += 1,
            }
        }
        (rss, fds, links)
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Audit lines written so far.
    pub fn audit_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.audit).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of counter `name` in a `labelgate counters:` line.
pub fn counter(stderr: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("labelgate counters:"))
        .unwrap_or_else(|| panic!("no counters in: {stderr}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no counter {name} in {line}"))
}
