//! Sliding windows over recent calls: a lock-free ring of the last N calls
//! and a bucketed window over the last T. Both are sized once at build time
//! and never allocate afterwards.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

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

    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failed);
        self.slow += u32::from(slow);
    }

    fn sub(&mut self, other: Self) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
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

/// The last `size` calls, lock-free.
///
/// A ring of one byte per call plus one packed counter word
/// (calls | failures | slow). Recording claims a position with one
/// `fetch_add`; when the new call reads the same as the one it replaces (the
/// steady state of a healthy service) nothing else is written. Otherwise the
/// slot is swapped and the counters move by the exact difference, so the
/// counters always equal the sum of the slots, however writers interleave.
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
    head: AtomicU32,
    counts: AtomicU64,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        assert!(
            size > 0 && size <= MAX_COUNT_WINDOW,
            "validated by the config"
        );
        Self {
            hot: Hot {
                head: AtomicU32::new(0),
                counts: AtomicU64::new(0),
            },
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            size,
            full_healthy: CONTRIBUTION[usize::from(HEALTHY)] * u64::from(size),
            fastmod_m: fastmod_m(size),
        }
    }

    /// Records one call and returns the counts including it.
    #[inline]
    pub(crate) fn record(&self, failed: bool, slow: bool) -> WindowCounts {
        let new = slot_value(failed, slow);
        let moved = if new == HEALTHY && self.is_steady() {
            None
        } else {
            self.place(new)
        };
        WindowCounts::unpack(moved.unwrap_or_else(|| self.hot.counts.load(Relaxed)))
    }

    /// Records a successful, fast call; `false` if the window was already
    /// full of them, and so unchanged.
    #[inline]
    pub(crate) fn record_healthy(&self) -> bool {
        if self.is_steady() {
            return false;
        }
        self.place(HEALTHY);
        true
    }

    /// Whether the window is full of successful, fast calls: the steady
    /// state of a healthy service, where every slot reads the same, so the
    /// ring is the same after one more such call whichever slot it would
    /// replace. Recording one then writes nothing, not even the head, and
    /// the window's words stay shared in every core's cache. (Linearised at
    /// this load: a racing writer's call lands after it.)
    #[inline]
    fn is_steady(&self) -> bool {
        self.hot.counts.load(Relaxed) == self.full_healthy
    }

    /// Puts `new` in the next slot; returns the packed counters if they moved.
    #[inline]
    fn place(&self, new: u8) -> Option<u64> {
        // The head wraps at 2^32, which reorders one slot once per four
        // billion calls; the counters stay exact.
        let pos = self.hot.head.fetch_add(1, Relaxed);
        let idx = fastmod(pos, self.fastmod_m, self.size) as usize;
        let slot = &self.slots[idx];
        // Same value as the call it replaces (the steady state of a healthy
        // service): the swap would change nothing, so skip it (linearised at
        // this load).
        if slot.load(Relaxed) == new {
            return None;
        }
        let old = slot.swap(new, Relaxed);
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

    /// Empties the window (on close and reset). Slot by slot with the same
    /// delta discipline as `record`, so a racing straggler cannot corrupt
    /// the counters.
    pub(crate) fn clear(&self) {
        let mut removed = 0u64;
        for slot in &self.slots {
            removed = removed.wrapping_add(CONTRIBUTION[usize::from(slot.swap(0, Relaxed) & 7)]);
        }
        self.hot.counts.fetch_sub(removed, Relaxed);
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

/// The calls of the last `duration`, in buckets of `duration / buckets`.
///
/// Time is cut into epochs of one bucket length, counted from the first call
/// seen. At the latest epoch `E` seen, the window holds the calls of epochs
/// `E − buckets + 1 ..= E`; whole buckets expire as time moves on. A call
/// reported late (its `now` earlier than one already seen) still counts in
/// its own bucket if that bucket is in the window, and is dropped otherwise.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
    origin: Option<Instant>,
    head: u64,
    totals: WindowCounts,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    counts: WindowCounts,
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
            totals: WindowCounts::default(),
        }
    }

    fn epoch(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
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
                counts: WindowCounts::default(),
            };
        }
        self.head = epoch;
    }

    /// Records one call at `now` and returns the counts including it.
    pub(crate) fn record(&mut self, now: Instant, failed: bool, slow: bool) -> WindowCounts {
        let epoch = self.epoch(now);
        self.advance(epoch);
        if epoch + self.len() > self.head {
            let b = &mut self.buckets[(epoch % self.len()) as usize];
            debug_assert_eq!(b.epoch, epoch);
            b.counts.add(failed, slow);
            self.totals.add(failed, slow);
        }
        self.totals
    }

    /// The counts as of `now`.
    pub(crate) fn counts_at(&mut self, now: Instant) -> WindowCounts {
        let epoch = self.epoch(now);
        self.advance(epoch);
        self.totals
    }

    /// The counts as of the latest call recorded.
    pub(crate) const fn counts(&self) -> WindowCounts {
        self.totals
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
        self.origin = None;
        self.head = 0;
        self.totals = WindowCounts::default();
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
                    w.clear();
                    model.clear();
                    prop_assert_eq!(w.counts(), WindowCounts::default());
                }
                let got = w.record(failed, slow);
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
            // (time step in ms, possibly backwards for late reports; failed; slow)
            calls in proptest::collection::vec((-800i64..1_500, any::<bool>(), any::<bool>()), 0..200),
        ) {
            let start = Instant::now();
            let mut w = TimeWindow::new(Duration::from_millis(bucket_ms * u64::from(buckets)), buckets);
            let mut t: i64 = 0;
            let mut max_epoch: u64 = 0;
            let mut origin_t: Option<i64> = None;
            let mut events: Vec<(u64, bool, bool)> = Vec::new();
            for &(step, failed, slow) in &calls {
                t = (t + step).max(0);
                let now = start + Duration::from_millis(t as u64);
                let got = w.record(now, failed, slow);
                // Model: epochs count from the first call; the window keeps
                // epochs within `buckets` of the latest one seen.
                let origin = *origin_t.get_or_insert(t);
                let epoch = (t.saturating_sub(origin).max(0) as u64) / bucket_ms;
                max_epoch = max_epoch.max(epoch);
                events.push((epoch, failed, slow));
                let live: Vec<_> = events
                    .iter()
                    .filter(|e| e.0 + u64::from(buckets) > max_epoch)
                    .collect();
                let want = WindowCounts {
                    calls: live.len() as u32,
                    failures: live.iter().filter(|e| e.1).count() as u32,
                    slow: live.iter().filter(|e| e.2).count() as u32,
                };
                prop_assert_eq!(got, want);
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
        // A late report for an expired bucket is dropped.
        assert_eq!(w.record(t0, true, false).calls, 0);
    }

    #[test]
    fn a_full_window_of_successes_takes_more_without_a_write() {
        let w = CountWindow::new(3);
        // Filling the window writes; so does the first success after a failure.
        assert!(w.record_healthy());
        w.record(true, false);
        for _ in 0..3 {
            assert!(w.record_healthy());
        }
        let head = w.hot.head.load(Relaxed);
        for _ in 0..10 {
            assert!(!w.record_healthy());
            assert_eq!(w.record(false, false).calls, 3);
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
        assert_eq!(w.record(false, true).slow, 1);
        assert!(w.record_healthy());
    }

    #[test]
    fn concurrent_writers_keep_counts_equal_to_slots() {
        let w = std::sync::Arc::new(CountWindow::new(7));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        w.record((i + t) % 3 == 0, (i * t) % 5 == 0);
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
