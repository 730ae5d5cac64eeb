//! Fixed-bucket histograms: recording is one relaxed-cost atomic add into a
//! bucket chosen from the value's leading zeros, so the request path never
//! allocates, locks or loops.
//!
//! Buckets are log-linear (as in HdrHistogram with two significant bits):
//! each power of two is split into `2^sub_bits` equal buckets, so an
//! estimate read back from a bucket is within `1 / 2^sub_bits` of the true
//! value (25 % for the duration layout, whose quantiles interpolate inside
//! the bucket and are usually much closer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How values map to buckets: an underflow bucket `[0, 2^min_exp)`,
/// `2^sub_bits` buckets per power of two up to `2^max_exp`, and an overflow
/// bucket `[2^max_exp, u64::MAX]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    min_exp: u32,
    max_exp: u32,
    sub_bits: u32,
}

impl Layout {
    /// Durations in nanoseconds: below 1.024 µs is one bucket, above
    /// 2^47 ns (about 39 hours) is one bucket, 4 buckets per octave between.
    pub(crate) const DURATION: Self = Self {
        min_exp: 10,
        max_exp: 47,
        sub_bits: 2,
    };

    /// Small counts (requests per connection): one bucket per power of two
    /// up to 2^32.
    pub(crate) const COUNT: Self = Self {
        min_exp: 0,
        max_exp: 32,
        sub_bits: 0,
    };

    pub(crate) const fn len(self) -> usize {
        (((self.max_exp - self.min_exp) << self.sub_bits) + 2) as usize
    }

    #[inline]
    pub(crate) const fn index(self, value: u64) -> usize {
        if value < (1 << self.min_exp) {
            return 0;
        }
        let exp = value.ilog2();
        if exp >= self.max_exp {
            return self.len() - 1;
        }
        let sub = (value >> (exp - self.sub_bits)) & ((1 << self.sub_bits) - 1);
        1 + (((exp - self.min_exp) << self.sub_bits) as usize) + sub as usize
    }

    /// Inclusive bounds of bucket `index`.
    pub(crate) const fn bounds(self, index: usize) -> (u64, u64) {
        if index == 0 {
            return (0, (1 << self.min_exp) - 1);
        }
        if index >= self.len() - 1 {
            return (1 << self.max_exp, u64::MAX);
        }
        let i = (index - 1) as u32;
        let exp = self.min_exp + (i >> self.sub_bits);
        let sub = (i & ((1 << self.sub_bits) - 1)) as u64;
        let width = 1u64 << (exp - self.sub_bits);
        let lower = (1u64 << exp) + sub * width;
        (lower, lower + width - 1)
    }
}

/// The live histogram: one `AtomicU64` per bucket, allocated once when the
/// host is first seen.
pub(crate) struct AtomicHistogram {
    layout: Layout,
    buckets: Box<[AtomicU64]>,
}

impl AtomicHistogram {
    pub(crate) fn new(layout: Layout) -> Self {
        Self {
            layout,
            buckets: (0..layout.len()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records one value. `Release` so that a reader that sees this count
    /// (with `Acquire`) also sees every counter the caller bumped before.
    #[inline]
    pub(crate) fn record(&self, value: u64) {
        self.buckets[self.layout.index(value)].fetch_add(1, Ordering::Release);
    }

    #[inline]
    pub(crate) fn record_duration(&self, value: Duration) {
        self.record(duration_to_nanos(value));
    }

    /// Copies the bucket counts into `into` (added, so hosts can be merged).
    pub(crate) fn add_to(&self, into: &mut RawHistogram) {
        debug_assert_eq!(self.layout, into.layout);
        for (sum, bucket) in into.counts.iter_mut().zip(self.buckets.iter()) {
            *sum += bucket.load(Ordering::Acquire);
        }
    }
}

impl std::fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = RawHistogram::new(self.layout);
        self.add_to(&mut raw);
        f.debug_struct("AtomicHistogram")
            .field("count", &raw.count())
            .finish_non_exhaustive()
    }
}

/// Plain bucket counts read out of one or more [`AtomicHistogram`]s.
#[derive(Debug, Clone)]
pub(crate) struct RawHistogram {
    layout: Layout,
    counts: Vec<u64>,
}

impl RawHistogram {
    pub(crate) fn new(layout: Layout) -> Self {
        Self {
            layout,
            counts: vec![0; layout.len()],
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        debug_assert_eq!(self.layout, other.layout);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub(crate) fn snapshot<T: HistogramValue>(&self) -> HistogramSnapshot<T> {
        let buckets: Vec<Bucket<T>> = self
            .counts
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(index, &count)| {
                let (lower, upper) = self.layout.bounds(index);
                Bucket {
                    lower: T::from_raw(lower),
                    upper: T::from_raw(upper),
                    count,
                }
            })
            .collect();
        HistogramSnapshot::from_buckets(buckets)
    }
}

pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::time::Duration {}
    impl Sealed for u64 {}
}

/// A value a [`HistogramSnapshot`] can hold: [`Duration`] or `u64`.
pub trait HistogramValue: sealed::Sealed + Copy + std::fmt::Debug + PartialEq {
    /// From the raw bucket unit (nanoseconds for durations).
    fn from_raw(raw: u64) -> Self;
    /// To the raw bucket unit.
    fn to_raw(self) -> u64;
}

impl HistogramValue for Duration {
    fn from_raw(raw: u64) -> Self {
        Duration::from_nanos(raw)
    }
    fn to_raw(self) -> u64 {
        duration_to_nanos(self)
    }
}

impl HistogramValue for u64 {
    fn from_raw(raw: u64) -> Self {
        raw
    }
    fn to_raw(self) -> u64 {
        self
    }
}

/// One non-empty bucket: `count` observations in `lower..=upper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Bucket<T> {
    /// Smallest value in the bucket.
    pub lower: T,
    /// Largest value in the bucket (inclusive).
    pub upper: T,
    /// Observations in the bucket.
    pub count: u64,
}

