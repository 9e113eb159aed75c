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
