//! NETLINK_SOCK_DIAG exact lookups, spoken directly: several
//! `SOCK_DIAG_BY_FAMILY` requests in one `sendto`, their replies read with
//! one `recvmmsg`, all on stack buffers.
//!
//! Why not `netlink-packet-sock-diag`: every new connection costs labelgate
//! one or two lookups, and that crate's general parser (every attribute of
//! the reply decoded into boxed, allocated values) was a measured 5% of the
//! CPU spent per connection; an exact lookup needs four fixed fields of
//! `inet_diag_msg` and none of its attributes. Building and parsing are safe
//! code over byte slices; the only `unsafe` is the socket calls.
//!
//! The kernel answers an exact request inside `sendmsg` (one reply message
//! per request, or an error message; `ENOENT` when no socket matches), so
//! every reply is queued when `sendto` returns and the receive never waits.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use super::nlmsg::{u32_ne as u32_at, ERROR as NLMSG_ERROR, HDRLEN as NLMSG_HDRLEN};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` (the fixed part of a reply).
const MSG_LEN: usize = 72;
/// `INET_DIAG_NOCOOKIE`: match any socket cookie.
const NO_COOKIE: u32 = u32::MAX;

/// Most lookups sent in one batch.
pub const MAX_BATCH: usize = 4;
const _: () = assert!(MAX_BATCH <= super::MAX_RECV_SLOTS);
/// Bytes kept of each reply: the fixed part and room for the attributes the
/// kernel appends unasked (a longer reply is cut, which loses nothing read).
const RX_SLOT: usize = 512;

/// One exact lookup, in the kernel's orientation of `src` and `dst` (which
/// for UDP is the reverse of the packet's local/remote, see
/// `resolve::sockdiag`); both addresses of one family, which
/// [`InetQuery::new`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InetQuery {
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    protocol: u8,
    src: SocketAddr,
    dst: SocketAddr,
}

impl InetQuery {
    /// `None` when `src` and `dst` are of different address families.
    pub fn new(protocol: u8, src: SocketAddr, dst: SocketAddr) -> Option<InetQuery> {
        (src.is_ipv4() == dst.is_ipv4()).then_some(InetQuery { protocol, src, dst })
    }
}

/// The fields of one `inet_diag_msg` that labelgate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InetReply {
    pub state: u8,
    pub uid: u32,
    pub inode: u32,
    pub cookie: u64,
}

/// The answer to one query: `Ok(None)` when the kernel has no such socket.
pub type Answer = io::Result<Option<InetReply>>;

/// One NETLINK_SOCK_DIAG socket.
pub struct DiagLink {
    fd: OwnedFd,
    seq: u32,
}

impl DiagLink {
    /// Open a socket (bound by the kernel to a free port id).
    pub fn open() -> io::Result<DiagLink> {
        Ok(DiagLink { fd: super::netlink_socket(libc::NETLINK_SOCK_DIAG)?, seq: 0 })
    }

    /// Run `queries` (at most [`MAX_BATCH`]) and return their answers in
    /// order. `Err` (for the whole batch) when the exchange itself failed:
    /// the socket may then hold stale replies and should be dropped.
    pub fn lookup(&mut self, queries: &[InetQuery]) -> io::Result<[Option<Answer>; MAX_BATCH]> {
        let n = queries.len();
        if n == 0 || n > MAX_BATCH {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "between 1 and MAX_BATCH lookups at a time"));
        }
        let first = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(n as u32);
        let mut tx = [0u8; MAX_BATCH * (NLMSG_HDRLEN + REQ_LEN)];
        let mut len = 0;
        for (i, q) in queries.iter().enumerate() {
            let at = tx.get_mut(len..).unwrap_or_default();
            len += encode(q, first.wrapping_add(i as u32), at)?;
        }
        super::send_to_kernel(self.fd.as_raw_fd(), tx.get(..len).unwrap_or_default())?;

        let mut answers: [Option<Answer>; MAX_BATCH] = Default::default();
        let mut rx = [0u8; RX_SLOT * MAX_BATCH];
        let mut open = n;
        while open > 0 {
            let mut lens = [(0usize, false); MAX_BATCH];
            let want = lens.get_mut(..open).unwrap_or_default();
            let got = match super::recv_many(self.fd.as_raw_fd(), &mut rx, RX_SLOT, libc::MSG_DONTWAIT, want) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if got == 0 {
                return Err(io::Error::other("sock_diag: fewer replies than requests"));
            }
            // A reply longer than its slot is cut, which loses nothing read.
            for (slot, &(len, _)) in rx.chunks_exact(RX_SLOT).zip(lens.iter().take(got)) {
                for (seq, answer) in parse_replies(slot.get(..len).unwrap_or_default()) {
                    let i = seq.wrapping_sub(first) as usize;
                    // A reply to an earlier, failed exchange: skip it.
                    if let Some(a) = answers.get_mut(i).filter(|a| i < n && a.is_none()) {
                        *a = Some(answer);
                        open -= 1;
                    }
                }
            }
        }
        Ok(answers)
    }
}

