//! A bounded, sharded LRU map for the per-flow and per-inode caches.
//!
//! Each shard is an [`lru::LruCache`] behind its own `Mutex`; a lookup locks
//! one shard for a hash-map operation only, never across I/O. Hits, misses
//! and evictions are counted into the [`CacheCounters`] given at creation.

use foldhash::fast::RandomState;
use lru::LruCache;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Hit/miss/eviction counters of one cache.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    /// Entries found but refused by re-validation (socket or process gone).
    pub invalidations: AtomicU64,
    /// Stale entries swept out on insertion.
    pub expirations: AtomicU64,
}

impl CacheCounters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A bounded map: at most `capacity` entries in all, split over shards.
///
/// Each shard's map starts small and grows with its live entries (the `lru`
/// crate's bounded constructor would allocate the whole capacity up front,
/// and resident memory would then creep up for a long time as the table's
/// pages were first touched); the bound is enforced on insertion.
pub struct ShardedLru<K, V> {
    shards: Box<[Mutex<LruCache<K, V, RandomState>>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl<K: Hash + Eq, V: Clone> ShardedLru<K, V> {
    /// A cache of at most `capacity` entries (at least one per shard) in
    /// `shards` shards (at least one).
    pub fn new(capacity: usize, shards: usize) -> Self {
        let shards = shards.max(1);
        let per_shard = capacity.div_ceil(shards).max(1);
        ShardedLru {
            shards: (0..shards).map(|_| Mutex::new(LruCache::unbounded_with_hasher(RandomState::default()))).collect(),
            per_shard,
            hasher: RandomState::default(),
        }
    }

    fn shard(&self, k: &K) -> MutexGuard<'_, LruCache<K, V, RandomState>> {
        let i = (self.hasher.hash_one(k) as usize) % self.shards.len();
        // A poisoned shard only means another thread panicked mid-operation
        // on a plain map; its content is still a valid cache.
        #[allow(clippy::indexing_slicing)] // i < shards.len() by the modulo; shards is never empty (new() makes >= 1)
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value, marking it recently used; counts a hit or a miss.
    pub fn get(&self, k: &K, c: &CacheCounters) -> Option<V> {
        let v = self.shard(k).get(k).cloned();
        CacheCounters::bump(if v.is_some() { &c.hits } else { &c.misses });
        v
    }

    /// Insert or replace; counts an eviction when another entry had to go.
    pub fn insert(&self, k: K, v: V, c: &CacheCounters) {
        // `push` also returns the old value of the same key: not an eviction.
        self.insert_inner(k, v, c, None);
    }

    /// Insert like [`insert`](Self::insert), then drop up to 8 of the shard's
    /// least recently used entries for which `stale` holds, so entries of
    /// flows and sockets long gone do not linger until capacity pushes them
    /// out (memory stays proportional to the live set).
    pub fn insert_sweeping(&self, k: K, v: V, c: &CacheCounters, stale: impl Fn(&V) -> bool) {
        self.insert_inner(k, v, c, Some(&stale));
    }

    fn insert_inner(&self, k: K, v: V, c: &CacheCounters, stale: Option<&dyn Fn(&V) -> bool>) {
        let mut s = self.shard(&k);
        // Unbounded shards: `push` only ever returns the replaced value of
        // the same key, which is not an eviction.
        let _ = s.push(k, v);
        while s.len() > self.per_shard {
            s.pop_lru();
            CacheCounters::bump(&c.evictions);
        }
        if let Some(stale) = stale {
            for _ in 0..8 {
                match s.peek_lru() {
                    Some((_, v)) if stale(v) => {
                        s.pop_lru();
                        CacheCounters::bump(&c.expirations);
                    }
                    _ => break,
                }
            }
        }
    }

    /// Remove an entry (after it failed re-validation).
    pub fn remove(&self, k: &K) -> Option<V> {
        self.shard(k).pop(k)
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries this cache will hold.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn bounded_and_counts_evictions() {
        let c = CacheCounters::default();
        let m: ShardedLru<u32, u32> = ShardedLru::new(64, 4);
        assert_eq!(m.capacity(), 64);
        for i in 0..1000 {
            m.insert(i, i * 2, &c);
            assert!(m.len() <= 64);
        }
        assert_eq!(m.len(), 64);
        assert_eq!(c.evictions.load(Relaxed), 1000 - 64);
        // Stale entries at the LRU end are swept on insertion.
        let m2: ShardedLru<u32, u32> = ShardedLru::new(64, 1);
        for i in 0..10 {
            m2.insert(i, i, &c);
        }
        m2.insert_sweeping(100, 100, &c, |v| *v < 5);
        assert_eq!(m2.len(), 6, "0..5 swept, 5..10 and 100 kept");
        assert_eq!(c.expirations.load(Relaxed), 5);
        // Replacing an existing key is not an eviction.
        let before = c.evictions.load(Relaxed);
        let present = (0..1000).find(|i| m.get(i, &c).is_some()).unwrap();
        m.insert(present, 7, &c);
        assert_eq!(c.evictions.load(Relaxed), before);
        assert_eq!(m.get(&present, &c), Some(7));
    }

    #[test]
    fn least_recently_used_goes_first() {
        let c = CacheCounters::default();
        let m: ShardedLru<u32, &str> = ShardedLru::new(2, 1);
        m.insert(1, "a", &c);
        m.insert(2, "b", &c);
        assert_eq!(m.get(&1, &c), Some("a")); // 2 is now the oldest
        m.insert(3, "c", &c);
        assert_eq!(m.get(&2, &c), None);
        assert_eq!(m.get(&1, &c), Some("a"));
        assert_eq!(m.get(&3, &c), Some("c"));
        assert_eq!(c.hits.load(Relaxed), 3);
        assert_eq!(c.misses.load(Relaxed), 1);
        assert_eq!(c.evictions.load(Relaxed), 1);
        assert_eq!(m.remove(&1), Some("a"));
        assert_eq!(m.get(&1, &c), None);
    }

    #[test]
    fn shared_between_threads() {
        let c = CacheCounters::default();
        let m: ShardedLru<u64, u64> = ShardedLru::new(128, 8);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (m, c) = (&m, &c);
                s.spawn(move || {
                    for i in 0..2000u64 {
                        m.insert(t * 10_000 + i, i, c);
                        let _ = m.get(&(t * 10_000 + i / 2), c);
                    }
                });
            }
        });
        assert!(m.len() <= m.capacity());
        assert_eq!(c.hits.load(Relaxed) + c.misses.load(Relaxed), 8000);
    }
}
