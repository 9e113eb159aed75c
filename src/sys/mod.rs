//! The one place with `unsafe`: thin, checked wrappers over the libc calls
//! labelgate needs, and the raw netlink protocols: NFQUEUE ([`nfqueue`]),
//! sock_diag exact lookups ([`sockdiag`]), sockets in other network
//! namespaces ([`netns`]) and socket-destroy notifications
//! ([`sockdestroy`]), and conntrack entry deletion ([`ctnetlink`]), all
//! walking received datagrams with one bounds-checked loop (`nlmsg`).
//!
//! Each call is wrapped once, with a SAFETY comment; callers get safe
//! functions returning `io::Result`.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

pub mod ctnetlink;
pub mod netns;
pub mod nfqueue;
pub mod nftset;
pub(crate) mod nlmsg;
pub mod selinux_status;
pub mod sockdestroy;
pub mod sockdiag;

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

/// Give the allocator's free memory back to the kernel (glibc's
/// `malloc_trim`): loading a large policy leaves megabytes of freed parse
/// buffers that would otherwise stay resident. No-op on other C libraries.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bound a blocking receive on `fd` to `timeout` (`SO_RCVTIMEO`); calls
/// with `MSG_DONTWAIT` are not affected.
pub fn set_recv_timeout(fd: RawFd, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: `tv` is a valid timeval for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    let [ready] = poll_in([fd], timeout_ms)?;
    Ok(ready)
}

/// Wait up to `timeout_ms` for either of two descriptors to become
/// readable; says which are.
pub fn poll_either(a: RawFd, b: RawFd, timeout_ms: i32) -> io::Result<(bool, bool)> {
    let [ra, rb] = poll_in([a, b], timeout_ms)?;
    Ok((ra, rb))
}

/// poll(2) for input on `N` descriptors; an interrupted wait reports
/// nothing ready.
fn poll_in<const N: usize>(fds: [RawFd; N], timeout_ms: i32) -> io::Result<[bool; N]> {
    let mut p = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    // SAFETY: `p` is an array of `N` valid pollfds and `N` is passed as its length.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok([false; N]);
        }
        return Err(e);
    }
    Ok(p.map(|p| rc > 0 && p.revents & (libc::POLLIN | libc::POLLERR) != 0))
}

/// An eventfd(2) used as a wake-up signal between threads: any thread may
/// [`notify`](Self::notify); the owner polls [`fd`](Self::fd) and
/// [`clear`](Self::clear)s it before looking for work. Non-blocking.
pub struct EventFd {
    fd: std::os::fd::OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain eventfd(2) call; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EventFd { fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) } })
    }

    pub fn fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Make the descriptor readable (adds 1 to its counter; never blocks in
    /// practice: the counter would have to reach 2^64 - 2).
    pub fn notify(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: `one` is a valid 8-byte buffer, the size eventfd requires.
        let rc = unsafe { libc::write(self.fd(), one.as_ptr().cast(), one.len()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reset the counter, so the descriptor polls unreadable until the next
    /// `notify`. Returns whether it had been notified.
    pub fn clear(&self) -> io::Result<bool> {
        let mut buf = [0u8; 8];
        // SAFETY: `buf` is valid for writes of 8 bytes, the size eventfd requires.
        let rc = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(false) } else { Err(e) };
        }
        Ok(true)
    }
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
        send_to_kernel(self.fd.as_raw_fd(), &msg)
    }
}

