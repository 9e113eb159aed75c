//! The other network namespaces on this host ([`NetnsRegistry`]): which
//! namespace has a given address, and a sock_diag socket opened inside each
//! one, so that a container's socket (in its own namespace, behind a veth
//! pair) is looked up where it lives.
//!
//! Namespaces are discovered from `/proc/*/ns/net` and identified by their
//! inode. For each one labelgate keeps one representative process's
//! `/proc/PID/ns/net` open: while it is held the namespace cannot be freed,
//! so its inode cannot be reused by a new namespace and confused with it.
//! Each is given a small index ([`NsIndex`], 1..; 0 is labelgate's own
//! namespace) that the flow cache keys flows by; an index freed when its
//! namespace vanished is given to another namespace only after a quarantine
//! longer than any flow cache entry lives, so two namespaces' identical
//! tuples never share a cache entry.
//!
//! The list is refreshed (one `stat` of `/proc/PID/ns/net` per process, and
//! the addresses of every namespace listed in one thread that joins them in
//! turn) by a background thread every [`REFRESH_EVERY`], and at once when a
//! packet's address is in no namespace and the last refresh is older than
//! [`REFRESH_ON_MISS`] (the packet wakes the thread and does not wait for
//! it); never on a queue thread, never per packet. Namespaces no process
//! is in any more are dropped (and with them the descriptor that kept them
//! alive). A namespace no process is in (only bind-mounted, as by `ip
//! netns add` before anything runs in it) is not seen: it has no process
//! holding sockets either.

use super::flow::unmap_ip;
use super::sockdiag::{DiagProto, Lookup, SockDiag};
use crate::sys::netns;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// A network namespace as the flow cache knows it: 0 is labelgate's own.
pub type NsIndex = u16;

/// The background refresh period.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// A packet whose address no namespace has refreshes the list at most this
/// often.
pub const REFRESH_ON_MISS: Duration = Duration::from_millis(200);

/// One other network namespace.
struct Ns {
    ino: u64,
    index: NsIndex,
    /// `/proc/PID/ns/net` of a process that was in it: keeps it alive.
    fd: Arc<File>,
    diag: Arc<SockDiag>,
    addrs: Vec<IpAddr>,
}

#[derive(Default)]
struct Known {
    by_index: HashMap<NsIndex, Arc<Ns>>,
    by_addr: HashMap<IpAddr, Vec<NsIndex>>,
}

/// Indexes handed out, and those freed waiting out their quarantine.
struct Indexes {
    next: u32,
    freed: VecDeque<(NsIndex, Instant)>,
}

/// The network namespaces other than labelgate's own (see the module
/// documentation).
pub struct NetnsRegistry {
    proc_root: PathBuf,
    /// Inode of labelgate's own namespace (never registered).
    own: u64,
    known: RwLock<Known>,
    /// When the last refresh started; held while one runs (single flight).
    refreshing: Mutex<Instant>,
    indexes: Mutex<Indexes>,
    /// How long a freed index waits before it is given again.
    quarantine: Duration,
    /// Refreshes done.
    pub refreshes: AtomicU64,
    /// Wakes the background thread early.
    wake: Arc<Wake>,
}

/// A wake-up flag for the background thread.
#[derive(Default)]
struct Wake {
    asked: Mutex<bool>,
    cv: Condvar,
}

impl NetnsRegistry {
    /// The registry with its first refresh done, and a background thread
    /// that refreshes it every [`REFRESH_EVERY`] while it lives.
    /// `quarantine`: longer than any flow cache entry is trusted.
    pub fn start(proc_root: &Path, quarantine: Duration) -> io::Result<Arc<NetnsRegistry>> {
        // The calling thread's namespace (which the resolver's own sock_diag
        // sockets are in), not the process leader's.
        let own_fd = File::open(proc_root.join("thread-self/ns/net"))?;
        let own = own_fd.metadata()?.ino();
        // Whether namespaces can be entered at all (CAP_SYS_ADMIN).
        netns::diag_link_in(&own_fd)?;
        let r = Arc::new(NetnsRegistry::empty(proc_root, own, quarantine));
        r.refresh();
        let (weak, wake) = (Arc::downgrade(&r), r.wake.clone());
        std::thread::Builder::new().name("lg-netns-scan".into()).spawn(move || background(weak, wake))?;
        Ok(r)
    }

