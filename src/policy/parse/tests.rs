use super::error::MAX_MESSAGE;
use super::*;
use std::time::{Duration, Instant};

fn load_err(path: &std::path::Path) -> String {
    match crate::policy::Policy::load(path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => format!("{:#}", anyhow::Error::new(e)),
    }
}

#[test]
fn a_fifo_or_a_device_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("policy.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let t = Instant::now();
    let e = load_err(&fifo);
    assert!(e.contains("a FIFO: a policy must be a regular file"), "{e}");
    let e = load_err(std::path::Path::new("/dev/zero"));
    assert!(e.contains("/dev/zero: a character device"), "{e}");
    let e = load_err(dir.path());
    assert!(e.contains("a directory"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    // The same call reads a regular file (so the refusals above are not a broken loader).
    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, "default = \"accept\"\n").unwrap();
    assert!(crate::policy::Policy::load(&ok).is_ok());
}

#[test]
fn a_file_over_the_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(MAX_POLICY_BYTES + 1).unwrap();
    let e = load_err(&big);
    assert!(e.contains("longer than 64 MiB"), "{e}");
    f.set_len(1000).unwrap();
    // 1000 NUL bytes: read and refused as TOML, not as too long.
    assert!(!load_err(&big).contains("longer than"));
}

#[test]
fn a_missing_file_names_the_os_error_once() {
    let e = load_err(std::path::Path::new("/nonexistent/labelgate.toml"));
    assert_eq!(e, "/nonexistent/labelgate.toml: No such file or directory (os error 2)");
}

#[test]
fn a_huge_value_comes_back_as_a_bounded_excerpt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    let huge = "x".repeat(1 << 20);
    for text in [
        format!("default = \"{huge}\"\n"),
        format!("[[rule]]\nname = \"r\"\nverdict = \"drop\"\nproto = \"{huge}\"\n"),
        format!("[[rule]]\nname = \"r\"\nverdict = \"drop\"\nsource = \"{huge}:b:c\"\n"),
        format!("[sets]\nweb = [\"{huge}\"]\n"),
        format!("[[rule]]\nname = \"r\"\nverdict = \"drop\"\nuid = \"{huge}\"\n"),
    ] {
        std::fs::write(&path, &text).unwrap();
        let e = load_err(&path);
        assert!(e.len() < 1024, "{} bytes: {}", e.len(), excerpt(&e));
        assert!(e.contains("bytes cut"), "{e}");
        let e = compile(&text, "t").err().unwrap().to_string();
        assert!(e.len() < 1024, "{} bytes", e.len());
    }
    // The end of the message (what was expected) survives the cut.
    std::fs::write(&path, format!("default = \"{huge}\"\n")).unwrap();
    assert!(load_err(&path).contains("accept"), "{}", load_err(&path));
}

#[test]
fn excerpts_keep_short_messages_and_char_boundaries() {
    assert_eq!(excerpt("short"), "short");
    let s = "é".repeat(2000);
    let e = excerpt(&s);
    assert!(e.len() <= MAX_MESSAGE + 64 && e.contains("bytes cut"), "{e}");
}

#[test]
fn rule_names_are_bounded() {
    let rule = |n: &str| format!("[[rule]]\nname = \"{n}\"\nverdict = \"drop\"\n");
    assert!(compile(&rule(&"a".repeat(MAX_RULE_NAME)), "t").is_ok());
    let e = compile(&rule(&"a".repeat(MAX_RULE_NAME + 1)), "t").err().unwrap().to_string();
    assert!(e.contains("rule name is 256 bytes long; the longest allowed is 255"), "{e}");
    let e = compile(&rule(&"a".repeat(1 << 20)), "t").err().unwrap().to_string();
    assert!(e.len() < 1024, "{e}");
}

#[test]
fn ids_are_numbers_or_names() {
    assert_eq!(resolve_id("48", false), Ok(48));
    assert_eq!(resolve_id("root", false), Ok(0));
    assert_eq!(resolve_id("root", true), Ok(0));
    assert!(resolve_id("no-such-user-here", false).unwrap_err().to_string().contains("unknown user"));
    // A name no account can have never reaches NSS (systemd's userdb aborts on very long ones).
    assert!(resolve_id(&"u".repeat(1 << 20), false).unwrap_err().to_string().starts_with("bad user name"));
    assert!(resolve_id("a b", true).unwrap_err().to_string().starts_with("bad group name"));
}
