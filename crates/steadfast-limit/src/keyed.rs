//! [`KeyedRateLimiter`]: one GCRA per key (host, API key, tenant, ...) with
//! bounded memory.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use steadfast_core::Deadline;
use tokio::time::Instant;

use crate::config::ConfigError;
use crate::queue::{WaitQueue, wait_turn};
use crate::state::{Clock, Epoch, Gcra, NotUntil};
use crate::table::{Expiring, Rank, Table};
use crate::{Quota, names};

/// The default bound on keys held at once.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The most shards a keyed map may have.
pub const MAX_SHARDS: usize = 1024;

/// A rate limiter with a separate quota per key, and bounded memory.
///
/// Each key has its own GCRA state (a TAT of 8 bytes, plus a wait queue
/// while someone waits on that key). Keys live in a sharded hash map, one
/// `std::sync::Mutex` per shard, hashed once; under the shard lock the TAT
/// is a plain `u64` (an atomic would buy nothing there).
///
/// # Memory
///
/// A key whose TAT is in the past has a full bucket, which is exactly the
/// state of a key never seen: forgetting it changes no decision. So idle
/// keys are dropped *exactly*, with no approximation, by sweeps that run as
/// inserts fill a shard (amortised O(1), at most about twice the live keys
/// held), or at once with [`KeyedRateLimiter::sweep`]. A million distinct
/// keys over time take the memory of the keys active within one burst
/// window, not a million entries.
///
/// On top of that, [`KeyedRateLimiterBuilder::max_keys`] bounds the keys
/// held: if more keys are *active* at once, inserting one drops the key
/// closest to a full bucket (an approximation that may let that key burst
/// again early; counted in [`KeyedSnapshot::forced_evictions`]). Keys with
/// waiters are never dropped, so they (bounded by the waiting requests)
/// can go past it, and under contention an insert may leave a key or two
/// over it for the next insert to drop.
///
/// # Fairness
///
/// Waits on one key are FIFO and cancel-safe, like
/// [`RateLimiter::until_ready`](crate::RateLimiter::until_ready); waits on
/// different keys are independent.
///
/// ```
/// use std::num::NonZeroU32;
/// use steadfast_limit::{KeyedRateLimiter, Quota};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = KeyedRateLimiter::builder(Quota::per_second(NonZeroU32::new(1).unwrap()))
///     .max_keys(10_000)
///     .name("per-tenant")
///     .build()?;
/// assert!(limiter.check_key(&"alice").is_ok());
/// assert!(limiter.check_key(&"alice").is_err()); // alice used her second
/// assert!(limiter.check_key(&"bob").is_ok());    // bob has his own quota
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct KeyedRateLimiter<K, S = RandomState> {
    table: Table<K, KeyState, S>,
    gcra: Gcra,
    epoch: Epoch,
    quota: Quota,
    name: Arc<str>,
    max_keys: usize,
    refused: AtomicU64,
    queued: AtomicU64,
    wait_nanos: AtomicU64,
    deadline_refusals: AtomicU64,
}

#[derive(Debug)]
struct KeyState {
    tat: u64,
    /// Created on the first wait on this key; kept until the key is dropped.
    queue: Option<Arc<WaitQueue>>,
}

impl KeyState {
    fn waiting(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len())
    }
}

impl Expiring for KeyState {
    fn expired(&self, now: u64) -> bool {
        self.tat <= now && self.waiting() == 0
    }

    fn eviction_rank(&self, _now: u64) -> Option<Rank> {
        (self.waiting() == 0).then_some((false, self.tat))
    }
}

/// Builds a [`KeyedRateLimiter`].
#[derive(Debug)]
#[must_use]
pub struct KeyedRateLimiterBuilder<S = RandomState> {
    quota: Quota,
    max_keys: usize,
    shards: Option<usize>,
    hasher: S,
    name: Arc<str>,
    clock: Clock,
}

