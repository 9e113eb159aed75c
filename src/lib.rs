//! labelgate: filter network packets by SELinux security context from user space.
//!
//! The crate is a library with a thin binary (`src/main.rs`). One packet's
//! path through the modules is described in `docs/ARCHITECTURE.md`:
//! [`sys::nfqueue`] reads it, [`engine`] parses it ([`packet`]), labels it
//! ([`labels`]), decides ([`policy`]), counts ([`counters`]) and audits it
//! ([`audit`]); [`runtime`] sends the verdict.

pub mod app;
pub mod audit;
pub mod auditlog;
pub mod cli;
pub mod context;
pub mod counters;
pub mod engine;
pub mod explain;
pub mod labels;
pub mod lint;
pub mod metrics;
pub mod mls;
pub mod packet;
pub mod policy;
pub mod resolve;
pub mod rules;
pub mod runtime;
pub mod sys;

/// The resolver the daemon uses for a policy.
pub fn resolver_for(_policy: &policy::Policy) -> Box<dyn labels::Resolver> {
    Box::new(labels::KernelMetaResolver)
}
