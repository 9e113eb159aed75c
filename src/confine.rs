//! Least privilege for `labelgate run`: keep only the capabilities the
//! daemon needs and set no_new_privs.
//!
//! Capabilities are per thread and inherited by threads created later, so
//! [`apply`] must run before the daemon starts any thread.
//!
//! The bounding set is trimmed only when labelgate holds CAP_SETPCAP (run by
//! hand as root). Under its systemd unit it does not: the unit's
//! `CapabilityBoundingSet=` already limits the bounding set, and giving the
//! daemon CAP_SETPCAP only to trim it again would widen what a compromised
//! daemon could do (CAP_SETPCAP also changes securebits). What is left in the
//! bounding set then cannot come back: the permitted and effective sets are
//! cut to what is kept, no_new_privs stops execve from granting more, and
//! [`Report::bounding_left`] names what the caller left there, for the log.
//!
//! Why no Landlock: a Landlock-restricted process may not ptrace-access
//! processes outside its domain, and reading `/proc/PID/fd` of other
//! processes (how labelgate finds which process owns a socket) is exactly
//! such an access; confining labelgate with Landlock would blind it. File
//! access is confined by the systemd unit instead (`ProtectSystem=strict`,
//! `ReadWritePaths=`), and by its SELinux domain where a policy module for it
//! is loaded.

use caps::{CapSet, Capability};
use std::collections::HashSet;

/// What the running daemon still needs.
#[derive(Clone, Debug, Default)]
pub struct Needs {
    /// Send AUDIT_USER_AVC (`--audit-kernel`).
    pub audit_write: bool,
    /// Bind a TCP port below 1024 (`--metrics`).
    pub low_port: bool,
    /// Write an audit file (`--audit FILE`): reopening it after rotation
    /// needs CAP_DAC_OVERRIDE when logrotate creates the new file owned by
    /// another user (`create 0640 otheruser group`).
    pub audit_file: bool,
    /// Enter other network namespaces to look their sockets up
    /// (`--other-netns`): `setns` needs CAP_SYS_ADMIN.
    pub other_netns: bool,
}

/// Why confinement failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("cannot change capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
}

/// What [`apply`] achieved, for the log.
#[derive(Clone, Debug)]
pub struct Report {
    pub kept: Vec<Capability>,
    /// Capabilities left in the bounding set beyond `kept` because labelgate
    /// lacked CAP_SETPCAP to drop them (empty when it could).
    pub bounding_left: Vec<Capability>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "capabilities {:?}; no_new_privs", self.kept)?;
        if !self.bounding_left.is_empty() {
            write!(f, "; bounding set limited by the caller (no CAP_SETPCAP), also holds {:?}", self.bounding_left)?;
        }
        Ok(())
    }
}

/// The capabilities `labelgate run` keeps:
/// CAP_NET_ADMIN (NFQUEUE binding and configuration), CAP_DAC_READ_SEARCH
/// and CAP_SYS_PTRACE (other users' `/proc/PID/fd`, to find socket owners),
/// and on request CAP_AUDIT_WRITE, CAP_NET_BIND_SERVICE and CAP_DAC_OVERRIDE.
pub fn kept(needs: &Needs) -> HashSet<Capability> {
    let mut keep: HashSet<Capability> =
        [Capability::CAP_NET_ADMIN, Capability::CAP_DAC_READ_SEARCH, Capability::CAP_SYS_PTRACE].into();
    if needs.audit_write {
        keep.insert(Capability::CAP_AUDIT_WRITE);
    }
    if needs.low_port {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    if needs.audit_file {
        keep.insert(Capability::CAP_DAC_OVERRIDE);
    }
    if needs.other_netns {
        keep.insert(Capability::CAP_SYS_ADMIN);
    }
    keep
}

/// Whether this thread may bind NFQUEUE (CAP_NET_ADMIN is effective).
pub fn has_net_admin() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap_or(false)
}

/// Drop capabilities and set no_new_privs. Call before starting any thread.
pub fn apply(needs: &Needs) -> Result<Report, ConfineError> {
    let keep = kept(needs);
    // The bounding set first (dropping from it needs CAP_SETPCAP, which goes
    // next); without CAP_SETPCAP the service manager limited it already.
    let can_trim = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)?;
    let mut bounding_left = Vec::new();
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap)? {
            if can_trim {
                caps::drop(None, CapSet::Bounding, cap)?;
            } else {
                bounding_left.push(cap);
            }
        }
    }
    bounding_left.sort_by_key(|c| c.index());
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let have = caps::read(None, CapSet::Permitted)?;
    let keep: HashSet<Capability> = keep.intersection(&have).copied().collect();
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    crate::sys::set_no_new_privs().map_err(ConfineError::NoNewPrivs)?;

    let mut kept: Vec<Capability> = keep.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(Report { kept, bounding_left })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_is_needed() {
        let k = kept(&Needs::default());
        assert_eq!(k.len(), 3);
        assert!(k.contains(&Capability::CAP_NET_ADMIN));
        assert!(!k.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!k.contains(&Capability::CAP_DAC_OVERRIDE));
        let k = kept(&Needs { audit_write: true, low_port: true, audit_file: false, other_netns: false });
        assert!(k.contains(&Capability::CAP_AUDIT_WRITE) && k.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(!k.contains(&Capability::CAP_DAC_OVERRIDE));
        let k = kept(&Needs { audit_file: true, ..Needs::default() });
        assert!(k.contains(&Capability::CAP_DAC_OVERRIDE) && k.len() == 4);
        assert!(!k.contains(&Capability::CAP_SYS_ADMIN));
        let k = kept(&Needs { other_netns: true, ..Needs::default() });
        assert!(k.contains(&Capability::CAP_SYS_ADMIN) && k.len() == 4);
    }
}