impl<S> KeyedRateLimiterBuilder<S> {
    /// Reads the time from `clock` (default [`Clock::Tokio`]).
    pub const fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The bound on keys held at once (default [`DEFAULT_MAX_KEYS`]); see
    /// the type's docs for the keys that may go past it.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The number of shards, a power of two up to [`MAX_SHARDS`] (default:
    /// four per CPU, rounded up to a power of two, at most `max_keys`).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Names the limiter in tracing events and snapshots.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Uses `hasher` for keys (default: std's `RandomState`, SipHash, which
    /// resists hash flooding by hostile keys).
    pub fn hasher<S2>(self, hasher: S2) -> KeyedRateLimiterBuilder<S2> {
        KeyedRateLimiterBuilder {
            quota: self.quota,
            max_keys: self.max_keys,
            shards: self.shards,
            hasher,
            name: self.name,
            clock: self.clock,
        }
    }

    /// Validates the settings and builds the limiter.
    pub fn build<K: Hash + Eq>(self) -> Result<KeyedRateLimiter<K, S>, ConfigError>
    where
        S: BuildHasher,
    {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        let shards = match self.shards {
            Some(n) if n == 0 || n > MAX_SHARDS || !n.is_power_of_two() => {
                return Err(ConfigError::new(
                    "shards",
                    "must be a power of two between 1 and 1024",
                ));
            }
            Some(n) if n > self.max_keys => {
                return Err(ConfigError::new("shards", "must not exceed max_keys"));
            }
            Some(n) => n,
            None => default_shards(self.max_keys),
        };
        Ok(KeyedRateLimiter {
            table: Table::new(self.max_keys, shards, self.hasher),
            gcra: Gcra::new(self.quota),
            epoch: Epoch::with_clock(self.clock),
            quota: self.quota,
            name: self.name,
            max_keys: self.max_keys,
            refused: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
            deadline_refusals: AtomicU64::new(0),
        })
    }
}

/// Four shards per CPU, a power of two, no more than `max_keys` allows.
pub(crate) fn default_shards(max_keys: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(4, usize::from);
    let wanted = (cpus * 4).next_power_of_two().min(MAX_SHARDS);
    // The largest power of two not above max_keys.
    let cap = 1usize << (usize::BITS - 1 - max_keys.leading_zeros());
    wanted.min(cap)
}

impl KeyedRateLimiter<(), RandomState> {
    /// Starts building a keyed limiter with `quota` for each key.
    pub fn builder(quota: Quota) -> KeyedRateLimiterBuilder {
        KeyedRateLimiterBuilder {
            quota,
            max_keys: DEFAULT_MAX_KEYS,
            shards: None,
            hasher: RandomState::new(),
            name: Arc::from(names::KEYED_RATE_LIMIT),
            clock: Clock::Tokio,
        }
    }
}

