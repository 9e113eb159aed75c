//! Conntrack netlink (`NFNL_SUBSYS_CTNETLINK`), the one request labelgate
//! makes: delete the connection-tracking entry of one tuple
//! (`IPCTNL_MSG_CT_DELETE` with `CTA_TUPLE_ORIG` or `CTA_TUPLE_REPLY`), so
//! that the next packet of that flow is `NEW` again and goes to the queue.
//!
//! Building the request and reading the kernel's acknowledgement are safe
//! code over byte slices; the socket calls are the `sys` wrappers. The
//! kernel loads `nf_conntrack_netlink` on the first request if it can
//! (`nfnetlink-subsys-1`); without it every delete fails with an error.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE`.
const CT_DELETE: u16 = (1 << 8) | 2;
const NLA_F_NESTED: u16 = 0x8000;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// Largest request: headers, two nests and two 16-byte addresses.
const MAX_REQ: usize = 128;
/// Bytes kept of one answer (an error message quotes the request).
const RX_SLOT: usize = 512;

/// Which direction of the entry a tuple names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The tuple of the entry's first packet (`CTA_TUPLE_ORIG`).
    Original,
    /// The tuple replies carry (`CTA_TUPLE_REPLY`).
    Reply,
}

/// A conntrack tuple: protocol and both ends, one address family (checked
/// by [`CtTuple::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtTuple {
    proto: u8,
    src: SocketAddr,
    dst: SocketAddr,
}

impl CtTuple {
    /// `None` when `src` and `dst` are of different address families.
    pub fn new(proto: u8, src: SocketAddr, dst: SocketAddr) -> Option<CtTuple> {
        (src.is_ipv4() == dst.is_ipv4()).then_some(CtTuple { proto, src, dst })
    }

    /// A UDP tuple; an IPv4 end with an IPv6 one makes both IPv6 (the
    /// IPv4 one v4-mapped), never a mixed tuple.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> CtTuple {
        let v6 = |a: SocketAddr| match a.ip() {
            IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
            IpAddr::V6(_) => a,
        };
        let (src, dst) = if src.is_ipv4() == dst.is_ipv4() { (src, dst) } else { (v6(src), v6(dst)) };
        CtTuple { proto: libc::IPPROTO_UDP as u8, src, dst }
    }

    /// The same flow seen from the other end.
    pub fn reversed(&self) -> CtTuple {
        CtTuple { proto: self.proto, src: self.dst, dst: self.src }
    }
}

/// One NETLINK_NETFILTER socket for conntrack requests (needs CAP_NET_ADMIN).
pub struct CtLink {
    fd: OwnedFd,
    seq: u32,
}

impl CtLink {
    /// Open a socket; its answers are waited for at most `timeout`.
    pub fn open(timeout: std::time::Duration) -> io::Result<CtLink> {
        let fd = super::netlink_socket(libc::NETLINK_NETFILTER)?;
        super::set_recv_timeout(fd.as_raw_fd(), timeout)?;
        Ok(CtLink { fd, seq: 0 })
    }

    /// Delete the entry that `tuple` names in direction `dir`: `Ok(true)`
    /// when it was deleted, `Ok(false)` when the kernel has no such entry.
    pub fn delete(&mut self, tuple: &CtTuple, dir: Direction) -> io::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut tx = [0u8; MAX_REQ];
        let n = encode_delete(tuple, dir, seq, &mut tx)?;
        super::send_to_kernel(self.fd.as_raw_fd(), tx.get(..n).unwrap_or_default())?;
        let mut rx = [0u8; RX_SLOT];
        // Answers to earlier requests whose wait timed out may come first:
        // read on until this request's (bounded by the receive timeout).
        for _ in 0..64 {
            let mut lens = [(0usize, false); 1];
            let got = super::recv_many(self.fd.as_raw_fd(), &mut rx, RX_SLOT, 0, &mut lens)?;
            if got == 0 {
                continue;
            }
            let [(len, _)] = lens;
            if let Some(answer) = parse_ack(rx.get(..len).unwrap_or_default(), seq) {
                return answer;
            }
        }
        Err(io::Error::other("ctnetlink: no answer to the delete request"))
    }
}

