//! Edge cases of the state machine, each of which once misbehaved: hostile
//! durations, resets and transitions racing calls in flight, event order,
//! rates too fine to resolve, and when rates are checked.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::num::NonZeroUsize;
use steadfast_breaker::config::MIN_RATE;

use steadfast_breaker::{
    BreakerConfig, BreakerRegistry, CircuitBreaker, ConfigError, HalfOpen, Reason, SlidingWindow,
    State,
};
use steadfast_core::Outcome;
use tokio::time::Instant;

const NO_LATENCY: Duration = Duration::ZERO;
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn fail(breaker: &CircuitBreaker, now: Instant) {
    breaker
        .try_acquire(now)
        .unwrap()
        .record(now, Outcome::Failure, NO_LATENCY);
}

/// A break too long for `Instant` lasts for ever, rather than not at all.
#[test]
fn a_break_too_long_to_represent_lasts_for_ever() {
    let breaker = CircuitBreaker::new(
        BreakerConfig::builder()
            .consecutive_failures(1)
            .break_duration(Duration::MAX)
            .max_break_duration(Duration::MAX)
            .build()
            .unwrap(),
    );
    let t0 = Instant::now();
    fail(&breaker, t0);
    assert_eq!(breaker.state(), State::Open);
    for later in [
        Duration::from_millis(1),
        Duration::from_secs(3_600),
        CENTURY,
    ] {
        let open = breaker.try_acquire(t0 + later).unwrap_err();
        assert_eq!(open.state, State::Open, "admitted {later:?} into the break");
        assert!(open.retry_after > CENTURY, "{:?}", open.retry_after);
    }
    assert_eq!(breaker.state(), State::Open);
}

/// A progressive stage too long for `Instant` never ends, and no call panics.
#[test]
fn a_stage_too_long_to_represent_never_ends_and_never_panics() {
    let breaker = CircuitBreaker::new(
        BreakerConfig::builder()
            .consecutive_failures(1)
            .half_open(HalfOpen::progressive(Duration::MAX))
            .build()
            .unwrap(),
    );
    let t0 = Instant::now();
    fail(&breaker, t0);
    let t1 = t0 + Duration::from_secs(6);
    let probe = breaker.try_acquire(t1).unwrap();
    assert!(probe.is_probe());
    // Not this call's share: refused, with a wait as long as the stage.
    let refused = breaker.try_acquire(t1).unwrap_err();
    assert_eq!(refused.state, State::HalfOpen);
    assert!(refused.retry_after > CENTURY, "{:?}", refused.retry_after);
    // The probe's success does not end a stage that never ends.
    probe.record(t1, Outcome::Success, NO_LATENCY);
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(breaker.try_acquire(t1 + CENTURY).is_err());
    assert_eq!(breaker.state(), State::HalfOpen);
}

/// `reset` forgets the calls in flight, also when the breaker was closed.
#[test]
fn reset_forgets_calls_in_flight() {
    for window in [
        SlidingWindow::count(100),
        SlidingWindow::time(Duration::from_secs(10)),
    ] {
        let breaker = CircuitBreaker::new(
            BreakerConfig::builder()
                .window(window)
                .consecutive_failures(3)
                .build()
                .unwrap(),
        );
        let t0 = Instant::now();
        let permits: Vec<_> = (0..3).map(|_| breaker.try_acquire(t0).unwrap()).collect();
        breaker.reset();
        for p in permits {
            p.record(t0, Outcome::Failure, NO_LATENCY);
        }
        let snap = breaker.snapshot();
        assert_eq!(snap.state, State::Closed, "{window:?}");
        assert_eq!((snap.window.calls, snap.consecutive_failures), (0, 0));
        // Not a transition: nothing to report.
        assert_eq!(snap.transitions, 0);
        // Calls admitted after the reset count as usual.
        for _ in 0..3 {
            fail(&breaker, t0);
        }
        assert_eq!(breaker.state(), State::Open, "{window:?}");
    }
}

/// A result whose recorder passed the generation check just before the
/// breaker tripped, probed and closed again lands in no window. (The clock
/// is read between the two, which lets the test step in; for the count
/// window, which reads no clock there, see `tests/loom.rs`.)
#[test]
fn a_straggler_past_its_generation_check_lands_nowhere() {
    let breaker = CircuitBreaker::new(
        BreakerConfig::builder()
            .window(SlidingWindow::time(Duration::from_secs(10)))
            .consecutive_failures(None)
            .minimum_calls(1)
            .failure_rate(1.0)
            .build()
            .unwrap(),
    );
    let t0 = Instant::now();
    let straggler = breaker.try_acquire(t0).unwrap();
    let other = breaker.try_acquire(t0).unwrap();
    straggler.record_with(
        || {
            other.record(t0, Outcome::Failure, NO_LATENCY); // trips
            assert_eq!(breaker.state(), State::Open);
            let t1 = t0 + Duration::from_secs(5);
            let probe = breaker.try_acquire(t1).unwrap();
            probe.record(t1, Outcome::Success, NO_LATENCY); // closes
            assert_eq!(breaker.state(), State::Closed);
            t1
        },
        Outcome::Failure,
        NO_LATENCY,
    );
    let snap = breaker.snapshot();
    assert_eq!(snap.state, State::Closed);
    assert_eq!((snap.window.calls, snap.consecutive_failures), (0, 0));
}

