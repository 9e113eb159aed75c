//! The set of this host's addresses ([`LocalAddrs`]), listed again once it
//! is older than its TTL: whether a packet's end is local.

use super::flow::unmap_ip;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

struct Listed {
    at: Instant,
    set: HashSet<IpAddr>,
}

/// This host's addresses, as last listed.
pub struct LocalAddrs {
    ttl: Duration,
    listed: RwLock<Listed>,
}

impl LocalAddrs {
    /// The addresses listed now (`at`), trusted for `ttl`.
    pub fn new(ttl: Duration, at: Instant) -> LocalAddrs {
        LocalAddrs { ttl, listed: RwLock::new(Listed { at, set: local_addrs() }) }
    }

    /// Whether `ip` is an address of this host (loopback included),
    /// listing the addresses again if the list is stale.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        if let Some(known) = self.is_local_cached(ip) {
            return known;
        }
        let ip = unmap_ip(ip);
        let set = local_addrs();
        let hit = set.contains(&ip);
        *self.listed.write().unwrap_or_else(|e| e.into_inner()) = Listed { at: Instant::now(), set };
        hit
    }

    /// [`is_local`](Self::is_local) without listing the addresses again:
    /// `None` once the list is older than its TTL.
    pub fn is_local_cached(&self, ip: IpAddr) -> Option<bool> {
        let ip = unmap_ip(ip);
        if ip.is_loopback() {
            return Some(true);
        }
        let l = self.listed.read().unwrap_or_else(|e| e.into_inner());
        (l.at.elapsed() < self.ttl).then(|| l.set.contains(&ip))
    }
}

fn local_addrs() -> HashSet<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(v) => v.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            log::warn!("cannot list local addresses: {e}");
            HashSet::new()
        }
    }
}
