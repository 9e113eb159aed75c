//! Everything read from `/proc`: the socket-inode → (pid, fd) map (one scan
//! of every process's fd table), cheap re-validation of one (pid, fd) (with
//! open links for the ones checked again and again, [`FdLinks`]), the
//! socket's and the process's SELinux labels, and comm/exe/cgroup for
//! audit and the rules' process keys.
//!
//! Reads race with processes that exit and fds that close; every failure
//! is reported as a value, never a panic.

use super::cache::{CacheCounters, ShardedCache};
use crate::context::SecurityContext;
use crate::labels::{CgroupInfo, Label, Origin, ProcessInfo};
use crate::sys::ProcLink;
use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which processes hold a socket, as (pid, fd) pairs, by socket inode.
pub type OwnerMap = HashMap<u32, Vec<(u32, u32)>>;

/// What one full scan of `/proc` saw.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every socket inode and its holders.
    pub owners: OwnerMap,
    /// Every process that existed, to tell processes born since.
    pub pids: HashSet<u32>,
}

/// The inode of a `socket:[N]` link target.
fn socket_inode(target: &[u8]) -> Option<u32> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The numeric entries of `<proc>`: the pids of every process.
pub fn pids(proc_root: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            out.push(pid);
        }
    }
    Ok(out)
}

/// The fd numbers of one process, in the directory's order; `None` when it
/// has exited (or its fds are unreadable).
fn fd_numbers(proc_root: &Path, pid: u32) -> Option<Vec<u32>> {
    let dir = proc_root.join(pid.to_string()).join("fd");
    Some(
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
            .collect(),
    )
}

/// The (fd, socket inode) pairs of one process, in the directory's order;
/// nothing when it has exited (or its fds are unreadable).
fn socket_fds(proc_root: &Path, pid: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
    let fds = fd_numbers(proc_root, pid).unwrap_or_default();
    fds.into_iter().filter_map(move |fd| Some((fd, fd_inode(proc_root, pid, fd)?)))
}

/// One scan of `<proc>/*/fd/*`: every socket inode and the (pid, fd)s that
/// hold it. Processes and fds that vanish during the scan are skipped.
pub fn scan(proc_root: &Path) -> io::Result<Scan> {
    let mut out = Scan::default();
    for pid in pids(proc_root)? {
        out.pids.insert(pid);
        for (fd, ino) in socket_fds(proc_root, pid) {
            out.owners.entry(ino).or_default().push((pid, fd));
        }
    }
    for owners in out.owners.values_mut() {
        owners.sort_unstable();
    }
    Ok(out)
}

/// The fd at which process `pid` holds socket `inode`, if it does: one
/// directory read and one `readlink` per fd of that process only, highest
/// fd first (a process's newest descriptor is most often its highest).
pub fn find_in(proc_root: &Path, pid: u32, inode: u32) -> Option<u32> {
    let mut fds = fd_numbers(proc_root, pid)?;
    fds.sort_unstable_by(|a, b| b.cmp(a));
    fds.into_iter().find(|&fd| holds(proc_root, pid, fd, inode))
}

fn fd_path(proc_root: &Path, pid: u32, fd: u32) -> PathBuf {
    proc_root.join(pid.to_string()).join("fd").join(fd.to_string())
}

/// Whether process `pid` still holds socket `inode` at `fd` (one `readlink`;
/// this runs per packet).
pub fn holds(proc_root: &Path, pid: u32, fd: u32, inode: u32) -> bool {
    fd_inode(proc_root, pid, fd) == Some(inode)
}

