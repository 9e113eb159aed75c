//! Context resolution: which local sockets (and so which SELinux contexts,
//! processes and uids) send and receive a queued packet, and what peer label
//! the packet carries.
//!
//! [`SocketResolver`] implements [`Resolver`]. For a packet it
//!
//! 1. finds the local socket at each local end with an exact sock_diag
//!    lookup ([`sockdiag`]); the kernel's own lookup picks an established
//!    4-tuple first, then the listener / bound socket (wildcard and IPv6
//!    dual-stack binds included);
//! 2. maps the socket inode to a process holding it ([`procfs`]): the
//!    holders the last full `/proc` scan saw; else the processes that held
//!    the sockets found most recently (a server's new connections, a
//!    client's next socket), each first at the fd number it held its last
//!    socket at (one read of `/proc/PID/fd/N`: a closed descriptor's number is the next
//!    one `socket()` or `accept()` returns), then all its fds; else the
//!    processes born since the last full
//!    scan, newest first; and only when all of these fail, a new full scan
//!    (single flight, shared by the threads that wait for it). A socket that
//!    a full scan finds no process holding is not scanned for again within
//!    [`ResolverConfig::negative_ttl`];
//! 3. reads the socket's label (`security.selinux` of `/proc/PID/fd/N`, one
//!    `getxattr`), or failing that the process's (`/proc/PID/attr/current`,
//!    not read again once it answered that no LSM provides it), and the
//!    holder's comm and exe for audit records (a recent holder's are reused
//!    for its next sockets for up to a second, then while its exe link is
//!    unchanged);
//! 4. parses CIPSO/CALIPSO options ([`peer`]) and applies static address
//!    labels from the policy ([`PeerConfig`]).
//!
//! Per packet there is no `/proc` scan: flows (protocol, local end, remote
//! end) and socket owners (inode → pid, fd, label, process) are cached in
//! bounded maps that keep the recently used entries ([`cache`]). A cached
//! flow is re-queried from sock_diag after [`ResolverConfig::flow_ttl`], at
//! once when its holder no longer holds it, and always for a TCP SYN (a new
//! connection may reuse a 4-tuple). The holder of a cached UDP socket is re-validated with one
//! read of `/proc/PID/fd/N` (still `socket:[inode]`) unless it was
//! last checked after the packet was read from the queue
//! ([`QueueMeta::received`]): the queue thread reads a batch of packets and
//! then decides them, so one check covers the batch (an inode that was
//! still held after a packet was sent sent it; inodes are never reused
//! while held). [`ResolverConfig::owner_revalidate_after`] relaxes the
//! check further, at a price in precision; a TCP
//! socket's is not, because its 4-tuple can move to another socket only
//! through a new handshake. A flow whose socket has no holder is remembered
//! for [`ResolverConfig::negative_ttl`], so it does not cause a `/proc` scan
//! per packet.
//!
//! A (pid, fd) that is read again and again (a cached holder re-validated, a
//! recent holder's last fd number asked about a new socket) is read through
//! a link kept open to `/proc/PID/fd/N` ([`procfs::FdLinks`], at most
//! 256 descriptors): one `readlinkat` that walks no path, and
//! that fails once the process has exited even if its pid was reused (the
//! path is then asked afresh). Elsewhere a read is one `readlink` of the
//! path.
//!
//! A TCP connection without a socket of its own yet (a request
//! mini-socket, or a child not yet accepted) is attributed to its listener,
//! and looked up again on its next non-SYN packet. A TCP socket its process
//! has closed but that is still finishing its shutdown (no file, same socket
//! cookie) keeps the label and holder it had, so its FINs, ACKs and
//! retransmissions are decided like the rest of the connection.
//!
//! # Cache-only answers
//!
//! [`Resolver::resolve_cached`] answers from the caches alone, so that a
//! queue thread can decide a packet of a known flow without waiting on
//! slow work. What it may do, per local end: look up the flow cache (an
//! entry still within its TTL, not a TCP SYN, not a listener standing in
//! for a connection), look up the owner cache, and re-validate a UDP
//! socket's cached holder exactly as [`Resolver::resolve`] would (the one
//! read of `/proc/PID/fd/N`, skipped within
//! [`ResolverConfig::owner_revalidate_after`]); plus parsing the packet's
//! CIPSO/CALIPSO option and reading the set of local addresses while it is
//! within [`ResolverConfig::local_addr_ttl`]. What it never does: a
//! sock_diag query, a `/proc` scan, reading a socket's or process's label
//! or its `comm`/`exe`, refreshing the local addresses. Any miss, expired
//! entry or failed re-validation is `None`, and then it has counted and
//! removed nothing (a stale holder is left for the full `resolve` that
//! follows to invalidate), so each packet's misses are counted once; an
//! answer counts its cache hits and peer options.
//!
//! # When there is no label
//!
//! Every label is defined; when nothing can be read the context is
//! `system_u:object_r:unlabeled_t:s0` ([`Label::unlabeled`]) and the
//! [`Origin::Unlabeled`] reason token says why:
//!
//! | reason              | situation |
//! |---------------------|-----------|
//! | `no_socket`         | sock_diag knows no socket for the flow: a packet the kernel made itself (TCP RST to a closed port, ICMP error) or a flow never attached to a socket |
//! | `socket_closed`     | the flow's socket is gone: a flow that had a socket has none now, or only a socket without a file is left (TIME_WAIT, or closed by its process) that was not seen held before |
//! | `kernel_socket`     | the socket exists (has an inode) but no process holds it, even after a fresh `/proc` scan: a kernel socket, or one whose only reference is an fd in flight (SCM_RIGHTS) |
//! | `process_gone`      | the process known to hold the socket exited (while its label was being read, or since the last scan) and no other holder was found |
//! | `selinux_disabled`  | no `security.selinux` xattr and `/proc/PID/attr/current` fails with EINVAL: no LSM providing labels is active |
//! | `other_lsm`         | `/proc/PID/attr/current` holds a label that is not an SELinux context (AppArmor, Smack) |
//! | `bad_context`       | a `security.selinux` xattr that does not parse as a context |
//! | `unreadable`        | `/proc/PID/attr/current` failed otherwise (e.g. EACCES) |
//! | `unsupported_proto` | a local end of a protocol without sockets to look up (ICMP, SCTP, others) |
//! | `sock_diag_error`   | the sock_diag query itself failed (counted in [`ResolverStats::sock_diag_errors`]) |
//! | `remote`            | the end is not on this host and no static/peer label names it |
//! | `bad_peer_option`   | (peer label) a malformed CIPSO/CALIPSO option, counted in [`ResolverStats::bad_peer_options`] |
//! | `unknown_doi`       | (peer label) a well-formed option whose DOI the policy does not map |
//!
//! # Which label goes where
//!
//! * `source`: the local socket that sent the packet when the source address
//!   is local (always at OUTPUT; at INPUT for loopback and this host's own
//!   addresses); otherwise the peer label of the source address, else
//!   `remote`.
//! * `dest`: the local socket the packet goes to when the destination address
//!   is local (INPUT; OUTPUT to loopback or an own address); otherwise the
//!   static address label of the destination, else `remote`.
//! * `peer`: the CIPSO/CALIPSO level and/or static address label of the
//!   source address; `None` when there is neither.
//! * `uid`/`gid`: NFQA_UID/GID when the kernel gave them, else the sending
//!   socket's uid from sock_diag (no gid is known then).