/// A histogram read at one instant: the count, quantile estimates, and the
/// non-empty buckets (so exporters and users can compute more).
///
/// Estimates interpolate linearly inside the bucket holding the rank, so
/// they are within one bucket width of the truth: 25 % for durations, a
/// factor of two for counts. With no observations every estimate is zero.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HistogramSnapshot<T> {
    /// Number of observations.
    pub count: u64,
    /// Median estimate.
    pub p50: T,
    /// 90th percentile estimate.
    pub p90: T,
    /// 99th percentile estimate.
    pub p99: T,
    /// Upper bound of the bucket holding the largest observation.
    pub max: T,
    /// Non-empty buckets, ascending.
    pub buckets: Vec<Bucket<T>>,
}

impl<T: HistogramValue> HistogramSnapshot<T> {
    fn from_buckets(buckets: Vec<Bucket<T>>) -> Self {
        let mut snapshot = Self {
            count: buckets.iter().map(|b| b.count).sum(),
            p50: T::from_raw(0),
            p90: T::from_raw(0),
            p99: T::from_raw(0),
            max: buckets.last().map_or(T::from_raw(0), |b| b.upper),
            buckets,
        };
        let q = |q| snapshot.quantile(q).unwrap_or(T::from_raw(0));
        (snapshot.p50, snapshot.p90, snapshot.p99) = (q(0.5), q(0.9), q(0.99));
        snapshot
    }

    /// Estimates the `q` quantile (`0.0..=1.0`, clamped); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<T> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        // Rank of the wanted observation, 1-based.
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen: u64 = 0;
        for bucket in &self.buckets {
            // Saturating throughout: a deserialized snapshot may hold
            // anything, and an estimate must not panic on it.
            if seen.saturating_add(bucket.count) >= rank {
                let (lower, upper) = (bucket.lower.to_raw(), bucket.upper.to_raw());
                if upper == u64::MAX {
                    // The overflow bucket has no meaningful width.
                    return Some(bucket.lower);
                }
                let fraction = (rank - seen) as f64 / bucket.count as f64;
                let width = upper.saturating_sub(lower).saturating_add(1) as f64;
                let raw = lower.saturating_add((width * fraction) as u64);
                return Some(T::from_raw(raw.min(upper)));
            }
            seen = seen.saturating_add(bucket.count);
        }
        self.buckets.last().map(|b| b.upper)
    }

    /// Estimates the mean from bucket midpoints; `None` when empty.
    pub fn mean(&self) -> Option<T> {
        if self.count == 0 {
            return None;
        }
        let total: f64 = self
            .buckets
            .iter()
            .map(|b| midpoint(b.lower.to_raw(), b.upper.to_raw()) as f64 * b.count as f64)
            .sum();
        Some(T::from_raw((total / self.count as f64) as u64))
    }
}

