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
pub mod labels;
pub mod lint;
pub mod metrics;
pub mod mls;
pub mod notify;
pub mod packet;
pub mod policy;
pub mod resolve;
pub mod rules;
pub mod runtime;
pub mod sys;

/// The daemon's resolver factory: one shared [`resolve::SocketResolver`]
/// (sock_diag, /proc, socket labels, peer labels; caches kept across policy
/// reloads), viewed through each policy's peer configuration. Falls back to
/// the NFQUEUE metadata alone if the socket resolver cannot start.
///
/// Call it in the network namespace the daemon serves: its sock_diag sockets
/// belong to the namespace they are opened in.
pub fn resolver_factory() -> engine::ResolverFactory {
    resolver_factory_with(resolve::ResolverConfig::default())
}

/// [`resolver_factory`] with the resolver tuned by `cfg`.
pub fn resolver_factory_with(cfg: resolve::ResolverConfig) -> engine::ResolverFactory {
    use resolve::{PeerConfig, SocketResolver};
    match SocketResolver::new(PeerConfig::default(), cfg) {
        Ok(core) => {
            let core = std::sync::Arc::new(core);
            Box::new(move |p: &policy::Policy| {
                Box::new(core.for_policy(PeerConfig::from_policy(p))) as Box<dyn labels::Resolver>
            })
        }
        Err(e) => {
            log::warn!("socket resolver unavailable ({e}); using NFQUEUE metadata only (secmark, uid, gid)");
            Box::new(|_: &policy::Policy| Box::new(labels::KernelMetaResolver) as Box<dyn labels::Resolver>)
        }
    }
}
