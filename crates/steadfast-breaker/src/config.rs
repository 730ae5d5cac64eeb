//! [`BreakerConfig`]: every option of a circuit breaker, its default, and the
//! builder that validates them once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::event::TransitionEvent;
use crate::window::MAX_COUNT_WINDOW;

/// Default sliding window: the last 100 calls.
pub const DEFAULT_WINDOW_SIZE: u32 = 100;
/// Default number of calls the window must hold before a rate can trip the
/// breaker: 20, so a handful of early failures never opens it.
pub const DEFAULT_MINIMUM_CALLS: u32 = 20;
/// Default failure rate that trips the breaker: 50 % of the calls in the window.
pub const DEFAULT_FAILURE_RATE: f64 = 0.5;
/// Default run of consecutive failures that trips the breaker whatever the
/// window holds: 10 (a dead host trips in two or three retried requests, even
/// at low traffic).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 10;
/// Default time the breaker stays open after its first trip: 5 s.
pub const DEFAULT_BREAK_DURATION: Duration = Duration::from_secs(5);
/// Default growth of the break on each repeated trip (a failed half-open
/// probe): ×2.
pub const DEFAULT_BREAK_GROWTH: f64 = 2.0;
/// Default cap on the grown break: 60 s.
pub const DEFAULT_MAX_BREAK_DURATION: Duration = Duration::from_secs(60);
/// Default number of half-open probes in quick mode: 1.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 1;
/// Default shares of traffic let through by the stages of the progressive
/// half-open mode.
pub const DEFAULT_PROGRESSIVE_STAGES: [f64; 6] = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5];
/// Default number of buckets of a time-based window.
pub const DEFAULT_TIME_WINDOW_BUCKETS: u32 = 10;
/// Most buckets a time-based window may have.
pub const MAX_TIME_WINDOW_BUCKETS: u32 = 1_000;
/// The smallest rate or share the breaker resolves: one in a million.
/// Rates are compared in parts per million on the hot path, so a smaller
/// one would round to zero and silently turn its check off; the builder
/// refuses it instead.
pub const MIN_RATE: f64 = 1e-6;

/// The callback type of [`BreakerConfigBuilder::on_transition`].
pub(crate) type TransitionCallback = Arc<dyn Fn(&TransitionEvent<'_>) + Send + Sync>;

/// Which recent calls the failure and slow-call rates are computed over.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `size` calls (a ring buffer). The cheapest: recording a call
    /// needs no clock read.
    Count {
        /// How many calls the window holds (1 to 1 048 576).
        size: u32,
    },
    /// The calls of the last `duration`, kept in `buckets` buckets of
    /// `duration / buckets` each; a whole bucket expires at once.
    Time {
        /// How far back the window reaches.
        duration: Duration,
        /// The number of buckets (1 to 1000).
        buckets: u32,
    },
}

impl SlidingWindow {
    /// The last `size` calls.
    pub const fn count(size: u32) -> Self {
        Self::Count { size }
    }

    /// The calls of the last `duration`, in [`DEFAULT_TIME_WINDOW_BUCKETS`] buckets.
    pub const fn time(duration: Duration) -> Self {
        Self::Time {
            duration,
            buckets: DEFAULT_TIME_WINDOW_BUCKETS,
        }
    }

    /// The calls of the last `duration`, in `buckets` buckets.
    pub const fn time_with_buckets(duration: Duration, buckets: u32) -> Self {
        Self::Time { duration, buckets }
    }

    fn validate(self) -> Result<Self, ConfigError> {
        match self {
            Self::Count { size } if size == 0 || size > MAX_COUNT_WINDOW => {
                Err(ConfigError::Window(format!(
                    "a count window holds 1 to {MAX_COUNT_WINDOW} calls, got {size}"
                )))
            }
            Self::Time { buckets, .. } if buckets == 0 || buckets > MAX_TIME_WINDOW_BUCKETS => {
                Err(ConfigError::Window(format!(
                    "a time window has 1 to {MAX_TIME_WINDOW_BUCKETS} buckets, got {buckets}"
                )))
            }
            Self::Time { duration, buckets } if (duration / buckets).is_zero() => {
                Err(ConfigError::Window(format!(
                    "a time window of {duration:?} cannot be cut into {buckets} buckets; \
                     use a longer duration"
                )))
            }
            ok => Ok(ok),
        }
    }
}

