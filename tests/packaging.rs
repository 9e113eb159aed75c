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
    let verify = || {
        let out = Command::new(&sa).arg("verify").arg(&path).output().unwrap();
        let msg = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let problems = msg.lines().filter(|l| l.contains("labelgate.service")).count();
        (problems, msg)
    };
    let (problems, msg) = verify();
    assert_eq!(problems, 0, "systemd-analyze verify: {msg}");
    // With the --other-netns drop-in beside it (read from labelgate.service.d/,
    // as a key it does not know shows).
    let drop_in = dir.path().join("labelgate.service.d");
    std::fs::create_dir(&drop_in).unwrap();
    std::fs::write(drop_in.join("other-netns.conf"), "[Service]\nRestrictNamespaces=nett\n").unwrap();
    let (problems, msg) = verify();
    assert!(problems > 0 && msg.contains("other-netns.conf"), "the drop-in directory is read: {msg}");
    std::fs::copy(format!("{root}/{OTHER_NETNS_DROP_IN}"), drop_in.join("other-netns.conf")).unwrap();
    let (problems, msg) = verify();
    assert_eq!(problems, 0, "systemd-analyze verify with the drop-in: {msg}");
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
        ("allow labelgate_t self:process", "getsched", "available_parallelism"),
        ("allow labelgate_t kernel_t:system", "module_request", "nfnetlink_queue, udp_diag loaded on demand"),
        ("allow labelgate_t security_t:security", "compute_av", "verdict selinux asks the policy"),
        ("allow labelgate_t security_t:file", "map", "verdict selinux reads the status page"),
    ] {
        assert!(has(prefix, perm), "the module lacks `{prefix} ... {perm}` ({why})");
    }
    assert!(!has("allow labelgate_t self:capability", "setpcap"), "least privilege: no setpcap");
    // --other-netns: sys_admin (setns) and the namespace inodes only under
    // the boolean labelgate_other_netns, off by default.
    assert!(rules.contains(&"bool labelgate_other_netns false;"), "the boolean, off by default");
    let start = rules.iter().position(|l| *l == "if (labelgate_other_netns) {").expect("the boolean's block");
    let len = rules[start..].iter().position(|l| l.starts_with("} # end labelgate_other_netns")).expect("block end");
    let block = start..start + len;
    let inside: Vec<&str> = rules.iter().enumerate().filter(|(i, _)| block.contains(i)).map(|(_, l)| *l).collect();
    let outside: Vec<&str> = rules.iter().enumerate().filter(|(i, _)| !block.contains(i)).map(|(_, l)| *l).collect();
    for (rule, perm) in [("allow labelgate_t self:capability ", "sys_admin"), ("allow labelgate_t nsfs_t:file", "open")]
    {
        assert!(inside.iter().any(|l| l.starts_with(rule) && l.contains(perm)), "the boolean grants `{rule}{perm}`");
        assert!(
            !outside.iter().any(|l| l.starts_with(rule) && l.contains(perm)),
            "`{rule}{perm}` only with the boolean"
        );
    }
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
            // Several lines are merged (systemd.exec(5)), as a drop-in's is.
            "CapabilityBoundingSet" => u.bounding.extend(v.split_whitespace().map(str::to_lowercase)),
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
/// The drop-in shipped for `--other-netns`.
const OTHER_NETNS_DROP_IN: &str = "packaging/systemd/labelgate-other-netns.conf";

