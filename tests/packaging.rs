//! The packaging pieces are generated from the real definitions and valid.

use std::process::Command;

const LABELGATE: &str = env!("CARGO_BIN_EXE_labelgate");

#[test]
fn man_pages_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(LABELGATE).arg("man").arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    for page in
        ["labelgate.8", "labelgate-run.8", "labelgate-rules.8", "labelgate-explain.8", "labelgate-audit2rules.8"]
    {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is roff");
    }
    let run = std::fs::read_to_string(dir.path().join("labelgate-run.8")).unwrap();
    assert!(run.contains("policy") && run.contains("audit"), "run's flags are documented");
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(LABELGATE).args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("would-break"), "{shell} completes subcommands");
    }
}

#[test]
fn systemd_unit_verifies_and_shipped_policy_compiles() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(LABELGATE).args(["check", &format!("{root}/packaging/policy.toml")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let Ok(sa) = which("systemd-analyze") else {
        if std::env::var_os("CI").is_some() {
            panic!("systemd-analyze is needed in CI");
        }
        eprintln!("SKIP: systemd-analyze not installed");
        return;
    };
    // Point the unit at the built binary, and drop man: links (not installed here).
    let unit = std::fs::read_to_string(format!("{root}/packaging/labelgate.service")).unwrap();
    let unit: String = unit
        .replace("/usr/sbin/labelgate", LABELGATE)
        .lines()
        .filter(|l| !l.starts_with("Documentation="))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labelgate.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(sa).arg("verify").arg(&path).output().unwrap();
    let msg = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let problems: Vec<&str> = msg.lines().filter(|l| l.contains("labelgate.service")).collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {msg}");
}

fn which(tool: &str) -> Result<String, ()> {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let p = format!("{dir}/{tool}");
        if std::path::Path::new(&p).exists() {
            return Ok(p);
        }
    }
    Err(())
}

#[test]
fn selinux_policy_module_for_labelgate_t_compiles() {
    let makefile = "/usr/share/selinux/devel/Makefile";
    if !std::path::Path::new(makefile).exists() {
        if std::env::var_os("CI").is_some() {
            panic!("selinux-policy-dev is needed in CI");
        }
        eprintln!("SKIP: selinux-policy-dev not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for f in ["labelgate.te", "labelgate.fc", "labelgate.if"] {
        std::fs::copy(format!("{}/packaging/selinux/{f}", env!("CARGO_MANIFEST_DIR")), dir.path().join(f)).unwrap();
    }
    let out = Command::new("make").args(["-f", makefile, "labelgate.pp"]).current_dir(dir.path()).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(dir.path().join("labelgate.pp").metadata().unwrap().len() > 0);
    assert!(!log.to_lowercase().contains("error"), "{log}");
    // What the refpolicy interfaces expanded to: the permissions an enforcing
    // kernel asked for (audit2allow on the real policy's denials).
    let expanded = std::fs::read_to_string(dir.path().join("tmp/labelgate.tmp")).unwrap();
    let rules: Vec<&str> = expanded.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    let has = |prefix: &str, perm: &str| rules.iter().any(|l| l.starts_with(prefix) && l.contains(perm));
    for (prefix, perm, why) in [
        ("allow labelgate_t iptables_exec_t:file", "execute", "rules --install runs iptables"),
        ("type_transition labelgate_t iptables_exec_t:process iptables_t", "", "in iptables_t"),
        ("allow labelgate_t iptables_t:process ", "transition", "in iptables_t"),
        ("allow labelgate_t iptables_t:process2", "nnp_transition", "under NoNewPrivileges"),
        ("allow labelgate_t bin_t:lnk_file", "read", "/usr/sbin/iptables is a symlink"),
        ("allow labelgate_t etc_t:lnk_file", "read", "/etc/alternatives/iptables"),
        ("allow labelgate_t self:fifo_file", "write", "pipes to iptables-restore"),
        ("allow iptables_t labelgate_t:fifo_file", "write", "iptables writes its stderr pipe"),
        ("allow labelgate_t security_t:filesystem", "getattr", "libselinux finds selinuxfs (check)"),
        ("allow labelgate_t init_runtime_t:sock_file", "write", "sd_notify READY=1"),
    ] {
        assert!(has(prefix, perm), "the module lacks `{prefix} ... {perm}` ({why})");
    }
    assert!(!has("allow labelgate_t self:capability", "setpcap"), "least privilege: no setpcap");
    let fc = std::fs::read_to_string(dir.path().join("labelgate.fc")).unwrap();
    assert!(fc.lines().any(|l| l.starts_with("/var/log/labelgate(/.*)?") && l.contains("labelgate_log_t")), "{fc}");
}

// ---------------------------------------------------------------------------
// The shipped unit, run. PID 1 here is not systemd, so the test runs the
// unit's own ExecStartPre/ExecStart/ExecStopPost lines the way systemd would
// for this unit: with its Environment=, under its CapabilityBoundingSet=
// (setpriv --bounding-set) and NoNewPrivileges= (setpriv --no-new-privs),
// with a NOTIFY_SOCKET the test listens on, in a network namespace of its
// own. The real systemd run is the real-policy VM tier (vm/realpolicy/).

mod support;
use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

struct Unit {
    env: HashMap<String, String>,
    start_pre: Vec<String>,
    start: String,
    stop_post: Vec<String>,
    bounding: Vec<String>,
    no_new_privs: bool,
    kind: String,
}

fn parse_unit(text: &str) -> Unit {
    let mut u = Unit {
        env: HashMap::new(),
        start_pre: vec![],
        start: String::new(),
        stop_post: vec![],
        bounding: vec![],
        no_new_privs: false,
        kind: String::new(),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k {
            "Environment" => {
                let (name, value) = v.split_once('=').expect("Environment=NAME=VALUE");
                u.env.insert(name.to_string(), value.to_string());
            }
            "ExecStartPre" => u.start_pre.push(v.to_string()),
            "ExecStart" => u.start = v.to_string(),
            "ExecStopPost" => u.stop_post.push(v.to_string()),
            "CapabilityBoundingSet" => u.bounding = v.split_whitespace().map(str::to_lowercase).collect(),
            "NoNewPrivileges" => u.no_new_privs = v == "yes",
            "Type" => u.kind = v.to_string(),
            _ => {}
        }
    }
    u
}

/// systemd's command line rules for what this unit uses: words split at
/// whitespace, '…' and "…" quoting, `${VAR}` replaced inside a word, `$VAR`
/// as a word of its own replaced by the value split at whitespace.
fn exec_argv(line: &str, env: &HashMap<String, String>) -> Vec<String> {
    let mut words: Vec<(String, bool)> = vec![];
    let (mut cur, mut quote, mut started, mut quoted) = (String::new(), None, false, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => (quote, started, quoted) = (Some(c), true, true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push((std::mem::take(&mut cur), quoted));
                }
                (started, quoted) = (false, false);
            }
            (_, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push((cur, quoted));
    }
    let mut argv = vec![];
    for (w, quoted) in words {
        if let (false, Some(name)) = (quoted, w.strip_prefix('$').filter(|n| !n.starts_with('{'))) {
            argv.extend(env.get(name).map(String::as_str).unwrap_or("").split_whitespace().map(String::from));
            continue;
        }
        let mut out = w.clone();
        for (name, value) in env {
            out = out.replace(&format!("${{{name}}}"), value);
        }
        argv.push(out);
    }
    argv
}

struct UnitRun<'a> {
    ns: &'a support::Netns,
    unit: Unit,
    env: HashMap<String, String>,
}

