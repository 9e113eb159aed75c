//! The flow table: which socket a flow (protocol, local end, remote end)
//! was last found to have, or why none ([`FlowKey`], [`FlowEntry`],
//! [`Flows`]), the holders of closed TCP sockets still finishing their
//! shutdown, and the sock_diag lookup of a flow ([`query`]) with its
//! listener fallback.

use super::cache::{CacheCounters, ShardedCache};
use super::end::{LocalEnd, Reason};
use super::netns::NsIndex;
use super::owner::Owner;
use super::sockdiag::{self, DiagProto, DiagSocket, Lookup};
use super::stats::{bump, ResolverStats};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long flow entries are trusted.
#[derive(Clone, Copy, Debug)]
pub struct FlowTtl {
    /// A flow with a held socket (or a closed one's former holder).
    pub held: Duration,
    /// A flow with no socket or no holder.
    pub negative: Duration,
}

/// A flow as the flow cache keys it (40 bytes): the addresses as IPv6
/// octets, an IPv4 address v4-mapped (so it and its mapped IPv6 form are one
/// key, as sock_diag looks them up), and the network namespace the local
/// end is in (0: labelgate's own; see [`NetnsRegistry`](super::netns::NetnsRegistry)),
/// so that two namespaces' identical tuples are two keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    ns: NsIndex,
    local: [u8; 16],
    remote: [u8; 16],
    local_port: u16,
    remote_port: u16,
    proto: DiagProto,
}

impl FlowKey {
    pub fn new(proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> FlowKey {
        FlowKey::in_netns(0, proto, local, remote)
    }

    /// The key of a flow whose local end is in namespace `ns`.
    pub fn in_netns(ns: NsIndex, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> FlowKey {
        let octets = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        FlowKey {
            ns,
            local: octets(local.ip()),
            remote: octets(remote.ip()),
            local_port: local.port(),
            remote_port: remote.port(),
            proto,
        }
    }

    /// The local end, unmapped (an IPv4 end as IPv4).
    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(unmap_ip(IpAddr::V6(self.local.into())), self.local_port)
    }

    /// The remote end, unmapped.
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(unmap_ip(IpAddr::V6(self.remote.into())), self.remote_port)
    }
}

/// What the flow cache remembers of a flow, in 24 bytes (a [`DiagSocket`]
/// flattened, both reasons in one byte, two flags in one, the time in
/// five).
#[derive(Clone, Debug)]
pub struct FlowEntry {
    /// The socket found: `cookie`, `inode`, `uid`, `state` (meaningless
    /// when `gap` is a reason without a socket).
    pub(super) cookie: u64,
    pub(super) inode: u32,
    pub(super) uid: u32,
    pub(super) state: u8,
    /// `None`: a socket, held by a process. A reason without a socket
    /// (`no_socket`, ...): none found. A reason with a socket
    /// (`kernel_socket`, `process_gone`): the socket was found but no
    /// process could be named for it, remembered as briefly as a missing
    /// socket so that such a flow does not ask for a `/proc` scan per packet.
    pub(super) gap: Option<Reason>,
    /// [`VIA_LISTENER`] and [`CLOSED`].
    pub(super) flags: u8,
    /// When the flow was looked up: milliseconds since the resolver's
    /// `epoch`, 40 bits little-endian (they wrap after 34 years).
    pub(super) at: [u8; 5],
}

/// A [`FlowEntry`] flag: the answer is a listener standing in for a
/// connection that has no socket of its own yet (a SYN to it, a request
/// mini-socket, or a child not yet accepted): asked about again on the
/// connection's next non-SYN packet, which by then may have its own socket.
pub const VIA_LISTENER: u8 = 1;

/// A [`FlowEntry`] flag: a TCP socket its process closed, finishing its
/// shutdown (same cookie, no file); the holder it had is kept by
/// [`Flows`] under its cookie, so that its FINs, ACKs and
/// retransmissions keep its label.
pub const CLOSED: u8 = 2;

/// The 40 bits of a [`FlowEntry`]'s time.
const AT_MASK: u64 = (1 << 40) - 1;

