//! Sliding windows over recent calls: a lock-free ring of the last N calls
//! and a bucketed window over the last T. Both are sized once at build time
//! and never allocate afterwards.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::{AtomicU8, AtomicU32, AtomicU64, spin};

/// Most calls a count window may hold (each packed counter has 21 bits).
pub const MAX_COUNT_WINDOW: u32 = 1 << 20;

const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;

/// The calls a window currently holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Calls recorded.
    pub calls: u32,
    /// Of which failed.
    pub failures: u32,
    /// Of which were slow (failed or not).
    pub slow: u32,
}

impl WindowCounts {
    const fn unpack(word: u64) -> Self {
        Self {
            calls: (word & FIELD_MASK) as u32,
            failures: ((word >> FIELD_BITS) & FIELD_MASK) as u32,
            slow: ((word >> (2 * FIELD_BITS)) & FIELD_MASK) as u32,
        }
    }

    /// The failure rate, 0 for an empty window.
    pub fn failure_rate(self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            f64::from(self.failures) / f64::from(self.calls)
        }
    }

    /// The slow-call rate, 0 for an empty window.
    pub fn slow_rate(self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            f64::from(self.slow) / f64::from(self.calls)
        }
    }

    /// Counts that can only be read mid-update by racing writers (a
    /// transient borrow between packed fields) are not trusted for a trip.
    pub(crate) const fn is_sane(self) -> bool {
        self.failures <= self.calls && self.slow <= self.calls
    }

    /// Counts one more call, saturating (a half-open stage's results: a
    /// stage may last long enough for 2^32 probes).
    pub(crate) const fn add(&mut self, failed: bool, slow: bool) {
        self.calls = self.calls.saturating_add(1);
        self.failures = self.failures.saturating_add(failed as u32);
        self.slow = self.slow.saturating_add(slow as u32);
    }
}

/// [`WindowCounts`] as a time window keeps them: 64 bits, which no number of
/// calls overflows (a time window's duration is not bounded, nor is the
/// rate of calls), for the cost of 32-bit additions. They are read out
/// saturated at `u32::MAX` ([`Tally::counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    calls: u64,
    failures: u64,
    slow: u64,
}

impl Tally {
    #[inline]
    const fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += failed as u64;
        self.slow += slow as u64;
    }

    const fn sub(&mut self, other: Self) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    /// The counts, each saturated at `u32::MAX`.
    pub(crate) fn counts(self) -> WindowCounts {
        let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        WindowCounts {
            calls: sat(self.calls),
            failures: sat(self.failures),
            slow: sat(self.slow),
        }
    }
}

// Slot encoding: bit 0 = holds a call, bit 1 = failed, bit 2 = slow.
const PRESENT: u8 = 1;

const fn slot_value(failed: bool, slow: bool) -> u8 {
    PRESENT | ((failed as u8) << 1) | ((slow as u8) << 2)
}

/// A successful, fast call.
const HEALTHY: u8 = slot_value(false, false);

/// What a slot contributes to the packed counters.
const CONTRIBUTION: [u64; 8] = {
    let mut t = [0u64; 8];
    let mut v = 0;
    while v < 8 {
        if v & 1 != 0 {
            t[v] = 1
                | (((v as u64 >> 1) & 1) << FIELD_BITS)
                | (((v as u64 >> 2) & 1) << (2 * FIELD_BITS));
        }
        v += 1;
    }
    t
};

