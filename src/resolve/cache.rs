//! A bounded, sharded map for the per-flow and per-inode caches: two
//! generations of plain hash maps per shard, an approximation of LRU
//! without a heap node (or links) per entry.
//!
//! # Eviction policy
//!
//! A cache asked for `capacity` entries in `shards` shards allows
//! `G = ⌈capacity / (2 · shards)⌉` (at least 1) entries per *generation*,
//! and its [`capacity`](ShardedCache::capacity) is `2 · G · shards`. A key
//! belongs to one shard by its hash; each shard is behind its own `Mutex`,
//! locked for one map operation only (never across I/O), and holds two hash
//! maps with disjoint keys, the *young* and the *old* generation:
//!
//! * [`get`](ShardedCache::get) answers a key in young from there, and
//!   moves a key found in old into young (a use);
//! * [`insert`](ShardedCache::insert) puts the entry into young (an entry
//!   of the same key in old is dropped: a replacement, not an eviction);
//! * before an entry is added to a young generation that already holds G
//!   entries, the shard *rotates*: old's entries are dropped and counted as
//!   evictions, the emptied old map becomes young and young becomes old;
//! * [`insert_sweeping`](ShardedCache::insert_sweeping) with `max_idle`
//!   first rotates when the young generation began `max_idle` or more ago;
//!   the entries then dropped from old were unused all that time and are
//!   counted as expirations (not evictions);
//! * [`remove`](ShardedCache::remove) drops a key from either generation.
//!
//! So a shard never holds more than 2·G entries. Young holds the keys used
//! (inserted or found) since the shard's last rotation, old those used in
//! the generation before and not since; therefore the G most recently used
//! keys of a shard are always present unless removed or expired. An entry
//! is evicted only after G other keys of its shard were used since its own
//! last use, and expired only after `max_idle` unused; once unused that
//! long it goes at the second rotation after its last use, so with inserts
//! still arriving in its shard about 2 · `max_idle` after that use at the
//! latest. (Bounds are per shard: the hash spreads keys over shards evenly
//! but not exactly.) When no inserts arrive at all nothing is dropped, as
//! there is nothing to make room for.
//!
//! # Memory
//!
//! Entries are stored inline in the maps' tables: about `size_of::<(K,
//! V)>() + 1` bytes per slot. A map starts empty and grows with its
//! generation (std's `HashMap` doubles its power-of-two table when 7/8
//! full) and keeps its table when emptied by a rotation, so a cache that
//! has been full costs `2 · shards` tables sized for G entries: least per
//! entry when G is 7/8 of a power of two (3,584 = 7/8 × 4,096, as the
//! default flow cache has), up to twice that just above one. A rotation by
//! age (traffic has calmed) shrinks the emptied map to what the last
//! generation held, so memory follows the live set back down after a
//! burst. Removals from young would leave tombstones that make its table
//! grow past G's size; when they have used up its free slots, the map is
//! rebuilt at its size instead.

use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Hit/miss/eviction counters of one cache.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries dropped to make room (the old generation at a rotation).
    pub evictions: AtomicU64,
    /// Entries found but refused by re-validation (socket or process gone).
    pub invalidations: AtomicU64,
    /// Entries dropped on insertion for being unused for `max_idle`.
    pub expirations: AtomicU64,
}

impl CacheCounters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One shard: two generations with disjoint keys.
struct Shard<K, V> {
    young: HashMap<K, V, RandomState>,
    old: HashMap<K, V, RandomState>,
    /// When the young generation began (the last rotation).
    since: Instant,
    /// An entry was removed from young since it began: its table may hold
    /// tombstones.
    holes: bool,
}

impl<K: Hash + Eq, V> Shard<K, V> {
    fn new(generation: usize) -> Self {
        // Each map hashes with its own seed, unrelated to the shard choice.
        Shard {
            young: HashMap::with_capacity_and_hasher(generation, RandomState::default()),
            old: HashMap::with_capacity_and_hasher(generation, RandomState::default()),
            since: Instant::now(),
            holes: false,
        }
    }

