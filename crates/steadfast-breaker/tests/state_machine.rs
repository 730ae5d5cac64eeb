//! Property tests of the state machine against a plain reference model.
//!
//! The model is the specification written the obvious way (a list of
//! recorded calls, plain fields, no atomics). Random configurations and
//! random sequences of acquires, results, cancellations, manual isolation
//! and resets, at random times, must give the same decisions, states and
//! window counts in both, and the safety properties must hold throughout:
//! never more than N probes out, an open breaker admits nothing before its
//! break has elapsed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use steadfast_breaker::{
    BreakerConfig, CircuitBreaker, HalfOpen, Permit, SlidingWindow, State, WindowCounts,
};
use steadfast_core::Outcome;
use tokio::time::Instant;

/// (state entered, break) per transition.
type TransitionLog = Arc<Mutex<Vec<(State, Option<Duration>)>>>;

#[derive(Clone, Debug)]
struct Cfg {
    window: SlidingWindow,
    minimum_calls: u32,
    failure_rate: f64,
    consecutive: Option<u32>,
    slow: Option<(u64, f64)>,
    break_ms: u64,
    growth: f64,
    max_factor: u64,
    probes: u32,
}

impl Cfg {
    fn build(&self, log: TransitionLog) -> BreakerConfig {
        let mut b = BreakerConfig::builder()
            .window(self.window)
            .minimum_calls(self.minimum_calls)
            .failure_rate(self.failure_rate)
            .consecutive_failures(self.consecutive)
            .break_duration(Duration::from_millis(self.break_ms))
            .break_growth(self.growth)
            .max_break_duration(Duration::from_millis(self.break_ms * self.max_factor))
            .half_open(HalfOpen::probes(self.probes))
            .on_transition(move |e| {
                log.lock()
                    .unwrap()
                    .push((e.transition.to, e.transition.break_duration));
            });
        if let Some((ms, rate)) = self.slow {
            b = b.slow_calls(Duration::from_millis(ms), rate);
        }
        b.build().unwrap()
    }
}

fn cfg() -> impl Strategy<Value = Cfg> {
    let window = prop_oneof![
        (1u32..12).prop_map(SlidingWindow::count),
        (1u32..6, 20u64..400).prop_map(|(b, ms)| SlidingWindow::time_with_buckets(
            Duration::from_millis(ms * u64::from(b)),
            b
        )),
    ];
    (
        window,
        0u32..6,
        prop_oneof![Just(0.1), Just(0.34), Just(0.5), Just(0.75), Just(1.0)],
        proptest::option::of(1u32..6),
        proptest::option::of((50u64..500, prop_oneof![Just(0.25), Just(0.5), Just(1.0)])),
        50u64..1_000,
        prop_oneof![Just(1.0), Just(1.5), Just(2.0)],
        1u64..8,
        1u32..4,
    )
        .prop_map(
            |(
                window,
                min,
                failure_rate,
                consecutive,
                slow,
                break_ms,
                growth,
                max_factor,
                probes,
            )| {
                let minimum_calls = match window {
                    SlidingWindow::Count { size } => min.min(size),
                    _ => min,
                };
                Cfg {
                    window,
                    minimum_calls,
                    failure_rate,
                    consecutive,
                    slow,
                    break_ms,
                    growth,
                    max_factor,
                    probes,
                }
            },
        )
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Acquire,
    Complete {
        idx: usize,
        outcome: u8,
        latency_ms: u64,
    },
    Cancel {
        idx: usize,
    },
    Isolate,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..1_500).prop_map(Op::Advance),
        5 => Just(Op::Acquire),
        5 => (any::<usize>(), 0u8..4, 0u64..800).prop_map(|(idx, outcome, latency_ms)| Op::Complete { idx, outcome, latency_ms }),
        1 => any::<usize>().prop_map(|idx| Op::Cancel { idx }),
        1 => Just(Op::Isolate),
        1 => Just(Op::Reset),
    ]
}

fn outcome(code: u8) -> Outcome {
    match code {
        0 => Outcome::Success,
        1 => Outcome::Rejected,
        2 => Outcome::RETRY,
        _ => Outcome::Failure,
    }
}

// ---------------------------------------------------------------- the model

