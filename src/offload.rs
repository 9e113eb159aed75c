//! Stable decisions in the kernel (`labelgate run --flow --offload`, a
//! prototype; docs/OFFLOAD.md): after labelgate accepted the first packet of
//! a TCP connection at OUTPUT by a rule whose answer, for that destination
//! address and port, depends on the sending process only through its cgroup
//! (on a host where no LSM labels processes), the key `(cgroup,
//! daddr, dport)` is added, with a timeout, to an nftables set in the table
//! `inet labelgate_offload`; a rule there gives the following first packets
//! of sockets created in that very cgroup (not in cgroups below it) with
//! that key the flow-mode accept mark, so the queue rules let them pass
//! without queueing them. A decision that depends on the program, the uid,
//! the source address or anything else the key does not fix is never
//! offloaded.
//!
//! This module owns that table: it creates it (deleting any leftover) at
//! start, flushes its sets when the policy is replaced (before the new
//! policy answers), deletes it at stop, and adds elements from a worker
//! thread fed by a bounded channel (a full channel loses the offer, never
//! delays a verdict).

use crate::context::SecurityContext;
use crate::engine::Engine;
use crate::labels::{Hook, Labels, Origin, ProcessInfo};
use crate::packet::{PacketInfo, Proto};
use crate::policy::pattern::ProcessCond;
use crate::policy::{Decision, Mode, Policy, PolicyDigest, Rule, RuleVerdict, Verdict};
use crate::sys::nftset::{Change, NftLink};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
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
/// Most elements labelgate keeps at once (live, not yet timed out).
const MAX_ELEMENTS: usize = 65_536;
/// The accept bit of flow mode in the packet mark (see `rules::FLOW_MARK_*`).
const MARK_MASK: u32 = crate::rules::FLOW_MARK_MASK;
const MARK_ACCEPT: u32 = crate::rules::FLOW_MARK_ACCEPT;
/// With the accept bit: INPUT's decision is settled too (the OUTPUT queue
/// chain then sets both hooks' connection mark bits).
const MARK_SETTLED: u32 = crate::rules::FLOW_MARK_SETTLED;

/// Why offloading could not start.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("no cgroup v2 mount found (in /proc/self/mounts or another process's)")]
    NoCgroup2,
    #[error("cannot create the nftables table inet {TABLE} with nft: {0}")]
    Nft(String),
    #[error("nf_tables netlink: {0}")]
    Netlink(#[source] io::Error),
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
    /// Of those, elements that settle INPUT's decision too.
    pub settled: AtomicU64,
    /// Offers the worker refused (conditions not met).
    pub refused: AtomicU64,
    /// Whole flushes (reload).
    pub flushes: AtomicU64,
    /// nf_tables errors.
    pub errors: AtomicU64,
}

impl Stats {
    /// `key=value` pairs for the stop line.
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "offered={} lost={} added={} settled={} refused={} flushes={} errors={}",
            g(&self.offered),
            g(&self.lost),
            g(&self.added),
            g(&self.settled),
            g(&self.refused),
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
    /// The sending process's cgroup v2 path (from `process`).
    cgroup: Arc<str>,
    dst: IpAddr,
    dport: u16,
    /// The identity the rules saw: the contexts and the sending process.
    source: SecurityContext,
    dest: SecurityContext,
    process: ProcessInfo,
    /// The engine settled INPUT's decision at OUTPUT for this packet (a
    /// connection between two local sockets, accepted at INPUT without a
    /// record; see `Engine::with_input_settling`).
    settle: bool,
}

/// The running offload.
pub struct Offload {
    tx: SyncSender<Offer>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The worker's channel end until [`Offload::spawn`].
    pending: Mutex<Option<Receiver<Offer>>>,
}

struct Shared {
    state: Mutex<State>,
    engine: OnceLock<Weak<Engine>>,
    stop: AtomicBool,
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
    /// The elements added and when: (set name, key) -> added at. Pruned of
    /// the timed-out ones when full.
    live: HashMap<(String, Vec<u8>), Instant>,
}

