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
}
