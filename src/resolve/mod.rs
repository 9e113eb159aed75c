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
//!    holder's comm, exe and cgroup (its comm reused while its exe link is
//!    unchanged): at once for [`Resolver::resolve`], else left unread
//!    ([`Resolver::resolve_deferred`]) until [`Resolver::complete`] or a
//!    `resolve` of a later packet reads them, checking after the read that
//!    the holder still holds the socket (`Owners::read_process`);
//! 4. maps the packet's CIPSO/CALIPSO option (parsed with the packet,
//!    [`peer`]) through the policy's DOI map and applies static address
//!    labels from the policy ([`PeerConfig`], [`peer_label`]).
//!
//! The parts, each in its own file: the flow table (`flow.rs`), the owner
//! search (`owner.rs`), what is asked of the kernel (`kernel.rs`, a
//! [`KernelView`]; [`SysKernel`] outside tests, a fake in the unit tests),
//! the local addresses (`local.rs`), the other network namespaces
//! ([`netns`]), the counters ([`ResolverStats`]).
//! This file composes them; about a fifth of its length is this
//! documentation, which is why it is almost 700 lines.
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
//! [`ResolverConfig::owner_revalidate_after`]); plus mapping the packet's
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
//! | `remote`            | the end is not on this host (nor at an address of another network namespace on it) and no static/peer label names it |
//! | `netns_ambiguous`   | the end's address is in two or more other network namespaces and not exactly one has a socket for the flow (counted in [`ResolverStats::netns_ambiguous`]) |
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
//! * An end that is not local but whose address another network namespace
//!   on this host has (a container's) is resolved as a local end inside
//!   that namespace ([`netns`]: the flow cache key carries the namespace;
//!   an address of two or more namespaces needs exactly one with a socket
//!   for the flow, else `netns_ambiguous`).
//! * `peer`: the CIPSO/CALIPSO level and/or static address label of the
//!   source address; `None` when there is neither.
//! * `uid`/`gid`: NFQA_UID/GID when the kernel gave them, else the sending
//!   socket's uid from sock_diag (no gid is known then).

pub mod cache;
mod config;
mod end;
mod flow;
pub mod kernel;
mod owner;
pub use crate::packet::peer;
mod local;
pub mod netns;
mod peer_label;
pub mod procfs;
pub mod sockdiag;
mod stats;

use crate::labels::{secmark_context, Hook, Label, Labels, Origin, ProcessInfo, QueueMeta, Resolver, Unread};
use crate::packet::{PacketInfo, Proto};
use cache::CacheCounters;
pub use config::ResolverConfig;
use end::{LocalEnd, Reason};
use flow::{FlowEntry, FlowKey, FlowTtl, Flows, Found, CLOSED, VIA_LISTENER};
pub use kernel::{KernelView, SysKernel};
use local::LocalAddrs;
use netns::NsIndex;
use owner::{Owner, OwnerTuning, Owners};
pub use peer_label::{netlabel_peer, peer_label, PeerConfig, PeerOutcome};
use sockdiag::{DiagProto, DiagSocket, Lookup};
use stats::bump;
pub use stats::ResolverStats;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Why the resolver could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("cannot open NETLINK_SOCK_DIAG socket: {0}")]
    SockDiag(std::io::Error),
    #[error("cannot scan {path}: {err}")]
    Proc { path: String, err: std::io::Error },
}

/// Cache hits of a cache-only resolution, counted only if it answers.
#[derive(Default)]
struct Hits {
    flow: std::cell::Cell<u64>,
    owner: std::cell::Cell<u64>,
}

/// What a local end's lookup needs to know of the packet.
#[derive(Clone, Copy, Debug)]
struct PacketFacts {
    /// A TCP SYN: the flow cache is not asked.
    syn: bool,
    /// When the packet was read from the queue ([`QueueMeta::received`]).
    received: Option<Instant>,
    /// Read a new holder's comm, exe and cgroup as soon as it is found
    /// (else when first needed, see [`Resolver::resolve_deferred`]).
    read_process: bool,
}

/// The resolver: sock_diag + /proc + CIPSO/CALIPSO + static labels, made
/// of parts that each own their state: the flow table ([`flow::Flows`]),
/// the owner search ([`owner::Owners`]), the kernel it asks
/// ([`KernelView`], [`SysKernel`] outside tests), the local addresses and
/// the counters. `Send + Sync`; share it between queue threads behind an
/// `Arc`.
pub struct SocketResolver<K: KernelView = SysKernel> {
    cfg: ResolverConfig,
    peer: RwLock<Arc<PeerConfig>>,
    kernel: K,
    flows: Flows,
    owners: Owners,
    local: LocalAddrs,
    stats: ResolverStats,
    epoch: Instant,
}

