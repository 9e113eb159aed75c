//! Replays the committed fuzz inputs on every `cargo test` (stable toolchain,
//! no fuzzer needed): each file under `fuzz/corpus/<target>/`,
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` goes through the
//! same parser and invariant checks as the cargo-fuzz target of that name
//! (`fuzz/src/checks.rs`, included here by path). See `fuzz/README.md`.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> =
        entries.map(|e| e.expect("readable fuzz directory").path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

/// Runs `check` on every input of `target`; fails listing each input that panicked.
fn replay(target: &str, check: fn(&[u8])) {
    replay_with_known_bugs(target, check, None);
}

/// Regression file names of known open bugs, and the strict check that still
/// fails on them.
type KnownBugs<'a> = (&'a [&'a str], fn(&[u8]));

/// [`replay`], where the regressions named in `known` (file name and the
/// strict check that still fails on it) are known open bugs: each must still
/// fail the strict check (else the bug is fixed and its entry is to be
/// removed) and pass `check`, which leaves the buggy case out.
fn replay_with_known_bugs(target: &str, check: fn(&[u8]), known: Option<KnownBugs>) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = files(&fuzz.join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty: the committed corpus is missing");
    let seeds = files(&fuzz.join("seeds").join(target));
    assert!(!seeds.is_empty(), "fuzz/seeds/{target}/ is empty");
    let regressions = files(&fuzz.join("regressions").join(target));
    let mut failed = Vec::new();
    let all = corpus.iter().chain(&seeds).chain(&regressions);
    let mut count = 0;
    for path in all {
        let data = std::fs::read(path).expect("readable fuzz input");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
        count += 1;
    }
    if let Some((names, strict)) = known {
        for name in names {
            let path = fuzz.join("regressions").join(target).join(name);
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("known bug input {}: {e}", path.display()));
            if catch_unwind(AssertUnwindSafe(|| strict(&data))).is_ok() {
                failed.push(format!("{} passes now: the bug is fixed, remove it from KNOWN_OPEN_BUGS", path.display()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {count} {target} inputs failed (panic messages above):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn packet_corpus() {
    replay("packet", checks::packet);
}

#[test]
fn nfqueue_msg_corpus() {
    replay("nfqueue_msg", checks::nfqueue_msg);
}

#[test]
fn context_corpus() {
    replay("context", checks::context);
}

#[test]
fn policy_corpus() {
    replay("policy", checks::policy);
}

#[test]
fn peer_option_corpus() {
    replay("peer_option", checks::peer_option);
}

#[test]
fn audit_log_corpus() {
    let known: Vec<&str> = checks::KNOWN_OPEN_BUGS.iter().map(|(file, _)| *file).collect();
    replay_with_known_bugs("audit_log", checks::audit_log, Some((&known, checks::audit_log_strict)));
}