/// Transitions made on two threads may reach the callback out of order;
/// their generations give the order they were made in.
#[test]
fn transitions_can_be_ordered_by_generation() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (resume, paused) = mpsc::channel::<()>();
    let (pausing, is_paused) = mpsc::channel::<()>();
    let (paused, pausing) = (Mutex::new(paused), Mutex::new(pausing));
    let logged = log.clone();
    let breaker = Arc::new(CircuitBreaker::new(
        BreakerConfig::builder()
            .consecutive_failures(1)
            .on_transition(move |e| {
                if e.transition.to == State::HalfOpen {
                    // The thread that moved to half-open is slow to report it.
                    pausing.lock().unwrap().send(()).unwrap();
                    paused.lock().unwrap().recv().unwrap();
                }
                let t = e.transition;
                logged.lock().unwrap().push((t.generation, t.to));
            })
            .build()
            .unwrap(),
    ));
    let t0 = Instant::now();
    fail(&breaker, t0);
    let prober = {
        let breaker = breaker.clone();
        std::thread::spawn(move || drop(breaker.try_acquire(t0 + Duration::from_secs(6))))
    };
    is_paused.recv().unwrap();
    breaker.reset(); // half-open → closed, reported at once
    resume.send(()).unwrap();
    prober.join().unwrap();

    let mut log = log.lock().unwrap().clone();
    let arrived: Vec<_> = log.iter().map(|e| e.1).collect();
    assert_eq!(arrived, [State::Open, State::Closed, State::HalfOpen]);
    log.sort_by_key(|e| e.0);
    let made: Vec<_> = log.iter().map(|e| e.1).collect();
    assert_eq!(made, [State::Open, State::HalfOpen, State::Closed]);
    assert_eq!(log.last().unwrap().1, breaker.state());
    let generations: Vec<_> = log.iter().map(|e| e.0).collect();
    assert_eq!(generations, [1, 2, 3]);
}

/// Rates finer than one in a million would round to "off": refused.
#[test]
fn rates_too_fine_to_resolve_are_refused() {
    let b = BreakerConfig::builder;
    let tiny = 1e-7;
    assert!(tiny < MIN_RATE);
    assert_eq!(
        b().failure_rate(tiny).build().unwrap_err(),
        ConfigError::RateTooSmall {
            option: "failure_rate",
            value: tiny
        }
    );
    let err = b()
        .slow_calls(Duration::from_millis(100), tiny)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "slow_calls rate of 0.0000001 is below one in a million (1e-6), the finest rate the \
         breaker resolves; use 1e-6 or more"
    );
    let err = b()
        .half_open(HalfOpen::progressive_stages(
            Duration::from_secs(1),
            &[tiny, 0.5],
        ))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("below one in a million"), "{err}");

    // The finest rate that is accepted works: every call slow trips it.
    let breaker = CircuitBreaker::new(
        b().consecutive_failures(None)
            .minimum_calls(5)
            .slow_calls(Duration::from_millis(100), MIN_RATE)
            .build()
            .unwrap(),
    );
    let t0 = Instant::now();
    for _ in 0..5 {
        breaker
            .try_acquire(t0)
            .unwrap()
            .record(t0, Outcome::Success, Duration::from_secs(1));
    }
    assert_eq!(breaker.state(), State::Open);
}

