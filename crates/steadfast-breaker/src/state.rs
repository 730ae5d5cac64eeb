//! [`CircuitBreaker`]: the state machine. Pure (time is an argument, no I/O,
//! no task), shared (`&self`, `Send + Sync`), and allocation-free per call.
//!
//! # How it is synchronised
//!
//! - One atomic word holds the state and a generation number that every
//!   transition (and a reset) bumps. The closed-state path reads it, records
//!   the outcome in the lock-free count window (or the time window's short
//!   mutex) and never takes the control lock unless the outcome trips the
//!   breaker.
//! - While open, rejections read the word and the break's end (an atomic);
//!   again no lock.
//! - Transitions, half-open admission and probe results take a
//!   `std::sync::Mutex` for a few dozen nanoseconds; it is never held across
//!   an await (there are none here) nor while callbacks run.
//! - A permit carries the generation it was issued in. The result of a
//!   call from an earlier generation (the breaker moved on while it was out)
//!   is ignored, so a slow straggler can neither trip a breaker that already
//!   reopened nor close one that is testing the water again. A probe's
//!   slot, though, is held until the probe returns or is dropped, whatever
//!   round admitted it: probes in flight never exceed the limit. Only
//!   [`CircuitBreaker::reset`] forgets the probes out, so that a probe that
//!   never returns cannot keep a reset breaker from ever probing again.
//! - "Ignored" holds however long the straggler was preempted between
//!   checking its generation and writing: the count window only takes
//!   writes through a gate tagged with the current closed period, which a
//!   transition moves and a new closed period drains before clearing
//!   ([`CountWindow`]'s docs); the time window is checked and written under
//!   its mutex, which a transition also takes to clear it and publish the
//!   new generation ([`CircuitBreaker::publish`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use steadfast_core::Outcome;
use tokio::time::Instant;

use crate::config::{BreakerConfig, HalfOpen, SlidingWindow, ppm};
use crate::error::BreakerOpen;
use crate::event::{self, Reason, State, Transition, TransitionEvent};
use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard, lock};
use crate::window::{CountWindow, Recorded, TimeWindow, WindowCounts};

const MILLION: u64 = 1_000_000;

/// A circuit breaker: decides whether a call may go out now, and learns from
/// each outcome.
///
/// ```
/// use std::time::Duration;
/// use steadfast_breaker::{BreakerConfig, CircuitBreaker, State};
/// use steadfast_core::Outcome;
/// use tokio::time::Instant;
///
/// let breaker = CircuitBreaker::new(
///     BreakerConfig::builder().consecutive_failures(2).build().unwrap(),
/// );
/// let t0 = Instant::now();
/// for _ in 0..2 {
///     let permit = breaker.try_acquire(t0).unwrap();
///     permit.record(t0, Outcome::Failure, Duration::ZERO);
/// }
/// assert_eq!(breaker.state(), State::Open);
/// let open = breaker.try_acquire(t0 + Duration::from_secs(1)).unwrap_err();
/// assert_eq!(open.retry_after, Duration::from_secs(4));
///
/// // After the break one probe goes out; its success closes the breaker.
/// let probe = breaker.try_acquire(t0 + Duration::from_secs(5)).unwrap();
/// assert!(probe.is_probe());
/// probe.record(t0 + Duration::from_secs(5), Outcome::Success, Duration::ZERO);
/// assert_eq!(breaker.state(), State::Closed);
/// ```
pub struct CircuitBreaker {
    /// State (2 low bits) and generation (the rest).
    word: AtomicU64,
    /// End of the break, in nanoseconds since `origin`; valid while open.
    open_until: AtomicU64,
    origin: OnceLock<Instant>,
    /// The sliding window and the run of consecutive failures.
    window: Window,
    rejections: AtomicU64,
    transitions: AtomicU64,
    opened: AtomicU64,
    /// Set on use, cleared by the registry's idle sweep.
    touched: AtomicBool,
    control: Mutex<Control>,
    params: Params,
    config: Arc<BreakerConfig>,
    key: Arc<str>,
}

enum Window {
    Count(CountWindow),
    Time(Mutex<TimeWindow>),
}

/// The hot configuration, copied out of the config once.
#[derive(Clone, Copy, Debug)]
struct Params {
    minimum_calls: u32,
    failure_ppm: u64,
    consecutive: u32,
    slow_threshold: Option<Duration>,
    slow_ppm: u64,
    base_break: Duration,
}

