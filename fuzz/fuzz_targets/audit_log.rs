#![no_main]
//! cargo fuzz run audit_log: see fuzz/README.md; the checks are in fuzz/src/checks.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| labelgate_fuzz::audit_log(data));
