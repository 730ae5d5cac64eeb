//! Model checks of the hand-rolled lock-free accounting: the direct
//! limiter's compare-and-swap on the theoretical arrival time, and the
//! bulkhead's limit and debt against permits coming back. loom runs each
//! scenario in every interleaving (up to a preemption bound) under its model
//! of weak memory, where a load not ordered by a happens-before may read a
//! stale value.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p steadfast-limit --test loom --release
//! ```
//!
//! (Use a separate `CARGO_TARGET_DIR` to keep the normal build's artifacts.)
//! `LOOM_MAX_PREEMPTIONS` overrides the bound of 3 used here.
//!
//! The bulkhead's free slots live in a `tokio::sync::Semaphore`, which is not
//! loom-aware: loom sees each of its calls as one indivisible step (it
//! never preempts inside one), so these models explore the interleavings of
//! the bulkhead's own atomics around those steps, not the semaphore's
//! internals. The keyed limiter keeps its TATs under a shard mutex (nothing
//! hand-rolled to model).
#![cfg(loom)]

use std::num::NonZeroU32;
use std::sync::Arc;

use loom::thread;
use steadfast_limit::{Bulkhead, ConcurrencyConfig, Gcra, Quota, RateLimiter};

/// 100 ms: the emission interval of ten a second.
const INTERVAL: u64 = 100_000_000;

fn check(f: impl Fn() + Sync + Send + 'static) {
    let mut model = loom::model::Builder::new();
    if model.preemption_bound.is_none() {
        model.preemption_bound = Some(3);
    }
    model.check(f);
}

fn quota(burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(10).unwrap()).burst(NonZeroU32::new(burst).unwrap())
}

