//! Prometheus text exposition of the counters, served on a Unix socket
//! (mode 0600) or a loopback TCP port; off unless `--metrics` is given.

use crate::counters::{Counters, LATENCY_BOUNDS};
use crate::engine::{Engine, Loaded};
use crate::sys::nfqueue::KernelQueueStats;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Where to serve metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(std::path::PathBuf),
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    /// `unix:/run/labelgate/metrics.sock`, a loopback `ADDR:PORT`, or
    /// `HOST:PORT` with a host name (`localhost`) that resolves to loopback
    /// addresses only: the first IPv4 one it resolves to is used, else the
    /// first IPv6 one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(Endpoint::Unix(p.into()));
        }
        if let Ok(a) = s.parse::<std::net::SocketAddr>() {
            if !a.ip().is_loopback() {
                return Err(format!("{a}: metrics are served on loopback addresses only"));
            }
            return Ok(Endpoint::Tcp(a));
        }
        let bad = || format!("{s:?} is neither unix:PATH nor ADDR:PORT nor HOST:PORT");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || host.contains(['[', ']', ':']) {
            return Err(bad());
        }
        let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
            .collect();
        if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "{host} resolves to {}, which is not a loopback address: metrics are served on loopback addresses only",
                a.ip()
            ));
        }
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .map(|a| Endpoint::Tcp(*a))
            .ok_or_else(|| format!("{host:?} resolves to no address"))
    }
}

/// Why the metrics endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr}: {error}")]
    Tcp { addr: std::net::SocketAddr, error: std::io::Error },
    #[error("{path}: {error}")]
    Unix { path: String, error: std::io::Error },
    #[error("{path} exists and is not a socket; refusing to replace it (remove it, or choose another path)")]
    NotASocket { path: String },
    #[error("{path} is a socket another process is serving on; refusing to take it over")]
    InUse { path: String },
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// The running metrics endpoint. Dropping it (at exit) removes a Unix
/// socket labelgate created, if the path still names that socket.
#[derive(Debug)]
pub struct Server {
    unix: Option<(std::path::PathBuf, u64, u64)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        if let Some((path, dev, ino)) = &self.unix {
            let ours = std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino);
            if ours {
                if let Err(e) = std::fs::remove_file(path) {
                    log::warn!("metrics: cannot remove {}: {e}", path.display());
                }
            }
        }
    }
}

/// Bind a Unix socket at `p`, replacing only a stale socket left there (one
/// nobody accepts on); anything else at `p` is refused and left alone.
fn bind_unix(p: &std::path::Path) -> Result<(std::os::unix::net::UnixListener, Server), MetricsError> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
    let path = p.display().to_string();
    let unix_err = |error| MetricsError::Unix { path: path.clone(), error };
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(p).is_ok() {
                return Err(MetricsError::InUse { path });
            }
            std::fs::remove_file(p).map_err(unix_err)?;
        }
        Ok(_) => return Err(MetricsError::NotASocket { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unix_err(e)),
    }
    let l = std::os::unix::net::UnixListener::bind(p).map_err(unix_err)?;
    let m = std::fs::symlink_metadata(p).map_err(unix_err)?;
    // From here on the guard removes the socket on any error return.
    let server = Server { unix: Some((p.to_path_buf(), m.dev(), m.ino())) };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).map_err(unix_err)?;
    Ok((l, server))
}

/// A label value escaped for the text format (`\\`, `\"`, `\n`).
struct Esc<'a>(&'a str);

