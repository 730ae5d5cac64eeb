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
//! about twice its live entries.
//!
//! `max_keys` bounds the entries of all shards together (one atomic count,
//! so a shard that happens to hold more keys than its neighbours loses
//! nothing while the table has room). An insert that takes the table past
//! it forces one entry out, the one with the lowest
//! [`Expiring::eviction_rank`]: the one whose loss costs least. The choice
//! is global, so it takes a pass over every shard; one pass drops every
//! expired entry and keeps the lowest-ranked eighth of the bound as the next
//! victims, so a table full of active keys costs O(1) entries looked at per
//! insert, amortised. A victim whose rank changed since the pass (it was
//! used, or someone waits on it) is skipped. The pass runs after the
//! inserting shard is unlocked, with no shard lock held across shards.

use std::cmp::Reverse;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;

/// Below this many entries a shard does not bother sweeping.
const MIN_SWEEP: usize = 32;

/// A forced pass keeps `max_keys / VICTIM_BATCH` victims for the inserts
/// that follow.
const VICTIM_BATCH: usize = 8;

/// The cost of forgetting an entry, compared lowest first: whether it holds
/// something a server asked for (a pause in force), then the time at which
/// it would have expired anyway.
pub(crate) type Rank = (bool, u64);

/// A value that can tell when it is safe to forget.
pub(crate) trait Expiring {
    /// Forgetting this value at `now` changes no decision.
    fn expired(&self, now: u64) -> bool;
    /// The order of forced eviction at `now`, lowest first; `None` pins the
    /// entry (someone is waiting on it).
    fn eviction_rank(&self, now: u64) -> Option<Rank>;
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

/// An entry picked by a forced pass, found again by its hash and rank.
#[derive(Clone, Copy, Debug)]
struct Victim {
    rank: Rank,
    hash: u64,
}

#[derive(Debug)]
pub(crate) struct Table<K, V, S> {
    shards: Box<[Slot<K, V>]>,
    /// `64 - log2(shards)`; the shard index comes from the hash bits just
    /// below hashbrown's 7-bit control tag.
    shift: u32,
    hasher: S,
    max_keys: usize,
    len: AtomicUsize,
    expired: AtomicU64,
    forced: AtomicU64,
    /// The next entries to force out, lowest rank last. Lock order: this,
    /// then one shard at a time.
    victims: Mutex<Vec<Victim>>,
}

impl<K, V, S> Table<K, V, S> {
    #[inline]
    fn slot(&self, hash: u64) -> &Slot<K, V> {
        let i = if self.shift == 64 {
            0
        } else {
            ((hash << 7) >> self.shift) as usize
        };
        &self.shards[i]
    }
}

impl<K: Hash + Eq, V: Expiring, S: BuildHasher> Table<K, V, S> {
    /// `shards` must be a power of two no larger than `max_keys`.
    pub(crate) fn new(max_keys: usize, shards: usize, hasher: S) -> Self {
        debug_assert!(shards.is_power_of_two() && shards <= max_keys);
        Self {
            shards: (0..shards)
                .map(|_| Slot {
                    lock: Mutex::new(Shard {
                        table: HashTable::new(),
                        sweep_at: MIN_SWEEP,
                    }),
                    counted: AtomicU64::new(0),
                })
                .collect(),
            shift: 64 - shards.trailing_zeros(),
            hasher,
            max_keys,
            len: AtomicUsize::new(0),
            expired: AtomicU64::new(0),
            forced: AtomicU64::new(0),
            victims: Mutex::new(Vec::new()),
        }
    }

    #[inline]
    pub(crate) fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub(crate) fn lock(&self, hash: u64) -> Locked<'_, K, V, S> {
        let slot = self.slot(hash);
        // Nothing panics under the lock; a poisoned shard is still consistent.
        let guard = slot.lock.lock().unwrap_or_else(PoisonError::into_inner);
        Locked {
            table: self,
            counted: &slot.counted,
            guard: Some(guard),
            owed: None,
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
            sweep(self, &mut guard, now, |_| {});
        }
    }
}