/// Everything that changes only under the control lock.
#[derive(Debug)]
struct Control {
    state: State,
    generation: u64,
    /// Trips in a row without closing in between (the break grows with it).
    trips: u32,
    /// The end of the break; set whenever the breaker opens (to a time after
    /// the opening: see [`saturating_add`]).
    open_until: Option<Instant>,
    /// Probe calls out, whatever round admitted them (a probe of an
    /// abandoned round still occupies a slot until it returns, so there are
    /// never more probes in flight than the mode allows), except those
    /// issued before `forgotten_before`.
    probes_out: u32,
    /// The generation of the last [`CircuitBreaker::reset`]: probes of
    /// earlier generations were forgotten then, and free no slot when they
    /// end.
    forgotten_before: u64,
    probing: Probing,
}

/// One half-open round.
#[derive(Debug, Default)]
struct Probing {
    succeeded: u32,
    stage: usize,
    stage_started: Option<Instant>,
    /// Calls seen in this stage (admitted or not): the share is taken of these.
    seen: u64,
    results: WindowCounts,
}

/// Transitions decided under the lock, reported after it is released.
#[derive(Default)]
struct Pending([Option<Transition>; 2]);

impl Pending {
    fn push(&mut self, t: Transition) {
        if let Some(slot) = self.0.iter_mut().find(|s| s.is_none()) {
            *slot = Some(t);
        }
    }
}

/// A clock read at most once, and only if needed.
struct LazyNow<F> {
    clock: Option<F>,
    now: Option<Instant>,
}

impl<F: FnOnce() -> Instant> LazyNow<F> {
    const fn new(clock: F) -> Self {
        Self {
            clock: Some(clock),
            now: None,
        }
    }

    fn get(&mut self) -> Instant {
        if let Some(now) = self.now {
            return now;
        }
        let now = (self.clock.take().expect("clock is read once"))();
        self.now = Some(now);
        now
    }
}