impl std::fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Write every metric to `out`. The per-rule hit counters (one line per
/// rule: 100,000 lines for 100,000 rules) are streamed rather than built up
/// in memory first.
pub fn write_all(out: &mut dyn Write, engine: &Engine, queues: &[u16]) -> std::io::Result<()> {
    let loaded = engine.current();
    out.write_all(render_counters(engine, &loaded, queues).as_bytes())?;
    writeln!(
        out,
        "# HELP labelgate_rule_hits_total Packets decided by each rule of the running policy.\n# TYPE labelgate_rule_hits_total counter"
    )?;
    for r in &loaded.policy.rules {
        writeln!(out, "labelgate_rule_hits_total{{rule=\"{}\"}} {}", Esc(&r.name), r.hits.load(Relaxed))?;
    }
    Ok(())
}

/// Every metric but the per-rule hits (resolver counters from `loaded`,
/// the same snapshot the rule hits are read from).
fn render_counters(engine: &Engine, loaded: &Loaded, queues: &[u16]) -> String {
    let c: &Counters = &engine.counters;
    let mut s = String::with_capacity(4096);
    let counter = |s: &mut String, name: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in rows {
            let _ = writeln!(s, "{name}{labels} {v}");
        }
    };
    let g = Counters::get;
    let _ = writeln!(
        s,
        "# HELP labelgate_policy_info The running policy: its digest (sha256: and the first 16 hex digits of the file's SHA-256).\n# TYPE labelgate_policy_info gauge\nlabelgate_policy_info{{policy=\"{}\"}} 1",
        loaded.policy.digest
    );
    counter(
        &mut s,
        "labelgate_packets_total",
        "Packets decided (received from the queues and answered).",
        vec![(String::new(), g(&c.packets))],
    );
    counter(
        &mut s,
        "labelgate_verdicts_total",
        "Verdicts given, by outcome.",
        vec![("{verdict=\"accept\"}".into(), g(&c.accepted)), ("{verdict=\"drop\"}".into(), g(&c.dropped))],
    );
    counter(
        &mut s,
        "labelgate_would_deny_total",
        "Denials let through by a permissive mode.",
        vec![(String::new(), g(&c.would_deny))],
    );
    counter(
        &mut s,
        "labelgate_malformed_total",
        "Packets that could not be parsed.",
        vec![(String::new(), g(&c.malformed))],
    );
    counter(
        &mut s,
        "labelgate_errors_total",
        "Queue socket errors, by kind.",
        vec![("{kind=\"verdict\"}".into(), g(&c.verdict_errors)), ("{kind=\"recv\"}".into(), g(&c.recv_errors))],
    );
    counter(
        &mut s,
        "labelgate_audit_records_total",
        "Audit records, by fate.",
        vec![
            ("{fate=\"written\"}".into(), g(&c.audit_written)),
            ("{fate=\"suppressed\"}".into(), g(&c.audit_suppressed)),
            ("{fate=\"lost\"}".into(), g(&c.audit_lost)),
        ],
    );
    counter(
        &mut s,
        "labelgate_worker_packets_total",
        "Resolver worker (--workers) events: packets decided on a worker, packets that found their worker's channel full.",
        vec![
            ("{event=\"offloaded\"}".into(), g(&c.offloaded)),
            ("{event=\"full\"}".into(), g(&c.worker_full)),
        ],
    );
    counter(
        &mut s,
        "labelgate_udp_flow_watch_total",
        "Accepted UDP flows whose conntrack pass ends with their socket: flows remembered, pushed out of the full table, entries deleted, already gone, delete errors, lost socket-destroy notifications.",
        vec![
            ("{event=\"watched\"}".into(), g(&c.flows_watched)),
            ("{event=\"evicted\"}".into(), g(&c.flows_evicted)),
            ("{event=\"ct_deleted\"}".into(), g(&c.ct_deleted)),
            ("{event=\"ct_gone\"}".into(), g(&c.ct_gone)),
            ("{event=\"ct_delete_error\"}".into(), g(&c.ct_delete_errors)),
            ("{event=\"destroy_overrun\"}".into(), g(&c.destroy_overruns)),
        ],
    );
    if let Some(cc) = engine.oracle_cache_counts() {
        counter(
            &mut s,
            "labelgate_selinux_cache_total",
            "Access-cache events of verdict selinux: answers served from the cache (hit), questions asked of the loaded policy (miss), times a policy, boolean or mode change emptied the cache (reset).",
            vec![
                ("{event=\"hit\"}".into(), cc.hits),
                ("{event=\"miss\"}".into(), cc.misses),
                ("{event=\"reset\"}".into(), cc.resets),
            ],
        );
    }
    let kstats: Vec<KernelQueueStats> = queues.iter().filter_map(|q| KernelQueueStats::read(*q)).collect();
    counter(
        &mut s,
        "labelgate_kernel_queue_dropped_total",
        "Packets the kernel dropped because the queue was full (nfnetlink_queue).",
        kstats.iter().map(|k| (format!("{{queue=\"{}\"}}", k.queue), k.queue_dropped)).collect(),
    );
    counter(
        &mut s,
        "labelgate_kernel_user_dropped_total",
        "Packets the kernel could not deliver to labelgate's socket (nfnetlink_queue).",
        kstats.iter().map(|k| (format!("{{queue=\"{}\"}}", k.queue), k.user_dropped)).collect(),
    );
    let _ = writeln!(s, "# HELP labelgate_kernel_queue_waiting Packets waiting for a verdict.\n# TYPE labelgate_kernel_queue_waiting gauge");
    for k in &kstats {
        let _ = writeln!(s, "labelgate_kernel_queue_waiting{{queue=\"{}\"}} {}", k.queue, k.waiting);
    }
    for (name, help, rows) in loaded.resolver.metrics() {
        counter(&mut s, &name, &help, rows);
    }
    let l = &c.latency;
    let _ = writeln!(
        s,
        "# HELP labelgate_decision_seconds Time to decide one packet (parse, resolve, decide).\n# TYPE labelgate_decision_seconds histogram"
    );
    let mut cum = 0;
    for (i, b) in l.buckets.iter().enumerate() {
        cum += b.load(Relaxed);
        let le = LATENCY_BOUNDS.get(i).map_or("+Inf".to_string(), |v| format!("{v}"));
        let _ = writeln!(s, "labelgate_decision_seconds_bucket{{le=\"{le}\"}} {cum}");
    }
    let _ = writeln!(s, "labelgate_decision_seconds_sum {}", l.sum_ns.load(Relaxed) as f64 / 1e9);
    let _ = writeln!(s, "labelgate_decision_seconds_count {}", l.count.load(Relaxed));
    s
}