/// One start/reload/stop cycle of the unit; with `other_netns`, with the
/// shipped drop-in appended (as systemd merges it) and `--other-netns` in
/// LABELGATE_OPTS.
fn unit_cycle(fail: &str, other_netns: bool) {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut text = std::fs::read_to_string(format!("{root}/packaging/labelgate.service")).unwrap();
    if other_netns {
        text.push_str(&std::fs::read_to_string(format!("{root}/{OTHER_NETNS_DROP_IN}")).unwrap());
    }
    let unit = parse_unit(&text);
    assert_eq!(unit.kind, "notify", "the unit waits for readiness");
    assert!(!unit.bounding.iter().any(|c| c == "cap_setpcap"), "least privilege: no CAP_SETPCAP");
    let ns = support::Netns::new();
    let mut env = unit.env.clone();
    // The shipped default policy (permissive, accept) with one drop rule,
    // as an administrator's first rule: the queue rules take what it
    // governs (tcp/5432); the empty starter policy queues nothing.
    let policy = ns.dir.path().join("policy.toml");
    let shipped = std::fs::read_to_string(format!("{root}/packaging/policy.toml")).unwrap();
    std::fs::write(
        &policy,
        format!("{shipped}\n[[rule]]\nname = \"no-db\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"drop\"\n"),
    )
    .unwrap();
    env.insert("LABELGATE_POLICY".into(), policy.to_str().unwrap().into());
    env.insert("LABELGATE_FAIL".into(), fail.into());
    if other_netns {
        env.insert("LABELGATE_OPTS".into(), "--other-netns".into());
    }
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
    // With the drop-in: CAP_SYS_ADMIN (21) in the bounding set, and kept.
    let admin = if other_netns { 1u64 << 21 } else { 0 };
    let unit_set: u64 = [12u32, 13, 19, 2, 29].iter().map(|b| 1u64 << b).sum();
    assert_eq!(cap_field(pid, "CapBnd"), unit_set | admin, "bounding set as the unit left it");
    assert_eq!(cap_field(pid, "CapEff"), (1 << 12) | (1 << 19) | (1 << 2) | admin, "effective: what it keeps");
    assert!(connects(), "running: the permissive policy's accept reaches the listener through the queue");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_message(&sock, "RELOADING=1", Duration::from_secs(20));
    wait_message(&sock, "READY=1", Duration::from_secs(20));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_message(&sock, "STOPPING=1", Duration::from_secs(20));
    assert!(daemon.wait_timeout(Duration::from_secs(30)).is_some_and(|s| s.success()), "clean exit: {}", log());
    assert!(log().contains("confined: capabilities"), "{}", log());
    assert!(!log().contains("sockets in other network namespaces will not be looked up"), "{}", log());
    if other_netns {
        assert!(log().contains("sys_admin") || log().contains("SYS_ADMIN"), "keeps CAP_SYS_ADMIN: {}", log());
    }

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
    unit_cycle("closed", false);
}

/// The shipped `--other-netns` drop-in grants what the flag needs: run
/// under the merged bounding set, labelgate keeps CAP_SYS_ADMIN and does
/// not warn that other namespaces will not be looked up (which it does
/// under the unit alone: `other_netns_needs_the_drop_in`).
#[test]
fn unit_with_the_other_netns_drop_in_keeps_what_it_needs() {
    if !support::can_run() {
        return;
    }
    unit_cycle("closed", true);
}

#[test]
fn unit_failing_open_removes_its_rules_on_stop() {
    if !support::can_run() {
        return;
    }
    unit_cycle("open", false);
}