/// Encode one delete request into `out`: the bytes written.
fn encode_delete(t: &CtTuple, dir: Direction, seq: u32, out: &mut [u8]) -> io::Result<usize> {
    let mut w = Writer { buf: out, len: 0 };
    let family = if t.src.is_ipv4() { libc::AF_INET as u8 } else { libc::AF_INET6 as u8 };
    // nlmsghdr: length (patched below), type, flags, seq, pid 0.
    w.put(&[0; 4])?;
    w.put(&CT_DELETE.to_ne_bytes())?;
    w.put(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes())?;
    w.put(&seq.to_ne_bytes())?;
    w.put(&0u32.to_ne_bytes())?;
    // nfgenmsg: family, NFNETLINK_V0, res_id 0.
    w.put(&[family, 0, 0, 0])?;
    let which = match dir {
        Direction::Original => CTA_TUPLE_ORIG,
        Direction::Reply => CTA_TUPLE_REPLY,
    };
    let tuple = w.open(which)?;
    let ip = w.open(CTA_TUPLE_IP)?;
    match (t.src.ip(), t.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            w.attr(CTA_IP_V4_SRC, &s.octets())?;
            w.attr(CTA_IP_V4_DST, &d.octets())?;
        }
        (s, d) => {
            w.attr(CTA_IP_V6_SRC, &v6(s))?;
            w.attr(CTA_IP_V6_DST, &v6(d))?;
        }
    }
    w.close(ip)?;
    let proto = w.open(CTA_TUPLE_PROTO)?;
    w.attr(CTA_PROTO_NUM, &[t.proto])?;
    w.attr(CTA_PROTO_SRC_PORT, &t.src.port().to_be_bytes())?;
    w.attr(CTA_PROTO_DST_PORT, &t.dst.port().to_be_bytes())?;
    w.close(proto)?;
    w.close(tuple)?;
    let len = w.len;
    w.patch(0, &u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes())?;
    Ok(len)
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Netlink attributes into a fixed buffer; every write is checked.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, v: &[u8]) -> io::Result<()> {
        let end = self.len + v.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or_else(|| io::Error::other("ctnetlink request buffer too small"))?
            .copy_from_slice(v);
        self.len = end;
        Ok(())
    }

    fn patch(&mut self, at: usize, v: &[u8]) -> io::Result<()> {
        self.buf
            .get_mut(at..at + v.len())
            .ok_or_else(|| io::Error::other("ctnetlink request buffer too small"))?
            .copy_from_slice(v);
        Ok(())
    }

    /// One attribute, padded to 4 bytes.
    fn attr(&mut self, ty: u16, v: &[u8]) -> io::Result<()> {
        let len = 4 + v.len();
        self.put(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes())?;
        self.put(&ty.to_ne_bytes())?;
        self.put(v)?;
        let pad = (4 - len % 4) % 4;
        self.put([0; 3].get(..pad).unwrap_or_default())
    }

    /// Start a nested attribute: where its header is.
    fn open(&mut self, ty: u16) -> io::Result<usize> {
        let at = self.len;
        self.put(&[0, 0])?;
        self.put(&(ty | NLA_F_NESTED).to_ne_bytes())?;
        Ok(at)
    }

    fn close(&mut self, at: usize) -> io::Result<()> {
        let len = u16::try_from(self.len - at).unwrap_or(u16::MAX);
        self.patch(at, &len.to_ne_bytes())
    }
}