impl SocketResolver<SysKernel> {
    /// Opens the sock_diag socket and does the first `/proc` scan.
    pub fn new(peer: PeerConfig, cfg: ResolverConfig) -> Result<Self, ResolveError> {
        let kernel = SysKernel::new(cfg.proc_root.clone(), cfg.shards).map_err(ResolveError::SockDiag)?;
        // A freed namespace index waits out every flow entry that could name it.
        let quarantine = cfg.flow_ttl.max(cfg.negative_ttl) + std::time::Duration::from_secs(1);
        let kernel = if cfg.other_netns { kernel.with_netns(quarantine) } else { kernel };
        let start = Instant::now();
        let first = procfs::scan(kernel.proc_root())
            .map_err(|err| ResolveError::Proc { path: cfg.proc_root.display().to_string(), err })?;
        Ok(SocketResolver::assemble(kernel, first, peer, cfg, start))
    }
}

impl<K: KernelView> SocketResolver<K> {
    /// A resolver over `kernel`, whose first full scan (started at `start`,
    /// the resolver's epoch) found `first`.
    fn assemble(kernel: K, first: procfs::Scan, peer: PeerConfig, cfg: ResolverConfig, start: Instant) -> Self {
        let stats = ResolverStats::default();
        bump(&stats.proc_scans);
        stats.proc_scan_sockets.store(first.owners.len() as u64, Ordering::Relaxed);
        let tuning = OwnerTuning { negative_ttl: cfg.negative_ttl, revalidate_after: cfg.owner_revalidate_after };
        let ttl = FlowTtl { held: cfg.flow_ttl, negative: cfg.negative_ttl };
        SocketResolver {
            flows: Flows::new(ttl, cfg.flow_cache_size, cfg.owner_cache_size, cfg.shards),
            owners: Owners::new(first, tuning, cfg.owner_cache_size, cfg.shards, start),
            local: LocalAddrs::new(cfg.local_addr_ttl, start),
            peer: RwLock::new(Arc::new(peer)),
            kernel,
            cfg,
            stats,
            epoch: start,
        }
    }

    /// A resolver over `kernel` (a fake in unit tests), its first scan done.
    #[cfg(test)]
    fn with_kernel(kernel: K, peer: PeerConfig, cfg: ResolverConfig) -> Self {
        let start = Instant::now();
        let first = kernel.scan().unwrap_or_default();
        SocketResolver::assemble(kernel, first, peer, cfg, start)
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
        self.local.is_local(ip)
    }

    /// The peer label of the packet's source (see [`peer_label`]), counted
    /// into the stats.
    pub fn peer_label(&self, pkt: &PacketInfo) -> Option<Label> {
        self.peer_label_with(&self.peer_config(), pkt)
    }

