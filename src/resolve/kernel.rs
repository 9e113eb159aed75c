//! What the resolver asks the kernel, as one trait ([`KernelView`]): the
//! socket of a flow (sock_diag), the sockets a process holds and at which
//! fds (`/proc/PID/fd`), a socket's label and its holder's comm/exe. The
//! real view ([`SysKernel`]) answers over [`sockdiag`](super::sockdiag) and
//! [`procfs`](super::procfs) and owns what only the real kernel has: the
//! sock_diag socket pool, the `/proc/PID/fd/N` links kept open
//! ([`procfs::FdLinks`]) and the "no LSM provides `attr/current`" flag. The
//! unit tests answer through a fake (`tests::FakeKernel`), so that owner
//! search and cache invalidation are tested without root.

use super::cache::CacheCounters;
use super::netns::{NetnsRegistry, NsIndex};
use super::procfs::{self, FdLinks, LabelMiss, Scan};
use super::sockdiag::{DiagProto, Lookup, SockDiag};
use crate::labels::{Label, ProcessInfo};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The kernel as the resolver sees it. Every answer may be stale or racing
/// with processes that exit and fds that close; none may panic.
pub trait KernelView: Send + Sync {
    /// The socket that owns the flow between `local` and `remote`
    /// (`Ok(None)`: none).
    fn lookup(&self, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> Lookup;
    /// Two lookups asked together (one exchange with the kernel).
    fn lookup_two(&self, proto: DiagProto, a: (SocketAddr, SocketAddr), b: (SocketAddr, SocketAddr)) -> [Lookup; 2];
    /// Every socket inode and its holders, and every pid: a full scan (an
    /// error names what was scanned).
    fn scan(&self) -> io::Result<Scan>;
    /// The pids of every process.
    fn pids(&self) -> io::Result<Vec<u32>>;
    /// The fd at which process `pid` holds socket `inode`, if it does.
    fn find_in(&self, pid: u32, inode: u32) -> Option<u32>;
    /// Whether process `pid` holds socket `inode` at `fd` now.
    fn holds(&self, pid: u32, fd: u32, inode: u32) -> bool;
    /// [`holds`](Self::holds) for a (pid, fd) asked about again and again:
    /// the real view answers through a link kept open, counted into `c`.
    fn holds_kept(&self, pid: u32, fd: u32, inode: u32, c: &CacheCounters) -> bool;
    /// Whether process `pid` exists.
    fn alive(&self, pid: u32) -> bool;
    /// The label of the socket process `pid` holds at `fd` (its own, else
    /// the process's, else unlabeled with the reason).
    fn socket_label(&self, pid: u32, fd: u32) -> Result<Label, LabelMiss>;
    /// comm and exe of `pid` (`known`: what was read for it before, reused
    /// while its exe is unchanged); `None` when it has exited.
    fn process_info(&self, pid: u32, known: Option<&ProcessInfo>) -> Option<ProcessInfo>;
    /// The other network namespaces that have `ip` as an address (see
    /// [`NetnsRegistry::with_addr`]). The default: no other namespace.
    fn netns_with(&self, _ip: IpAddr) -> Vec<NsIndex> {
        Vec::new()
    }
    /// The nsfs inode of namespace `ns` (0: labelgate's own), for records.
    /// The default: not known.
    fn netns_inode(&self, _ns: NsIndex) -> Option<u64> {
        None
    }
    /// [`lookup`](Self::lookup) inside the other network namespace `ns`.
    fn lookup_in(&self, _ns: NsIndex, _proto: DiagProto, _local: SocketAddr, _remote: SocketAddr) -> Lookup {
        Ok(None)
    }
}

/// Most `/proc/PID/fd/N` links kept open for re-validating holders
/// ([`procfs::FdLinks`]): one descriptor each.
const PROC_LINKS: usize = 256;

/// The real kernel: sock_diag and procfs.
pub struct SysKernel {
    diag: SockDiag,
    proc_root: PathBuf,
    /// Open links of the (pid, fd)s checked again and again.
    links: FdLinks,
    /// `/proc/PID/attr/current` answered `EINVAL`: no LSM provides it.
    no_attr_current: AtomicBool,
    /// The other network namespaces; `None` when they cannot be entered
    /// (no CAP_SYS_ADMIN) or were not asked for.
    netns: Option<Arc<NetnsRegistry>>,
    /// labelgate's own network namespace (nsfs inode), if readable.
    own_netns: Option<u64>,
}

impl SysKernel {
    /// Opens the first sock_diag socket (so that a missing permission shows
    /// at once); `/proc` is read at `proc_root`, links kept in `shards` shards.
    pub fn new(proc_root: PathBuf, shards: usize) -> io::Result<SysKernel> {
        Ok(SysKernel {
            diag: SockDiag::new()?,
            links: FdLinks::new(PROC_LINKS, shards),
            no_attr_current: AtomicBool::new(false),
            netns: None,
            own_netns: std::fs::read_link(proc_root.join("self/ns/net")).ok().and_then(|t| netns_link_inode(&t)),
            proc_root,
        })
    }