/// Open `/proc/PID/fd/N` links ([`ProcLink`]) for the (pid, fd)s that are
/// checked again and again: a listener's holder on every SYN, a UDP
/// socket's holder on every batch, the fd number a client's next socket
/// takes. Such a check is then one `readlinkat` that walks no path (about
/// half the cost of a `readlink` of the path here). A link is opened at a
/// (pid, fd)'s second check, so one-off checks (a short-lived client's
/// socket) cost one `readlink` and hold no descriptor. At most the cache's
/// capacity of descriptors stay open; the least recently used are closed
/// first (see [`super::cache`]), and a link found dead is closed at once.
pub struct FdLinks {
    links: ShardedCache<(u32, u32), Arc<ProcLink>>,
    /// (pid, fd)s checked once through their path since they last had a
    /// link: the next check opens one.
    seen: ShardedCache<(u32, u32), ()>,
}

impl FdLinks {
    /// Room for about `capacity` open links in `shards` shards.
    pub fn new(capacity: usize, shards: usize) -> FdLinks {
        FdLinks { links: ShardedCache::new(capacity, shards), seen: ShardedCache::new(capacity * 4, shards) }
    }

    /// Whether process `pid` holds socket `inode` at `fd` now: the answer
    /// [`holds`] gives. Through the open link of (pid, fd) if there is one;
    /// else through the path, and at the second such check through a link
    /// opened then and kept. A link that no longer reads (the fd was closed
    /// or the process exited) is closed and the path is asked afresh, so a
    /// reused pid is answered for by whichever process has it now, as
    /// [`holds`] would. Counted into `c`: hits (read through a link),
    /// misses (no link), evictions, invalidations (links found dead).
    pub fn holds(&self, proc_root: &Path, pid: u32, fd: u32, inode: u32, c: &CacheCounters) -> bool {
        let key = (pid, fd);
        let mut target = [0u8; 64];
        if let Some(link) = self.links.get(&key, c) {
            match link.read(&mut target) {
                Ok(n) => return target.get(..n).and_then(socket_inode) == Some(inode),
                Err(_) => {
                    CacheCounters::bump(&c.invalidations);
                    self.links.remove(&key);
                }
            }
        }
        if self.seen.remove(&key).is_none() {
            self.seen.insert(key, (), &CacheCounters::default());
            return holds(proc_root, pid, fd, inode);
        }
        let mut path = [0u8; 128];
        let Some(cpath) = proc_cpath(&mut path, proc_root, pid, format_args!("fd/{fd}")) else {
            return holds(proc_root, pid, fd, inode);
        };
        let link = match ProcLink::open(cpath) {
            Ok(link) => link,
            // No such fd or process: the answer. Anything else (out of
            // descriptors, say) says nothing about the holder: ask the path.
            Err(e) if is_gone(&e) => return false,
            Err(_) => return holds(proc_root, pid, fd, inode),
        };
        let Ok(n) = link.read(&mut target) else {
            return holds(proc_root, pid, fd, inode);
        };
        self.links.insert(key, Arc::new(link), c);
        target.get(..n).and_then(socket_inode) == Some(inode)
    }

    /// How many links are open.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether no link is open.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

/// `<proc>/PID/<tail>` as a C string in `buf`, built on the stack; `None`
/// when it does not fit (a proc root of more than ~100 bytes), for which
/// callers take an allocating way.
fn proc_cpath<'a>(
    buf: &'a mut [u8; 128],
    proc_root: &Path,
    pid: u32,
    tail: std::fmt::Arguments<'_>,
) -> Option<&'a CStr> {
    use std::io::Write as _;
    let len = {
        let mut w = &mut buf[..];
        w.write_all(proc_root.as_os_str().as_bytes()).ok()?;
        write!(w, "/{pid}/{tail}\0").ok()?;
        128 - w.len()
    };
    CStr::from_bytes_with_nul(buf.get(..len)?).ok()
}

/// The socket inode `/proc/PID/fd/FD` links to, if it is a socket: one
/// `readlink`, with the path and the target on the stack.
fn fd_inode(proc_root: &Path, pid: u32, fd: u32) -> Option<u32> {
    let mut path = [0u8; 128];
    let Some(cpath) = proc_cpath(&mut path, proc_root, pid, format_args!("fd/{fd}")) else {
        let t = std::fs::read_link(fd_path(proc_root, pid, fd)).ok()?;
        return socket_inode(t.as_os_str().as_bytes());
    };
    let mut target = [0u8; 64];
    let n = crate::sys::readlink(cpath, &mut target).ok()?;
    target.get(..n).and_then(socket_inode)
}