    fn peer_label_with(&self, cfg: &PeerConfig, pkt: &PacketInfo) -> Option<Label> {
        let (label, outcome) = peer_label(cfg, pkt);
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
        ns: NsIndex,
        proto: DiagProto,
        local: SocketAddr,
        remote: SocketAddr,
        pk: PacketFacts,
        pre: Option<Lookup>,
    ) -> LocalEnd {
        let syn = pk.syn;
        let key = FlowKey::in_netns(ns, proto, local, remote);
        let cached = if syn { None } else { self.flows.get(&key, &self.stats.flow) };
        // A held socket is answered from the caches; one whose holder is
        // gone (or unknown) is asked about again.
        let now_ms = self.judge_ms(pk.received);
        let answer = cached.as_ref().and_then(|e| {
            e.answer(
                self.flows.ttl(),
                now_ms,
                |ds| self.owner_of(&ds, proto, true, pk),
                |c| self.flows.closed_holder(c),
            )
        });
        if let Some(end) = answer {
            return end;
        }
        let previous = cached.as_ref().and_then(|e| e.socket().ok());
        let lookup = |p: DiagProto, l: SocketAddr, r: SocketAddr| self.lookup_in(ns, p, l, r);
        let found = flow::query(&lookup, &self.stats, proto, key.local(), key.remote(), previous.is_some(), pre);
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
                    .owner_of(&ds, proto, false, pk)
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
                        .and_then(|e| self.flows.closed_holder(e.cookie))
                        .or_else(|| self.owners.take(old.inode))
                });
                let ds = DiagSocket { uid: same.map_or(ds.uid, |old| old.uid), ..ds };
                match closed {
                    Some(o) => {
                        let end = o.end_of(Some(ds));
                        let mut entry = FlowEntry::new(Ok(ds), None, now_ms);
                        entry.flags |= CLOSED;
                        self.flows.keep_closed(ds.cookie, o);
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
            self.flows.insert(key, entry, &self.stats.flow);
        }
        end
    }

    /// A sock_diag lookup in namespace `ns` (0: labelgate's own), counted
    /// into `netns_lookups` when it is another.
    fn lookup_in(&self, ns: NsIndex, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> Lookup {
        if ns == 0 {
            return self.kernel.lookup(proto, local, remote);
        }
        bump(&self.stats.netns_lookups);
        self.kernel.lookup_in(ns, proto, local, remote)
    }

    /// The local end at `local` (talking to `remote`) in whichever of the
    /// namespaces `cands` (two or more have the address) has a socket for
    /// the full tuple: exactly one must, else `netns_ambiguous`.
    fn ambiguous_end(
        &self,
        cands: &[NsIndex],
        proto: DiagProto,
        local: SocketAddr,
        remote: SocketAddr,
        pk: PacketFacts,
    ) -> LocalEnd {
        let mut hits = Vec::new();
        for &ns in cands {
            bump(&self.stats.sock_diag_queries);
            if let Ok(Some(ds)) = self.lookup_in(ns, proto, local, remote) {
                hits.push((ns, ds));
            }
        }
        match hits.as_slice() {
            [(ns, ds)] => self.placed(*ns, self.local_end(*ns, proto, local, remote, pk, Some(Ok(Some(*ds))))),
            _ => {
                bump(&self.stats.netns_ambiguous);
                LocalEnd::unlabeled("netns_ambiguous")
            }
        }
    }

    /// `end` as found in namespace `ns`: its process names the namespace
    /// (records carry it).
    fn placed(&self, ns: NsIndex, mut end: LocalEnd) -> LocalEnd {
        if let Some(p) = end.process.as_mut() {
            p.netns = self.kernel.netns_inode(ns);
        }
        end
    }

    /// The holder of socket `ds` (see [`Owners::owner_of`]).
    fn owner_of(&self, ds: &DiagSocket, proto: DiagProto, cached_only: bool, pk: PacketFacts) -> Option<LocalEnd> {
        self.owners.owner_of(&self.kernel, &self.stats, ds, proto, cached_only, pk.received, pk.read_process)
    }

    /// Read the process facts of `end`'s holder if they were left unread
    /// ([`Owners::read_process`]), keeping the netns it was placed in.
    fn read_unread(&self, process: &mut Option<ProcessInfo>, unread: Option<&Owner>) {
        let Some(o) = unread else { return };
        let netns = process.as_ref().and_then(|p| p.netns);
        *process = self.owners.read_process(&self.kernel, &self.stats, o).map(|p| ProcessInfo { netns, ..p });
    }

    /// [`local_end`](Self::local_end) from the caches alone (see the
    /// module documentation); `None` when that needs slow work.
    fn cached_end(
        &self,
        ns: NsIndex,
        proto: DiagProto,
        local: SocketAddr,
        remote: SocketAddr,
        pk: PacketFacts,
        hits: &Hits,
    ) -> Option<LocalEnd> {
        if pk.syn {
            return None;
        }
        let key = FlowKey::in_netns(ns, proto, local, remote);
        let e = self.flows.get(&key, &CacheCounters::default())?;
        let end = e.answer(
            self.flows.ttl(),
            self.judge_ms(pk.received),
            |ds| {
                let end = self
                    .owners
                    .cached(&self.kernel, &self.stats, &ds, proto, true, pk.received, &CacheCounters::default())
                    .ok()?;
                hits.owner.set(hits.owner.get() + 1);
                Some(end)
            },
            |c| self.flows.closed_holder(c),
        )?;
        hits.flow.set(hits.flow.get() + 1);
        Some(end)
    }
}