impl<K: Hash + Eq> KeyedRateLimiter<K, RandomState> {
    /// A keyed limiter with `quota` per key and the defaults
    /// ([`DEFAULT_MAX_KEYS`] keys).
    pub fn new(quota: Quota) -> Self {
        KeyedRateLimiter::builder(quota)
            .build()
            .expect("the default keyed settings are valid")
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher> KeyedRateLimiter<K, S> {
    /// The quota each key gets.
    pub const fn quota(&self) -> Quota {
        self.quota
    }

    /// The limiter's name (default `"keyed_rate_limit"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Nanoseconds from the epoch (the limiter's creation) to `at`, the unit
    /// of [`KeyedRateLimiter::check_key_at`].
    pub fn nanos_since_epoch(&self, at: Instant) -> u64 {
        self.epoch.nanos(at)
    }

    /// Takes a token for `key` now, or says when one will be there.
    #[inline]
    pub fn check_key(&self, key: &K) -> Result<(), NotUntil> {
        self.check_key_at(key, self.epoch.now_nanos())
    }

    /// Takes a token for `key` at `now` (nanoseconds since the epoch), or
    /// says when one will be there. Refuses while tasks wait on that key.
    pub fn check_key_at(&self, key: &K, now: u64) -> Result<(), NotUntil> {
        let hash = self.table.hash(key);
        let mut shard = self.table.lock(hash);
        let earliest = if let Some(state) = shard.find(hash, key) {
            let ahead = state.waiting();
            if ahead == 0 {
                match self.gcra.decide(state.tat, now) {
                    Ok(tat) => {
                        state.tat = tat;
                        Ok(())
                    }
                    Err(earliest) => Err(earliest),
                }
            } else {
                Err(self.queued_estimate(state.tat, now, ahead))
            }
        } else {
            self.insert_fresh(&mut shard, hash, key, now);
            Ok(())
        };
        if earliest.is_ok() {
            shard.count();
        }
        drop(shard);
        match earliest {
            Ok(()) => Ok(()),
            Err(earliest) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(self.epoch.not_until(now, earliest))
            }
        }
    }

    fn insert_fresh(
        &self,
        shard: &mut crate::table::Locked<'_, K, KeyState, S>,
        hash: u64,
        key: &K,
        now: u64,
    ) {
        // A fresh key has a full bucket; the burst is at least one.
        let tat = self.gcra.decide(0, now).unwrap_or(now);
        shard.insert(hash, key.clone(), KeyState { tat, queue: None }, now);
    }

    fn queued_estimate(&self, tat: u64, now: u64, ahead: usize) -> u64 {
        self.gcra
            .earliest(tat, now)
            .saturating_add(self.gcra.interval().saturating_mul(ahead as u64))
    }

    /// Waits for a token for `key`, in line behind earlier waiters on that
    /// key. Cancel-safe: dropping the future consumes nothing.
    pub async fn until_key_ready(&self, key: &K) {
        // Without a deadline the wait cannot fail.
        let _ = self.wait(key, None).await;
    }

    /// Like [`KeyedRateLimiter::until_key_ready`], but fails at once when the
    /// token would come at or after `deadline`.
    pub async fn until_key_ready_before(
        &self,
        key: &K,
        deadline: Deadline,
    ) -> Result<(), NotUntil> {
        self.wait(key, Some(deadline)).await.map(drop)
    }

    pub(crate) async fn wait(
        &self,
        key: &K,
        deadline: Option<Deadline>,
    ) -> Result<Duration, NotUntil> {
        let start = Instant::now();
        let now = self.epoch.now_nanos();
        let limit = deadline.map(|d| self.epoch.nanos(d.instant()));
        let hash = self.table.hash(key);
        let (queue, id, estimate) = {
            let mut shard = self.table.lock(hash);
            let Some(state) = shard.find(hash, key) else {
                self.insert_fresh(&mut shard, hash, key, now);
                shard.count();
                return Ok(Duration::ZERO);
            };
            if state.waiting() == 0 {
                match self.gcra.decide(state.tat, now) {
                    Ok(tat) => {
                        state.tat = tat;
                        shard.count();
                        return Ok(Duration::ZERO);
                    }
                    Err(earliest) if limit.is_some_and(|l| earliest >= l) => {
                        drop(shard);
                        return Err(self.deadline_refusal(now, earliest));
                    }
                    Err(_) => {}
                }
            }
            let queue = state
                .queue
                .get_or_insert_with(|| Arc::new(WaitQueue::new()))
                .clone();
            let (id, ahead) = queue.join();
            (queue, id, self.queued_estimate(state.tat, now, ahead))
        };
        if limit.is_some_and(|l| estimate >= l) {
            queue.leave(id);
            return Err(self.deadline_refusal(now, estimate));
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            policy.name = %self.name,
            limit.wait_ms = Duration::from_nanos(estimate - now).as_millis() as u64,
            "keyed rate limit: waiting for a token"
        );
        let result = wait_turn(&queue, id, &self.epoch, limit, |now| {
            self.take_at_front(hash, key, now)
        })
        .await;
        let waited = start.elapsed();
        self.wait_nanos
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => Ok(waited),
            Err(earliest) => Err(self.deadline_refusal(self.epoch.now_nanos(), earliest)),
        }
    }

    /// The front waiter's attempt: the key cannot have been dropped, since
    /// keys with waiters are pinned; if it somehow was, it is fresh.
    fn take_at_front(&self, hash: u64, key: &K, now: u64) -> Result<(), u64> {
        let mut shard = self.table.lock(hash);
        if let Some(state) = shard.find(hash, key) {
            state.tat = self.gcra.decide(state.tat, now)?;
        } else {
            self.insert_fresh(&mut shard, hash, key, now);
        }
        shard.count();
        Ok(())
    }

