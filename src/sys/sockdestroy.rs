//! sock_diag socket-destroy notifications: a NETLINK_SOCK_DIAG socket that
//! joins the multicast groups `SKNLGRP_INET_UDP_DESTROY` and
//! `SKNLGRP_INET6_UDP_DESTROY` (CAP_NET_ADMIN), on which the kernel sends one
//! `SOCK_DIAG_BY_FAMILY` message (an `inet_diag_msg`) for every UDP socket
//! of the network namespace as it is freed.
//!
//! The kernel sends them from a work queue (`sock_diag_broadcast_destroy`
//! defers the free of the socket to `broadcast_wq`), so a notification
//! comes a little after the socket's port was released by `close()`; see
//! `flowwatch` for what that leaves open. Parsing is safe code over bytes
//! (the messages walked by `nlmsg`); the socket calls are the `sys`
//! wrappers.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use super::nlmsg::{messages, u32_ne};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_msg` (the fixed part of a notification).
const MSG_LEN: usize = 72;
/// `enum sknetlink_groups` in `linux/sock_diag.h`.
const SKNLGRP_INET_UDP_DESTROY: u32 = 2;
const SKNLGRP_INET6_UDP_DESTROY: u32 = 4;
/// Bytes kept of one notification (the fixed part and its attributes).
const RX_SLOT: usize = 1024;

/// A UDP socket that was destroyed: its local and remote ends as the
/// kernel held them last, and its cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destroyed {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub cookie: u64,
}

/// What one receive gave.
#[derive(Debug)]
pub enum Received {
    /// Notifications (possibly none: the wait timed out).
    Sockets(Vec<Destroyed>),
    /// The socket's buffer overflowed (`ENOBUFS`): notifications were lost.
    Overrun,
}

/// The listening socket.
pub struct DestroyListener {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl DestroyListener {
    /// Open, join both UDP groups, ask for a receive buffer of `rcvbuf`
    /// bytes, and bound each wait to `timeout`.
    pub fn open(rcvbuf: usize, timeout: std::time::Duration) -> io::Result<DestroyListener> {
        let fd = super::netlink_socket(libc::NETLINK_SOCK_DIAG)?;
        for group in [SKNLGRP_INET_UDP_DESTROY, SKNLGRP_INET6_UDP_DESTROY] {
            super::join_netlink_group(fd.as_raw_fd(), group)?;
        }
        // A smaller buffer than asked only makes an overrun likelier, which
        // is handled; not an error.
        let _ = super::set_rcvbuf(fd.as_raw_fd(), rcvbuf);
        super::set_recv_timeout(fd.as_raw_fd(), timeout)?;
        Ok(DestroyListener { fd, buf: vec![0u8; RX_SLOT * super::MAX_RECV_SLOTS] })
    }

    /// Wait (at most the timeout) for notifications and read what is there.
    pub fn recv(&mut self) -> io::Result<Received> {
        let mut out = Vec::new();
        let whole = super::recv_notifications(self.fd.as_raw_fd(), &mut self.buf, RX_SLOT, |d| {
            out.extend(parse_destroyed(d));
        })?;
        Ok(if whole { Received::Sockets(out) } else { Received::Overrun })
    }
}

fn u16_be(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn addr(family: u8, b: &[u8]) -> Option<IpAddr> {
    if i32::from(family) == libc::AF_INET {
        let v: [u8; 4] = b.get(..4)?.try_into().ok()?;
        Some(IpAddr::from(v))
    } else {
        let v: [u8; 16] = b.get(..16)?.try_into().ok()?;
        Some(IpAddr::from(v))
    }
}

/// The notifications in one datagram; messages of other types and anything
/// malformed are skipped, never a panic.
pub fn parse_destroyed(buf: &[u8]) -> Vec<Destroyed> {
    messages(buf).filter(|m| m.ty == SOCK_DIAG_BY_FAMILY).filter_map(|m| parse_msg(m.body())).collect()
}

/// `inet_diag_msg`: family at 0; `inet_diag_sockid` at 4: sport, dport
/// (big-endian), src and dst (16 bytes each), interface, cookie.
fn parse_msg(b: &[u8]) -> Option<Destroyed> {
    if b.len() < MSG_LEN {
        return None;
    }
    let family = *b.first()?;
    if i32::from(family) != libc::AF_INET && i32::from(family) != libc::AF_INET6 {
        return None;
    }
    Some(Destroyed {
        sport: u16_be(b, 4)?,
        dport: u16_be(b, 6)?,
        src: addr(family, b.get(8..24)?)?,
        dst: addr(family, b.get(24..40)?)?,
        cookie: u64::from(u32_ne(b, 44)?) | (u64::from(u32_ne(b, 48)?) << 32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::nlmsg::HDRLEN as NLMSG_HDRLEN;

    fn note(family: u8, sport: u16, src: &[u8], cookie: u64) -> Vec<u8> {
        let len = NLMSG_HDRLEN + MSG_LEN + 8;
        let mut m = vec![0u8; len];
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let b = &mut m[NLMSG_HDRLEN..];
        b[0] = family;
        b[4..6].copy_from_slice(&sport.to_be_bytes());
        b[6..8].copy_from_slice(&53u16.to_be_bytes());
        b[8..8 + src.len()].copy_from_slice(src);
        b[44..48].copy_from_slice(&(cookie as u32).to_ne_bytes());
        b[48..52].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        m
    }

    #[test]
    fn parses_notifications_of_both_families() {
        let mut buf = note(libc::AF_INET as u8, 42001, &[127, 0, 0, 1], 0x1_0000_0002);
        buf.extend(note(libc::AF_INET6 as u8, 5353, &[0; 16], 7));
        buf.extend(note(99, 1, &[], 1));
        let got = parse_destroyed(&buf);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].src, got[0].sport, got[0].dport), ("127.0.0.1".parse().unwrap(), 42001, 53));
        assert_eq!(got[0].cookie, 0x1_0000_0002);
        assert_eq!((got[1].src, got[1].sport), ("::".parse().unwrap(), 5353));
        // A cut message yields nothing, and the rest of the buffer is not misread.
        assert!(parse_destroyed(&buf[..NLMSG_HDRLEN + 20]).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let got = parse_destroyed(&bytes);
            proptest::prop_assert!(got.len() <= bytes.len() / (NLMSG_HDRLEN + MSG_LEN));
        }
    }
}
