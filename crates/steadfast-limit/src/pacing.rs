//! Server-driven pacing: the pure per-key core [`PaceState`] and the keyed
//! [`Pacer`].
//!
//! The server says how much it allows; the pacer makes the client listen.
//!
//! - `429`/`503` with `Retry-After` (or an exhausted `RateLimit`): the whole
//!   key pauses until then. A bare `429` pauses for
//!   [`PacingConfig::bare_429_pause`].
//! - `RateLimit` / `X-RateLimit-Remaining` + reset: the remaining quota is
//!   spread evenly until the reset, `reset / remaining` apart
//!   ([`RateLimit::pace`](steadfast_core::signals::RateLimit::pace), rounded
//!   up so the quota is never overspent).
//!
//! Spacing is shared by all requests to a key: the pacer hands out slots
//! like a GCRA with a burst of one whose rate is re-set by every response,
//! so ten concurrent requests get ten consecutive slots, not one slot ten
//! times. Pacing info expires at the announced reset; with no fresh signal
//! the key is unpaced again.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use steadfast_core::ServerSignals;
use tokio::time::Instant;

use crate::config::PacingConfig;
use crate::error::LimitCause;
use crate::keyed::default_shards;
use crate::state::Epoch;
use crate::table::{Expiring, Table};

/// The pacing state of one key: pure, `now` in nanoseconds on any clock.
///
/// ```
/// use std::time::Duration;
/// use steadfast_core::signals::{RateLimit, RateLimitSource};
/// use steadfast_limit::{PaceState, PacingConfig};
///
/// let config = PacingConfig::default();
/// let mut pace = PaceState::default();
/// assert_eq!(pace.reserve(0, None).unwrap().start(), 0); // nothing known: go
///
/// // The server: 4 requests left, quota back in 2 s -> one every 500 ms.
/// let rl = RateLimit::new(4, Duration::from_secs(2), RateLimitSource::Ietf);
/// pace.observe(0, 200, None, Some(&rl), &config);
/// let starts: Vec<u64> = (0..3).map(|_| pace.reserve(0, None).unwrap().start()).collect();
/// assert_eq!(starts, [0, 500_000_000, 1_000_000_000]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PaceState {
    paused_until: u64,
    interval: u64,
    next_slot: u64,
    valid_until: u64,
}

/// A slot handed out by [`PaceState::reserve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    start: u64,
    cause: Option<LimitCause>,
    prev_next: u64,
    next: u64,
}

impl Slot {
    /// When the request may go.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// What delayed it, if anything did.
    pub const fn cause(&self) -> Option<LimitCause> {
        self.cause
    }
}

impl PaceState {
    /// Reserves the next slot at `now`. Fails with the would-be slot,
    /// reserving nothing, if it starts at or after `deadline`.
    pub fn reserve(&mut self, now: u64, deadline: Option<u64>) -> Result<Slot, Slot> {
        let mut start = now;
        let mut cause = None;
        if self.paused_until > start {
            start = self.paused_until;
            cause = Some(LimitCause::ServerPause);
        }
        let paced = self.interval > 0 && now < self.valid_until;
        if paced && self.next_slot > start {
            start = self.next_slot;
            cause = Some(LimitCause::ServerPace);
        }
        let next = if paced {
            start.saturating_add(self.interval)
        } else {
            self.next_slot
        };
        let slot = Slot {
            start,
            cause,
            prev_next: self.next_slot,
            next,
        };
        if deadline.is_some_and(|d| start >= d && start > now) {
            return Err(slot);
        }
        self.next_slot = next;
        Ok(slot)
    }

    /// Gives back a slot whose request was cancelled before it went, if no
    /// later slot was handed out since.
    pub const fn release(&mut self, slot: &Slot) {
        if self.next_slot == slot.next {
            self.next_slot = slot.prev_next;
        }
    }