/// A netlink socket of `protocol`, bound to a port id the kernel picks.
pub(crate) fn netlink_socket(protocol: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2) call; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; nl_pid 0 lets the kernel pick.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a valid sockaddr_nl and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Join multicast group `group` of a netlink socket
/// (`NETLINK_ADD_MEMBERSHIP`); the kernel checks the group number and the
/// caller's rights (CAP_NET_ADMIN for the groups labelgate uses).
pub(crate) fn join_netlink_group(fd: RawFd, group: u32) -> io::Result<()> {
    /// `SOL_NETLINK` / `NETLINK_ADD_MEMBERSHIP`.
    const SOL_NETLINK: libc::c_int = 270;
    const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;
    // SAFETY: `group` is a valid u32 for the duration of the call and its
    // size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            (&group as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Most datagrams one [`recv_many`] call reads.
pub(crate) const MAX_RECV_SLOTS: usize = 32;

/// What a multicast netlink listener has: waits (at most the socket's
/// receive timeout) for the first datagram, reads the rest waiting into
/// `buf`'s `slot_len`-byte slots, and hands each datagram to `each`.
/// `Ok(false)`: the socket's buffer overran (`ENOBUFS`), notifications were
/// lost. A timeout or an interruption reads nothing and is not an error.
pub(crate) fn recv_notifications(
    fd: RawFd,
    buf: &mut [u8],
    slot_len: usize,
    mut each: impl FnMut(&[u8]),
) -> io::Result<bool> {
    let mut lens = [(0usize, false); MAX_RECV_SLOTS];
    // MSG_WAITFORONE: return as soon as one datagram is there.
    let got = match recv_many(fd, buf, slot_len, libc::MSG_WAITFORONE, &mut lens) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => 0,
        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(false),
        Err(e) => return Err(e),
    };
    for (slot, &(len, _)) in buf.chunks_exact(slot_len.max(1)).zip(lens.iter().take(got)) {
        each(slot.get(..len).unwrap_or_default());
    }
    Ok(true)
}

/// `recvmmsg(2)` into consecutive `slot_len`-byte slots of `buf`, one
/// datagram per slot, for at most `lens.len()` (and [`MAX_RECV_SLOTS`])
/// datagrams: how many were read. Each one's length (the bytes kept) and
/// whether it was cut at its slot go into `lens`.
pub(crate) fn recv_many(
    fd: RawFd,
    buf: &mut [u8],
    slot_len: usize,
    flags: libc::c_int,
    lens: &mut [(usize, bool)],
) -> io::Result<usize> {
    // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers,
    // zero lengths); the used ones are filled in below.
    let mut iov: [libc::iovec; MAX_RECV_SLOTS] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_RECV_SLOTS] = unsafe { std::mem::zeroed() };
    let mut want = 0;
    let slots = buf.chunks_exact_mut(slot_len.max(1)).take(lens.len());
    for ((slot, v), h) in slots.zip(iov.iter_mut()).zip(hdrs.iter_mut()) {
        v.iov_base = slot.as_mut_ptr().cast();
        v.iov_len = slot.len();
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
        want += 1;
    }
    // SAFETY: `hdrs[..want]` point at `iov[..want]`, each covering a
    // distinct slot of `buf`, all alive for the call; the kernel writes at
    // most `iov_len` bytes to each; no timeout is passed.
    let n = unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), want as libc::c_uint, flags, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (n as usize).min(want);
    for (l, h) in lens.iter_mut().zip(hdrs.iter()).take(n) {
        *l = ((h.msg_len as usize).min(slot_len), h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0);
    }
    Ok(n)
}