/// Whether `/proc/PID` exists.
pub fn alive(proc_root: &Path, pid: u32) -> bool {
    proc_root.join(pid.to_string()).exists()
}

/// comm, exe and cgroup of a process; `None` when it has exited. `known`:
/// what was read for this pid before; its comm is kept, without reading it
/// again, when the pid and the exe link are the same (a process's comm
/// changes at exec, which here almost always changes the exe too; a rename
/// with `prctl(PR_SET_NAME)` in between is not seen). The cgroup is read
/// again all the same: a process moves between cgroups without an exec.
pub fn process_info(proc_root: &Path, pid: u32, known: Option<&ProcessInfo>) -> Option<ProcessInfo> {
    // exe is unreadable for kernel threads and without ptrace rights.
    let mut path = [0u8; 128];
    let mut target = [0u8; 4096];
    let exe = match proc_cpath(&mut path, proc_root, pid, format_args!("exe")) {
        Some(c) => String::from_utf8_lossy(
            crate::sys::readlink(c, &mut target).ok().and_then(|n| target.get(..n)).unwrap_or_default(),
        ),
        None => std::fs::read_link(proc_root.join(pid.to_string()).join("exe"))
            .map(|p| p.to_string_lossy().into_owned().into())
            .unwrap_or_default(),
    };
    if let Some(k) = known.filter(|k| k.pid == pid && *k.exe == *exe) {
        // A process moves between cgroups without an exec: its cgroup is
        // read again (one small read), the copy kept when it is the same.
        let cgroup = cgroup_info(proc_root, pid);
        let same = k.cgroup.as_ref().map(|c| &*c.path) == cgroup.as_ref().map(|c| &*c.path);
        return Some(if same { k.clone() } else { ProcessInfo { cgroup: cgroup.map(Arc::new), ..k.clone() } });
    }
    let comm = read_small(&proc_root.join(pid.to_string()).join("comm"), 64)?;
    let comm = String::from_utf8(comm).ok()?;
    let cgroup = cgroup_info(proc_root, pid).map(Arc::new);
    Some(ProcessInfo { pid, comm: Arc::from(comm.trim_end_matches('\n')), exe: Arc::from(exe), cgroup, netns: None })
}