impl Default for SlidingWindow {
    fn default() -> Self {
        Self::count(DEFAULT_WINDOW_SIZE)
    }
}

/// Slow-call detection: a call whose response head took at least
/// `threshold` is slow, and the breaker trips when slow calls reach `rate`
/// of the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlowCalls {
    /// From send to response head, at or above which a call is slow.
    pub threshold: Duration,
    /// Share of slow calls in the window, at or above which the breaker trips
    /// ([`MIN_RATE`] ≤ rate ≤ 1). Checked when a call is slow.
    pub rate: f64,
}

/// How the breaker tests the water after a break.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum HalfOpen {
    /// Let `probes` calls through; the rest are rejected at once (never
    /// queued). All probes succeeding closes the breaker, the first failure
    /// reopens it. A probe that is cancelled frees its slot for another.
    Quick {
        /// How many probes, concurrent or one after another (≥ 1).
        probes: u32,
    },
    /// Let a rising share of traffic through, one stage per `stage_duration`
    /// (with the defaults 0.1 % → 1 % → 5 % → 10 % → 25 % → 50 %). A stage
    /// advances only once it has seen a result and its failure rate stayed
    /// under the breaker's failure rate (and slow-call rate); crossing it
    /// reopens the breaker at once. After the last stage the breaker closes.
    /// The first call of each stage always goes through, so low traffic still
    /// probes.
    Progressive {
        /// How long each stage lasts.
        stage_duration: Duration,
        /// The share of traffic let through in each stage, rising, each from
        /// [`MIN_RATE`] to 1.
        stages: Arc<[f64]>,
    },
}

impl HalfOpen {
    /// One probe ([`DEFAULT_HALF_OPEN_PROBES`]).
    pub const fn quick() -> Self {
        Self::Quick {
            probes: DEFAULT_HALF_OPEN_PROBES,
        }
    }

    /// `probes` probes.
    pub const fn probes(probes: u32) -> Self {
        Self::Quick { probes }
    }

    /// The default stages ([`DEFAULT_PROGRESSIVE_STAGES`]), `stage_duration` each.
    pub fn progressive(stage_duration: Duration) -> Self {
        Self::progressive_stages(stage_duration, &DEFAULT_PROGRESSIVE_STAGES)
    }

    /// Custom stages: each a share of traffic from [`MIN_RATE`] to 1, rising.
    pub fn progressive_stages(stage_duration: Duration, stages: &[f64]) -> Self {
        Self::Progressive {
            stage_duration,
            stages: stages.into(),
        }
    }

    fn validate(self) -> Result<Self, ConfigError> {
        match &self {
            Self::Quick { probes: 0 } => Err(ConfigError::HalfOpen(
                "quick mode needs at least one probe".into(),
            )),
            Self::Progressive { stage_duration, .. } if stage_duration.is_zero() => Err(
                ConfigError::HalfOpen("a progressive stage must last longer than zero".into()),
            ),
            Self::Progressive { stages, .. } if stages.is_empty() => Err(ConfigError::HalfOpen(
                "progressive mode needs at least one stage".into(),
            )),
            Self::Progressive { stages, .. } => {
                let mut last = 0.0;
                for &s in stages.iter() {
                    if !(s > 0.0 && s <= 1.0) || s < last {
                        return Err(ConfigError::HalfOpen(format!(
                            "progressive stages must be shares in (0, 1], rising; got {stages:?}"
                        )));
                    }
                    if s < MIN_RATE {
                        return Err(ConfigError::HalfOpen(format!(
                            "progressive stage share {s} is below one in a million (1e-6), the \
                             finest share the breaker resolves; got {stages:?}"
                        )));
                    }
                    last = s;
                }
                Ok(self)
            }
            Self::Quick { .. } => Ok(self),
        }
    }
}

impl Default for HalfOpen {
    fn default() -> Self {
        Self::quick()
    }
}

