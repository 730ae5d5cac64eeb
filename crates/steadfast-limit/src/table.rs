//! A small sharded hash table with bounded memory, shared by the keyed rate
//! limiter and the pacer.
//!
//! Each shard is a `hashbrown::HashTable` behind a `std::sync::Mutex`; the
//! key is hashed once, and the hash picks both the shard and the bucket.
//!
//! # Eviction
//!
//! Entries know when forgetting them changes nothing ([`Expiring::expired`]:
//! a GCRA key whose TAT is in the past, a pacing state whose signals have
//! run out). A shard sweeps such entries when an insert finds it at its
//! sweep threshold; the threshold then becomes twice what survived, so
//! sweeps cost O(1) amortised per insert and a shard never holds more than
//! about twice its live entries. Past `max_keys`, the insert also drops the
//! entry with the lowest [`Expiring::eviction_rank`]: the one closest to
//! expiring, so the least state is lost.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;

/// Below this many entries a shard does not bother sweeping.
const MIN_SWEEP: usize = 32;

/// A value that can tell when it is safe to forget.
pub(crate) trait Expiring {
    /// Forgetting this value at `now` changes no decision.
    fn expired(&self, now: u64) -> bool;
    /// The order of forced eviction, lowest first; `None` pins the entry
    /// (someone is waiting on it).
    fn eviction_rank(&self) -> Option<u64>;
}

#[derive(Debug)]
pub(crate) struct Entry<K, V> {
    hash: u64,
    key: K,
    pub(crate) value: V,
}

#[derive(Debug)]
struct Shard<K, V> {
    table: HashTable<Entry<K, V>>,
    sweep_at: usize,
}

/// A shard on its own cache lines, so two threads on two shards do not
/// contend on one line, with a counter that only the lock holder writes:
/// a plain load and store on a line the lock already owns, no atomic add.
#[derive(Debug)]
#[repr(align(128))]
struct Slot<K, V> {
    lock: Mutex<Shard<K, V>>,
    counted: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Table<K, V, S> {
    shards: Box<[Slot<K, V>]>,
    /// `64 - log2(shards)`; the shard index comes from the hash bits just
    /// below hashbrown's 7-bit control tag.
    shift: u32,
    hasher: S,
    per_shard: usize,
    len: AtomicUsize,
    expired: AtomicU64,
    forced: AtomicU64,
}

impl<K: Hash + Eq, V: Expiring, S: BuildHasher> Table<K, V, S> {
    /// `shards` must be a power of two no larger than `max_keys`.
    pub(crate) fn new(max_keys: usize, shards: usize, hasher: S) -> Self {
        debug_assert!(shards.is_power_of_two() && shards <= max_keys);
        let per_shard = max_keys / shards;
        Self {
            shards: (0..shards)
                .map(|_| Slot {
                    lock: Mutex::new(Shard {
                        table: HashTable::new(),
                        sweep_at: MIN_SWEEP.min(per_shard),
                    }),
                    counted: AtomicU64::new(0),
                })
                .collect(),
            shift: 64 - shards.trailing_zeros(),
            hasher,
            per_shard,
            len: AtomicUsize::new(0),
            expired: AtomicU64::new(0),
            forced: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub(crate) fn lock(&self, hash: u64) -> Locked<'_, K, V, S> {
        let i = if self.shift == 64 {
            0
        } else {
            ((hash << 7) >> self.shift) as usize
        };
        let slot = &self.shards[i];
        // Nothing panics under the lock; a poisoned shard is still consistent.
        let guard = slot.lock.lock().unwrap_or_else(PoisonError::into_inner);
        Locked {
            table: self,
            counted: &slot.counted,
            guard,
        }
    }

    /// The sum of [`Locked::count`] over all shards.
    pub(crate) fn counted(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.counted.load(Ordering::Relaxed))
            .sum()
    }

    /// Entries stored now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Entries dropped because they had expired.
    pub(crate) fn expired_evictions(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Entries dropped before expiring, to stay within `max_keys`.
    pub(crate) fn forced_evictions(&self) -> u64 {
        self.forced.load(Ordering::Relaxed)
    }

    /// The capacity all shards have allocated (entries), for memory tests.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock.lock().unwrap().table.capacity())
            .sum()
    }

    /// Sweeps every shard now, dropping expired entries and freeing memory.
    pub(crate) fn sweep_all(&self, now: u64) {
        for s in &self.shards {
            let mut guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            sweep(self, &mut guard, now);
        }
    }
}

/// One locked shard.
pub(crate) struct Locked<'a, K, V, S> {
    table: &'a Table<K, V, S>,
    counted: &'a AtomicU64,
    guard: MutexGuard<'a, Shard<K, V>>,
}

