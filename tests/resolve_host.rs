//! Host integration tests of `SocketResolver` against the real kernel.
//!
//! Each test makes a fresh network namespace ([`support::Netns`]), moves
//! its own thread into it with `setns`, starts socket-holding Python
//! processes under other uids with `setpriv`, and checks what the resolver
//! says about their real 4-tuples against `ss -tunapeH` (pid, uid, inode)
//! and `/proc/PID/exe`. They need root, `ip`, `ss`, `python3` and
//! `setpriv`: without them they print a SKIP line and return, except under
//! CI (`CI` set), where they fail ([`support::can_run_with`]).

mod support;

use labelgate::labels::{Hook, Labels, Origin, QueueMeta, Resolver};
use labelgate::packet::Proto;
use labelgate::resolve::{flow_packet as pkt, PeerConfig, ResolverConfig, SocketResolver};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use support::{run_ok, Netns};

const PYTHON: &str = "/usr/bin/python3";
const SERVER_UID: u32 = 4101;
const CLIENT_UID: u32 = 4102;

/// A small socket-holding agent, driven line by line on stdin; it answers
/// each command with one JSON line.
const AGENT: &str = r#"
import json, os, socket, sys, time
socks = {}
n = 0
def fam(host):
    return socket.AF_INET6 if ':' in host else socket.AF_INET
def kind(p):
    return socket.SOCK_STREAM if p == 'tcp' else socket.SOCK_DGRAM
def say(o):
    sys.stdout.write(json.dumps(o) + '\n'); sys.stdout.flush()
for line in sys.stdin:
    c = line.split()
    try:
        if c[0] == 'listen':          # listen tcp|udp HOST V6ONLY
            s = socket.socket(fam(c[2]), kind(c[1]))
            if fam(c[2]) == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(c[3]))
            s.bind((c[2], 0))
            if c[1] == 'tcp':
                s.listen(128)
        elif c[0] == 'connect':       # connect tcp|udp HOST PORT
            s = socket.socket(fam(c[2]), kind(c[1]))
            s.connect((c[2], int(c[3])))
        elif c[0] == 'sendto':        # sendto BINDHOST HOST PORT (unconnected UDP)
            s = socket.socket(fam(c[2]), socket.SOCK_DGRAM)
            s.bind((c[1], 0))
            s.sendto(b'x', (c[2], int(c[3])))
        elif c[0] == 'accept':        # accept LISTENER_ID
            s = socks[int(c[1])].accept()[0]
        elif c[0] == 'close':         # close ID
            socks.pop(int(c[1])).close()
            say({'ok': True}); continue
        elif c[0] == 'inflight':      # inflight ID: pass the socket over a unix pair, close it here
            a, b = socket.socketpair()
            socket.send_fds(a, [b'x'], [socks[int(c[1])].fileno()])
            socks.pop(int(c[1])).close()
            n += 1; socks[n] = a; n += 1; socks[n] = b
            say({'ok': True}); continue
        elif c[0] == 'handoff':       # fork a child that keeps every socket; this process exits
            pid = os.fork()
            if pid == 0:
                os.close(0); os.close(1)
                time.sleep(600)
                os._exit(0)
            say({'child': pid}); os._exit(0)
        else:
            say({'error': 'unknown command'}); continue
        n += 1
        socks[n] = s
        try:
            peer = s.getpeername()[:2]
        except OSError:
            peer = None
        say({'id': n, 'local': s.getsockname()[:2], 'peer': peer, 'fd': s.fileno()})
    except Exception as e:
        say({'error': repr(e)})
"#;

/// What these tests need besides root.
const TOOLS: &[&str] = &["ip", "ss", "python3", "setpriv"];

#[derive(Debug, Clone)]
struct Sock {
    id: u64,
    local: SocketAddr,
    peer: Option<SocketAddr>,
}

/// One agent process running under `uid`.
struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    uid: u32,
}