impl CircuitBreaker {
    /// A breaker with an empty key.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_key(config, "")
    }

    /// A breaker whose rejections and events name `key` (an origin, a route...).
    pub fn with_key(config: BreakerConfig, key: impl Into<Arc<str>>) -> Self {
        Self::shared(Arc::new(config), key.into())
    }

    pub(crate) fn shared(config: Arc<BreakerConfig>, key: Arc<str>) -> Self {
        let params = Params {
            minimum_calls: config.minimum_calls,
            failure_ppm: ppm(config.failure_rate),
            consecutive: config.consecutive_failures.unwrap_or(0),
            slow_threshold: config.slow_calls.map(|s| s.threshold),
            slow_ppm: config.slow_calls.map_or(0, |s| ppm(s.rate)),
            base_break: config.break_duration,
        };
        let window = match config.window {
            SlidingWindow::Count { size } => Window::Count(CountWindow::new(size)),
            SlidingWindow::Time { duration, buckets } => {
                Window::Time(Mutex::new(TimeWindow::new(duration, buckets)))
            }
        };
        Self {
            word: AtomicU64::new(State::Closed.bits()),
            open_until: AtomicU64::new(0),
            origin: OnceLock::new(),
            window,
            rejections: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            touched: AtomicBool::new(true),
            control: Mutex::new(Control {
                state: State::Closed,
                generation: 0,
                trips: 0,
                open_until: None,
                probes_out: 0,
                forgotten_before: 0,
                probing: Probing::default(),
            }),
            params,
            config,
            key,
        }
    }

    /// Asks to make a call at `now`.
    ///
    /// `Ok` carries a [`Permit`]: report the call's outcome with
    /// [`Permit::record`]; dropping it unrecorded (a cancelled call) counts
    /// as nothing and frees a half-open probe slot. `Err` says when to come
    /// back.
    #[inline]
    pub fn try_acquire(&self, now: Instant) -> Result<Permit<'_>, BreakerOpen> {
        self.try_acquire_with(|| now)
    }

    /// [`try_acquire`](Self::try_acquire) with a clock that is read only when
    /// the breaker is not closed, so the closed path costs no clock read.
    #[inline]
    pub fn try_acquire_with(
        &self,
        clock: impl FnOnce() -> Instant,
    ) -> Result<Permit<'_>, BreakerOpen> {
        let word = self.admit(clock)?;
        Ok(Permit::new(Handle::Borrowed(self), word))
    }

    /// The closed state's share of [`try_acquire`](Self::try_acquire):
    /// admission if the breaker is closed, or `None` (ask `try_acquire`).
    /// [`permit`](Self::permit) makes it a permit; until then there is
    /// nothing to drop, should the caller unwind.
    #[inline]
    pub(crate) fn admit_closed(&self) -> Option<Admitted> {
        let word = self.word.load(Ordering::Acquire);
        (State::from_bits(word) == State::Closed).then_some(Admitted(word))
    }

    /// The permit for an admission of this breaker's (which it uses up).
    #[allow(clippy::needless_pass_by_value)]
    #[inline]
    pub(crate) const fn permit(&self, admitted: Admitted) -> Permit<'_> {
        Permit::new(Handle::Borrowed(self), admitted.0)
    }

    /// Records the outcome of a call admitted by [`admit_closed`](Self::admit_closed)
    /// whose latency was not measured; a second report is ignored. A closed
    /// admission dropped unreported needs nothing released, so it can stand
    /// in for a permit where one would cost more than the call.
    #[inline]
    pub(crate) fn record_admitted(
        &self,
        admitted: &mut Admitted,
        clock: impl FnOnce() -> Instant,
        outcome: Outcome,
    ) {
        let word = std::mem::replace(&mut admitted.0, SPENT);
        self.on_result(word, clock, outcome, None);
    }

    /// [`try_acquire`](Self::try_acquire) for a shared breaker, with a permit
    /// that owns its handle (to keep in a `'static` future or task).
    #[inline]
    pub fn try_acquire_owned(
        self: Arc<Self>,
        now: Instant,
    ) -> Result<Permit<'static>, BreakerOpen> {
        self.try_acquire_owned_with(|| now)
    }

    /// [`try_acquire_owned`](Self::try_acquire_owned) with a lazily read clock.
    #[inline]
    pub fn try_acquire_owned_with(
        self: Arc<Self>,
        clock: impl FnOnce() -> Instant,
    ) -> Result<Permit<'static>, BreakerOpen> {
        let word = self.admit(clock)?;
        Ok(Permit::new(Handle::Owned(self), word))
    }

    /// Admits a call: the word (generation and state) its permit carries,
    /// whose state also says what kind of call it is ([`Kind::of`]).
    #[inline]
    fn admit(&self, clock: impl FnOnce() -> Instant) -> Result<u64, BreakerOpen> {
        let word = self.word.load(Ordering::Acquire);
        if State::from_bits(word) == State::Closed {
            return Ok(word);
        }
        self.acquire_slow(word, clock())
    }

    #[cold]
    fn acquire_slow(&self, word: u64, now: Instant) -> Result<u64, BreakerOpen> {
        match State::from_bits(word) {
            State::Open => {
                let until = self.open_until.load(Ordering::Relaxed);
                let t = self.ticks(now);
                if t < until {
                    return Err(self.reject(Duration::from_nanos(until - t), State::Open));
                }
            }
            State::Isolated => return Err(self.reject(self.params.base_break, State::Isolated)),
            _ => {}
        }
        let mut pending = Pending::default();
        let result = self.acquire_locked(now, &mut pending);
        self.emit(&pending);
        result
    }

    fn acquire_locked(&self, now: Instant, pending: &mut Pending) -> Result<u64, BreakerOpen> {
        let mut ctl = self.lock();
        match ctl.state {
            State::Closed => return Ok(Self::word_of(&ctl)),
            State::Isolated => {
                drop(ctl);
                return Err(self.reject(self.params.base_break, State::Isolated));
            }
            State::Open => {
                // `open` always sets the end of the break, never to `now` or
                // earlier; were it missing, the break would count as over
                // (probing beats staying open for good).
                debug_assert!(ctl.open_until.is_some(), "open without an end of break");
                if let Some(until) = ctl.open_until.filter(|&until| now < until) {
                    drop(ctl);
                    return Err(self.reject(until - now, State::Open));
                }
                ctl.probing = Probing {
                    stage_started: Some(now),
                    ..Probing::default()
                };
                let window = self.window_counts();
                pending.push(self.set_state(
                    &mut ctl,
                    State::HalfOpen,
                    Reason::BreakElapsed,
                    None,
                    window,
                ));
            }
            State::HalfOpen => {}
        }
        // Half-open admission.
        let admitted = match &self.config.half_open {
            HalfOpen::Quick { probes } => ctl.probes_out + ctl.probing.succeeded < *probes,
            HalfOpen::Progressive {
                stage_duration,
                stages,
            } => {
                if self.advance_stage(&mut ctl, now, *stage_duration, stages.len(), pending) {
                    return Ok(Self::word_of(&ctl)); // closed: an ordinary call
                }
                let idle = ctl.probes_out == 0;
                let p = &mut ctl.probing;
                let share = ppm(stages[p.stage]);
                // `share` of the calls, the first of the stage included
                // (ceil(n × share) grows by one on each admitted call); and
                // whenever a stage has no result and no probe out (its probe
                // was cancelled), so low traffic still probes.
                let ceil = |n: u64| (n * share).div_ceil(MILLION);
                let quota = ceil(p.seen + 1) > ceil(p.seen) || (idle && p.results.calls == 0);
                p.seen += 1;
                quota
            }
        };
        if admitted {
            ctl.probes_out += 1;
            return Ok(Self::word_of(&ctl)); // half-open: a probe
        }
        let retry_after = match &self.config.half_open {
            HalfOpen::Progressive { stage_duration, .. } => {
                ctl.probing.stage_started.map_or(Duration::ZERO, |s| {
                    saturating_add(s, *stage_duration).saturating_duration_since(now)
                })
            }
            HalfOpen::Quick { .. } => Duration::ZERO,
        };
        drop(ctl);
        let retry_after = if retry_after.is_zero() {
            self.params.base_break / 10
        } else {
            retry_after
        };
        Err(self.reject(retry_after, State::HalfOpen))
    }

    /// Moves a progressive half-open breaker to its next stage, or closes it
    /// after the last one, once the stage has lasted `stage_duration` and
    /// seen a result. Returns `true` if it closed.
    fn advance_stage(
        &self,
        ctl: &mut Control,
        now: Instant,
        stage_duration: Duration,
        stages: usize,
        pending: &mut Pending,
    ) -> bool {
        let p = &mut ctl.probing;
        let started = *p.stage_started.get_or_insert(now);
        if now < saturating_add(started, stage_duration) || p.results.calls == 0 {
            return false;
        }
        if p.stage + 1 >= stages {
            let window = p.results;
            pending.push(self.close(ctl, Reason::Recovered, window));
            return true;
        }
        p.stage += 1;
        p.stage_started = Some(now);
        p.seen = 0;
        p.results = WindowCounts::default();
        tracing::debug!(
            resilience.strategy.name = self.name(),
            resilience.circuit_breaker.id = &*self.key,
            stage = p.stage,
            share = match &self.config.half_open {
                HalfOpen::Progressive { stages, .. } => stages[p.stage],
                HalfOpen::Quick { .. } => 1.0,
            },
            "circuit breaker half-open stage advanced"
        );
        false
    }

    fn reject(&self, retry_after: Duration, state: State) -> BreakerOpen {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        BreakerOpen::new(self.key.clone(), retry_after, state)
    }

    /// Learns from the outcome of a call admitted with `word`, whose latency
    /// is `None` when it was not measured (no slow-call detection).
    #[inline]
    fn on_result(
        &self,
        word: u64,
        clock: impl FnOnce() -> Instant,
        outcome: Outcome,
        latency: Option<Duration>,
    ) {
        let failed = outcome.is_failure();
        let slow = latency.is_some_and(|l| self.params.slow_threshold.is_some_and(|t| l >= t));
        // The path of a healthy service, kept small enough to inline: a
        // success, closed, into a count window full of successes, which it
        // would leave as it is. Nothing to write, so nothing can land in the
        // wrong generation: no need to check it.
        if State::from_bits(word) == State::Closed
            && !failed
            && !slow
            && let Window::Count(w) = &self.window
            && w.is_steady()
        {
            return;
        }
        self.on_result_slow(word, clock, failed, slow);
    }

    #[inline(never)]
    fn on_result_slow(&self, word: u64, clock: impl FnOnce() -> Instant, failed: bool, slow: bool) {
        let mut now = LazyNow::new(clock);
        match Kind::of(word) {
            Kind::Closed => self.record_closed(word, &mut now, failed, slow),
            Kind::Probe => self.record_probe(word, now.get(), failed, slow),
            Kind::Done => {}
        }
    }

    /// Records the result of a call admitted closed in generation `word`,
    /// unless the breaker has moved on since (its outcome belongs to a
    /// window that no longer exists).
    fn record_closed<F: FnOnce() -> Instant>(
        &self,
        word: u64,
        now: &mut LazyNow<F>,
        failed: bool,
        slow: bool,
    ) {
        let recorded = match &self.window {
            // The window's gate checks the generation and keeps it from
            // changing until the write is done.
            Window::Count(w) => w.record(word, failed, slow),
            Window::Time(w) => {
                let at = now.get(); // read the clock before taking the lock
                let mut w = lock(w);
                // Checked under the window's lock, which `publish` holds to
                // clear the window and store a new generation: the word read
                // here is the window's (Relaxed suffices, the lock orders it).
                (self.word.load(Ordering::Relaxed) == word).then(|| Recorded {
                    // Read out (saturated) only where a failure or a slow
                    // call looks at them.
                    counts: w.record(at, failed, slow).counts(),
                    run: w.run(),
                })
            }
        };
        // The gate is left and the lock released before tripping, which
        // takes the control lock: `publish` holds that one while it waits
        // for them.
        let Some(Recorded { counts, run }) = recorded else {
            return;
        };
        if (failed || slow)
            && let Some(reason) = self.trip_reason(counts, run, failed, slow)
        {
            self.trip(word, now.get(), reason, counts);
        }
    }

    fn trip_reason(
        &self,
        counts: WindowCounts,
        run: u32,
        failed: bool,
        slow: bool,
    ) -> Option<Reason> {
        let p = &self.params;
        if failed && p.consecutive != 0 && run >= p.consecutive {
            return Some(Reason::ConsecutiveFailures { failures: run });
        }
        if counts.calls < p.minimum_calls || counts.calls == 0 || !counts.is_sane() {
            return None;
        }
        let calls = u64::from(counts.calls);
        if failed && u64::from(counts.failures) * MILLION >= p.failure_ppm * calls {
            return Some(Reason::FailureRate {
                rate: counts.failure_rate(),
            });
        }
        if slow && p.slow_ppm != 0 && u64::from(counts.slow) * MILLION >= p.slow_ppm * calls {
            return Some(Reason::SlowCallRate {
                rate: counts.slow_rate(),
            });
        }
        None
    }

    #[cold]
    fn trip(&self, word: u64, now: Instant, reason: Reason, window: WindowCounts) {
        let mut pending = Pending::default();
        {
            let mut ctl = self.lock();
            if ctl.state != State::Closed || Self::word_of(&ctl) != word {
                return; // another call tripped it first
            }
            pending.push(self.open(&mut ctl, now, reason, window));
        }
        self.emit(&pending);
    }

    #[cold]
    fn record_probe(&self, word: u64, now: Instant, failed: bool, slow: bool) {
        let mut pending = Pending::default();
        {
            let mut ctl = self.lock();
            Self::free_probe_slot(&mut ctl, word);
            if Self::word_of(&ctl) != word {
                return; // a probe of an abandoned round: its slot is free, its result moot
            }
            match &self.config.half_open {
                HalfOpen::Quick { probes } => {
                    if failed || slow {
                        let window = self.window_counts();
                        pending.push(self.open(&mut ctl, now, Reason::ProbeFailed, window));
                    } else {
                        ctl.probing.succeeded += 1;
                        if ctl.probing.succeeded >= *probes {
                            let window = self.window_counts();
                            pending.push(self.close(&mut ctl, Reason::Recovered, window));
                        }
                    }
                }
                HalfOpen::Progressive {
                    stage_duration,
                    stages,
                } => {
                    let p = &mut ctl.probing;
                    p.results.add(failed, slow);
                    let r = p.results;
                    let calls = u64::from(r.calls);
                    let stage_failed = u64::from(r.failures) * MILLION
                        >= self.params.failure_ppm * calls
                        || (self.params.slow_ppm != 0
                            && u64::from(r.slow) * MILLION >= self.params.slow_ppm * calls);
                    if stage_failed {
                        let stage = p.stage;
                        pending.push(self.open(&mut ctl, now, Reason::StageFailed { stage }, r));
                    } else {
                        self.advance_stage(
                            &mut ctl,
                            now,
                            *stage_duration,
                            stages.len(),
                            &mut pending,
                        );
                    }
                }
            }
        }
        self.emit(&pending);
    }

    /// A probe permit of generation `word` dropped without a result: free
    /// its slot.
    #[cold]
    fn release(&self, word: u64) {
        Self::free_probe_slot(&mut self.lock(), word);
    }

    /// A probe issued with `word` ended: its slot is free, unless a reset
    /// forgot it already.
    fn free_probe_slot(ctl: &mut Control, word: u64) {
        if Self::generation_of(word) >= ctl.forgotten_before {
            ctl.probes_out = ctl.probes_out.saturating_sub(1);
        }
    }

    fn open(
        &self,
        ctl: &mut Control,
        now: Instant,
        reason: Reason,
        window: WindowCounts,
    ) -> Transition {
        ctl.trips = ctl.trips.saturating_add(1);
        let pause = self.config.break_after_trips(ctl.trips);
        self.origin.get_or_init(|| now);
        let until = saturating_add(now, pause);
        ctl.open_until = Some(until);
        // Relaxed: published with the state by `publish`'s Release.
        self.open_until.store(self.ticks(until), Ordering::Relaxed);
        match &self.window {
            Window::Count(w) => w.reset_run(),
            Window::Time(w) => lock(w).reset_run(),
        }
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.set_state(ctl, State::Open, reason, Some(pause), window)
    }

    /// Closes the breaker; `publish` starts the new closed period with an
    /// empty window.
    fn close(&self, ctl: &mut Control, reason: Reason, window: WindowCounts) -> Transition {
        ctl.trips = 0;
        ctl.open_until = None;
        ctl.probing = Probing::default();
        self.set_state(ctl, State::Closed, reason, None, window)
    }

    /// Publishes a new state (with a new generation) and describes the change.
    fn set_state(
        &self,
        ctl: &mut Control,
        to: State,
        reason: Reason,
        break_duration: Option<Duration>,
        window: WindowCounts,
    ) -> Transition {
        let from = ctl.state;
        ctl.state = to;
        let generation = self.publish(ctl);
        self.transitions.fetch_add(1, Ordering::Relaxed);
        Transition {
            from,
            to,
            reason,
            break_duration,
            window,
            generation,
        }
    }

    /// Starts a new generation of `ctl.state` (already set) and publishes it;
    /// a closed one starts with an empty window and no run of failures.
    /// Results of calls admitted in earlier generations are ignored from
    /// here on, including those already past their generation check (see
    /// the module docs). Returns the new generation.
    fn publish(&self, ctl: &mut Control) -> u64 {
        // Relaxed: only the control lock's holder writes the word.
        let old = self.word.load(Ordering::Relaxed);
        ctl.generation += 1;
        let new = Self::word_of(ctl);
        let fresh = ctl.state == State::Closed;
        match &self.window {
            Window::Count(w) => {
                // The gate follows the word: `old` is the period it is at
                // (every move happens here, under the control lock).
                if fresh {
                    w.restart(old, new);
                } else {
                    w.retag(old, new);
                }
                // Release: a reader that sees the new word also sees
                // `open_until` and the window as restarted.
                self.word.store(new, Ordering::Release);
            }
            Window::Time(w) => {
                // Stored under the window's lock: a recorder that takes it
                // after this sees the new word and stays out; one that took
                // it before wrote into a window cleared here.
                let mut w = lock(w);
                if fresh {
                    w.clear();
                }
                self.word.store(new, Ordering::Release);
            }
        }
        ctl.generation
    }

    const fn word_of(ctl: &Control) -> u64 {
        (ctl.generation << 2) | ctl.state.bits()
    }

    /// The generation a word (see [`CircuitBreaker::word_of`]) was made in.
    const fn generation_of(word: u64) -> u64 {
        word >> 2
    }

    /// Opens the breaker by hand: every call is refused with
    /// [`State::Isolated`] until [`reset`](Self::reset).
    pub fn isolate(&self) {
        let mut pending = Pending::default();
        {
            let mut ctl = self.lock();
            if ctl.state != State::Isolated {
                ctl.probing = Probing::default();
                let window = self.window_counts();
                pending.push(self.set_state(
                    &mut ctl,
                    State::Isolated,
                    Reason::Isolated,
                    None,
                    window,
                ));
            }
        }
        self.emit(&pending);
    }

    /// Closes the breaker by hand, from any state, and forgets its history:
    /// window, consecutive failures, the grown break, and the calls in
    /// flight (their results will not count). Probes still out no longer
    /// hold a slot: a probe that hangs cannot keep the next half-open round
    /// from probing. (Short of a reset, a probe holds its slot until it
    /// returns or is dropped: put the request's timeout inside the breaker.)
    pub fn reset(&self) {
        let mut pending = Pending::default();
        {
            let mut ctl = self.lock();
            let window = self.window_counts();
            if ctl.state == State::Closed {
                // A new closed period, which is not a transition: calls
                // admitted before the reset no longer count.
                ctl.trips = 0;
                self.publish(&mut ctl);
            } else {
                pending.push(self.close(&mut ctl, Reason::Reset, window));
            }
            // Forget the probes out: whatever they hang on, the next
            // half-open round gets its slots.
            ctl.probes_out = 0;
            ctl.forgotten_before = ctl.generation;
        }
        self.emit(&pending);
    }

    /// The current state. A breaker whose break has elapsed still reads
    /// [`State::Open`] until the next call moves it to half-open.
    pub fn state(&self) -> State {
        State::from_bits(self.word.load(Ordering::Acquire))
    }

    /// The key named in rejections and events.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn shared_key(&self) -> Arc<str> {
        self.key.clone()
    }

    /// The configured name, or `""`.
    pub fn name(&self) -> &str {
        self.config.name.as_deref().unwrap_or("")
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// `true` when outcomes need a measured latency (slow-call detection is
    /// on); otherwise callers may pass `Duration::ZERO` and skip the clock.
    pub const fn measures_latency(&self) -> bool {
        self.params.slow_threshold.is_some()
    }

    /// Counters and window, read from atomics; the probes in flight, and a
    /// time window's counts, under the breaker's short locks (the ones a
    /// call's state change takes, never held across an await). For a time
    /// window the counts are as of the latest call; see
    /// [`snapshot_at`](Self::snapshot_at).
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.snapshot_with(self.window_counts())
    }

    /// Like [`snapshot`](Self::snapshot), with a time window's expired
    /// buckets dropped as of `now`. It only reads: the window itself moves
    /// with the calls alone, so a `now` ahead of them changes nothing.
    pub fn snapshot_at(&self, now: Instant) -> BreakerSnapshot {
        let window = match &self.window {
            Window::Count(w) => w.counts(),
            Window::Time(w) => lock(w).counts_at(now),
        };
        self.snapshot_with(window)
    }

    fn snapshot_with(&self, window: WindowCounts) -> BreakerSnapshot {
        BreakerSnapshot {
            state: self.state(),
            window,
            consecutive_failures: match &self.window {
                Window::Count(w) => w.run(),
                Window::Time(w) => lock(w).run(),
            },
            rejections: self.rejections.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            probes_in_flight: self.lock().probes_out,
        }
    }

    fn window_counts(&self) -> WindowCounts {
        match &self.window {
            Window::Count(w) => w.counts(),
            Window::Time(w) => lock(w).counts(),
        }
    }

    fn ticks(&self, t: Instant) -> u64 {
        let origin = *self.origin.get_or_init(|| t);
        u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        lock(&self.control)
    }

    fn emit(&self, pending: &Pending) {
        for t in pending.0.iter().flatten() {
            let ev = TransitionEvent {
                name: self.name(),
                key: &self.key,
                transition: *t,
            };
            event::trace(&ev);
            if let Some(cb) = &self.config.on_transition {
                cb(&ev);
            }
        }
    }

    /// Marks the breaker as used (for the registry's idle sweep).
    #[inline]
    pub(crate) fn touch(&self) {
        if !self.touched.load(Ordering::Relaxed) {
            self.touched.store(true, Ordering::Relaxed);
        }
    }

    /// Whether it was used since the last call.
    pub(crate) fn take_touched(&self) -> bool {
        self.touched.swap(false, Ordering::Relaxed)
    }

    /// Whether a registry may forget this breaker, which it alone holds.
    ///
    /// A closed breaker may go. So may an open one whose break has ended,
    /// when the registry found it idle as of `idle_at` (`None`: not idle):
    /// its key tripped and was never asked for again, and forgetting it
    /// costs at most one unguarded call, where keeping it would hold a slot
    /// for ever (an open breaker only moves on when a call arrives). So is
    /// an idle half-open one with no probe out, which only a call would
    /// move on too. A half-open breaker with probes out stays (it has
    /// probes to judge), and so does an isolated one (opened by hand).
    pub(crate) fn is_evictable(self: &Arc<Self>, idle_at: Option<Instant>) -> bool {
        // Calls in flight through a registry hold owned permits, each a
        // share of the `Arc`: a breaker anyone else holds stays.
        if Arc::strong_count(self) != 1 {
            return false;
        }
        // Acquire: pairs with the Release decrement of the last share
        // dropped (a permit's), so the state read below includes that
        // call's outcome. (Relaxed as `strong_count` reads it, that
        // decrement does not order anything by itself.)
        std::sync::atomic::fence(Ordering::Acquire);
        match self.state() {
            State::Closed => true,
            State::Open => idle_at.is_some_and(|now| {
                // Cold (the registry's sweep): read the end of the break
                // under the lock rather than from the ticks.
                self.lock().open_until.is_none_or(|until| now >= until)
            }),
            // Half-open with no probe out, idle: the probe that would
            // judge it was cancelled (or a stage's traffic stopped), and
            // no call comes to take another. Kept, it would stay half-open
            // for ever; forgotten like an open breaker whose break ended.
            State::HalfOpen => idle_at.is_some() && self.lock().probes_out == 0,
            State::Isolated => false,
        }
    }
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name())
            .field("key", &self.key)
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// `t + d`, or as late as an `Instant` goes when that overflows: a break or
/// stage too long to represent lasts, for all practical purposes, for ever
/// (never zero, which an overflow falling back to `t` would make it).
fn saturating_add(t: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(later) = t.checked_add(d) {
            return later;
        }
        // Halving converges on the largest representable step in a few
        // dozen rounds at most, and only for absurd durations.
        d /= 2;
    }
}

