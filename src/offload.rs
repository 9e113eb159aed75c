//! Stable decisions in the kernel (`labelgate run --flow --offload`, a
//! prototype; docs/OFFLOAD.md): after labelgate accepted the first packet of
//! a TCP connection by a rule that depends only on the sending process's
//! identity (its exe and cgroup, on a host without SELinux) and on the
//! destination address and port, and every process in the sender's cgroup
//! has that identity, the key `(cgroup, daddr, dport)` is added, with a
//! timeout, to an nftables set in the table `inet labelgate_offload`; a rule
//! there gives the following first packets with that key the flow-mode
//! accept mark, so the queue rules let them pass without queueing them.
//!
//! This module owns that table: it creates it (deleting any leftover) at
//! start, flushes its sets when the policy is replaced (before the new
//! policy answers), deletes it at stop, adds elements from a worker thread
//! fed by a bounded channel (a full channel loses the offer, never delays a
//! verdict), and removes a cgroup's elements when the process events
//! connector reports an exec in it of another program.

use crate::context::SecurityContext;
use crate::engine::Engine;
use crate::labels::{Hook, Labels, Origin, ProcessInfo};
use crate::packet::{PacketInfo, Proto};
use crate::policy::{Decision, Mode, Policy, PolicyDigest, Rule, RuleVerdict, Verdict};
use crate::sys::nftset::{Change, NftLink};
use crate::sys::proc_connector::{ProcEvents, Received};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// The nftables table this module owns (family inet).
pub const TABLE: &str = "labelgate_offload";
/// The deepest cgroup level with a set and a rule (the cgroup v2 root is
/// level 0 and never offloaded).
pub const MAX_LEVEL: usize = 8;
/// The element timeout when none is given.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Offers waiting for the worker; more are dropped (and counted).
const CHANNEL: usize = 256;
/// Most cgroups with elements at once.
const MAX_CGROUPS: usize = 4096;
/// Most cgroup directories and processes one verification reads.
const MAX_DIRS: usize = 256;
const MAX_PIDS: usize = 4096;
/// Exec events remembered for the verifications under way.
const EXEC_TRACE: usize = 4096;
/// The accept bit of flow mode in the packet mark (see `rules::FLOW_MARK_*`).
const MARK_MASK: u32 = crate::rules::FLOW_MARK_MASK;
const MARK_ACCEPT: u32 = crate::rules::FLOW_MARK_ACCEPT;

/// Why offloading could not start.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("no cgroup v2 mount found (in /proc/self/mounts or another process's)")]
    NoCgroup2,
    #[error("cannot create the nftables table inet {TABLE} with nft: {0}")]
    Nft(String),
    #[error("nf_tables netlink: {0}")]
    Netlink(#[source] io::Error),
    #[error("cannot listen to process events (NETLINK_CONNECTOR, in the initial network namespace): {0}")]
    Connector(#[source] io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] io::Error),
}

/// Counters of the offload, printed at stop.
#[derive(Debug, Default)]
pub struct Stats {
    /// Accepted first packets offered to the worker.
    pub offered: AtomicU64,
    /// Offers lost because the channel was full.
    pub lost: AtomicU64,
    /// Elements added.
    pub added: AtomicU64,
    /// Offers the worker refused (conditions not met).
    pub refused: AtomicU64,
    /// Cgroups whose elements an exec removed.
    pub exec_removed: AtomicU64,
    /// Whole flushes (reload, lost events).
    pub flushes: AtomicU64,
    /// nf_tables errors.
    pub errors: AtomicU64,
}

impl Stats {
    /// `key=value` pairs for the stop line.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "offered={} lost={} added={} refused={} exec_removed={} flushes={} errors={}",
            g(&self.offered),
            g(&self.lost),
            g(&self.added),
            g(&self.refused),
            g(&self.exec_removed),
            g(&self.flushes),
            g(&self.errors)
        )
    }
}

