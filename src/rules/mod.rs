//! Generation, installation and removal of the firewall rules that divert
//! packets to labelgate's queues, for iptables and nftables.
//!
//! labelgate only ever touches its own chains (iptables: `LABELGATE_*` in the
//! `security` table for INPUT, OUTPUT and FORWARD and in the `mangle` table
//! for PREROUTING and POSTROUTING, jumped to from the built-in chains) or
//! its own table (nftables: `inet labelgate`); other rules are left as they
//! are.
//!
//! The parts import one way: [`spec`](RuleSpec) (what is queued) uses none
//! of the others; `iptables` and `nft` render a spec; `apply` installs and
//! removes the rendered rules. This module only re-exports them.

mod apply;
mod iptables;
mod nft;
mod spec;

pub use apply::{install, remove, RulesError};
pub use iptables::{iptables_restore, iptables_script};
pub use nft::nft_install;
pub use spec::{
    Backend, Chain, Family, Match, RuleSpec, ScopeSource, FLOW_CONNMARK_MASK, FLOW_MARK_ACCEPT, FLOW_MARK_MASK,
    FLOW_MARK_SETTLED, MAX_MATCHES,
};

#[cfg(test)]
mod tests;
