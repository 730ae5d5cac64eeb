//! Property tests of the GCRA cores against a reference token bucket.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use steadfast_limit::{Gcra, KeyedRateLimiter, Quota, RateLimiter};

/// The textbook token bucket in integer nanoseconds: `credit` is the time
/// worth of tokens held, capped at `burst × interval`; a request costs one
/// interval.
struct Bucket {
    interval: u64,
    capacity: u64,
    credit: u64,
    last: u64,
}

impl Bucket {
    fn new(q: Quota) -> Self {
        let interval = q.interval_nanos();
        // Saturating where the limiter does (about 146 years of credit).
        let capacity = (u128::from(interval) * u128::from(q.burst_size().get()))
            .min(u128::from(u64::MAX / 4)) as u64;
        Self {
            interval,
            capacity,
            credit: capacity,
            last: 0,
        }
    }

    fn admit(&mut self, now: u64) -> bool {
        self.credit = (self.credit + (now - self.last)).min(self.capacity);
        self.last = now;
        if self.credit >= self.interval {
            self.credit -= self.interval;
            true
        } else {
            false
        }
    }
}

fn quota() -> impl Strategy<Value = Quota> {
    let nz = |n: u32| NonZeroU32::new(n).unwrap();
    prop_oneof![
        (1u32..2_000, 1u32..50)
            .prop_map(move |(rate, burst)| Quota::per_second(nz(rate)).burst(nz(burst))),
        // Fractional rates (1 per 3 s, 7 per 10 s) that no whole number of
        // nanoseconds divides evenly.
        (1u32..10, 1u64..10, 1u32..5).prop_map(move |(n, secs, burst)| {
            Quota::new(nz(n), Duration::from_secs(secs))
                .unwrap()
                .burst(nz(burst))
        }),
        // Bursts far beyond what the arrivals use, up to u32::MAX.
        (
            1u32..2_000,
            prop_oneof![1_000_000u32..=u32::MAX, Just(u32::MAX)]
        )
            .prop_map(move |(rate, burst)| Quota::per_second(nz(rate)).burst(nz(burst))),
    ]
}

/// Arrival times: non-decreasing, with gaps from none to a few seconds.
fn arrivals() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![Just(0u64), 0u64..2_000_000, 0u64..3_000_000_000],
        1..400,
    )
    .prop_map(|gaps| {
        gaps.into_iter()
            .scan(0u64, |t, g| {
                *t += g;
                Some(*t)
            })
            .collect()
    })
}