impl<K: KernelView> Resolver for SocketResolver<K> {
    fn resolve(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Labels {
        self.resolve_with(&self.peer_config(), pkt, meta)
    }

    fn resolve_cached(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Option<Labels> {
        self.resolve_cached_with(&self.peer_config(), pkt, meta)
    }

    fn resolve_deferred(&self, pkt: &PacketInfo, meta: &QueueMeta) -> (Labels, Unread) {
        self.resolve_deferred_with(&self.peer_config(), pkt, meta)
    }

    fn resolve_cached_deferred(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Option<(Labels, Unread)> {
        self.resolve_cached_deferred_with(&self.peer_config(), pkt, meta)
    }

    fn complete(&self, labels: &mut Labels, unread: Unread) {
        self.complete_unread(labels, unread)
    }

    fn metrics(&self) -> Vec<crate::labels::MetricFamily> {
        self.stats().families()
    }

    fn events(&self) -> Vec<(&'static str, u64)> {
        self.stats().snapshot()
    }
}

/// A [`SocketResolver`] seen through one policy's peer configuration: the
/// caches, the sock_diag sockets and the counters are shared by every view,
/// so a policy reload builds a new view (cheap) instead of a new resolver.
/// Made by [`SocketResolver::for_policy`].
pub struct PolicyResolver<K: KernelView = SysKernel> {
    core: Arc<SocketResolver<K>>,
    peer: PeerConfig,
}

impl<K: KernelView> PolicyResolver<K> {
    /// The shared resolver (for its stats).
    pub fn core(&self) -> &Arc<SocketResolver<K>> {
        &self.core
    }
}

impl<K: KernelView> Resolver for PolicyResolver<K> {
    fn resolve(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Labels {
        self.core.resolve_with(&self.peer, pkt, meta)
    }

    fn resolve_cached(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Option<Labels> {
        self.core.resolve_cached_with(&self.peer, pkt, meta)
    }

    fn resolve_deferred(&self, pkt: &PacketInfo, meta: &QueueMeta) -> (Labels, Unread) {
        self.core.resolve_deferred_with(&self.peer, pkt, meta)
    }

    fn resolve_cached_deferred(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Option<(Labels, Unread)> {
        self.core.resolve_cached_deferred_with(&self.peer, pkt, meta)
    }

    fn complete(&self, labels: &mut Labels, unread: Unread) {
        self.core.complete_unread(labels, unread)
    }

    fn metrics(&self) -> Vec<crate::labels::MetricFamily> {
        self.core.stats().families()
    }

    fn events(&self) -> Vec<(&'static str, u64)> {
        self.core.stats().snapshot()
    }
}

impl<K: KernelView> SocketResolver<K> {
    /// A view of this resolver with `peer` (usually
    /// `PeerConfig::from_policy(&policy)`) as its peer configuration.
    pub fn for_policy(self: &Arc<Self>, peer: PeerConfig) -> PolicyResolver<K> {
        PolicyResolver { core: self.clone(), peer }
    }

    /// The labels with every process fact read: a holder found now is
    /// read at once; one cached unread is read now ([`Owners::read_process`]).
    fn resolve_with(&self, peer: &PeerConfig, pkt: &PacketInfo, meta: &QueueMeta) -> Labels {
        match self.labels_with(peer, pkt, meta, None, true) {
            Some((mut l, [src, dst])) => {
                self.read_unread(&mut l.source_process, src.as_deref());
                self.read_unread(&mut l.dest_process, dst.as_deref());
                l
            }
            None => Labels::unresolved("not_resolved"),
        }
    }

    /// Cache-only labels with every process fact read: `None` when an end's
    /// holder was not read yet (reading is slow work).
    fn resolve_cached_with(&self, peer: &PeerConfig, pkt: &PacketInfo, meta: &QueueMeta) -> Option<Labels> {
        let hits = Hits::default();
        let (l, unread) = self.labels_with(peer, pkt, meta, Some(&hits), true)?;
        if unread.iter().any(Option::is_some) {
            return None;
        }
        self.count_hits(&hits);
        Some(l)
    }

    fn resolve_deferred_with(&self, peer: &PeerConfig, pkt: &PacketInfo, meta: &QueueMeta) -> (Labels, Unread) {
        match self.labels_with(peer, pkt, meta, None, false) {
            Some((l, ends)) => (l, unread_of(ends)),
            None => (Labels::unresolved("not_resolved"), Unread::default()),
        }
    }

    fn resolve_cached_deferred_with(
        &self,
        peer: &PeerConfig,
        pkt: &PacketInfo,
        meta: &QueueMeta,
    ) -> Option<(Labels, Unread)> {
        let hits = Hits::default();
        let (l, ends) = self.labels_with(peer, pkt, meta, Some(&hits), false)?;
        self.count_hits(&hits);
        Some((l, unread_of(ends)))
    }

    fn count_hits(&self, hits: &Hits) {
        self.stats.flow.hits.fetch_add(hits.flow.get(), Ordering::Relaxed);
        self.stats.owner.hits.fetch_add(hits.owner.get(), Ordering::Relaxed);
    }

    /// [`Resolver::complete`]: `unread`'s handles are this resolver's owners.
    fn complete_unread(&self, labels: &mut Labels, unread: Unread) {
        let owner = |h: Option<Arc<dyn std::any::Any + Send + Sync>>| h.and_then(|h| h.downcast::<Owner>().ok());
        self.read_unread(&mut labels.source_process, owner(unread.source).as_deref());
        self.read_unread(&mut labels.dest_process, owner(unread.dest).as_deref());
    }

    /// The packet's labels, and the holders (source, dest) whose process
    /// facts are left unread. With `cached` (cache-only), `None` as soon as a
    /// local end or the local-address set needs slow work, before anything
    /// is counted; without it, always `Some`. `read_process`: a holder
    /// found now has its process facts read at once.
    fn labels_with(
        &self,
        peer: &PeerConfig,
        pkt: &PacketInfo,
        meta: &QueueMeta,
        cached: Option<&Hits>,
        read_process: bool,
    ) -> Option<(Labels, [Option<Arc<Owner>>; 2])> {
        let hook = Hook::from_nf(meta.hook);
        // Only TCP and UDP packets with ports have sockets to look up.
        let diag_proto = match (pkt.proto, pkt.sport, pkt.dport) {
            (Proto::Tcp, Some(_), Some(_)) => Some(DiagProto::Tcp),
            (Proto::Udp, Some(_), Some(_)) => Some(DiagProto::Udp),
            _ => None,
        };
        let pk = PacketFacts { syn: pkt.tcp_syn, received: meta.received, read_process };
        let resolve_end =
            |ns: NsIndex, local: SocketAddr, remote: SocketAddr, pre: Option<Lookup>| match (diag_proto, cached) {
                (None, _) => Some(LocalEnd::unlabeled("unsupported_proto")),
                (Some(p), None) => Some(self.placed(ns, self.local_end(ns, p, local, remote, pk, pre))),
                (Some(p), Some(hits)) => self.cached_end(ns, p, local, remote, pk, hits).map(|e| self.placed(ns, e)),
            };
        // An end that is not this host's, at an address of other network
        // namespaces: its socket is looked up there.
        let in_netns = |cands: &[NsIndex], local: SocketAddr, remote: SocketAddr| match (cands, diag_proto, cached) {
            ([ns], _, _) => resolve_end(*ns, local, remote, None),
            (_, None, _) => Some(LocalEnd::unlabeled("unsupported_proto")),
            // Which namespace has the socket takes sock_diag lookups.
            (_, Some(_), Some(_)) => None,
            (_, Some(p), None) => Some(self.ambiguous_end(cands, p, local, remote, pk)),
        };

        let is_local = |ip: IpAddr| match cached {
            None => Some(self.local.is_local(ip)),
            Some(_) => self.local.is_local_cached(ip),
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
                let [a, b] = self.kernel.lookup_two(p, (src, dst), (dst, src));
                (Some(a), Some(b))
            }
            _ => (None, None),
        };
        let src_ns = if src_local { Vec::new() } else { self.kernel.netns_with(pkt.src) };
        let dst_ns = if dst_local { Vec::new() } else { self.kernel.netns_with(pkt.dst) };
        let src_end = match (src_local, src_ns.is_empty()) {
            (true, _) => Some(resolve_end(0, src, dst, src_pre)?),
            (false, false) => Some(in_netns(&src_ns, src, dst)?),
            (false, true) => None,
        };
        let dst_end = match (dst_local, dst_ns.is_empty()) {
            (true, _) => Some(resolve_end(0, dst, src, dst_pre)?),
            (false, false) => Some(in_netns(&dst_ns, dst, src)?),
            (false, true) => None,
        };

        let mut l = Labels::unresolved("not_resolved");
        l.secmark = secmark_context(meta);
        l.peer = self.peer_label_with(peer, pkt);
        let mut sock_uid = None;
        let mut unread = [None, None];
        match src_end {
            Some(end) => {
                l.source = end.label;
                l.source_process = end.process;
                sock_uid = end.uid;
                unread[0] = end.unread;
            }
            None => l.source = l.peer.clone().unwrap_or_else(|| Label::unlabeled("remote")),
        }
        match dst_end {
            Some(end) => {
                l.dest = end.label;
                l.dest_process = end.process;
                unread[1] = end.unread;
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
        Some((l, unread))
    }
}

/// The unread holders (source, dest) as the [`Unread`] handed out.
fn unread_of([src, dst]: [Option<Arc<Owner>>; 2]) -> Unread {
    let any = |o: Option<Arc<Owner>>| o.map(|o| o as Arc<dyn std::any::Any + Send + Sync>);
    Unread { source: any(src), dest: any(dst) }
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

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod tests;