pub mod cache;
pub mod peer;
pub mod procfs;
pub mod sockdiag;

use crate::context::SecurityContext;
use crate::labels::{secmark_context, Hook, Label, Labels, Origin, ProcessInfo, QueueMeta, Resolver};
use crate::mls::{Level, Range};
use crate::packet::{LabelOption, PacketInfo, Proto};
use crate::policy::{AddressLabel, DoiMap, Policy};
use cache::{CacheCounters, ShardedCache};
use sockdiag::{DiagProto, DiagSocket, Lookup, SockDiag};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What the resolver needs from the policy for peer labels; rebuild it (and
/// the resolver, or call [`SocketResolver::set_peer_config`]) on reload.
#[derive(Clone, Debug, Default)]
pub struct PeerConfig {
    /// Static labels, longest prefix first (as [`Policy::address_labels`]).
    pub address_labels: Vec<AddressLabel>,
    /// DOI → level mapping for CIPSO/CALIPSO.
    pub dois: HashMap<u32, DoiMap>,
}

impl PeerConfig {
    pub fn from_policy(p: &Policy) -> PeerConfig {
        PeerConfig { address_labels: p.address_labels.clone(), dois: p.dois.clone() }
    }

    /// The static label of `addr` (first, i.e. longest, matching prefix).
    pub fn static_label(&self, addr: IpAddr) -> Option<&SecurityContext> {
        let addr = unmap_ip(addr);
        self.address_labels.iter().find(|a| a.net.contains(&addr)).map(|a| &a.context)
    }
}

/// Tuning of the resolver's caches.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Most flows remembered (flow → socket); rounded up to a multiple of
    /// 2 × `shards`. A table slot takes 65 bytes; a full cache costs about
    /// 75 bytes per entry when `flow_cache_size / (2 × shards)` is 7/8 of a
    /// power of two, as for the default (114,688 = 2 × 16 × 3,584: about
    /// 8.3 MiB), and up to twice that just above one (131,072: about 16.5
    /// MiB). See [`cache`].
    pub flow_cache_size: usize,
    /// Most socket owners remembered (inode → pid, fd, label, process).
    pub owner_cache_size: usize,
    /// Shards per cache (lock striping).
    pub shards: usize,
    /// How long a flow → socket answer is trusted before sock_diag is asked again.
    pub flow_ttl: Duration,
    /// How long "no socket for this flow" is remembered.
    pub negative_ttl: Duration,
    /// How long the holder of a cached UDP socket is trusted without
    /// checking again (one read of `/proc/PID/fd/N`) that it still
    /// holds the socket. Zero (the default) checks every packet that was
    /// read from the queue after the last check (once per batch read); a
    /// few milliseconds saves most of the remaining cost at the price of that
    /// long a window in which a packet of a just-closed socket's reused
    /// 4-tuple could be attributed to the old socket. (TCP flows are not
    /// checked per packet: a TCP 4-tuple gets a new socket only through a
    /// new handshake, and a SYN is always looked up afresh.)
    pub owner_revalidate_after: Duration,
    /// How long the set of local addresses is trusted.
    pub local_addr_ttl: Duration,
    /// Where procfs is mounted.
    pub proc_root: PathBuf,
    /// Remember the flows of TCP SYNs (both ends). Flow mode turns this off:
    /// there the kernel decides every later packet of a connection by its
    /// connmark, so those entries would never be read, and writing them
    /// costs lookups in a large map per new connection. (A later packet
    /// that does come, say from a rule of the operator's own, is looked up
    /// with sock_diag: slower, never wrong.)
    pub cache_syn_flows: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            flow_cache_size: 114_688,
            owner_cache_size: 16_384,
            shards: 16,
            flow_ttl: Duration::from_secs(5),
            negative_ttl: Duration::from_millis(500),
            owner_revalidate_after: Duration::ZERO,
            local_addr_ttl: Duration::from_secs(2),
            proc_root: PathBuf::from("/proc"),
            cache_syn_flows: true,
        }
    }
}

/// Why the resolver could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("cannot open NETLINK_SOCK_DIAG socket: {0}")]
    SockDiag(std::io::Error),
    #[error("cannot scan {path}: {err}")]
    Proc { path: String, err: std::io::Error },
}

/// Counters the lead can print; all relaxed atomics.
#[derive(Debug, Default)]
pub struct ResolverStats {
    /// flow → socket cache.
    pub flow: CacheCounters,
    /// inode → owner cache (invalidations: the owner no longer holds the fd).
    pub owner: CacheCounters,
    /// Open `/proc/PID/fd/N` links used to re-validate holders
    /// (invalidations: links dropped as their fd closed or process exited).
    pub proc_link: CacheCounters,
    pub sock_diag_queries: AtomicU64,
    pub sock_diag_errors: AtomicU64,
    pub proc_scans: AtomicU64,
    /// Sockets seen by the last `/proc` scan.
    pub proc_scan_sockets: AtomicU64,
    /// New sockets whose holder was found among the processes that held the
    /// sockets found last ...
    pub owner_found_recent: AtomicU64,
    /// ... or among the processes born since the last full scan, so that no
    /// full scan was needed.
    pub owner_found_new_process: AtomicU64,
    pub peer_options: AtomicU64,
    pub bad_peer_options: AtomicU64,
    pub unknown_doi: AtomicU64,
}

impl ResolverStats {
    /// All counters as (name, value), for logs and the CLI.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("flow_hits", g(&self.flow.hits)),
            ("flow_misses", g(&self.flow.misses)),
            ("flow_evictions", g(&self.flow.evictions)),
            ("flow_invalidations", g(&self.flow.invalidations)),
            ("flow_expirations", g(&self.flow.expirations)),
            ("owner_hits", g(&self.owner.hits)),
            ("owner_misses", g(&self.owner.misses)),
            ("owner_evictions", g(&self.owner.evictions)),
            ("owner_invalidations", g(&self.owner.invalidations)),
            ("owner_expirations", g(&self.owner.expirations)),
            ("proc_link_hits", g(&self.proc_link.hits)),
            ("proc_link_misses", g(&self.proc_link.misses)),
            ("proc_link_evictions", g(&self.proc_link.evictions)),
            ("proc_link_invalidations", g(&self.proc_link.invalidations)),
            ("sock_diag_queries", g(&self.sock_diag_queries)),
            ("sock_diag_errors", g(&self.sock_diag_errors)),
            ("proc_scans", g(&self.proc_scans)),
            ("proc_scan_sockets", g(&self.proc_scan_sockets)),
            ("owner_found_recent", g(&self.owner_found_recent)),
            ("owner_found_new_process", g(&self.owner_found_new_process)),
            ("peer_options", g(&self.peer_options)),
            ("bad_peer_options", g(&self.bad_peer_options)),
            ("unknown_doi", g(&self.unknown_doi)),
        ]
    }

    /// The counters as one Prometheus counter family, by event.
    pub fn families(&self) -> Vec<crate::labels::MetricFamily> {
        let rows = self.snapshot().into_iter().map(|(k, v)| (format!("{{event=\"{k}\"}}"), v)).collect();
        vec![(
            "labelgate_resolver_events_total".to_string(),
            "Label resolution events: cache hits, misses, evictions, invalidations, lookups, /proc scans, peer options."
                .to_string(),
            rows,
        )]
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// How long an unused socket owner stays in the owner cache: an owner
/// unused for a minute belongs to a socket long idle or gone.
const OWNER_MAX_IDLE: Duration = Duration::from_secs(60);

/// Most `/proc/PID/fd/N` links kept open for re-validating holders
/// ([`procfs::FdLinks`]): one descriptor each.
const PROC_LINKS: usize = 256;

/// A flow as the flow cache keys it (38 bytes): the addresses as IPv6
/// octets, an IPv4 address v4-mapped (so it and its mapped IPv6 form are one
/// key, as sock_diag looks them up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    local: [u8; 16],
    remote: [u8; 16],
    local_port: u16,
    remote_port: u16,
    proto: DiagProto,
}