/// The last `size` calls and the run of failures that ends them, lock-free.
///
/// A ring of one byte per call plus one packed counter word
/// (calls | failures | slow). Recording claims a position with one
/// `fetch_add`; when the new call reads the same as the one it replaces (the
/// steady state of a healthy service) nothing else is written. Otherwise the
/// slot is swapped and the counters move by the exact difference, so the
/// counters always equal the sum of the slots, however writers interleave.
///
/// # Periods
///
/// The window serves one closed period of its breaker at a time, named by
/// the breaker's state word. A result of an earlier period must never land
/// in a later one, however long its recorder was preempted between learning
/// the period and writing. So every write happens inside a *gate*: one word
/// holding the current period and the number of recorders inside. A recorder
/// enters with one `fetch_add`, which also tells it the period, and leaves at
/// once if the period is not its own. The breaker moves the gate to another
/// period with one `fetch_add` of the difference ([`retag`](Self::retag)),
/// and before it empties the window for a new closed period it shuts the
/// gate and waits for the recorders inside to leave
/// ([`restart`](Self::restart)). Entering, moving and draining all act on
/// that one word, so their order is its modification order: no fence and no
/// `SeqCst` are needed, only Acquire/Release to carry the writes across.
///
/// A success that finds the window full of successes ([`is_steady`](Self::is_steady))
/// would leave it as it is: it writes nothing and needs no gate.
#[derive(Debug)]
pub(crate) struct CountWindow {
    hot: Hot,
    slots: Box<[AtomicU8]>,
    size: u32,
    /// The packed counters of a full window of successful, fast calls.
    full_healthy: u64,
    // Lemire's fast modulus: `head % size` without a division.
    fastmod_m: u64,
}

/// The words every recorder writes, on their own cache lines so that the
/// breaker's read-mostly state word is not invalidated by each call.
#[derive(Debug)]
#[repr(align(128))]
struct Hot {
    /// The period recorders may write for ([`gate_bits`]) and, in the low
    /// [`INSIDE_BITS`], how many recorders are inside.
    gate: AtomicU64,
    head: AtomicU32,
    counts: AtomicU64,
    /// The current run of consecutive failures.
    run: AtomicU32,
}

/// Low bits of the gate that count the recorders inside: at most one per
/// thread, so far below 2^24.
const INSIDE_BITS: u32 = 24;
const INSIDE: u64 = (1 << INSIDE_BITS) - 1;

/// The gate bits of a period: the low 40 bits of the breaker's word (its
/// state and 38 bits of generation; a stale recorder would have to come back
/// exactly 2^38 transitions later to pass for a current one).
const fn gate_bits(period: u64) -> u64 {
    period << INSIDE_BITS
}

/// The period of a shut gate. Periods are closed breakers' words, whose two
/// state bits are 0, so this one (all ones) is never a recorder's.
const SHUT: u64 = u64::MAX >> INSIDE_BITS;

/// What recording a call left behind.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recorded {
    /// The window, this call included (racing writers may leave it
    /// mid-update: see [`WindowCounts::is_sane`]).
    pub(crate) counts: WindowCounts,
    /// The run of failures this call extended, or 0 for a success.
    pub(crate) run: u32,
}

/// A recorder inside the gate; leaves it when dropped.
struct Inside<'a>(&'a AtomicU64);

impl Drop for Inside<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: publishes this recorder's writes (the run's plain store
        // included) to `restart`, whose drain reads the gate with Acquire
        // before it clears. Every change to the gate is a read-modify-write,
        // so each such Release heads a release sequence that the drain's
        // final read belongs to.
        self.0.fetch_sub(1, Release);
    }
}

impl CountWindow {
    /// An empty window whose gate is open for period 0 (a new breaker's word).
    pub(crate) fn new(size: u32) -> Self {
        assert!(
            size > 0 && size <= MAX_COUNT_WINDOW,
            "validated by the config"
        );
        Self {
            hot: Hot {
                gate: AtomicU64::new(gate_bits(0)),
                head: AtomicU32::new(0),
                counts: AtomicU64::new(0),
                run: AtomicU32::new(0),
            },
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            size,
            full_healthy: CONTRIBUTION[usize::from(HEALTHY)] * u64::from(size),
            fastmod_m: fastmod_m(size),
        }
    }

