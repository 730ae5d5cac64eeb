//! Server-driven pacing: the pure per-key core [`PaceState`] and the keyed
//! [`Pacer`].
//!
//! The server says how much it allows; the pacer makes the client listen.
//!
//! - `429`/`503` with `Retry-After` (or an exhausted `RateLimit`): the whole
//!   key pauses until then. A bare `429` pauses for
//!   [`PacingConfig::bare_429_pause`], and so does a `429` whose hints say
//!   zero (`Retry-After: 0`, a date or a reset already past, usually clock
//!   skew): taken at its word, it would send the next request at once, into
//!   the next `429`.
//! - `RateLimit` / `X-RateLimit-Remaining` + reset: the remaining quota is
//!   spread evenly until the reset, `reset / remaining` apart
//!   ([`RateLimit::pace`](steadfast_core::signals::RateLimit::pace), rounded
//!   up so the quota is never overspent). This holds whichever reset the
//!   server means: the whole quota's refill (`RateLimit` `t` before
//!   draft -10, most `X-RateLimit-Reset`) or the next unit of quota (`t`
//!   from draft -10 on). Either way at least `remaining` requests fit
//!   before it.
//!
//! Spacing is shared by all requests to a key: the pacer hands out slots
//! like a GCRA with a burst of one whose rate is re-set by every response,
//! so ten concurrent requests get ten consecutive slots, not one slot ten
//! times. Pacing info expires at the announced reset; with no fresh signal
//! the key is unpaced again. Slots booked past the reset keep their times
//! (their requests were spaced under the pace, and letting them all go at
//! the reset would be a burst into an unknown quota), so a request that
//! arrives after the reset, unpaced, may go before them.
//!
//! A tighter pace (others share the quota, or the server cut it) spaces
//! the next slot from the last one handed out by the new interval. Slots
//! already booked ahead under the old pace are voided, and their holders
//! book again under the new one, when keeping them would spend at least
//! one request more than the server says is left; a pace that only
//! jitters (a reset rounded to another second) leaves them be. A looser
//! pace leaves booked slots be too: it only spaces the ones that follow.
//!
//! # After a pause
//!
//! A new pause voids every slot handed out before it: their holders
//! reserve again ([`Pacer::is_current_at`]), so the requests a pause held
//! leave it one slot apart, not together when it ends.
//!
//! - With a pace in force at the end of the pause, the first slot is the
//!   end of the pause and the others follow one interval apart.
//! - With no pace known, one request goes when the pause ends (the
//!   *probe*); the others are held until its answer arrives (any response
//!   of that key), then follow what it said: a pace, another pause, or, if
//!   it said nothing, go. If no answer comes within
//!   [`PacingConfig::probe_timeout`] of the end of the pause, they go then.
//!   A burst at the end of a pause is what earns the next `429`; one
//!   request first costs a round trip and usually brings the pace back.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use steadfast_core::ServerSignals;
use steadfast_core::signals::RateLimit;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::PacingConfig;
use crate::error::LimitCause;
use crate::keyed::default_shards;
use crate::state::Epoch;
use crate::table::{Expiring, Rank, Table};

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
    /// Bumped by every new pause and by the answer to a probe: the slots
    /// handed out before are void.
    generation: u32,
    probe: Probe,
    /// While probing, when the requests held behind the probe go anyway.
    probe_until: u64,
    /// The start of the last slot handed out under a pace, and that pace's
    /// interval (zero before any): where voided slots book again from.
    last_paced: u64,
    last_spacing: u64,
}

/// The probe after a pause with no pace known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Probe {
    #[default]
    Idle,
    /// The next request to reserve is the probe.
    Wanted,
    /// The probe went (or goes) at this time; others wait for an answer.
    Out(u64),
}

/// A slot handed out by [`PaceState::reserve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    start: u64,
    earliest: u64,
    cause: Option<LimitCause>,
    prev_next: u64,
    next: u64,
    generation: u32,
    held: bool,
    probe: bool,
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

    /// Held behind a probe: the request may go as soon as the probe's
    /// answer arrives (the slot is then no longer current), and at
    /// [`Slot::start`] at the latest.
    pub const fn held(&self) -> bool {
        self.held
    }

    /// The probe after a pause: the one request that goes first, whose
    /// answer the others wait for. Its holder should
    /// [`release`](PaceState::release) it if the request fails or is
    /// cancelled before an answer comes, so that the next request probes
    /// instead of every held one waiting out the probe timeout.
    pub const fn is_probe(&self) -> bool {
        self.probe
    }
}