impl FlowKey {
    fn new(proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> FlowKey {
        let octets = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        FlowKey {
            local: octets(local.ip()),
            remote: octets(remote.ip()),
            local_port: local.port(),
            remote_port: remote.port(),
            proto,
        }
    }

    /// The local end, unmapped (an IPv4 end as IPv4).
    fn local(&self) -> SocketAddr {
        SocketAddr::new(unmap_ip(IpAddr::V6(self.local.into())), self.local_port)
    }

    /// The remote end, unmapped.
    fn remote(&self) -> SocketAddr {
        SocketAddr::new(unmap_ip(IpAddr::V6(self.remote.into())), self.remote_port)
    }
}

/// Why a local end has no holder to answer with: the reason tokens a flow
/// entry remembers (see the table at the top).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// No socket: `no_socket`.
    NoSocket,
    /// No socket any more: `socket_closed`.
    SocketClosed,
    /// The lookup failed: `sock_diag_error`.
    SockDiagError,
    /// A socket that no process holds: `kernel_socket`.
    KernelSocket,
    /// A socket whose holder exited: `process_gone`.
    ProcessGone,
}

impl Reason {
    const ALL: [Reason; 5] =
        [Reason::NoSocket, Reason::SocketClosed, Reason::SockDiagError, Reason::KernelSocket, Reason::ProcessGone];

    fn token(self) -> &'static str {
        match self {
            Reason::NoSocket => "no_socket",
            Reason::SocketClosed => "socket_closed",
            Reason::SockDiagError => "sock_diag_error",
            Reason::KernelSocket => "kernel_socket",
            Reason::ProcessGone => "process_gone",
        }
    }

    /// The reason with this token, if a flow entry can remember it.
    fn of(token: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.token() == token)
    }

    /// Whether there is a socket (without a holder) for this reason.
    fn has_socket(self) -> bool {
        matches!(self, Reason::KernelSocket | Reason::ProcessGone)
    }
}

/// What the flow cache remembers of a flow, in 24 bytes (a [`DiagSocket`]
/// flattened, both reasons in one byte, two flags in one, the time in
/// five).
#[derive(Clone, Debug)]
struct FlowEntry {
    /// The socket found: `cookie`, `inode`, `uid`, `state` (meaningless
    /// when `gap` is a reason without a socket).
    cookie: u64,
    inode: u32,
    uid: u32,
    state: u8,
    /// `None`: a socket, held by a process. A reason without a socket
    /// (`no_socket`, ...): none found. A reason with a socket
    /// (`kernel_socket`, `process_gone`): the socket was found but no
    /// process could be named for it, remembered as briefly as a missing
    /// socket so that such a flow does not ask for a `/proc` scan per packet.
    gap: Option<Reason>,
    /// [`VIA_LISTENER`] and [`CLOSED`].
    flags: u8,
    /// When the flow was looked up: milliseconds since the resolver's
    /// `epoch`, 40 bits little-endian (they wrap after 34 years).
    at: [u8; 5],
}

/// A [`FlowEntry`] flag: the answer is a listener standing in for a
/// connection that has no socket of its own yet (a SYN to it, a request
/// mini-socket, or a child not yet accepted): asked about again on the
/// connection's next non-SYN packet, which by then may have its own socket.
const VIA_LISTENER: u8 = 1;

/// A [`FlowEntry`] flag: a TCP socket its process closed, finishing its
/// shutdown (same cookie, no file); the holder it had is kept in the
/// resolver's `closed_holders` under its cookie, so that its FINs, ACKs and
/// retransmissions keep its label.
const CLOSED: u8 = 2;

/// The 40 bits of a [`FlowEntry`]'s time.
const AT_MASK: u64 = (1 << 40) - 1;

impl FlowEntry {
    /// An entry for `socket` (or why there is none), looked up `now_ms`
    /// after the epoch. `no_owner`: why a socket found has no holder.
    fn new(socket: Result<DiagSocket, Reason>, no_owner: Option<Reason>, now_ms: u64) -> FlowEntry {
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

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The socket, or why there is none.
    fn socket(&self) -> Result<DiagSocket, Reason> {
        match self.gap {
            Some(r) if !r.has_socket() => Err(r),
            _ => Ok(DiagSocket { inode: self.inode, uid: self.uid, state: self.state, cookie: self.cookie }),
        }
    }

    /// Whether the entry is still within its TTL (a flow with a held
    /// socket, or a closed one's former holder: `flow_ttl`; no socket or
    /// no holder: `negative_ttl`) at `now_ms`.
    fn fresh(&self, cfg: &ResolverConfig, now_ms: u64) -> bool {
        let ttl = if self.gap.is_none() { cfg.flow_ttl } else { cfg.negative_ttl };
        let [a, b, c, d, e] = self.at;
        let age = now_ms.wrapping_sub(u64::from_le_bytes([a, b, c, d, e, 0, 0, 0])) & AT_MASK;
        u128::from(age) < ttl.as_millis()
    }

    /// What this entry answers at `now_ms` without asking the kernel, if it
    /// may answer at all (within its TTL, and not a listener standing in
    /// for a connection): a remembered reason, the holder a closed socket
    /// had (whatever `closed` finds for its cookie), or for a socket with a
    /// holder whatever `held` finds in the owner cache.
    fn answer(
        &self,
        cfg: &ResolverConfig,
        now_ms: u64,
        held: impl FnOnce(DiagSocket) -> Option<LocalEnd>,
        closed: impl FnOnce(u64) -> Option<Arc<Owner>>,
    ) -> Option<LocalEnd> {
        if !self.fresh(cfg, now_ms) || self.has(VIA_LISTENER) {
            return None;
        }
        match self.gap {
            Some(reason) => Some(LocalEnd::unlabeled(reason.token())),
            None if self.has(CLOSED) => Some(closed(self.cookie)?.end_of(self.socket().ok())),
            None => held(self.socket().ok()?),
        }
    }
}

/// Cache hits of a cache-only resolution, counted only if it answers.
#[derive(Default)]
struct Hits {
    flow: std::cell::Cell<u64>,
    owner: std::cell::Cell<u64>,
}

/// Who holds a socket, and its label.
#[derive(Debug)]
struct Owner {
    pid: u32,
    fd: u32,
    label: Label,
    process: ProcessInfo,
    /// When the holder was last seen holding the socket, as nanoseconds
    /// since the resolver's `epoch`: a time taken before the read that saw
    /// it, never after.
    checked: AtomicU64,
}

impl Owner {
    /// The local end this holder makes of socket `ds`.
    fn end(&self, ds: &DiagSocket) -> LocalEnd {
        self.end_of(Some(*ds))
    }