    /// Records one call of the closed period `period`; `None`, having written
    /// nothing, when the window serves another period.
    #[inline]
    pub(crate) fn record(&self, period: u64, failed: bool, slow: bool) -> Option<Recorded> {
        let new = slot_value(failed, slow);
        if new == HEALTHY && self.is_steady() {
            // Linearised at that load: nothing to write, and no run to end
            // (see below), whatever the period.
            return Some(Recorded {
                counts: WindowCounts::unpack(self.full_healthy),
                run: 0,
            });
        }
        let _inside = self.enter(period)?;
        // A failure joins the run before its slot is written, so the slot's
        // swap (Release) carries the increment to whichever success later
        // replaces that slot...
        let run = if failed {
            self.hot.run.fetch_add(1, Relaxed).saturating_add(1)
        } else {
            0
        };
        let moved = self.place(new);
        // ...and a success ends the run after its slot is written: if it
        // replaced a failure, its swap (Acquire) made that failure's
        // increment visible, so this load sees it (or a later value) and the
        // run is ended. Hence once successes have replaced every failure in
        // the window, no run is left, which is what lets a success that
        // finds the window full of successes skip all this.
        if !failed && self.hot.run.load(Relaxed) != 0 {
            self.hot.run.store(0, Relaxed);
        }
        let counts = moved.unwrap_or_else(|| self.hot.counts.load(Relaxed));
        Some(Recorded {
            counts: WindowCounts::unpack(counts),
            run,
        })
    }

    /// Whether the window is full of successful, fast calls: the steady
    /// state of a healthy service, where every slot reads the same, so the
    /// ring is the same after one more such call whichever slot it would
    /// replace. Recording one then writes nothing, not even the head, and
    /// the window's words stay shared in every core's cache. (Relaxed: a
    /// success linearised at this load needs nothing else to be visible; a
    /// call that happened before it, on this thread or synchronised with
    /// it, is seen by coherence.)
    #[inline]
    pub(crate) fn is_steady(&self) -> bool {
        self.hot.counts.load(Relaxed) == self.full_healthy
    }

    /// Enters the gate if it is open for `period`.
    #[inline]
    fn enter(&self, period: u64) -> Option<Inside<'_>> {
        // Acquire: pairs with the Release of the move to this period, so the
        // writes that follow land in the window cleared for it.
        let gate = self.hot.gate.fetch_add(1, Acquire);
        if gate & !INSIDE == gate_bits(period) {
            return Some(Inside(&self.hot.gate));
        }
        // Not our period: leave, having written nothing to publish.
        self.hot.gate.fetch_sub(1, Relaxed);
        None
    }

    /// Puts `new` in the next slot; returns the packed counters if they moved.
    #[inline]
    fn place(&self, new: u8) -> Option<u64> {
        // The head wraps at 2^32, which reorders one slot once per four
        // billion calls; the counters stay exact. Relaxed: it only hands out
        // positions, nothing is published through it.
        let pos = self.hot.head.fetch_add(1, Relaxed);
        let idx = fastmod(pos, self.fastmod_m, self.size) as usize;
        let slot = &self.slots[idx];
        // A success over a success (the steady state of a healthy service):
        // the swap would change nothing, so skip it (linearised at this
        // load). A failure always swaps, even over an identical failure, so
        // that its Release carries its run increment (see `record`).
        if new == HEALTHY && slot.load(Relaxed) == new {
            return None;
        }
        // AcqRel: Release publishes what this recorder did before (a
        // failure's run increment); Acquire sees what the replaced call's
        // recorder did before its swap. Exactness of the counters needs no
        // ordering: every change to a slot and to the counters is a
        // read-modify-write, so each delta is applied exactly once.
        let old = slot.swap(new, AcqRel);
        let delta =
            CONTRIBUTION[usize::from(new & 7)].wrapping_sub(CONTRIBUTION[usize::from(old & 7)]);
        if delta == 0 {
            return None;
        }
        Some(
            self.hot
                .counts
                .fetch_add(delta, Relaxed)
                .wrapping_add(delta),
        )
    }

    pub(crate) fn counts(&self) -> WindowCounts {
        WindowCounts::unpack(self.hot.counts.load(Relaxed))
    }

    /// The current run of consecutive failures.
    pub(crate) fn run(&self) -> u32 {
        self.hot.run.load(Relaxed)
    }

    /// Ends the run (on opening; `restart` ends it for good).
    pub(crate) fn reset_run(&self) {
        self.hot.run.store(0, Relaxed);
    }

    /// Moves the gate from period `from` to period `to`, keeping whoever is
    /// inside. The caller serialises moves (the breaker's control lock) and
    /// passes the period the gate is at.
    pub(crate) fn retag(&self, from: u64, to: u64) {
        // A multiple of 2^INSIDE_BITS: the count is left as it is, and the
        // period wraps in the high bits. Release: what the caller did before
        // (a clear) is visible to whoever enters under `to` (Acquire).
        self.hot
            .gate
            .fetch_add(gate_bits(to).wrapping_sub(gate_bits(from)), Release);
    }

    /// Empties the window and ends the run for a new closed period `to`
    /// (on close and reset), the gate being at `from`. Once it returns, no
    /// result of any other period can land. Serialised like [`retag`](Self::retag).
    pub(crate) fn restart(&self, from: u64, to: u64) {
        // Shut the gate: whoever enters now leaves at once...
        self.retag(from, SHUT);
        // ...and wait for those inside to finish. They are a few
        // instructions from leaving (no lock, no callback in there). Acquire:
        // pairs with their Release on leaving, so their writes are done
        // before the clear below.
        let mut round = 0;
        while self.hot.gate.load(Acquire) & INSIDE != 0 {
            spin(&mut round);
        }
        // Alone now: Relaxed, published to the next period by `retag`'s Release.
        let mut removed = 0u64;
        for slot in &self.slots {
            removed = removed.wrapping_add(CONTRIBUTION[usize::from(slot.swap(0, Relaxed) & 7)]);
        }
        self.hot.counts.fetch_sub(removed, Relaxed);
        self.hot.run.store(0, Relaxed);
        self.retag(SHUT, to);
    }
}