    /// A registry that knows no namespace yet.
    fn empty(proc_root: &Path, own: u64, quarantine: Duration) -> NetnsRegistry {
        NetnsRegistry {
            proc_root: proc_root.to_path_buf(),
            own,
            known: RwLock::new(Known::default()),
            refreshing: Mutex::new(Instant::now()),
            indexes: Mutex::new(Indexes { next: 1, freed: VecDeque::new() }),
            quarantine,
            refreshes: AtomicU64::new(0),
            wake: Arc::default(),
        }
    }

    /// The namespaces that have `ip` as an address, as last listed. When
    /// none has and the list is older than [`REFRESH_ON_MISS`], the
    /// background thread is woken to list them again (not waited for).
    pub fn with_addr(&self, ip: IpAddr) -> Vec<NsIndex> {
        let found = self.find(unmap_ip(ip));
        if found.is_empty() && self.due(REFRESH_ON_MISS) {
            *self.wake.asked.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.wake.cv.notify_one();
        }
        found
    }

    fn find(&self, ip: IpAddr) -> Vec<NsIndex> {
        let k = self.known.read().unwrap_or_else(|e| e.into_inner());
        k.by_addr.get(&ip).cloned().unwrap_or_default()
    }

    /// The socket of a flow inside namespace `ns` (`Ok(None)` when the
    /// namespace is gone: it has no sockets).
    pub fn lookup(&self, ns: NsIndex, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> Lookup {
        let n = self.known.read().unwrap_or_else(|e| e.into_inner()).by_index.get(&ns).cloned();
        match n {
            Some(n) => n.diag.lookup(proto, local, remote),
            None => Ok(None),
        }
    }

    /// How many namespaces are known.
    pub fn len(&self) -> usize {
        self.known.read().unwrap_or_else(|e| e.into_inner()).by_index.len()
    }

    /// Whether no namespace is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inode of the namespace with index `ns`, if known.
    pub fn inode_of(&self, ns: NsIndex) -> Option<u64> {
        self.known.read().unwrap_or_else(|e| e.into_inner()).by_index.get(&ns).map(|n| n.ino)
    }

    fn due(&self, every: Duration) -> bool {
        match self.refreshing.try_lock() {
            Ok(last) => last.elapsed() >= every,
            Err(_) => false,
        }
    }

    /// Refresh unless one ran less than `every` ago or one is running.
    pub fn refresh_if_due(&self, every: Duration) {
        let Ok(mut last) = self.refreshing.try_lock() else { return };
        if last.elapsed() < every {
            return;
        }
        *last = Instant::now();
        self.rebuild();
    }

    /// Refresh now (waiting for one running).
    pub fn refresh(&self) {
        let mut last = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        *last = Instant::now();
        self.rebuild();
    }

    /// List the namespaces and their addresses again (the caller holds
    /// `refreshing`).
    fn rebuild(&self) {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let seen = self.scan();
        let old: HashMap<u64, Arc<Ns>> = {
            let k = self.known.read().unwrap_or_else(|e| e.into_inner());
            k.by_index.values().map(|n| (n.ino, n.clone())).collect()
        };
        let mut kept: Vec<(u64, Option<Arc<Ns>>, Arc<File>)> = Vec::new();
        for (ino, pid) in &seen {
            if let Some(n) = old.get(ino) {
                kept.push((*ino, Some(n.clone()), n.fd.clone()));
                continue;
            }
            // A new namespace: hold it open, checking that the process
            // was still in it when opened.
            let Ok(f) = File::open(self.proc_root.join(format!("{pid}/ns/net"))) else { continue };
            if f.metadata().map(|m| m.ino()).ok() != Some(*ino) {
                continue;
            }
            kept.push((*ino, None, Arc::new(f)));
        }
        let addrs = {
            let fds: Vec<_> = kept.iter().map(|(_, _, f)| f.as_fd()).collect();
            netns::addrs_in(&fds)
        };
        let mut known = Known::default();
        for ((ino, had, fd), addrs) in kept.into_iter().zip(addrs) {
            let addrs = match addrs {
                Ok(a) => a,
                Err(e) => {
                    log::debug!("netns {ino}: cannot list addresses: {e}");
                    had.as_ref().map(|n| n.addrs.clone()).unwrap_or_default()
                }
            };
            let ns = match had {
                Some(n) if n.addrs == addrs => n,
                Some(n) => Arc::new(Ns { ino, index: n.index, fd, diag: n.diag.clone(), addrs }),
                None => {
                    let diag = match SockDiag::in_netns(fd.clone()) {
                        Ok(d) => Arc::new(d),
                        Err(e) => {
                            log::debug!("netns {ino}: cannot open sock_diag inside it: {e}");
                            continue;
                        }
                    };
                    let Some(index) = self.take_index() else {
                        log::warn!("netns {ino}: no free namespace index; its sockets are not looked up");
                        continue;
                    };
                    Arc::new(Ns { ino, index, fd, diag, addrs })
                }
            };
            for ip in &ns.addrs {
                known.by_addr.entry(*ip).or_default().push(ns.index);
            }
            known.by_index.insert(ns.index, ns);
        }
        for n in old.values() {
            if !known.by_index.contains_key(&n.index) {
                self.free_index(n.index);
            }
        }
        *self.known.write().unwrap_or_else(|e| e.into_inner()) = known;
    }

    /// Every network namespace some process is in (other than our own),
    /// with one pid in it.
    fn scan(&self) -> HashMap<u64, u32> {
        let mut seen = HashMap::new();
        let Ok(dir) = std::fs::read_dir(&self.proc_root) else { return seen };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(m) = std::fs::metadata(e.path().join("ns/net")) else { continue };
            if m.ino() != self.own {
                seen.entry(m.ino()).or_insert(pid);
            }
        }
        seen
    }