fn addr(v: &serde_json::Value) -> Option<SocketAddr> {
    let a = v.as_array()?;
    let ip: IpAddr = a.first()?.as_str()?.parse().ok()?;
    Some(SocketAddr::new(unmap(ip), a.get(1)?.as_u64()? as u16))
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Agent {
    fn start(uid: u32) -> Agent {
        let mut child = Command::new("/usr/bin/setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .args([PYTHON, "-u", "-c", AGENT])
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start agent");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let pid = child.id();
        Agent { child, stdin, stdout, pid, uid }
    }

    fn cmd(&mut self, line: &str) -> serde_json::Value {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).unwrap();
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{line}: {reply:?}: {e}"));
        assert!(v.get("error").is_none(), "{line}: {v}");
        v
    }

    fn sock(&mut self, line: &str) -> Sock {
        let v = self.cmd(line);
        Sock { id: v["id"].as_u64().unwrap(), local: addr(&v["local"]).unwrap(), peer: addr(&v["peer"]) }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `ss -tunapeH` says about one socket.
#[derive(Debug, Clone)]
struct SsEntry {
    peer: Option<SocketAddr>,
    pids: Vec<u32>,
    uid: u32,
    ino: u32,
}

fn parse_ss_addr(s: &str) -> Option<SocketAddr> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.split('%').next()?;
    let ip: IpAddr = match host {
        "*" => "::".parse().ok()?,
        h => h.parse().ok()?,
    };
    Some(SocketAddr::new(unmap(ip), port))
}

/// `ss -tunapeH` in the calling thread's namespace, by (proto, local end).
fn ss() -> HashMap<(Proto, SocketAddr), Vec<SsEntry>> {
    let out = Command::new("ss").arg("-tunapeH").output().unwrap();
    assert!(out.status.success());
    let mut m: HashMap<(Proto, SocketAddr), Vec<SsEntry>> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let proto = match f.first() {
            Some(&"tcp") => Proto::Tcp,
            Some(&"udp") => Proto::Udp,
            _ => continue,
        };
        let (Some(local), Some(peer)) = (f.get(4), f.get(5)) else {
            continue;
        };
        let Some(local) = parse_ss_addr(local) else {
            continue;
        };
        let mut e = SsEntry { peer: parse_ss_addr(peer), pids: vec![], uid: 0, ino: 0 };
        for w in &f[6..] {
            if let Some(v) = w.strip_prefix("uid:") {
                e.uid = v.parse().unwrap();
            } else if let Some(v) = w.strip_prefix("ino:") {
                e.ino = v.parse().unwrap();
            } else if w.starts_with("users:") {
                for part in w.split("pid=").skip(1) {
                    let n: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
                    e.pids.push(n.parse().unwrap());
                }
            }
        }
        m.entry((proto, local)).or_default().push(e);
    }
    m
}

/// The ss entry of the socket at `local` talking to `peer`: the connected
/// one if there is one, else the unconnected/listening one, which ss may
/// list under the wildcard address of its family or, for IPv4 traffic to a
/// dual-stack socket, under `*` (read as `::`).
fn ss_for(
    m: &HashMap<(Proto, SocketAddr), Vec<SsEntry>>,
    proto: Proto,
    local: SocketAddr,
    peer: SocketAddr,
) -> SsEntry {
    let any: IpAddr = match local.ip() {
        IpAddr::V4(_) => "0.0.0.0".parse().unwrap(),
        IpAddr::V6(_) => "::".parse().unwrap(),
    };
    let candidates = [local, SocketAddr::new(any, local.port()), SocketAddr::new("::".parse().unwrap(), local.port())];
    let connected = m.get(&(proto, local)).and_then(|v| v.iter().find(|e| e.peer == Some(peer)));
    let unconnected =
        || candidates.iter().find_map(|a| m.get(&(proto, *a))?.iter().find(|e| e.peer.is_none_or(|p| p.port() == 0)));
    connected.or_else(unconnected).cloned().unwrap_or_else(|| panic!("ss has no {proto} socket for {local} -> {peer}"))
}

fn meta(hook: Hook) -> QueueMeta {
    QueueMeta {
        hook: match hook {
            Hook::Input => 1,
            _ => 3,
        },
        ..QueueMeta::default()
    }
}

/// What a socket's label must be on this host: SELinux inactive means
/// `/proc/self/attr/current` fails with EINVAL and the label is unlabeled
/// `selinux_disabled`. `None` where SELinux (or another LSM) is active.
fn expected_unlabeled_reason() -> Option<&'static str> {
    match std::fs::read("/proc/self/attr/current") {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Some("selinux_disabled"),
        _ => None,
    }
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap().to_string_lossy().into_owned()
}