#[derive(Clone, Copy, Debug, PartialEq)]
enum MState {
    Closed,
    Open { until: u64 },
    HalfOpen { succeeded: u32 },
    Isolated,
}

#[derive(Debug)]
struct Model {
    cfg: Cfg,
    state: MState,
    generation: u64,
    trips: u32,
    consecutive: u32,
    probes_out: u32,
    /// Probes of generations before this one were forgotten by a reset.
    forgotten_before: u64,
    /// (time ms, failed, slow) since the last clear.
    calls: Vec<(u64, bool, bool)>,
}

#[derive(Clone, Copy, Debug)]
struct MPermit {
    generation: u64,
    probe: bool,
}

impl Model {
    fn new(cfg: Cfg) -> Self {
        Self {
            cfg,
            state: MState::Closed,
            generation: 0,
            trips: 0,
            consecutive: 0,
            probes_out: 0,
            forgotten_before: 0,
            calls: Vec::new(),
        }
    }

    fn window(&self) -> WindowCounts {
        let live: Vec<_> = match self.cfg.window {
            SlidingWindow::Count { size } => self.calls.iter().rev().take(size as usize).collect(),
            SlidingWindow::Time { duration, buckets } => {
                let bucket = (duration / buckets).as_millis() as u64;
                let Some(origin) = self.calls.first().map(|c| c.0) else {
                    return WindowCounts::default();
                };
                let epoch = |t: u64| (t - origin) / bucket;
                let head = self.calls.iter().map(|c| epoch(c.0)).max().unwrap();
                self.calls
                    .iter()
                    .filter(|c| epoch(c.0) + u64::from(buckets) > head)
                    .collect()
            }
            _ => unreachable!(),
        };
        WindowCounts {
            calls: live.len() as u32,
            failures: live.iter().filter(|c| c.1).count() as u32,
            slow: live.iter().filter(|c| c.2).count() as u32,
        }
    }

    fn break_for(&self, trips: u32) -> u64 {
        let base = Duration::from_millis(self.cfg.break_ms).as_secs_f64();
        Duration::from_secs_f64(base * self.cfg.growth.powi(trips as i32 - 1))
            .min(Duration::from_millis(
                self.cfg.break_ms * self.cfg.max_factor,
            ))
            .as_nanos() as u64
    }

    /// A new generation: results of the old one no longer count (its
    /// probes keep their slots until they end).
    fn next_generation(&mut self) {
        self.generation += 1;
    }

    /// Whether a probe of `generation` holds a slot (a reset forgets them).
    fn holds_slot(&self, generation: u64) -> bool {
        generation >= self.forgotten_before
    }

    fn open(&mut self, now_ns: u64) {
        self.trips += 1;
        self.state = MState::Open {
            until: now_ns + self.break_for(self.trips),
        };
        self.consecutive = 0;
        self.next_generation();
    }

    fn close(&mut self) {
        self.calls.clear();
        self.consecutive = 0;
        self.trips = 0;
        self.state = MState::Closed;
        self.next_generation();
    }

    /// Ok(probe?) or Err(retry_after in ns).
    fn acquire(&mut self, now_ns: u64) -> Result<MPermit, u64> {
        if let MState::Open { until } = self.state {
            if now_ns < until {
                return Err(until - now_ns);
            }
            self.state = MState::HalfOpen { succeeded: 0 };
            self.next_generation();
        }
        match self.state {
            MState::Closed => Ok(MPermit {
                generation: self.generation,
                probe: false,
            }),
            MState::Isolated => Err(self.cfg.break_ms * 1_000_000),
            MState::HalfOpen { succeeded } if self.probes_out + succeeded < self.cfg.probes => {
                self.probes_out += 1;
                Ok(MPermit {
                    generation: self.generation,
                    probe: true,
                })
            }
            MState::HalfOpen { .. } => Err(self.cfg.break_ms * 1_000_000 / 10),
            MState::Open { .. } => unreachable!(),
        }
    }