/// Runs `times[i]` as one thread per `i` (the last on the model's main
/// thread), each calling `check_at` at its times in order; returns who was
/// admitted, thread by thread.
fn race(limiter: &Arc<RateLimiter>, times: &[&'static [u64]]) -> Vec<Vec<bool>> {
    let (last, others) = times.split_last().unwrap();
    let run = |limiter: &RateLimiter, times: &[u64]| -> Vec<bool> {
        times.iter().map(|&t| limiter.check_at(t).is_ok()).collect()
    };
    let handles: Vec<_> = others
        .iter()
        .map(|&times| {
            let limiter = limiter.clone();
            thread::spawn(move || run(&limiter, times))
        })
        .collect();
    let mine = run(limiter, last);
    let mut all: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    all.push(mine);
    all
}

/// Every outcome a sequential execution of `times` (each thread's calls in
/// its order, threads interleaved any way) gives, in [`race`]'s shape.
fn sequential_outcomes(gcra: Gcra, times: &[&[u64]]) -> Vec<Vec<Vec<bool>>> {
    fn go(
        gcra: Gcra,
        times: &[&[u64]],
        tat: u64,
        done: &mut Vec<Vec<bool>>,
        out: &mut Vec<Vec<Vec<bool>>>,
    ) {
        let mut moved = false;
        for i in 0..times.len() {
            let Some(&now) = times[i].get(done[i].len()) else {
                continue;
            };
            moved = true;
            let (admitted, next) = match gcra.decide(tat, now) {
                Ok(next) => (true, next),
                Err(_) => (false, tat),
            };
            done[i].push(admitted);
            go(gcra, times, next, done, out);
            done[i].pop();
        }
        if !moved && !out.contains(done) {
            out.push(done.clone());
        }
    }
    let mut out = Vec::new();
    go(gcra, times, 0, &mut vec![Vec::new(); times.len()], &mut out);
    out
}

/// Three threads take a token at the same instant from a burst of two: two
/// pass, one is refused, whatever the interleaving; the CAS never lets a
/// stale TAT admit a third.
#[test]
fn checks_at_one_instant_never_admit_more_than_the_burst() {
    check(|| {
        let limiter = Arc::new(RateLimiter::new(quota(2)));
        let admitted = race(&limiter, &[&[0], &[0], &[0]]);
        let passed = admitted.iter().flatten().filter(|&&a| a).count();
        assert_eq!(passed, 2, "{admitted:?}");
        let refused = limiter.check_at(0).unwrap_err();
        assert_eq!(refused.wait().as_nanos(), u128::from(INTERVAL));
    });
}

/// Three threads take tokens at different instants (a burst of one, 100 ms
/// apart, each thread's clock read in order but the threads' reads
/// interleaved): the outcome is one that some sequential order of the same
/// calls gives (the CAS loop is linearizable), so admissions never exceed
/// the burst plus one per interval elapsed, whatever the interleaving.
#[test]
fn checks_across_time_are_linearizable() {
    const A: &[u64] = &[0, INTERVAL];
    const B: &[u64] = &[INTERVAL / 2, 2 * INTERVAL];
    const C: &[u64] = &[INTERVAL];
    check(|| {
        let limiter = Arc::new(RateLimiter::new(quota(1)));
        let admitted = race(&limiter, &[A, B, C]);
        let possible = sequential_outcomes(Gcra::new(quota(1)), &[A, B, C]);
        assert!(
            possible.contains(&admitted),
            "{admitted:?} is no sequential outcome ({possible:?})"
        );
        let passed = admitted.iter().flatten().filter(|&&a| a).count() as u64;
        // burst + elapsed / interval, over the 2 intervals the calls span.
        assert!(passed <= 1 + 2, "{admitted:?}");
    });
}

fn bulkhead(limit: usize) -> Bulkhead {
    Bulkhead::new(
        ConcurrencyConfig::builder()
            .max_in_flight(limit)
            .max_queue(0)
            .build()
            .unwrap(),
    )
}

/// After everyone is done, nothing is in flight and exactly `limit()`
/// permits can be taken: none lost, none created.
fn assert_settled(bulkhead: &Bulkhead) {
    assert_eq!(bulkhead.in_flight(), 0, "{:?}", bulkhead.snapshot());
    let free: Vec<_> = std::iter::from_fn(|| bulkhead.try_acquire().ok())
        .take(bulkhead.limit() + 2)
        .collect();
    assert_eq!(free.len(), bulkhead.limit(), "{:?}", bulkhead.snapshot());
    drop(free);
    assert_eq!(bulkhead.in_flight(), 0);
}

/// The limit shrinks from 2 to 1 while both permits come back on another
/// thread: the returning permits pay the debt or the shrink takes them
/// from the semaphore, and in the end one permit is free, not two.
///
/// This model found a bug: `set_limit(1)` used to find no free permit to
/// forget (both out) and only then record a debt of 1; both permits came
/// back in that gap, saw no debt and went back to the semaphore, leaving
/// two permits free under a limit of one. The debt is now recorded first,
/// and every path that frees a permit or adds debt settles the two.
#[test]
fn shrinking_while_permits_come_back_creates_no_permit() {
    check(|| {
        let bulkhead = bulkhead(2);
        let held = [
            bulkhead.try_acquire().unwrap(),
            bulkhead.try_acquire().unwrap(),
        ];
        let returning = thread::spawn(move || drop(held));
        bulkhead.set_limit(1);
        returning.join().unwrap();
        assert_eq!(bulkhead.limit(), 1);
        assert_settled(&bulkhead);
    });
}

/// One thread shrinks the limit, another grows it, while a permit comes
/// back: whichever change lands last is the limit, and exactly that many
/// permits are free in the end.
#[test]
fn shrinking_and_growing_while_a_permit_comes_back_loses_nothing() {
    check(|| {
        let bulkhead = bulkhead(2);
        let held = bulkhead.try_acquire().unwrap();
        let shrinking = {
            let bulkhead = bulkhead.clone();
            thread::spawn(move || bulkhead.set_limit(1))
        };
        let growing = {
            let bulkhead = bulkhead.clone();
            thread::spawn(move || bulkhead.set_limit(3))
        };
        drop(held);
        shrinking.join().unwrap();
        growing.join().unwrap();
        assert!(matches!(bulkhead.limit(), 1 | 3));
        assert_settled(&bulkhead);
    });
}
