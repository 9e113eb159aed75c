//! libselinux's policy status page (`selinux_status_open`,
//! `selinux_status_updated`): tells when the loaded policy, a boolean or
//! the enforcing mode changed, so cached access decisions are dropped.

use std::io;
use std::sync::Mutex;

/// The process's one status page; libselinux keeps it in globals, so the
/// calls are serialized here.
static STATUS: Mutex<bool> = Mutex::new(false);

/// Open the status page (falling back to libselinux's netlink socket when
/// the page cannot be mapped). Idempotent.
pub fn open() -> io::Result<()> {
    let mut opened = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    if *opened {
        return Ok(());
    }
    // SAFETY: selinux_status_open takes no pointers; it maps
    // /sys/fs/selinux/status or opens a netlink socket and keeps them in
    // libselinux globals, which the STATUS lock serializes.
    let rc = unsafe { selinux_sys::selinux_status_open(1) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    *opened = true;
    Ok(())
}

/// Whether the policy, a boolean or the enforcing mode changed since the
/// last call (the first call after [`open`] answers `false`). An error
/// reading the page counts as a change, so no cached answer outlives it.
pub fn updated() -> bool {
    let opened = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    if !*opened {
        return true;
    }
    // SAFETY: the status page was opened (checked under the lock, which also
    // serializes libselinux's unsynchronized last-sequence global).
    let rc = unsafe { selinux_sys::selinux_status_updated() };
    rc != 0
}