    fn record(&mut self, p: MPermit, now_ns: u64, failed: bool, latency_ms: u64) {
        let slow = self.cfg.slow.is_some_and(|(ms, _)| latency_ms >= ms);
        if p.probe && self.holds_slot(p.generation) {
            self.probes_out -= 1;
        }
        if p.generation != self.generation {
            return;
        }
        match self.state {
            MState::Closed => {
                self.calls.push((now_ns / 1_000_000, failed, slow));
                if failed {
                    self.consecutive += 1;
                } else {
                    self.consecutive = 0;
                }
                let w = self.window();
                let ppm = |r: f64| (r * 1e6).round() as u64;
                let trips = (failed && self.cfg.consecutive.is_some_and(|n| self.consecutive >= n))
                    || (w.calls >= self.cfg.minimum_calls
                        && w.calls > 0
                        && ((failed
                            && u64::from(w.failures) * 1_000_000
                                >= ppm(self.cfg.failure_rate) * u64::from(w.calls))
                            || (slow
                                && u64::from(w.slow) * 1_000_000
                                    >= ppm(self.cfg.slow.unwrap().1) * u64::from(w.calls))));
                if trips {
                    self.open(now_ns);
                }
            }
            MState::HalfOpen { succeeded } => {
                if failed || slow {
                    self.open(now_ns);
                } else if succeeded + 1 >= self.cfg.probes {
                    self.close();
                } else {
                    self.state = MState::HalfOpen {
                        succeeded: succeeded + 1,
                    };
                }
            }
            _ => unreachable!("a permit of this generation implies closed or half-open"),
        }
    }

    fn cancel(&mut self, p: MPermit) {
        if p.probe && self.holds_slot(p.generation) {
            self.probes_out -= 1;
        }
    }

    fn isolate(&mut self) {
        if self.state != MState::Isolated {
            self.state = MState::Isolated;
            self.next_generation();
        }
    }

    fn reset(&mut self) {
        if self.state == MState::Closed {
            self.calls.clear();
            self.consecutive = 0;
            self.trips = 0;
            // A new closed period: the calls in flight no longer count.
            self.next_generation();
        } else {
            self.close();
        }
        self.probes_out = 0;
        self.forgotten_before = self.generation;
    }

    fn public_state(&self) -> State {
        match self.state {
            MState::Closed => State::Closed,
            MState::Open { .. } => State::Open,
            MState::HalfOpen { .. } => State::HalfOpen,
            MState::Isolated => State::Isolated,
        }
    }
}

// ---------------------------------------------------------------- the test

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn breaker_matches_the_model(cfg in cfg(), ops in proptest::collection::vec(op(), 1..200)) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let breaker = CircuitBreaker::new(cfg.build(log.clone()));
        let mut model = Model::new(cfg.clone());
        let t0 = Instant::now();
        let mut now_ns: u64 = 0;
        let mut held: Vec<(Permit<'_>, MPermit)> = Vec::new();
        // When the breaker last opened, and for how long.
        let mut opened_at: Option<(u64, Duration)> = None;
        let mut seen_transitions = 0;

        for op in ops {
            let now = t0 + Duration::from_nanos(now_ns);
            match op {
                Op::Advance(ms) => now_ns += ms * 1_000_000,
                Op::Acquire => {
                    let real = breaker.try_acquire(now);
                    let want = model.acquire(now_ns);
                    match (real, want) {
                        (Ok(p), Ok(m)) => {
                            prop_assert_eq!(p.is_probe(), m.probe);
                            if let Some((at, pause)) = opened_at {
                                // Admitted after an opening: the break is over.
                                prop_assert!(now_ns - at >= pause.as_nanos() as u64,
                                    "admitted {} ns after opening for {:?}", now_ns - at, pause);
                            }
                            held.push((p, m));
                        }
                        (Err(e), Err(retry_ns)) => {
                            prop_assert_eq!(e.retry_after, Duration::from_nanos(retry_ns));
                        }
                        (real, want) => prop_assert!(false, "breaker {:?} vs model {:?}", real.map(|p| p.is_probe()), want),
                    }
                }
                Op::Complete { idx, outcome: code, latency_ms } if !held.is_empty() => {
                    let (p, m) = held.swap_remove(idx % held.len());
                    let o = outcome(code);
                    p.record(now, o, Duration::from_millis(latency_ms));
                    model.record(m, now_ns, o.is_failure(), latency_ms);
                }
                Op::Cancel { idx } if !held.is_empty() => {
                    let (p, m) = held.swap_remove(idx % held.len());
                    drop(p);
                    model.cancel(m);
                }
                Op::Isolate => { breaker.isolate(); model.isolate(); }
                Op::Reset => { breaker.reset(); model.reset(); }
                Op::Complete { .. } | Op::Cancel { .. } => {}
            }

            // Track openings from the transition log.
            let log = log.lock().unwrap();
            for &(to, pause) in &log[seen_transitions..] {
                opened_at = match to {
                    State::Open => Some((now_ns, pause.unwrap())),
                    State::HalfOpen => opened_at,
                    _ => None,
                };
            }
            seen_transitions = log.len();
            drop(log);

            let snap = breaker.snapshot();
            prop_assert_eq!(snap.state, model.public_state());
            prop_assert_eq!(snap.consecutive_failures, model.consecutive);
            prop_assert_eq!(snap.window, model.window());
            // Probes out, of any round, except those a reset forgot.
            let probes_held = held
                .iter()
                .filter(|(p, m)| p.is_probe() && model.holds_slot(m.generation))
                .count() as u32;
            prop_assert_eq!(probes_held, model.probes_out);
            prop_assert!(probes_held <= cfg.probes, "{} probes out, limit {}", probes_held, cfg.probes);
        }
    }
}