/// A fresh namespace with a server agent and a client agent in it, or
/// `None` (after a SKIP line) where the host cannot run these tests.
fn setup() -> Option<(Netns, Agent, Agent)> {
    setup_with(TOOLS)
}

/// [`setup`] for a test that needs `tools`.
fn setup_with(tools: &[&str]) -> Option<(Netns, Agent, Agent)> {
    if !support::can_run_with(tools) {
        return None;
    }
    let ns = Netns::new();
    ns.enter();
    Some((ns, Agent::start(SERVER_UID), Agent::start(CLIENT_UID)))
}

/// The packet's source has no holder and the documented reason.
fn assert_source_unlabeled(l: &Labels, reason: &'static str) {
    assert_eq!(l.source.origin, Origin::Unlabeled(reason), "{l:?}");
    assert!(l.source_process.is_none(), "{l:?}");
    assert_eq!(l.source.context.to_string(), "system_u:object_r:unlabeled_t:s0");
}

/// A resolver counter's value.
fn n(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

fn resolver() -> SocketResolver {
    SocketResolver::new(PeerConfig::default(), ResolverConfig::default()).expect("resolver")
}

/// Check one local end of `l` (source or dest) against ss and /proc.
#[allow(clippy::too_many_arguments)]
fn check_end(
    r: &SocketResolver,
    l: &Labels,
    source: bool,
    proto: Proto,
    local: SocketAddr,
    remote: SocketAddr,
    owner: &Agent,
    ssm: &HashMap<(Proto, SocketAddr), Vec<SsEntry>>,
) {
    let what = format!("{} of {proto} {local} <-> {remote}", if source { "source" } else { "dest" });
    let (label, process) = if source { (&l.source, &l.source_process) } else { (&l.dest, &l.dest_process) };
    let p = process.as_ref().unwrap_or_else(|| panic!("{what}: no process: {l:?}"));
    let e = ss_for(ssm, proto, local, remote);
    assert_eq!(p.pid, owner.pid, "{what}: pid");
    assert!(e.pids.contains(&p.pid), "{what}: ss says {e:?}, we say {}", p.pid);
    assert_eq!(&*p.exe, exe_of(owner.pid), "{what}: exe");
    assert_eq!(&*p.comm, "python3", "{what}: comm");
    assert_eq!(r.cached_socket_inode(proto, local, remote), Some(e.ino), "{what}: inode (ss {e:?})");
    if source {
        assert_eq!(l.uid, Some(owner.uid), "{what}: uid");
        assert_eq!(e.uid, owner.uid, "{what}: ss uid");
    }
    match expected_unlabeled_reason() {
        Some(reason) => assert_eq!(label.origin, Origin::Unlabeled(reason), "{what}"),
        None => println!("note: an LSM is active; {what} label {label:?}"),
    }
}

/// Both directions of one flow, at OUTPUT and at INPUT.
fn check_flow(
    r: &SocketResolver,
    proto: Proto,
    client: SocketAddr,
    server: SocketAddr,
    c: &Agent,
    s: &Agent,
    ssm: &HashMap<(Proto, SocketAddr), Vec<SsEntry>>,
) {
    for hook in [Hook::Output, Hook::Input] {
        let l = r.resolve(&pkt(proto, client, server), &meta(hook));
        check_end(r, &l, true, proto, client, server, c, ssm);
        check_end(r, &l, false, proto, server, client, s, ssm);
        let l = r.resolve(&pkt(proto, server, client), &meta(hook));
        check_end(r, &l, true, proto, server, client, s, ssm);
        check_end(r, &l, false, proto, client, server, c, ssm);
    }
}

/// Many sockets, TCP and UDP, IPv4 and IPv6, two uids: every end is
/// attributed to the process, uid, exe and inode that ss and /proc report.
#[test]
fn attribution_matches_ss() {
    let Some((_ns, mut srv, mut cli)) = setup() else {
        return;
    };
    let tcp4 = srv.sock("listen tcp 127.0.0.1 0");
    let tcp_dual = srv.sock("listen tcp :: 0");
    let tcp6 = srv.sock("listen tcp ::1 1");
    let udp4 = srv.sock("listen udp 127.0.0.1 0");
    let udp_dual = srv.sock("listen udp :: 0");
    let udp_any4 = srv.sock("listen udp 0.0.0.0 0");
    let udp6 = srv.sock("listen udp ::1 1");
    let mut tcp_flows = vec![];
    let mut udp_flows = vec![];
    for _ in 0..4 {
        for (host, l) in [("127.0.0.1", &tcp4), ("127.0.0.1", &tcp_dual), ("::1", &tcp_dual), ("::1", &tcp6)] {
            let c = cli.sock(&format!("connect tcp {host} {}", l.local.port()));
            let a = srv.sock(&format!("accept {}", l.id));
            assert_eq!(a.peer, Some(c.local));
            tcp_flows.push((c.local, a.local));
        }
        for (host, l) in [
            ("127.0.0.1", &udp4),
            ("127.0.0.1", &udp_dual),
            ("::1", &udp_dual),
            ("::1", &udp6),
            ("127.0.0.1", &udp_any4),
        ] {
            let c = cli.sock(&format!("connect udp {host} {}", l.local.port()));
            udp_flows.push((c.local, c.peer.unwrap()));
        }
        // Unconnected sender, bound to an address, to the wildcard-bound socket.
        let c = cli.sock(&format!("sendto 127.0.0.1 127.0.0.1 {}", udp_any4.local.port()));
        udp_flows.push((c.local, SocketAddr::new(c.local.ip(), udp_any4.local.port())));
        let c = cli.sock(&format!("sendto ::1 ::1 {}", udp_dual.local.port()));
        udp_flows.push((c.local, SocketAddr::new(c.local.ip(), udp_dual.local.port())));
    }
    let r = resolver();
    let ssm = ss();
    for (c, s) in &tcp_flows {
        check_flow(&r, Proto::Tcp, *c, *s, &cli, &srv, &ssm);
    }
    for (c, s) in &udp_flows {
        check_flow(&r, Proto::Udp, *c, *s, &cli, &srv, &ssm);
    }
    // A SYN to each listener from a port nobody uses: the listener receives
    // it (IPv4 to the dual-stack listener included).
    let lo4: IpAddr = "127.0.0.1".parse().unwrap();
    let lo6: IpAddr = "::1".parse().unwrap();
    for (ip, l) in [(lo4, &tcp4), (lo4, &tcp_dual), (lo6, &tcp_dual), (lo6, &tcp6)] {
        let to = SocketAddr::new(ip, l.local.port());
        let from = SocketAddr::new(ip, 9);
        let l2 = r.resolve(&pkt(Proto::Tcp, from, to), &meta(Hook::Input));
        check_end(&r, &l2, false, Proto::Tcp, to, from, &srv, &ssm);
    }

    // Several queue threads at once (they inherit this thread's namespace)
    // get the same answers.
    let flows: Vec<(Proto, SocketAddr, SocketAddr)> = tcp_flows
        .iter()
        .map(|(c, s)| (Proto::Tcp, *c, *s))
        .chain(udp_flows.iter().map(|(c, s)| (Proto::Udp, *c, *s)))
        .collect();
    let (cpid, spid) = (cli.pid, srv.pid);
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                for _ in 0..5 {
                    for (p, c, s) in &flows {
                        let l = r.resolve(&pkt(*p, *c, *s), &meta(Hook::Output));
                        assert_eq!(l.source_process.map(|x| x.pid), Some(cpid));
                        assert_eq!(l.dest_process.map(|x| x.pid), Some(spid));
                    }
                }
            });
        }
    });
    // What a cached answer costs (printed, not asserted: debug builds are
    // slow), checking the holder on every packet and every 10 ms.
    let relaxed = SocketResolver::new(
        PeerConfig::default(),
        ResolverConfig { owner_revalidate_after: Duration::from_millis(10), ..ResolverConfig::default() },
    )
    .unwrap();
    for (name, r) in [("every packet", &r), ("every 10 ms", &relaxed)] {
        let t = Instant::now();
        let rounds = 10_000;
        for i in 0..rounds {
            let (p, c, s) = flows[i % flows.len()];
            let l = r.resolve(&pkt(p, c, s), &meta(Hook::Output));
            assert!(std::hint::black_box(l).source_process.is_some());
        }
        println!("cached resolve of both ends, holder checked {name}: {:?} per packet", t.elapsed() / rounds as u32);
    }

    let st = r.stats();
    println!("stats: {:?}", st.snapshot());
    // Scans happen on owner misses only, never per packet.
    assert!(n(&st.proc_scans) <= 3, "{:?}", st.snapshot());
    assert!(n(&st.owner.hits) > n(&st.owner.misses));
}