/// As documented (and as Polly does), the rates are checked when a call
/// fails: a window over the bar reached on a success trips at the next
/// failure.
#[test]
fn rates_are_checked_when_a_call_fails() {
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let logged = reasons.clone();
    let breaker = CircuitBreaker::new(
        BreakerConfig::builder()
            .consecutive_failures(None)
            .minimum_calls(20)
            .on_transition(move |e| logged.lock().unwrap().push(e.transition.reason))
            .build()
            .unwrap(),
    );
    let t0 = Instant::now();
    for i in 0..20 {
        let outcome = if i < 15 {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        breaker
            .try_acquire(t0)
            .unwrap()
            .record(t0, outcome, NO_LATENCY);
    }
    // 75 % of 20 calls failed, but the 20th call succeeded.
    let snap = breaker.snapshot();
    assert_eq!((snap.window.calls, snap.window.failures), (20, 15));
    assert_eq!(snap.state, State::Closed);
    fail(&breaker, t0);
    assert_eq!(breaker.state(), State::Open);
    let reasons = reasons.lock().unwrap();
    assert!(
        matches!(reasons[..], [Reason::FailureRate { rate }] if (rate - 16.0 / 21.0).abs() < 1e-9),
        "{reasons:?}"
    );
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A registry of four keys, each tripped by one failure at `t0`.
fn registry_of_tripped_keys(config: BreakerConfig, t0: Instant) -> BreakerRegistry {
    let registry = BreakerRegistry::new(config).max_keys(NonZeroUsize::new(4).unwrap());
    for i in 0..4 {
        let breaker = registry
            .get_or_create(&format!("origin-{i}"), || t0)
            .unwrap();
        fail(&breaker, t0);
        assert_eq!(breaker.state(), State::Open);
    }
    registry
}

/// Keys that tripped and were never asked for again are forgotten once
/// idle with their break over, instead of filling the registry for good
/// (every new key then passed untracked).
#[test]
fn open_breakers_forgotten_after_their_break_leave_room() {
    let t0 = Instant::now();
    let config = BreakerConfig::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let registry = registry_of_tripped_keys(config, t0);
    // The first sweep after their use only notes it.
    assert_eq!(registry.evict_idle(t0 + DAY), 0);
    let later = t0 + 2 * DAY;
    assert!(registry.get_or_create("fresh", || later).is_some());
    let snap = registry.snapshot();
    assert_eq!((snap.keys, snap.evictions, snap.untracked), (1, 4, 0));
}

/// An open breaker stays while its break lasts, idle or not, and while a
/// call holds it; a half-open one stays while its probe is out.
#[test]
fn open_breakers_stay_while_their_break_lasts_or_a_call_holds_them() {
    let t0 = Instant::now();
    let config = BreakerConfig::builder()
        .consecutive_failures(1)
        .break_duration(3 * DAY)
        .max_break_duration(3 * DAY)
        .build()
        .unwrap();
    let registry = registry_of_tripped_keys(config, t0);
    assert_eq!(registry.evict_idle(t0 + DAY), 0);
    assert_eq!(registry.evict_idle(t0 + 2 * DAY), 0, "breaks still running");
    assert!(registry.get_or_create("fresh", || t0 + 2 * DAY).is_none());

    // After the break: one key is probing (half-open), one is held.
    let after = t0 + 3 * DAY;
    let probing = registry.get("origin-0").unwrap();
    let probe = probing.clone().try_acquire_owned(after).unwrap();
    assert!(probe.is_probe());
    drop(probing);
    let held = registry.get("origin-1").unwrap();
    // Origins 2 and 3: idle, break over.
    assert_eq!(registry.evict_idle(after), 2);
    assert_eq!(registry.evict_idle(after + DAY), 0, "one probing, one held");
    drop((probe, held));
    // The probe dropped unjudged leaves origin 0 half-open with no probe
    // out: idle, only a call would move it on, so it goes like origin 1.
    assert_eq!(
        registry.get("origin-0").map(|b| b.state()),
        Some(State::HalfOpen)
    );
    assert_eq!(registry.evict_idle(after + 2 * DAY), 2);
    assert!(registry.get("origin-0").is_none());
    assert!(registry.get("origin-1").is_none());
}

/// A snapshot as of a later time reads the window without moving it: the
/// calls that follow are not taken for late reports and dropped.
#[test]
fn a_snapshot_ahead_of_time_changes_nothing() {
    let breaker = CircuitBreaker::new(
        BreakerConfig::builder()
            .window(SlidingWindow::time(Duration::from_secs(30)))
            .minimum_calls(100)
            .consecutive_failures(None)
            .build()
            .unwrap(),
    );
    let t0 = Instant::now();
    fail(&breaker, t0);
    assert_eq!(
        breaker
            .snapshot_at(t0 + Duration::from_secs(3600))
            .window
            .calls,
        0
    );
    for _ in 0..50 {
        fail(&breaker, t0);
    }
    assert_eq!(breaker.snapshot().window.calls, 51);
    assert_eq!(breaker.snapshot_at(t0).window.failures, 51);
}

/// A probe that never returns holds no slot once a reset has forgotten it:
/// the next half-open round probes.
#[test]
fn a_hanging_probe_does_not_block_probing_after_a_reset() {
    let breaker = CircuitBreaker::new(
        BreakerConfig::builder()
            .consecutive_failures(1)
            .half_open(HalfOpen::probes(1))
            .build()
            .unwrap(),
    );
    let t0 = Instant::now();
    fail(&breaker, t0);
    let t1 = t0 + Duration::from_secs(5);
    let hanging = breaker.try_acquire(t1).unwrap();
    assert!(hanging.is_probe());
    breaker.try_acquire(t1).unwrap_err();

    breaker.reset();
    fail(&breaker, t1);
    let t2 = t1 + Duration::from_secs(5);
    let probe = breaker.try_acquire(t2).expect("the new round probes");
    assert!(probe.is_probe());
    // Still one probe per round: no second one, and the old probe's drop
    // does not free the new probe's slot.
    breaker.try_acquire(t2).unwrap_err();
    drop(hanging);
    breaker.try_acquire(t2).unwrap_err();
    probe.record(t2, Outcome::Success, NO_LATENCY);
    assert_eq!(breaker.state(), State::Closed);
}
