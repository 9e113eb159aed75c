//! Every policy in `examples/` compiles: `labelgate check` (the built
//! binary) exits 0 on each. The docs point administrators at these files,
//! so a key renamed or a rule broken there must fail the tests. Needs no
//! root and no kernel feature.

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