/// Hex address as in `/proc/net/tcp{,6}` (`0100007F:1F90`): each 32-bit
/// word in host byte order.
fn proc_net_addr(s: &str) -> Option<std::net::SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<u32>> =
        (0..ip.len() / 8).map(|i| ip.get(i * 8..i * 8 + 8).and_then(|w| u32::from_str_radix(w, 16).ok())).collect();
    let bytes: Vec<u8> = words?.into_iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

/// The uid owning the local TCP socket bound to `local` and connected to
/// `remote` (a loopback client of the metrics port), from `/proc/net/tcp{,6}`.
fn tcp_owner(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u32> {
    let norm = |a: std::net::SocketAddr| match a.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, |v4| std::net::SocketAddr::new(v4.into(), a.port())),
        _ => a,
    };
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(l), Some(r), Some(uid)) = (f.get(1), f.get(2), f.get(7)) else { continue };
            if proc_net_addr(l).map(norm) == Some(norm(local)) && proc_net_addr(r).map(norm) == Some(norm(remote)) {
                return uid.parse().ok();
            }
        }
    }
    None
}

fn respond(mut conn: impl Read + Write, engine: &Engine, queues: &[u16]) {
    // Read (and ignore) the request head; any path gets the metrics.
    let mut buf = [0u8; 2048];
    let _ = conn.read(&mut buf);
    // HTTP/1.0 without a length: the body ends when the connection closes,
    // so it can be streamed.
    let mut out = std::io::BufWriter::with_capacity(16 * 1024, conn);
    let _ = out
        .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n\r\n")
        .and_then(|()| write_all(&mut out, engine, queues))
        .and_then(|()| out.flush());
}