/// A point-in-time reading of a breaker.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// The state.
    pub state: State,
    /// The calls in the sliding window.
    pub window: WindowCounts,
    /// The current run of failures.
    pub consecutive_failures: u32,
    /// Calls refused since the breaker was made.
    pub rejections: u64,
    /// State transitions since the breaker was made.
    pub transitions: u64,
    /// Times the breaker opened (trips and failed half-open tests).
    pub opened: u64,
    /// Probes out now: admitted while half-open, not yet judged, dropped or
    /// forgotten by [`CircuitBreaker::reset`].
    pub probes_in_flight: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Closed,
    Probe,
    Done,
}

impl Kind {
    /// What a permit is for, read from the state in its word: permits are
    /// issued closed (an ordinary call) or half-open (a probe), so any other
    /// state marks a spent permit ([`SPENT`]).
    #[inline]
    const fn of(word: u64) -> Self {
        match State::from_bits(word) {
            State::Closed => Self::Closed,
            State::HalfOpen => Self::Probe,
            State::Open | State::Isolated => Self::Done,
        }
    }
}

/// The word of a permit whose outcome is recorded.
const SPENT: u64 = State::Open.bits();

/// A call admitted by a closed breaker ([`CircuitBreaker::admit_closed`]):
/// the word its permit would carry, or [`SPENT`] once recorded.
#[derive(Debug)]
pub(crate) struct Admitted(u64);