    /// Drop the old generation (counting its entries into `dropped`) and
    /// start a new young one in its map.
    fn rotate(&mut self, dropped: &AtomicU64) {
        dropped.fetch_add(self.old.len() as u64, Ordering::Relaxed);
        self.old.clear();
        std::mem::swap(&mut self.young, &mut self.old);
        self.since = Instant::now();
        self.holes = false;
    }

    /// Add a key that neither generation holds to young, rotating first
    /// when young is full.
    fn add(&mut self, k: K, v: V, generation: usize, c: &CacheCounters) {
        if self.young.len() >= generation {
            self.rotate(&c.evictions);
        } else if self.holes && self.young.len() >= self.young.capacity() {
            // No free slot left, because of tombstones: inserting would
            // double the table. Rebuild it at its size instead.
            let mut fresh = HashMap::with_capacity_and_hasher(self.young.len() + 1, self.young.hasher().clone());
            fresh.extend(self.young.drain());
            self.young = fresh;
            self.holes = false;
        }
        self.young.insert(k, v);
    }
}

/// A bounded map: at most [`capacity`](Self::capacity) entries in all,
/// split over shards; see the [module documentation](self) for what it
/// keeps and drops.
pub struct ShardedCache<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    /// G: most entries per generation per shard.
    generation: usize,
    hasher: RandomState,
}

impl<K: Hash + Eq, V: Clone> ShardedCache<K, V> {
    /// A cache of at least `capacity` entries (at least two per shard) in
    /// `shards` shards (at least one).
    pub fn new(capacity: usize, shards: usize) -> Self {
        let shards = shards.max(1);
        let generation = capacity.div_ceil(2 * shards).max(1);
        ShardedCache {
            shards: (0..shards).map(|_| Mutex::new(Shard::new(generation))).collect(),
            generation,
            hasher: RandomState::default(),
        }
    }

    fn shard(&self, k: &K) -> MutexGuard<'_, Shard<K, V>> {
        let i = (self.hasher.hash_one(k) as usize) % self.shards.len();
        // A poisoned shard only means another thread panicked mid-operation
        // on plain maps; their content is still a valid cache.
        #[allow(clippy::indexing_slicing)] // i < shards.len() by the modulo; shards is never empty (new() makes >= 1)
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value, marking it used; counts a hit or a miss.
    pub fn get(&self, k: &K, c: &CacheCounters) -> Option<V> {
        let mut s = self.shard(k);
        let v = match s.young.get(k) {
            Some(v) => Some(v.clone()),
            None => s.old.remove_entry(k).map(|(k, v)| {
                let out = v.clone();
                s.add(k, v, self.generation, c);
                out
            }),
        };
        CacheCounters::bump(if v.is_some() { &c.hits } else { &c.misses });
        v
    }

    /// Insert or replace; counts the evictions a rotation makes.
    pub fn insert(&self, k: K, v: V, c: &CacheCounters) {
        self.insert_inner(k, v, c, None);
    }

    /// Insert like [`insert`](Self::insert), rotating first (and counting
    /// the old generation's entries as expirations) when the young
    /// generation began `max_idle` or more ago, so entries of flows and
    /// sockets long gone do not linger until capacity pushes them out.
    pub fn insert_sweeping(&self, k: K, v: V, c: &CacheCounters, max_idle: Duration) {
        self.insert_inner(k, v, c, Some(max_idle));
    }

    fn insert_inner(&self, k: K, v: V, c: &CacheCounters, max_idle: Option<Duration>) {
        let mut s = self.shard(&k);
        if max_idle.is_some_and(|m| s.since.elapsed() >= m) {
            s.rotate(&c.expirations);
            // Size the new young map for what the last generation held.
            let last = s.old.len();
            s.young.shrink_to(last);
        }
        if let Some(slot) = s.young.get_mut(&k) {
            *slot = v;
            return;
        }
        s.old.remove(&k);
        s.add(k, v, self.generation, c);
    }