    /// Learns from a response at `now`: its status, its `Retry-After` and
    /// its most constraining rate limit (see [`ServerSignals`]).
    pub fn observe(
        &mut self,
        now: u64,
        status: u16,
        retry_after: Option<Duration>,
        rate_limit: Option<&steadfast_core::signals::RateLimit>,
        config: &PacingConfig,
    ) -> Option<Duration> {
        let exhausted = rate_limit
            .filter(|rl| rl.remaining() == 0)
            .map(steadfast_core::signals::RateLimit::reset);
        let pause = match status {
            429 | 503 => retry_after
                .or(exhausted)
                .or((status == 429).then_some(config.bare_429_pause)),
            _ => exhausted,
        }
        .map(|p| p.min(config.max_pause))
        .filter(|p| !p.is_zero());
        if let Some(p) = pause {
            self.paused_until = self.paused_until.max(now.saturating_add(nanos(p)));
        }
        if let Some(rl) = rate_limit.filter(|rl| rl.remaining() > 0) {
            let reset = nanos(rl.reset().min(config.max_pause));
            // Rounded up: r slots never fit in less than the reset.
            self.interval = reset.div_ceil(rl.remaining());
            self.valid_until = now.saturating_add(reset);
        }
        pause
    }

    /// The server-requested pause in force at `now`, if any (nanoseconds
    /// until it ends).
    pub const fn paused_for(&self, now: u64) -> Option<u64> {
        if self.paused_until > now {
            Some(self.paused_until - now)
        } else {
            None
        }
    }