impl PaceState {
    /// Reserves the next slot at `now`. Fails with the would-be slot,
    /// reserving nothing, if it starts at or after `deadline` (for a slot
    /// held behind a probe: if the probe itself does).
    pub fn reserve(&mut self, now: u64, deadline: Option<u64>) -> Result<Slot, Slot> {
        let (start, cause) = match self.paused_for(now) {
            Some(_) => (self.paused_until, Some(LimitCause::ServerPause)),
            None => (now, None),
        };
        let mut slot = Slot {
            start,
            earliest: start,
            cause,
            prev_next: self.next_slot,
            next: self.next_slot,
            generation: self.generation,
            held: false,
            probe: false,
        };
        if self.interval(now).is_some() {
            if self.next_slot > slot.start {
                slot.start = self.next_slot;
                slot.cause = Some(LimitCause::ServerPace);
            }
            slot.earliest = slot.start;
            slot.next = slot.start.saturating_add(self.interval);
        } else if self.probing(now) {
            match self.probe {
                Probe::Wanted => slot.probe = true,
                Probe::Out(at) => {
                    // Behind the probe: at its answer, at the latest when
                    // it times out.
                    slot.held = true;
                    slot.cause = Some(LimitCause::ServerPause);
                    slot.earliest = at.max(now);
                    slot.start = slot.start.max(self.probe_until);
                }
                Probe::Idle => {}
            }
        }
        if deadline.is_some_and(|d| slot.earliest >= d && slot.earliest > now) {
            return Err(slot);
        }
        if slot.next != slot.prev_next {
            self.last_paced = slot.start;
            self.last_spacing = self.interval;
        }
        self.next_slot = slot.next;
        if slot.probe {
            self.probe = Probe::Out(slot.start);
        }
        Ok(slot)
    }

    /// Whether `slot` still stands at `now`: `false` once a pause or a
    /// probe's answer has come in since it was handed out, or when a pause
    /// in force outlasts the slot's start. A holder of a slot that no
    /// longer stands reserves again.
    ///
    /// A slot held behind a probe is checked before its start, while the
    /// pause that made it may still be in force: that pause ends by its
    /// start, so it stands (voiding it would have its holder reserve the
    /// same slot again, forever).
    pub const fn is_current(&self, slot: &Slot, now: u64) -> bool {
        let by = if slot.start > now { slot.start } else { now };
        slot.generation == self.generation && self.paused_until <= by
    }

    /// Gives back a slot whose request was cancelled before it went, if no
    /// later slot was handed out since. A cancelled probe (at `now`) makes
    /// the next request the probe.
    pub const fn release(&mut self, slot: &Slot, now: u64) {
        if slot.generation != self.generation {
            return;
        }
        if self.next_slot == slot.next {
            self.next_slot = slot.prev_next;
        }
        if let Probe::Out(at) = self.probe
            && slot.probe
            && at == slot.start
        {
            self.probe = Probe::Wanted;
            self.void_slots();
            // Those booked behind it book again from its slot, not behind
            // their own void ones; never closer than the pace to a slot
            // that already went.
            let from = max(slot.start, self.after_started(now));
            if self.next_slot > from {
                self.next_slot = from;
            }
        }
    }

    /// The server's pace tightened from `old` to `new` at `now` (others
    /// share its quota, or it cut it): the next slot follows the last one
    /// handed out by `new`, not `old`. Slots booked ahead of `now` under
    /// `old` are voided, so their holders book again under `new`, when
    /// keeping them would spend at least one request more than the
    /// server has left: `booked` slots at `old` apart cover what
    /// `booked * old / new` slots at `new` apart do. A slight tightening
    /// (the same quota, its reset rounded to another second) keeps them,
    /// so a server whose pace jitters does not wake every held request on
    /// every response.
    const fn tighten(&mut self, now: u64, old: u64, new: u64) {
        // Nothing booked ahead and no spacing pending: the new pace spaces
        // what comes. In a pause, slots count from its end, not from the
        // last one handed out.
        if self.next_slot <= now || self.paused_until > now {
            return;
        }
        // `next_slot` is one `old` interval past the last slot handed out.
        let last = self.next_slot.saturating_sub(old);
        let booked = if last > now {
            (last - now).div_ceil(old)
        } else {
            0
        };
        if booked.saturating_mul(new - old) >= new {
            self.void_slots();
            // Counted from the last slot that started (as far as the
            // spacing tells), as if the booked ones had not been.
            self.next_slot = last
                .saturating_sub(booked.saturating_mul(old))
                .saturating_add(new);
        } else {
            self.next_slot = last.saturating_add(new);
        }
    }