/// A permit's way back to its breaker: borrowed, or shared ownership.
enum Handle<'a> {
    Borrowed(&'a CircuitBreaker),
    Owned(Arc<CircuitBreaker>),
}

impl std::ops::Deref for Handle<'_> {
    type Target = CircuitBreaker;

    #[inline]
    fn deref(&self) -> &CircuitBreaker {
        match self {
            Handle::Borrowed(b) => b,
            Handle::Owned(b) => b,
        }
    }
}

/// Leave to make one call. Report its outcome with [`record`](Self::record);
/// dropping the permit without a result (a cancelled call) counts as nothing
/// and, for a half-open probe, frees the slot for another probe.
///
/// Borrowed from its breaker ([`CircuitBreaker::try_acquire`]) or owning a
/// share of it ([`CircuitBreaker::try_acquire_owned`], `Permit<'static>`).
#[must_use = "a permit does nothing unless its call's outcome is recorded"]
pub struct Permit<'a> {
    breaker: Handle<'a>,
    /// Generation and state at admission (which also give the kind of call,
    /// [`Kind::of`]), or [`SPENT`].
    word: u64,
}

impl<'a> Permit<'a> {
    #[inline]
    const fn new(breaker: Handle<'a>, word: u64) -> Self {
        Self { breaker, word }
    }