impl Offload {
    /// Create the table (any leftover is deleted first, in the same
    /// transaction) and open the nf_tables netlink socket;
    /// [`spawn`](Self::spawn) starts the worker. Call before privileges
    /// are dropped (`nft` creates the table) and before the queues are
    /// bound.
    pub fn start(timeout_ms: u64) -> Result<Arc<Offload>, OffloadError> {
        let (cgroup_dir, mount) = cgroup2_root().ok_or(OffloadError::NoCgroup2)?;
        let link = NftLink::open(Duration::from_secs(2)).map_err(OffloadError::Netlink)?;
        // Last: from here on, dropping the result deletes the table.
        create_table()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State { link, off: false, live: HashMap::new() }),
            engine: OnceLock::new(),
            stop: AtomicBool::new(false),
            mount,
            _cgroup_dir: cgroup_dir,
            timeout_ms: timeout_ms.max(1),
            stats: Stats::default(),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        Ok(Arc::new(Offload { tx, shared, thread: Mutex::new(None), pending: Mutex::new(Some(rx)) }))
    }

    /// Start the worker (after privileges are dropped: threads keep the
    /// capabilities they were created with). Once.
    pub fn spawn(&self) -> Result<(), OffloadError> {
        let Some(rx) = lock(&self.pending).take() else { return Ok(()) };
        let s = self.shared.clone();
        let worker = std::thread::Builder::new()
            .name("offload".into())
            .spawn(move || worker(&s, &rx))
            .map_err(OffloadError::Thread)?;
        *lock(&self.thread) = Some(worker);
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
    /// if the decision may be offloaded. `at_output`: `None` for a packet
    /// at another hook than OUTPUT; at OUTPUT, whether the engine settled
    /// INPUT's decision for it too. Never blocks.
    pub fn offer(
        &self,
        policy: &Policy,
        mode: Mode,
        d: &Decision,
        at_output: Option<bool>,
        pkt: &PacketInfo,
        labels: &Labels,
    ) {
        let Some(o) = offer_of(policy, mode, d, at_output, pkt, labels) else { return };
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
            st.live.clear();
        }
        if let Some(t) = lock(&self.thread).take() {
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
/// cgroup, on a host where no LSM labels processes (see docs/OFFLOAD.md for
/// SELinux hosts).
fn offer_of(
    policy: &Policy,
    mode: Mode,
    d: &Decision,
    at_output: Option<bool>,
    pkt: &PacketInfo,
    labels: &Labels,
) -> Option<Offer> {
    let plain_accept = d.verdict == Verdict::Accept
        && d.table_verdict == Verdict::Accept
        && !d.permissive
        && !d.audit
        && d.selinux.is_none()
        && mode == Mode::Enforcing;
    let settle = at_output?;
    if !plain_accept || pkt.proto != Proto::Tcp || !pkt.tcp_syn {
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
        dst: pkt.dst,
        dport: pkt.dport?,
        source: labels.source.context.clone(),
        dest: labels.dest.context.clone(),
        process: p.clone(),
        settle,
    })
}

/// Whether a rule's match depends only on what is the same for every
/// connection with the same key: the source and destination contexts and
/// levels (offers are only made where no LSM labels anything: every context
/// is the `unlabeled_t` placeholder or a static address label, a function
/// of the destination address), the hook, protocol, destination address
/// and port, and the sending process's cgroup (`source_cgroup`,
/// `source_unit` and `source_container` are functions of its path, and the
/// key holds the socket's own cgroup). Not: the sending program
/// (`source_exe`: another program may run in the cgroup, or the same
/// process exec another), uid, gid, source address and port, interfaces,
/// secmark, peer label, the destination's process.
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
                && x.source_process.as_ref().is_none_or(|c| c.exe.is_none())
        })
}