/// Sockets that close, processes that exit, and sockets that outlive their
/// process in a child get the documented answers.
#[test]
fn closing_and_exiting() {
    let Some((_ns, mut srv, mut cli)) = setup() else {
        return;
    };
    let l = srv.sock("listen tcp 127.0.0.1 0");
    let u = srv.sock("listen udp 127.0.0.1 0");
    let tc = cli.sock(&format!("connect tcp 127.0.0.1 {}", l.local.port()));
    let _ta = srv.sock(&format!("accept {}", l.id));
    let uc = cli.sock(&format!("connect udp 127.0.0.1 {}", u.local.port()));
    let keep = cli.sock(&format!("connect udp 127.0.0.1 {}", u.local.port()));
    let fly = cli.sock(&format!("connect udp 127.0.0.1 {}", u.local.port()));
    // Flow entries expire quickly here, so that closed sockets are looked
    // up again within the test.
    let flow_ttl = Duration::from_millis(100);
    let r = SocketResolver::new(PeerConfig::default(), ResolverConfig { flow_ttl, ..ResolverConfig::default() })
        .expect("resolver");
    let out =
        |r: &SocketResolver, c: &Sock, proto| r.resolve(&pkt(proto, c.local, c.peer.unwrap()), &meta(Hook::Output));
    for (c, p) in [(&tc, Proto::Tcp), (&uc, Proto::Udp), (&keep, Proto::Udp)] {
        let got = out(&r, c, p);
        assert_eq!(got.source_process.map(|x| x.pid), Some(cli.pid), "{p} {c:?}");
    }

    let before = out(&r, &tc, Proto::Tcp);
    // The client closes one TCP and one UDP socket mid-flow. The TCP socket
    // lives on without a file (FIN_WAIT2, orphaned) until its shutdown ends:
    // its packets keep the label and holder it had, also after its flow
    // entry expired and sock_diag was asked again (same socket cookie).
    cli.cmd(&format!("close {}", tc.id));
    cli.cmd(&format!("close {}", uc.id));
    // The UDP socket is gone at once (asked before its flow entry expires:
    // an expired entry may be swept, and then nothing says it had a socket).
    let got = out(&r, &uc, Proto::Udp);
    assert_source_unlabeled(&got, "socket_closed");
    for _ in 0..2 {
        std::thread::sleep(flow_ttl + Duration::from_millis(50));
        let ssm = ss();
        let e = ss_for(&ssm, Proto::Tcp, tc.local, tc.peer.unwrap());
        assert!(e.pids.is_empty() && e.ino == 0, "closed client socket still held: {e:?}");
        let got = out(&r, &tc, Proto::Tcp);
        assert_eq!(got.source_process.as_ref().map(|x| x.pid), Some(cli.pid), "{got:?}");
        assert_eq!(got.source, before.source);
        assert_eq!(got.uid, Some(CLIENT_UID));
    }
    // The server's end of the closed TCP flow is still held (CLOSE_WAIT).
    let got = r.resolve(&pkt(Proto::Tcp, l.local, tc.local), &meta(Hook::Output));
    assert_eq!(got.source_process.map(|x| x.pid), Some(srv.pid));

    // A socket whose only reference is an fd in flight (SCM_RIGHTS, not yet
    // received): it exists, but no process holds it.
    cli.cmd(&format!("inflight {}", fly.id));
    let got = out(&r, &fly, Proto::Udp);
    assert_source_unlabeled(&got, "kernel_socket");
    let scans = n(&r.stats().proc_scans);
    for _ in 0..50 {
        let again = out(&r, &fly, Proto::Udp);
        assert_eq!(again.source.origin, Origin::Unlabeled("kernel_socket"));
    }
    assert_eq!(n(&r.stats().proc_scans), scans, "an ownerless flow must not rescan /proc per packet");

    // The client forks a child that keeps its sockets and exits itself:
    // attribution moves to the child.
    let child = cli.cmd("handoff")["child"].as_u64().unwrap() as u32;
    let _ = cli.child.wait();
    let got = out(&r, &keep, Proto::Udp);
    assert_eq!(got.source_process.as_ref().map(|x| x.pid), Some(child), "{got:?}");
    assert_eq!(got.uid, Some(CLIENT_UID));
    let e = ss_for(&ss(), Proto::Udp, keep.local, keep.peer.unwrap());
    assert_eq!(e.pids, vec![child]);

    // The child is killed: its socket closes with it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ss().get(&(Proto::Udp, keep.local)).is_some_and(|v| !v.is_empty()) {
        assert!(Instant::now() < deadline, "socket of killed child still open");
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = out(&r, &keep, Proto::Udp);
    assert_source_unlabeled(&got, "socket_closed");

    // A flow no socket ever had: a kernel-made packet such as an RST.
    let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let got = r.resolve(&pkt(Proto::Tcp, nobody, l.local), &meta(Hook::Output));
    assert_eq!(got.source.origin, Origin::Unlabeled("no_socket"));
    // ... whose destination, the listener, is still known.
    assert_eq!(got.dest_process.map(|x| x.pid), Some(srv.pid));
}

