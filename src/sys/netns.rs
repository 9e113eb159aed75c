//! Sockets inside other network namespaces: a netlink socket is bound for
//! its whole life to the network namespace of the thread that created it,
//! so [`in_netns`] runs the creation in a short-lived thread that first
//! joins the namespace (`setns(CLONE_NEWNET)`) and then exits; the socket
//! it made stays bound to that namespace and is used from any thread.
//! Also lists a namespace's addresses (`getifaddrs`, an RTM_GETADDR dump,
//! run in such a thread).
//!
//! `setns` into a network namespace needs CAP_SYS_ADMIN.

use super::sockdiag::DiagLink;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Move the calling thread into the network namespace `ns` (an fd of
/// `/proc/PID/ns/net`).
fn enter(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns(2) only reads the descriptor number; the kernel checks
    // that it names a network namespace (EINVAL otherwise). It changes the
    // calling thread only, which is a dedicated thread that exits after.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Run `f` in a new thread that has joined the network namespace `ns`;
/// the thread exits when `f` returns, so no other code runs in it.
pub fn in_netns<T: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new().name("lg-netns".into()).spawn_scoped(s, || {
            enter(ns)?;
            f()
        })?;
        worker.join().unwrap_or_else(|_| Err(io::Error::other("netns worker thread panicked")))
    })
}

/// A NETLINK_SOCK_DIAG socket inside the network namespace `ns`.
pub fn diag_link_in(ns: impl AsFd) -> io::Result<DiagLink> {
    in_netns(ns.as_fd(), DiagLink::open)
}

/// The addresses of each namespace in `nss` (loopback addresses left out),
/// listed in one thread that joins them in turn; one answer per namespace.
pub fn addrs_in(nss: &[BorrowedFd<'_>]) -> Vec<io::Result<Vec<IpAddr>>> {
    let listed = in_netns_each(nss, || {
        let all = if_addrs::get_if_addrs()?;
        Ok(all.into_iter().map(|i| i.ip()).filter(|ip| !ip.is_loopback()).collect())
    });
    listed.unwrap_or_else(|e| nss.iter().map(|_| Err(io::Error::new(e.kind(), e.to_string()))).collect())
}

/// `f` run once in each namespace of `nss`, in one dedicated thread.
fn in_netns_each<T: Send>(
    nss: &[BorrowedFd<'_>],
    f: impl Fn() -> io::Result<T> + Send + Sync,
) -> io::Result<Vec<io::Result<T>>> {
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("lg-netns".into())
            .spawn_scoped(s, || nss.iter().map(|ns| enter(*ns).and_then(|()| f())).collect::<Vec<_>>())?;
        worker.join().map_err(|_| io::Error::other("netns worker thread panicked"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own namespace, joined from a worker thread: a sock_diag socket
    /// opens there, and the address list has no loopback address.
    #[test]
    fn own_namespace_round_trip() {
        let f = std::fs::File::open("/proc/self/ns/net").unwrap();
        match diag_link_in(&f) {
            Ok(_) => {}
            // Not root: setns needs CAP_SYS_ADMIN.
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
                return;
            }
        }
        let got = addrs_in(&[f.as_fd()]);
        assert_eq!(got.len(), 1);
        assert!(got[0].as_ref().unwrap().iter().all(|ip| !ip.is_loopback()));
        // Not a namespace fd: refused, no panic.
        let not_ns = std::fs::File::open("/proc/self/status").unwrap();
        assert!(diag_link_in(&not_ns).is_err());
    }
}