    fn end_of(&self, ds: Option<DiagSocket>) -> LocalEnd {
        LocalEnd { label: self.label.clone(), process: Some(self.process.clone()), uid: ds.map(|d| d.uid) }
    }
}

/// Where [`SocketResolver::search_likely`] found a socket's holder.
struct Likely {
    pid: u32,
    fd: u32,
    /// Born since the last full scan (not a recent holder).
    new_process: bool,
    /// The recent holder it was.
    recent: Option<Recent>,
}

/// One local end, resolved.
#[derive(Clone, Debug)]
struct LocalEnd {
    label: Label,
    process: Option<ProcessInfo>,
    uid: Option<u32>,
}

impl LocalEnd {
    fn unlabeled(reason: &'static str) -> LocalEnd {
        LocalEnd { label: Label::unlabeled(reason), process: None, uid: None }
    }
}

struct ScanState {
    /// When the scan in `owners` was started.
    last_start: Instant,
}

/// What a local end's lookup needs to know of the packet.
#[derive(Clone, Copy, Debug)]
struct PacketFacts {
    /// A TCP SYN: the flow cache is not asked.
    syn: bool,
    /// When the packet was read from the queue ([`QueueMeta::received`]).
    received: Option<Instant>,
}

/// How many recent holder processes are searched before anything else.
const RECENT_HOLDERS: usize = 16;

/// How long comm and exe read for a recent holder are used for its next
/// sockets without reading them again (then its exe link is compared).
const PROCESS_INFO_REUSE_NS: u64 = 1_000_000_000;

/// A process that held one of the sockets found most recently.
#[derive(Clone)]
struct Recent {
    /// Its process (pid, comm and exe as read then).
    process: ProcessInfo,
    /// When comm and exe were read (ns since the resolver's epoch).
    read_ns: u64,
    /// The fd it held that socket at: looked at first for its next socket
    /// (a closed descriptor's number is the next one `socket()` or
    /// `accept()` returns).
    fd: u32,
}

/// What one sock_diag lookup found for a local end.
#[derive(Clone, Copy, Debug)]
enum Found {
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

struct LocalAddrs {
    at: Instant,
    set: HashSet<IpAddr>,
}

/// The resolver: sock_diag + /proc + CIPSO/CALIPSO + static labels.
/// `Send + Sync`; share it between queue threads behind an `Arc`.
pub struct SocketResolver {
    cfg: ResolverConfig,
    peer: RwLock<Arc<PeerConfig>>,
    diag: SockDiag,
    flows: ShardedCache<FlowKey, FlowEntry>,
    owners_cache: ShardedCache<u32, Arc<Owner>>,
    /// The holders TCP sockets had before their processes closed them, by
    /// socket cookie, while the sockets finish their shutdown (see
    /// [`CLOSED`]).
    closed_holders: ShardedCache<u64, Arc<Owner>>,
    /// inode → (pid, fd)s and the pids from the last full `/proc` scan;
    /// swapped whole.
    owners: RwLock<Arc<procfs::Scan>>,
    /// The processes that held the sockets found most recently, newest
    /// first: where a new socket is looked for first.
    recent: Mutex<std::collections::VecDeque<Recent>>,
    /// Open links of the (pid, fd)s checked again and again.
    links: procfs::FdLinks,
    /// `/proc/PID/attr/current` answered `EINVAL`: no LSM provides it.
    no_attr_current: AtomicBool,
    /// Sockets (by inode) that a full scan found no process holding, and
    /// when: not scanned for again within `negative_ttl`.
    holderless: ShardedCache<u32, Instant>,
    /// Held while scanning (single flight); readers of `owners` never wait on it.
    scan: Mutex<ScanState>,
    local: RwLock<LocalAddrs>,
    stats: ResolverStats,
    epoch: Instant,
}

impl SocketResolver {
    /// Opens the sock_diag socket and does the first `/proc` scan.
    pub fn new(peer: PeerConfig, cfg: ResolverConfig) -> Result<Self, ResolveError> {
        let diag = SockDiag::new().map_err(ResolveError::SockDiag)?;
        let start = Instant::now();
        let map = procfs::scan(&cfg.proc_root)
            .map_err(|err| ResolveError::Proc { path: cfg.proc_root.display().to_string(), err })?;
        let stats = ResolverStats::default();
        bump(&stats.proc_scans);
        stats.proc_scan_sockets.store(map.owners.len() as u64, Ordering::Relaxed);
        Ok(SocketResolver {
            flows: ShardedCache::new(cfg.flow_cache_size, cfg.shards),
            owners_cache: ShardedCache::new(cfg.owner_cache_size, cfg.shards),
            closed_holders: ShardedCache::new(cfg.owner_cache_size, cfg.shards),
            owners: RwLock::new(Arc::new(map)),
            recent: Mutex::new(std::collections::VecDeque::with_capacity(RECENT_HOLDERS)),
            links: procfs::FdLinks::new(PROC_LINKS, cfg.shards),
            no_attr_current: AtomicBool::new(false),
            holderless: ShardedCache::new(cfg.owner_cache_size, cfg.shards),
            scan: Mutex::new(ScanState { last_start: start }),
            local: RwLock::new(LocalAddrs { at: start, set: local_addrs() }),
            peer: RwLock::new(Arc::new(peer)),
            diag,
            cfg,
            stats,
            epoch: start,
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The time a cache entry is judged at for a packet: when the packet
    /// was read from the queue, if known (no clock read per packet; an
    /// entry is then at most one batch's handling time more lenient), else
    /// now. In ms since `epoch`.
    fn judge_ms(&self, received: Option<Instant>) -> u64 {
        match received {
            Some(r) => r.saturating_duration_since(self.epoch).as_millis() as u64,
            None => self.now_ms(),
        }
    }

    /// The resolver's counters.
    pub fn stats(&self) -> &ResolverStats {
        &self.stats
    }

    /// Replace the peer configuration (on policy reload).
    pub fn set_peer_config(&self, peer: PeerConfig) {
        *self.peer.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(peer);
    }

    fn peer_config(&self) -> Arc<PeerConfig> {
        self.peer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The socket inode the flow cache currently holds for the local end
    /// `local` talking to `remote` (no lookup is made): for diagnostics and
    /// tests that compare with `ss -e`.
    pub fn cached_socket_inode(&self, proto: Proto, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
        let proto = match proto {
            Proto::Tcp => DiagProto::Tcp,
            Proto::Udp => DiagProto::Udp,
            _ => return None,
        };
        let key = FlowKey::new(proto, local, remote);
        let counters = CacheCounters::default();
        self.flows.get(&key, &counters)?.socket().ok().map(|s| s.inode)
    }

    /// Whether `ip` is an address of this host (loopback included).
    pub fn is_local(&self, ip: IpAddr) -> bool {
        if let Some(known) = self.is_local_cached(ip) {
            return known;
        }
        let ip = unmap_ip(ip);
        let set = local_addrs();
        let hit = set.contains(&ip);
        *self.local.write().unwrap_or_else(|e| e.into_inner()) = LocalAddrs { at: Instant::now(), set };
        hit
    }

    /// [`is_local`](Self::is_local) without refreshing the set of local
    /// addresses: `None` once it is older than `local_addr_ttl`.
    fn is_local_cached(&self, ip: IpAddr) -> Option<bool> {
        let ip = unmap_ip(ip);
        if ip.is_loopback() {
            return Some(true);
        }
        let l = self.local.read().unwrap_or_else(|e| e.into_inner());
        (l.at.elapsed() < self.cfg.local_addr_ttl).then(|| l.set.contains(&ip))
    }

    /// The peer label of the packet's source (see [`peer_label`]), counted
    /// into the stats.
    pub fn peer_label(&self, pkt: &PacketInfo, payload: &[u8]) -> Option<Label> {
        self.peer_label_with(&self.peer_config(), pkt, payload)
    }

    fn peer_label_with(&self, cfg: &PeerConfig, pkt: &PacketInfo, payload: &[u8]) -> Option<Label> {
        let (label, outcome) = peer_label(cfg, pkt, payload);
        match outcome {
            PeerOutcome::None => {}
            PeerOutcome::Option => bump(&self.stats.peer_options),
            PeerOutcome::UnknownDoi => {
                bump(&self.stats.peer_options);
                bump(&self.stats.unknown_doi);
            }
            PeerOutcome::Malformed(e) => {
                bump(&self.stats.peer_options);
                bump(&self.stats.bad_peer_options);
                log::debug!("malformed peer label option from {}: {e}", pkt.src);
            }
        }
        label
    }

    /// Resolve the local socket at `local` talking to `remote`. `syn`: the
    /// packet opens a TCP connection, so the flow cache is not asked (the
    /// 4-tuple may belong to a new socket).
    /// `pre`: this flow's sock_diag answer, when it was already asked (with
    /// the other end's, see [`labels_with`](Self::labels_with)).
    fn local_end(
        &self,
        proto: DiagProto,
        local: SocketAddr,
        remote: SocketAddr,
        pk: PacketFacts,
        pre: Option<Lookup>,
    ) -> LocalEnd {
        let syn = pk.syn;
        let key = FlowKey::new(proto, local, remote);
        let cached = if syn { None } else { self.flows.get(&key, &self.stats.flow) };
        // A held socket is answered from the caches; one whose holder is
        // gone (or unknown) is asked about again.
        let now_ms = self.judge_ms(pk.received);
        let answer = cached.as_ref().and_then(|e| {
            e.answer(&self.cfg, now_ms, |ds| self.owner_of(&ds, proto, true, pk.received), |c| self.closed_holder(c))
        });
        if let Some(end) = answer {
            return end;
        }
        let previous = cached.as_ref().and_then(|e| e.socket().ok());
        let found = self.query(proto, key.local(), key.remote(), previous.is_some(), pre);
        let now_socket = match found {
            Found::Socket(ds) | Found::Listener(ds) | Found::Fileless(ds) => Some(ds),
            Found::Nothing(_) => None,
        };
        if let Some(old) = previous {
            if now_socket.map(|s| s.cookie) != Some(old.cookie) {
                bump(&self.stats.flow.invalidations);
            }
        }
        let now_ms = self.now_ms();
        let (entry, end) = match found {
            Found::Socket(ds) | Found::Listener(ds) => {
                let end = self
                    .owner_of(&ds, proto, false, pk.received)
                    .unwrap_or_else(|| LocalEnd::unlabeled(Reason::KernelSocket.token()));
                let no_owner = match (&end.process, &end.label.origin) {
                    (None, Origin::Unlabeled(r)) => Reason::of(r),
                    _ => None,
                };
                let mut entry = FlowEntry::new(Ok(ds), no_owner, now_ms);
                if matches!(found, Found::Listener(_)) || ds.state == sockdiag::TCP_LISTEN {
                    entry.flags |= VIA_LISTENER;
                }
                (entry, end)
            }
            Found::Fileless(ds) => {
                // The same kernel socket as before, now closed by its process:
                // it keeps the holder it had (remembered by the flow, or still
                // in the owner cache under its old inode).
                // (sock_diag reports uid 0 for a socket without a file.)
                let same = previous.filter(|old| old.cookie == ds.cookie);
                let closed = same.and_then(|old| {
                    cached
                        .as_ref()
                        .filter(|e| e.has(CLOSED))
                        .and_then(|e| self.closed_holder(e.cookie))
                        .or_else(|| self.owners_cache.remove(&old.inode))
                });
                let ds = DiagSocket { uid: same.map_or(ds.uid, |old| old.uid), ..ds };
                match closed {
                    Some(o) => {
                        let end = o.end_of(Some(ds));
                        let mut entry = FlowEntry::new(Ok(ds), None, now_ms);
                        entry.flags |= CLOSED;
                        self.closed_holders.insert_sweeping(ds.cookie, o, &CacheCounters::default(), self.cfg.flow_ttl);
                        (entry, end)
                    }
                    None => {
                        let r = Reason::SocketClosed;
                        (FlowEntry::new(Err(r), None, now_ms), LocalEnd::unlabeled(r.token()))
                    }
                }
            }
            Found::Nothing(r) => (FlowEntry::new(Err(r), None, now_ms), LocalEnd::unlabeled(r.token())),
        };
        if !syn || self.cfg.cache_syn_flows {
            self.flows.insert_sweeping(key, entry, &self.stats.flow, self.cfg.flow_ttl);
        }
        end
    }

    /// The holder a closed TCP socket had, by its cookie.
    fn closed_holder(&self, cookie: u64) -> Option<Arc<Owner>> {
        self.closed_holders.get(&cookie, &CacheCounters::default())
    }

    /// [`local_end`](Self::local_end) from the caches alone (see the
    /// module documentation); `None` when that needs slow work.
    fn cached_end(
        &self,
        proto: DiagProto,
        local: SocketAddr,
        remote: SocketAddr,
        pk: PacketFacts,
        hits: &Hits,
    ) -> Option<LocalEnd> {
        if pk.syn {
            return None;
        }
        let key = FlowKey::new(proto, local, remote);
        let e = self.flows.get(&key, &CacheCounters::default())?;
        let end = e.answer(
            &self.cfg,
            self.judge_ms(pk.received),
            |ds| {
                let end = self.cached_owner(&ds, proto, true, pk.received, &CacheCounters::default()).ok()?;
                hits.owner.set(hits.owner.get() + 1);
                Some(end)
            },
            |c| self.closed_holder(c),
        )?;
        hits.flow.set(hits.flow.get() + 1);
        Some(end)
    }

    /// sock_diag lookup. A TCP connection with no socket of its own yet (a
    /// request mini-socket in SYN_RECV, or a child in the listener's accept
    /// queue: ESTABLISHED or CLOSE_WAIT without a file) is answered by its
    /// listener.
    /// `pre`: the exact lookup's answer, already asked.
    fn query(
        &self,
        proto: DiagProto,
        local: SocketAddr,
        remote: SocketAddr,
        had_socket: bool,
        pre: Option<Lookup>,
    ) -> Found {
        let closed = if had_socket { Reason::SocketClosed } else { Reason::NoSocket };
        let answer = pre.unwrap_or_else(|| {
            bump(&self.stats.sock_diag_queries);
            self.diag.lookup(proto, local, remote)
        });
        let ds = match answer {
            Ok(Some(ds)) => ds,
            Ok(None) => return Found::Nothing(closed),
            Err(e) => {
                bump(&self.stats.sock_diag_errors);
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
        bump(&self.stats.sock_diag_queries);
        match self.diag.lookup(proto, local, any) {
            Ok(Some(l)) if l.inode != 0 => Found::Listener(l),
            Ok(_) => Found::Nothing(Reason::SocketClosed),
            Err(_) => {
                bump(&self.stats.sock_diag_errors);
                Found::Nothing(Reason::SockDiagError)
            }
        }
    }

    /// The holder of a socket. `None` when no process holds it. With
    /// `cached_only`, only the owner cache is asked (a TCP socket's holder
    /// is then trusted without re-validation, see
    /// [`ResolverConfig::owner_revalidate_after`]); otherwise the holder is
    /// looked for in this order, stopping at the first found: the most
    /// recent holder at the fd number its last socket had, the holders the
    /// last full scan saw, the processes that held the sockets found last,
    /// the processes born since the last full scan, and only then a new
    /// full scan of `/proc`.
    fn owner_of(
        &self,
        ds: &DiagSocket,
        proto: DiagProto,
        cached_only: bool,
        received: Option<Instant>,
    ) -> Option<LocalEnd> {
        match self.cached_owner(ds, proto, cached_only, received, &self.stats.owner) {
            Ok(end) => return Some(end),
            Err(true) => {
                bump(&self.stats.owner.invalidations);
                self.owners_cache.remove(&ds.inode);
            }
            Err(false) => {}
        }
        if cached_only {
            return None;
        }
        let t0 = Instant::now();
        // Every /proc read below happens after this: the owner's check time.
        let t0_ns = self.now_ns();
        let mut gone = false;
        // First the most recent holder, at the fd number its last socket had
        // (one read, through a kept link): a process that opens sockets one after another
        // gets the same fd number back, and this asks no large map.
        let first = self.recent.lock().unwrap_or_else(|e| e.into_inner()).front().cloned();
        let tried = first.as_ref().map(|r| (r.process.pid, r.fd));
        if let Some(r) = &first {
            if self.links.holds(&self.cfg.proc_root, r.process.pid, r.fd, ds.inode, &self.stats.proc_link) {
                if let Some(end) = self.adopt_one(ds, (r.process.pid, r.fd), true, Some(r), t0_ns, &mut gone) {
                    bump(&self.stats.owner_found_recent);
                    return Some(end);
                }
            }
        }
        let no_count = CacheCounters::default();
        if self.holderless.get(&ds.inode, &no_count).is_some_and(|at| at.elapsed() < self.cfg.negative_ttl) {
            return None;
        }
        let scan = self.owners.read().unwrap_or_else(|e| e.into_inner()).clone();
        let known = scan.owners.get(&ds.inode).map(Vec::as_slice).unwrap_or_default();
        if let Some(end) = self.adopt(ds, known, false, t0_ns, &mut gone) {
            return Some(end);
        }
        if let Some(l) = self.search_likely(ds.inode, &scan.pids, tried) {
            if let Some(end) = self.adopt_one(ds, (l.pid, l.fd), true, l.recent.as_ref(), t0_ns, &mut gone) {
                bump(if l.new_process { &self.stats.owner_found_new_process } else { &self.stats.owner_found_recent });
                return Some(end);
            }
        }
        drop(scan);
        self.rescan(t0);
        let scan = self.owners.read().unwrap_or_else(|e| e.into_inner()).clone();
        let fresh = scan.owners.get(&ds.inode).map(Vec::as_slice).unwrap_or_default();
        if let Some(end) = self.adopt(ds, fresh, false, t0_ns, &mut gone) {
            return Some(end);
        }
        if gone {
            return Some(LocalEnd::unlabeled(Reason::ProcessGone.token()));
        }
        self.holderless.insert_sweeping(ds.inode, Instant::now(), &no_count, self.cfg.negative_ttl);
        None
    }

    /// The first of `holders` that still holds socket `ds`, with its label
    /// and process read, cached as the socket's owner. Sets `gone` when a
    /// holder exited on the way. `just_seen`: the holders were read from
    /// `/proc` a moment ago, so they are not checked again. `checked`: a
    /// time (ns since `epoch`) before every read of `/proc` that found them.
    fn adopt(
        &self,
        ds: &DiagSocket,
        holders: &[(u32, u32)],
        just_seen: bool,
        checked: u64,
        gone: &mut bool,
    ) -> Option<LocalEnd> {
        holders.iter().find_map(|&h| self.adopt_one(ds, h, just_seen, None, checked, gone))
    }

    /// [`adopt`](Self::adopt) for one holder (pid, fd); `known`: the same
    /// process as a recent holder, whose comm and exe are reused as they are
    /// within [`PROCESS_INFO_REUSE_NS`] of their reading, and after that if
    /// its exe is unchanged.
    fn adopt_one(
        &self,
        ds: &DiagSocket,
        (pid, fd): (u32, u32),
        just_seen: bool,
        known: Option<&Recent>,
        checked: u64,
        gone: &mut bool,
    ) -> Option<LocalEnd> {
        let root = &self.cfg.proc_root;
        if !just_seen && !procfs::holds(root, pid, fd, ds.inode) {
            // The fd was closed (or passed on); only a holder that
            // exited counts as a process gone.
            *gone |= !procfs::alive(root, pid);
            return None;
        }
        let label = match procfs::socket_label(root, pid, fd, &self.no_attr_current) {
            Ok(l) => l,
            Err(procfs::LabelMiss::Gone) => {
                *gone = true;
                return None;
            }
        };
        let now = self.now_ns();
        let known = known.filter(|k| k.process.pid == pid);
        let (process, read_ns) = match known {
            Some(k) if now.saturating_sub(k.read_ns) < PROCESS_INFO_REUSE_NS => (k.process.clone(), k.read_ns),
            _ => match procfs::process_info(root, pid, known.map(|k| &k.process)) {
                Some(p) => (p, now),
                None => {
                    *gone = true;
                    return None;
                }
            },
        };
        let o = Arc::new(Owner { pid, fd, label, process: process.clone(), checked: AtomicU64::new(checked) });
        self.owners_cache.insert_sweeping(ds.inode, o.clone(), &self.stats.owner, OWNER_MAX_IDLE);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|r| r.process.pid != pid);
        recent.push_front(Recent { process, read_ns, fd });
        recent.truncate(RECENT_HOLDERS);
        Some(o.end(ds))
    }

    /// Look for the holder of a new socket where it most likely is, without
    /// a full scan: among the processes that held the sockets found last
    /// (at the fd each held its last one, then all their fds), then among
    /// the processes that `known_pids` (the last full scan) did not see,
    /// newest first. `tried`: a (pid, fd) already found not to hold it.
    fn search_likely(&self, inode: u32, known_pids: &HashSet<u32>, tried: Option<(u32, u32)>) -> Option<Likely> {
        let root = &self.cfg.proc_root;
        let recent: Vec<Recent> = self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        for r in &recent {
            let pid = r.process.pid;
            let at_last_fd = tried != Some((pid, r.fd)) && procfs::holds(root, pid, r.fd, inode);
            let fd = if at_last_fd { Some(r.fd) } else { procfs::find_in(root, pid, inode) };
            if let Some(fd) = fd {
                return Some(Likely { pid, fd, new_process: false, recent: Some(r.clone()) });
            }
        }
        let mut born: Vec<u32> = procfs::pids(root)
            .ok()?
            .into_iter()
            .filter(|p| !known_pids.contains(p) && !recent.iter().any(|r| r.process.pid == *p))
            .collect();
        born.sort_unstable_by(|a, b| b.cmp(a));
        born.into_iter().find_map(|pid| {
            procfs::find_in(root, pid, inode).map(|fd| Likely { pid, fd, new_process: true, recent: None })
        })
    }

    /// The cached holder of a socket, re-validated (one read of `/proc/PID/fd/N`) unless
    /// `trust_tcp` and the socket is TCP, or the last check came after the
    /// packet was `received` from the queue (the holder still held the
    /// socket after the packet was sent, so it sent it: an inode never comes
    /// back), or came within `owner_revalidate_after`. `Err(true)`: the
    /// cached holder no longer holds it; `Err(false)`: none cached. Lookups
    /// are counted into `counters`.
    fn cached_owner(
        &self,
        ds: &DiagSocket,
        proto: DiagProto,
        trust_tcp: bool,
        received: Option<Instant>,
        counters: &CacheCounters,
    ) -> Result<LocalEnd, bool> {
        let o = self.owners_cache.get(&ds.inode, counters).ok_or(false)?;
        if trust_tcp && proto == DiagProto::Tcp {
            return Ok(o.end(ds));
        }
        let checked = o.checked.load(Ordering::Relaxed);
        if received.is_some_and(|r| checked > r.saturating_duration_since(self.epoch).as_nanos() as u64) {
            return Ok(o.end(ds));
        }
        let now = self.now_ns();
        let recent = now.saturating_sub(checked) < self.cfg.owner_revalidate_after.as_nanos() as u64;
        if !recent {
            if !self.links.holds(&self.cfg.proc_root, o.pid, o.fd, ds.inode, &self.stats.proc_link) {
                return Err(true);
            }
            o.checked.store(now, Ordering::Relaxed);
        }
        Ok(o.end(ds))
    }

    /// Rebuild the scan unless one started after `t0` (single flight: a
    /// caller that waited for another's scan uses its result).
    fn rescan(&self, t0: Instant) {
        let mut st = self.scan.lock().unwrap_or_else(|e| e.into_inner());
        if st.last_start >= t0 {
            return;
        }
        let start = Instant::now();
        match procfs::scan(&self.cfg.proc_root) {
            Ok(map) => {
                self.stats.proc_scan_sockets.store(map.owners.len() as u64, Ordering::Relaxed);
                *self.owners.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
            }
            Err(e) => log::warn!("scan of {}: {e}", self.cfg.proc_root.display()),
        }
        bump(&self.stats.proc_scans);
        st.last_start = start;
    }
}

impl Resolver for SocketResolver {
    fn resolve(&self, pkt: &PacketInfo, meta: &QueueMeta, payload: &[u8]) -> Labels {
        self.resolve_with(&self.peer_config(), pkt, meta, payload)
    }

    fn resolve_cached(&self, pkt: &PacketInfo, meta: &QueueMeta, payload: &[u8]) -> Option<Labels> {
        self.resolve_cached_with(&self.peer_config(), pkt, meta, payload)
    }

    fn metrics(&self) -> Vec<crate::labels::MetricFamily> {
        self.stats().families()
    }
}

/// A [`SocketResolver`] seen through one policy's peer configuration: the
/// caches, the sock_diag sockets and the counters are shared by every view,
/// so a policy reload builds a new view (cheap) instead of a new resolver.
/// Made by [`SocketResolver::for_policy`].
pub struct PolicyResolver {
    core: Arc<SocketResolver>,
    peer: PeerConfig,
}

impl PolicyResolver {
    /// The shared resolver (for its stats).
    pub fn core(&self) -> &Arc<SocketResolver> {
        &self.core
    }
}

impl Resolver for PolicyResolver {
    fn resolve(&self, pkt: &PacketInfo, meta: &QueueMeta, payload: &[u8]) -> Labels {
        self.core.resolve_with(&self.peer, pkt, meta, payload)
    }

    fn resolve_cached(&self, pkt: &PacketInfo, meta: &QueueMeta, payload: &[u8]) -> Option<Labels> {
        self.core.resolve_cached_with(&self.peer, pkt, meta, payload)
    }

    fn metrics(&self) -> Vec<crate::labels::MetricFamily> {
        self.core.stats().families()
    }
}

impl SocketResolver {
    /// A view of this resolver with `peer` (usually
    /// `PeerConfig::from_policy(&policy)`) as its peer configuration.
    pub fn for_policy(self: &Arc<Self>, peer: PeerConfig) -> PolicyResolver {
        PolicyResolver { core: self.clone(), peer }
    }

    fn resolve_with(&self, peer: &PeerConfig, pkt: &PacketInfo, meta: &QueueMeta, payload: &[u8]) -> Labels {
        self.labels_with(peer, pkt, meta, payload, None).unwrap_or_else(|| Labels::unresolved("not_resolved"))
    }

    fn resolve_cached_with(
        &self,
        peer: &PeerConfig,
        pkt: &PacketInfo,
        meta: &QueueMeta,
        payload: &[u8],
    ) -> Option<Labels> {
        let hits = Hits::default();
        let l = self.labels_with(peer, pkt, meta, payload, Some(&hits))?;
        self.stats.flow.hits.fetch_add(hits.flow.get(), Ordering::Relaxed);
        self.stats.owner.hits.fetch_add(hits.owner.get(), Ordering::Relaxed);
        Some(l)
    }

    /// The packet's labels. With `cached` (cache-only), `None` as soon as a
    /// local end or the local-address set needs slow work, before anything
    /// is counted; without it, always `Some`.
    fn labels_with(
        &self,
        peer: &PeerConfig,
        pkt: &PacketInfo,
        meta: &QueueMeta,
        payload: &[u8],
        cached: Option<&Hits>,
    ) -> Option<Labels> {
        let hook = Hook::from_nf(meta.hook);
        // Only TCP and UDP packets with ports have sockets to look up.
        let diag_proto = match (pkt.proto, pkt.sport, pkt.dport) {
            (Proto::Tcp, Some(_), Some(_)) => Some(DiagProto::Tcp),
            (Proto::Udp, Some(_), Some(_)) => Some(DiagProto::Udp),
            _ => None,
        };
        let pk = PacketFacts { syn: pkt.tcp_syn, received: meta.received };
        let resolve_end = |local: SocketAddr, remote: SocketAddr, pre: Option<Lookup>| match (diag_proto, cached) {
            (None, _) => Some(LocalEnd::unlabeled("unsupported_proto")),
            (Some(p), None) => Some(self.local_end(p, local, remote, pk, pre)),
            (Some(p), Some(hits)) => self.cached_end(p, local, remote, pk, hits),
        };
        let is_local = |ip: IpAddr| match cached {
            None => Some(self.is_local(ip)),
            Some(_) => self.is_local_cached(ip),
        };
        let (src, dst) =
            (SocketAddr::new(pkt.src, pkt.sport.unwrap_or(0)), SocketAddr::new(pkt.dst, pkt.dport.unwrap_or(0)));

        let src_local = matches!(hook, Some(Hook::Output)) || is_local(pkt.src)?;
        let dst_local = matches!(hook, Some(Hook::Input)) || is_local(pkt.dst)?;
        // A SYN between two local sockets is looked up afresh at both ends
        // (the flow cache is not asked for SYNs): both sock_diag lookups go
        // to the kernel together.
        let (src_pre, dst_pre) = match diag_proto {
            Some(p) if cached.is_none() && pk.syn && src_local && dst_local => {
                self.stats.sock_diag_queries.fetch_add(2, Ordering::Relaxed);
                let [a, b] = self.diag.lookup_two(p, (src, dst), (dst, src));
                (Some(a), Some(b))
            }
            _ => (None, None),
        };
        let src_end = if src_local { Some(resolve_end(src, dst, src_pre)?) } else { None };
        let dst_end = if dst_local { Some(resolve_end(dst, src, dst_pre)?) } else { None };

        let mut l = Labels::unresolved("not_resolved");
        l.secmark = secmark_context(meta);
        l.peer = self.peer_label_with(peer, pkt, payload);
        let mut sock_uid = None;
        match src_end {
            Some(end) => {
                l.source = end.label;
                l.source_process = end.process;
                sock_uid = end.uid;
            }
            None => l.source = l.peer.clone().unwrap_or_else(|| Label::unlabeled("remote")),
        }
        match dst_end {
            Some(end) => {
                l.dest = end.label;
                l.dest_process = end.process;
            }
            None => {
                l.dest = match peer.static_label(pkt.dst) {
                    Some(c) => Label { context: c.clone(), origin: Origin::Static },
                    None => Label::unlabeled("remote"),
                }
            }
        }
        l.uid = meta.uid.or(sock_uid);
        l.gid = meta.gid;
        Some(l)
    }
}

/// The facts of a TCP/UDP packet from `src` to `dst` with no options: for
/// diagnostics ("who owns this flow?") and tests.
pub fn flow_packet(proto: Proto, src: SocketAddr, dst: SocketAddr) -> PacketInfo {
    PacketInfo {
        src: src.ip(),
        dst: dst.ip(),
        proto,
        sport: Some(src.port()),
        dport: Some(dst.port()),
        icmp: None,
        tcp_syn: false,
        label_option: None,
    }
}

/// What the packet's label option was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerOutcome {
    /// No CIPSO/CALIPSO option.
    None,
    /// A well-formed option with a mapped DOI.
    Option,
    /// A well-formed option with a DOI the policy does not map.
    UnknownDoi,
    /// A malformed option.
    Malformed(peer::PeerError),
}

/// The peer label of the packet's source address: the CIPSO/CALIPSO level
/// (DOI mapped by `cfg.dois`) and/or the static address label.
///
/// | static label | option level | peer label |
/// |---|---|---|
/// | none | none | `None` |
/// | C | none | C ([`Origin::Static`]) |
/// | C | L | C with its range replaced by L ([`Origin::PeerOption`]) |
/// | none | L | `system_u:object_r:netlabel_peer_t:L` ([`Origin::PeerOption`]) |
/// | any | malformed | unlabeled `bad_peer_option` |
/// | any | unmapped DOI | unlabeled `unknown_doi` |
pub fn peer_label(cfg: &PeerConfig, pkt: &PacketInfo, payload: &[u8]) -> (Option<Label>, PeerOutcome) {
    let parsed = match &pkt.label_option {
        None => Ok(None),
        Some(LabelOption::Ipv4Options(r)) => match payload.get(r.clone()) {
            Some(b) => peer::parse_cipso(b),
            None => Err(peer::PeerError::Truncated("IPv4 options")),
        },
        Some(LabelOption::Ipv6HopByHop(r)) => match payload.get(r.clone()) {
            Some(b) => peer::parse_calipso(b),
            None => Err(peer::PeerError::Truncated("hop-by-hop")),
        },
    };
    let (level, outcome) = match parsed {
        Ok(None) => (None, PeerOutcome::None),
        Ok(Some((doi, level))) => match cfg.dois.get(&doi) {
            Some(DoiMap::Pass) => (Some(level), PeerOutcome::Option),
            None => return (Some(Label::unlabeled("unknown_doi")), PeerOutcome::UnknownDoi),
        },
        Err(e) => return (Some(Label::unlabeled("bad_peer_option")), PeerOutcome::Malformed(e)),
    };
    let label = match (cfg.static_label(pkt.src), level) {
        (None, None) => None,
        (Some(c), None) => Some(Label { context: c.clone(), origin: Origin::Static }),
        (Some(c), Some(l)) => Some(Label { context: c.with_range(Range::single(l)), origin: Origin::PeerOption }),
        (None, Some(l)) => Some(Label { context: netlabel_peer(l), origin: Origin::PeerOption }),
    };
    (label, outcome)
}

/// `system_u:object_r:netlabel_peer_t:<level>`: the peer context for a
/// packet option with no static label (as SELinux's `netlabel_peer_t`).
pub fn netlabel_peer(level: Level) -> SecurityContext {
    SecurityContext::new("system_u", "object_r", "netlabel_peer_t", Some(Range::single(level)))
        .unwrap_or_else(|_| unreachable!("constant identifiers are valid"))
}

fn unmap_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn local_addrs() -> HashSet<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(v) => v.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            log::warn!("cannot list local addresses: {e}");
            HashSet::new()
        }
    }
}

#[cfg(test)]
mod tests;