/// A connection whose final handshake ACK never reaches the server leaves
/// only a request mini-socket (SYN_RECV, inode 0) for its 4-tuple: its
/// packets belong to the listener.
#[test]
fn half_open_connection_goes_to_the_listener() {
    let Some((_ns, mut srv, mut cli)) = setup_with(&["ip", "ss", "python3", "setpriv", "iptables"]) else {
        return;
    };
    let l = srv.sock("listen tcp 127.0.0.1 0");
    let port = l.local.port().to_string();
    // Drop the client's bare ACKs to the server: the server stays in SYN_RECV.
    run_ok(Command::new("iptables").args([
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &port,
        "--tcp-flags",
        "SYN,ACK,RST,FIN",
        "ACK",
        "-j",
        "DROP",
    ]));
    let c = cli.sock(&format!("connect tcp 127.0.0.1 {port}"));
    let states = Command::new("ss").args(["-tanH", "state", "syn-recv"]).output().unwrap();
    let states = String::from_utf8_lossy(&states.stdout);
    assert!(states.contains(&c.local.to_string()), "no SYN_RECV entry for {}: {states}", c.local);
    let r = resolver();
    let got = r.resolve(&pkt(Proto::Tcp, c.local, l.local), &meta(Hook::Input));
    assert_eq!(got.dest_process.as_ref().map(|p| p.pid), Some(srv.pid), "{got:?}");
    // ss lists the mini-socket (inode 0) and the listener at that address.
    let listener = ss()[&(Proto::Tcp, l.local)].iter().find(|e| e.peer.is_none()).map(|e| e.ino);
    let ino = listener.expect("ss lists the listener");
    assert_eq!(r.cached_socket_inode(Proto::Tcp, l.local, c.local), Some(ino));
    // The client's side is an ordinary established socket.
    assert_eq!(got.source_process.map(|p| p.pid), Some(cli.pid));
}

