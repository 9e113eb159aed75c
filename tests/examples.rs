//! Every policy in `examples/` compiles: `labelgate check` (the built
//! binary) exits 0 on each. The docs point administrators at these files,
//! so a key renamed or a rule broken there must fail the tests. The
//! `check` and `rules` outputs docs/CONTAINERS.md shows are compared with
//! what the binary prints. Needs no root and no kernel feature.

use std::path::Path;
use std::process::Command;

const LABELGATE: &str = env!("CARGO_BIN_EXE_labelgate");

#[test]
fn every_example_policy_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    // The examples the README and docs name: a missing one fails too.
    for name in ["article.toml", "containers.toml", "mls.toml", "staged-rollout.toml", "uid-owner.toml"] {
        assert!(files.contains(&dir.join(name)), "examples/{name} is missing (found {files:?})");
    }
    let mut failed = Vec::new();
    for f in &files {
        let out = Command::new(LABELGATE).arg("check").arg(f).output().expect("run labelgate check");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            failed.push(format!("{}: {}\n{text}", f.display(), out.status));
        } else {
            assert!(text.contains("OK"), "{}: check passed without its OK line:\n{text}", f.display());
        }
    }
    assert!(failed.is_empty(), "example policies that do not compile:\n{}", failed.join("\n"));
}

/// The block of `doc` after the line `$ COMMAND`, up to its closing fence.
fn shown_output<'a>(doc: &'a str, command: &str) -> &'a str {
    let start =
        doc.find(&format!("$ {command}\n")).unwrap_or_else(|| panic!("docs/CONTAINERS.md shows no `$ {command}`"));
    let body = &doc[start + command.len() + 3..];
    &body[..body.find("```").expect("closing fence")]
}

/// docs/CONTAINERS.md shows what `check` and `rules` print for
/// examples/containers.toml: it must be what they print (the line about
/// the loaded SELinux policy aside, which depends on the host).
#[test]
fn container_walkthrough_shows_what_the_commands_print() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(Path::new(root).join("docs/CONTAINERS.md")).expect("read docs/CONTAINERS.md");
    for command in
        ["labelgate check examples/containers.toml", "labelgate rules --policy examples/containers.toml --family ipv4"]
    {
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let out = Command::new(LABELGATE).args(&args).current_dir(root).output().expect("run labelgate");
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let host_line = |l: &&str| !l.starts_with("SELinux is not active") && !l.starts_with("all types are known");
        let printed: Vec<&str> = printed.lines().filter(host_line).collect();
        let shown: Vec<&str> = shown_output(&doc, command).lines().filter(host_line).collect();
        assert_eq!(shown, printed, "docs/CONTAINERS.md shows other output for `{command}`");
    }
}
