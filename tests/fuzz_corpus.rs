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

// Later targets (see the note at the end of fuzz/src/checks.rs):
// #[test] fn peer_option_corpus() { replay("peer_option", checks::peer_option); }
// #[test] fn audit_log_corpus() { replay("audit_log", checks::audit_log); }