impl<K: Hash + Eq, V: Expiring, S: BuildHasher> Locked<'_, K, V, S> {
    /// Counts one event (an admission) in this shard's counter.
    #[inline]
    pub(crate) fn count(&self) {
        // Only the lock holder writes: load + store cannot lose an update.
        let n = self.counted.load(Ordering::Relaxed);
        self.counted.store(n + 1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn find(&mut self, hash: u64, key: &K) -> Option<&mut V> {
        self.guard
            .table
            .find_mut(hash, |e| e.hash == hash && e.key == *key)
            .map(|e| &mut e.value)
    }

    /// Inserts a key known to be absent, evicting as described in the
    /// module docs.
    pub(crate) fn insert(&mut self, hash: u64, key: K, value: V, now: u64) -> &mut V {
        let shard = &mut *self.guard;
        if shard.table.len() >= shard.sweep_at {
            sweep(self.table, shard, now);
            if shard.table.len() >= self.table.per_shard {
                force_evict(self.table, shard);
            }
        }
        self.table.len.fetch_add(1, Ordering::Relaxed);
        &mut shard
            .table
            .insert_unique(hash, Entry { hash, key, value }, |e| e.hash)
            .into_mut()
            .value
    }
}

fn sweep<K, V: Expiring, S>(table: &Table<K, V, S>, shard: &mut Shard<K, V>, now: u64) {
    let before = shard.table.len();
    shard.table.retain(|e| !e.value.expired(now));
    let live = shard.table.len();
    let dropped = before - live;
    table.len.fetch_sub(dropped, Ordering::Relaxed);
    table.expired.fetch_add(dropped as u64, Ordering::Relaxed);
    let floor = MIN_SWEEP.min(table.per_shard);
    shard.sweep_at = (2 * live).clamp(floor, table.per_shard.max(floor));
    // Give memory back after a spike of keys.
    let keep = 2 * live.max(MIN_SWEEP);
    if shard.table.capacity() > 2 * keep {
        shard.table.shrink_to(keep, |e| e.hash);
    }
}

fn force_evict<K, V: Expiring, S>(table: &Table<K, V, S>, shard: &mut Shard<K, V>) {
    let victim = shard
        .table
        .iter()
        .filter_map(|e| e.value.eviction_rank().map(|r| (r, e.hash)))
        .min();
    // If every entry has waiters, the shard grows past its share: the
    // waiting tasks themselves bound it.
    if let Some((rank, hash)) = victim
        && let Ok(entry) = shard.table.find_entry(hash, |e| {
            e.hash == hash && e.value.eviction_rank() == Some(rank)
        })
    {
        entry.remove();
        table.len.fetch_sub(1, Ordering::Relaxed);
        table.forced.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;

    use super::*;

    /// Expires at the stored time; pinned when odd.
    #[derive(Debug)]
    struct Until(u64);
    impl Expiring for Until {
        fn expired(&self, now: u64) -> bool {
            self.0 <= now
        }
        fn eviction_rank(&self) -> Option<u64> {
            self.0.is_multiple_of(2).then_some(self.0)
        }
    }

    fn put(t: &Table<u64, Until, RandomState>, key: u64, until: u64, now: u64) {
        let h = t.hash(&key);
        let mut s = t.lock(h);
        if s.find(h, &key).is_none() {
            s.insert(h, key, Until(until), now);
        }
    }

    #[test]
    fn expired_entries_are_swept_and_memory_stays_flat() {
        let t = Table::new(1 << 20, 4, RandomState::new());
        // 200k keys over time, each live for 100 ticks: never more than a
        // small multiple of the ~100 live ones.
        for i in 0..200_000u64 {
            put(&t, i, i + 100, i);
            assert!(
                t.len() <= 4 * (2 * 100 + MIN_SWEEP),
                "len {} at {i}",
                t.len()
            );
        }
        assert!(
            t.allocated() <= 4 * 4 * (2 * 100 + MIN_SWEEP),
            "{}",
            t.allocated()
        );
        t.sweep_all(u64::MAX);
        assert_eq!(t.len(), 0);
        assert!(t.expired_evictions() >= 200_000 - 1);
    }

    #[test]
    fn max_keys_is_a_hard_bound_and_evicts_the_lowest_rank() {
        let t = Table::new(64, 1, RandomState::new());
        for k in 0..64 {
            put(&t, k, 1_000 + 2 * k, 0);
        }
        assert_eq!(t.len(), 64);
        put(&t, 999, 5_000, 0);
        assert_eq!((t.len(), t.forced_evictions()), (64, 1));
        // Key 0 had the lowest rank.
        let h = t.hash(&0);
        assert!(t.lock(h).find(h, &0).is_none());
        let h = t.hash(&1);
        assert!(t.lock(h).find(h, &1).is_some());
    }

    #[test]
    fn pinned_entries_are_never_forced_out() {
        let t = Table::new(4, 1, RandomState::new());
        for k in 0..4 {
            put(&t, k, 1_001 + 2 * k, 0); // odd: pinned
        }
        put(&t, 10, 2_000, 0);
        assert_eq!((t.len(), t.forced_evictions()), (5, 0));
    }
}
