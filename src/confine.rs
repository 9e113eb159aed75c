//! Least privilege for `labelgate run`: keep only the capabilities the
//! daemon needs and set no_new_privs.
//!
//! Capabilities are per thread and inherited by threads created later, so
//! [`apply`] must run before the daemon starts any thread.
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
    keep
}

/// Whether this thread may bind NFQUEUE (CAP_NET_ADMIN is effective).
pub fn has_net_admin() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap_or(false)
}

/// Drop capabilities and set no_new_privs. Call before starting any thread.
pub fn apply(needs: &Needs) -> Result<Report, ConfineError> {
    let keep = kept(needs);
    // The bounding set first (dropping from it needs CAP_SETPCAP, which goes next).
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let have = caps::read(None, CapSet::Permitted)?;
    let keep: HashSet<Capability> = keep.intersection(&have).copied().collect();
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    crate::sys::set_no_new_privs().map_err(ConfineError::NoNewPrivs)?;

    let mut kept: Vec<Capability> = keep.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(Report { kept })
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
        let k = kept(&Needs { audit_write: true, low_port: true, audit_file: false });
        assert!(k.contains(&Capability::CAP_AUDIT_WRITE) && k.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(!k.contains(&Capability::CAP_DAC_OVERRIDE));
        let k = kept(&Needs { audit_file: true, ..Needs::default() });
        assert!(k.contains(&Capability::CAP_DAC_OVERRIDE) && k.len() == 4);
    }
}