    /// The breaker that issued this permit.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// `true` for a half-open probe.
    pub fn is_probe(&self) -> bool {
        Kind::of(self.word) == Kind::Probe
    }

    /// Reports the call's outcome, completed at `now` after `latency` (from
    /// send to response head; only read when slow-call detection is on).
    #[inline]
    pub fn record(self, now: Instant, outcome: Outcome, latency: Duration) {
        self.record_with(|| now, outcome, latency);
    }

    /// [`record`](Self::record) with a clock read only if needed (time
    /// windows, probes, trips).
    #[inline]
    pub fn record_with(
        mut self,
        clock: impl FnOnce() -> Instant,
        outcome: Outcome,
        latency: Duration,
    ) {
        self.settle(clock, outcome, Some(latency));
    }

    /// Records in place, with `latency: None` when it was not measured
    /// (the breaker does not [measure latency](CircuitBreaker::measures_latency)).
    /// The permit is spent: its drop does nothing more.
    #[inline]
    pub(crate) fn settle(
        &mut self,
        clock: impl FnOnce() -> Instant,
        outcome: Outcome,
        latency: Option<Duration>,
    ) {
        let word = std::mem::replace(&mut self.word, SPENT);
        self.breaker.on_result(word, clock, outcome, latency);
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if Kind::of(self.word) == Kind::Probe {
            self.breaker.release(self.word);
        }
    }
}

impl std::fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.breaker.key())
            .field("probe", &self.is_probe())
            .finish()
    }
}
