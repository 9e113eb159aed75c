//! `verdict = "selinux"` where the loaded policy cannot be asked: `run`
//! refuses the policy with a clear error before touching any queue, and
//! `check` says why; the same policy with `verdict = "accept"` passes
//! `check` without that warning (control). The decisions themselves are
//! tested with a fake oracle (src/sepolicy.rs) and against the kernel in
//! the VM scenario selinux-verdict.

use std::process::Command;

const LABELGATE: &str = env!("CARGO_BIN_EXE_labelgate");

fn policy(dir: &tempfile::TempDir, verdict: &str) -> std::path::PathBuf {
    let p = dir.path().join(format!("{verdict}.toml"));
    let text = format!(
        "default = \"accept\"\n[[rule]]\nname = \"db\"\nproto = \"tcp\"\ndport = 5432\nverdict = \"{verdict}\"\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn selinux_active() -> bool {
    std::fs::read_to_string("/sys/kernel/security/lsm").is_ok_and(|l| l.split(',').any(|m| m == "selinux"))
        && std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

#[test]
fn run_refuses_and_check_warns_where_selinux_cannot_be_asked() {
    let dir = tempfile::tempdir().unwrap();
    let asks = policy(&dir, "selinux");
    let check = Command::new(LABELGATE).arg("check").arg(&asks).output().unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    let control = Command::new(LABELGATE).arg("check").arg(policy(&dir, "accept")).output().unwrap();
    let control = String::from_utf8_lossy(&control.stdout);
    assert!(!control.contains("verdict selinux"), "{control}");
    if selinux_active() {
        // Asked on a host with SELinux: whether it can be asked depends on
        // the class being loaded; the message never says it is inactive.
        assert!(!out.contains("SELinux is not active on this host"), "{out}");
        return;
    }
    let want = "rules with verdict selinux cannot be decided here (SELinux is not active on this host)";
    assert!(out.contains(want), "{out}");
    assert!(check.status.success(), "a warning, not an error, without --strict");
    let strict = Command::new(LABELGATE).args(["check", "--strict"]).arg(&asks).status().unwrap();
    assert!(!strict.success(), "--strict fails on it");
    // `run` refuses before binding a queue (queue 4711 is never bound).
    let run = Command::new(LABELGATE).args(["run", "--queue", "4711", "--policy"]).arg(&asks).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "run accepted a policy it cannot decide: {err}");
    assert!(err.contains("cannot ask the loaded SELinux policy: SELinux is not active on this host"), "{err}");
}
