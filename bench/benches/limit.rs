//! Rate and concurrency limits: the cost a request pays when the limit is
//! not hit. steadfast-limit side by side with governor (direct and keyed)
//! and with `tokio::sync::Semaphore`, each pair in one criterion group.
//!
//! `cargo bench -p steadfast-bench --bench limit -- --warm-up-time 1 --measurement-time 3`
//!
//! Quotas are large enough that every check passes, so what is measured is
//! the admitted path: reading the clock, the GCRA compare-and-swap, and for
//! keyed limiters the map lookup. governor reads the CPU's time-stamp
//! counter (quanta); steadfast reads `tokio::time::Instant` by default (so
//! tests can pause time) or, with `Clock::Quanta`, the same counter as
//! governor. The `check_at` line shows the GCRA alone, clock excluded.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use steadfast_limit::{Bulkhead, Clock, ConcurrencyConfig, KeyedRateLimiter, Quota, RateLimiter};

/// One billion per second with a burst of as many: never refuses.
const HUGE: NonZeroU32 = NonZeroU32::new(1_000_000_000).unwrap();
/// Distinct keys of the keyed benchmarks, used round-robin.
const KEYS: u64 = 1_000;
/// Per key: 1,000 per second with a burst of a billion. Each key is checked
/// every ~100 µs, so its TAT runs ahead of the clock: every check passes and
/// every key stays live (a key whose TAT falls behind the clock is idle, and
/// steadfast forgets it; the last group measures that path on its own).
const PER_KEY: NonZeroU32 = NonZeroU32::new(1_000).unwrap();

fn direct(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit/direct_check");
    let ours = RateLimiter::new(Quota::per_second(HUGE).burst(HUGE));
    let ours_tsc = RateLimiter::new(Quota::per_second(HUGE).burst(HUGE)).with_clock(Clock::Quanta);
    let theirs = governor::RateLimiter::direct(governor::Quota::per_second(HUGE).allow_burst(HUGE));
    g.bench_function("steadfast RateLimiter::check (Clock::Quanta)", |b| {
        b.iter(|| black_box(&ours_tsc).check().unwrap());
    });
    g.bench_function("steadfast RateLimiter::check (Clock::Tokio)", |b| {
        b.iter(|| black_box(&ours).check().unwrap());
    });
    g.bench_function("governor RateLimiter::direct check", |b| {
        b.iter(|| black_box(&theirs).check().unwrap());
    });
    let now = ours.nanos_since_epoch(tokio::time::Instant::now());
    g.bench_function("steadfast RateLimiter::check_at (no clock read)", |b| {
        b.iter(|| black_box(&ours).check_at(black_box(now)).unwrap());
    });
    g.finish();
}

fn keyed(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit/keyed_check");
    let ours = KeyedRateLimiter::builder(Quota::per_second(PER_KEY).burst(HUGE))
        .build::<u64>()
        .unwrap();
    let ours_tsc = KeyedRateLimiter::builder(Quota::per_second(PER_KEY).burst(HUGE))
        .clock(Clock::Quanta)
        .build::<u64>()
        .unwrap();
    let theirs = governor::RateLimiter::<u64, _, _>::keyed(
        governor::Quota::per_second(PER_KEY).allow_burst(HUGE),
    );
    for k in 0..KEYS {
        ours.check_key(&k).unwrap();
        ours_tsc.check_key(&k).unwrap();
        theirs.check_key(&k).unwrap();
    }
    g.bench_function(
        "steadfast KeyedRateLimiter::check_key (1k keys, Clock::Quanta)",
        |b| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % KEYS;
                black_box(&ours_tsc).check_key(&k).unwrap();
            });
        },
    );
    g.bench_function(
        "steadfast KeyedRateLimiter::check_key (1k keys, Clock::Tokio)",
        |b| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % KEYS;
                black_box(&ours).check_key(&k).unwrap();
            });
        },
    );
    g.bench_function("governor RateLimiter::keyed check_key (1k keys)", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(&theirs).check_key(&k).unwrap();
        });
    });
    g.finish();

    // Keys that have gone idle: steadfast drops them (exactly) and inserts
    // them again on their next use; governor keeps every key until
    // `retain_recent` is called.
    let mut g = c.benchmark_group("limit/keyed_check_idle_keys");
    let ours = KeyedRateLimiter::builder(Quota::per_second(HUGE).burst(HUGE))
        .clock(Clock::Quanta)
        .build::<u64>()
        .unwrap();
    let theirs = governor::RateLimiter::<u64, _, _>::keyed(
        governor::Quota::per_second(HUGE).allow_burst(HUGE),
    );
    g.bench_function(
        "steadfast KeyedRateLimiter::check_key (idle keys: evict + insert)",
        |b| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % KEYS;
                black_box(&ours).check_key(&k).unwrap();
            });
        },
    );
    g.bench_function(
        "governor RateLimiter::keyed check_key (idle keys kept)",
        |b| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % KEYS;
                black_box(&theirs).check_key(&k).unwrap();
            });
        },
    );
    g.finish();
}

fn bulkhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit/bulkhead_acquire_release");
    let ours = Bulkhead::new(
        ConcurrencyConfig::builder()
            .max_in_flight(64)
            .build()
            .unwrap(),
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    g.bench_function("steadfast Bulkhead::try_acquire + drop", |b| {
        b.iter(|| drop(black_box(&ours).try_acquire().unwrap()));
    });
    g.bench_function("tokio Semaphore::try_acquire + drop", |b| {
        b.iter(|| drop(black_box(&sem).try_acquire().unwrap()));
    });
    g.bench_function("tokio Semaphore::try_acquire_owned + drop", |b| {
        b.iter(|| drop(black_box(&sem).clone().try_acquire_owned().unwrap()));
    });
    g.finish();
}

criterion_group!(benches, direct, keyed, bulkhead);
criterion_main!(benches);