    fn deadline_refusal(&self, now: u64, earliest: u64) -> NotUntil {
        self.deadline_refusals.fetch_add(1, Ordering::Relaxed);
        let refusal = self.epoch.not_until(now, earliest);
        tracing::debug!(
            policy.name = %self.name,
            limit.wait_ms = refusal.wait().as_millis() as u64,
            "keyed rate limit: the next token comes after the request's deadline; failing now"
        );
        refusal
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// `true` when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every idle key now (those whose bucket is full again) and gives
    /// their memory back. Never needed for correctness; useful after a
    /// spike of keys followed by quiet, when no insert triggers a sweep.
    pub fn sweep(&self) {
        self.table.sweep_all(self.epoch.now_nanos());
    }

    #[cfg(test)]
    fn sweep_at(&self, now: u64) {
        self.table.sweep_all(now);
    }

    /// Counters and current state; cheap (relaxed atomic loads, no lock).
    pub fn snapshot(&self) -> KeyedSnapshot {
        KeyedSnapshot {
            name: self.name.clone(),
            rate_per_second: self.quota.rate_per_second(),
            burst: self.quota.burst_size().get(),
            keys: self.table.len(),
            max_keys: self.max_keys,
            admitted: self.table.counted(),
            refused: self.refused.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            total_wait: Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed)),
            deadline_refusals: self.deadline_refusals.load(Ordering::Relaxed),
            idle_evictions: self.table.expired_evictions(),
            forced_evictions: self.table.forced_evictions(),
        }
    }
}