/// A bad breaker configuration, reported once by [`BreakerConfigBuilder::build`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A rate outside (0, 1].
    #[error("{option} must be a share in (0, 1] (0.5 = 50 %), got {value}")]
    Rate {
        /// The option.
        option: &'static str,
        /// The value given.
        value: f64,
    },
    /// A rate in (0, 1] but below [`MIN_RATE`], which the breaker would
    /// round to zero.
    #[error(
        "{option} of {value} is below one in a million (1e-6), the finest rate the breaker \
         resolves; use 1e-6 or more"
    )]
    RateTooSmall {
        /// The option.
        option: &'static str,
        /// The value given.
        value: f64,
    },
    /// The sliding window cannot be built.
    #[error("invalid sliding window: {0}")]
    Window(String),
    /// `minimum_calls` can never be reached by the count window.
    #[error(
        "minimum_calls ({minimum_calls}) exceeds the window size ({window_size}), so the rates \
         could never trip the breaker; lower minimum_calls or grow the window"
    )]
    MinimumCalls {
        /// The value given.
        minimum_calls: u32,
        /// The count window's size.
        window_size: u32,
    },
    /// A duration that must be positive is zero.
    #[error("{option} must be longer than zero")]
    ZeroDuration {
        /// The option.
        option: &'static str,
    },
    /// The break growth factor is below 1 or not finite.
    #[error("break_growth must be a finite factor ≥ 1 (1 = no growth), got {0}")]
    Growth(f64),
    /// The cap on the break is shorter than the break itself.
    #[error(
        "max_break_duration ({max:?}) is shorter than break_duration ({base:?}); raise it or \
         lower break_duration"
    )]
    MaxBreak {
        /// break_duration.
        base: Duration,
        /// max_break_duration.
        max: Duration,
    },
    /// The half-open mode is invalid.
    #[error("invalid half-open mode: {0}")]
    HalfOpen(String),
}

/// A validated circuit-breaker configuration. Build one with
/// [`BreakerConfig::builder`]; [`BreakerConfig::default`] holds the defaults
/// (see the crate docs' Defaults table).
#[derive(Clone)]
pub struct BreakerConfig {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate: f64,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) slow_calls: Option<SlowCalls>,
    pub(crate) break_duration: Duration,
    pub(crate) break_growth: f64,
    pub(crate) max_break_duration: Duration,
    pub(crate) half_open: HalfOpen,
    pub(crate) on_transition: Option<TransitionCallback>,
}

impl BreakerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            config: Self::default(),
        }
    }

    /// The name shown in tracing events and transition callbacks.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The sliding window.
    pub const fn window(&self) -> SlidingWindow {
        self.window
    }

    /// Calls the window must hold before a rate can trip the breaker.
    pub const fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// The failure rate that trips the breaker.
    pub const fn failure_rate(&self) -> f64 {
        self.failure_rate
    }

    /// The run of consecutive failures that trips the breaker, if any.
    pub const fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// Slow-call detection, if enabled.
    pub const fn slow_calls(&self) -> Option<SlowCalls> {
        self.slow_calls
    }

    /// How long the breaker stays open after a first trip.
    pub const fn break_duration(&self) -> Duration {
        self.break_duration
    }

    /// The growth factor of the break on repeated trips.
    pub const fn break_growth(&self) -> f64 {
        self.break_growth
    }

    /// The cap on the grown break.
    pub const fn max_break_duration(&self) -> Duration {
        self.max_break_duration
    }

    /// The half-open mode.
    pub const fn half_open(&self) -> &HalfOpen {
        &self.half_open
    }

    /// The break after `trips` trips in a row (1 = the first trip):
    /// `break_duration × break_growth^(trips − 1)`, capped at `max_break_duration`.
    pub fn break_after_trips(&self, trips: u32) -> Duration {
        let exp = trips.saturating_sub(1).min(1_000) as i32;
        let secs = self.break_duration.as_secs_f64() * self.break_growth.powi(exp);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max_break_duration)
            .min(self.max_break_duration)
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            name: None,
            window: SlidingWindow::default(),
            minimum_calls: DEFAULT_MINIMUM_CALLS,
            failure_rate: DEFAULT_FAILURE_RATE,
            consecutive_failures: Some(DEFAULT_CONSECUTIVE_FAILURES),
            slow_calls: None,
            break_duration: DEFAULT_BREAK_DURATION,
            break_growth: DEFAULT_BREAK_GROWTH,
            max_break_duration: DEFAULT_MAX_BREAK_DURATION,
            half_open: HalfOpen::default(),
            on_transition: None,
        }
    }
}

impl fmt::Debug for BreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfig")
            .field("name", &self.name)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("failure_rate", &self.failure_rate)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("slow_calls", &self.slow_calls)
            .field("break_duration", &self.break_duration)
            .field("break_growth", &self.break_growth)
            .field("max_break_duration", &self.max_break_duration)
            .field("half_open", &self.half_open)
            .field(
                "on_transition",
                &self.on_transition.as_ref().map(|_| "Fn(&TransitionEvent)"),
            )
            .finish()
    }
}