/// Encode one request (`nlmsghdr` + `inet_diag_req_v2`) into `out`: the
/// bytes written.
fn encode(q: &InetQuery, seq: u32, out: &mut [u8]) -> io::Result<usize> {
    // One family for both addresses (InetQuery::new).
    let family = if q.src.is_ipv4() { libc::AF_INET as u8 } else { libc::AF_INET6 as u8 };
    let total = NLMSG_HDRLEN + REQ_LEN;
    let m = out.get_mut(..total).ok_or_else(|| io::Error::other("sock_diag request buffer too small"))?;
    m.fill(0);
    put(m, 0, &(total as u32).to_ne_bytes());
    put(m, 4, &SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    put(m, 6, &NLM_F_REQUEST.to_ne_bytes());
    put(m, 8, &seq.to_ne_bytes());
    // nlmsg_pid 0: to the kernel. Then inet_diag_req_v2: family, protocol,
    // no extensions asked, padding, every state...
    let r = NLMSG_HDRLEN;
    put(m, r, &[family, q.protocol]);
    put(m, r + 4, &u32::MAX.to_ne_bytes());
    // ...and inet_diag_sockid: ports, addresses, any interface, any cookie.
    put(m, r + 8, &q.src.port().to_be_bytes());
    put(m, r + 10, &q.dst.port().to_be_bytes());
    put(m, r + 12, &addr_bytes(q.src.ip()));
    put(m, r + 28, &addr_bytes(q.dst.ip()));
    put(m, r + 48, &NO_COOKIE.to_ne_bytes());
    put(m, r + 52, &NO_COOKIE.to_ne_bytes());
    Ok(total)
}

/// Copy `v` into `b` at `off` (the callers' offsets are constants inside
/// the fixed-size message).
fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(off..off + v.len()) {
        d.copy_from_slice(v);
    }
}

/// An address as `inet_diag_sockid` holds it: IPv4 in the first 4 of 16 bytes.
fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            put(&mut a, 0, &v4.octets());
            a
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The answers in one received datagram, by sequence number. Messages of
/// other types, and anything malformed, are skipped: never a panic.
pub fn parse_replies(buf: &[u8]) -> impl Iterator<Item = (u32, Answer)> + '_ {
    // A reply cut at RX_SLOT still has its fixed part.
    super::nlmsg::messages(buf).filter_map(|m| {
        let answer = match m.ty {
            SOCK_DIAG_BY_FAMILY => match parse_msg(m.body()) {
                Some(r) => Ok(Some(r)),
                None => Err(io::Error::new(io::ErrorKind::InvalidData, "short inet_diag_msg")),
            },
            NLMSG_ERROR => match m.errno() {
                Some(0) | Some(libc::ENOENT) => Ok(None),
                Some(code) => Err(io::Error::from_raw_os_error(code)),
                None => Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink error message")),
            },
            NLMSG_DONE => Ok(None),
            _ => return None,
        };
        Some((m.seq, answer))
    })
}

