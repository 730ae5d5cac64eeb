//! Model checks of the hand-rolled lock-free count window and the
//! transitions that restart it: loom runs each scenario in every
//! interleaving (up to a preemption bound) under its model of weak memory,
//! where a load not ordered by a happens-before may read a stale value.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p steadfast-breaker --test loom --release
//! ```
//!
//! (Use a separate `CARGO_TARGET_DIR` to keep the normal build's artifacts.)
//! `LOOM_MAX_PREEMPTIONS` overrides the bound of 3 used here.
#![cfg(loom)]

// std's `Arc`: owned permits take one. The breaker's own atomics and locks
// are loom's (src/sync.rs); the `Arc` needs no modelling.
use std::sync::Arc;
use std::time::Duration;

use loom::thread;
use steadfast_breaker::{BreakerConfig, CircuitBreaker, SlidingWindow, State};
use steadfast_core::Outcome;
use tokio::time::Instant;

const NO_LATENCY: Duration = Duration::ZERO;

fn check(f: impl Fn() + Sync + Send + 'static) {
    let mut model = loom::model::Builder::new();
    if model.preemption_bound.is_none() {
        model.preemption_bound = Some(3);
    }
    model.check(f);
}

/// A count window of two calls that no rate trips (both would have to fail).
fn breaker(consecutive: Option<u32>) -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(
        BreakerConfig::builder()
            .window(SlidingWindow::count(2))
            .minimum_calls(2)
            .failure_rate(1.0)
            .consecutive_failures(consecutive)
            .break_duration(Duration::from_secs(1))
            .build()
            .unwrap(),
    ))
}

fn record(breaker: &CircuitBreaker, now: Instant, outcome: Outcome) {
    breaker
        .try_acquire(now)
        .unwrap()
        .record(now, outcome, NO_LATENCY);
}

/// A call admitted before a reset reports while the reset clears the
/// window: whichever comes first, nothing of it is left.
#[test]
fn a_straggler_never_lands_after_a_reset() {
    check(|| {
        let breaker = breaker(Some(3));
        let t0 = Instant::now();
        record(&breaker, t0, Outcome::Failure);
        let straggler = breaker.clone().try_acquire_owned(t0).unwrap();
        let reporter = thread::spawn(move || straggler.record(t0, Outcome::Failure, NO_LATENCY));
        breaker.reset();
        reporter.join().unwrap();
        let snap = breaker.snapshot();
        assert_eq!(snap.state, State::Closed);
        assert_eq!((snap.window.calls, snap.consecutive_failures), (0, 0));
    });
}

/// A call admitted closed reports while another trips the breaker, which a
/// probe then closes again: the new closed period starts empty.
#[test]
fn a_straggler_never_lands_after_a_trip_and_recovery() {
    check(|| {
        let breaker = breaker(Some(1));
        let t0 = Instant::now();
        let straggler = breaker.clone().try_acquire_owned(t0).unwrap();
        let tripper = breaker.try_acquire(t0).unwrap();
        let reporter = thread::spawn(move || straggler.record(t0, Outcome::Failure, NO_LATENCY));
        tripper.record(t0, Outcome::Failure, NO_LATENCY);
        // Whichever failure came first trips it (the other is stale), maybe
        // on the other thread, still publishing.
        while breaker.state() == State::Closed {
            thread::yield_now();
        }
        assert_eq!(breaker.state(), State::Open);
        let t1 = t0 + Duration::from_secs(1);
        let probe = breaker.try_acquire(t1).unwrap();
        assert!(probe.is_probe());
        probe.record(t1, Outcome::Success, NO_LATENCY);
        reporter.join().unwrap();
        let snap = breaker.snapshot();
        assert_eq!(snap.state, State::Closed);
        assert_eq!((snap.window.calls, snap.consecutive_failures), (0, 0));
        assert_eq!(snap.opened, 1);
    });
}

/// Successes that find the window full of successes skip ending the run of
/// failures, which is sound only if the success that replaced the last
/// failure in the window saw that failure's run (the slot's Release/Acquire
/// swap). Racing a failure against successes, whatever the interleaving and
/// whatever stale values loads may read, the run never outlives the window,
/// and the counters stay equal to the slots.
#[test]
fn a_run_of_failures_never_outlives_its_window() {
    check(|| {
        let breaker = breaker(None);
        let t0 = Instant::now();
        for _ in 0..2 {
            record(&breaker, t0, Outcome::Success);
        }
        let failing = {
            let breaker = breaker.clone();
            thread::spawn(move || record(&breaker, t0, Outcome::Failure))
        };
        let succeeding = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    record(&breaker, t0, Outcome::Success);
                }
            })
        };
        failing.join().unwrap();
        succeeding.join().unwrap();
        let snap = breaker.snapshot();
        assert_eq!(snap.window.calls, 2);
        if snap.window.failures == 0 {
            assert_eq!(snap.consecutive_failures, 0, "a run outlived its window");
        }
        // Two more successes replace whatever is there.
        for _ in 0..2 {
            record(&breaker, t0, Outcome::Success);
        }
        let snap = breaker.snapshot();
        assert_eq!(
            (
                snap.window.calls,
                snap.window.failures,
                snap.consecutive_failures
            ),
            (2, 0, 0)
        );
        assert_eq!(snap.state, State::Closed);
    });
}