/// A new socket is found without a full `/proc` scan when its process held
/// the sockets found last, or was born after the last full scan; a socket
/// nobody holds costs one full scan, not one per packet.
#[test]
fn new_sockets_found_without_full_scan() {
    let Some((_ns, mut srv, mut cli)) = setup() else {
        return;
    };
    let l = srv.sock("listen tcp 127.0.0.1 0");
    let r = resolver();
    let st = r.stats();
    let attribute = |a: &mut Agent, srv_pid: u32| {
        let c = a.sock(&format!("connect tcp 127.0.0.1 {}", l.local.port()));
        let got = r.resolve(&pkt(Proto::Tcp, c.local, l.local), &meta(Hook::Output));
        assert_eq!(got.source_process.as_ref().map(|p| p.pid), Some(a.pid), "{got:?}");
        assert_eq!(got.dest_process.as_ref().map(|p| p.pid), Some(srv_pid), "{got:?}");
    };
    // The first connection: the client's socket is newer than the
    // resolver's start-up scan and the client is not yet a known holder.
    attribute(&mut cli, srv.pid);
    let scans = n(&st.proc_scans);
    let recent = n(&st.owner_found_recent);
    // More connections from the same client: found among recent holders.
    for _ in 0..5 {
        attribute(&mut cli, srv.pid);
    }
    assert_eq!(n(&st.proc_scans), scans, "{:?}", st.snapshot());
    assert_eq!(n(&st.owner_found_recent), recent + 5, "{:?}", st.snapshot());
    // A process born after the last full scan: found among new processes
    // (it is not a recent holder).
    let mut late = Agent::start(CLIENT_UID);
    let born = n(&st.owner_found_new_process);
    attribute(&mut late, srv.pid);
    assert_eq!(n(&st.proc_scans), scans, "{:?}", st.snapshot());
    assert_eq!(n(&st.owner_found_new_process), born + 1, "{:?}", st.snapshot());
    // A socket no process holds (its only reference in flight): one full
    // scan finds nobody, and packets after it do not scan again.
    let fly = cli.sock(&format!("connect udp 127.0.0.1 {}", l.local.port()));
    cli.cmd(&format!("inflight {}", fly.id));
    for _ in 0..20 {
        let got = r.resolve(&pkt(Proto::Udp, fly.local, fly.peer.unwrap()), &meta(Hook::Output));
        assert_source_unlabeled(&got, "kernel_socket");
    }
    assert_eq!(n(&st.proc_scans), scans + 1, "{:?}", st.snapshot());
}