/// Send one netlink message to the kernel (destination nl_pid 0).
pub(crate) fn send_to_kernel(fd: RawFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: `addr` is a zeroed sockaddr_nl addressed to the kernel and
    // `msg` is a valid buffer of the given length.
    let rc = unsafe {
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            fd,
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

/// Run the calling thread on `cpu` only.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes within
    // it (it ignores CPU numbers beyond the set's size).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// `readlink(2)` of `path` into `buf`: the length of the target, which is
/// cut at `buf.len()` when longer (the kernel does not NUL-terminate it).
pub fn readlink(path: &std::ffi::CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `path` is NUL-terminated; the kernel writes at most
    // `buf.len()` bytes into `buf`.
    let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A symbolic link opened itself (`O_PATH | O_NOFOLLOW`), read later with
/// `readlinkat(fd, "")`, which walks no path. For a `/proc/PID/fd/N` link the
/// kernel resolves the target at each read: what that process's fd `N` is
/// *now*. A read fails (`ENOENT`) once the fd is closed or the process has
/// exited, also when its pid has since been reused: the link belongs to the
/// process, not to the number.
#[derive(Debug)]
pub struct ProcLink(std::os::fd::OwnedFd);

impl ProcLink {
    /// Open the link at `path` (not what it points to).
    pub fn open(path: &std::ffi::CStr) -> io::Result<ProcLink> {
        use std::os::fd::FromRawFd;
        // SAFETY: `path` is NUL-terminated; the flags ask for a path-only
        // descriptor of the link itself, which the kernel returns or fails.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open(2) and is owned by nothing else.
        Ok(ProcLink(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// The link's target now, as [`readlink`] gives it.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for as long as `self`; the empty
        // path is NUL-terminated; the kernel writes at most `buf.len()`
        // bytes into `buf`.
        let n = unsafe { libc::readlinkat(self.0.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// `getxattr(2)` of attribute `name` of `path` (symlinks followed) into
/// `buf`: the value's length; `ERANGE` when `buf` is too small.
pub fn getxattr(path: &std::ffi::CStr, name: &std::ffi::CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `path` and `name` are NUL-terminated; the kernel writes at
    // most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
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

/// A netlink error (or ack, code 0) message answering request `seq`, as
/// the kernel writes it: for the parsers' tests.
#[cfg(test)]
pub(crate) fn test_nlmsg_error(seq: u32, code: i32) -> Vec<u8> {
    const HDRLEN: usize = 16;
    let len = HDRLEN + 4 + HDRLEN;
    let mut m = vec![0u8; len];
    m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[16..20].copy_from_slice(&code.to_ne_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_wakes_a_poll_until_cleared() {
        let e = EventFd::new().unwrap();
        let other = EventFd::new().unwrap();
        assert_eq!(poll_either(other.fd(), e.fd(), 0).unwrap(), (false, false));
        assert!(!e.clear().unwrap());
        e.notify().unwrap();
        e.notify().unwrap();
        assert_eq!(poll_either(other.fd(), e.fd(), 0).unwrap(), (false, true));
        assert!(poll_readable(e.fd(), 0).unwrap());
        assert!(e.clear().unwrap(), "both notifications are taken by one read");
        assert!(!poll_readable(e.fd(), 0).unwrap());
        // A notification from another thread ends a wait.
        let e = std::sync::Arc::new(e);
        let n = e.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            n.notify().unwrap();
        });
        assert_eq!(poll_either(other.fd(), e.fd(), 5000).unwrap(), (false, true));
        t.join().unwrap();
    }

    #[test]
    fn proc_link_follows_the_fd_and_its_process() {
        use std::os::fd::AsRawFd;
        let read = |l: &ProcLink| {
            let mut b = [0u8; 64];
            l.read(&mut b).map(|n| String::from_utf8_lossy(&b[..n]).into_owned())
        };
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = a.as_raw_fd();
        let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
        let link = ProcLink::open(&path).unwrap();
        let first = read(&link).unwrap();
        assert!(first.starts_with("socket:["), "{first}");
        let mut b = [0u8; 64];
        let n = readlink(&path, &mut b).unwrap();
        assert_eq!(first.as_bytes(), &b[..n], "same answer as readlink");
        // Another file put at the same fd number (dup2 replaces it in place,
        // so no other thread can take the number in between): the link
        // names the new file.
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        nix::unistd::dup2(other.as_raw_fd(), fd).unwrap();
        let second = read(&link).unwrap();
        assert!(second.starts_with("socket:[") && second != first, "{first} then {second}");
        drop(a);
        assert!(ProcLink::open(c"/proc/self/fd/999999").is_err());

        // A link into another process fails once that process has exited.
        let mut child =
            std::process::Command::new("sleep").arg("30").stdin(std::process::Stdio::piped()).spawn().unwrap();
        let path = std::ffi::CString::new(format!("/proc/{}/fd/0", child.id())).unwrap();
        let link = ProcLink::open(&path).unwrap();
        assert!(read(&link).unwrap().starts_with("pipe:["));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(read(&link).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn loopback_has_a_name() {
        let mut n = IfNames::default();
        assert_eq!(n.name(1).as_deref(), Some("lo"));
        assert_eq!(n.name(0), None);
        assert_eq!(n.name(999_999), None);
    }
}