/// A point-in-time view of a [`KeyedRateLimiter`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct KeyedSnapshot {
    /// The limiter's name.
    pub name: Arc<str>,
    /// The sustained rate of each key's quota, requests per second.
    pub rate_per_second: f64,
    /// The burst of each key's quota.
    pub burst: u32,
    /// Keys held now.
    pub keys: usize,
    /// The configured bound on keys.
    pub max_keys: usize,
    /// Tokens taken.
    pub admitted: u64,
    /// `check_key` calls refused.
    pub refused: u64,
    /// Waits that had to queue.
    pub queued: u64,
    /// Time spent waiting in line, all waiters together.
    pub total_wait: Duration,
    /// Waits refused at once because the token would come after the deadline.
    pub deadline_refusals: u64,
    /// Idle keys dropped (exact: their bucket was full).
    pub idle_evictions: u64,
    /// Active keys dropped to stay within `max_keys` (approximate).
    pub forced_evictions: u64,
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn quota(rate: u32, burst: u32) -> Quota {
        Quota::per_second(NonZeroU32::new(rate).unwrap()).burst(NonZeroU32::new(burst).unwrap())
    }

    #[test]
    fn config_is_validated() {
        let b = || KeyedRateLimiter::builder(quota(1, 1));
        assert!(b().max_keys(0).build::<u32>().is_err());
        assert!(b().shards(3).build::<u32>().is_err());
        assert!(b().shards(2048).build::<u32>().is_err());
        let e = b().max_keys(2).shards(4).build::<u32>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid limiter setting `shards`: must not exceed max_keys"
        );
        assert!(b().max_keys(3).build::<u32>().is_ok());
        assert_eq!(default_shards(1), 1);
        assert_eq!(default_shards(5), 4.min(default_shards(1 << 20)));
    }

    #[test]
    fn a_million_distinct_keys_over_time_keep_memory_flat() {
        // 10/s, burst 2: a key used once stays for 100 ms. 10,000 new keys
        // per simulated second means ~1,000 live at any time.
        let l = KeyedRateLimiter::builder(quota(10, 2))
            .max_keys(1_000_000)
            .build::<u64>()
            .unwrap();
        let mut peak = 0;
        for i in 0..1_000_000u64 {
            let now = i * 100_000; // 100 µs apart
            l.check_key_at(&i, now).unwrap();
            peak = peak.max(l.len());
        }
        let shards = default_shards(1_000_000);
        let bound = 2 * 1_000 + shards * 2 * 32;
        assert!(peak <= bound, "peak {peak} > {bound}");
        assert!(l.table.allocated() <= 4 * bound, "{}", l.table.allocated());
        assert_eq!(l.snapshot().forced_evictions, 0);
        l.sweep_at(u64::MAX / 8);
        assert!(l.is_empty());
        assert_eq!(l.snapshot().idle_evictions, 1_000_000);
    }

    #[test]
    fn max_keys_bounds_a_burst_of_active_keys() {
        let l = KeyedRateLimiter::builder(quota(1, 1))
            .max_keys(1_000)
            .build::<u64>()
            .unwrap();
        for i in 0..100_000u64 {
            l.check_key_at(&i, 0).unwrap(); // all active: TAT one second ahead
            assert!(l.len() <= 1_000);
        }
        let s = l.snapshot();
        assert_eq!(s.keys, l.len());
        assert!(s.forced_evictions >= 100_000 - 1_000);
    }

    #[test]
    fn active_keys_below_max_keys_are_never_forgotten() {
        // 900 active keys in a 1 000-key limiter: no shard's share of the
        // bound may push one out, however many shards there are.
        for shards in [1, 16, 512] {
            let l = KeyedRateLimiter::builder(Quota::per_minute(NonZeroU32::MIN))
                .max_keys(1_000)
                .shards(shards)
                .build::<u64>()
                .unwrap();
            for k in 0..900 {
                l.check_key_at(&k, 0).unwrap();
            }
            let s = l.snapshot();
            assert_eq!((s.keys, s.forced_evictions), (900, 0), "{shards} shards");
            for k in 0..900 {
                assert!(
                    l.check_key_at(&k, 1).is_err(),
                    "key {k} was forgotten and burst again ({shards} shards)"
                );
            }
        }
    }

    #[test]
    fn a_tiny_max_keys_with_as_many_shards_stays_bounded_and_works() {
        // Split per shard, a bound of 3 over 2 shards, or of 1 over 1, could
        // round to nothing: the bound is global, so it holds exactly.
        for (max_keys, shards) in [(1, 1), (2, 2), (3, 2), (4, 4), (5, 4)] {
            let l = KeyedRateLimiter::builder(Quota::per_minute(NonZeroU32::MIN))
                .max_keys(max_keys)
                .shards(shards)
                .build::<u64>()
                .unwrap();
            for k in 0..100 {
                l.check_key_at(&k, 0).unwrap();
                assert!(l.len() <= max_keys, "{} > {max_keys} keys", l.len());
                // The newest key is remembered: its quota is spent.
                assert!(l.check_key_at(&k, 0).is_err(), "key {k} forgotten");
            }
            let s = l.snapshot();
            assert_eq!(
                (s.keys, s.forced_evictions),
                (max_keys, 100 - max_keys as u64)
            );
        }
    }

    #[test]
    fn eviction_is_exact_for_idle_keys() {
        let l = KeyedRateLimiter::builder(quota(10, 3))
            .build::<&str>()
            .unwrap();
        for _ in 0..3 {
            l.check_key_at(&"a", 0).unwrap();
        }
        assert!(l.check_key_at(&"a", 0).is_err());
        // At 300 ms the bucket is full again: dropping the key changes nothing.
        l.sweep_at(300_000_000);
        assert!(l.is_empty());
        for _ in 0..3 {
            l.check_key_at(&"a", 300_000_000).unwrap();
        }
        assert!(l.check_key_at(&"a", 300_000_000).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_per_key_are_independent_and_keys_with_waiters_stay() {
        let l = Arc::new(
            KeyedRateLimiter::builder(quota(10, 1))
                .max_keys(1)
                .shards(1)
                .build::<u8>()
                .unwrap(),
        );
        l.check_key(&1).unwrap();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.until_key_ready(&1).await }
        });
        tokio::task::yield_now().await;
        // Key 2 would force key 1 out, but key 1 has a waiter.
        l.check_key(&2).unwrap();
        assert_eq!(l.snapshot().forced_evictions, 0);
        assert!(l.check_key(&1).is_err());
        let t0 = Instant::now();
        waiter.await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
    }
}