impl<K, V: Expiring, S> Table<K, V, S> {
    /// Forces entries out until the table is back within `max_keys`, never
    /// the one of hash `keep` (just inserted). Called with no shard locked.
    fn make_room(&self, keep: u64, now: u64) {
        let mut victims = self.victims.lock().unwrap_or_else(PoisonError::into_inner);
        let mut passes = 0;
        while self.len.load(Ordering::Relaxed) > self.max_keys {
            let Some(victim) = victims.pop() else {
                // One pass per call: if its victims went stale under
                // contention, the next insert past the bound tries again.
                if passes == 1 || !self.collect_victims(&mut victims, keep, now) {
                    // Everything left is pinned by waiters, who bound it.
                    return;
                }
                passes += 1;
                continue;
            };
            if victim.hash == keep {
                continue;
            }
            let mut shard = self
                .slot(victim.hash)
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Ok(entry) = shard.table.find_entry(victim.hash, |e| {
                e.hash == victim.hash && e.value.eviction_rank(now) == Some(victim.rank)
            }) {
                entry.remove();
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.forced.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One pass over every shard: drops the expired entries and keeps the
    /// lowest-ranked of the others (an eighth of the bound) as victims.
    /// Returns whether there are any.
    fn collect_victims(&self, victims: &mut Vec<Victim>, keep: u64, now: u64) -> bool {
        victims.clear();
        for slot in &self.shards {
            let mut shard = slot.lock.lock().unwrap_or_else(PoisonError::into_inner);
            sweep(self, &mut shard, now, |e| {
                if let Some(rank) = e.value.eviction_rank(now)
                    && e.hash != keep
                {
                    victims.push(Victim { rank, hash: e.hash });
                }
            });
        }
        let batch = (self.max_keys / VICTIM_BATCH).max(1);
        if victims.len() > batch {
            victims.select_nth_unstable_by_key(batch - 1, |v| v.rank);
            victims.truncate(batch);
            victims.shrink_to(batch);
        }
        // Highest first: `pop` takes the lowest.
        victims.sort_unstable_by_key(|v| Reverse(v.rank));
        !victims.is_empty()
    }
}

/// One locked shard. An insert past `max_keys` makes room when it is
/// dropped, after the shard is unlocked.
pub(crate) struct Locked<'a, K, V: Expiring, S> {
    table: &'a Table<K, V, S>,
    counted: &'a AtomicU64,
    /// `Some` until dropped.
    guard: Option<MutexGuard<'a, Shard<K, V>>>,
    /// The hash just inserted past the bound, and the time.
    owed: Option<(u64, u64)>,
}

impl<K, V: Expiring, S> Drop for Locked<'_, K, V, S> {
    fn drop(&mut self) {
        if let Some((keep, now)) = self.owed.take() {
            drop(self.guard.take());
            self.table.make_room(keep, now);
        }
    }
}

impl<K: Hash + Eq, V: Expiring, S: BuildHasher> Locked<'_, K, V, S> {
    #[inline]
    fn shard(&mut self) -> &mut Shard<K, V> {
        self.guard
            .as_deref_mut()
            .expect("a shard stays locked until its guard drops")
    }