/// Builds a [`BreakerConfig`]; every option starts at its default and
/// [`build`](Self::build) checks them all.
#[derive(Debug)]
pub struct BreakerConfigBuilder {
    config: BreakerConfig,
}

impl BreakerConfigBuilder {
    /// A name for tracing events and callbacks, so two breakers are told apart.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// The sliding window (default: the last [`DEFAULT_WINDOW_SIZE`] calls).
    pub fn window(mut self, window: SlidingWindow) -> Self {
        self.config.window = window;
        self
    }

    /// Calls the window must hold before a rate can trip the breaker
    /// (default [`DEFAULT_MINIMUM_CALLS`]). Consecutive failures trip it
    /// whatever the window holds.
    ///
    /// The rates are checked when a call fails (the slow-call rate when a
    /// call is slow), as Polly does: a window that reaches the minimum, or
    /// the bar, on a success trips at its next failure, not at once.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.minimum_calls = calls;
        self
    }

    /// The share of failed calls in the window, at or above which the breaker
    /// trips (default [`DEFAULT_FAILURE_RATE`]), from [`MIN_RATE`] to 1. Also
    /// the bar each progressive half-open stage must stay under. Checked
    /// when a call fails (see [`minimum_calls`](Self::minimum_calls)).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self
    }

    /// Trip after this many failures in a row, whatever the window holds
    /// (default [`DEFAULT_CONSECUTIVE_FAILURES`]); `None` or `0` turns it off.
    pub fn consecutive_failures(mut self, failures: impl Into<Option<u32>>) -> Self {
        self.config.consecutive_failures = failures.into().filter(|&n| n > 0);
        self
    }

    /// Count a call as slow when its response head took at least `threshold`,
    /// and trip when slow calls reach `rate` of the window (default: off).
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.config.slow_calls = Some(SlowCalls { threshold, rate });
        self
    }

    /// How long the breaker stays open after a first trip (default
    /// [`DEFAULT_BREAK_DURATION`]). A break too long for the clock
    /// (`Duration::MAX`) keeps the breaker open until
    /// [`reset`](crate::CircuitBreaker::reset).
    pub fn break_duration(mut self, duration: Duration) -> Self {
        self.config.break_duration = duration;
        self
    }

    /// The factor the break grows by on each repeated trip, that is each
    /// failed half-open test (default [`DEFAULT_BREAK_GROWTH`]; 1 = fixed
    /// break). Closing the breaker starts over.
    pub fn break_growth(mut self, factor: f64) -> Self {
        self.config.break_growth = factor;
        self
    }

    /// The cap on the grown break (default [`DEFAULT_MAX_BREAK_DURATION`]).
    pub fn max_break_duration(mut self, duration: Duration) -> Self {
        self.config.max_break_duration = duration;
        self
    }

    /// The half-open mode (default: [`HalfOpen::quick`], one probe).
    pub fn half_open(mut self, mode: HalfOpen) -> Self {
        self.config.half_open = mode;
        self
    }

    /// Called on every state transition, after the breaker's lock is
    /// released (so it may call back into the breaker). Keep it quick: it
    /// runs on the request path that caused the transition.
    pub fn on_transition(
        mut self,
        f: impl Fn(&TransitionEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.config.on_transition = Some(Arc::new(f));
        self
    }

    /// Checks every option and returns the configuration.
    pub fn build(self) -> Result<BreakerConfig, ConfigError> {
        let mut c = self.config;
        c.window = c.window.validate()?;
        check_rate("failure_rate", c.failure_rate)?;
        if let Some(slow) = c.slow_calls {
            check_rate("slow_calls rate", slow.rate)?;
            if slow.threshold.is_zero() {
                return Err(ConfigError::ZeroDuration {
                    option: "slow_calls threshold",
                });
            }
        }
        if let SlidingWindow::Count { size } = c.window
            && c.minimum_calls > size
        {
            return Err(ConfigError::MinimumCalls {
                minimum_calls: c.minimum_calls,
                window_size: size,
            });
        }
        if c.break_duration.is_zero() {
            return Err(ConfigError::ZeroDuration {
                option: "break_duration",
            });
        }
        if !(c.break_growth.is_finite() && c.break_growth >= 1.0) {
            return Err(ConfigError::Growth(c.break_growth));
        }
        if c.max_break_duration < c.break_duration {
            return Err(ConfigError::MaxBreak {
                base: c.break_duration,
                max: c.max_break_duration,
            });
        }
        c.half_open = c.half_open.validate()?;
        Ok(c)
    }
}