/// A UDP socket's holder is checked once per batch read from the queue, not
/// once per packet: a check made after a packet was read covers it (the
/// holder still held the socket after the packet was sent), a packet read
/// after the check is checked again.
#[test]
fn holder_checked_after_receipt_covers_the_packet() {
    let Some((_ns, mut srv, mut cli)) = setup() else {
        return;
    };
    let u = srv.sock("listen udp 127.0.0.1 0");
    let c = cli.sock(&format!("connect udp 127.0.0.1 {}", u.local.port()));
    let r = resolver();
    let at = |received: Instant| {
        let m = QueueMeta { received: Some(received), ..meta(Hook::Output) };
        r.resolve(&pkt(Proto::Udp, c.local, c.peer.unwrap()), &m)
    };
    let batch = Instant::now();
    let first = at(batch);
    assert_eq!(first.source_process.as_ref().map(|p| p.pid), Some(cli.pid), "{first:?}");
    // Later batches check the holders (of both ends: the server's socket is
    // local too): by the second check a link is open to each one's fd, and
    // the next check reads through those links.
    let links = &r.stats().proc_link;
    let mut seen = vec![];
    for _ in 0..3 {
        let again = at(Instant::now());
        assert_eq!(again.source_process.as_ref().map(|p| p.pid), Some(cli.pid), "{again:?}");
        assert_eq!(again.dest_process.as_ref().map(|p| p.pid), Some(srv.pid), "{again:?}");
        seen.push((n(&links.misses), n(&links.hits)));
    }
    assert_eq!((seen[2].0, seen[2].1), (seen[1].0, seen[1].1 + 2), "{:?}", r.stats().snapshot());
    cli.cmd(&format!("close {}", c.id));
    // Read in the same batch as the first packet: covered by its check.
    let same_batch = at(batch);
    assert_eq!(same_batch.source_process.as_ref().map(|p| p.pid), Some(cli.pid), "{same_batch:?}");
    // Read after the socket closed: checked (the link no longer reads, the
    // path is asked again), and found closed.
    let later = at(Instant::now());
    assert_source_unlabeled(&later, "socket_closed");
    assert_eq!(n(&links.invalidations), 1, "{:?}", r.stats().snapshot());
}

