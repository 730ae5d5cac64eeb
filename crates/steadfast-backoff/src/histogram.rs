//! A small, fixed-bucket latency histogram for choosing the hedge delay.
//!
//! 108 log-linear buckets (four per power of two, so a bucket is at most
//! 25 % wide) from 1 µs to about 4 minutes (longer ones share the last), as relaxed atomic counters:
//! recording allocates nothing and takes no lock. The percentile is
//! interpolated linearly within its bucket (as Prometheus'
//! `histogram_quantile` does), not rounded up to the bucket's upper bound,
//! which would hedge fewer requests than asked (p90 of latencies spread
//! evenly over 1-100 ms would be read as 98 ms, hedging 2 % instead of 10 %). The percentile is
//! recomputed every [`RECOMPUTE_EVERY`] samples and cached, so reading it is
//! one atomic load. Every [`DECAY_EVERY`] samples all counts are halved, so
//! the histogram follows a route whose latency changes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const SUB_BITS: u32 = 2;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered: up to 2^27 µs ≈ 134 s.
const MAX_POW: u32 = 27;
const BUCKETS: usize = (SUB + (MAX_POW as u64 - SUB_BITS as u64 + 1) * SUB) as usize;

/// Samples between two recomputations of the cached percentile.
pub(crate) const RECOMPUTE_EVERY: u32 = 16;
/// Samples between two halvings of every count.
pub(crate) const DECAY_EVERY: u32 = 4_096;

pub(crate) struct LatencyHistogram {
    buckets: [AtomicU32; BUCKETS],
    count: AtomicU32,
    percentile: f64,
    min_samples: u32,
    /// The cached percentile in nanoseconds, `u64::MAX` while there are too few samples.
    cached: AtomicU64,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("percentile", &self.percentile)
            .field("samples", &self.count.load(Ordering::Relaxed))
            .field("cached", &self.current())
            .finish_non_exhaustive()
    }
}

