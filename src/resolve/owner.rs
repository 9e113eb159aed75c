//! Finding a socket's holder ([`Owners`]): the owner cache (socket inode →
//! pid, fd, label, process), the processes that held the sockets found most
//! recently, the last full `/proc` scan (single flight) and the processes
//! born since, and the sockets a scan found nobody holding. Everything it
//! reads goes through the [`KernelView`].

use super::cache::{CacheCounters, ShardedCache};
use super::end::{LocalEnd, Reason};
use super::kernel::KernelView;
use super::procfs::{self, Scan};
use super::sockdiag::{DiagProto, DiagSocket};
use super::stats::{bump, ResolverStats};
use crate::labels::{Label, ProcessInfo};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// How long an unused socket owner stays in the owner cache: an owner
/// unused for a minute belongs to a socket long idle or gone.
const OWNER_MAX_IDLE: Duration = Duration::from_secs(60);

/// How many recent holder processes are remembered: each is asked, at the
/// fd number its last socket had, before any fd table is listed (one read
/// through a kept link each). Many clients connecting at once each get
/// their last fd number back; they take turns, so the holder of a new
/// socket is seldom the newest.
const RECENT_HOLDERS: usize = 64;

/// How many of the recent holders (newest first) have their whole fd table
/// listed before the processes born since the last full scan.
const RECENT_LISTED: usize = 16;

/// Who holds a socket, and its label.
#[derive(Debug)]
pub struct Owner {
    pid: u32,
    fd: u32,
    /// The socket it was found holding at `fd`.
    inode: u32,
    label: Label,
    /// Its comm, exe and cgroup: read when it was found, or later, when
    /// first needed ([`Owners::read_process`]); then kept for the socket.
    process: OnceLock<ProcessInfo>,
    /// What was read for the same pid before (a recent holder's), reused
    /// by the read while its exe is unchanged.
    known: Option<ProcessInfo>,
    /// When the holder was last seen holding the socket, as nanoseconds
    /// since the resolver's `epoch`: a time taken before the read that saw
    /// it, never after.
    checked: AtomicU64,
}

impl Owner {
    /// The local end this holder makes of socket `ds`.
    pub fn end(self: &Arc<Self>, ds: &DiagSocket) -> LocalEnd {
        self.end_of(Some(*ds))
    }

    /// The local end this holder makes of a socket, with its uid if known.
    /// Before its process facts are read, the end's process has only its
    /// pid, and the end names this holder as unread.
    pub fn end_of(self: &Arc<Self>, ds: Option<DiagSocket>) -> LocalEnd {
        let (process, unread) = match self.process.get() {
            Some(p) => (p.clone(), None),
            None => (unread_process(self.pid), Some(self.clone())),
        };
        LocalEnd { label: self.label.clone(), process: Some(process), uid: ds.map(|d| d.uid), unread }
    }
}

/// The process `pid` before its facts are read: empty comm and exe, no
/// cgroup (see [`Resolver::resolve_deferred`](crate::labels::Resolver::resolve_deferred)).
fn unread_process(pid: u32) -> ProcessInfo {
    ProcessInfo { pid, comm: Arc::from(""), exe: Arc::from(""), cgroup: None, netns: None }
}

/// A process that held one of the sockets found most recently.
#[derive(Clone)]
struct Recent {
    pid: u32,
    /// Its comm, exe and cgroup as last read, if they were.
    process: Option<ProcessInfo>,
    /// The fd it held that socket at: looked at first for its next socket
    /// (a closed descriptor's number is the next one `socket()` or
    /// `accept()` returns).
    fd: u32,
    /// The turn (count of holders found, [`RecentHolders::turn`]) at which
    /// it was last found holding a new socket.
    found_at: u64,
    /// Turns between its last two sockets found (0: found once).
    every: u64,
}

impl Recent {
    /// How many turns from `now` its next socket is expected: clients that
    /// take turns each open their next socket about `every` turns after
    /// their last. Holders found only once come after every holder with a
    /// period.
    fn expected_in(&self, now: u64) -> (bool, u64) {
        if self.every == 0 {
            return (true, 0);
        }
        (false, self.found_at.saturating_add(self.every).abs_diff(now))
    }
}

/// The processes that held the sockets found most recently, newest first,
/// and the count of holders found so far.
#[derive(Default)]
struct RecentHolders {
    list: VecDeque<Recent>,
    turn: u64,
}

/// Where [`Owners::search_likely`] found a socket's holder.
struct Likely {
    pid: u32,
    fd: u32,
    /// Born since the last full scan (not a recent holder).
    new_process: bool,
    /// The recent holder it was.
    recent: Option<Recent>,
}

/// Why the owner cache gave no holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachedMiss {
    /// No owner cached for the socket.
    Absent,
    /// The cached holder no longer holds it.
    Stale,
}