/// Bind the metrics endpoint and start its thread. Call it before binding
/// the queues, so that a taken port or a refused path stops start-up before
/// any packet is queued to labelgate. Keep the returned [`Server`] for the
/// life of the daemon.
pub fn serve(ep: &Endpoint, engine: Arc<Engine>, queues: Vec<u16>) -> Result<Server, MetricsError> {
    let thread = std::thread::Builder::new().name("metrics".into());
    match ep {
        Endpoint::Tcp(a) => {
            let l = std::net::TcpListener::bind(a).map_err(|error| MetricsError::Tcp { addr: *a, error })?;
            thread
                .spawn(move || {
                    for mut conn in l.incoming().flatten() {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                        // Root only: the client's socket (our peer) must belong to uid 0.
                        let owner = match (conn.peer_addr(), conn.local_addr()) {
                            (Ok(peer), Ok(local)) => tcp_owner(peer, local),
                            _ => None,
                        };
                        if owner != Some(0) {
                            log::warn!("metrics: refused a client owned by uid {owner:?}");
                            let _ = conn.write_all(b"HTTP/1.0 403 Forbidden\r\nConnection: close\r\n\r\nroot only\n");
                            continue;
                        }
                        respond(conn, &engine, &queues);
                    }
                })
                .map_err(MetricsError::Thread)?;
            Ok(Server { unix: None })
        }
        Endpoint::Unix(p) => {
            let (l, server) = bind_unix(p)?;
            thread
                .spawn(move || {
                    for conn in l.incoming().flatten() {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                        respond(conn, &engine, &queues);
                    }
                })
                .map_err(MetricsError::Thread)?;
            Ok(server)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        let a = proc_net_addr("0100007F:1F90").unwrap();
        assert_eq!(a, "127.0.0.1:8080".parse().unwrap());
        let a = proc_net_addr("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(a, "[::1]:80".parse().unwrap());
        assert_eq!(proc_net_addr("zz:1"), None);
        assert_eq!(proc_net_addr("0100007F"), None);
    }

    #[test]
    fn finds_the_owner_of_a_real_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let uid = tcp_owner(s.peer_addr().unwrap(), s.local_addr().unwrap());
        let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
        assert_eq!(uid, Some(me));
        drop(c);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(Esc("web-to-db").to_string(), "web-to-db");
        assert_eq!(Esc("a\\b\"c\nd").to_string(), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn endpoints() {
        assert_eq!("unix:/run/x.sock".parse::<Endpoint>(), Ok(Endpoint::Unix("/run/x.sock".into())));
        assert!(matches!("127.0.0.1:9797".parse::<Endpoint>(), Ok(Endpoint::Tcp(_))));
        assert!(matches!("[::1]:9797".parse::<Endpoint>(), Ok(Endpoint::Tcp(_))));
        assert!("0.0.0.0:9797".parse::<Endpoint>().unwrap_err().contains("loopback"));
        assert!("unix:".parse::<Endpoint>().is_err());
        assert!("nonsense".parse::<Endpoint>().is_err());
        // A host name resolving to loopback only is accepted.
        match "localhost:9797".parse::<Endpoint>() {
            Ok(Endpoint::Tcp(a)) => assert!(a.ip().is_loopback() && a.port() == 9797, "{a}"),
            other => panic!("localhost: {other:?}"),
        }
        assert!("localhost:x".parse::<Endpoint>().is_err());
        assert!("localhost".parse::<Endpoint>().is_err());
    }

    #[test]
    fn a_unix_path_that_is_not_a_socket_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("precious");
        std::fs::write(&file, "data").unwrap();
        let e = bind_unix(&file).unwrap_err();
        assert!(matches!(e, MetricsError::NotASocket { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
        // Same call on a fresh path: bound, 0600, removed when the server is dropped.
        let sock = dir.path().join("m.sock");
        let (l, server) = bind_unix(&sock).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
        // A live socket is not taken over by a second server.
        assert!(matches!(bind_unix(&sock).unwrap_err(), MetricsError::InUse { .. }));
        drop(server);
        assert!(!sock.exists(), "socket removed at exit");
        // A stale socket (nobody listening) is replaced.
        drop(l);
        let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(stale);
        assert!(sock.exists());
        let (_l, server) = bind_unix(&sock).unwrap();
        drop(server);
        assert!(!sock.exists());
    }
}