/// Successes that find the count window full of successes skip the reset
/// of the run of failures; racing failures must never leave a run behind
/// that such successes would then keep forever.
#[test]
fn a_run_of_failures_never_outlives_its_window() {
    const SIZE: u32 = 8;
    let breaker = Arc::new(CircuitBreaker::new(
        BreakerConfig::builder()
            .window(SlidingWindow::count(SIZE))
            .minimum_calls(SIZE)
            .failure_rate(1.0)
            .consecutive_failures(None)
            .build()
            .unwrap(),
    ));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let breaker = breaker.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let outcome = if (i + t) % 17 == 0 {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    breaker
                        .try_acquire(t0)
                        .unwrap()
                        .record(t0, outcome, Duration::ZERO);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
    for _ in 0..=SIZE {
        breaker
            .try_acquire(t0)
            .unwrap()
            .record(t0, Outcome::Success, Duration::ZERO);
    }
    let snap = breaker.snapshot();
    assert_eq!(snap.consecutive_failures, 0);
    assert_eq!(
        (snap.window.calls, snap.window.failures, snap.window.slow),
        (SIZE, 0, 0)
    );
}

/// Many threads hammering a half-open breaker never have more than N probes
/// out at once, and cancelled probes free their slots.
#[test]
fn concurrent_probes_never_exceed_the_limit() {
    for probes in [1u32, 3] {
        let breaker = Arc::new(CircuitBreaker::new(
            BreakerConfig::builder()
                .consecutive_failures(1)
                .break_duration(Duration::from_millis(1))
                .break_growth(1.0)
                .half_open(HalfOpen::probes(probes))
                .build()
                .unwrap(),
        ));
        let t0 = Instant::now();
        breaker
            .try_acquire(t0)
            .unwrap()
            .record(t0, Outcome::Failure, Duration::ZERO);
        assert_eq!(breaker.state(), State::Open);

        let out = Arc::new(AtomicU32::new(0));
        let max_seen = Arc::new(AtomicU32::new(0));
        let admitted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (breaker, out, max_seen, admitted) = (
                    breaker.clone(),
                    out.clone(),
                    max_seen.clone(),
                    admitted.clone(),
                );
                std::thread::spawn(move || {
                    for i in 0..5_000u32 {
                        let now = t0 + Duration::from_secs(1);
                        if let Ok(p) = breaker.try_acquire(now) {
                            assert!(p.is_probe());
                            let n = out.fetch_add(1, Ordering::SeqCst) + 1;
                            max_seen.fetch_max(n, Ordering::SeqCst);
                            admitted.fetch_add(1, Ordering::SeqCst);
                            std::hint::spin_loop();
                            out.fetch_sub(1, Ordering::SeqCst);
                            // Cancel (never record), so the breaker stays half-open.
                            let _ = (t, i);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(max_seen.load(Ordering::SeqCst) <= probes);
        // Slots were freed and reused many times over.
        assert!(admitted.load(Ordering::SeqCst) > probes * 10);
        assert_eq!(breaker.state(), State::HalfOpen);
    }
}
