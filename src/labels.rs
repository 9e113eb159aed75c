//! The label stage's seam: what the queue runtime knows about a packet
//! ([`QueueMeta`]), what the decision needs ([`Labels`]), and the
//! [`Resolver`] trait that turns one into the other.
//!
//! The decision code only sees [`Labels`]; how they were found (NFQA
//! attributes, sock_diag, /proc, CIPSO) lives behind [`Resolver`].

pub mod cgroup;

pub use cgroup::CgroupInfo;

use crate::context::SecurityContext;
use crate::packet::PacketInfo;
use std::fmt;
use std::sync::Arc;

/// The netfilter hook a packet was queued from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    /// From the kernel's `NF_INET_*` hook number.
    pub fn from_nf(n: u8) -> Option<Hook> {
        Some(match n {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            _ => return None,
        })
    }

    /// The SELinux `packet` class permission this hook corresponds to.
    pub fn permission(self) -> &'static str {
        match self {
            Hook::Prerouting | Hook::Input => "recv",
            Hook::Output => "send",
            Hook::Forward => "forward_in",
            Hook::Postrouting => "forward_out",
        }
    }

    /// Whether packets at this hook were generated locally.
    pub fn is_local_out(self) -> bool {
        matches!(self, Hook::Output | Hook::Postrouting)
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        })
    }
}

/// Per-packet metadata the kernel attached to the queued packet.
#[derive(Clone, Debug, Default)]
pub struct QueueMeta {
    /// NF_INET hook number (see [`Hook::from_nf`]).
    pub hook: u8,
    /// NFQA_UID / NFQA_GID: the owner of the sending socket (OUTPUT).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// NFQA_SECCTX: the packet's secmark label, as the kernel wrote it.
    pub secctx: Option<String>,
    /// Input and output interface indexes (0 when none).
    pub indev: u32,
    pub outdev: u32,
    /// Packet mark.
    pub mark: u32,
    /// NFQA_CAP_LEN: the packet's whole length, present only when the
    /// kernel copied fewer bytes (the copy range) than the packet holds.
    pub cap_len: Option<u32>,
    /// When labelgate had read the packet from the queue (it was queued
    /// before then): a socket holder checked after this instant was still
    /// holding its socket when the packet was sent. `None`: unknown.
    pub received: Option<std::time::Instant>,
}

/// Why a label is what it is; carried into audit records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read from the owning socket (`security.selinux` of `/proc/PID/fd/N`).
    Socket,
    /// Read from the owning process (`/proc/PID/attr/current`).
    Process,
    /// The kernel's secmark (NFQA_SECCTX).
    Secmark,
    /// A CIPSO/CALIPSO option in the packet.
    PeerOption,
    /// A static address label from the policy.
    Static,
    /// No label could be found; the reason is a short token such as
    /// `no_socket`, `kernel_socket`, `process_gone`, `selinux_disabled`,
    /// `other_lsm`, `not_resolved`.
    Unlabeled(&'static str),
}

impl Origin {
    pub fn token(&self) -> &'static str {
        match self {
            Origin::Socket => "socket",
            Origin::Process => "process",
            Origin::Secmark => "secmark",
            Origin::PeerOption => "peer_option",
            Origin::Static => "static",
            Origin::Unlabeled(r) => r,
        }
    }
}

/// A label and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub context: SecurityContext,
    pub origin: Origin,
}

impl Label {
    /// The documented placeholder for "no label": `system_u:object_r:unlabeled_t:s0`.
    pub fn unlabeled(reason: &'static str) -> Label {
        Label { context: SecurityContext::unlabeled(), origin: Origin::Unlabeled(reason) }
    }

    pub fn is_unlabeled(&self) -> bool {
        matches!(self.origin, Origin::Unlabeled(_))
    }
}

/// The local process behind a socket, for audit records and the rule keys
/// `*_exe`, `*_unit`, `*_cgroup` and `*_container`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: Arc<str>,
    pub exe: Arc<str>,
    /// Its cgroup v2 path, unit and container id; `None` when unreadable.
    pub cgroup: Option<Arc<CgroupInfo>>,
    /// The network namespace the socket was found in, as its nsfs inode
    /// (what `readlink /proc/PID/ns/net` and `lsns -t net` show):
    /// labelgate's own, or with `run --other-netns` a container's. `None`
    /// when not known (a process read for another purpose).
    pub netns: Option<u64>,
}

impl ProcessInfo {
    /// Its systemd unit, if its cgroup names one.
    pub fn unit(&self) -> Option<&str> {
        self.cgroup.as_ref().and_then(|c| c.unit.as_deref())
    }

    /// Its container id, if its cgroup names one.
    pub fn container(&self) -> Option<&str> {
        self.cgroup.as_ref().and_then(|c| c.container.as_deref())
    }

    /// Its cgroup v2 path, if known.
    pub fn cgroup_path(&self) -> Option<&str> {
        self.cgroup.as_ref().map(|c| &*c.path)
    }
}