/// A first packet accepted in a way that may be offloaded.
#[derive(Debug)]
struct Offer {
    digest: PolicyDigest,
    rule: usize,
    cgroup: Arc<str>,
    exe: Arc<str>,
    dst: IpAddr,
    dport: u16,
    /// The identity the rules saw: the contexts and the sending process.
    source: SecurityContext,
    dest: SecurityContext,
    process: ProcessInfo,
}

/// The running offload.
pub struct Offload {
    tx: SyncSender<Offer>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The worker's channel end and the events socket until [`Offload::spawn`].
    #[allow(clippy::type_complexity)]
    pending: Mutex<Option<(Receiver<Offer>, ProcEvents)>>,
}

struct Shared {
    state: Mutex<State>,
    engine: OnceLock<Weak<Engine>>,
    stop: AtomicBool,
    /// Numbers the exec events as the connector thread takes them.
    exec_seq: AtomicU64,
    /// The cgroup v2 root, as `/proc/self/fd/N` of [`Shared::_cgroup_dir`].
    mount: PathBuf,
    _cgroup_dir: std::fs::File,
    timeout_ms: u64,
    pub stats: Stats,
}

struct State {
    link: NftLink,
    /// The table is gone (stopped, or an error left it unknown): nothing
    /// more is added.
    off: bool,
    cgroups: HashMap<Arc<str>, Entry>,
    /// The last exec events: (number, cgroup path; `None` when unknown).
    execs: VecDeque<(u64, Option<Arc<str>>)>,
    /// Verifications that started before this event number are void (the
    /// trace lost events, or events were lost).
    void_before: u64,
}

struct Entry {
    exe: Arc<str>,
    /// (set name, key, added at)
    keys: Vec<(String, Vec<u8>, Instant)>,
}