    /// Also look sockets up in the other network namespaces (see
    /// [`NetnsRegistry`]); `quarantine` is longer than any flow cache entry
    /// lives. When they cannot be entered, a warning and no change.
    pub fn with_netns(mut self, quarantine: std::time::Duration) -> SysKernel {
        match NetnsRegistry::start(&self.proc_root, quarantine) {
            Ok(r) => self.netns = Some(r),
            Err(e) => log::warn!(
                "sockets in other network namespaces will not be looked up (entering them needs CAP_SYS_ADMIN): {e}"
            ),
        }
        self
    }

    /// The other network namespaces, if they are looked up.
    pub fn netns(&self) -> Option<&Arc<NetnsRegistry>> {
        self.netns.as_ref()
    }

    /// Where procfs is read.
    pub fn proc_root(&self) -> &std::path::Path {
        &self.proc_root
    }
}

/// The inode in a `/proc/PID/ns/net` link's target, `net:[4026531840]`.
/// Reading the link needs no access to the namespace file itself (which
/// `stat` would ask for: `nsfs_t` under the reference policy, granted only
/// with `--other-netns`'s boolean).
fn netns_link_inode(target: &std::path::Path) -> Option<u64> {
    target.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
#[test]
fn netns_link_targets_parse_strictly() {
    use std::path::Path;
    assert_eq!(netns_link_inode(Path::new("net:[4026531840]")), Some(4_026_531_840));
    for bad in ["net:[]", "mnt:[4026531840]", "net:[12x]", "net:[1", "4026531840", ""] {
        assert_eq!(netns_link_inode(Path::new(bad)), None, "{bad}");
    }
}

impl KernelView for SysKernel {
    fn lookup(&self, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> Lookup {
        self.diag.lookup(proto, local, remote)
    }

    fn lookup_two(&self, proto: DiagProto, a: (SocketAddr, SocketAddr), b: (SocketAddr, SocketAddr)) -> [Lookup; 2] {
        self.diag.lookup_two(proto, a, b)
    }

    fn scan(&self) -> io::Result<Scan> {
        procfs::scan(&self.proc_root)
            .map_err(|e| io::Error::new(e.kind(), format!("scan of {}: {e}", self.proc_root.display())))
    }

    fn pids(&self) -> io::Result<Vec<u32>> {
        procfs::pids(&self.proc_root)
    }

    fn find_in(&self, pid: u32, inode: u32) -> Option<u32> {
        procfs::find_in(&self.proc_root, pid, inode)
    }

    fn holds(&self, pid: u32, fd: u32, inode: u32) -> bool {
        procfs::holds(&self.proc_root, pid, fd, inode)
    }

    fn holds_kept(&self, pid: u32, fd: u32, inode: u32, c: &CacheCounters) -> bool {
        self.links.holds(&self.proc_root, pid, fd, inode, c)
    }

    fn alive(&self, pid: u32) -> bool {
        procfs::alive(&self.proc_root, pid)
    }

    fn socket_label(&self, pid: u32, fd: u32) -> Result<Label, LabelMiss> {
        procfs::socket_label(&self.proc_root, pid, fd, &self.no_attr_current)
    }

    fn process_info(&self, pid: u32, known: Option<&ProcessInfo>) -> Option<ProcessInfo> {
        procfs::process_info(&self.proc_root, pid, known)
    }

    fn netns_with(&self, ip: IpAddr) -> Vec<NsIndex> {
        match &self.netns {
            Some(r) => r.with_addr(ip),
            None => Vec::new(),
        }
    }

    fn netns_inode(&self, ns: NsIndex) -> Option<u64> {
        match (ns, &self.netns) {
            (0, _) => self.own_netns,
            (_, Some(r)) => r.inode_of(ns),
            (_, None) => None,
        }
    }

    fn lookup_in(&self, ns: NsIndex, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> Lookup {
        match &self.netns {
            Some(r) => r.lookup(ns, proto, local, remote),
            None => Ok(None),
        }
    }
}
