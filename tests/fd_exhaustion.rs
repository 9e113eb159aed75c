//! The resolver's kept `/proc` links when the process is out of
//! descriptors: a link that cannot be opened says nothing about the holder,
//! so the answer comes from the path. (Its own test binary: it lowers this
//! process's descriptor limit.)

use labelgate::resolve::cache::CacheCounters;
use labelgate::resolve::procfs::{holds, FdLinks};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[test]
fn out_of_descriptors_falls_back_to_the_path() {
    let root = Path::new("/proc");
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let fd = s.as_raw_fd() as u32;
    let ino = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino() as u32;
    let me = std::process::id();
    let links = FdLinks::new(16, 2);
    let c = CacheCounters::default();
    // The first check reads the path and keeps no link.
    assert!(links.holds(root, me, fd, ino, &c));
    assert!(links.is_empty());

    // Use up every descriptor below a lowered limit.
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let limit = open_now + 8;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, hard).unwrap();
    let mut filler = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => filler.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    // The second check would open a link and cannot: still held, by the path.
    let held = links.holds(root, me, fd, ino, &c);
    let other = links.holds(root, me, fd, ino.wrapping_add(1), &c);
    drop(filler);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    assert!(held, "out of descriptors is not 'no longer held'");
    assert!(!other);
    assert!(links.is_empty(), "no link could be kept");
    assert_eq!(holds(root, me, fd, ino), held);
    drop(s);
}