    /// The spacing in force at `now`, if any (nanoseconds between requests).
    pub const fn interval(&self, now: u64) -> Option<u64> {
        if self.interval > 0 && now < self.valid_until {
            Some(self.interval)
        } else {
            None
        }
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl Expiring for PaceState {
    fn expired(&self, now: u64) -> bool {
        self.paused_until <= now && self.valid_until <= now && self.next_slot <= now
    }

    fn eviction_rank(&self) -> Option<u64> {
        Some(self.paused_until.max(self.valid_until).max(self.next_slot))
    }
}

/// Server-driven pacing for many keys (origins by default), with bounded
/// memory: the keyed home of [`PaceState`]. The [`crate::Pacing`] layer
/// drives it; use it directly to pace something other than a `Transport`.
#[derive(Debug)]
pub struct Pacer<K, S = RandomState> {
    table: Table<K, PaceState, S>,
    epoch: Epoch,
    config: PacingConfig,
    paced: AtomicU64,
    paused: AtomicU64,
    pauses: AtomicU64,
    refusals: AtomicU64,
    wait_nanos: AtomicU64,
}

/// What the pacer says about one key now.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaceView {
    /// Time left of a server-requested pause.
    pub paused_for: Option<Duration>,
    /// The request rate the server's quota allows now, per second.
    pub rate_per_second: Option<f64>,
}

impl<K: Hash + Eq + Clone> Pacer<K, RandomState> {
    /// A pacer with `config`.
    pub fn new(config: PacingConfig) -> Self {
        let shards = default_shards(config.max_keys);
        Self {
            table: Table::new(config.max_keys, shards, RandomState::new()),
            epoch: Epoch::now(),
            config,
            paced: AtomicU64::new(0),
            paused: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
        }
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher> Pacer<K, S> {
    /// The settings.
    pub const fn config(&self) -> &PacingConfig {
        &self.config
    }

    /// Nanoseconds since this pacer's epoch at `at`.
    pub fn nanos_since_epoch(&self, at: Instant) -> u64 {
        self.epoch.nanos(at)
    }

    /// The instant of `nanos` since the epoch.
    pub fn instant(&self, nanos: u64) -> Instant {
        self.epoch.instant(nanos)
    }

    /// Reserves a slot for `key` at `now` (nanoseconds since the epoch); see
    /// [`PaceState::reserve`].
    pub fn reserve_at(&self, key: &K, now: u64, deadline: Option<u64>) -> Result<Slot, Slot> {
        let hash = self.table.hash(key);
        let mut shard = self.table.lock(hash);
        let result = match shard.find(hash, key) {
            Some(state) => state.reserve(now, deadline),
            // Unknown key: nothing to wait for, nothing to store.
            None => PaceState::default().reserve(now, deadline),
        };
        drop(shard);
        match &result {
            Ok(slot) => {
                match slot.cause {
                    Some(LimitCause::ServerPause) => self.paused.fetch_add(1, Ordering::Relaxed),
                    Some(_) => self.paced.fetch_add(1, Ordering::Relaxed),
                    None => 0,
                };
                self.wait_nanos
                    .fetch_add(slot.start - now, Ordering::Relaxed);
            }
            Err(_) => {
                self.refusals.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Gives back the slot of a request cancelled before it went.
    pub fn release(&self, key: &K, slot: &Slot) {
        let hash = self.table.hash(key);
        if let Some(state) = self.table.lock(hash).find(hash, key) {
            state.release(slot);
        }
    }

    /// The pause in force for `key` at `now`, in nanoseconds, if any.
    pub fn paused_for_at(&self, key: &K, now: u64) -> Option<u64> {
        let hash = self.table.hash(key);
        self.table
            .lock(hash)
            .find(hash, key)
            .and_then(|s| s.paused_for(now))
    }

    /// Learns from a response for `key`: status and headers, read with
    /// [`ServerSignals::from_headers`] at wall-clock `wall`.
    pub fn observe(&self, key: &K, status: StatusCode, headers: &HeaderMap, wall: SystemTime) {
        let signals = ServerSignals::from_headers(headers, wall);
        for e in signals.malformed() {
            tracing::debug!(policy.name = %self.config.name, error = %e, "pacing: ignored a malformed header");
        }
        self.observe_at(key, self.epoch.now_nanos(), status, &signals);
    }

    /// Learns from parsed `signals` at `now` (nanoseconds since the epoch).
    pub fn observe_at(&self, key: &K, now: u64, status: StatusCode, signals: &ServerSignals) {
        let status = status.as_u16();
        let rl = signals.rate_limit();
        let retry_after = signals.retry_after();
        let relevant = matches!(status, 429 | 503) || rl.is_some();
        if !relevant {
            return;
        }
        let hash = self.table.hash(key);
        let mut shard = self.table.lock(hash);
        let pause = if let Some(state) = shard.find(hash, key) {
            state.observe(now, status, retry_after, rl, &self.config)
        } else {
            let mut state = PaceState::default();
            let pause = state.observe(now, status, retry_after, rl, &self.config);
            if !state.expired(now) {
                shard.insert(hash, key.clone(), state, now);
            }
            pause
        };
        drop(shard);
        if let Some(p) = pause {
            self.pauses.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                policy.name = %self.config.name,
                http.response.status_code = status,
                limit.pause_ms = p.as_millis() as u64,
                "pacing: the server asked to pause; holding all requests to this origin"
            );
        }
    }

    /// What the pacer knows about `key` now.
    pub fn view(&self, key: &K) -> PaceView {
        let now = self.epoch.now_nanos();
        let hash = self.table.hash(key);
        let state = self.table.lock(hash).find(hash, key).copied();
        PaceView {
            paused_for: state
                .and_then(|s| s.paused_for(now))
                .map(Duration::from_nanos),
            rate_per_second: state.and_then(|s| s.interval(now)).map(|i| 1e9 / i as f64),
        }
    }

    /// Counters; cheap (relaxed atomic loads).
    pub fn snapshot(&self) -> PacerSnapshot {
        PacerSnapshot {
            name: self.config.name.clone(),
            keys: self.table.len(),
            paced: self.paced.load(Ordering::Relaxed),
            paused: self.paused.load(Ordering::Relaxed),
            pauses: self.pauses.load(Ordering::Relaxed),
            deadline_refusals: self.refusals.load(Ordering::Relaxed),
            total_wait: Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// A point-in-time view of a [`Pacer`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacerSnapshot {
    /// The name.
    pub name: std::sync::Arc<str>,
    /// Keys (origins) with pacing state.
    pub keys: usize,
    /// Requests delayed to spread a quota.
    pub paced: u64,
    /// Requests delayed by a server-requested pause.
    pub paused: u64,
    /// Pauses the servers asked for.
    pub pauses: u64,
    /// Requests failed at once because their slot came after their deadline.
    pub deadline_refusals: u64,
    /// Time requests were told to wait, all together.
    pub total_wait: Duration,
}

#[cfg(test)]
mod tests {
    use steadfast_core::signals::{RateLimit, RateLimitSource};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn rl(remaining: u64, reset_secs: u64) -> RateLimit {
        RateLimit::new(
            remaining,
            Duration::from_secs(reset_secs),
            RateLimitSource::Ietf,
        )
    }

    #[test]
    fn retry_after_pauses_every_request_of_the_key() {
        let c = PacingConfig::default();
        let mut p = PaceState::default();
        let pause = p.observe(0, 429, Some(Duration::from_secs(2)), None, &c);
        assert_eq!(pause, Some(Duration::from_secs(2)));
        for now in [0, S, 2 * S - 1] {
            let slot = p.reserve(now, None).unwrap();
            assert_eq!(
                (slot.start(), slot.cause()),
                (2 * S, Some(LimitCause::ServerPause))
            );
        }
        assert_eq!(p.reserve(2 * S, None).unwrap().cause(), None);
        // Past the deadline: refused, nothing reserved.
        assert_eq!(p.reserve(0, Some(S)).unwrap_err().start(), 2 * S);
    }

    #[test]
    fn bare_429_pauses_briefly_and_503_without_hint_does_not() {
        let c = PacingConfig::default();
        let mut p = PaceState::default();
        assert_eq!(p.observe(0, 503, None, None, &c), None);
        assert_eq!(
            p.observe(0, 429, None, None, &c),
            Some(Duration::from_secs(1))
        );
        assert_eq!(p.paused_for(0), Some(S));
        // Retry-After on a 200 means nothing.
        let mut q = PaceState::default();
        assert_eq!(
            q.observe(0, 200, Some(Duration::from_secs(9)), None, &c),
            None
        );
    }

    #[test]
    fn an_exhausted_quota_pauses_until_reset() {
        let c = PacingConfig::default();
        let mut p = PaceState::default();
        assert_eq!(
            p.observe(0, 200, None, Some(&rl(0, 3)), &c),
            Some(Duration::from_secs(3))
        );
        assert_eq!(p.reserve(0, None).unwrap().start(), 3 * S);
    }

    #[test]
    fn cancelled_slots_are_given_back_when_last() {
        let c = PacingConfig::default();
        let mut p = PaceState::default();
        p.observe(0, 200, None, Some(&rl(10, 1)), &c);
        let a = p.reserve(0, None).unwrap();
        let b = p.reserve(0, None).unwrap();
        assert_eq!(b.start(), S / 10);
        p.release(&a); // not last: kept
        p.release(&b);
        assert_eq!(p.reserve(0, None).unwrap().start(), S / 10);
    }

    #[test]
    fn pacing_expires_at_the_reset() {
        let c = PacingConfig::default();
        let mut p = PaceState::default();
        p.observe(0, 200, None, Some(&rl(2, 1)), &c);
        assert_eq!(p.interval(0), Some(S / 2));
        assert_eq!(p.interval(S), None);
        assert!(p.expired(S) && !p.expired(S - 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_keeps_only_keys_with_something_to_say() {
        let pacer = Pacer::<&str>::new(PacingConfig::default());
        let ok = ServerSignals::default();
        pacer.observe_at(&"a", 0, StatusCode::OK, &ok);
        assert_eq!(pacer.snapshot().keys, 0);
        let mut h = HeaderMap::new();
        h.insert("retry-after", "5".parse().unwrap());
        pacer.observe(&"a", StatusCode::TOO_MANY_REQUESTS, &h, SystemTime::now());
        assert_eq!(pacer.snapshot().keys, 1);
        assert_eq!(pacer.view(&"a").paused_for, Some(Duration::from_secs(5)));
        assert_eq!(
            pacer.view(&"b"),
            PaceView {
                paused_for: None,
                rate_per_second: None
            }
        );
        let slot = pacer.reserve_at(&"a", 0, None).unwrap();
        assert_eq!(slot.start(), 5 * S);
        let s = pacer.snapshot();
        assert_eq!(
            (s.paused, s.pauses, s.total_wait),
            (1, 1, Duration::from_secs(5))
        );
    }
}