fn check_rate(option: &'static str, value: f64) -> Result<(), ConfigError> {
    if !(value > 0.0 && value <= 1.0) {
        Err(ConfigError::Rate { option, value })
    } else if value < MIN_RATE {
        Err(ConfigError::RateTooSmall { option, value })
    } else {
        Ok(())
    }
}

/// A rate from [`MIN_RATE`] to 1 as parts per million (so at least 1), for
/// integer comparisons on the hot path.
pub(crate) fn ppm(rate: f64) -> u64 {
    (rate * 1_000_000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pinned() {
        assert_eq!(
            format!("{:?}", BreakerConfig::default()),
            "BreakerConfig { name: None, window: Count { size: 100 }, minimum_calls: 20, \
             failure_rate: 0.5, consecutive_failures: Some(10), slow_calls: None, \
             break_duration: 5s, break_growth: 2.0, max_break_duration: 60s, \
             half_open: Quick { probes: 1 }, on_transition: None }"
        );
        // The defaults are a valid configuration.
        let built = BreakerConfig::builder().build().unwrap();
        assert_eq!(
            format!("{built:?}"),
            format!("{:?}", BreakerConfig::default())
        );
        assert_eq!(
            format!("{:?}", HalfOpen::progressive(Duration::from_secs(2))),
            "Progressive { stage_duration: 2s, stages: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5] }"
        );
        assert_eq!(
            SlidingWindow::time(Duration::from_secs(30)),
            SlidingWindow::Time {
                duration: Duration::from_secs(30),
                buckets: 10
            }
        );
    }

    #[test]
    fn break_grows_and_is_capped() {
        let c = BreakerConfig::default();
        let secs: Vec<u64> = (1..=6).map(|t| c.break_after_trips(t).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60]);
        assert_eq!(c.break_after_trips(u32::MAX), Duration::from_secs(60));
        let fixed = BreakerConfig::builder().break_growth(1.0).build().unwrap();
        assert_eq!(fixed.break_after_trips(9), Duration::from_secs(5));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let b = BreakerConfig::builder;
        let cases = [
            (
                b().failure_rate(0.0).build(),
                "failure_rate must be a share in (0, 1]",
            ),
            (
                b().failure_rate(f64::NAN).build(),
                "failure_rate must be a share",
            ),
            (
                b().slow_calls(Duration::from_secs(1), 1.5).build(),
                "slow_calls rate must be a share",
            ),
            (
                b().slow_calls(Duration::ZERO, 0.5).build(),
                "slow_calls threshold must be longer than zero",
            ),
            (
                b().window(SlidingWindow::count(0)).build(),
                "a count window holds 1 to",
            ),
            (
                b().window(SlidingWindow::time_with_buckets(
                    Duration::from_nanos(5),
                    10,
                ))
                .build(),
                "cannot be cut into 10 buckets",
            ),
            (
                b().window(SlidingWindow::count(10)).build(),
                "minimum_calls (20) exceeds the window size (10)",
            ),
            (
                b().break_duration(Duration::ZERO).build(),
                "break_duration must be longer",
            ),
            (
                b().break_growth(0.5).build(),
                "break_growth must be a finite factor",
            ),
            (
                b().max_break_duration(Duration::from_secs(1)).build(),
                "max_break_duration (1s) is shorter",
            ),
            (
                b().half_open(HalfOpen::probes(0)).build(),
                "at least one probe",
            ),
            (
                b().half_open(HalfOpen::progressive_stages(
                    Duration::from_secs(1),
                    &[0.5, 0.1],
                ))
                .build(),
                "rising",
            ),
            (
                b().half_open(HalfOpen::progressive_stages(Duration::from_secs(1), &[]))
                    .build(),
                "at least one stage",
            ),
        ];
        for (result, needle) in cases {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
        // Zero consecutive failures means "off", not an error.
        let off = b().consecutive_failures(0).build().unwrap();
        assert_eq!(off.consecutive_failures(), None);
    }
}