impl FlowEntry {
    /// An entry for `socket` (or why there is none), looked up `now_ms`
    /// after the epoch. `no_owner`: why a socket found has no holder.
    pub fn new(socket: Result<DiagSocket, Reason>, no_owner: Option<Reason>, now_ms: u64) -> FlowEntry {
        let [a, b, c, d, e, ..] = now_ms.to_le_bytes();
        let (ds, gap) = match socket {
            Ok(ds) => (ds, no_owner.filter(|r| r.has_socket())),
            Err(r) => (DiagSocket { inode: 0, uid: 0, state: 0, cookie: 0 }, Some(r)),
        };
        FlowEntry {
            cookie: ds.cookie,
            inode: ds.inode,
            uid: ds.uid,
            state: ds.state,
            gap,
            flags: 0,
            at: [a, b, c, d, e],
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The socket, or why there is none.
    pub fn socket(&self) -> Result<DiagSocket, Reason> {
        match self.gap {
            Some(r) if !r.has_socket() => Err(r),
            _ => Ok(DiagSocket { inode: self.inode, uid: self.uid, state: self.state, cookie: self.cookie }),
        }
    }

    /// Whether the entry is still within its TTL (a flow with a held
    /// socket, or a closed one's former holder: `ttl.held`; no socket or
    /// no holder: `ttl.negative`) at `now_ms`.
    pub fn fresh(&self, ttl: &FlowTtl, now_ms: u64) -> bool {
        let ttl = if self.gap.is_none() { ttl.held } else { ttl.negative };
        let [a, b, c, d, e] = self.at;
        let age = now_ms.wrapping_sub(u64::from_le_bytes([a, b, c, d, e, 0, 0, 0])) & AT_MASK;
        u128::from(age) < ttl.as_millis()
    }

    /// What this entry answers at `now_ms` without asking the kernel, if it
    /// may answer at all (within its TTL, and not a listener standing in
    /// for a connection): a remembered reason, the holder a closed socket
    /// had (whatever `closed` finds for its cookie), or for a socket with a
    /// holder whatever `held` finds in the owner cache.
    pub fn answer(
        &self,
        ttl: &FlowTtl,
        now_ms: u64,
        held: impl FnOnce(DiagSocket) -> Option<LocalEnd>,
        closed: impl FnOnce(u64) -> Option<Arc<Owner>>,
    ) -> Option<LocalEnd> {
        if !self.fresh(ttl, now_ms) || self.has(VIA_LISTENER) {
            return None;
        }
        match self.gap {
            Some(reason) => Some(LocalEnd::unlabeled(reason.token())),
            None if self.has(CLOSED) => Some(closed(self.cookie)?.end_of(self.socket().ok())),
            None => held(self.socket().ok()?),
        }
    }
}

/// What one sock_diag lookup found for a local end.
#[derive(Clone, Copy, Debug)]
pub enum Found {
    /// A socket with a file (inode), perhaps held by a process.
    Socket(DiagSocket),
    /// The listener that answers for a connection with no socket of its own
    /// yet (request mini-socket, or a child not yet accepted).
    Listener(DiagSocket),
    /// A TCP socket without a file (inode 0): closed by its process and
    /// finishing its shutdown, or TIME_WAIT.
    Fileless(DiagSocket),
    /// No socket; why.
    Nothing(Reason),
}

/// The flow table and the holders of closed TCP sockets.
pub struct Flows {
    ttl: FlowTtl,
    table: ShardedCache<FlowKey, FlowEntry>,
    /// The holders TCP sockets had before their processes closed them, by
    /// socket cookie, while the sockets finish their shutdown (see
    /// [`CLOSED`]).
    closed: ShardedCache<u64, Arc<Owner>>,
}

impl Flows {
    /// Room for about `capacity` flows and `closed` closed sockets' holders.
    pub fn new(ttl: FlowTtl, capacity: usize, closed: usize, shards: usize) -> Flows {
        Flows { ttl, table: ShardedCache::new(capacity, shards), closed: ShardedCache::new(closed, shards) }
    }

    /// The TTLs entries are judged by.
    pub fn ttl(&self) -> &FlowTtl {
        &self.ttl
    }

    /// The entry of `key`, counted into `c`.
    pub fn get(&self, key: &FlowKey, c: &CacheCounters) -> Option<FlowEntry> {
        self.table.get(key, c)
    }

    /// Remember `entry` for `key` (sweeping entries idle past the flow TTL).
    pub fn insert(&self, key: FlowKey, entry: FlowEntry, c: &CacheCounters) {
        self.table.insert_sweeping(key, entry, c, self.ttl.held);
    }

    /// The holder a closed TCP socket had, by its cookie.
    pub fn closed_holder(&self, cookie: u64) -> Option<Arc<Owner>> {
        self.closed.get(&cookie, &CacheCounters::default())
    }

    /// Keep `holder` for the closed socket `cookie` while it finishes.
    pub fn keep_closed(&self, cookie: u64, holder: Arc<Owner>) {
        self.closed.insert_sweeping(cookie, holder, &CacheCounters::default(), self.ttl.held);
    }
}

/// sock_diag lookup. A TCP connection with no socket of its own yet (a
/// request mini-socket in SYN_RECV, or a child in the listener's accept
/// queue: ESTABLISHED or CLOSE_WAIT without a file) is answered by its
/// listener.
/// `pre`: the exact lookup's answer, already asked.
pub fn query(
    k: &impl Fn(DiagProto, SocketAddr, SocketAddr) -> Lookup,
    stats: &ResolverStats,
    proto: DiagProto,
    local: SocketAddr,
    remote: SocketAddr,
    had_socket: bool,
    pre: Option<Lookup>,
) -> Found {
    let closed = if had_socket { Reason::SocketClosed } else { Reason::NoSocket };
    let answer = pre.unwrap_or_else(|| {
        bump(&stats.sock_diag_queries);
        k(proto, local, remote)
    });
    let ds = match answer {
        Ok(Some(ds)) => ds,
        Ok(None) => return Found::Nothing(closed),
        Err(e) => {
            bump(&stats.sock_diag_errors);
            log::debug!("sock_diag {proto:?} {local} {remote}: {e}");
            return Found::Nothing(Reason::SockDiagError);
        }
    };
    if ds.inode != 0 {
        return Found::Socket(ds);
    }
    if proto != DiagProto::Tcp {
        return Found::Nothing(Reason::SocketClosed);
    }
    if !matches!(ds.state, sockdiag::TCP_SYN_RECV | sockdiag::TCP_ESTABLISHED | sockdiag::TCP_CLOSE_WAIT) {
        return Found::Fileless(ds);
    }
    let any = match remote {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    bump(&stats.sock_diag_queries);
    match k(proto, local, any) {
        Ok(Some(l)) if l.inode != 0 => Found::Listener(l),
        Ok(_) => Found::Nothing(Reason::SocketClosed),
        Err(_) => {
            bump(&stats.sock_diag_errors);
            Found::Nothing(Reason::SockDiagError)
        }
    }
}

/// `ip`, an IPv4-mapped IPv6 address as IPv4.
pub fn unmap_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