const fn fastmod_m(d: u32) -> u64 {
    (u64::MAX / d as u64).wrapping_add(1)
}

#[inline]
const fn fastmod(a: u32, m: u64, d: u32) -> u32 {
    let low = m.wrapping_mul(a as u64);
    ((low as u128 * d as u128) >> 64) as u32
}

/// The calls of the last `duration`, in buckets of `duration / buckets`,
/// and the run of failures that ends them. Kept behind the breaker's mutex,
/// which also orders it against the breaker's periods (see `state.rs`).
///
/// Time is cut into epochs of one bucket length, counted from the first call
/// seen. At the latest epoch `E` seen, the window holds the calls of epochs
/// `E − buckets + 1 ..= E`; whole buckets expire as time moves on. A call
/// reported late (its `now` earlier than one already seen) still counts in
/// its own bucket if that bucket is in the window, and is dropped otherwise
/// (it still joins or ends the run).
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
    origin: Option<Instant>,
    head: u64,
    /// The span of time of the head bucket, `[start, end)`, and its index,
    /// once a call has landed in it: a call within it belongs there, found
    /// by two comparisons, without the division and the duration arithmetic
    /// that make an epoch.
    head_span: Option<HeadSpan>,
    totals: Tally,
    run: u32,
}

#[derive(Clone, Copy, Debug)]
struct HeadSpan {
    start: Instant,
    end: Instant,
    slot: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    counts: Tally,
}

impl TimeWindow {
    pub(crate) fn new(duration: Duration, buckets: u32) -> Self {
        let bucket_nanos = u64::try_from((duration / buckets).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            bucket_nanos,
            buckets: vec![Bucket::default(); buckets as usize].into_boxed_slice(),
            origin: None,
            head: 0,
            head_span: None,
            totals: Tally::default(),
            run: 0,
        }
    }

    fn epoch(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        self.epoch_since(origin, now)
    }

    /// The epoch of `now`, counted in buckets from `origin`.
    fn epoch_since(&self, origin: Instant, now: Instant) -> u64 {
        let nanos =
            u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX);
        nanos / self.bucket_nanos
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    /// Moves the head to `epoch`, expiring the buckets that fall out.
    fn advance(&mut self, epoch: u64) {
        if epoch <= self.head {
            return;
        }
        let steps = (epoch - self.head).min(self.len());
        for e in epoch - steps + 1..=epoch {
            let b = &mut self.buckets[(e % self.len()) as usize];
            self.totals.sub(b.counts);
            *b = Bucket {
                epoch: e,
                counts: Tally::default(),
            };
        }
        self.head = epoch;
        self.head_span = None;
    }