/// No window [a, b] of admitted times holds more than burst + (b - a) / interval.
fn assert_bound(admitted: &mut [u64], q: Quota) -> Result<(), TestCaseError> {
    admitted.sort_unstable();
    let burst = u64::from(q.burst_size().get());
    for i in 0..admitted.len() {
        for j in i..admitted.len() {
            let count = (j - i + 1) as u64;
            let allowed = burst + (admitted[j] - admitted[i]) / q.interval_nanos();
            prop_assert!(
                count <= allowed,
                "{count} admitted in [{}, {}], allowed {allowed}",
                admitted[i],
                admitted[j]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The GCRA decides exactly as the reference token bucket does.
    #[test]
    fn gcra_matches_the_token_bucket(q in quota(), times in arrivals()) {
        let gcra = Gcra::new(q);
        let mut bucket = Bucket::new(q);
        let mut tat = 0;
        for &now in &times {
            let gcra_says = match gcra.decide(tat, now) {
                Ok(next) => { tat = next; true }
                Err(earliest) => {
                    prop_assert!(earliest > now);
                    // The earliest time is exact: one nanosecond earlier still refuses.
                    prop_assert!(gcra.decide(tat, earliest - 1).is_err());
                    prop_assert!(gcra.decide(tat, earliest).is_ok());
                    false
                }
            };
            prop_assert_eq!(gcra_says, bucket.admit(now), "at {}", now);
        }
    }

    /// The limiter never admits more than burst + rate × elapsed over any
    /// interval, and never refuses when the bucket has a token.
    #[test]
    fn limiter_never_exceeds_burst_plus_rate(q in quota(), times in arrivals()) {
        let limiter = RateLimiter::new(q);
        let mut bucket = Bucket::new(q);
        let mut admitted = Vec::new();
        for &now in &times {
            let ok = limiter.check_at(now).is_ok();
            prop_assert_eq!(ok, bucket.admit(now));
            if ok {
                admitted.push(now);
            }
        }
        assert_bound(&mut admitted, q)?;
    }

    /// Out-of-order clocks (threads that read the time, then lose the CPU)
    /// cannot break the bound either.
    #[test]
    fn the_bound_holds_with_jittered_clocks(
        q in quota(),
        times in arrivals(),
        jitter in prop::collection::vec(0u64..5_000_000, 400),
    ) {
        let limiter = RateLimiter::new(q);
        let mut admitted = Vec::new();
        for (&t, &j) in times.iter().zip(&jitter) {
            let now = t.saturating_sub(j);
            if limiter.check_at(now).is_ok() {
                admitted.push(now);
            }
        }
        assert_bound(&mut admitted, q)?;
    }

    /// Eviction of idle keys is exact: with room for every active key, the
    /// keyed limiter decides exactly as unbounded per-key state would, and
    /// it never holds more than `max_keys`.
    #[test]
    fn keyed_eviction_changes_no_decision_and_memory_stays_bounded(
        q in quota(),
        events in prop::collection::vec((0u16..500, prop_oneof![Just(0u64), 0u64..5_000_000, 0u64..500_000_000]), 1..1_500),
        max_keys in 1usize..64,
    ) {
        let exact = KeyedRateLimiter::builder(q).max_keys(1_000_000).build::<u16>().unwrap();
        let bounded = KeyedRateLimiter::builder(q).max_keys(max_keys).build::<u16>().unwrap();
        let gcra = Gcra::new(q);
        let mut reference: HashMap<u16, u64> = HashMap::new();
        let mut now = 0;
        for (key, gap) in events {
            now += gap;
            let tat = reference.entry(key).or_insert(0);
            let expected = gcra.decide(*tat, now).map(|next| *tat = next).is_ok();
            prop_assert_eq!(exact.check_key_at(&key, now).is_ok(), expected);
            let _ = bounded.check_key_at(&key, now);
            prop_assert!(bounded.len() <= max_keys, "{} keys > {max_keys}", bounded.len());
        }
        prop_assert_eq!(exact.snapshot().forced_evictions, 0);
    }
}

/// An hour of requests every millisecond: exactly `burst + elapsed /
/// interval` admitted, for rates that divide a second evenly and for those
/// that do not (no drift either way); and a burst of `u32::MAX` far in the
/// future neither overflows nor refuses.
#[test]
fn long_runs_neither_drift_nor_overflow() {
    let nz = |n: u32| NonZeroU32::new(n).unwrap();
    const MS: u64 = 1_000_000;
    const HOUR: u64 = 3_600_000 * MS;
    for q in [
        Quota::new(nz(1), Duration::from_secs(3)).unwrap(),
        Quota::per_second(nz(3)),
        Quota::per_second(nz(7)).burst(nz(2)),
        Quota::new(nz(7), Duration::from_secs(10)).unwrap(),
    ] {
        let limiter = RateLimiter::new(q);
        let admitted = (0..=HOUR / MS)
            .filter(|i| limiter.check_at(i * MS).is_ok())
            .count() as u64;
        let expected = u64::from(q.burst_size().get()) + HOUR / q.interval_nanos();
        assert_eq!(admitted, expected, "{q:?}");
    }
    let limiter = RateLimiter::new(Quota::per_hour(nz(1)).burst(nz(u32::MAX)));
    for now in [0, HOUR, u64::MAX / 8] {
        for _ in 0..1_000 {
            assert!(limiter.check_at(now).is_ok());
        }
    }
}

/// Threads racing on one limiter with the real clock: never more than
/// burst + rate × elapsed (an upper bound only; nothing about speed).
#[test]
fn concurrent_checks_respect_the_bound() {
    let q = Quota::per_second(NonZeroU32::new(1_000).unwrap()).burst(NonZeroU32::new(20).unwrap());
    // The clock starts before the limiter's epoch, so its window covers the limiter's.
    let start = std::time::Instant::now();
    let limiter = Arc::new(RateLimiter::new(q));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let limiter = limiter.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < Duration::from_millis(200) {
                    n += u64::from(limiter.check().is_ok());
                }
                n
            })
        })
        .collect();
    let admitted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let elapsed = start.elapsed();
    let bound = 20 + (elapsed.as_nanos() / u128::from(q.interval_nanos())) as u64 + 1;
    assert!(admitted <= bound, "{admitted} admitted > {bound}");
    assert!(admitted >= 20, "the burst alone is 20; got {admitted}");
    let s = limiter.snapshot();
    assert_eq!((s.queued, s.waiting), (0, 0));
}
