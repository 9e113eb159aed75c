//! Everything read from `/proc`: the socket-inode → (pid, fd) map (one scan
//! of every process's fd table), cheap re-validation of one (pid, fd), the
//! socket's and the process's SELinux labels, and comm/exe for audit.
//!
//! Reads race with processes that exit and fds that close; every failure
//! is reported as a value, never a panic.

use crate::context::SecurityContext;
use crate::labels::{Label, Origin, ProcessInfo};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which processes hold a socket, as (pid, fd) pairs, by socket inode.
pub type OwnerMap = HashMap<u32, Vec<(u32, u32)>>;

/// The inode of a `socket:[N]` link target.
fn socket_inode(target: &Path) -> Option<u32> {
    let s = target.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// One scan of `<proc>/*/fd/*`: every socket inode and the (pid, fd)s that
/// hold it. Processes and fds that vanish during the scan are skipped.
pub fn scan(proc_root: &Path) -> io::Result<OwnerMap> {
    let mut map: OwnerMap = HashMap::new();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let fd_dir = entry.path().join("fd");
        let Ok(fds) = std::fs::read_dir(&fd_dir) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(fdn) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ino) = std::fs::read_link(fd.path()).ok().and_then(|t| socket_inode(&t)) {
                map.entry(ino).or_default().push((pid, fdn));
            }
        }
    }
    for owners in map.values_mut() {
        owners.sort_unstable();
    }
    Ok(map)
}

fn fd_path(proc_root: &Path, pid: u32, fd: u32) -> PathBuf {
    proc_root.join(pid.to_string()).join("fd").join(fd.to_string())
}

/// Whether process `pid` still holds socket `inode` at `fd` (one readlink).
pub fn holds(proc_root: &Path, pid: u32, fd: u32, inode: u32) -> bool {
    std::fs::read_link(fd_path(proc_root, pid, fd)).ok().and_then(|t| socket_inode(&t)) == Some(inode)
}

/// Whether `/proc/PID` exists.
pub fn alive(proc_root: &Path, pid: u32) -> bool {
    proc_root.join(pid.to_string()).exists()
}

/// comm and exe of a process; `None` when it has exited.
pub fn process_info(proc_root: &Path, pid: u32) -> Option<ProcessInfo> {
    let dir = proc_root.join(pid.to_string());
    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
    // exe is unreadable for kernel threads and without ptrace rights.
    let exe = std::fs::read_link(dir.join("exe")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    Some(ProcessInfo { pid, comm: Arc::from(comm.trim_end_matches('\n')), exe: Arc::from(exe) })
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
pub fn socket_label(proc_root: &Path, pid: u32, fd: u32) -> Result<Label, LabelMiss> {
    match xattr::get_deref(fd_path(proc_root, pid, fd), "security.selinux") {
        Ok(Some(v)) => {
            return Ok(match parse_context(&v) {
                Some(context) => Label { context, origin: Origin::Socket },
                None => Label::unlabeled("bad_context"),
            })
        }
        Ok(None) => {}
        Err(e) if is_gone(&e) => return Err(LabelMiss::Gone),
        // ENODATA, EOPNOTSUPP (no LSM labels sockets), EACCES...: fall back.
        Err(_) => {}
    }
    process_label(proc_root, pid)
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
        assert_eq!(socket_inode(Path::new("socket:[12345]")), Some(12345));
        assert_eq!(socket_inode(Path::new("pipe:[12345]")), None);
        assert_eq!(socket_inode(Path::new("socket:[x]")), None);
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
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
        assert!(map[&ino].contains(&(pid, fd)), "{:?}", map.get(&ino));
        assert!(holds(proc_root, pid, fd, ino));
        assert!(!holds(proc_root, pid, fd, ino.wrapping_add(1)));
        let info = process_info(proc_root, pid).unwrap();
        assert_eq!(info.pid, pid);
        assert_eq!(&*info.exe, std::env::current_exe().unwrap().to_str().unwrap());
        drop(s);
        assert!(!holds(proc_root, pid, fd, ino));
    }
}
