//! Unit tests of the owner search and the flow table's invalidation, run
//! without root through a fake kernel view ([`FakeKernel`]): a table of
//! sockets by flow and of fds by process, changed between packets.

use super::*;
use crate::labels::Labels;
use crate::labels::ProcessInfo;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

/// Sockets by flow and fd tables by pid, as a test sets them.
#[derive(Default)]
struct World {
    /// (proto, local, remote) → socket; a remote of `0.0.0.0:0` stands for
    /// a bound socket that answers for any remote.
    sockets: HashMap<(DiagProto, SocketAddr, SocketAddr), DiagSocket>,
    /// pid → fd → socket inode.
    fds: BTreeMap<u32, BTreeMap<u32, u32>>,
    /// Other network namespaces: address → namespaces that have it.
    netns_addrs: HashMap<IpAddr, Vec<NsIndex>>,
    /// (namespace, proto, local, remote) → socket, exact tuples only.
    netns_sockets: HashMap<(NsIndex, DiagProto, SocketAddr, SocketAddr), DiagSocket>,
    /// pid → its executable, when not `/bin/fake`.
    exes: HashMap<u32, String>,
}

/// A kernel view over a [`World`], counting what it is asked.
#[derive(Default)]
struct FakeKernel {
    world: Mutex<World>,
    scans: AtomicU64,
    find_ins: AtomicU64,
    /// Reads of one (pid, fd) through a kept link.
    probes: AtomicU64,
    /// Reads of a process's comm, exe and cgroup.
    process_reads: AtomicU64,
}