/// The value that stands for a bucket: its midpoint, or its lower bound for
/// the open-ended overflow bucket.
pub(crate) fn midpoint(lower: u64, upper: u64) -> u64 {
    if upper == u64::MAX {
        lower
    } else {
        lower + upper.saturating_sub(lower) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layouts_have_the_documented_sizes() {
        assert_eq!(Layout::DURATION.len(), 150);
        assert_eq!(Layout::COUNT.len(), 34);
    }

    #[test]
    fn duration_buckets_are_log_linear() {
        let l = Layout::DURATION;
        assert_eq!(l.index(0), 0);
        assert_eq!(l.index(1023), 0);
        assert_eq!(l.index(1024), 1);
        assert_eq!(l.bounds(1), (1024, 1024 + 255));
        assert_eq!(l.bounds(4), (1024 + 768, 2047));
        assert_eq!(l.index(2048), 5);
        assert_eq!(l.index(u64::MAX), l.len() - 1);
        assert_eq!(l.bounds(l.len() - 1), (1 << 47, u64::MAX));
    }

    #[test]
    fn count_buckets_are_powers_of_two() {
        let l = Layout::COUNT;
        assert_eq!(l.index(0), 0);
        assert_eq!(l.index(1), 1);
        assert_eq!(l.index(2), 2);
        assert_eq!(l.index(3), 2);
        assert_eq!(l.bounds(3), (4, 7));
    }

    proptest! {
        /// Snapshots have public fields and deserialize from anything: the
        /// estimates never panic on one that no histogram produced.
        #[test]
        fn estimates_of_any_snapshot_do_not_panic(
            count in any::<u64>(),
            buckets in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 0..5),
            q in any::<f64>(),
        ) {
            let s = HistogramSnapshot::<u64> {
                count,
                p50: 0,
                p90: 0,
                p99: 0,
                max: 0,
                buckets: buckets
                    .into_iter()
                    .map(|(lower, upper, count)| Bucket { lower, upper, count })
                    .collect(),
            };
            let _ = (s.quantile(q), s.mean());
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = AtomicHistogram::new(Layout::DURATION);
        for ms in 1..=100 {
            h.record_duration(Duration::from_millis(ms));
        }
        let mut raw = RawHistogram::new(Layout::DURATION);
        h.add_to(&mut raw);
        let s: HistogramSnapshot<Duration> = raw.snapshot();
        assert_eq!(s.count, 100);
        let close = |got: Duration, want_ms: u64| {
            let want = Duration::from_millis(want_ms).as_secs_f64();
            let err = (got.as_secs_f64() - want).abs() / want;
            assert!(err < 0.25, "got {got:?}, want ~{want_ms} ms");
        };
        close(s.p50, 50);
        close(s.p90, 90);
        close(s.p99, 99);
        close(s.mean().unwrap(), 50);
        assert!(s.max >= Duration::from_millis(100));
    }

    #[test]
    fn empty_snapshot_is_all_zero() {
        let s: HistogramSnapshot<u64> = RawHistogram::new(Layout::COUNT).snapshot();
        assert_eq!((s.count, s.p50, s.p99, s.max), (0, 0, 0, 0));
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.mean(), None);
    }

    proptest! {
        #[test]
        fn every_value_lands_in_a_bucket_that_contains_it(value: u64) {
            for layout in [Layout::DURATION, Layout::COUNT] {
                let index = layout.index(value);
                prop_assert!(index < layout.len());
                let (lower, upper) = layout.bounds(index);
                prop_assert!(lower <= value && value <= upper, "{value} not in {lower}..={upper}");
            }
        }

        #[test]
        fn buckets_tile_the_range(index in 0usize..150) {
            let layout = Layout::DURATION;
            let (_, upper) = layout.bounds(index);
            if index + 1 < layout.len() {
                prop_assert_eq!(layout.bounds(index + 1).0, upper + 1);
            }
        }

        #[test]
        fn quantiles_are_ordered_and_within_recorded_buckets(
            values in proptest::collection::vec(0u64..10_000_000_000, 1..200),
        ) {
            let h = AtomicHistogram::new(Layout::DURATION);
            for &v in &values {
                h.record(v);
            }
            let mut raw = RawHistogram::new(Layout::DURATION);
            h.add_to(&mut raw);
            let s: HistogramSnapshot<u64> = raw.snapshot();
            prop_assert_eq!(s.count, values.len() as u64);
            prop_assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max);
            let min = *values.iter().min().unwrap();
            let max = *values.iter().max().unwrap();
            let lo = Layout::DURATION.bounds(Layout::DURATION.index(min)).0;
            let hi = Layout::DURATION.bounds(Layout::DURATION.index(max)).1;
            prop_assert!(lo <= s.p50 && s.max <= hi);
        }
    }
}