    /// Remove an entry (after it failed re-validation).
    pub fn remove(&self, k: &K) -> Option<V> {
        let mut s = self.shard(k);
        match s.young.remove(k) {
            Some(v) => {
                s.holes = true;
                Some(v)
            }
            None => s.old.remove(k),
        }
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.young.len() + s.old.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries this cache will hold.
    pub fn capacity(&self) -> usize {
        2 * self.generation * self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    const FOREVER: Duration = Duration::from_secs(3600);

    #[test]
    fn bounded_and_counts_evictions() {
        let c = CacheCounters::default();
        let m: ShardedCache<u32, u32> = ShardedCache::new(64, 4);
        assert_eq!(m.capacity(), 64);
        for i in 0..1000 {
            m.insert(i, i * 2, &c);
            assert!(m.len() <= 64, "{} entries after {i}", m.len());
        }
        // Every entry inserted is held or was counted out.
        let counted = |m: &ShardedCache<u32, u32>| m.len() as u64 + c.evictions.load(Relaxed);
        assert_eq!(counted(&m), 1000);
        // Each shard holds its last 8 keys at least: half the capacity.
        assert!(m.len() >= 32, "{}", m.len());
        // Replacing a key of the young generation moves nothing.
        let (len, evicted) = (m.len(), c.evictions.load(Relaxed));
        for k in keys(&m, true) {
            m.insert(k, 7, &c);
        }
        assert_eq!((m.len(), c.evictions.load(Relaxed)), (len, evicted));
        // Replacing one of the old generation adds no entry either (what a
        // rotation drops to make room in young is counted); re-inserting
        // one dropped meanwhile adds one.
        for k in keys(&m, false) {
            let (before, was_held) = (counted(&m), keys(&m, true).contains(&k) || keys(&m, false).contains(&k));
            m.insert(k, 7, &c);
            assert_eq!(counted(&m), before + u64::from(!was_held));
            assert!(m.len() <= 64);
            assert_eq!(m.get(&k, &c), Some(7));
        }
        let now = [keys(&m, true), keys(&m, false)].concat();
        assert_eq!(now.len(), m.len());
        assert_eq!(m.remove(&now[0]), Some(7));
        assert_eq!(m.get(&now[0], &c), None);
        assert_eq!(m.len(), now.len() - 1);
    }

    /// The keys of the young or the old generations, without using them.
    fn keys<V>(m: &ShardedCache<u32, V>, young: bool) -> Vec<u32> {
        let mut v = Vec::new();
        for s in m.shards.iter() {
            let s = s.lock().unwrap();
            assert!(s.young.keys().all(|k| !s.old.contains_key(k)), "generations share a key");
            v.extend(if young { s.young.keys() } else { s.old.keys() });
        }
        v
    }

    #[test]
    fn recently_used_survive_the_bound() {
        // One shard, G = 4: never more than 8 entries, and the 4 most
        // recently used keys (inserted, or found by get) always present.
        let c = CacheCounters::default();
        let m: ShardedCache<u32, u32> = ShardedCache::new(8, 1);
        assert_eq!(m.capacity(), 8);
        let mut used: Vec<u32> = Vec::new(); // least recently used first
        let note = |used: &mut Vec<u32>, k: u32| {
            used.retain(|&u| u != k);
            used.push(k);
        };
        let mut x = 12345u32;
        for step in 0..5000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let k = (x >> 16) % 24;
            if x & 1 == 0 {
                m.insert(k, k, &c);
                note(&mut used, k);
            } else if m.get(&k, &c).is_some() {
                note(&mut used, k);
            }
            assert!(m.len() <= 8, "{} entries at step {step}", m.len());
            // Getting them oldest first keeps their order of recency.
            let last4: Vec<u32> = used.iter().rev().take(4).rev().copied().collect();
            for k in last4 {
                assert_eq!(m.get(&k, &c), Some(k), "key {k} lost at step {step}");
                note(&mut used, k);
            }
        }
        assert!(c.evictions.load(Relaxed) > 100, "{:?}", c);
    }

    #[test]
    fn generations_rotate_as_documented() {
        let c = CacheCounters::default();
        let m: ShardedCache<u32, &str> = ShardedCache::new(4, 1); // G = 2
        m.insert(1, "a", &c);
        m.insert(2, "b", &c); // young {1, 2}
        m.insert(3, "c", &c); // rotate: young {3}, old {1, 2}
        assert_eq!(c.evictions.load(Relaxed), 0);
        assert_eq!(m.get(&1, &c), Some("a")); // promoted: young {3, 1}, old {2}
        m.insert(4, "d", &c); // rotate: old {2} evicted; young {4}, old {3, 1}
        assert_eq!(c.evictions.load(Relaxed), 1);
        assert_eq!(m.get(&2, &c), None);
        assert_eq!((m.get(&1, &c), m.get(&3, &c), m.get(&4, &c)), (Some("a"), Some("c"), Some("d")));
        assert_eq!(m.len(), 3);
        assert_eq!((c.hits.load(Relaxed), c.misses.load(Relaxed)), (4, 1));
        // get 3 found young {4, 1} full: a rotation with an empty old
        // (3 had left it), young {3}; get 4 then moved 4 back: old {1}.
        assert_eq!(c.evictions.load(Relaxed), 1);
        assert_eq!(m.remove(&1), Some("a"));
        assert_eq!(m.remove(&1), None);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn idle_entries_expire_on_sweeping_insert() {
        let c = CacheCounters::default();
        let m: ShardedCache<u32, u32> = ShardedCache::new(1000, 1);
        for i in 0..10 {
            m.insert(i, i, &c);
        }
        // Within max_idle nothing goes.
        m.insert_sweeping(100, 100, &c, FOREVER);
        assert_eq!((m.len(), c.expirations.load(Relaxed)), (11, 0));
        std::thread::sleep(Duration::from_millis(30));
        // The first age rotation makes everything old, the second drops
        // what was not used in between (all but 5).
        m.insert_sweeping(101, 101, &c, Duration::from_millis(20));
        assert_eq!(c.expirations.load(Relaxed), 0);
        assert_eq!(m.get(&5, &c), Some(5));
        std::thread::sleep(Duration::from_millis(30));
        m.insert_sweeping(102, 102, &c, Duration::from_millis(20));
        assert_eq!(c.expirations.load(Relaxed), 10, "0..10 but 5, and 100");
        let mut left: Vec<u32> = (0..200).filter(|k| m.get(k, &CacheCounters::default()).is_some()).collect();
        left.sort_unstable();
        assert_eq!(left, [5, 101, 102]);
        assert_eq!(c.evictions.load(Relaxed), 0);
    }

    #[test]
    fn removals_do_not_grow_the_table() {
        // A young generation churned by removals keeps its table size.
        let c = CacheCounters::default();
        let m: ShardedCache<u32, u32> = ShardedCache::new(2 * 448, 1); // G = 448: a 512-slot table
        for i in 0..448 {
            m.insert(i, i, &c);
        }
        let cap = m.shards.first().map(|s| s.lock().unwrap().young.capacity()).unwrap();
        assert_eq!(cap, 448);
        for i in 448..20_000 {
            m.remove(&(i - 1));
            m.insert(i, i, &c);
            let s = m.shards.first().unwrap().lock().unwrap();
            assert!(s.young.capacity() <= 448, "table grew: {}", s.young.capacity());
        }
        assert_eq!(c.evictions.load(Relaxed), 0);
    }

    #[test]
    fn shared_between_threads() {
        let c = CacheCounters::default();
        let m: ShardedCache<u64, u64> = ShardedCache::new(128, 8);
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
        assert_eq!(m.len() as u64 + c.evictions.load(Relaxed), 8000);
    }
}