    /// Where slots voided at `now` may book again from: one interval (the
    /// pace in force, or else the one they were booked under) after the
    /// last paced slot that has started by `now`, as far as their spacing
    /// tells; zero when no slot was ever paced.
    const fn after_started(&self, now: u64) -> u64 {
        let spacing = self.last_spacing;
        if spacing == 0 {
            return 0;
        }
        let last = self.last_paced;
        let started = if last > now {
            last.saturating_sub((last - now).div_ceil(spacing).saturating_mul(spacing))
        } else {
            last
        };
        let gap = match self.interval(now) {
            Some(interval) => interval,
            None => spacing,
        };
        started.saturating_add(gap)
    }

    const fn void_slots(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Learns from a response at `now`: its status, its `Retry-After` and
    /// its most constraining rate limit (see [`ServerSignals`]).
    pub fn observe(
        &mut self,
        now: u64,
        status: u16,
        retry_after: Option<Duration>,
        rate_limit: Option<&RateLimit>,
        config: &PacingConfig,
    ) -> Option<Duration> {
        // A zero hint ("now", a date or reset already past) is no hint.
        let hint = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        let exhausted = hint(
            rate_limit
                .filter(|rl| rl.remaining() == 0)
                .map(RateLimit::reset),
        );
        let pause = match status {
            429 => hint(retry_after)
                .or(exhausted)
                .or(Some(config.bare_429_pause)),
            503 => hint(retry_after).or(exhausted),
            _ => exhausted,
        }
        .map(|p| p.min(config.max_pause))
        .filter(|p| !p.is_zero());
        if let Some(rl) = rate_limit.filter(|rl| rl.remaining() > 0) {
            let reset = nanos(rl.reset().min(config.max_pause));
            // Rounded up: r slots never fit in less than the reset.
            let interval = reset.div_ceil(rl.remaining());
            if let Some(old) = self.interval(now)
                && interval > old
            {
                self.tighten(now, old, interval);
            }
            self.interval = interval;
            self.valid_until = now.saturating_add(reset);
        }
        let until = pause.map(|p| now.saturating_add(nanos(p)));
        if let Some(until) = until.filter(|&u| u > self.paused_until) {
            self.paused_until = until;
            // The slots handed out so far were counted from before the
            // pause: their holders reserve again, after its end.
            self.void_slots();
            self.next_slot = until;
            let probe_timeout = nanos(config.probe_timeout);
            if self.interval(until).is_none() && probe_timeout > 0 {
                self.probe = Probe::Wanted;
                self.probe_until = until.saturating_add(probe_timeout);
            } else {
                self.probe = Probe::Idle;
            }
        } else if let Probe::Out(at) = self.probe
            && now >= at
        {
            // The probe's answer: those held behind it follow what it said,
            // booking again from the probe's slot (a pace spaces them from
            // it), not behind their own void slots.
            self.probe = Probe::Idle;
            self.void_slots();
            let from = match self.interval(now) {
                Some(interval) => at.saturating_add(interval),
                None => now,
            };
            let from = max(from, self.after_started(now));
            if self.next_slot > from {
                self.next_slot = from;
            }
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

    /// Whether requests wait for a probe's answer at `now`.
    const fn probing(&self, now: u64) -> bool {
        !matches!(self.probe, Probe::Idle) && now < self.probe_until
    }
}

/// The larger of two, in a `const fn`.
const fn max(a: u64, b: u64) -> u64 {
    if a > b { a } else { b }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl Expiring for PaceState {
    fn expired(&self, now: u64) -> bool {
        self.paused_until <= now
            && self.valid_until <= now
            && self.next_slot <= now
            && !self.probing(now)
    }

    fn eviction_rank(&self, now: u64) -> Option<Rank> {
        // A pause in force is what the server asked for most directly:
        // forgotten last.
        let holds = self.paused_until > now || self.probing(now);
        let ends = self
            .paused_until
            .max(self.valid_until)
            .max(self.next_slot)
            .max(self.probe_until);
        Some((holds, ends))
    }
}

/// Server-driven pacing for many keys (origins by default), with bounded
/// memory: the keyed home of [`PaceState`]. The [`crate::Pacing`] layer
/// drives it; use it directly to pace something other than a `Transport`.
///
/// `max_keys` bounds the keys of all shards together; past it, a key is
/// forgotten to make room, one with no pause in force unless every key has
/// one (counted in [`PacerSnapshot::forced_evictions`]).
#[derive(Debug)]
pub struct Pacer<K, S = RandomState> {
    table: Table<K, PaceState, S>,
    epoch: Epoch,
    config: PacingConfig,
    /// Woken when slots of some key were voided (a pause, a probe's answer).
    news: Notify,
    /// Until when some key may be probing: responses with nothing to say
    /// still end a probe, so they are looked at until then.
    probing_until: AtomicU64,
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
            news: Notify::new(),
            probing_until: AtomicU64::new(0),
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
        self.reserve(key, now, deadline, true)
    }

    /// Reserves again for a request whose slot was voided: counted in the
    /// wait, not again as a delayed request.
    pub(crate) fn reserve_again_at(
        &self,
        key: &K,
        now: u64,
        deadline: Option<u64>,
    ) -> Result<Slot, Slot> {
        self.reserve(key, now, deadline, false)
    }

    fn reserve(&self, key: &K, now: u64, deadline: Option<u64>, first: bool) -> Result<Slot, Slot> {
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
                if first {
                    match slot.cause {
                        Some(LimitCause::ServerPause) => {
                            self.paused.fetch_add(1, Ordering::Relaxed)
                        }
                        Some(_) => self.paced.fetch_add(1, Ordering::Relaxed),
                        None => 0,
                    };
                }
                self.wait_nanos
                    .fetch_add(slot.start - now, Ordering::Relaxed);
            }
            Err(_) => {
                self.refusals.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Takes back the part of a slot's wait that was not waited (the slot
    /// was voided, or its request gave up at its deadline).
    pub(crate) fn unwait(&self, slot: &Slot, now: u64) {
        self.wait_nanos
            .fetch_sub(slot.start.saturating_sub(now), Ordering::Relaxed);
    }

    /// Whether `slot` still stands for `key` at `now` (see
    /// [`PaceState::is_current`]). A request woken at its slot goes if it
    /// does, and reserves again if not.
    pub fn is_current_at(&self, key: &K, slot: &Slot, now: u64) -> bool {
        let hash = self.table.hash(key);
        self.table
            .lock(hash)
            .find(hash, key)
            .is_none_or(|s| s.is_current(slot, now))
    }

    /// Resolves when some key's slots were voided; enable it before checking
    /// [`Pacer::is_current_at`] so that no news is missed in between.
    pub(crate) fn news(&self) -> tokio::sync::futures::Notified<'_> {
        self.news.notified()
    }

    /// Gives back the slot of a request cancelled before it went.
    pub fn release(&self, key: &K, slot: &Slot) {
        let hash = self.table.hash(key);
        let voided = self.table.lock(hash).find(hash, key).is_some_and(|state| {
            let generation = state.generation;
            state.release(slot, self.epoch.now_nanos());
            state.generation != generation
        });
        if voided {
            self.news.notify_waiters();
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
        let relevant = matches!(status, 429 | 503)
            || rl.is_some()
            || now < self.probing_until.load(Ordering::Relaxed);
        if !relevant {
            return;
        }
        let hash = self.table.hash(key);
        let mut shard = self.table.lock(hash);
        let (pause, voided, probe_until) = if let Some(state) = shard.find(hash, key) {
            let generation = state.generation;
            let pause = state.observe(now, status, retry_after, rl, &self.config);
            (pause, state.generation != generation, state.probe_until)
        } else {
            let mut state = PaceState::default();
            let pause = state.observe(now, status, retry_after, rl, &self.config);
            if !state.expired(now) {
                shard.insert(hash, key.clone(), state, now);
            }
            (pause, false, state.probe_until)
        };
        drop(shard);
        if probe_until > now {
            self.probing_until.fetch_max(probe_until, Ordering::Relaxed);
        }
        if voided {
            self.news.notify_waiters();
        }
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
            forced_evictions: self.table.forced_evictions(),
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
    /// Keys forgotten before their signals ran out, to stay within
    /// `max_keys` (a pause in force only when every key had one).
    pub forced_evictions: u64,
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
        // Without a probe: every request reserved during the pause may go
        // at its end (the probe is tested below).
        let c = PacingConfig::builder()
            .probe_timeout(Duration::ZERO)
            .build()
            .unwrap();
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
    fn after_a_pause_with_no_pace_one_probe_goes_and_its_answer_frees_the_rest() {
        let c = PacingConfig::default(); // probe_timeout 1 s
        let mut p = PaceState::default();
        p.observe(0, 429, Some(Duration::from_secs(2)), None, &c);
        let probe = p.reserve(0, None).unwrap();
        assert_eq!((probe.start(), probe.held()), (2 * S, false));
        let held = p.reserve(S, None).unwrap();
        assert_eq!((held.start(), held.held()), (3 * S, true));
        assert_eq!(held.cause(), Some(LimitCause::ServerPause));
        // Still in the pause, the held slot stands: its holder waits, it
        // does not reserve again (which would hand it the same slot, in a
        // loop with no await).
        assert!(p.is_current(&held, S));
        assert!(p.is_current(&probe, S));
        // A deadline before the probe's answer could come: refused now; one
        // after it: accepted, the request holds until its deadline at most.
        assert!(p.reserve(S, Some(2 * S)).is_err());
        assert!(p.reserve(S, Some(2 * S + 1)).is_ok());
        // A response before the probe went says nothing about after the pause.
        p.observe(S, 200, None, None, &c);
        assert!(p.is_current(&held, 2 * S));
        // The probe's answer: pace 4 in 2 s. The held slot is void; again,
        // the requests are spaced from the answer on.
        p.observe(2 * S + 50, 200, None, Some(&rl(4, 2)), &c);
        assert!(!p.is_current(&held, 2 * S + 50));
        let starts: Vec<u64> = (0..3)
            .map(|_| p.reserve(2 * S + 50, None).unwrap().start())
            .collect();
        assert_eq!(starts, [2 * S + 50, 2 * S + 50 + S / 2, 3 * S + 50]);
        // A probe cancelled before it went: the next request is the probe.
        let mut q = PaceState::default();
        q.observe(0, 429, None, None, &c);
        let probe = q.reserve(0, None).unwrap();
        let held = q.reserve(0, None).unwrap();
        q.release(&probe, 0);
        assert!(!q.is_current(&held, S));
        assert!(!q.reserve(0, None).unwrap().held());
        assert!(q.reserve(0, None).unwrap().held());
        // No answer at all: at the timeout, requests go unheld.
        assert_eq!(q.reserve(2 * S, None).unwrap().start(), 2 * S);
        assert!(q.expired(2 * S));
    }

    #[test]
    fn a_probes_answer_books_the_held_requests_again_from_its_slot() {
        let c = PacingConfig::default(); // probe_timeout 1 s
        let ms = |n: u64| n * 1_000_000;
        let mut p = PaceState::default();
        p.observe(0, 429, Some(Duration::from_secs(1)), None, &c);
        let probe = p.reserve(0, None).unwrap();
        assert_eq!(probe.start(), S);
        // A response sent before the pause brings a pace while the probe
        // is out: slots are booked under it from the end of the pause.
        p.observe(ms(500), 200, None, Some(&rl(10, 10)), &c);
        let booked: Vec<u64> = (0..3)
            .map(|_| p.reserve(ms(500), None).unwrap().start())
            .collect();
        assert_eq!(booked, [S, 2 * S, 3 * S]);
        // The probe's answer voids them; they book again one interval
        // after the probe, not behind their own void slots (4 to 6 s).
        p.observe(ms(1100), 200, None, Some(&rl(9, 9)), &c);
        let again: Vec<u64> = (0..3)
            .map(|_| p.reserve(ms(1100), None).unwrap().start())
            .collect();
        assert_eq!(again, [2 * S, 3 * S, 4 * S]);

        // A late answer (2.5 s), after paced slots at 1 and 2 s went: the
        // next is a whole interval after the one at 2 s, not at once.
        let mut late = PaceState::default();
        late.observe(0, 429, Some(Duration::from_secs(1)), None, &c);
        late.reserve(0, None).unwrap();
        late.observe(ms(500), 200, None, Some(&rl(10, 10)), &c);
        for _ in 0..3 {
            late.reserve(ms(500), None).unwrap();
        }
        late.observe(ms(2500), 200, None, Some(&rl(8, 8)), &c);
        assert_eq!(late.reserve(ms(2500), None).unwrap().start(), 3 * S);
        // An answer that also tightens the pace (5 in 8 s: 1.6 s apart):
        // 1.6 s after the slot at 2 s, not sooner.
        let mut tighter = PaceState::default();
        tighter.observe(0, 429, Some(Duration::from_secs(1)), None, &c);
        tighter.reserve(0, None).unwrap();
        tighter.observe(ms(500), 200, None, Some(&rl(10, 10)), &c);
        for _ in 0..3 {
            tighter.reserve(ms(500), None).unwrap();
        }
        tighter.observe(ms(2500), 200, None, Some(&rl(5, 8)), &c);
        assert_eq!(tighter.reserve(ms(2500), None).unwrap().start(), ms(3600));
        // One that loosens it (10 in 3 s: 0.3 s apart) and a late failed
        // probe: the new pace after the slot at 2 s.
        let mut looser = PaceState::default();
        looser.observe(0, 429, Some(Duration::from_secs(1)), None, &c);
        let probe = looser.reserve(0, None).unwrap();
        looser.observe(ms(500), 200, None, Some(&rl(10, 10)), &c);
        for _ in 0..3 {
            looser.reserve(ms(500), None).unwrap();
        }
        looser.observe(ms(600), 200, None, Some(&rl(10, 3)), &c);
        looser.release(&probe, ms(2050));
        assert_eq!(looser.reserve(ms(2050), None).unwrap().start(), ms(2300));
        // The same when the probe fails then and is released.
        let mut failed = PaceState::default();
        failed.observe(0, 429, Some(Duration::from_secs(1)), None, &c);
        let probe = failed.reserve(0, None).unwrap();
        failed.observe(ms(500), 200, None, Some(&rl(10, 10)), &c);
        for _ in 0..3 {
            failed.reserve(ms(500), None).unwrap();
        }
        failed.release(&probe, ms(2500));
        assert_eq!(failed.reserve(ms(2500), None).unwrap().start(), 3 * S);

        // A cancelled probe: those booked behind it book again from its slot.
        let mut q = PaceState::default();
        q.observe(0, 429, Some(Duration::from_secs(1)), None, &c);
        let probe = q.reserve(0, None).unwrap();
        q.observe(ms(500), 200, None, Some(&rl(10, 10)), &c);
        for _ in 0..3 {
            q.reserve(ms(500), None).unwrap();
        }
        q.release(&probe, ms(600));
        assert_eq!(q.reserve(ms(600), None).unwrap().start(), S);
    }

    #[test]
    fn a_pause_voids_the_slots_handed_out_before_it() {
        let c = PacingConfig::default();
        let mut p = PaceState::default();
        p.observe(0, 200, None, Some(&rl(5, 5)), &c); // one per second
        let slots: Vec<Slot> = (0..4).map(|_| p.reserve(0, None).unwrap()).collect();
        assert_eq!(slots[3].start(), 3 * S);
        p.observe(S / 2, 429, Some(Duration::from_secs(3)), None, &c);
        for slot in &slots {
            assert!(!p.is_current(slot, slot.start()));
        }
        // Reserved again, they follow the end of the pause one second apart.
        let starts: Vec<u64> = (1..4)
            .map(|i| p.reserve(i * S, None).unwrap().start())
            .collect();
        assert_eq!(starts, [3 * S + S / 2, 4 * S + S / 2, 5 * S + S / 2]);
        // Releasing a void slot changes nothing.
        let before = p;
        p.release(&slots[3], 4 * S);
        assert_eq!(p, before);
    }

    #[test]
    fn a_tighter_pace_respaces_the_slots_booked_ahead() {
        let c = PacingConfig::default();
        let mut p = PaceState::default();
        p.observe(0, 200, None, Some(&rl(10, 10)), &c); // one per second
        let slots: Vec<Slot> = (0..5).map(|_| p.reserve(0, None).unwrap()).collect();
        assert_eq!(slots[4].start(), 4 * S);
        // Others share the quota: 2 left in 10 s, one per 5 s. Kept, the
        // four slots booked ahead would spend four requests where the
        // server has room for one more before 5 s: their holders book again.
        p.observe(S / 2, 200, None, Some(&rl(2, 10)), &c);
        // The first one went at 0 s.
        for slot in &slots[1..] {
            assert!(!p.is_current(slot, S / 2));
        }
        let starts: Vec<u64> = (0..4)
            .map(|_| p.reserve(S / 2, None).unwrap().start())
            .collect();
        assert_eq!(starts, [5 * S, 10 * S, 15 * S, 20 * S]);
        // Releasing a voided slot gives nothing back.
        p.release(&slots[4], S / 2);
        assert_eq!(p.reserve(S / 2, None).unwrap().start(), 25 * S);
    }

    #[test]
    fn a_slightly_tighter_pace_keeps_the_slots_and_spaces_the_next() {
        let c = PacingConfig::default();
        let mut p = PaceState::default();
        p.observe(0, 200, None, Some(&rl(10, 10)), &c); // one per second
        let slots: Vec<Slot> = (0..3).map(|_| p.reserve(0, None).unwrap()).collect();
        // 10 % slower: two slots booked ahead overspend by 0.2 of a request.
        p.observe(S / 2, 200, None, Some(&rl(10, 11)), &c);
        for slot in &slots {
            assert!(p.is_current(slot, S / 2));
        }
        let next = p.reserve(S / 2, None).unwrap().start();
        assert_eq!(
            next,
            2 * S + 11 * S / 10,
            "the new spacing from the last slot"
        );
        // Nothing booked and no spacing pending: the next request goes at
        // once under the tighter pace too.
        let mut idle = PaceState::default();
        idle.observe(0, 200, None, Some(&rl(10, 10)), &c);
        idle.reserve(0, None).unwrap();
        idle.observe(3 * S, 200, None, Some(&rl(2, 10)), &c);
        assert_eq!(idle.reserve(3 * S, None).unwrap().start(), 3 * S);
        // A looser pace keeps every slot, and its spacing starts after them.
        let mut q = PaceState::default();
        q.observe(0, 200, None, Some(&rl(2, 10)), &c); // one per 5 s
        let slots: Vec<Slot> = (0..3).map(|_| q.reserve(0, None).unwrap()).collect();
        q.observe(S, 200, None, Some(&rl(10, 10)), &c);
        assert!(slots.iter().all(|s| q.is_current(s, S)));
        assert_eq!(q.reserve(S, None).unwrap().start(), 15 * S);
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
        p.release(&a, 0); // not last: kept
        p.release(&b, 0);
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

    #[derive(Clone, Debug)]
    enum Op {
        Observe {
            status: u16,
            retry_after: Option<Duration>,
            rate_limit: Option<(u64, Duration)>,
        },
        Reserve,
        Release(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let secs = prop_oneof![
            (0u64..5_000).prop_map(Duration::from_millis),
            Just(Duration::MAX),
        ];
        prop_oneof![
            1 => (
                prop_oneof![Just(200u16), Just(429), Just(503)],
                proptest::option::of(secs.clone()),
                proptest::option::of((prop_oneof![0u64..10, Just(u64::MAX)], secs)),
            )
                .prop_map(|(status, retry_after, rate_limit)| Op::Observe {
                    status,
                    retry_after,
                    rate_limit,
                }),
            4 => Just(Op::Reserve),
            1 => any::<usize>().prop_map(Op::Release),
        ]
    }

    proptest::proptest! {
        /// Whatever the server says, in any order: no slot starts before
        /// its reservation or inside a pause; a slot just handed out stands
        /// until it starts (else its holder would reserve it again, in a
        /// loop with no await); a pace spaces consecutive slots; and a state
        /// that says it expired is one that delays nothing.
        #[test]
        fn pace_state_invariants(
            ops in proptest::collection::vec((0u64..700_000_000, op()), 1..60),
            probe in proptest::bool::ANY,
        ) {
            use proptest::prop_assert;
            let c = PacingConfig::builder()
                .max_pause(Duration::from_secs(10))
                .probe_timeout(if probe { Duration::from_secs(1) } else { Duration::ZERO })
                .build()
                .unwrap();
            let mut p = PaceState::default();
            let mut now = 0;
            let mut slots: Vec<Slot> = Vec::new();
            // The last reservation, while nothing else happened since.
            let mut last: Option<(Slot, u64)> = None;
            for (dt, op) in ops {
                now += dt;
                if p.expired(now) {
                    let mut q = p;
                    let slot = q.reserve(now, None).unwrap();
                    prop_assert!(slot.start() == now && slot.cause().is_none() && !slot.held());
                }
                match op {
                    Op::Observe { status, retry_after, rate_limit } => {
                        let rl = rate_limit
                            .map(|(r, t)| RateLimit::new(r, t, RateLimitSource::Ietf));
                        let pause = p.observe(now, status, retry_after, rl.as_ref(), &c);
                        prop_assert!(pause.is_none_or(|d| d <= c.max_pause()));
                        last = None;
                    }
                    Op::Reserve => {
                        let interval = p.interval(now);
                        let slot = p.reserve(now, None).unwrap();
                        prop_assert!(slot.start() >= now);
                        prop_assert!(p.paused_for(slot.start()).is_none());
                        prop_assert!(p.is_current(&slot, now));
                        prop_assert!(p.is_current(&slot, slot.start()));
                        if let (Some((prev, i)), Some(_)) = (last, interval)
                            && !prev.held()
                            && !slot.held()
                        {
                            prop_assert!(slot.start() >= prev.start() + i);
                        }
                        last = interval.map(|i| (slot, i));
                        slots.push(slot);
                    }
                    Op::Release(i) if !slots.is_empty() => {
                        let slot = slots.swap_remove(i % slots.len());
                        p.release(&slot, now);
                        last = None;
                    }
                    Op::Release(_) => {}
                }
            }
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_429_whose_hints_say_zero_pauses_as_a_bare_429() {
        let c = PacingConfig::default();
        let zero = Some(Duration::ZERO);
        assert_eq!(
            PaceState::default().observe(0, 429, zero, None, &c),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            PaceState::default().observe(0, 429, None, Some(&rl(0, 0)), &c),
            Some(Duration::from_secs(1))
        );
        // Not a 429: a zero hint is no pause, as before.
        assert_eq!(PaceState::default().observe(0, 503, zero, None, &c), None);
        assert_eq!(
            PaceState::default().observe(0, 200, None, Some(&rl(0, 0)), &c),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_with_a_zero_or_past_hint_still_pauses_the_origin() {
        let cases: [&[(&str, &str)]; 4] = [
            &[("retry-after", "0")],
            &[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")],
            // Clock skew: the server's reset epoch is already past here.
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1600000000"),
            ],
            &[("ratelimit", r#""a";r=0;t=0"#)],
        ];
        for case in cases {
            let pacer = Pacer::<&str>::new(PacingConfig::default());
            pacer.observe(
                &"a",
                StatusCode::TOO_MANY_REQUESTS,
                &headers(case),
                SystemTime::now(),
            );
            assert_eq!(
                pacer.view(&"a").paused_for,
                Some(Duration::from_secs(1)),
                "{case:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_are_never_forgotten_below_max_keys() {
        let config = PacingConfig::builder().max_keys(10).build().unwrap();
        let pause = headers(&[("retry-after", "60")]);
        // Where keys fall among the shards is random: try many pacers.
        for _ in 0..50 {
            let pacer = Pacer::<u32>::new(config.clone());
            for key in 0..10 {
                pacer.observe(
                    &key,
                    StatusCode::TOO_MANY_REQUESTS,
                    &pause,
                    SystemTime::now(),
                );
            }
            for key in 0..10 {
                assert!(
                    pacer.view(&key).paused_for.is_some(),
                    "{key}'s pause was lost"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_max_keys_a_pace_is_forgotten_before_a_pause() {
        let config = PacingConfig::builder().max_keys(2).build().unwrap();
        let pause = headers(&[("retry-after", "5")]);
        // A pace known for longer than the pause lasts.
        let pace = headers(&[("ratelimit", r#""a";r=10;t=60"#)]);
        for _ in 0..50 {
            let pacer = Pacer::<&str>::new(config.clone());
            pacer.observe(
                &"paused",
                StatusCode::TOO_MANY_REQUESTS,
                &pause,
                SystemTime::now(),
            );
            pacer.observe(&"paced", StatusCode::OK, &pace, SystemTime::now());
            pacer.observe(
                &"new",
                StatusCode::TOO_MANY_REQUESTS,
                &pause,
                SystemTime::now(),
            );
            assert!(pacer.view(&"paused").paused_for.is_some());
            assert!(pacer.view(&"new").paused_for.is_some());
            assert_eq!(pacer.view(&"paced").rate_per_second, None);
            let s = pacer.snapshot();
            assert_eq!((s.keys, s.forced_evictions), (2, 1));
        }
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