impl Offload {
    /// Create the table (any leftover is deleted first, in the same
    /// transaction) and open the netlink sockets; [`spawn`](Self::spawn)
    /// starts the threads. Call before privileges are dropped (the
    /// connector socket is opened in the initial network namespace) and
    /// before the queues are bound.
    pub fn start(timeout_ms: u64) -> Result<Arc<Offload>, OffloadError> {
        let (cgroup_dir, mount) = cgroup2_root().ok_or(OffloadError::NoCgroup2)?;
        let link = NftLink::open(Duration::from_secs(2)).map_err(OffloadError::Netlink)?;
        let init = init_netns().map_err(OffloadError::Connector)?;
        let events = {
            use std::os::fd::AsFd;
            crate::sys::netns::in_netns(init.as_fd(), || ProcEvents::open(4 << 20, Duration::from_millis(200)))
                .map_err(OffloadError::Connector)?
        };
        // Last: from here on, dropping the result deletes the table.
        create_table()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                link,
                off: false,
                cgroups: HashMap::new(),
                execs: VecDeque::new(),
                void_before: 0,
            }),
            engine: OnceLock::new(),
            stop: AtomicBool::new(false),
            exec_seq: AtomicU64::new(0),
            mount,
            _cgroup_dir: cgroup_dir,
            timeout_ms: timeout_ms.max(1),
            stats: Stats::default(),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        Ok(Arc::new(Offload { tx, shared, threads: Mutex::new(Vec::new()), pending: Mutex::new(Some((rx, events))) }))
    }

    /// Start the worker and the exec watch (after privileges are dropped:
    /// threads keep the capabilities they were created with). Once.
    pub fn spawn(&self) -> Result<(), OffloadError> {
        let Some((rx, events)) = lock(&self.pending).take() else { return Ok(()) };
        let s = self.shared.clone();
        let worker = std::thread::Builder::new()
            .name("offload".into())
            .spawn(move || worker(&s, &rx))
            .map_err(OffloadError::Thread)?;
        let s = self.shared.clone();
        let execs = std::thread::Builder::new()
            .name("offload-exec".into())
            .spawn(move || exec_watch(&s, events))
            .map_err(OffloadError::Thread)?;
        lock(&self.threads).extend([worker, execs]);
        Ok(())
    }

    /// The engine whose current policy the worker checks offers against.
    pub fn attach(&self, engine: &Arc<Engine>) {
        let _ = self.shared.engine.set(Arc::downgrade(engine));
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// On the verdict path, after a decision: offer its key to the worker
    /// if the decision may be offloaded. Never blocks.
    pub fn offer(&self, policy: &Policy, mode: Mode, d: &Decision, hook: Hook, pkt: &PacketInfo, labels: &Labels) {
        let Some(o) = offer_of(policy, mode, d, hook, pkt, labels) else { return };
        self.shared.stats.offered.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(o) {
            self.shared.stats.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Replace the policy: every element is removed before `replace` runs
    /// (the new policy answers only once none is left), and no offer decided
    /// with the old policy is added after it. If the sets cannot be
    /// flushed the table is deleted and offloading stops.
    pub fn swap<F: FnOnce()>(&self, replace: F) {
        let mut st = lock(&self.shared.state);
        flush_all(&mut st, &self.shared.stats);
        replace();
    }

    /// Delete the table and stop the threads (at exit, before the queues
    /// are released).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let mut st = lock(&self.shared.state);
            st.off = true;
            if let Err(e) = st.link.apply(&[Change::DeleteTable { table: TABLE }]) {
                log::error!("offload: cannot delete table inet {TABLE}: {e}; delete it by hand");
            }
            st.cgroups.clear();
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Offload {
    /// When start-up fails after the table was made (or at any exit that
    /// skipped [`Offload::shutdown`]): the table goes too.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut st = lock(&self.shared.state);
        if !st.off {
            st.off = true;
            if let Err(e) = st.link.apply(&[Change::DeleteTable { table: TABLE }]) {
                log::error!("offload: cannot delete table inet {TABLE}: {e}; delete it by hand");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The offer for a decision, if it may be offloaded at all: an enforcing
/// accept by a rule (not the default), with no audit, no permissive mode,
/// no SELinux verdict, of a TCP SYN at OUTPUT from a process with a known
/// cgroup, on a host where no LSM labels processes (the identity is the
/// exe and the cgroup; see docs/OFFLOAD.md for SELinux hosts).
fn offer_of(policy: &Policy, mode: Mode, d: &Decision, hook: Hook, pkt: &PacketInfo, labels: &Labels) -> Option<Offer> {
    let plain_accept = d.verdict == Verdict::Accept
        && d.table_verdict == Verdict::Accept
        && !d.permissive
        && !d.audit
        && d.selinux.is_none()
        && mode == Mode::Enforcing;
    if !plain_accept || hook != Hook::Output || pkt.proto != Proto::Tcp || !pkt.tcp_syn {
        return None;
    }
    if !matches!(labels.source.origin, Origin::Unlabeled("selinux_disabled")) {
        return None;
    }
    let p = labels.source_process.as_ref()?;
    let cgroup = p.cgroup.as_ref()?.path.clone();
    Some(Offer {
        digest: policy.digest,
        rule: d.rule?,
        cgroup,
        exe: p.exe.clone(),
        dst: pkt.dst,
        dport: pkt.dport?,
        source: labels.source.context.clone(),
        dest: labels.dest.context.clone(),
        process: p.clone(),
    })
}

/// Whether a rule's match depends only on what is the same for every
/// connection with the same key from processes of the same identity: the
/// source and destination contexts and levels (offers are only made where
/// no LSM labels anything: every context is the `unlabeled_t` placeholder
/// or a static address label, a function of the destination address), the
/// source process (exe, unit, cgroup, container), the hook, protocol,
/// destination address and port. Not: uid, gid, source address and port,
/// interfaces, secmark, peer label, the destination's process.
fn stable(r: &Rule) -> bool {
    r.uid.is_none()
        && r.saddr.is_none()
        && r.rare.as_ref().is_none_or(|x| {
            x.sport.is_none()
                && x.secmark.is_none()
                && x.peer.is_none()
                && x.peer_level.is_none()
                && x.gid.is_none()
                && x.iif.is_none()
                && x.oif.is_none()
                && x.dest_process.is_none()
        })
}

/// Whether a rule could match a connection with the offer's key and
/// identity, whatever its other conditions say: false when a condition
/// that is the same for all of them (hook, protocol, destination port and
/// address, contexts, sending process) fails.
fn may_match(r: &Rule, o: &Offer) -> bool {
    use crate::policy::HookSel;
    !matches!(r.hook, HookSel::Input | HookSel::Forward)
        && r.proto.is_none_or(|p| p == Proto::Tcp)
        && r.dport.get().is_none_or(|s| s.contains(o.dport))
        && r.daddr.as_ref().is_none_or(|s| s.contains(&o.dst))
        && r.source.as_ref().is_none_or(|p| p.matches(&o.source))
        && r.dest.as_ref().is_none_or(|p| p.matches(&o.dest))
        && r.rare.as_ref().and_then(|x| x.source_process.as_ref()).is_none_or(|c| c.check(Some(&o.process)).is_ok())
}

/// Whether the accept by the offer's rule holds for every connection with
/// the same key from a process of the same identity: that rule accepts and
/// is [`stable`], and every rule before it is stable (it did not match, so
/// it never does) or cannot match the key and identity.
fn eligible(p: &Policy, o: &Offer) -> bool {
    let Some(rules) = p.rules.get(..=o.rule) else { return false };
    rules.last().is_some_and(|r| r.verdict == RuleVerdict::Accept && stable(r))
        && rules.iter().all(|r| stable(r) || !may_match(r, o))
}

/// The cgroup's level: its number of path components (`/a/b` is 2).
fn level(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

/// Whether cgroup `path` is `top` or below it.
fn within(path: &str, top: &str) -> bool {
    path == top || path.strip_prefix(top).is_some_and(|rest| rest.starts_with('/'))
}

fn set_name(v6: bool, level: usize) -> String {
    format!("{}_l{level}", if v6 { "v6" } else { "v4" })
}

/// The set key: cgroup id (8 bytes, host order), address, port (network
/// order, padded to 4 bytes), as nftables lays out a concatenation.
fn key(id: u64, dst: IpAddr, dport: u16) -> Vec<u8> {
    let mut k = id.to_ne_bytes().to_vec();
    match dst {
        IpAddr::V4(a) => k.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => k.extend_from_slice(&a.octets()),
    }
    k.extend_from_slice(&dport.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

/// The nft script that creates the table: one set and one rule per level
/// and family.
pub fn table_script() -> String {
    let mut s = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    for l in 1..=MAX_LEVEL {
        for (v6, addr) in [(false, "ip daddr"), (true, "ip6 daddr")] {
            s += &format!(
                "  set {} {{ typeof socket cgroupv2 level {l} . {addr} . tcp dport; flags timeout; }}\n",
                set_name(v6, l)
            );
        }
    }
    // Before the queue rules (iptables' security table is at priority 50,
    // `labelgate rules --backend nft` at security + 10).
    s += "  chain out {\n    type filter hook output priority security - 1; policy accept;\n";
    s += "    ct state != new return\n    meta l4proto != tcp return\n";
    let keep = !MARK_MASK;
    for l in 1..=MAX_LEVEL {
        for (v6, addr) in [(false, "ip daddr"), (true, "ip6 daddr")] {
            s += &format!(
                "    socket cgroupv2 level {l} . {addr} . tcp dport @{} counter meta mark set meta mark and {keep:#x} or {MARK_ACCEPT:#x} return\n",
                set_name(v6, l)
            );
        }
    }
    s += "  }\n}\n";
    s
}

fn create_table() -> Result<(), OffloadError> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| OffloadError::Nft(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(table_script().as_bytes()).map_err(|e| OffloadError::Nft(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| OffloadError::Nft(e.to_string()))?;
    if !out.status.success() {
        return Err(OffloadError::Nft(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

/// The cgroup v2 root directory, opened (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid host), and a path that reaches it
/// through that descriptor. In a mount namespace without it (`ip netns
/// exec` mounts a fresh /sys), another process's, through its
/// `/proc/PID/root`; the descriptor keeps it open after that process ends.
fn cgroup2_root() -> Option<(std::fs::File, PathBuf)> {
    use std::os::fd::AsRawFd;
    let find = |mounts: &str| {
        mounts.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
            (kind == "cgroup2").then(|| at.to_string())
        })
    };
    let own = std::fs::read_to_string("/proc/self/mounts").ok().as_deref().and_then(find);
    let dir = match own {
        Some(at) => std::fs::File::open(at).ok(),
        None => std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid = e.file_name().into_string().ok().filter(|n| n.bytes().all(|b| b.is_ascii_digit()))?;
            let at = find(&std::fs::read_to_string(format!("/proc/{pid}/mounts")).ok()?)?;
            std::fs::File::open(format!("/proc/{pid}/root/{}", at.trim_start_matches('/'))).ok()
        }),
    }?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    Some((dir, path))
}

/// The initial network namespace's inode number (the kernel's fixed
/// `PROC_NET_INIT_INO`).
const INIT_NET: &str = "net:[4026531833]";

/// The initial network namespace, where the process events connector is:
/// ours, or that of the first process found in it (`/proc/1` may not be
/// open to us).
fn init_netns() -> io::Result<std::fs::File> {
    let is_init =
        |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l.as_os_str() == INIT_NET);
    if is_init("self") {
        return std::fs::File::open("/proc/self/ns/net");
    }
    for e in std::fs::read_dir("/proc")?.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        if is_init(pid) {
            if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/ns/net")) {
                return Ok(f);
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, "no process in the initial network namespace is open to labelgate"))
}

/// Remove every element of every set. On failure, delete the table and
/// stop offloading (nothing is left that could accept).
fn flush_all(st: &mut State, stats: &Stats) {
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    st.cgroups.clear();
    if st.off {
        return;
    }
    let names: Vec<String> = (1..=MAX_LEVEL).flat_map(|l| [set_name(false, l), set_name(true, l)]).collect();
    let changes: Vec<Change<'_>> = names.iter().map(|s| Change::Flush { table: TABLE, set: s }).collect();
    if let Err(e) = st.link.apply(&changes) {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        log::error!("offload: cannot flush the sets of inet {TABLE}: {e}; deleting the table, offload stops");
        st.off = true;
        if let Err(e) = st.link.apply(&[Change::DeleteTable { table: TABLE }]) {
            log::error!("offload: cannot delete table inet {TABLE}: {e}; delete it by hand");
        }
    }
}

/// Remove the elements of the cgroup `path`. An element the kernel already
/// expired is not an error; any other error flushes everything.
fn remove(st: &mut State, path: &str, stats: &Stats) {
    let Some(entry) = st.cgroups.remove(path) else { return };
    if st.off {
        return;
    }
    let changes: Vec<Change<'_>> =
        entry.keys.iter().map(|(set, key, _)| Change::Delete { table: TABLE, set, key }).collect();
    if st.link.apply(&changes).is_ok() {
        log::debug!("offload: removed the {} elements of {path}", changes.len());
        return;
    }
    // One by one: a batch stops at the first expired element.
    for c in &changes {
        match st.link.apply(std::slice::from_ref(c)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                log::error!("offload: cannot remove an element of {path}: {e}; flushing all");
                flush_all(st, stats);
                return;
            }
        }
    }
}

fn worker(s: &Shared, rx: &Receiver<Offer>) {
    while !s.stop.load(Ordering::SeqCst) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(o) => {
                if !add(s, &o) {
                    s.stats.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// Verify an offer and add its element: true when added.
fn add(s: &Shared, o: &Offer) -> bool {
    let r = add_checked(s, o);
    if !r {
        log::debug!("offload: refused {} {} {}:{}", o.cgroup, o.exe, o.dst, o.dport);
    }
    r
}

fn add_checked(s: &Shared, o: &Offer) -> bool {
    let lvl = level(&o.cgroup);
    if !(1..=MAX_LEVEL).contains(&lvl) {
        return false;
    }
    let dir = s.mount.join(o.cgroup.trim_start_matches('/'));
    let Ok(id) = std::fs::metadata(&dir).map(|m| m.ino()) else { return false };
    let Some(engine) = s.engine.get().and_then(Weak::upgrade) else { return false };
    // The policy test first (cheap, and most offers it refuses are refused
    // again and again); its digest is compared again under the lock.
    let loaded = engine.current();
    if loaded.policy.digest != o.digest || !eligible(&loaded.policy, o) {
        return false;
    }
    let started = s.exec_seq.load(Ordering::SeqCst);
    let uniform = uniform(&dir, &o.exe);
    let mut st = lock(&s.state);
    if !uniform {
        // Not (or no longer) one identity: whatever was added goes.
        remove(&mut st, &o.cgroup, &s.stats);
        return false;
    }
    if st.off || st.void_before > started {
        return false;
    }
    // An exec in the cgroup since the verification began: its program may
    // not have been seen.
    if st.execs.iter().any(|(n, p)| *n > started && p.as_deref().is_none_or(|p| within(p, &o.cgroup))) {
        return false;
    }
    // Checked again under the lock that a reload takes to flush: the policy
    // that decided is the one in force, and stays so until the element is in.
    if engine.current().policy.digest != o.digest {
        return false;
    }
    let now = Instant::now();
    let ttl = Duration::from_millis(s.timeout_ms);
    if !st.cgroups.contains_key(&o.cgroup) && st.cgroups.len() >= MAX_CGROUPS {
        st.cgroups.retain(|_, e| e.keys.iter().any(|(_, _, at)| now.duration_since(*at) < ttl));
        if st.cgroups.len() >= MAX_CGROUPS {
            return false;
        }
    }
    let set = set_name(o.dst.is_ipv6(), lvl);
    let k = key(id, o.dst, o.dport);
    let change = Change::Add { table: TABLE, set: &set, key: &k, timeout_ms: s.timeout_ms };
    if let Err(e) = st.link.apply(&[change]) {
        s.stats.errors.fetch_add(1, Ordering::Relaxed);
        log::warn!("offload: cannot add an element for {}: {e}", o.cgroup);
        return false;
    }
    let entry = st.cgroups.entry(o.cgroup.clone()).or_insert_with(|| Entry { exe: o.exe.clone(), keys: Vec::new() });
    entry.keys.retain(|(sn, kk, at)| !(sn == &set && kk == &k) && now.duration_since(*at) < ttl);
    entry.keys.push((set, k, now));
    s.stats.added.fetch_add(1, Ordering::Relaxed);
    log::debug!("offload: added {} {} {}:{}", o.cgroup, o.exe, o.dst, o.dport);
    true
}

/// Whether every process in the cgroup `dir` runs `exe`, no process is in a
/// cgroup below it, and there are at most [`MAX_DIRS`] directories and
/// [`MAX_PIDS`] processes.
fn uniform(dir: &Path, exe: &str) -> bool {
    let mut dirs = vec![dir.to_path_buf()];
    let (mut seen_dirs, mut seen_pids) = (0usize, 0usize);
    while let Some(d) = dirs.pop() {
        seen_dirs += 1;
        if seen_dirs > MAX_DIRS {
            return false;
        }
        let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) else { return false };
        // The element covers the cgroups below too (their level-N ancestor
        // is this one), whose paths differ: they must hold no process.
        if d != dir && !procs.trim().is_empty() {
            return false;
        }
        for pid in procs.split_whitespace() {
            seen_pids += 1;
            if seen_pids > MAX_PIDS || pid.parse::<u32>().is_err() {
                return false;
            }
            match std::fs::read_link(format!("/proc/{pid}/exe")) {
                Ok(p) if p.as_os_str() == exe => {}
                // Gone since the list was read: it runs nothing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                _ => return false,
            }
        }
        let Ok(rd) = std::fs::read_dir(&d) else { return false };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    true
}

/// A process's cgroup v2 path (its `0::` line); `None` once it is gone.
fn process_cgroup(tgid: u32) -> Option<Arc<str>> {
    std::fs::read_to_string(format!("/proc/{tgid}/cgroup"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("0::").map(Arc::from)))
}

fn exec_watch(s: &Shared, mut events: ProcEvents) {
    while !s.stop.load(Ordering::SeqCst) {
        match events.recv() {
            Ok(Received::Execs(tgids)) => {
                for tgid in tgids {
                    exec_seen(s, tgid);
                }
            }
            Ok(Received::Overrun) => {
                log::warn!("offload: process events were lost; removing every element");
                let n = s.exec_seq.fetch_add(1, Ordering::SeqCst) + 1;
                let mut st = lock(&s.state);
                st.void_before = n + 1;
                flush_all(&mut st, &s.stats);
            }
            Err(e) => {
                // No more events: nothing may stay offloaded.
                log::error!("offload: process events: {e}; deleting the table, offload stops");
                let mut st = lock(&s.state);
                st.off = true;
                st.cgroups.clear();
                if let Err(e) = st.link.apply(&[Change::DeleteTable { table: TABLE }]) {
                    log::error!("offload: cannot delete table inet {TABLE}: {e}; delete it by hand");
                }
                return;
            }
        }
    }
}

/// An exec by `tgid`: remove the elements of each offloaded cgroup it is
/// in (or under) where a process no longer runs the program the elements
/// were added for.
fn exec_seen(s: &Shared, tgid: u32) {
    let n = s.exec_seq.fetch_add(1, Ordering::SeqCst) + 1;
    let cg = process_cgroup(tgid);
    let mut st = lock(&s.state);
    if st.execs.len() >= EXEC_TRACE {
        if let Some((old, _)) = st.execs.pop_front() {
            st.void_before = st.void_before.max(old + 1);
        }
    }
    st.execs.push_back((n, cg.clone()));
    // The offloaded cgroups it is in (or under); all of them when it is
    // gone before its cgroup was read: what it ran lives on only in
    // children it forked after the exec, which have no exec event of
    // their own but are in the cgroups now.
    let hit: Vec<(Arc<str>, Arc<str>)> = st
        .cgroups
        .iter()
        .filter(|(top, _)| cg.as_deref().is_none_or(|cg| within(cg, top)))
        .map(|(top, e)| (top.clone(), e.exe.clone()))
        .collect();
    // Every process there is checked, not only this one: it may have
    // forked and run yet another program since.
    for (top, exe) in hit {
        log::debug!("offload: exec by {tgid} in {cg:?}: checking {top}");
        if !uniform(&s.mount.join(top.trim_start_matches('/')), &exe) {
            s.stats.exec_removed.fetch_add(1, Ordering::Relaxed);
            remove(&mut st, &top, &s.stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::from_toml(text, "t").unwrap()
    }

    #[test]
    fn only_stable_rules_before_the_accept_may_be_offloaded() {
        let offer = |rule: usize, dport: u16, exe: &str| Offer {
            digest: PolicyDigest::of(b""),
            rule,
            cgroup: "/a/b".into(),
            exe: exe.into(),
            dst: "127.0.0.1".parse().unwrap(),
            dport,
            source: SecurityContext::unlabeled(),
            dest: SecurityContext::unlabeled(),
            process: ProcessInfo { pid: 1, comm: "p".into(), exe: exe.into(), cgroup: None, netns: None },
        };
        let py = "/usr/bin/python3.11";
        let p = policy(
            "default = \"drop\"\n\
             [[rule]]\nname = \"uid-other-port\"\nuid = 1000\nproto = \"tcp\"\ndport = 9\nverdict = \"drop\"\n\
             [[rule]]\nname = \"py\"\nsource_exe = \"/usr/bin/python3*\"\nproto = \"tcp\"\ndport = 7001\nverdict = \"accept\"\n\
             [[rule]]\nname = \"uid-here\"\nuid = 1000\nproto = \"tcp\"\ndport = 7002\nverdict = \"drop\"\n\
             [[rule]]\nname = \"any\"\nproto = \"tcp\"\ndport = 7002\nverdict = \"accept\"\n\
             [[rule]]\nname = \"by-uid\"\nuid = 0\nproto = \"tcp\"\ndport = 7003\nverdict = \"accept\"\n\
             [[rule]]\nname = \"uid-of-a-domain\"\nuid = 1000\nsource = \"*:*:httpd_t\"\nproto = \"tcp\"\nverdict = \"drop\"\n\
             [[rule]]\nname = \"uid-of-sbin\"\nuid = 1000\nsource_exe = \"/usr/sbin/*\"\nproto = \"tcp\"\nverdict = \"drop\"\n\
             [[rule]]\nname = \"all\"\nproto = \"tcp\"\nverdict = \"accept\"\n",
        );
        // A uid rule on another port cannot match: the exe rule is stable.
        assert!(eligible(&p, &offer(1, 7001, py)));
        // A uid rule that may match the key comes first: not stable.
        assert!(!eligible(&p, &offer(3, 7002, py)));
        // An accept by uid is not.
        assert!(!eligible(&p, &offer(4, 7003, py)));
        // A drop is never offloaded, nor a rule that does not exist.
        assert!(!eligible(&p, &offer(0, 9, py)));
        assert!(!eligible(&p, &offer(99, 7001, py)));
        // uid rules for another source context or another program cannot
        // match this identity; for this program they can.
        assert!(eligible(&p, &offer(7, 7009, py)));
        assert!(!eligible(&p, &offer(7, 7009, "/usr/sbin/x")));
        let p = policy(
            "default = \"drop\"\n[[rule]]\nname = \"d\"\ndest_exe = \"/usr/sbin/*\"\nproto = \"tcp\"\ndport = 1\nverdict = \"accept\"\n\
             [[rule]]\nname = \"c\"\ndest = \"*:*:postgresql_t\"\nproto = \"tcp\"\ndport = 2\nverdict = \"accept\"\n",
        );
        assert!(!eligible(&p, &offer(0, 1, py)), "the destination's process is not in the key");
        assert!(eligible(&p, &offer(1, 2, py)), "without an LSM, a destination context is a function of the address");
    }

    #[test]
    fn keys_levels_and_the_table_script() {
        let k = key(0x0102, "127.0.0.1".parse().unwrap(), 7001);
        assert_eq!(k.len(), 16);
        assert_eq!(&k[8..12], &[127, 0, 0, 1]);
        assert_eq!(&k[12..16], &[0x1b, 0x59, 0, 0]);
        assert_eq!(key(1, "::1".parse().unwrap(), 1).len(), 28);
        assert_eq!(level("/a/b"), 2);
        assert_eq!(level("/"), 0);
        assert!(within("/a/b/c", "/a/b") && within("/a/b", "/a/b"));
        assert!(!within("/a/bc", "/a/b") && !within("/a", "/a/b"));
        let s = table_script();
        assert!(s.starts_with("table inet labelgate_offload {}\ndelete table inet labelgate_offload\n"), "{s}");
        assert!(s.contains("set v6_l8 { typeof socket cgroupv2 level 8 . ip6 daddr . tcp dport; flags timeout; }"));
        assert!(s.contains(
            "socket cgroupv2 level 3 . ip daddr . tcp dport @v4_l3 counter meta mark set meta mark and 0xff9fffff or 0x200000 return"
        ));
    }
}
