//! Exact socket lookups through NETLINK_SOCK_DIAG (`SOCK_DIAG_BY_FAMILY`
//! without `NLM_F_DUMP`), built on `netlink-packet-sock-diag` and
//! `netlink-sys`.
//!
//! An exact request makes the kernel run the same lookup as its receive path
//! (`inet_lookup` for TCP: established 4-tuple first, then the best listener,
//! wildcard and dual-stack binds included; `__udp4/6_lib_lookup` for UDP:
//! connected, bound, wildcard-bound and dual-stack sockets). The kernel
//! answers inside `sendmsg`, so a reply is always waiting when `send`
//! returns; the receive does not block.
//!
//! Field orientation differs by protocol (kernel `udp_diag.c`: "src and dst
//! are swapped for historical reasons"): for TCP `src`/`sport` name the local
//! end, for UDP they name the remote end and `dst`/`dport` the local end.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// TCP states as the kernel numbers them in `inet_diag_msg.idiag_state`.
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LISTEN: u8 = 10;

/// What sock_diag reported about one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    /// Socket inode; 0 for TIME_WAIT and request mini-sockets and for sockets
    /// no longer attached to a file (closed by their process).
    pub inode: u32,
    /// Owner uid (the creating process's fsuid).
    pub uid: u32,
    /// `idiag_state` (TCP state number; UDP reports 7 = CLOSE when
    /// unconnected, 1 = ESTABLISHED when connected).
    pub state: u8,
    /// The kernel's socket cookie: unique per socket for the boot.
    pub cookie: u64,
}

/// A pool of NETLINK_SOCK_DIAG sockets so that queue threads do not wait for
/// each other's lookups (each lookup takes one socket out of the pool).
pub struct SockDiag {
    /// Idle sockets, each with its receive buffer.
    pool: Mutex<Vec<(Socket, Vec<u8>)>>,
    seq: AtomicU32,
}

/// Transport protocol of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiagProto {
    Tcp,
    Udp,
}

impl SockDiag {
    /// Opens one socket at once so that a missing permission or kernel
    /// support shows at start-up.
    pub fn new() -> io::Result<SockDiag> {
        let s = open()?;
        Ok(SockDiag { pool: Mutex::new(vec![(s, Vec::with_capacity(RX_BUF))]), seq: AtomicU32::new(1) })
    }

    /// The socket that owns the flow between `local` and `remote` (both of
    /// the same family; v4-mapped IPv6 addresses are looked up as IPv4).
    /// `Ok(None)` when the kernel has no such socket.
    pub fn lookup(&self, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<DiagSocket>> {
        let (local, remote) = (unmap(local), unmap(remote));
        let family = match (local.ip(), remote.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
            (IpAddr::V6(_), IpAddr::V6(_)) => AF_INET6,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "local and remote address families differ")),
        };
        let (src, dst, protocol) = match proto {
            DiagProto::Tcp => (local, remote, IPPROTO_TCP),
            DiagProto::Udp => (remote, local, IPPROTO_UDP),
        };
        let req = InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: src.port(),
                destination_port: dst.port(),
                source_address: src.ip(),
                destination_address: dst.ip(),
                interface_id: 0,
                // INET_DIAG_NOCOOKIE: any cookie (zeros would mean "must be 0").
                cookie: [0xff; 8],
            },
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (sock, mut rx) = match self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            Some(s) => s,
            None => (open()?, Vec::with_capacity(RX_BUF)),
        };
        let res = exchange(&sock, &mut rx, req, seq);
        // A socket whose exchange failed may hold a stale reply: drop it.
        if res.is_ok() {
            self.pool.lock().unwrap_or_else(|e| e.into_inner()).push((sock, rx));
        }
        res
    }
}

fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

fn open() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_SOCK_DIAG)?;
    s.bind_auto()?;
    s.connect(&NlAddr::new(0, 0))?;
    Ok(s)
}

/// Receive buffer of a pooled socket: an exact lookup's answer is one
/// message of about 100 bytes; room for a few stale ones besides.
const RX_BUF: usize = 8192;

fn exchange(sock: &Socket, rx: &mut Vec<u8>, req: InetRequest, seq: u32) -> io::Result<Option<DiagSocket>> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST;
    hdr.sequence_number = seq;
    let mut msg = NetlinkMessage::new(hdr, SockDiagMessage::InetRequest(req).into());
    msg.finalize();
    // The request (header + inet_diag_req_v2) is 72 bytes.
    let mut buf = [0u8; 128];
    let tx = buf.get_mut(..msg.buffer_len()).ok_or_else(|| io::Error::other("sock_diag request too long"))?;
    msg.serialize(tx);
    sock.send(tx, 0)?;

    // An exact lookup answers with one message (or an error message).
    // `recv` appends into spare capacity of the Vec.
    loop {
        rx.clear();
        let n = sock.recv(rx, libc::MSG_DONTWAIT)?;
        if n > rx.len() {
            return Err(io::Error::other("sock_diag reply truncated"));
        }
        let mut off = 0usize;
        while off < rx.len() {
            let m = NetlinkMessage::<SockDiagMessage>::deserialize(rx.get(off..).unwrap_or_default())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = m.header.length as usize;
            if m.header.sequence_number == seq {
                return match m.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let h = &r.header;
                        Ok(Some(DiagSocket {
                            inode: h.inode,
                            uid: h.uid,
                            state: h.state,
                            cookie: u64::from_ne_bytes(h.socket_id.cookie),
                        }))
                    }
                    NetlinkPayload::Error(e) => match e.code.map(|c| -c.get()) {
                        Some(libc::ENOENT) => Ok(None),
                        Some(c) => Err(io::Error::from_raw_os_error(c)),
                        None => Ok(None),
                    },
                    NetlinkPayload::Done(_) => Ok(None),
                    _ => Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected sock_diag reply")),
                };
            }
            // A reply to an earlier request: skip it.
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}