/// Whether a rule could match, at hook `at`, a connection with the offer's
/// key from a process in the offer's cgroup, whatever its other conditions
/// say: false when a condition that is the same for all of them (hook,
/// protocol, destination port and address, contexts, the sending process's
/// cgroup, unit and container) fails. The program (`source_exe`) is not:
/// any program may run in the cgroup.
fn may_match(r: &Rule, o: &Offer, at: Hook) -> bool {
    use crate::policy::HookSel;
    let by_cgroup = |c: &Arc<ProcessCond>| ProcessCond { exe: None, ..(**c).clone() }.check(Some(&o.process)).is_ok();
    let hook = match r.hook {
        HookSel::Any => true,
        HookSel::Output => at == Hook::Output,
        HookSel::Input => at == Hook::Input,
        HookSel::Forward | HookSel::Prerouting | HookSel::Postrouting => false,
    };
    hook && r.proto.is_none_or(|p| p == Proto::Tcp)
        && r.dport.get().is_none_or(|s| s.contains(o.dport))
        && r.daddr.as_ref().is_none_or(|s| s.contains(&o.dst))
        && r.source.as_ref().is_none_or(|p| p.matches(&o.source))
        && r.dest.as_ref().is_none_or(|p| p.matches(&o.dest))
        && r.rare.as_ref().and_then(|x| x.source_process.as_ref()).is_none_or(by_cgroup)
}

/// Whether the accept by the offer's rule holds for every connection with
/// the same key from a socket created in the same cgroup: that rule accepts
/// and is [`stable`], and every rule before it is stable (it did not
/// match, so it never does) or cannot match the key and cgroup.
fn eligible(p: &Policy, o: &Offer) -> bool {
    let Some(rules) = p.rules.get(..=o.rule) else { return false };
    rules.last().is_some_and(|r| r.verdict == RuleVerdict::Accept && stable(r))
        && rules.iter().all(|r| stable(r) || !may_match(r, o, Hook::Output))
}

/// Whether INPUT's decision, which the engine settled at OUTPUT for the
/// offered packet, is the same for every connection with the key from a
/// socket of the cgroup: every rule that could match there is stable (and
/// does not ask the kernel's policy, `verdict = "selinux"`), so the first
/// that matches (or the default) is the same rule with the same answer
/// each time.
/// (The engine settles only for policies without gid, interface or secmark
/// conditions, and only plain acceptances; a reload flushes.)
fn settles_input(p: &Policy, o: &Offer) -> bool {
    o.settle
        && p.rules.iter().all(|r| (stable(r) && r.verdict != RuleVerdict::Selinux) || !may_match(r, o, Hook::Input))
}