struct ScanState {
    /// When the scan in `scan` was started.
    last_start: Instant,
}

/// Tuning the owner search takes from the resolver's configuration.
#[derive(Clone, Copy, Debug)]
pub struct OwnerTuning {
    /// How long a socket a full scan found nobody holding is not scanned
    /// for again.
    pub negative_ttl: Duration,
    /// How long a cached UDP holder is trusted without a check.
    pub revalidate_after: Duration,
}

/// The owner search and its state.
pub struct Owners {
    tuning: OwnerTuning,
    cache: ShardedCache<u32, Arc<Owner>>,
    /// inode → (pid, fd)s and the pids from the last full `/proc` scan;
    /// swapped whole.
    scan: RwLock<Arc<Scan>>,
    /// The processes that held the sockets found most recently, newest
    /// first: where a new socket is looked for first.
    recent: Mutex<RecentHolders>,
    /// Sockets (by inode) that a full scan found no process holding, and
    /// when: not scanned for again within `negative_ttl`.
    holderless: ShardedCache<u32, Instant>,
    /// Held while scanning (single flight); readers of `scan` never wait on it.
    scanning: Mutex<ScanState>,
    /// The resolver's epoch (times are kept as ns since it).
    epoch: Instant,
}

impl Owners {
    /// The owner search starting from `first` (a full scan started at
    /// `epoch`), with room for `capacity` owners in `shards` shards.
    pub fn new(first: Scan, tuning: OwnerTuning, capacity: usize, shards: usize, epoch: Instant) -> Owners {
        Owners {
            tuning,
            cache: ShardedCache::new(capacity, shards),
            scan: RwLock::new(Arc::new(first)),
            recent: Mutex::new(RecentHolders { list: VecDeque::with_capacity(RECENT_HOLDERS), turn: 0 }),
            holderless: ShardedCache::new(capacity, shards),
            scanning: Mutex::new(ScanState { last_start: epoch }),
            epoch,
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Forget the cached owner of socket `inode`, returning it.
    pub fn take(&self, inode: u32) -> Option<Arc<Owner>> {
        self.cache.remove(&inode)
    }

    /// The holder of a socket. `None` when no process holds it. With
    /// `read_process`, the holder's comm, exe and cgroup are read as soon as
    /// it is found (else when first needed, [`read_process`](Self::read_process)). With
    /// `cached_only`, only the owner cache is asked (a TCP socket's holder
    /// is then trusted without re-validation, see
    /// [`ResolverConfig::owner_revalidate_after`](super::ResolverConfig::owner_revalidate_after));
    /// otherwise the holder is looked for in this order, stopping at the
    /// first found: the most recent holder at the fd number its last socket
    /// had, the holders the last full scan saw, the processes that held the
    /// sockets found last, the processes born since the last full scan, and
    /// only then a new full scan of `/proc`.
    #[allow(clippy::too_many_arguments)]
    pub fn owner_of(
        &self,
        k: &impl KernelView,
        stats: &ResolverStats,
        ds: &DiagSocket,
        proto: DiagProto,
        cached_only: bool,
        received: Option<Instant>,
        read_process: bool,
    ) -> Option<LocalEnd> {
        match self.cached(k, stats, ds, proto, cached_only, received, &stats.owner) {
            Ok(end) => return Some(end),
            Err(CachedMiss::Stale) => {
                bump(&stats.owner.invalidations);
                self.cache.remove(&ds.inode);
            }
            Err(CachedMiss::Absent) => {}
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
        let first = self.recent.lock().unwrap_or_else(|e| e.into_inner()).list.front().cloned();
        let tried = first.as_ref().map(|r| (r.pid, r.fd));
        if let Some(r) = &first {
            if k.holds_kept(r.pid, r.fd, ds.inode, &stats.proc_link) {
                if let Some(end) =
                    self.adopt_one(k, stats, ds, (r.pid, r.fd), true, Some(r), t0_ns, read_process, &mut gone)
                {
                    bump(&stats.owner_found_recent);
                    return Some(end);
                }
            }
        }
        let no_count = CacheCounters::default();
        if self.holderless.get(&ds.inode, &no_count).is_some_and(|at| at.elapsed() < self.tuning.negative_ttl) {
            return None;
        }
        let scan = self.scan.read().unwrap_or_else(|e| e.into_inner()).clone();
        let known = scan.owners.get(&ds.inode).map(Vec::as_slice).unwrap_or_default();
        if let Some(end) = self.adopt(k, stats, ds, known, t0_ns, read_process, &mut gone) {
            return Some(end);
        }
        if let Some(l) = self.search_likely(k, stats, ds.inode, &scan.pids, tried) {
            if let Some(end) =
                self.adopt_one(k, stats, ds, (l.pid, l.fd), true, l.recent.as_ref(), t0_ns, read_process, &mut gone)
            {
                bump(if l.new_process { &stats.owner_found_new_process } else { &stats.owner_found_recent });
                return Some(end);
            }
        }
        drop(scan);
        self.rescan(k, stats, t0);
        let scan = self.scan.read().unwrap_or_else(|e| e.into_inner()).clone();
        let fresh = scan.owners.get(&ds.inode).map(Vec::as_slice).unwrap_or_default();
        if let Some(end) = self.adopt(k, stats, ds, fresh, t0_ns, read_process, &mut gone) {
            return Some(end);
        }
        if gone {
            return Some(LocalEnd::unlabeled(Reason::ProcessGone.token()));
        }
        self.holderless.insert_sweeping(ds.inode, Instant::now(), &no_count, self.tuning.negative_ttl);
        None
    }

    /// The first of `holders` that still holds socket `ds` (each checked
    /// again), with its label and process read, cached as the socket's
    /// owner. Sets `gone` when a holder exited on the way. `checked`: a time
    /// (ns since `epoch`) before every read of `/proc` that found them.
    /// `read_process`: read the holder's comm, exe and cgroup now.
    #[allow(clippy::too_many_arguments)]
    fn adopt(
        &self,
        k: &impl KernelView,
        stats: &ResolverStats,
        ds: &DiagSocket,
        holders: &[(u32, u32)],
        checked: u64,
        read_process: bool,
        gone: &mut bool,
    ) -> Option<LocalEnd> {
        holders.iter().find_map(|&h| self.adopt_one(k, stats, ds, h, false, None, checked, read_process, gone))
    }

    /// [`adopt`](Self::adopt) for one holder (pid, fd); `just_seen`: the
    /// holder was read from `/proc` a moment ago, so it is not checked
    /// again. `known`: the same process as a recent holder, whose comm is
    /// kept when its exe link is unchanged. With `read_process`, exe and
    /// cgroup are read now, for every socket adopted (a process that execs
    /// another program, or is moved to another cgroup, and then opens a
    /// socket is decided as what it is now: rules by `exe`, `unit`,
    /// `cgroup` and `container` depend on it); without, they are read for
    /// this socket when first needed ([`read_process`](Self::read_process)).
    #[allow(clippy::too_many_arguments)]
    fn adopt_one(
        &self,
        k: &impl KernelView,
        stats: &ResolverStats,
        ds: &DiagSocket,
        (pid, fd): (u32, u32),
        just_seen: bool,
        known: Option<&Recent>,
        checked: u64,
        read_process: bool,
        gone: &mut bool,
    ) -> Option<LocalEnd> {
        if !just_seen && !k.holds(pid, fd, ds.inode) {
            // The fd was closed (or passed on); only a holder that
            // exited counts as a process gone.
            *gone |= !k.alive(pid);
            return None;
        }
        let label = match k.socket_label(pid, fd) {
            Ok(l) => l,
            Err(procfs::LabelMiss::Gone) => {
                *gone = true;
                return None;
            }
        };
        let known = known.filter(|r| r.pid == pid).and_then(|r| r.process.clone());
        let process = OnceLock::new();
        if read_process {
            let Some(p) = k.process_info(pid, known.as_ref()) else {
                *gone = true;
                return None;
            };
            let _ = process.set(p);
        }
        let read = process.get().cloned();
        let o = Arc::new(Owner { pid, fd, inode: ds.inode, label, process, known, checked: AtomicU64::new(checked) });
        self.cache.insert_sweeping(ds.inode, o.clone(), &stats.owner, OWNER_MAX_IDLE);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.turn += 1;
        let turn = recent.turn;
        let last = recent.list.iter().position(|r| r.pid == pid).and_then(|i| recent.list.remove(i));
        let every = last.as_ref().map_or(0, |l| turn.saturating_sub(l.found_at));
        let process = read.or_else(|| last.and_then(|l| l.process));
        recent.list.push_front(Recent { pid, process, fd, found_at: turn, every });
        recent.list.truncate(RECENT_HOLDERS);
        Some(o.end(ds))
    }

    /// Look for the holder of a new socket where it most likely is, without
    /// a full scan: among the processes that held the sockets found last,
    /// first each at the fd it held its last one (those whose next socket is
    /// expected soonest first, see [`Recent::expected_in`]), then the newest
    /// [`RECENT_LISTED`] in all their fds; then among the processes that
    /// `known_pids` (the last full scan) did not see, newest first. `tried`:
    /// a (pid, fd) already found not to hold it.
    fn search_likely(
        &self,
        k: &impl KernelView,
        stats: &ResolverStats,
        inode: u32,
        known_pids: &HashSet<u32>,
        tried: Option<(u32, u32)>,
    ) -> Option<Likely> {
        let (recent, turn): (Vec<Recent>, u64) = {
            let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            (r.list.iter().cloned().collect(), r.turn)
        };
        let likely = |r: &Recent, fd| Likely { pid: r.pid, fd, new_process: false, recent: Some(r.clone()) };
        // The next turn is this socket's.
        let mut order: Vec<&Recent> = recent.iter().collect();
        order.sort_by_key(|r| r.expected_in(turn + 1));
        for r in order {
            if tried != Some((r.pid, r.fd)) && k.holds_kept(r.pid, r.fd, inode, &stats.proc_link) {
                return Some(likely(r, r.fd));
            }
        }
        let listed = recent.get(..RECENT_LISTED).unwrap_or(&recent);
        if let Some(l) = listed.iter().find_map(|r| k.find_in(r.pid, inode).map(|fd| likely(r, fd))) {
            return Some(l);
        }
        let mut born: Vec<u32> = k
            .pids()
            .ok()?
            .into_iter()
            .filter(|p| !known_pids.contains(p) && !listed.iter().any(|r| r.pid == *p))
            .collect();
        born.sort_unstable_by(|a, b| b.cmp(a));
        born.into_iter()
            .find_map(|pid| k.find_in(pid, inode).map(|fd| Likely { pid, fd, new_process: true, recent: None }))
    }

    /// The cached holder of a socket, re-validated (one read of `/proc/PID/fd/N`) unless
    /// `trust_tcp` and the socket is TCP, or the last check came after the
    /// packet was `received` from the queue (the holder still held the
    /// socket after the packet was sent, so it sent it: an inode never comes
    /// back), or came within `revalidate_after`. Lookups are counted into
    /// `counters`.
    #[allow(clippy::too_many_arguments)]
    pub fn cached(
        &self,
        k: &impl KernelView,
        stats: &ResolverStats,
        ds: &DiagSocket,
        proto: DiagProto,
        trust_tcp: bool,
        received: Option<Instant>,
        counters: &CacheCounters,
    ) -> Result<LocalEnd, CachedMiss> {
        let o = self.cache.get(&ds.inode, counters).ok_or(CachedMiss::Absent)?;
        if trust_tcp && proto == DiagProto::Tcp {
            return Ok(o.end(ds));
        }
        let checked = o.checked.load(Ordering::Relaxed);
        if received.is_some_and(|r| checked > r.saturating_duration_since(self.epoch).as_nanos() as u64) {
            return Ok(o.end(ds));
        }
        let now = self.now_ns();
        let recent = now.saturating_sub(checked) < self.tuning.revalidate_after.as_nanos() as u64;
        if !recent {
            if !k.holds_kept(o.pid, o.fd, ds.inode, &stats.proc_link) {
                return Err(CachedMiss::Stale);
            }
            o.checked.store(now, Ordering::Relaxed);
        }
        Ok(o.end(ds))
    }

    /// The comm, exe and cgroup of holder `o`, read now if they were not
    /// when it was found (then kept for its socket), and only if it can be
    /// shown to be the same process: after the read it must still hold its
    /// socket (one read of `/proc/PID/fd/N` through a kept link, which fails
    /// once the process has exited even if its pid was reused). `None`:
    /// it has exited or no longer holds the socket (a socket closed by its
    /// process since), so what was read cannot be trusted to be its.
    pub fn read_process(&self, k: &impl KernelView, stats: &ResolverStats, o: &Owner) -> Option<ProcessInfo> {
        if let Some(p) = o.process.get() {
            return Some(p.clone());
        }
        let p = k.process_info(o.pid, o.known.as_ref())?;
        if !k.holds_kept(o.pid, o.fd, o.inode, &stats.proc_link) {
            return None;
        }
        let p = o.process.get_or_init(|| p).clone();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = recent.list.iter_mut().find(|r| r.pid == o.pid) {
            r.process = Some(p.clone());
        }
        Some(p)
    }

    /// Rebuild the scan unless one started after `t0` (single flight: a
    /// caller that waited for another's scan uses its result).
    fn rescan(&self, k: &impl KernelView, stats: &ResolverStats, t0: Instant) {
        let mut st = self.scanning.lock().unwrap_or_else(|e| e.into_inner());
        if st.last_start >= t0 {
            return;
        }
        let start = Instant::now();
        match k.scan() {
            Ok(map) => {
                stats.proc_scan_sockets.store(map.owners.len() as u64, Ordering::Relaxed);
                *self.scan.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
            }
            Err(e) => log::warn!("{e}"),
        }
        bump(&stats.proc_scans);
        st.last_start = start;
    }
}