    /// Records one call at `now` and returns the counts including it.
    #[inline]
    pub(crate) fn record(&mut self, now: Instant, failed: bool, slow: bool) -> Tally {
        self.run = if failed {
            self.run.saturating_add(1)
        } else {
            0
        };
        // The common case: another call in the latest call's bucket.
        if let Some(span) = self.head_span
            && span.start <= now
            && now < span.end
        {
            self.buckets[span.slot].counts.add(failed, slow);
            self.totals.add(failed, slow);
            return self.totals;
        }
        self.record_by_epoch(now, failed, slow)
    }

    fn record_by_epoch(&mut self, now: Instant, failed: bool, slow: bool) -> Tally {
        let epoch = self.epoch(now);
        self.advance(epoch);
        if epoch + self.len() > self.head {
            let slot = (epoch % self.len()) as usize;
            let b = &mut self.buckets[slot];
            debug_assert_eq!(b.epoch, epoch);
            b.counts.add(failed, slow);
            self.totals.add(failed, slow);
            if epoch == self.head {
                self.head_span = self.span_of(epoch, slot);
            }
        }
        self.totals
    }

    /// The time `epoch` covers, `None` past what an `Instant` can hold.
    fn span_of(&self, epoch: u64, slot: usize) -> Option<HeadSpan> {
        let origin = self.origin?;
        let at = |e: u64| {
            let nanos = e.checked_mul(self.bucket_nanos)?;
            origin.checked_add(Duration::from_nanos(nanos))
        };
        Some(HeadSpan {
            start: at(epoch)?,
            end: at(epoch.checked_add(1)?)?,
            slot,
        })
    }

    /// The counts as of `now`, read only: the head does not move, so a
    /// reading ahead of the calls (a snapshot's `now` later than theirs)
    /// cannot make the calls that follow look late and drop them.
    pub(crate) fn counts_at(&self, now: Instant) -> WindowCounts {
        let Some(origin) = self.origin else {
            return self.totals.counts(); // no call yet
        };
        let epoch = self.epoch_since(origin, now);
        if epoch <= self.head {
            return self.totals.counts();
        }
        // The buckets `advance(epoch)` would expire: those `len` epochs or
        // more behind `epoch` (a slot's epoch is always within `len` of the
        // head, or the slot is empty).
        let mut counts = self.totals;
        for b in &self.buckets {
            if b.epoch.saturating_add(self.len()) <= epoch {
                counts.sub(b.counts);
            }
        }
        counts.counts()
    }

    /// The counts as of the latest call recorded.
    pub(crate) fn counts(&self) -> WindowCounts {
        self.totals.counts()
    }

    /// The current run of consecutive failures.
    pub(crate) const fn run(&self) -> u32 {
        self.run
    }

    /// Ends the run (on opening; `clear` ends it too).
    pub(crate) const fn reset_run(&mut self) {
        self.run = 0;
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
        self.origin = None;
        self.head = 0;
        self.head_span = None;
        self.totals = Tally::default();
        self.run = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn fastmod_is_modulo(a in any::<u32>(), d in 1..=MAX_COUNT_WINDOW) {
            prop_assert_eq!(fastmod(a, fastmod_m(d), d), a % d);
        }

        #[test]
        fn count_window_matches_the_last_n_calls(
            size in 1u32..40,
            calls in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..300),
            clear_at in proptest::option::of(0usize..300),
        ) {
            let w = CountWindow::new(size);
            let mut model: VecDeque<(bool, bool)> = VecDeque::new();
            for (i, &(failed, slow)) in calls.iter().enumerate() {
                if clear_at == Some(i) {
                    w.restart(0, 0);
                    model.clear();
                    prop_assert_eq!(w.counts(), WindowCounts::default());
                }
                let got = w.record(0, failed, slow).unwrap().counts;
                model.push_back((failed, slow));
                if model.len() > size as usize {
                    model.pop_front();
                }
                let want = WindowCounts {
                    calls: model.len() as u32,
                    failures: model.iter().filter(|c| c.0).count() as u32,
                    slow: model.iter().filter(|c| c.1).count() as u32,
                };
                prop_assert_eq!(got, want);
                prop_assert_eq!(w.counts(), want);
            }
        }