/// The cgroup v2 facts of a process from `<proc>/PID/cgroup` (its `0::`
/// line); `None` when the file is missing, unreadable, has no such line or
/// is longer than [`crate::labels::cgroup::MAX_CGROUP_FILE`].
pub fn cgroup_info(proc_root: &Path, pid: u32) -> Option<CgroupInfo> {
    use std::io::Read as _;
    let f = std::fs::File::open(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    // Room for the usual file at once: one read for it, one for the end
    // (from an empty buffer, `read_to_end` takes five reads).
    let mut buf = Vec::with_capacity(1024);
    let limit = u64::try_from(crate::labels::cgroup::MAX_CGROUP_FILE).unwrap_or(u64::MAX).saturating_add(1);
    f.take(limit).read_to_end(&mut buf).ok()?;
    CgroupInfo::parse_proc(&buf)
}

/// A small `/proc` file, read whole to its end into a buffer with room
/// for `room` bytes (one read for it and one for the end, without the
/// `statx` and the growing reads of `fs::read`); `None` when unreadable.
fn read_small(path: &Path, room: usize) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut buf = Vec::with_capacity(room);
    // Through `take`: `File`'s own `read_to_end` first asks `statx` for a
    // size, which `/proc` files do not have.
    std::fs::File::open(path).ok()?.take(1 << 16).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Why a label read found nothing usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelMiss {
    /// The process or the fd went away during the read.
    Gone,
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

/// The label of the socket at `/proc/PID/fd/FD`: its `security.selinux`
/// xattr, else the process's `/proc/PID/attr/current`, else an unlabeled
/// label whose reason says why (see the table in `resolve/mod.rs`).
/// `no_attr_current` is set the first time `attr/current` answers `EINVAL`
/// (no LSM provides it: a property of the boot); later calls then read
/// nothing (neither the xattr, which no LSM can then provide, nor
/// `attr/current`).
pub fn socket_label(proc_root: &Path, pid: u32, fd: u32, no_attr_current: &AtomicBool) -> Result<Label, LabelMiss> {
    // No LSM provides attr/current, so none labels sockets either (SELinux
    // would do both): the socket's xattr read would fail too.
    if no_attr_current.load(Ordering::Relaxed) {
        return Ok(Label::unlabeled("selinux_disabled"));
    }
    let mut path = [0u8; 128];
    let mut value = [0u8; 1024];
    // The allocating way: for a proc root too long for the stack path, or
    // a context longer than the buffer (many categories).
    let allocating = || xattr::get_deref(fd_path(proc_root, pid, fd), "security.selinux");
    let got = match proc_cpath(&mut path, proc_root, pid, format_args!("fd/{fd}")) {
        // One syscall, nothing allocated.
        Some(c) => match crate::sys::getxattr(c, c"security.selinux", &mut value) {
            Ok(n) => Ok(value.get(..n).map(<[u8]>::to_vec)),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => allocating(),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
            Err(e) => Err(e),
        },
        None => allocating(),
    };
    match got {
        Ok(Some(v)) => {
            return Ok(match parse_context(&v) {
                Some(context) => Label { context, origin: Origin::Socket },
                None => Label::unlabeled("bad_context"),
            })
        }
        Ok(None) => {}
        Err(e) if is_gone(&e) => return Err(LabelMiss::Gone),
        // EOPNOTSUPP (no LSM labels sockets), EACCES...: fall back.
        Err(_) => {}
    }
    let l = process_label(proc_root, pid)?;
    if matches!(l.origin, Origin::Unlabeled("selinux_disabled")) {
        no_attr_current.store(true, Ordering::Relaxed);
    }
    Ok(l)
}

/// The process's label from `/proc/PID/attr/current`.
pub fn process_label(proc_root: &Path, pid: u32) -> Result<Label, LabelMiss> {
    let path = proc_root.join(pid.to_string()).join("attr").join("current");
    match std::fs::read(path) {
        Ok(v) => Ok(match parse_context(&v) {
            Some(context) => Label { context, origin: Origin::Process },
            // Readable but not an SELinux context: AppArmor ("unconfined"),
            // Smack ("_") or another LSM owns attr/current.
            None => Label::unlabeled("other_lsm"),
        }),
        Err(e) if is_gone(&e) => Err(LabelMiss::Gone),
        // No LSM that provides attr/current is active: EINVAL.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Label::unlabeled("selinux_disabled")),
        Err(_) => Ok(Label::unlabeled("unreadable")),
    }
}

fn parse_context(v: &[u8]) -> Option<SecurityContext> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_link_targets() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }

    /// The real /proc: this test's own socket is found by the scan and its
    /// holder re-validates; a closed one does not.
    #[test]
    fn scan_finds_own_socket() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let proc_root = Path::new("/proc");
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = s.as_raw_fd() as u32;
        let pid = std::process::id();
        let ino = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino() as u32;
        let map = scan(proc_root).unwrap();
        assert!(map.owners[&ino].contains(&(pid, fd)), "{:?}", map.owners.get(&ino));
        assert!(map.pids.contains(&pid));
        assert_eq!(find_in(proc_root, pid, ino), Some(fd));
        assert_eq!(find_in(proc_root, pid, ino.wrapping_add(1_000_000)), None);
        assert!(holds(proc_root, pid, fd, ino));
        assert!(!holds(proc_root, pid, fd, ino.wrapping_add(1)));
        let info = process_info(proc_root, pid, None).unwrap();
        assert_eq!(info.pid, pid);
        assert_eq!(&*info.exe, std::env::current_exe().unwrap().to_str().unwrap());
        // What was read before is reused while the exe is the same; another
        // pid's or another exe's is not.
        let stale = ProcessInfo {
            pid,
            comm: "renamed".into(),
            exe: info.exe.clone(),
            cgroup: info.cgroup.clone(),
            netns: None,
        };
        assert_eq!(process_info(proc_root, pid, Some(&stale)).unwrap().comm, stale.comm);
        let other_exe = ProcessInfo { exe: "/other".into(), ..stale.clone() };
        assert_eq!(process_info(proc_root, pid, Some(&other_exe)).unwrap(), info);
        let other_pid = ProcessInfo { pid: pid + 1, ..stale };
        assert_eq!(process_info(proc_root, pid, Some(&other_pid)).unwrap(), info);
        // The cgroup is this process's own `0::` line, and it is read again
        // for a known process (processes move between cgroups).
        let own = std::fs::read("/proc/self/cgroup").unwrap();
        assert_eq!(info.cgroup.as_deref(), CgroupInfo::parse_proc(&own).as_ref());
        let moved = ProcessInfo { cgroup: Some(Arc::new(CgroupInfo::from_path("/elsewhere"))), ..info.clone() };
        assert_eq!(process_info(proc_root, pid, Some(&moved)).unwrap().cgroup, info.cgroup);
        drop(s);
        assert!(!holds(proc_root, pid, fd, ino));
        assert_eq!(find_in(proc_root, pid, ino), None);
    }

    /// Links answer as `holds` does, for another process's socket, through
    /// a kept link; a holder that exits is no longer one and its link is
    /// dropped; no more links stay open than the capacity allows.
    #[test]
    fn fd_links_answer_as_holds_does() {
        use std::os::fd::{AsRawFd, OwnedFd};
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::Ordering::Relaxed;
        let root = Path::new("/proc");
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())).unwrap().ino() as u32;
        // A child holds the socket as its stdin (fd 0); this process lets go.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::from(OwnedFd::from(s)))
            .spawn()
            .unwrap();
        let pid = child.id();
        let links = FdLinks::new(16, 2);
        let c = CacheCounters::default();
        assert!(links.holds(root, pid, 0, ino, &c));
        assert!(links.is_empty(), "no link at the first check");
        assert!(links.holds(root, pid, 0, ino, &c));
        assert_eq!((links.len(), c.misses.load(Relaxed), c.hits.load(Relaxed)), (1, 2, 0), "one at the second");
        assert!(links.holds(root, pid, 0, ino, &c), "through the kept link");
        assert!(!links.holds(root, pid, 0, ino.wrapping_add(1), &c), "another socket");
        assert!(!links.holds(root, pid, 7, ino, &c), "another fd");
        assert_eq!(c.hits.load(Relaxed), 2);
        for (fd, want) in [(0, true), (7, false)] {
            assert_eq!(links.holds(root, pid, fd, ino, &c), holds(root, pid, fd, ino));
            assert_eq!(holds(root, pid, fd, ino), want);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!links.holds(root, pid, 0, ino, &c), "the holder exited");
        assert_eq!(c.invalidations.load(Relaxed), 1);
        assert!(links.is_empty(), "the dead link is dropped, none opened for a gone process");

        // Bounded: links to many fds of this process stay within capacity.
        let me = std::process::id();
        let socks: Vec<_> = (0..64).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for s in &socks {
            let fd = s.as_raw_fd() as u32;
            let ino = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino() as u32;
            for _ in 0..3 {
                assert!(links.holds(root, me, fd, ino, &c));
            }
        }
        assert!(links.len() <= 16 && !links.is_empty(), "{} links open", links.len());
    }
}
