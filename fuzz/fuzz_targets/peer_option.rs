#![no_main]
//! cargo fuzz run peer_option: see fuzz/README.md; the checks are in fuzz/src/checks.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| labelgate_fuzz::peer_option(data));