impl UnitRun<'_> {
    /// A command line of the unit, as its service manager would start it.
    fn command(&self, line: &str) -> Command {
        let argv: Vec<String> = exec_argv(line, &self.env)
            .into_iter()
            .map(|a| a.replace("/usr/sbin/labelgate", LABELGATE))
            .map(|a| a.replace("/var/log/labelgate", &self.dir("log")))
            .map(|a| a.replace("/run/labelgate", &self.dir("run")))
            .collect();
        let caps: Vec<String> = self.unit.bounding.iter().map(|c| format!("+{}", &c["cap_".len()..])).collect();
        let mut c = self.ns.cmd("setpriv");
        c.arg(format!("--bounding-set=-all,{}", caps.join(",")));
        if self.unit.no_new_privs {
            c.arg("--no-new-privs");
        }
        c.arg("--").args(&argv).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").envs(&self.env);
        c
    }

    fn dir(&self, name: &str) -> String {
        let d = self.ns.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d.to_str().unwrap().to_string()
    }

    fn run_ok(&self, line: &str) {
        let out = self.command(line).output().unwrap();
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn chain(&self, chain: &str) -> String {
        self.ns.sh(&format!("iptables -t security -S {chain} 2>/dev/null || true"))
    }
}

fn wait_message(sock: &UnixDatagram, want: &str, deadline: Duration) -> String {
    let end = Instant::now() + deadline;
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < end {
        sock.set_read_timeout(Some(end.saturating_duration_since(Instant::now()).max(Duration::from_millis(10))))
            .unwrap();
        let Ok(n) = sock.recv(&mut buf) else { break };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push_str(&format!("[{msg}] "));
        if msg.lines().any(|l| l == want) {
            return msg;
        }
    }
    panic!("no {want} within {deadline:?}; got: {seen}");
}

/// The unit's main process, killed if the test fails before it exits.
struct Daemon(std::process::Child);

impl Daemon {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(st) = self.0.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cap_field(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let v = status.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).unwrap();
    u64::from_str_radix(v.trim(), 16).unwrap()
}