fn index(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if us < SUB {
        return us as usize;
    }
    let msb = us.ilog2();
    if msb > MAX_POW {
        return BUCKETS - 1;
    }
    let sub = (us >> (msb - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(msb - SUB_BITS) * SUB + sub) as usize
}

/// The inclusive lower bound of bucket `i`.
fn lower_bound(i: usize) -> Duration {
    if i == 0 {
        Duration::ZERO
    } else {
        upper_bound(i - 1)
    }
}

/// The exclusive upper bound of bucket `i`.
fn upper_bound(i: usize) -> Duration {
    let i = i as u64;
    if i < SUB {
        return Duration::from_micros(i + 1);
    }
    let shift = (i - SUB) / SUB;
    let sub = (i - SUB) % SUB;
    Duration::from_micros((SUB + sub + 1) << shift)
}

impl LatencyHistogram {
    pub(crate) fn new(percentile: f64, min_samples: u32) -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
            count: AtomicU32::new(0),
            percentile,
            min_samples: min_samples.max(1),
            cached: AtomicU64::new(u64::MAX),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        self.buckets[index(latency)].fetch_add(1, Ordering::Relaxed);
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(DECAY_EVERY) {
            // Approximate under concurrency (a sample may land between two
            // halvings), which is fine for a latency estimate.
            for b in &self.buckets {
                let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c / 2));
            }
        }
        if n.is_multiple_of(RECOMPUTE_EVERY) || n == self.min_samples {
            self.recompute();
        }
    }

    fn recompute(&self) {
        let counts: [u32; BUCKETS] =
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        let value = if total < u64::from(self.min_samples)
            && self.count.load(Ordering::Relaxed) < self.min_samples
        {
            u64::MAX
        } else {
            let target = ((total as f64 * self.percentile).ceil() as u64).max(1);
            let mut seen = 0u64;
            let mut value = upper_bound(BUCKETS - 1);
            for (i, &c) in counts.iter().enumerate() {
                let c = u64::from(c);
                if seen + c >= target {
                    // The samples of a bucket are taken as spread evenly over it.
                    let (lo, hi) = (lower_bound(i), upper_bound(i));
                    value = lo
                        + hi.saturating_sub(lo)
                            .mul_f64((target - seen) as f64 / c as f64);
                    break;
                }
                seen += c;
            }
            u64::try_from(value.as_nanos()).unwrap_or(u64::MAX - 1)
        };
        self.cached.store(value, Ordering::Relaxed);
    }

    /// The latency percentile, once enough samples were recorded.
    pub(crate) fn current(&self) -> Option<Duration> {
        match self.cached.load(Ordering::Relaxed) {
            u64::MAX => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        assert_eq!(BUCKETS, 108);
        assert_eq!(index(Duration::ZERO), 0);
        for i in 0..BUCKETS - 1 {
            let lo = if i == 0 {
                Duration::ZERO
            } else {
                upper_bound(i - 1)
            };
            assert_eq!(index(lo), i, "lower bound of bucket {i}");
            assert_eq!(
                index(upper_bound(i).saturating_sub(Duration::from_micros(1))),
                i,
                "upper end of {i}"
            );
        }
        assert_eq!(index(Duration::from_secs(3_600)), BUCKETS - 1);
    }

    #[test]
    fn percentile_needs_enough_samples_then_tracks_the_tail() {
        let h = LatencyHistogram::new(0.9, 20);
        for _ in 0..19 {
            h.record(Duration::from_millis(10));
        }
        assert_eq!(h.current(), None);
        h.record(Duration::from_millis(10));
        let p = h.current().unwrap();
        assert!(
            p > Duration::from_millis(10) && p <= Duration::from_micros(12_288),
            "{p:?}"
        );
        // 20 % slow samples move p90 to the slow bucket.
        for _ in 0..12 {
            h.record(Duration::from_millis(500));
        }
        let p = h.current().unwrap();
        assert!(
            p > Duration::from_millis(500) && p < Duration::from_millis(630),
            "{p:?}"
        );
    }

    #[test]
    fn the_percentile_is_interpolated_within_its_bucket() {
        // Latencies spread evenly over 1-100 ms: p90 is 90 ms, not the upper
        // bound of its bucket (98.3 ms).
        let h = LatencyHistogram::new(0.9, 50);
        for _ in 0..10 {
            for ms in 1..=100 {
                h.record(Duration::from_millis(ms));
            }
        }
        let p = h.current().unwrap();
        assert!(
            p > Duration::from_millis(87) && p < Duration::from_millis(93),
            "{p:?}"
        );
    }

    proptest! {
        #[test]
        fn the_percentile_lies_in_the_bucket_of_the_exact_one(
            mut samples in proptest::collection::vec(0u64..200_000_000, 1..400),
            percentile in 0.01f64..=1.0,
        ) {
            let h = LatencyHistogram::new(percentile, 1);
            for &us in &samples {
                h.record(Duration::from_micros(us));
            }
            h.recompute();
            samples.sort_unstable();
            let rank = ((samples.len() as f64 * percentile).ceil() as usize).max(1);
            let exact = Duration::from_micros(samples[rank - 1]);
            let i = index(exact);
            let got = h.current().unwrap();
            prop_assert!(
                lower_bound(i) <= got && got <= upper_bound(i),
                "{got:?} outside bucket {i} of {exact:?}"
            );
        }

        #[test]
        fn every_latency_lands_in_a_bucket_that_bounds_it(us in 0u64..1_000_000_000) {
            let d = Duration::from_micros(us);
            let i = index(d);
            prop_assert!(i < BUCKETS);
            if i < BUCKETS - 1 {
                prop_assert!(d < upper_bound(i));
                // At most 25 % wide (plus the 1 µs rounding of tiny buckets).
                prop_assert!(upper_bound(i).as_micros() as f64 <= (us as f64 + 1.0) * 1.25 + 1.0);
            }
        }
    }
}