impl FakeKernel {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

fn any() -> SocketAddr {
    "0.0.0.0:0".parse().unwrap()
}

impl KernelView for FakeKernel {
    fn lookup(&self, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> Lookup {
        let w = self.world();
        Ok(w.sockets.get(&(proto, local, remote)).or_else(|| w.sockets.get(&(proto, local, any()))).copied())
    }

    fn lookup_two(&self, proto: DiagProto, a: (SocketAddr, SocketAddr), b: (SocketAddr, SocketAddr)) -> [Lookup; 2] {
        [self.lookup(proto, a.0, a.1), self.lookup(proto, b.0, b.1)]
    }

    fn scan(&self) -> std::io::Result<procfs::Scan> {
        self.scans.fetch_add(1, Relaxed);
        let w = self.world();
        let mut scan = procfs::Scan::default();
        for (&pid, fds) in &w.fds {
            scan.pids.insert(pid);
            for (&fd, &inode) in fds {
                scan.owners.entry(inode).or_default().push((pid, fd));
            }
        }
        Ok(scan)
    }

    fn pids(&self) -> std::io::Result<Vec<u32>> {
        Ok(self.world().fds.keys().copied().collect())
    }

    fn find_in(&self, pid: u32, inode: u32) -> Option<u32> {
        self.find_ins.fetch_add(1, Relaxed);
        self.world().fds.get(&pid)?.iter().find(|(_, &i)| i == inode).map(|(&fd, _)| fd)
    }

    fn holds(&self, pid: u32, fd: u32, inode: u32) -> bool {
        self.world().fds.get(&pid).and_then(|f| f.get(&fd)) == Some(&inode)
    }

    fn holds_kept(&self, pid: u32, fd: u32, inode: u32, _: &CacheCounters) -> bool {
        self.probes.fetch_add(1, Relaxed);
        self.holds(pid, fd, inode)
    }

    fn alive(&self, pid: u32) -> bool {
        self.world().fds.contains_key(&pid)
    }

    fn socket_label(&self, pid: u32, fd: u32) -> Result<Label, procfs::LabelMiss> {
        if self.world().fds.get(&pid).and_then(|f| f.get(&fd)).is_none() {
            return Err(procfs::LabelMiss::Gone);
        }
        let context = format!("system_u:system_r:p{pid}_t:s0").parse().unwrap();
        Ok(Label { context, origin: Origin::Socket })
    }

    /// Every process is in the cgroup `/system.slice/pPID.service`.
    fn process_info(&self, pid: u32, _: Option<&ProcessInfo>) -> Option<ProcessInfo> {
        self.process_reads.fetch_add(1, Relaxed);
        let exe = self.world().exes.get(&pid).cloned().unwrap_or_else(|| "/bin/fake".into());
        let cgroup = crate::labels::CgroupInfo::from_path(&format!("/system.slice/p{pid}.service"));
        self.alive(pid).then(|| ProcessInfo {
            pid,
            comm: Arc::from(format!("p{pid}")),
            exe: Arc::from(exe),
            cgroup: Some(Arc::new(cgroup)),
            netns: None,
        })
    }

    /// Namespace `ns` is the inode 4026531840 + `ns` (0: the host's).
    fn netns_inode(&self, ns: NsIndex) -> Option<u64> {
        Some(4_026_531_840 + u64::from(ns))
    }

    fn netns_with(&self, ip: IpAddr) -> Vec<NsIndex> {
        self.world().netns_addrs.get(&ip).cloned().unwrap_or_default()
    }

    fn lookup_in(&self, ns: NsIndex, proto: DiagProto, local: SocketAddr, remote: SocketAddr) -> Lookup {
        Ok(self.world().netns_sockets.get(&(ns, proto, local, remote)).copied())
    }
}

const SERVER: &str = "127.0.0.1:53";

fn client(port: u16) -> SocketAddr {
    SocketAddr::new("127.0.0.2".parse().unwrap(), port)
}

fn sock(inode: u32) -> DiagSocket {
    DiagSocket { inode, uid: 1000 + inode, state: 7, cookie: u64::from(inode) << 8 }
}

/// A resolver over a fake kernel in which `setup` has been applied before
/// the first scan.
fn fake(setup: impl FnOnce(&mut World)) -> SocketResolver<FakeKernel> {
    let k = FakeKernel::default();
    setup(&mut k.world());
    SocketResolver::with_kernel(k, PeerConfig::default(), ResolverConfig::default())
}

/// The server's socket (`inode`) for packets from any client.
fn bind(w: &mut World, inode: u32) {
    w.sockets.insert((DiagProto::Udp, SERVER.parse().unwrap(), any()), sock(inode));
}

/// The dest end of a UDP packet from `client(port)` to the server.
fn dest(r: &SocketResolver<FakeKernel>, port: u16) -> Label {
    let m = QueueMeta { hook: 1, ..QueueMeta::default() };
    r.resolve(&flow_packet(Proto::Udp, client(port), SERVER.parse().unwrap()), &m).dest
}

fn holder(l: &Label) -> String {
    l.context.type_().to_string()
}

fn stat(r: &SocketResolver<FakeKernel>, f: impl Fn(&ResolverStats) -> &AtomicU64) -> u64 {
    f(r.stats()).load(Relaxed)
}

/// A recent holder that execs another program is decided as that program
/// for its next socket, however soon after: its exe is read again for
/// every socket found (rules by `source_exe`/`dest_exe` depend on it).
#[test]
fn a_holder_that_execs_is_seen_as_its_new_program_at_once() {
    let r = fake(|w| {
        bind(w, 10);
        w.fds.insert(100, [(3, 10)].into());
        w.exes.insert(100, "/usr/sbin/nginx".into());
    });
    let m = QueueMeta { hook: 1, ..QueueMeta::default() };
    let exe_of = |port: u16| {
        let l = r.resolve(&flow_packet(Proto::Udp, client(port), SERVER.parse().unwrap()), &m);
        l.dest_process.map(|p| p.exe.to_string())
    };
    assert_eq!(exe_of(1000).as_deref(), Some("/usr/sbin/nginx"));
    // It execs (same pid) and opens its next socket at once.
    {
        let mut w = r.kernel.world();
        w.exes.insert(100, "/tmp/other".into());
        w.fds.get_mut(&100).unwrap().insert(4, 11);
        bind(&mut w, 11);
    }
    assert_eq!(exe_of(1001).as_deref(), Some("/tmp/other"));
    assert_eq!(stat(&r, |s| &s.owner_found_recent), 1, "found as a recent holder, read again");
}

#[test]
fn a_recent_holder_is_found_without_a_scan() {
    let r = fake(|w| {
        bind(w, 10);
        w.fds.insert(100, [(3, 10)].into());
        w.fds.insert(101, BTreeMap::new());
    });
    assert_eq!(holder(&dest(&r, 1000)), "p100_t");
    assert_eq!(stat(&r, |s| &s.proc_scans), 1);
    // A socket of labelgate's own namespace names that namespace, from the
    // scan's answer and from the caches alike.
    let m = QueueMeta { hook: 1, ..QueueMeta::default() };
    let pkt = flow_packet(Proto::Udp, client(1000), SERVER.parse().unwrap());
    let netns = |l: Labels| l.dest_process.and_then(|p| p.netns);
    assert_eq!(netns(r.resolve(&pkt, &m)), Some(4_026_531_840));
    assert_eq!(r.resolve_cached(&pkt, &m).map(netns), Some(Some(4_026_531_840)));
    // Process 100 opens a new socket (after the scan) that the server's
    // address now answers with: found among the recent holders.
    r.kernel.world().fds.get_mut(&100).unwrap().insert(4, 11);
    bind(&mut r.kernel.world(), 11);
    assert_eq!(holder(&dest(&r, 1001)), "p100_t");
    assert_eq!(stat(&r, |s| &s.owner_found_recent), 1);
    assert_eq!(stat(&r, |s| &s.owner_found_new_process), 0);
    assert_eq!((stat(&r, |s| &s.proc_scans), r.kernel.scans.load(Relaxed)), (1, 1));
}

#[test]
fn clients_taking_turns_are_found_at_their_last_fd() {
    // 40 client processes each open a new socket in turn, at the fd number
    // their last one had (as connect loops do): each holder is found by one
    // read at that fd, with no fd table listed and no scan.
    let pids: Vec<u32> = (100..140).collect();
    let r = fake(|w| {
        for &pid in &pids {
            w.fds.insert(pid, BTreeMap::new());
        }
    });
    let mut inode = 1000;
    let mut port = 1000;
    let mut round = |r: &SocketResolver<FakeKernel>| {
        for &pid in &pids {
            inode += 1;
            port += 1;
            r.kernel.world().fds.insert(pid, [(3, inode)].into());
            bind(&mut r.kernel.world(), inode);
            assert_eq!(holder(&dest(r, port)), format!("p{pid}_t"));
        }
    };
    round(&r);
    round(&r);
    let before = (r.kernel.scans.load(Relaxed), r.kernel.find_ins.load(Relaxed));
    let probes = r.kernel.probes.load(Relaxed);
    round(&r);
    round(&r);
    assert_eq!((r.kernel.scans.load(Relaxed), r.kernel.find_ins.load(Relaxed)), before, "no scan, no fd table listed");
    assert!(stat(&r, |s| &s.owner_found_recent) >= 80);
    // Each client's next socket is expected one turn after its last: the
    // holder is asked among the first, not after the 39 others (the order
    // newest first would ask about 40 per socket, 3,200 in two rounds).
    let asked = r.kernel.probes.load(Relaxed) - probes;
    assert!(asked <= 80 * 2, "{asked} probes for 80 sockets");
}

#[test]
fn a_new_process_is_found_without_a_full_scan() {
    let r = fake(|w| {
        bind(w, 10);
        w.fds.insert(100, [(3, 10)].into());
    });
    assert_eq!(holder(&dest(&r, 1000)), "p100_t");
    // Process 200, born after the scan, holds the socket that now answers.
    r.kernel.world().fds.insert(200, [(5, 20)].into());
    bind(&mut r.kernel.world(), 20);
    let l = dest(&r, 1001);
    assert_eq!((holder(&l), l.origin), ("p200_t".to_string(), Origin::Socket));
    assert_eq!(stat(&r, |s| &s.owner_found_new_process), 1);
    assert_eq!((stat(&r, |s| &s.proc_scans), r.kernel.scans.load(Relaxed)), (1, 1));
}

#[test]
fn a_socket_nobody_holds_costs_one_scan_not_one_per_packet() {
    let r = fake(|w| {
        bind(w, 30);
        w.fds.insert(100, [(3, 10)].into());
    });
    // Each packet from a new client port is a new flow (a flow-cache miss
    // at both ends; the client end has no socket) that finds the same
    // server socket, held by no process.
    for port in 1000..1010 {
        assert_eq!(dest(&r, port).origin, Origin::Unlabeled("kernel_socket"), "port {port}");
    }
    assert_eq!(stat(&r, |s| &s.flow.misses), 20);
    assert_eq!((stat(&r, |s| &s.proc_scans), r.kernel.scans.load(Relaxed)), (2, 2));
    // A holder that turns up is found once the negative TTL is over.
    r.kernel.world().fds.get_mut(&100).unwrap().insert(4, 30);
    std::thread::sleep(ResolverConfig::default().negative_ttl);
    assert_eq!(holder(&dest(&r, 2000)), "p100_t");
}

#[test]
fn a_holder_that_went_away_is_invalidated() {
    let r = fake(|w| {
        bind(w, 10);
        w.fds.insert(100, [(3, 10)].into());
    });
    assert_eq!(holder(&dest(&r, 1000)), "p100_t");
    assert_eq!(holder(&dest(&r, 1000)), "p100_t");
    assert_eq!(stat(&r, |s| &s.owner.invalidations), 0);
    // Process 100 passes the socket to process 300 and closes its fd.
    {
        let mut w = r.kernel.world();
        w.fds.get_mut(&100).unwrap().remove(&3);
        w.fds.insert(300, [(7, 10)].into());
    }
    assert_eq!(holder(&dest(&r, 1000)), "p300_t");
    assert_eq!(stat(&r, |s| &s.owner.invalidations), 1);
    // The same flow, the same socket: the flow entry is kept.
    assert_eq!(stat(&r, |s| &s.flow.invalidations), 0);
    // The holder exits: the socket is held by nobody.
    r.kernel.world().fds.remove(&300);
    assert_eq!(dest(&r, 1000).origin, Origin::Unlabeled("kernel_socket"));
    assert_eq!(stat(&r, |s| &s.owner.invalidations), 2);
}

#[test]
fn a_flow_whose_socket_changes_is_refreshed() {
    let server: SocketAddr = SERVER.parse().unwrap();
    let r = fake(|w| {
        bind(w, 10);
        w.fds.insert(100, [(3, 10)].into());
    });
    assert_eq!(holder(&dest(&r, 1000)), "p100_t");
    assert_eq!(r.cached_socket_inode(Proto::Udp, server, client(1000)), Some(10));
    // The server closes its socket; process 101 binds a new one.
    {
        let mut w = r.kernel.world();
        w.fds.remove(&100);
        w.fds.insert(101, [(3, 11)].into());
        bind(&mut w, 11);
    }
    assert_eq!(holder(&dest(&r, 1000)), "p101_t");
    assert_eq!(stat(&r, |s| &s.flow.invalidations), 1);
    assert_eq!(r.cached_socket_inode(Proto::Udp, server, client(1000)), Some(11));
    // The socket goes: the flow is remembered as closed.
    {
        let mut w = r.kernel.world();
        w.sockets.clear();
        w.fds.remove(&101);
    }
    assert_eq!(dest(&r, 1000).origin, Origin::Unlabeled("socket_closed"));
    assert_eq!(stat(&r, |s| &s.flow.invalidations), 2);
    assert_eq!(r.cached_socket_inode(Proto::Udp, server, client(1000)), None);
}

/// A forwarded TCP packet (hook FORWARD) from `src` to `dst`, not a SYN.
fn forwarded(r: &SocketResolver<FakeKernel>, src: &str, dst: &str) -> Labels {
    let m = QueueMeta { hook: 2, ..QueueMeta::default() };
    r.resolve(&flow_packet(Proto::Tcp, src.parse().unwrap(), dst.parse().unwrap()), &m)
}

const CONTAINER: &str = "10.88.0.2:80";
const OUTSIDE: &str = "198.18.9.9:5000";

fn in_ns(w: &mut World, ns: NsIndex, inode: u32, pid: u32) {
    let t = (ns, DiagProto::Tcp, CONTAINER.parse().unwrap(), OUTSIDE.parse().unwrap());
    w.netns_sockets.insert(t, DiagSocket { state: sockdiag::TCP_ESTABLISHED, ..sock(inode) });
    w.fds.insert(pid, [(4, inode)].into());
}

#[test]
fn an_end_in_another_namespace_is_looked_up_there() {
    let r = fake(|w| {
        w.netns_addrs.insert("10.88.0.2".parse().unwrap(), vec![1]);
        in_ns(w, 1, 20, 200);
    });
    let l = forwarded(&r, OUTSIDE, CONTAINER);
    assert_eq!(holder(&l.dest), "p200_t");
    let p = l.dest_process.unwrap();
    assert_eq!(p.pid, 200);
    assert_eq!(p.netns, Some(4_026_531_841), "the namespace it was found in, for records");
    assert_eq!(l.source.origin, Origin::Unlabeled("remote"));
    assert_eq!(stat(&r, |s| &s.netns_lookups), 1);
    // Seen from the container's side (its packet going out).
    let l = forwarded(&r, CONTAINER, OUTSIDE);
    assert_eq!(holder(&l.source), "p200_t");
    assert_eq!(l.uid, Some(1020), "the sending socket's uid, read in its namespace");
}

#[test]
fn an_address_of_two_namespaces_needs_exactly_one_socket() {
    let r = fake(|w| {
        w.netns_addrs.insert("10.88.0.2".parse().unwrap(), vec![1, 2]);
        w.fds.insert(300, BTreeMap::new());
    });
    // Neither has the socket: unresolved, never a guess.
    assert_eq!(forwarded(&r, OUTSIDE, CONTAINER).dest.origin, Origin::Unlabeled("netns_ambiguous"));
    // Only namespace 2 has it: resolved there.
    in_ns(&mut r.kernel.world(), 2, 22, 202);
    let l = forwarded(&r, OUTSIDE, CONTAINER);
    assert_eq!(holder(&l.dest), "p202_t");
    assert_eq!(l.dest_process.unwrap().netns, Some(4_026_531_842));
    // Both have a socket for the full tuple: unresolved.
    in_ns(&mut r.kernel.world(), 1, 21, 201);
    assert_eq!(forwarded(&r, OUTSIDE, CONTAINER).dest.origin, Origin::Unlabeled("netns_ambiguous"));
    assert_eq!(stat(&r, |s| &s.netns_ambiguous), 2);
}

#[test]
fn identical_tuples_of_two_namespaces_never_share_a_cache_entry() {
    let r = fake(|w| {
        w.netns_addrs.insert("10.88.0.2".parse().unwrap(), vec![1]);
        in_ns(w, 1, 21, 201);
        in_ns(w, 2, 22, 202);
    });
    assert_eq!(holder(&forwarded(&r, OUTSIDE, CONTAINER).dest), "p201_t");
    // The address moves to namespace 2 (a container replaced by another
    // with the same address and the same connection tuple): the flow
    // cached for namespace 1 must not answer.
    r.kernel.world().netns_addrs.insert("10.88.0.2".parse().unwrap(), vec![2]);
    assert_eq!(holder(&forwarded(&r, OUTSIDE, CONTAINER).dest), "p202_t");
}

/// The packet of UDP flow `port` to the server, at INPUT, as queued bytes.
fn udp_bytes(port: u16) -> Vec<u8> {
    let (c, srv): (SocketAddr, SocketAddr) = (client(port), SERVER.parse().unwrap());
    let (IpAddr::V4(a), IpAddr::V4(b)) = (c.ip(), srv.ip()) else { unreachable!() };
    crate::packet::build::ipv4(a, b, 17, &[], &crate::packet::build::udp(c.port(), srv.port(), b"x"))
}

/// An engine deciding with `policy` over a fake kernel in which process 100
/// holds the server's socket (inode 10), and the JSON records it writes
/// (read after `run`).
fn engine_over_fake(policy: &str, run: impl FnOnce(&crate::engine::Engine, &FakeKernel)) -> Vec<serde_json::Value> {
    let r = Arc::new(fake(|w| {
        bind(w, 10);
        w.fds.insert(100, [(3, 10)].into());
        w.exes.insert(100, "/usr/sbin/named".into());
    }));
    let core = r.clone();
    let factory: crate::engine::ResolverFactory = Box::new(move |_| Box::new(core.for_policy(PeerConfig::default())));
    let lines = crate::engine::audited_with(policy, factory, |e| run(e, &r.kernel));
    lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn handle(e: &crate::engine::Engine, port: u16) -> crate::policy::Verdict {
    let m = QueueMeta { hook: 1, ..QueueMeta::default() };
    e.handle(&udp_bytes(port), &m, &mut crate::engine::Scratch::default())
}

/// With no rule naming a process key and no record to write, a new
/// socket's holder is found and its label read, but not its comm, exe and
/// cgroup: nothing needs them.
#[test]
fn process_facts_are_not_read_when_nothing_needs_them() {
    let policy = "default = \"drop\"\n[[rule]]\nname = \"dns\"\ndest = \"p100_t\"\nverdict = \"accept\"\n";
    let recs = engine_over_fake(policy, |e, k| {
        for port in 1000..1005 {
            assert_eq!(handle(e, port), crate::policy::Verdict::Accept, "decided by the socket's label");
        }
        assert_eq!(k.process_reads.load(Relaxed), 0, "no comm/exe/cgroup read for an unrecorded acceptance");
    });
    assert!(recs.is_empty(), "{recs:?}");
}

/// A rule with a process key reads the holder's exe for the packet's socket
/// before deciding, as it is now: a holder that execs another program is
/// decided as that program for its next socket.
#[test]
fn process_facts_are_read_for_a_rule_that_names_them() {
    let policy = "default = \"drop\"\n[[rule]]\nname = \"dns\"\ndest_exe = \"/usr/sbin/named\"\nverdict = \"accept\"\n";
    engine_over_fake(policy, |e, k| {
        assert_eq!(handle(e, 1000), crate::policy::Verdict::Accept);
        assert_eq!(k.process_reads.load(Relaxed), 1);
        // It execs another program and opens its next socket at once.
        {
            let mut w = k.world();
            w.exes.insert(100, "/tmp/other".into());
            w.fds.get_mut(&100).unwrap().insert(4, 11);
            bind(&mut w, 11);
        }
        assert_eq!(handle(e, 1001), crate::policy::Verdict::Drop, "decided as what it runs now");
        assert_eq!(k.process_reads.load(Relaxed), 2);
    });
}

/// A decision that writes a record reads the holder's facts right after
/// deciding, so the record carries them as before: a refused packet's
/// record has the process's pid, comm, exe, cgroup, unit and netns; an
/// unrecorded acceptance in the same run reads nothing.
#[test]
fn process_facts_are_read_for_a_record() {
    let policy =
        "default = \"accept\"\n[[rule]]\nname = \"no-dns\"\nproto = \"udp\"\nsport = 1001\nverdict = \"drop\"\n";
    let recs = engine_over_fake(policy, |e, k| {
        assert_eq!(handle(e, 1000), crate::policy::Verdict::Accept, "the same client reaches the server");
        assert_eq!(k.process_reads.load(Relaxed), 0);
        assert_eq!(handle(e, 1001), crate::policy::Verdict::Drop);
        assert_eq!(k.process_reads.load(Relaxed), 1, "read once, for the record");
    });
    assert_eq!(recs.len(), 1, "{recs:?}");
    let p = &recs[0]["dest_process"];
    assert_eq!(recs[0]["rule"], "no-dns", "{}", recs[0]);
    assert_eq!(p["pid"], 100, "{}", recs[0]);
    assert_eq!(p["comm"], "p100", "{}", recs[0]);
    assert_eq!(p["exe"], "/usr/sbin/named", "{}", recs[0]);
    assert_eq!(p["cgroup"], "/system.slice/p100.service", "{}", recs[0]);
    assert_eq!(p["unit"], "p100.service", "{}", recs[0]);
    assert_eq!(p["netns"], 4_026_531_840u64, "{}", recs[0]);
}

/// Process facts left unread are read for the socket when first needed, and
/// only if its holder still holds it then (a pid could since name another
/// process): then kept for the socket.
#[test]
fn unread_process_facts_are_read_late_only_from_the_holder() {
    let r = fake(|w| {
        bind(w, 10);
        w.fds.insert(100, [(3, 10)].into());
    });
    let m = QueueMeta { hook: 1, ..QueueMeta::default() };
    let pkt = flow_packet(Proto::Udp, client(1000), SERVER.parse().unwrap());
    let (l, unread) = r.resolve_deferred(&pkt, &m);
    assert_eq!(r.kernel.process_reads.load(Relaxed), 0);
    assert!(unread.dest.is_some() && unread.source.is_none(), "{unread:?}");
    let p = l.dest_process.clone().unwrap();
    assert_eq!((p.pid, &*p.exe, p.netns), (100, "", Some(4_026_531_840)), "pid and netns, nothing read");
    // The eager answer, from the caches, reads it now.
    assert_eq!(r.resolve_cached(&pkt, &m), None, "reading is slow work");
    let mut done = l.clone();
    r.complete(&mut done, unread);
    let p = done.dest_process.clone().unwrap();
    assert_eq!((&*p.exe, &*p.comm, p.netns), ("/bin/fake", "p100", Some(4_026_531_840)));
    assert_eq!(r.kernel.process_reads.load(Relaxed), 1);
    // Kept for the socket: the next packets have it without a read.
    let (l2, unread2) = r.resolve_deferred(&pkt, &m);
    assert!(unread2.is_empty());
    assert_eq!(l2.dest_process, done.dest_process);
    assert_eq!(r.resolve_cached(&pkt, &m).and_then(|l| l.dest_process), done.dest_process);
    assert_eq!(r.kernel.process_reads.load(Relaxed), 1);

    // A second socket of the same process, its facts unread; the process
    // then closes it: what a read would find is no longer shown to be its.
    r.kernel.world().fds.get_mut(&100).unwrap().insert(4, 11);
    bind(&mut r.kernel.world(), 11);
    let pkt = flow_packet(Proto::Udp, client(1001), SERVER.parse().unwrap());
    let (mut l, unread) = r.resolve_deferred(&pkt, &m);
    assert!(unread.dest.is_some());
    r.kernel.world().fds.get_mut(&100).unwrap().remove(&4);
    r.complete(&mut l, unread);
    assert_eq!(l.dest_process, None, "no process facts that cannot be shown to be the holder's");
}