/// One start-reload-stop cycle of the unit with LABELGATE_FAIL=`fail`.
fn unit_cycle(fail: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = parse_unit(&std::fs::read_to_string(format!("{root}/packaging/labelgate.service")).unwrap());
    assert_eq!(unit.kind, "notify", "the unit waits for readiness");
    assert!(!unit.bounding.iter().any(|c| c == "cap_setpcap"), "least privilege: no CAP_SETPCAP");
    let ns = support::Netns::new();
    let mut env = unit.env.clone();
    // The shipped default policy (permissive, accept), from a path of the test's.
    let policy = ns.dir.path().join("policy.toml");
    std::fs::copy(format!("{root}/packaging/policy.toml"), &policy).unwrap();
    env.insert("LABELGATE_POLICY".into(), policy.to_str().unwrap().into());
    env.insert("LABELGATE_FAIL".into(), fail.into());
    let run = UnitRun { ns: &ns, unit, env };
    let _server = ns.spawn_probe(&["serve-tcp", "127.0.0.1", "5432", "60"]);
    let connects = || ns.probe_as(None, &["connect-tcp", "127.0.0.1", "5432", "2"]);
    assert!(connects(), "no rules yet: the listener answers");

    for line in &run.unit.start_pre {
        run.run_ok(line);
    }
    let rules = run.chain("LABELGATE_OUT");
    assert!(rules.contains("NFQUEUE"), "ExecStartPre installed the queue rules: {rules}");
    assert_eq!(rules.contains("--queue-bypass"), fail == "open", "bypass only when failing open: {rules}");
    if fail == "closed" {
        assert!(!connects(), "fail-closed rules with no reader drop new connections");
    }

    let sock_path = ns.dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let stderr = std::fs::File::create(ns.dir.path().join("stderr")).unwrap();
    let mut daemon = Daemon(
        run.command(&run.unit.start)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(ns.dir.path().join("stderr")).unwrap_or_default();
    let ready = std::panic::catch_unwind(|| wait_message(&sock, "READY=1", Duration::from_secs(30)));
    let ready = ready.unwrap_or_else(|_| panic!("no readiness; daemon log:\n{}", log()));
    assert!(ready.contains("STATUS=running"), "{ready}");
    assert!(ns.queue_stats(0).is_some(), "READY=1 came after queue 0 was bound");
    // Bounded by the unit (no CAP_SETPCAP to trim it), confined by itself.
    let pid = daemon.pid();
    let unit_set: u64 = [12u32, 13, 19, 2, 29].iter().map(|b| 1u64 << b).sum();
    assert_eq!(cap_field(pid, "CapBnd"), unit_set, "bounding set as the unit left it");
    assert_eq!(cap_field(pid, "CapEff"), (1 << 12) | (1 << 19) | (1 << 2), "effective: what it keeps");
    assert!(connects(), "running: the permissive policy's accept reaches the listener through the queue");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_message(&sock, "RELOADING=1", Duration::from_secs(20));
    wait_message(&sock, "READY=1", Duration::from_secs(20));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_message(&sock, "STOPPING=1", Duration::from_secs(20));
    assert!(daemon.wait_timeout(Duration::from_secs(30)).is_some_and(|s| s.success()), "clean exit: {}", log());
    assert!(log().contains("confined: capabilities"), "{}", log());

    for line in &run.unit.stop_post {
        run.run_ok(line);
    }
    let rules = run.chain("LABELGATE_OUT");
    if fail == "closed" {
        assert!(rules.contains("NFQUEUE"), "fail-closed: the rules stay after stop: {rules}");
        assert!(!connects(), "stopped, fail-closed: new connections are dropped");
        run.run_ok(&format!("/usr/sbin/labelgate rules --policy {} --remove", policy.display()));
        assert!(connects(), "after `labelgate rules --remove` the same client connects again");
    } else {
        assert!(!rules.contains("NFQUEUE"), "fail-open: ExecStopPost removed the rules: {rules}");
        assert!(connects(), "stopped, fail-open: traffic passes");
    }
}

#[test]
fn unit_runs_under_its_bounding_set_notifies_and_fails_closed() {
    if !support::can_run() {
        return;
    }
    unit_cycle("closed");
}

#[test]
fn unit_failing_open_removes_its_rules_on_stop() {
    if !support::can_run() {
        return;
    }
    unit_cycle("open");
}

#[test]
fn exec_lines_split_like_systemd() {
    let env: HashMap<String, String> =
        [("A", "x y"), ("E", ""), ("P", "/p q")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(exec_argv("cmd ${A} $A $E --p=${P}", &env), ["cmd", "x y", "x", "y", "--p=/p q"]);
    assert_eq!(exec_argv("/bin/sh -c 'a \"${P}\" b'", &env), ["/bin/sh", "-c", "a \"/p q\" b"]);
}
