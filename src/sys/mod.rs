//! The one place with `unsafe`: thin, checked wrappers over the libc calls
//! labelgate needs, and the raw NFQUEUE netlink protocol ([`nfqueue`]).
//!
//! Each call is wrapped once, with a SAFETY comment; callers get safe
//! functions returning `io::Result`.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

pub mod nfqueue;

fn sock_opt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given; the
    // kernel validates `fd` and returns EBADF/ENOTSOCK for anything else.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut v as *mut libc::c_int).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Raise the socket receive buffer past `rmem_max` (needs CAP_NET_ADMIN);
/// falls back to SO_RCVBUF. Returns the size the kernel reports.
pub fn set_rcvbuf(fd: RawFd, bytes: usize) -> io::Result<usize> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `v` is a valid c_int for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(usize::try_from(sock_opt_int(fd, libc::SO_RCVBUF)?).unwrap_or(0));
        }
    }
    Err(io::Error::last_os_error())
}

/// Wait up to `timeout_ms` for `fd` to become readable.
pub fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one valid pollfd and the count passed is 1.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(rc > 0 && p.revents & (libc::POLLIN | libc::POLLERR) != 0)
}

/// A NETLINK_AUDIT socket for sending user-space AVC records to the
/// kernel's audit subsystem (needs CAP_AUDIT_WRITE).
pub struct KernelAudit {
    fd: std::os::fd::OwnedFd,
}

/// AUDIT_USER_AVC from linux/audit.h.
const AUDIT_USER_AVC: u16 = 1107;

impl KernelAudit {
    pub fn open() -> io::Result<KernelAudit> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2) call; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_AUDIT) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(KernelAudit { fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) } })
    }

    /// Send one AUDIT_USER_AVC message; the kernel adds pid, uid, auid, ses
    /// and subj itself and wraps `text` as `msg='...'`.
    pub fn send_user_avc(&self, text: &str) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let body = text.as_bytes();
        let len = 16 + body.len() + 1;
        let mut msg = Vec::with_capacity((len + 3) & !3);
        msg.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        msg.extend_from_slice(&AUDIT_USER_AVC.to_ne_bytes());
        msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        msg.push(0);
        msg.resize((len + 3) & !3, 0);
        // SAFETY: `addr` is a zeroed sockaddr_nl addressed to the kernel and
        // `msg` is a valid buffer of the given length.
        let rc = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Set no_new_privs: no exec can gain privileges from now on.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Interface index to name, with a cache (per thread that owns it).
#[derive(Default)]
pub struct IfNames(HashMap<u32, Option<String>>);

impl IfNames {
    pub fn name(&mut self, index: u32) -> Option<String> {
        if index == 0 {
            return None;
        }
        self.0.entry(index).or_insert_with(|| if_name(index)).clone()
    }
}

fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the kernel wrote a NUL-terminated name into `buf`.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_a_name() {
        let mut n = IfNames::default();
        assert_eq!(n.name(1).as_deref(), Some("lo"));
        assert_eq!(n.name(0), None);
        assert_eq!(n.name(999_999), None);
    }
}
