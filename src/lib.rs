//! labelgate: filter network packets by SELinux security context from user space.
//!
//! The crate is a library with a thin binary (`src/main.rs`). One packet's
//! path through the modules is described in `docs/ARCHITECTURE.md`:
//! [`sys::nfqueue`] reads it, [`engine`] parses it ([`packet`]), labels it
//! ([`labels`]), decides ([`policy`]), counts ([`counters`]) and audits it
//! ([`audit`]); [`runtime`] sends the verdict.
//!
//! Packet bytes, kernel answers, policy and audit files are untrusted input:
//! outside tests the library may not `unwrap`, `expect` or index unchecked
//! (each remaining case carries an `allow` with the reason it cannot fail).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

pub mod app;
pub mod audit;
pub mod auditlog;
pub mod cli;
pub mod confine;
pub mod context;
pub mod counters;
pub mod engine;
pub mod explain;
pub mod flowwatch;
pub mod labels;
pub mod lint;
pub mod metrics;
pub mod mls;
pub mod notify;
pub mod offload;
pub mod packet;
pub mod policy;
pub mod resolve;
pub mod rules;
pub mod runtime;
pub mod sepolicy;
pub mod sys;