fn parse_msg(b: &[u8]) -> Option<InetReply> {
    if b.len() < MSG_LEN {
        return None;
    }
    let state = *b.get(1)?;
    // inet_diag_sockid starts at 4; its cookie at 4 + 40.
    let cookie = u64::from(u32_at(b, 44)?) | (u64::from(u32_at(b, 48)?) << 32);
    Some(InetReply { state, uid: u32_at(b, 64)?, inode: u32_at(b, 68)?, cookie })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], off: usize) -> Option<u16> {
        Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
    }

    fn reply(seq: u32, state: u8, uid: u32, inode: u32, cookie: u64, extra: usize) -> Vec<u8> {
        let len = NLMSG_HDRLEN + MSG_LEN + extra;
        let mut m = vec![0u8; len];
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        let b = &mut m[NLMSG_HDRLEN..];
        b[0] = libc::AF_INET as u8;
        b[1] = state;
        b[44..48].copy_from_slice(&(cookie as u32).to_ne_bytes());
        b[48..52].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        b[64..68].copy_from_slice(&uid.to_ne_bytes());
        b[68..72].copy_from_slice(&inode.to_ne_bytes());
        m
    }

    use crate::sys::test_nlmsg_error as error;

    #[test]
    fn parses_replies_errors_and_cut_attributes() {
        let mut buf = reply(7, 10, 1000, 4242, 0x1122_3344_5566_7788, 0);
        buf.extend(error(8, -libc::ENOENT));
        buf.extend(error(9, -libc::EPERM));
        let got: Vec<_> = parse_replies(&buf).collect();
        assert_eq!(got.len(), 3);
        let r = got[0].1.as_ref().unwrap().unwrap();
        assert_eq!((got[0].0, r.state, r.uid, r.inode, r.cookie), (7, 10, 1000, 4242, 0x1122_3344_5566_7788));
        assert_eq!(got[1].0, 8);
        assert!(matches!(got[1].1, Ok(None)));
        assert_eq!(got[2].1.as_ref().unwrap_err().raw_os_error(), Some(libc::EPERM));
        // A reply with attributes cut off by the receive slot still parses.
        let long = reply(3, 1, 0, 9, 1, 200);
        let cut: Vec<_> = parse_replies(&long[..NLMSG_HDRLEN + MSG_LEN + 10]).collect();
        assert_eq!(cut[0].1.as_ref().unwrap().unwrap().inode, 9);
        // A truncated fixed part is an error for that reply, not a panic.
        let short = reply(4, 1, 0, 9, 1, 0);
        let got: Vec<_> = parse_replies(&short[..NLMSG_HDRLEN + 40]).collect();
        assert!(got[0].1.is_err());
    }

    #[test]
    fn encodes_the_kernel_layout() {
        let tcp = libc::IPPROTO_TCP as u8;
        let q = InetQuery::new(tcp, "127.0.0.1:40000".parse().unwrap(), "127.0.0.2:8000".parse().unwrap()).unwrap();
        let mut out = [0u8; 128];
        let n = encode(&q, 5, &mut out).unwrap();
        assert_eq!(n, 72);
        assert_eq!(u32_at(&out, 0), Some(72));
        assert_eq!(u16_at(&out, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u32_at(&out, 8), Some(5));
        let r = &out[16..72];
        assert_eq!((r[0], r[1]), (libc::AF_INET as u8, libc::IPPROTO_TCP as u8));
        assert_eq!(&r[8..12], &[0x9c, 0x40, 0x1f, 0x40]);
        assert_eq!(&r[12..16], &[127, 0, 0, 1]);
        assert_eq!(&r[28..32], &[127, 0, 0, 2]);
        assert_eq!(&r[48..56], &[0xff; 8]);
        assert_eq!(InetQuery::new(tcp, q.src, "[::1]:1".parse().unwrap()), None);
        assert!(encode(&q, 1, &mut out[..10]).is_err());
    }

    fn so_cookie(fd: i32) -> u64 {
        let mut v = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes given.
        let rc =
            unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_COOKIE, (&mut v as *mut u64).cast(), &mut len) };
        assert_eq!(rc, 0);
        v
    }

    /// The real kernel: a listening socket and a connected pair found in
    /// one batch, with their inodes; an unused port is `Ok(None)`.
    #[test]
    fn kernel_answers_a_batch() {
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let la = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(la).unwrap();
        let ca = c.local_addr().unwrap();
        let ino = |fd: i32| std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino() as u32;
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let tcp = libc::IPPROTO_TCP as u8;
        let mut link = DiagLink::open().unwrap();
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let a = link
            .lookup(&[
                InetQuery::new(tcp, la, any).unwrap(),
                InetQuery::new(tcp, ca, la).unwrap(),
                InetQuery::new(tcp, free, any).unwrap(),
            ])
            .unwrap();
        let get = |i: usize| *a[i].as_ref().unwrap().as_ref().unwrap();
        let listener = get(0).unwrap();
        assert_eq!((listener.inode, listener.state), (ino(l.as_raw_fd()), 10));
        let client = get(1).unwrap();
        assert_eq!((client.inode, client.state), (ino(c.as_raw_fd()), 1));
        assert_eq!((listener.cookie, client.cookie), (so_cookie(l.as_raw_fd()), so_cookie(c.as_raw_fd())));
        assert!(get(2).is_none());
        assert!(a[3].is_none());
        // One at a time on the same socket: sequence numbers move on.
        let again = link.lookup(&[InetQuery::new(tcp, ca, la).unwrap()]).unwrap();
        assert_eq!(again[0].as_ref().unwrap().as_ref().unwrap().unwrap(), client);
    }

    proptest::proptest! {
        /// Whatever the kernel's bytes, parsing ends without a panic, and
        /// every answer it gives is for a message inside the buffer.
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let got: Vec<_> = parse_replies(&bytes).collect();
            proptest::prop_assert!(got.len() <= bytes.len() / NLMSG_HDRLEN);
        }
    }
}