/// A SYN between two local sockets asks sock_diag about both ends in one
/// exchange: each end still gets its own process and inode, IPv4 and IPv6,
/// at OUTPUT and INPUT, and each SYN is two lookups.
#[test]
fn syn_between_local_sockets_resolves_both_ends_together() {
    let Some((_ns, mut srv, mut cli)) = setup() else {
        return;
    };
    let l = srv.sock("listen tcp 127.0.0.1 0");
    let l6 = srv.sock("listen tcp ::1 0");
    let r = resolver();
    for (listener, hook) in [(&l, Hook::Output), (&l6, Hook::Input), (&l, Hook::Input)] {
        let c = cli.sock(&format!("connect tcp {} {}", unmap(listener.local.ip()), listener.local.port()));
        // Accepted, so the server's end is a socket of its own (one lookup;
        // a connection still in the accept queue would ask for the listener).
        srv.sock(&format!("accept {}", listener.id));
        let mut syn = pkt(Proto::Tcp, c.local, listener.local);
        syn.tcp_syn = true;
        let before = n(&r.stats().sock_diag_queries);
        let got = r.resolve(&syn, &meta(hook));
        assert_eq!(n(&r.stats().sock_diag_queries), before + 2, "{:?}", r.stats().snapshot());
        assert_eq!(got.source_process.as_ref().map(|p| p.pid), Some(cli.pid), "{got:?}");
        assert_eq!(got.dest_process.as_ref().map(|p| p.pid), Some(srv.pid), "{got:?}");
        let ssm = ss();
        for (a, b) in [(c.local, listener.local), (listener.local, c.local)] {
            assert_eq!(r.cached_socket_inode(Proto::Tcp, a, b), Some(ss_for(&ssm, Proto::Tcp, a, b).ino), "{a} {b}");
        }
    }
}

/// Flow mode's resolver does not remember the flows of SYNs (the kernel
/// decides the rest of the connection): a SYN leaves no flow entry, and a
/// later packet of the flow is still attributed right, through sock_diag.
#[test]
fn flow_mode_does_not_cache_syn_flows() {
    let Some((_ns, mut srv, mut cli)) = setup() else {
        return;
    };
    let l = srv.sock("listen tcp 127.0.0.1 0");
    let c = cli.sock(&format!("connect tcp 127.0.0.1 {}", l.local.port()));
    srv.sock(&format!("accept {}", l.id));
    let cfg = ResolverConfig { cache_syn_flows: false, ..ResolverConfig::default() };
    let r = SocketResolver::new(PeerConfig::default(), cfg).expect("resolver");
    let mut syn = pkt(Proto::Tcp, c.local, l.local);
    syn.tcp_syn = true;
    let got = r.resolve(&syn, &meta(Hook::Output));
    assert_eq!(got.source_process.as_ref().map(|p| p.pid), Some(cli.pid), "{got:?}");
    assert_eq!(got.dest_process.as_ref().map(|p| p.pid), Some(srv.pid), "{got:?}");
    assert_eq!(r.cached_socket_inode(Proto::Tcp, c.local, l.local), None);
    assert_eq!(r.cached_socket_inode(Proto::Tcp, l.local, c.local), None);
    let before = n(&r.stats().sock_diag_queries);
    let got = r.resolve(&pkt(Proto::Tcp, c.local, l.local), &meta(Hook::Output));
    assert_eq!(got.source_process.as_ref().map(|p| p.pid), Some(cli.pid), "{got:?}");
    assert_eq!(got.dest_process.as_ref().map(|p| p.pid), Some(srv.pid), "{got:?}");
    assert_eq!(n(&r.stats().sock_diag_queries), before + 2, "{:?}", r.stats().snapshot());
    // That packet was not a SYN: its flow is remembered as before.
    let ssm = ss();
    assert_eq!(
        r.cached_socket_inode(Proto::Tcp, c.local, l.local),
        Some(ss_for(&ssm, Proto::Tcp, c.local, l.local).ino)
    );
}