/// Everything the decision needs to know about who talks to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    /// Context of the local socket that sent the packet (or of the remote
    /// peer, from static/peer labels, for input from elsewhere).
    pub source: Label,
    /// Context of the local socket the packet goes to.
    pub dest: Label,
    /// The packet's secmark (NFQA_SECCTX), if any.
    pub secmark: Option<SecurityContext>,
    /// Peer label from CIPSO/CALIPSO or a static address label.
    pub peer: Option<Label>,
    /// Owner of the sending socket.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Process that owns the source socket.
    pub source_process: Option<ProcessInfo>,
    /// Process that owns the destination socket.
    pub dest_process: Option<ProcessInfo>,
}

impl Labels {
    /// Labels with nothing resolved.
    pub fn unresolved(reason: &'static str) -> Labels {
        Labels {
            source: Label::unlabeled(reason),
            dest: Label::unlabeled(reason),
            secmark: None,
            peer: None,
            uid: None,
            gid: None,
            source_process: None,
            dest_process: None,
        }
    }
}

/// The local ends whose process facts (comm, exe, cgroup) a resolver left
/// unread ([`Resolver::resolve_deferred`]): each a handle only the resolver
/// that made it reads, with [`Resolver::complete`]. Empty: nothing left.
#[derive(Clone, Default)]
pub struct Unread {
    pub source: Option<Arc<dyn std::any::Any + Send + Sync>>,
    pub dest: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Unread {
    /// Whether every end's process facts were read (or there is none).
    pub fn is_empty(&self) -> bool {
        self.source.is_none() && self.dest.is_none()
    }
}

impl fmt::Debug for Unread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unread").field("source", &self.source.is_some()).field("dest", &self.dest.is_some()).finish()
    }
}

/// Turns a queued packet into [`Labels`]. Implementations must not panic on
/// any input and must always return labels (unlabeled with a reason when
/// nothing better is known).
pub trait Resolver: Send + Sync {
    /// The packet's labels; its peer-label option is in `pkt` (parsed with
    /// the packet, [`crate::packet::LabelOption`]).
    fn resolve(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Labels;

    /// The labels [`resolve`](Self::resolve) would return, when they can be
    /// had without slow work (no socket lookup, no `/proc` scan, no label
    /// read): `None` means "ask `resolve`". The queue threads call this
    /// first and hand only the packets it cannot answer to the resolver
    /// workers. The default knows nothing cheaply.
    fn resolve_cached(&self, _pkt: &PacketInfo, _meta: &QueueMeta) -> Option<Labels> {
        None
    }

    /// [`resolve`](Self::resolve), except that the comm, exe and cgroup of
    /// a local end's process may be left unread: such an end's process in
    /// the labels has its pid and netns but an empty comm and exe and no
    /// cgroup, and is named in the [`Unread`]. For a caller that does not
    /// need them unless the decision writes a record (the engine, when no
    /// rule has a process key and no offload is attached), which then
    /// calls [`complete`](Self::complete). The default reads everything.
    fn resolve_deferred(&self, pkt: &PacketInfo, meta: &QueueMeta) -> (Labels, Unread) {
        (self.resolve(pkt, meta), Unread::default())
    }

    /// [`resolve_cached`](Self::resolve_cached) leaving process facts
    /// unread as [`resolve_deferred`](Self::resolve_deferred) does.
    fn resolve_cached_deferred(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Option<(Labels, Unread)> {
        self.resolve_cached(pkt, meta).map(|l| (l, Unread::default()))
    }

    /// Read the process facts `unread` names into `labels` (made by this
    /// resolver's `resolve_deferred`); a process that can no longer be
    /// shown to hold its socket is left out (`None`). The default has
    /// nothing to read.
    fn complete(&self, _labels: &mut Labels, _unread: Unread) {}

    /// Counters the resolver keeps (cache hits and the like) as Prometheus
    /// counter families: `(name, help, [(labels, value)])`.
    fn metrics(&self) -> Vec<MetricFamily> {
        Vec::new()
    }

    /// The same counters as `(event, value)` pairs, for logs: the events
    /// [`metrics`](Self::metrics) labels its rows with.
    fn events(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// One Prometheus counter family: name, help text, and `(labels, value)` rows.
pub type MetricFamily = (String, String, Vec<(String, u64)>);

/// Parse NFQA_SECCTX into a context; `None` when absent or unparsable.
pub fn secmark_context(meta: &QueueMeta) -> Option<SecurityContext> {
    meta.secctx.as_deref().and_then(|s| s.parse().ok())
}

/// The resolver that uses only what NFQUEUE itself reports: secmark and
/// uid/gid. Socket contexts are left unlabeled (`not_resolved`).
#[derive(Default)]
pub struct KernelMetaResolver;

impl Resolver for KernelMetaResolver {
    fn resolve(&self, _pkt: &PacketInfo, meta: &QueueMeta) -> Labels {
        let mut l = Labels::unresolved("not_resolved");
        l.secmark = secmark_context(meta);
        l.uid = meta.uid;
        l.gid = meta.gid;
        l
    }

    /// Everything this resolver knows is in the queue message: always cheap.
    fn resolve_cached(&self, pkt: &PacketInfo, meta: &QueueMeta) -> Option<Labels> {
        Some(self.resolve(pkt, meta))
    }
}
