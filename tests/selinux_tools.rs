//! labelgate's audit records read by the real SELinux tools: the class
//! module packaging/selinux/labelgate_flow.cil installed with `semodule`
//! (into a scratch store, nothing loaded into a kernel) on top of the VM
//! test policy, and `audit2allow` on records the audit writer wrote.
//!
//! Needs secilc, semodule (policycoreutils) and audit2allow
//! (policycoreutils-python-utils): outside CI a missing tool skips with a
//! line saying so; under CI it fails.

mod support;

use labelgate::audit::Outcome;
use labelgate::counters::Counters;
use labelgate::labels::Hook;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::audit::{file_writer, record};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

fn tools() -> Option<(PathBuf, PathBuf, PathBuf)> {
    match (tool("secilc"), tool("semodule"), tool("audit2allow")) {
        (Some(a), Some(b), Some(c)) => Some((a, b, c)),
        _ => {
            let msg =
                "SKIP: needs secilc, semodule and audit2allow (secilc, policycoreutils, policycoreutils-python-utils)";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}; CI must provide them");
            }
            eprintln!("{msg}");
            None
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

/// The lines of the test policy that declare labelgate's class.
fn class_lines(cil: &str) -> Vec<&str> {
    cil.lines().filter(|l| l.starts_with('(') && l.contains("labelgate_flow")).collect()
}

#[test]
fn test_policy_declares_the_class_as_the_module_does() {
    let test = std::fs::read_to_string(format!("{ROOT}/vm/policy/labelgate-test.cil")).unwrap();
    let module = std::fs::read_to_string(format!("{ROOT}/packaging/selinux/labelgate_flow.cil")).unwrap();
    let module_lines = class_lines(&module);
    assert_eq!(module_lines, ["(class labelgate_flow (send recv forward))", "(classorder (unordered labelgate_flow))"]);
    assert_eq!(class_lines(&test), module_lines);
}

#[test]
fn audit2allow_proposes_flow_rules_for_denials_and_nothing_for_grants() {
    let Some((secilc, semodule, audit2allow)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The test policy without its copy of the class, as a base module; the
    // class module on top, the way an administrator installs it.
    let test = std::fs::read_to_string(format!("{ROOT}/vm/policy/labelgate-test.cil")).unwrap();
    let base: String = test.lines().filter(|l| class_lines(l).is_empty()).map(|l| format!("{l}\n")).collect();
    std::fs::write(d.join("base.cil"), base).unwrap();
    std::fs::create_dir_all(d.join("root/etc/selinux/lgtest")).unwrap();
    std::fs::create_dir_all(d.join("root/store")).unwrap();
    let semod = |file: &Path| {
        run(Command::new(&semodule)
            .arg("-p")
            .arg(d.join("root"))
            .args(["-S", "/store", "-s", "lgtest", "-n", "-i"])
            .arg(file)
            .current_dir(d))
    };
    semod(&d.join("base.cil"));
    semod(Path::new(&format!("{ROOT}/packaging/selinux/labelgate_flow.cil")));
    let listed =
        run(Command::new(&semodule).arg("-p").arg(d.join("root")).args(["-S", "/store", "-s", "lgtest", "-l"]));
    assert!(listed.lines().any(|l| l.trim() == "labelgate_flow"), "{listed}");
    let installed = d.join("root/etc/selinux/lgtest/policy/policy.33");
    // The VM's test policy, compiled as vm/e2e.sh does (it declares the
    // class itself).
    let vm = d.join("vm.33");
    run(Command::new(&secilc)
        .args(["-M", "true", "-c", "33", "-o"])
        .arg(&vm)
        .args(["-f", "/dev/null"])
        .arg(format!("{ROOT}/vm/policy/labelgate-test.cil")));

    // Records as the writer writes them: two denials, two grants.
    let audit = d.join("audit.log");
    let (sink, writer, c) = file_writer(&audit, 100);
    sink.submit(record(Outcome::Denied, Hook::Output, "httpd_t", "postgresql_t", "db-port-others"));
    sink.submit(record(Outcome::Denied, Hook::Forward, "intruder_t", "httpd_t", "no-forward"));
    sink.submit(record(Outcome::Granted, Hook::Input, "postgresql_t", "unconfined_t", "audited-grant"));
    sink.submit(record(Outcome::Granted, Hook::Output, "unconfined_t", "postgresql_t", "audited-grant"));
    writer.finish();
    drop(sink);
    assert_eq!(Counters::get(&c.audit_written), 4);
    let text = std::fs::read_to_string(&audit).unwrap();

    for policy in [&installed, &vm] {
        let out = run(Command::new(&audit2allow).arg("-i").arg(&audit).arg("-p").arg(policy));
        assert!(out.contains("allow httpd_t postgresql_t:labelgate_flow send;"), "{policy:?}:\n{out}\n{text}");
        assert!(out.contains("allow intruder_t httpd_t:labelgate_flow forward;"), "{policy:?}:\n{out}\n{text}");
        let rules: Vec<&str> = out.lines().filter(|l| l.starts_with("allow ")).collect();
        assert_eq!(rules.len(), 2, "a rule per denial, none for the grants:\n{out}");
        assert!(!out.contains(":packet"), "{out}");

        // audit2allow -w explains the denials, and takes no grant for one.
        let why = run(Command::new(&audit2allow).arg("-w").arg("-i").arg(&audit).arg("-p").arg(policy));
        assert_eq!(why.matches("Was caused by:").count(), 2, "{why}");
        assert_eq!(why.matches("Missing type enforcement (TE) allow rule").count(), 2, "{why}");
        assert!(!why.contains("granted") && !why.contains("audited-grant"), "{why}");
    }
}