/// The cgroup's level: its number of path components (`/a/b` is 2).
fn level(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

/// The set of a level and family; `input`: its elements settle INPUT too.
fn set_name(v6: bool, input: bool, level: usize) -> String {
    format!("{}{}_l{level}", if v6 { "v6" } else { "v4" }, if input { "i" } else { "" })
}

/// Every element set: (IPv6, settles INPUT, name of the address).
const SETS: [(bool, bool, &str); 4] =
    [(false, true, "ip daddr"), (false, false, "ip daddr"), (true, true, "ip6 daddr"), (true, false, "ip6 daddr")];

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

/// The nft script that creates the table: one set per level and family,
/// one empty set per level (and one for the level below the deepest), and
/// the rules, deepest level first. `socket cgroupv2 level N` reads the
/// socket's level-N ancestor and does not match when the socket's cgroup is
/// shallower; so the first rules whose level exists are those of the
/// socket's own cgroup: its element gives the accept mark, and otherwise
/// `!= @any_lN` (an empty set: true for every socket with a level N)
/// returns before the rules of its ancestors are reached. An element
/// therefore covers the sockets of its own cgroup only, not those of the
/// cgroups below it, and sockets deeper than [`MAX_LEVEL`] none.
pub fn table_script() -> String {
    let mut s = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    for l in 1..=MAX_LEVEL {
        for (v6, input, addr) in SETS {
            s += &format!(
                "  set {} {{ typeof socket cgroupv2 level {l} . {addr} . tcp dport; flags timeout; }}\n",
                set_name(v6, input, l)
            );
        }
    }
    for l in 1..=MAX_LEVEL + 1 {
        s += &format!("  set any_l{l} {{ typeof socket cgroupv2 level {l} . tcp dport; }}\n");
    }
    // Before the queue rules (iptables' security table is at priority 50,
    // `labelgate rules --backend nft` at security + 10).
    s += "  chain out {\n    type filter hook output priority security - 1; policy accept;\n";
    s += "    ct state != new return\n    meta l4proto != tcp return\n";
    let deeper = MAX_LEVEL + 1;
    s += &format!("    socket cgroupv2 level {deeper} . tcp dport != @any_l{deeper} return\n");
    let keep = !MARK_MASK;
    for l in (1..=MAX_LEVEL).rev() {
        for (v6, input, addr) in SETS {
            let mark = if input { MARK_ACCEPT | MARK_SETTLED } else { MARK_ACCEPT };
            s += &format!(
                "    socket cgroupv2 level {l} . {addr} . tcp dport @{} counter meta mark set meta mark and {keep:#x} or {mark:#x} return\n",
                set_name(v6, input, l)
            );
        }
        s += &format!("    socket cgroupv2 level {l} . tcp dport != @any_l{l} return\n");
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

/// Remove every element of every set. On failure, delete the table and
/// stop offloading (nothing is left that could accept).
fn flush_all(st: &mut State, stats: &Stats) {
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    st.live.clear();
    if st.off {
        return;
    }
    let names: Vec<String> = (1..=MAX_LEVEL).flat_map(|l| SETS.map(|(v6, input, _)| set_name(v6, input, l))).collect();
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
        log::debug!("offload: refused {} {}:{}", o.cgroup, o.dst, o.dport);
    }
    r
}

fn add_checked(s: &Shared, o: &Offer) -> bool {
    let lvl = level(&o.cgroup);
    if !(1..=MAX_LEVEL).contains(&lvl) {
        return false;
    }
    // The set key holds the cgroup's id, the inode number of its directory.
    let dir = s.mount.join(o.cgroup.trim_start_matches('/'));
    let Ok(id) = std::fs::metadata(&dir).map(|m| m.ino()) else { return false };
    let Some(engine) = s.engine.get().and_then(Weak::upgrade) else { return false };
    // The policy test first (cheap, and most offers it refuses are refused
    // again and again), on one snapshot of the policy in force; its digest
    // is compared again under the lock.
    let policy = &engine.current().policy;
    if policy.digest != o.digest || !eligible(policy, o) {
        return false;
    }
    let input = settles_input(policy, o);
    let mut st = lock(&s.state);
    // Checked again under the lock that a reload takes to flush: the policy
    // that decided is the one in force, and stays so until the element is in.
    if st.off || engine.current().policy.digest != o.digest {
        return false;
    }
    let now = Instant::now();
    let ttl = Duration::from_millis(s.timeout_ms);
    if st.live.len() >= MAX_ELEMENTS {
        st.live.retain(|_, at| now.duration_since(*at) < ttl);
        if st.live.len() >= MAX_ELEMENTS {
            return false;
        }
    }
    let set = set_name(o.dst.is_ipv6(), input, lvl);
    let k = key(id, o.dst, o.dport);
    let change = Change::Add { table: TABLE, set: &set, key: &k, timeout_ms: s.timeout_ms };
    if let Err(e) = st.link.apply(&[change]) {
        s.stats.errors.fetch_add(1, Ordering::Relaxed);
        log::warn!("offload: cannot add an element for {}: {e}", o.cgroup);
        return false;
    }
    st.live.insert((set, k), now);
    s.stats.added.fetch_add(1, Ordering::Relaxed);
    if input {
        s.stats.settled.fetch_add(1, Ordering::Relaxed);
    }
    log::debug!("offload: added {} {}:{}", o.cgroup, o.dst, o.dport);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::cgroup::CgroupInfo;

    fn policy(text: &str) -> Policy {
        Policy::from_toml(text, "t").unwrap()
    }

    fn offer(rule: usize, dport: u16, cgroup: &str) -> Offer {
        let info = CgroupInfo::from_path(cgroup);
        Offer {
            digest: PolicyDigest::of(b""),
            rule,
            cgroup: cgroup.into(),
            dst: "127.0.0.1".parse().unwrap(),
            dport,
            source: SecurityContext::unlabeled(),
            dest: SecurityContext::unlabeled(),
            process: ProcessInfo {
                pid: 1,
                comm: "p".into(),
                exe: "/usr/bin/python3.11".into(),
                cgroup: Some(Arc::new(info)),
                netns: None,
            },
            settle: true,
        }
    }

    #[test]
    fn input_is_settled_only_when_every_rule_that_may_match_there_is_stable() {
        let web = "/system.slice/web.service";
        let p = policy(
            "default = \"drop\"\n\
             [[rule]]\nname = \"out-uid\"\nhook = \"output\"\nuid = 7\nproto = \"tcp\"\ndport = 7001\nverdict = \"drop\"\n\
             [[rule]]\nname = \"in-uid-elsewhere\"\nhook = \"input\"\nuid = 7\nproto = \"tcp\"\ndport = 9\nverdict = \"drop\"\n\
             [[rule]]\nname = \"in-db\"\nhook = \"input\"\nsource_unit = \"db.service\"\nsource_exe = \"/x\"\nverdict = \"drop\"\n\
             [[rule]]\nname = \"web\"\nsource_unit = \"web.service\"\nproto = \"tcp\"\nverdict = \"accept\"\n\
             [[rule]]\nname = \"in-uid-after\"\nhook = \"input\"\nuid = 7\nproto = \"tcp\"\ndport = 7002\nverdict = \"drop\"\n",
        );
        // An output uid rule, input rules for another port or another
        // cgroup cannot match at INPUT.
        assert!(settles_input(&p, &offer(3, 7001, web)));
        // A uid rule at INPUT for the port may, even after the accepting
        // rule (INPUT's first match is not known to be `web`).
        assert!(!settles_input(&p, &offer(3, 7002, web)));
        // Nor with a rule there that asks the kernel's policy.
        let q = policy(
            "default = \"drop\"\n\
             [[rule]]\nname = \"ask\"\nhook = \"input\"\nproto = \"tcp\"\ndport = 7001\nverdict = \"selinux\"\n\
             [[rule]]\nname = \"web\"\nsource_unit = \"web.service\"\nproto = \"tcp\"\nverdict = \"accept\"\n",
        );
        assert!(!settles_input(&q, &offer(1, 7001, web)));
        assert!(settles_input(&q, &offer(1, 7002, web)));
        // Not when the engine did not settle the packet.
        assert!(!settles_input(&p, &Offer { settle: false, ..offer(3, 7001, web) }));
    }

    #[test]
    fn only_decisions_fixed_by_the_cgroup_may_be_offloaded() {
        let web = "/system.slice/web.service";
        let p = policy(
            "default = \"drop\"\n\
             [[rule]]\nname = \"uid-other-port\"\nuid = 1000\nproto = \"tcp\"\ndport = 9\nverdict = \"drop\"\n\
             [[rule]]\nname = \"web\"\nsource_unit = \"web.service\"\nproto = \"tcp\"\ndport = 7001\nverdict = \"accept\"\n\
             [[rule]]\nname = \"uid-here\"\nuid = 1000\nproto = \"tcp\"\ndport = 7002\nverdict = \"drop\"\n\
             [[rule]]\nname = \"any\"\nproto = \"tcp\"\ndport = 7002\nverdict = \"accept\"\n\
             [[rule]]\nname = \"by-uid\"\nuid = 0\nproto = \"tcp\"\ndport = 7003\nverdict = \"accept\"\n\
             [[rule]]\nname = \"by-program\"\nsource_exe = \"/usr/bin/python3*\"\nproto = \"tcp\"\ndport = 7004\nverdict = \"accept\"\n\
             [[rule]]\nname = \"uid-of-a-domain\"\nuid = 1000\nsource = \"*:*:httpd_t\"\nproto = \"tcp\"\nverdict = \"drop\"\n\
             [[rule]]\nname = \"uid-of-db\"\nuid = 1000\nsource_cgroup = \"/system.slice/db.service\"\nproto = \"tcp\"\nverdict = \"drop\"\n\
             [[rule]]\nname = \"sbin-here\"\nsource_exe = \"/usr/sbin/*\"\nproto = \"tcp\"\ndport = 7010\nverdict = \"drop\"\n\
             [[rule]]\nname = \"all\"\nproto = \"tcp\"\nverdict = \"accept\"\n",
        );
        // A uid rule on another port cannot match: the unit rule is stable.
        assert!(eligible(&p, &offer(1, 7001, web)));
        // A uid rule that may match the key comes first: not stable.
        assert!(!eligible(&p, &offer(3, 7002, web)));
        // An accept by uid is not, nor one by program: another program may
        // run in the cgroup, or the same process exec another.
        assert!(!eligible(&p, &offer(4, 7003, web)));
        assert!(!eligible(&p, &offer(5, 7004, web)));
        // A drop is never offloaded, nor a rule that does not exist.
        assert!(!eligible(&p, &offer(0, 9, web)));
        assert!(!eligible(&p, &offer(99, 7001, web)));
        // Rules before it for another source context, another cgroup or
        // another port cannot match; for this cgroup, or a program rule on
        // this port (any program may run here), they can.
        assert!(eligible(&p, &offer(9, 7009, web)));
        assert!(!eligible(&p, &offer(9, 7009, "/system.slice/db.service")));
        assert!(!eligible(&p, &offer(9, 7010, web)));
        let p = policy(
            "default = \"drop\"\n[[rule]]\nname = \"d\"\ndest_exe = \"/usr/sbin/*\"\nproto = \"tcp\"\ndport = 1\nverdict = \"accept\"\n\
             [[rule]]\nname = \"c\"\ndest = \"*:*:postgresql_t\"\nproto = \"tcp\"\ndport = 2\nverdict = \"accept\"\n\
             [[rule]]\nname = \"in\"\nhook = \"input\"\nuid = 5\nproto = \"tcp\"\ndport = 3\nverdict = \"drop\"\n\
             [[rule]]\nname = \"c3\"\nproto = \"tcp\"\ndport = 3\nverdict = \"accept\"\n",
        );
        assert!(!eligible(&p, &offer(0, 1, web)), "the destination's process is not in the key");
        assert!(eligible(&p, &offer(1, 2, web)), "without an LSM, a destination context is a function of the address");
        assert!(eligible(&p, &offer(3, 3, web)), "an input rule never matches at output");
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
        let s = table_script();
        assert!(s.starts_with("table inet labelgate_offload {}\ndelete table inet labelgate_offload\n"), "{s}");
        assert!(s.contains("set v6_l8 { typeof socket cgroupv2 level 8 . ip6 daddr . tcp dport; flags timeout; }"));
        assert!(s.contains("set v6i_l8 { typeof socket cgroupv2 level 8 . ip6 daddr . tcp dport; flags timeout; }"));
        assert!(s.contains("set any_l9 { typeof socket cgroupv2 level 9 . tcp dport; }"));
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("no {needle} in {s}"));
        let l3 = pos(
            "socket cgroupv2 level 3 . ip daddr . tcp dport @v4_l3 counter meta mark set meta mark and 0xff9fffff or 0x200000 return",
        );
        // Deepest first; each level's own cgroup ends the walk before its
        // ancestors' elements are looked at.
        let l3i = pos(
            "socket cgroupv2 level 3 . ip daddr . tcp dport @v4i_l3 counter meta mark set meta mark and 0xff9fffff or 0x600000 return",
        );
        assert!(l3i < l3, "the settling set first: {s}");
        let deeper = pos("socket cgroupv2 level 9 . tcp dport != @any_l9 return");
        let end3 = pos("socket cgroupv2 level 3 . tcp dport != @any_l3 return");
        let l2 = pos("socket cgroupv2 level 2 . ip daddr . tcp dport @v4_l2 ");
        assert!(deeper < pos("@v4_l8") && pos("@v6_l8") < l3 && l3 < end3 && end3 < l2, "{s}");
    }
}
