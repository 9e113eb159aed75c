//! Exact socket lookups through NETLINK_SOCK_DIAG (`SOCK_DIAG_BY_FAMILY`
//! without `NLM_F_DUMP`): which socket owns a flow, in labelgate's terms
//! (local and remote end), over a pool of [`DiagLink`]s.
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

use crate::sys::netns;
use crate::sys::sockdiag::{Answer, DiagLink, InetQuery, InetReply, MAX_BATCH};
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

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
    pool: Mutex<Vec<DiagLink>>,
    /// The network namespace the sockets are opened in (`None`: the
    /// calling thread's, which is labelgate's own).
    netns: Option<Arc<File>>,
}

/// Transport protocol of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiagProto {
    Tcp,
    Udp,
}

/// One lookup's answer (see [`SockDiag::lookup`]).
pub type Lookup = io::Result<Option<DiagSocket>>;

impl SockDiag {
    /// Opens one socket at once so that a missing permission or kernel
    /// support shows at start-up.
    pub fn new() -> io::Result<SockDiag> {
        Ok(SockDiag { pool: Mutex::new(vec![DiagLink::open()?]), netns: None })
    }

    /// A pool whose sockets are opened inside the network namespace `ns`
    /// (an open `/proc/PID/ns/net`), the first one at once.
    pub fn in_netns(ns: Arc<File>) -> io::Result<SockDiag> {
        let first = netns::diag_link_in(&*ns)?;
        Ok(SockDiag { pool: Mutex::new(vec![first]), netns: Some(ns) })
    }

    fn open(&self) -> io::Result<DiagLink> {
        match &self.netns {
            None => DiagLink::open(),
            Some(ns) => netns::diag_link_in(&**ns),
        }
    }

    /// The socket that owns the flow between `local` and `remote` (both of
    /// the same family; v4-mapped IPv6 addresses are looked up as IPv4).
    /// `Ok(None)` when the kernel has no such socket.
    pub fn lookup(&self, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> Lookup {
        match query(proto, local, remote) {
            Ok(q) => {
                let [a] = self.exchange([q]);
                a
            }
            Err(e) => Err(e),
        }
    }

    /// Two lookups sent to the kernel together: one `sendto` and one
    /// `recvmmsg` for both.
    pub fn lookup_two(
        &self,
        proto: DiagProto,
        a: (SocketAddr, SocketAddr),
        b: (SocketAddr, SocketAddr),
    ) -> [Lookup; 2] {
        match (query(proto, a.0, a.1), query(proto, b.0, b.1)) {
            (Ok(x), Ok(y)) => self.exchange([x, y]),
            (Ok(x), Err(e)) => {
                let [p] = self.exchange([x]);
                [p, Err(e)]
            }
            (Err(e), Ok(y)) => {
                let [q] = self.exchange([y]);
                [Err(e), q]
            }
            (Err(e), Err(f)) => [Err(e), Err(f)],
        }
    }

    /// Run a batch on a pooled socket: one answer per query, in order.
    fn exchange<const N: usize>(&self, queries: [InetQuery; N]) -> [Lookup; N] {
        let failed = |e: &io::Error| std::array::from_fn(|_| Err(io::Error::new(e.kind(), e.to_string())));
        let link = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut link = match link.map_or_else(|| self.open(), Ok) {
            Ok(l) => l,
            Err(e) => return failed(&e),
        };
        match link.lookup(&queries) {
            Ok(mut answers) => {
                self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(link);
                std::array::from_fn(|i| answers.get_mut(i).and_then(Option::take).map_or(Ok(None), to_socket))
            }
            // A socket whose exchange failed may hold a stale reply: drop it.
            Err(e) => failed(&e),
        }
    }
}

fn to_socket(a: Answer) -> Lookup {
    a.map(|r| r.map(|r: InetReply| DiagSocket { inode: r.inode, uid: r.uid, state: r.state, cookie: r.cookie }))
}

/// [`SockDiag::lookup_two`] sends two at once.
const _: () = assert!(MAX_BATCH >= 2);

/// The kernel's query for the flow between `local` and `remote`.
fn query(proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> io::Result<InetQuery> {
    let (local, remote) = (unmap(local), unmap(remote));
    let q = match proto {
        DiagProto::Tcp => InetQuery::new(libc::IPPROTO_TCP as u8, local, remote),
        DiagProto::Udp => InetQuery::new(libc::IPPROTO_UDP as u8, remote, local),
    };
    q.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "local and remote address families differ"))
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