    /// Counts one event (an admission) in this shard's counter.
    #[inline]
    pub(crate) fn count(&self) {
        // Only the lock holder writes: load + store cannot lose an update.
        let n = self.counted.load(Ordering::Relaxed);
        self.counted.store(n + 1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn find(&mut self, hash: u64, key: &K) -> Option<&mut V> {
        self.shard()
            .table
            .find_mut(hash, |e| e.hash == hash && e.key == *key)
            .map(|e| &mut e.value)
    }

    /// Inserts a key known to be absent, evicting as described in the
    /// module docs.
    pub(crate) fn insert(&mut self, hash: u64, key: K, value: V, now: u64) {
        let table = self.table;
        let shard = self.shard();
        if shard.table.len() >= shard.sweep_at {
            sweep(table, shard, now, |_| {});
        }
        shard
            .table
            .insert_unique(hash, Entry { hash, key, value }, |e| e.hash);
        if table.len.fetch_add(1, Ordering::Relaxed) >= table.max_keys {
            self.owed = Some((hash, now));
        }
    }
}

/// Drops the expired entries of `shard`, shows each survivor to `survivor`,
/// and sets the next sweep threshold.
fn sweep<K, V: Expiring, S>(
    table: &Table<K, V, S>,
    shard: &mut Shard<K, V>,
    now: u64,
    mut survivor: impl FnMut(&Entry<K, V>),
) {
    let before = shard.table.len();
    shard.table.retain(|e| {
        let expired = e.value.expired(now);
        if !expired {
            survivor(e);
        }
        !expired
    });
    let live = shard.table.len();
    let dropped = before - live;
    table.len.fetch_sub(dropped, Ordering::Relaxed);
    table.expired.fetch_add(dropped as u64, Ordering::Relaxed);
    shard.sweep_at = (2 * live).max(MIN_SWEEP);
    // Give memory back after a spike of keys.
    let keep = 2 * live.max(MIN_SWEEP);
    if shard.table.capacity() > 2 * keep {
        shard.table.shrink_to(keep, |e| e.hash);
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
        fn eviction_rank(&self, _: u64) -> Option<Rank> {
            self.0.is_multiple_of(2).then_some((false, self.0))
        }
    }

    fn put(t: &Table<u64, Until, RandomState>, key: u64, until: u64, now: u64) {
        put_value(t, key, Until(until), now);
    }

    fn put_value<V: Expiring>(t: &Table<u64, V, RandomState>, key: u64, value: V, now: u64) {
        let h = t.hash(&key);
        let mut s = t.lock(h);
        if s.find(h, &key).is_none() {
            s.insert(h, key, value, now);
        }
    }

    thread_local! {
        static LOOKED_AT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Active until the stored time, never pinned; counts every time the
    /// table looks at it, the unit of a table's work.
    #[derive(Debug)]
    struct Counted(u64);
    impl Expiring for Counted {
        fn expired(&self, now: u64) -> bool {
            LOOKED_AT.with(|n| n.set(n.get() + 1));
            self.0 <= now
        }
        fn eviction_rank(&self, _: u64) -> Option<Rank> {
            LOOKED_AT.with(|n| n.set(n.get() + 1));
            Some((false, self.0))
        }
    }

    #[test]
    fn a_table_full_of_active_keys_inserts_in_amortised_constant_work() {
        let looked_at = || LOOKED_AT.with(std::cell::Cell::get);
        let t = Table::new(4096, 4, RandomState::new());
        for k in 0..4096 {
            put_value(&t, k, Counted(1_000_000 + k), 0);
        }
        let before = looked_at();
        for k in 4096..8192 {
            put_value(&t, k, Counted(1_000_000 + k), 1);
        }
        let per_insert = (looked_at() - before) / 4096;
        assert!(
            per_insert <= 32,
            "{per_insert} entries looked at per insert"
        );
        assert_eq!((t.len(), t.forced_evictions()), (4096, 4096));
    }

    #[test]
    fn max_keys_bounds_all_shards_together_not_each_one() {
        // 512 shards of a 1000-key table: a share per shard would be one key.
        let t = Table::new(1000, 512, RandomState::new());
        for k in 0..1000 {
            put(&t, k, 1_000 + 2 * k, 0);
        }
        assert_eq!((t.len(), t.forced_evictions()), (1000, 0));
        put(&t, 5_000, 9_000, 0);
        assert_eq!((t.len(), t.forced_evictions()), (1000, 1));
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