    fn take_index(&self) -> Option<NsIndex> {
        let mut ix = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(i) = NsIndex::try_from(ix.next) {
            ix.next += 1;
            return Some(i);
        }
        match ix.freed.front() {
            Some(&(i, at)) if at.elapsed() >= self.quarantine => {
                ix.freed.pop_front();
                Some(i)
            }
            _ => None,
        }
    }

    fn free_index(&self, i: NsIndex) {
        self.indexes.lock().unwrap_or_else(|e| e.into_inner()).freed.push_back((i, Instant::now()));
    }
}

/// The background refresher: every [`REFRESH_EVERY`], or when woken by a
/// miss; it ends once the registry is dropped.
fn background(weak: Weak<NetnsRegistry>, wake: Arc<Wake>) {
    loop {
        let asked = {
            let g = wake.asked.lock().unwrap_or_else(|e| e.into_inner());
            let (mut g, _) = wake.cv.wait_timeout_while(g, REFRESH_EVERY, |a| !*a).unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *g)
        };
        let Some(r) = weak.upgrade() else { return };
        r.refresh_if_due(if asked { REFRESH_ON_MISS } else { REFRESH_EVERY / 2 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indexes start at 1 (0 is labelgate's own namespace); once all are
    /// handed out, a freed one comes back only after its quarantine.
    #[test]
    fn a_freed_index_waits_out_its_quarantine() {
        let r = NetnsRegistry::empty(Path::new("/proc"), 1, Duration::from_millis(300));
        assert_eq!(r.take_index(), Some(1));
        assert_eq!(r.take_index(), Some(2));
        r.indexes.lock().unwrap().next = u32::from(NsIndex::MAX);
        assert_eq!(r.take_index(), Some(NsIndex::MAX));
        assert_eq!(r.take_index(), None, "all handed out, none freed");
        r.free_index(2);
        assert_eq!(r.take_index(), None, "2 is in quarantine");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(r.take_index(), Some(2));
        assert_eq!(r.take_index(), None);
    }

    /// An empty registry knows no address; a miss asks for a refresh only
    /// once the list is older than REFRESH_ON_MISS, and never panics.
    #[test]
    fn a_miss_wakes_the_refresher_only_when_due() {
        let r = NetnsRegistry::empty(Path::new("/proc"), 1, Duration::ZERO);
        assert!(r.with_addr("198.18.0.1".parse().unwrap()).is_empty());
        assert!(!*r.wake.asked.lock().unwrap(), "the list is fresh");
        *r.refreshing.lock().unwrap() = Instant::now() - REFRESH_ON_MISS;
        assert!(r.with_addr("198.18.0.1".parse().unwrap()).is_empty());
        assert!(*r.wake.asked.lock().unwrap());
        assert!(r
            .lookup(3, DiagProto::Tcp, "198.18.0.1:1".parse().unwrap(), "198.18.0.2:2".parse().unwrap())
            .unwrap()
            .is_none());
    }
}
