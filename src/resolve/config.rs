//! How the resolver is tuned ([`ResolverConfig`]): cache sizes, TTLs, where
//! procfs is.

use std::path::PathBuf;
use std::time::Duration;

/// Tuning of the resolver's caches.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Most flows remembered (flow → socket); rounded up to a multiple of
    /// 2 × `shards`. A table slot takes 65 bytes; a full cache costs about
    /// 75 bytes per entry when `flow_cache_size / (2 × shards)` is 7/8 of a
    /// power of two, as for the default (114,688 = 2 × 16 × 3,584: about
    /// 8.3 MiB), and up to twice that just above one (131,072: about 16.5
    /// MiB). See [`cache`](super::cache).
    pub flow_cache_size: usize,
    /// Most socket owners remembered (inode → pid, fd, label, process).
    pub owner_cache_size: usize,
    /// Shards per cache (lock striping).
    pub shards: usize,
    /// How long a flow → socket answer is trusted before sock_diag is asked again.
    pub flow_ttl: Duration,
    /// How long "no socket for this flow" is remembered.
    pub negative_ttl: Duration,
    /// How long the holder of a cached UDP socket is trusted without
    /// checking again (one read of `/proc/PID/fd/N`) that it still
    /// holds the socket. Zero (the default) checks every packet that was
    /// read from the queue after the last check (once per batch read); a
    /// few milliseconds saves most of the remaining cost at the price of that
    /// long a window in which a packet of a just-closed socket's reused
    /// 4-tuple could be attributed to the old socket. (TCP flows are not
    /// checked per packet: a TCP 4-tuple gets a new socket only through a
    /// new handshake, and a SYN is always looked up afresh.)
    pub owner_revalidate_after: Duration,
    /// How long the set of local addresses is trusted.
    pub local_addr_ttl: Duration,
    /// Where procfs is mounted.
    pub proc_root: PathBuf,
    /// Remember the flows of TCP SYNs (both ends). Flow mode turns this off:
    /// there the kernel decides every later packet of a connection by its
    /// connmark, so those entries would never be read, and writing them
    /// costs lookups in a large map per new connection. (A later packet
    /// that does come, say from a rule of the operator's own, is looked up
    /// with sock_diag: slower, never wrong.)
    pub cache_syn_flows: bool,
    /// Look sockets up in the other network namespaces too (containers:
    /// see `netns.rs`; `run --other-netns`); needs CAP_SYS_ADMIN, without
    /// which it is off with a warning.
    pub other_netns: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            flow_cache_size: 114_688,
            owner_cache_size: 16_384,
            shards: 16,
            flow_ttl: Duration::from_secs(5),
            negative_ttl: Duration::from_millis(500),
            owner_revalidate_after: Duration::ZERO,
            local_addr_ttl: Duration::from_secs(2),
            proc_root: PathBuf::from("/proc"),
            cache_syn_flows: true,
            other_netns: false,
        }
    }
}