        #[test]
        fn time_window_matches_a_timestamped_model(
            buckets in 1u32..12,
            bucket_ms in 1u64..500,
            // (time step in ms, possibly backwards for late reports; failed; slow;
            // a reading of the counts that far ahead, after the call)
            calls in proptest::collection::vec(
                (-800i64..1_500, any::<bool>(), any::<bool>(), proptest::option::of(0u64..5_000)),
                0..200,
            ),
        ) {
            let start = Instant::now();
            let mut w = TimeWindow::new(Duration::from_millis(bucket_ms * u64::from(buckets)), buckets);
            let mut t: i64 = 0;
            let mut max_epoch: u64 = 0;
            let mut origin_t: Option<i64> = None;
            let mut events: Vec<(u64, bool, bool)> = Vec::new();
            let model = |events: &[(u64, bool, bool)], head: u64| {
                let live: Vec<_> = events
                    .iter()
                    .filter(|e| e.0 + u64::from(buckets) > head)
                    .collect();
                WindowCounts {
                    calls: live.len() as u32,
                    failures: live.iter().filter(|e| e.1).count() as u32,
                    slow: live.iter().filter(|e| e.2).count() as u32,
                }
            };
            for &(step, failed, slow, peek) in &calls {
                t = (t + step).max(0);
                let now = start + Duration::from_millis(t as u64);
                let got = w.record(now, failed, slow);
                // Model: epochs count from the first call; the window keeps
                // epochs within `buckets` of the latest one seen.
                let origin = *origin_t.get_or_insert(t);
                let epoch = (t.saturating_sub(origin).max(0) as u64) / bucket_ms;
                max_epoch = max_epoch.max(epoch);
                events.push((epoch, failed, slow));
                prop_assert_eq!(got.counts(), model(&events, max_epoch));
                // Reading ahead sees the window as of then, and changes
                // nothing: the model's head stays where the calls left it.
                if let Some(ahead) = peek {
                    let at = (t + ahead as i64 - origin).max(0) as u64;
                    let head = max_epoch.max(at / bucket_ms);
                    prop_assert_eq!(
                        w.counts_at(now + Duration::from_millis(ahead)),
                        model(&events, head)
                    );
                }
            }
        }
    }

    #[test]
    fn time_window_expires_whole_buckets() {
        let t0 = Instant::now();
        let mut w = TimeWindow::new(Duration::from_secs(10), 10);
        w.record(t0, true, false);
        w.record(t0 + Duration::from_millis(1_500), false, true);
        assert_eq!(w.counts_at(t0 + Duration::from_millis(9_999)).calls, 2);
        // The first bucket [0 s, 1 s) leaves the window at 10 s.
        assert_eq!(
            w.counts_at(t0 + Duration::from_secs(10)),
            WindowCounts {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
        assert_eq!(w.counts_at(t0 + Duration::from_secs(11)).calls, 0);
        // Reading ahead moved nothing: a call at 2 s still counts with the
        // two before it.
        assert_eq!(
            w.record(t0 + Duration::from_secs(2), false, false)
                .counts()
                .calls,
            3
        );
        // A late report for an expired bucket is dropped.
        assert_eq!(
            w.record(t0 + Duration::from_secs(11), false, false)
                .counts()
                .calls,
            2
        );
        assert_eq!(w.record(t0, true, false).counts().calls, 2);
    }

    /// More calls in one window than a `u32` counts (a long window, a high
    /// rate) neither panic nor wrap: they read as `u32::MAX`, and count
    /// exactly again as they expire.
    #[test]
    fn a_time_window_past_u32_max_calls_saturates() {
        let t0 = Instant::now();
        let mut w = TimeWindow::new(Duration::from_secs(2), 2);
        w.record(t0, false, false);
        // As if 2^32 − 2 more calls had come in the first bucket.
        let more = u64::from(u32::MAX) - 2;
        w.buckets[0].counts.calls += more;
        w.totals.calls += more;
        assert_eq!(w.record(t0, true, false).counts().calls, u32::MAX);
        let r = w.record(t0 + Duration::from_secs(1), true, true).counts();
        assert_eq!((r.calls, r.failures, r.slow), (u32::MAX, 2, 1));
        assert!(r.is_sane());
        // The first bucket expires; the second's call remains.
        let left = w.counts_at(t0 + Duration::from_secs(2));
        assert_eq!((left.calls, left.failures, left.slow), (1, 1, 1));
        assert_eq!(
            w.record(t0 + Duration::from_secs(2), false, false)
                .counts()
                .calls,
            2
        );
    }

    /// A half-open stage's results saturate too.
    #[test]
    fn window_counts_saturate() {
        let mut c = WindowCounts {
            calls: u32::MAX,
            failures: u32::MAX,
            slow: 0,
        };
        c.add(true, true);
        assert_eq!((c.calls, c.failures, c.slow), (u32::MAX, u32::MAX, 1));
    }

    #[test]
    fn a_full_window_of_successes_takes_more_without_a_write() {
        let w = CountWindow::new(3);
        // Filling the window writes; so does the first success after a failure.
        assert!(!w.is_steady());
        w.record(0, false, false).unwrap();
        w.record(0, true, false).unwrap();
        for _ in 0..3 {
            assert!(!w.is_steady());
            w.record(0, false, false).unwrap();
        }
        let head = w.hot.head.load(Relaxed);
        for _ in 0..10 {
            assert!(w.is_steady());
            assert_eq!(w.record(0, false, false).unwrap().counts.calls, 3);
        }
        assert_eq!(
            w.hot.head.load(Relaxed),
            head,
            "the steady state moved the head"
        );
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
        // A slow call still lands, in the slot the ring would have used.
        assert_eq!(w.record(0, false, true).unwrap().counts.slow, 1);
        assert!(!w.is_steady());
    }

    #[test]
    fn results_of_another_period_write_nothing() {
        let w = CountWindow::new(4);
        w.record(0, true, true).unwrap();
        let head = w.hot.head.load(Relaxed);
        // Period 4 (generation 1, closed) is not the window's yet.
        assert!(w.record(4, true, false).is_none());
        assert!(w.record(4, false, false).is_none());
        assert_eq!((w.counts().calls, w.run()), (1, 1));
        assert_eq!(
            w.hot.head.load(Relaxed),
            head,
            "a stale result claimed a slot"
        );
        // Moved on (a trip), the window takes nothing from period 0 either.
        w.retag(0, 5);
        assert!(w.record(0, true, false).is_none());
        assert_eq!((w.counts().calls, w.run()), (1, 1));
        // A new closed period starts empty, without a run, and is recorded.
        w.restart(5, 8);
        assert_eq!((w.counts(), w.run()), (WindowCounts::default(), 0));
        assert!(w.record(0, true, false).is_none());
        let r = w.record(8, true, false).unwrap();
        assert_eq!((r.counts.calls, r.counts.failures, r.run), (1, 1, 1));
        assert_eq!(
            w.hot.gate.load(Relaxed) & INSIDE,
            0,
            "a recorder never left"
        );
    }

    /// However recorders of the old period race `restart`, none of their
    /// results is left in the window once it returns.
    #[test]
    fn restart_waits_for_recorders_of_the_old_period() {
        use std::sync::atomic::AtomicBool;
        for round in 0..50u32 {
            let w = std::sync::Arc::new(CountWindow::new(5));
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let threads: Vec<_> = (0..3)
                .map(|t| {
                    let (w, stop) = (w.clone(), stop.clone());
                    std::thread::spawn(move || {
                        let mut i = t;
                        while !stop.load(Relaxed) {
                            i += 1;
                            w.record(0, i % 2 == 0, i % 3 == 0);
                        }
                    })
                })
                .collect();
            for _ in 0..round * 100 {
                std::hint::spin_loop();
            }
            w.restart(0, 4);
            // Checked while the old period's recorders still run.
            let after = w.counts();
            stop.store(true, Relaxed);
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(
                (after, w.counts(), w.run()),
                (WindowCounts::default(), WindowCounts::default(), 0)
            );
        }
    }

    #[test]
    fn concurrent_writers_keep_counts_equal_to_slots() {
        let w = std::sync::Arc::new(CountWindow::new(7));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        w.record(0, (i + t) % 3 == 0, (i * t) % 5 == 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut want = WindowCounts::default();
        for slot in &w.slots {
            let v = slot.load(Relaxed);
            if v & PRESENT != 0 {
                want.add(v & 2 != 0, v & 4 != 0);
            }
        }
        assert_eq!(w.counts(), want);
        assert_eq!(want.calls, 7);
    }
}