/// The answer to request `seq` in one received datagram: `None` when it
/// holds none (an answer to another request, or bytes that do not parse).
fn parse_ack(buf: &[u8], seq: u32) -> Option<io::Result<bool>> {
    let m = super::nlmsg::messages(buf).find(|m| m.ty == super::nlmsg::ERROR && m.seq == seq)?;
    Some(match m.errno()? {
        0 => Ok(true),
        libc::ENOENT => Ok(false),
        c => Err(io::Error::from_raw_os_error(c)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_v4_delete_by_original_tuple() {
        let t = CtTuple::new(17, "127.0.0.1:42001".parse().unwrap(), "127.0.0.2:5353".parse().unwrap()).unwrap();
        let mut out = [0u8; MAX_REQ];
        let n = encode_delete(&t, Direction::Original, 9, &mut out).unwrap();
        let expect: Vec<u8> = [
            &(n as u32).to_ne_bytes()[..],
            &CT_DELETE.to_ne_bytes(),
            &5u16.to_ne_bytes(),
            &9u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &[2, 0, 0, 0],
            // CTA_TUPLE_ORIG (nested), 4 + 20 + 28 bytes
            &52u16.to_ne_bytes(),
            &(1u16 | 0x8000).to_ne_bytes(),
            &20u16.to_ne_bytes(),
            &(1u16 | 0x8000).to_ne_bytes(),
            &8u16.to_ne_bytes(),
            &1u16.to_ne_bytes(),
            &[127, 0, 0, 1],
            &8u16.to_ne_bytes(),
            &2u16.to_ne_bytes(),
            &[127, 0, 0, 2],
            &28u16.to_ne_bytes(),
            &(2u16 | 0x8000).to_ne_bytes(),
            &5u16.to_ne_bytes(),
            &1u16.to_ne_bytes(),
            &[17, 0, 0, 0],
            &6u16.to_ne_bytes(),
            &2u16.to_ne_bytes(),
            &42001u16.to_be_bytes(),
            &[0, 0],
            &6u16.to_ne_bytes(),
            &3u16.to_ne_bytes(),
            &5353u16.to_be_bytes(),
            &[0, 0],
        ]
        .concat();
        assert_eq!(&out[..n], &expect[..]);
        // The reply direction differs only in the outer attribute's type.
        let mut r = [0u8; MAX_REQ];
        assert_eq!(encode_delete(&t, Direction::Reply, 9, &mut r).unwrap(), n);
        assert_eq!(u16::from_ne_bytes([r[22], r[23]]), 2 | 0x8000);
        // v6: 16-byte addresses; too small a buffer is an error.
        let t6 = CtTuple::new(17, "[::1]:1".parse().unwrap(), "[::1]:2".parse().unwrap()).unwrap();
        let n6 = encode_delete(&t6, Direction::Original, 1, &mut out).unwrap();
        assert_eq!(n6, n + 24);
        assert!(encode_delete(&t6, Direction::Original, 1, &mut out[..40]).is_err());
        assert_eq!(CtTuple::new(17, t.src, t6.dst), None);
        assert_eq!(t.reversed().reversed(), t);
    }

    use crate::sys::test_nlmsg_error as error;

    #[test]
    fn reads_acks_by_sequence() {
        assert!(matches!(parse_ack(&error(3, 0), 3), Some(Ok(true))));
        assert!(matches!(parse_ack(&error(3, -libc::ENOENT), 3), Some(Ok(false))));
        assert_eq!(parse_ack(&error(3, -libc::EPERM), 3).unwrap().unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert!(parse_ack(&error(2, 0), 3).is_none(), "another request's answer");
        let two = [error(2, 0), error(3, -libc::ENOENT)].concat();
        assert!(matches!(parse_ack(&two, 3), Some(Ok(false))));
        assert!(parse_ack(&error(3, 0)[..10], 3).is_none());
    }

    proptest::proptest! {
        #[test]
        fn ack_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), seq: u32) {
            let _ = parse_ack(&bytes, seq);
        }
    }
}
