//! The resolver's counters ([`ResolverStats`]): typed fields, relaxed
//! atomics, read as (event, value) pairs and as one Prometheus family.

use super::cache::CacheCounters;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the lead can print; all relaxed atomics.
#[derive(Debug, Default)]
pub struct ResolverStats {
    /// flow → socket cache.
    pub flow: CacheCounters,
    /// inode → owner cache (invalidations: the owner no longer holds the fd).
    pub owner: CacheCounters,
    /// Open `/proc/PID/fd/N` links used to re-validate holders
    /// (invalidations: links dropped as their fd closed or process exited).
    pub proc_link: CacheCounters,
    pub sock_diag_queries: AtomicU64,
    pub sock_diag_errors: AtomicU64,
    pub proc_scans: AtomicU64,
    /// Sockets seen by the last `/proc` scan.
    pub proc_scan_sockets: AtomicU64,
    /// New sockets whose holder was found among the processes that held the
    /// sockets found last ...
    pub owner_found_recent: AtomicU64,
    /// ... or among the processes born since the last full scan, so that no
    /// full scan was needed.
    pub owner_found_new_process: AtomicU64,
    pub peer_options: AtomicU64,
    pub bad_peer_options: AtomicU64,
    pub unknown_doi: AtomicU64,
    /// sock_diag lookups made inside another network namespace.
    pub netns_lookups: AtomicU64,
    /// Ends whose address two or more other namespaces have, and not
    /// exactly one of them a socket for the flow (`netns_ambiguous`).
    pub netns_ambiguous: AtomicU64,
}

impl ResolverStats {
    /// All counters as (name, value), for logs and the CLI.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("flow_hits", g(&self.flow.hits)),
            ("flow_misses", g(&self.flow.misses)),
            ("flow_evictions", g(&self.flow.evictions)),
            ("flow_invalidations", g(&self.flow.invalidations)),
            ("flow_expirations", g(&self.flow.expirations)),
            ("owner_hits", g(&self.owner.hits)),
            ("owner_misses", g(&self.owner.misses)),
            ("owner_evictions", g(&self.owner.evictions)),
            ("owner_invalidations", g(&self.owner.invalidations)),
            ("owner_expirations", g(&self.owner.expirations)),
            ("proc_link_hits", g(&self.proc_link.hits)),
            ("proc_link_misses", g(&self.proc_link.misses)),
            ("proc_link_evictions", g(&self.proc_link.evictions)),
            ("proc_link_invalidations", g(&self.proc_link.invalidations)),
            ("sock_diag_queries", g(&self.sock_diag_queries)),
            ("sock_diag_errors", g(&self.sock_diag_errors)),
            ("proc_scans", g(&self.proc_scans)),
            ("proc_scan_sockets", g(&self.proc_scan_sockets)),
            ("owner_found_recent", g(&self.owner_found_recent)),
            ("owner_found_new_process", g(&self.owner_found_new_process)),
            ("peer_options", g(&self.peer_options)),
            ("bad_peer_options", g(&self.bad_peer_options)),
            ("unknown_doi", g(&self.unknown_doi)),
            ("netns_lookups", g(&self.netns_lookups)),
            ("netns_ambiguous", g(&self.netns_ambiguous)),
        ]
    }

    /// The counters as one Prometheus counter family, by event.
    pub fn families(&self) -> Vec<crate::labels::MetricFamily> {
        let rows = self.snapshot().into_iter().map(|(k, v)| (format!("{{event=\"{k}\"}}"), v)).collect();
        vec![(
            "labelgate_resolver_events_total".to_string(),
            "Label resolution events: cache hits, misses, evictions, invalidations, lookups, /proc scans, peer options."
                .to_string(),
            rows,
        )]
    }
}

pub fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}