#[test]
fn exec_lines_split_like_systemd() {
    let env: HashMap<String, String> =
        [("A", "x y"), ("E", ""), ("P", "/p q")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(exec_argv("cmd ${A} $A $E --p=${P}", &env), ["cmd", "x y", "x", "y", "--p=/p q"]);
    assert_eq!(exec_argv("/bin/sh -c 'a \"${P}\" b'", &env), ["/bin/sh", "-c", "a \"/p q\" b"]);
}

// ---------------------------------------------------------------------------
// The packages: scripts/package.sh builds the .deb (cargo-deb) and the RPM
// (rpmbuild), and both carry what an administrator needs.

fn output_of(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_file(dir: &str, prefix: &str, suffix: &str) -> String {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(found.len(), 1, "one {prefix}*{suffix} in {dir}: {found:?}");
    found.remove(0)
}

/// What both packages must hold (paths without the man page suffix).
fn common_files(man_pages: &[String]) -> Vec<String> {
    let mut want: Vec<String> = [
        "/usr/sbin/labelgate",
        "/usr/lib/systemd/system/labelgate.service",
        "/etc/labelgate/policy.toml",
        "/usr/share/bash-completion/completions/labelgate",
        "/usr/share/fish/vendor_completions.d/labelgate.fish",
        "/usr/share/labelgate/selinux/labelgate.te",
        "/usr/share/labelgate/selinux/labelgate.fc",
        "/usr/share/labelgate/selinux/labelgate.if",
        "/usr/share/labelgate/selinux/labelgate_flow.cil",
        "/usr/share/labelgate/systemd/labelgate-other-netns.conf",
        "/usr/share/selinux/packages/labelgate.pp",
        "/usr/share/doc/labelgate/README.md",
        "/usr/share/doc/labelgate/DEPLOYMENT.md",
        "/usr/share/doc/labelgate/POLICY.md",
        "/usr/share/doc/labelgate/examples/article.toml",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.extend(man_pages.iter().map(|m| format!("/usr/share/man/man8/{m}")));
    want
}

#[test]
fn packages_ship_the_unit_module_docs_and_safe_scripts() {
    let tools = ["rpmbuild", "rpm", "dpkg-deb"];
    let deb_ok = Command::new("cargo").args(["deb", "--version"]).output().is_ok_and(|o| o.status.success());
    if tools.iter().any(|t| which(t).is_err()) || !deb_ok {
        if std::env::var_os("CI").is_some() {
            panic!("CI needs {tools:?} and cargo-deb (scripts/install-deps.sh)");
        }
        eprintln!("SKIP: needs {tools:?} and cargo-deb (scripts/install-deps.sh)");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out =
        Command::new("bash").arg(format!("{root}/scripts/package.sh")).env("LABELGATE_DEB_FAST", "1").output().unwrap();
    assert!(out.status.success(), "package.sh: {}", String::from_utf8_lossy(&out.stderr));
    let deb = one_file(&format!("{root}/target/debian"), "labelgate_", ".deb");
    let rpm = one_file(&format!("{root}/target/rpm/RPMS/x86_64"), "labelgate-", ".rpm");

    let man = tempfile::tempdir().unwrap();
    output_of(Command::new(LABELGATE).arg("man").arg(man.path()));
    let mut man_pages: Vec<String> =
        std::fs::read_dir(man.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    man_pages.sort();
    assert!(man_pages.len() >= 5, "{man_pages:?}");
    let want = common_files(&man_pages);

    // The .deb: files (man pages gzipped), conffiles, maintainer scripts.
    let deb_files: Vec<String> = output_of(Command::new("dpkg-deb").args(["-c", &deb]))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches(".gz").to_string())
        .collect();
    for f in want
        .iter()
        .chain(&["/etc/default/labelgate".to_string(), "/usr/share/zsh/vendor-completions/_labelgate".into()])
    {
        assert!(deb_files.contains(f), "the .deb lacks {f}: {deb_files:?}");
    }
    let ctl = tempfile::tempdir().unwrap();
    output_of(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctl.path()));
    let read = |f: &str| std::fs::read_to_string(ctl.path().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let conffiles = read("conffiles");
    assert!(conffiles.contains("/etc/labelgate/policy.toml") && conffiles.contains("/etc/default/labelgate"));
    for f in ["postinst", "prerm", "postrm"] {
        output_of(Command::new("sh").arg("-n").arg(ctl.path().join(f)));
    }
    let (postinst, prerm, postrm) = (read("postinst"), read("prerm"), read("postrm"));
    assert!(postinst.contains("install -d -m 0700 /var/log/labelgate"), "{postinst}");
    assert!(postinst.contains("selinuxenabled") && postinst.contains("restorecon -R"), "{postinst}");
    assert!(postinst.contains("deb-systemd-helper update-state labelgate.service"), "{postinst}");
    assert!(postinst.contains("try-restart labelgate.service"), "an upgrade restarts a running labelgate");
    // debhelper's "do not enable" form: enable again only a unit the admin had enabled.
    let guard = postinst.find("if deb-systemd-helper debian-installed labelgate.service").expect("no-enable form");
    assert!(postinst.match_indices("deb-systemd-helper enable").all(|(i, _)| i > guard), "{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "installing does not start the unit: {postinst}");
    let stop = prerm.find("deb-systemd-invoke stop").expect("prerm stops on remove");
    let lift = prerm.find("labelgate rules --policy /etc/labelgate/policy.toml --remove").expect("prerm lifts rules");
    assert!(stop < lift, "stop first, then remove the queue rules: {prerm}");
    assert!(
        postrm.contains("deb-systemd-helper purge labelgate.service") && postrm.contains("rm -rf /var/log/labelgate")
    );

    // What the .deb unpacks to works: the binary runs, the unit is the repository's.
    let tree = tempfile::tempdir().unwrap();
    output_of(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tree.path()));
    let shipped = tree.path().join("usr/sbin/labelgate");
    assert!(output_of(Command::new(&shipped).arg("--help")).contains("rules"));
    assert_eq!(
        std::fs::read(tree.path().join("usr/lib/systemd/system/labelgate.service")).unwrap(),
        std::fs::read(format!("{root}/packaging/labelgate.service")).unwrap()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(tree.path().join("etc/labelgate/policy.toml")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the policy is root's only");

    // The RPM: files, config files, scripts.
    let rpm_files: Vec<String> = output_of(Command::new("rpm").args(["-qlp", &rpm]))
        .lines()
        .map(|l| l.trim_end_matches(".gz").to_string())
        .collect();
    for f in
        want.iter().chain(&["/etc/sysconfig/labelgate".to_string(), "/usr/share/zsh/site-functions/_labelgate".into()])
    {
        assert!(rpm_files.contains(f), "the RPM lacks {f}: {rpm_files:?}");
    }
    let config = output_of(Command::new("rpm").args(["-qp", "--configfiles", &rpm]));
    assert!(config.contains("/etc/labelgate/policy.toml") && config.contains("/etc/sysconfig/labelgate"), "{config}");
    let scripts = output_of(Command::new("rpm").args(["-qp", "--scripts", &rpm]));
    // `rpm --scripts` prints "NAME scriptlet (using /bin/sh):" before each one.
    let section = |name: &str| {
        let mut lines = scripts.lines().skip_while(|l| !l.starts_with(name));
        assert!(lines.next().is_some(), "no {name} in {scripts}");
        lines.take_while(|l| !l.contains(" scriptlet (using ")).collect::<Vec<_>>().join("\n")
    };
    let (post, preun, postun) =
        (section("postinstall scriptlet"), section("preuninstall scriptlet"), section("postuninstall scriptlet"));
    assert!(post.contains("restorecon -R") && post.contains("preset labelgate.service"), "{post}");
    let systemctl: Vec<&str> = post.lines().map(str::trim).filter(|l| l.starts_with("/usr/bin/systemctl")).collect();
    assert!(!systemctl.is_empty() && systemctl.iter().all(|l| l.contains(" preset ")), "only presets: {post}");
    assert!(preun.contains("$1 -eq 0") && preun.contains("disable --now labelgate.service"), "{preun}");
    assert!(preun.contains("rules --policy /etc/labelgate/policy.toml --remove"), "{preun}");
    assert!(postun.contains("try-restart labelgate.service"), "{postun}");
    let listing = output_of(Command::new("rpm").args(["-qlvp", &rpm]));
    let policy_line = listing.lines().find(|l| l.ends_with("/etc/labelgate/policy.toml")).unwrap();
    assert!(policy_line.starts_with("-rw-------"), "{policy_line}");
}
