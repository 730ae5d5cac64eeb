//! Validated settings of the bulkhead, the pacer and the adaptive
//! algorithms, with every default a named constant.
//!
//! Rate quotas live in [`crate::Quota`]; keyed-map settings in
//! [`crate::KeyedRateLimiterBuilder`].

use std::sync::Arc;
use std::time::Duration;

use steadfast_core::signals::MAX_SIGNAL_DELAY;

use crate::names;

/// A setting that cannot work, found when the policy is built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid limiter setting `{field}`: {reason}")]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The setting at fault.
    pub const fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

// ---------------------------------------------------------------- bulkhead

/// Default requests in flight at once: one per connection of the default
/// per-host pool (100), so the bulkhead, not the pool, is where requests wait.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100;
/// Default requests waiting for a slot: as many as may be in flight, so the
/// queue drains within about one response time.
pub const DEFAULT_MAX_QUEUE: usize = 100;
/// Default longest wait for a slot: the connect timeout (5 s). Waiting
/// longer just to start means the service is overloaded; shed the load.
pub const DEFAULT_MAX_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// The most requests in flight a bulkhead accepts (tokio's semaphore limit
/// is far higher; this keeps arithmetic obviously safe).
pub const MAX_IN_FLIGHT_LIMIT: usize = 1 << 24;

/// When a concurrency permit is given back.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReleaseOn {
    /// When the response body has been read to its end, failed, or was
    /// dropped (the default). A streaming download is still "in flight"
    /// for the server, so this is the faithful choice.
    #[default]
    BodyEnd,
    /// As soon as the response head arrives.
    ResponseHead,
}

/// Settings of a concurrency limit (bulkhead).
///
/// | Setting | Default | Meaning |
/// |---|---|---|
/// | `max_in_flight` | [`DEFAULT_MAX_IN_FLIGHT`] (100) | requests running at once |
/// | `max_queue` | [`DEFAULT_MAX_QUEUE`] (100) | requests waiting for a slot; more are rejected at once (`QueueFull`) |
/// | `max_queue_wait` | [`DEFAULT_MAX_QUEUE_WAIT`] (5 s) | longest wait for a slot (`QueueTimeout`); the request's deadline cuts it shorter |
/// | `release_on` | [`ReleaseOn::BodyEnd`] | when a permit is given back |
/// | `name` | `"bulkhead"` | shown in tracing events and errors |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcurrencyConfig {
    pub(crate) max_in_flight: usize,
    pub(crate) max_queue: usize,
    pub(crate) max_queue_wait: Duration,
    pub(crate) release_on: ReleaseOn,
    pub(crate) name: Arc<str>,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_queue: DEFAULT_MAX_QUEUE,
            max_queue_wait: DEFAULT_MAX_QUEUE_WAIT,
            release_on: ReleaseOn::BodyEnd,
            name: Arc::from(names::BULKHEAD),
        }
    }
}

impl ConcurrencyConfig {
    /// Starts from the defaults.
    pub fn builder() -> ConcurrencyConfigBuilder {
        ConcurrencyConfigBuilder(Self::default())
    }

    /// Requests running at once.
    pub const fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Requests waiting for a slot.
    pub const fn max_queue(&self) -> usize {
        self.max_queue
    }

    /// Longest wait for a slot.
    pub const fn max_queue_wait(&self) -> Duration {
        self.max_queue_wait
    }

    /// When permits are given back.
    pub const fn release_on(&self) -> ReleaseOn {
        self.release_on
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds a [`ConcurrencyConfig`]; [`ConcurrencyConfigBuilder::build`] validates.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConcurrencyConfigBuilder(ConcurrencyConfig);

impl ConcurrencyConfigBuilder {
    /// Requests running at once (1 ..= [`MAX_IN_FLIGHT_LIMIT`]).
    pub const fn max_in_flight(mut self, n: usize) -> Self {
        self.0.max_in_flight = n;
        self
    }

    /// Requests waiting for a slot; `0` rejects at once when all slots are taken.
    pub const fn max_queue(mut self, n: usize) -> Self {
        self.0.max_queue = n;
        self
    }

    /// Longest wait for a slot.
    pub const fn max_queue_wait(mut self, wait: Duration) -> Self {
        self.0.max_queue_wait = wait;
        self
    }

    /// When permits are given back.
    pub const fn release_on(mut self, release_on: ReleaseOn) -> Self {
        self.0.release_on = release_on;
        self
    }

    /// Names the bulkhead in tracing events and errors.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.0.name = name.into();
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<ConcurrencyConfig, ConfigError> {
        let c = self.0;
        if c.max_in_flight == 0 || c.max_in_flight > MAX_IN_FLIGHT_LIMIT {
            return Err(ConfigError::new(
                "max_in_flight",
                "must be between 1 and 16777216",
            ));
        }
        if c.max_queue > MAX_IN_FLIGHT_LIMIT {
            return Err(ConfigError::new("max_queue", "must be at most 16777216"));
        }
        Ok(c)
    }
}

// ---------------------------------------------------------------- pacing

/// Default bound on hosts (keys) the pacer remembers.
pub const DEFAULT_PACING_MAX_KEYS: usize = 10_000;
/// Default pause after a `429` that carries no `Retry-After` and no
/// exhausted rate limit: one second, the smallest delay servers express.
pub const DEFAULT_BARE_429_PAUSE: Duration = Duration::from_secs(1);
/// Default longest pause the pacer accepts from a server: the clamp of the
/// signal parser, one day. Requests still fail at once when a pause outlasts
/// their deadline.
pub const DEFAULT_MAX_PAUSE: Duration = MAX_SIGNAL_DELAY;
/// Default longest wait for the answer to the probe sent when a pause ends
/// with no pace known: one second, about a slow API response. Past it, the
/// requests held behind the probe go.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of server-driven pacing.
///
/// | Setting | Default | Meaning |
/// |---|---|---|
/// | `max_keys` | [`DEFAULT_PACING_MAX_KEYS`] (10 000) | hosts remembered at once |
/// | `bare_429_pause` | [`DEFAULT_BARE_429_PAUSE`] (1 s) | pause after a 429 with no hint; zero for none |
/// | `max_pause` | [`DEFAULT_MAX_PAUSE`] (1 day) | clamp on server-given pauses |
/// | `probe_timeout` | [`DEFAULT_PROBE_TIMEOUT`] (1 s) | after a pause with no pace known, how long the others wait for the first request's answer; zero: no probe, all go when the pause ends |
/// | `name` | `"pacing"` | shown in tracing events and errors |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacingConfig {
    pub(crate) max_keys: usize,
    pub(crate) bare_429_pause: Duration,
    pub(crate) max_pause: Duration,
    pub(crate) probe_timeout: Duration,
    pub(crate) name: Arc<str>,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            max_keys: DEFAULT_PACING_MAX_KEYS,
            bare_429_pause: DEFAULT_BARE_429_PAUSE,
            max_pause: DEFAULT_MAX_PAUSE,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            name: Arc::from(names::PACING),
        }
    }
}

impl PacingConfig {
    /// Starts from the defaults.
    pub fn builder() -> PacingConfigBuilder {
        PacingConfigBuilder(Self::default())
    }

    /// Hosts remembered at once.
    pub const fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The pause after a 429 with no hint.
    pub const fn bare_429_pause(&self) -> Duration {
        self.bare_429_pause
    }

    /// The clamp on server-given pauses.
    pub const fn max_pause(&self) -> Duration {
        self.max_pause
    }

    /// The longest wait for a probe's answer after a pause (see
    /// [`crate::pacing`]).
    pub const fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds a [`PacingConfig`]; [`PacingConfigBuilder::build`] validates.
#[derive(Clone, Debug)]
#[must_use]
pub struct PacingConfigBuilder(PacingConfig);

impl PacingConfigBuilder {
    /// Hosts remembered at once (at least 1).
    pub const fn max_keys(mut self, n: usize) -> Self {
        self.0.max_keys = n;
        self
    }

    /// Pause after a 429 with no `Retry-After` and no exhausted quota.
    pub const fn bare_429_pause(mut self, pause: Duration) -> Self {
        self.0.bare_429_pause = pause;
        self
    }

    /// Clamp on server-given pauses (at most one day).
    pub const fn max_pause(mut self, max: Duration) -> Self {
        self.0.max_pause = max;
        self
    }

    /// After a pause with no pace known, one request goes first and the
    /// others wait for its answer, this long at most (at most one day).
    /// Zero sends them all when the pause ends.
    pub const fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.0.probe_timeout = timeout;
        self
    }

    /// Names the pacer in tracing events and errors.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.0.name = name.into();
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<PacingConfig, ConfigError> {
        let c = self.0;
        if c.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        if c.probe_timeout > MAX_SIGNAL_DELAY {
            return Err(ConfigError::new(
                "probe_timeout",
                "must be at most one day (steadfast_core::signals::MAX_SIGNAL_DELAY)",
            ));
        }
        if c.max_pause > MAX_SIGNAL_DELAY || c.bare_429_pause > MAX_SIGNAL_DELAY {
            return Err(ConfigError::new(
                "max_pause",
                "pauses must be at most one day (steadfast_core::signals::MAX_SIGNAL_DELAY)",
            ));
        }
        Ok(c)
    }
}

// ---------------------------------------------------------------- adaptive

/// Default starting limit of the adaptive algorithms (as Netflix's
/// concurrency-limits).
pub const DEFAULT_ADAPTIVE_INITIAL: usize = 20;
/// Default floor of the adaptive limit.
pub const DEFAULT_ADAPTIVE_MIN: usize = 1;
/// Default ceiling of the adaptive limit.
pub const DEFAULT_ADAPTIVE_MAX: usize = 200;
/// Default AIMD additive increase, per window of `limit` successes.
pub const DEFAULT_AIMD_INCREASE: f64 = 1.0;
/// Default AIMD multiplicative decrease on overload (as Netflix's AIMDLimit).
pub const DEFAULT_AIMD_BACKOFF: f64 = 0.9;
/// Default gradient smoothing: weight of a new estimate (as Gradient2).
pub const DEFAULT_GRADIENT_SMOOTHING: f64 = 0.2;
/// Default gradient RTT tolerance: latency may grow by this factor over the
/// unloaded latency before the limit shrinks (as Gradient2).
pub const DEFAULT_GRADIENT_TOLERANCE: f64 = 1.5;
/// Default window of the gradient's minimum RTT: the minimum is that of the
/// last one to two windows of this many samples (600, the long window of
/// Gradient2).
pub const DEFAULT_GRADIENT_MIN_RTT_WINDOW: u32 = 600;
/// Default headroom added to the gradient's estimate (as Gradient2's queue size).
pub const DEFAULT_GRADIENT_QUEUE: f64 = 4.0;

fn check_bounds(initial: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if min == 0 || max > MAX_IN_FLIGHT_LIMIT {
        return Err(ConfigError::new(
            "min/max",
            "the limit must stay between 1 and 16777216",
        ));
    }
    if !(min <= initial && initial <= max) {
        return Err(ConfigError::new(
            "initial",
            "must satisfy min <= initial <= max",
        ));
    }
    Ok(())
}

fn check_backoff(backoff: f64) -> Result<(), ConfigError> {
    if !(backoff > 0.0 && backoff < 1.0) {
        return Err(ConfigError::new(
            "backoff",
            "must be between 0 and 1, exclusive",
        ));
    }
    Ok(())
}

/// Settings of [`crate::Aimd`].
///
/// | Setting | Default |
/// |---|---|
/// | `initial` | [`DEFAULT_ADAPTIVE_INITIAL`] (20) |
/// | `min` | [`DEFAULT_ADAPTIVE_MIN`] (1) |
/// | `max` | [`DEFAULT_ADAPTIVE_MAX`] (200) |
/// | `increase` | [`DEFAULT_AIMD_INCREASE`] (+1 per window of `limit` successes) |
/// | `backoff` | [`DEFAULT_AIMD_BACKOFF`] (× 0.9 on overload) |
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AimdConfig {
    pub(crate) initial: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) increase: f64,
    pub(crate) backoff: f64,
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self {
            initial: DEFAULT_ADAPTIVE_INITIAL,
            min: DEFAULT_ADAPTIVE_MIN,
            max: DEFAULT_ADAPTIVE_MAX,
            increase: DEFAULT_AIMD_INCREASE,
            backoff: DEFAULT_AIMD_BACKOFF,
        }
    }
}

impl AimdConfig {
    /// Sets the starting limit, its floor and its ceiling.
    #[must_use]
    pub const fn limits(mut self, initial: usize, min: usize, max: usize) -> Self {
        self.initial = initial;
        self.min = min;
        self.max = max;
        self
    }

    /// Sets the additive increase (per window of `limit` successes, > 0).
    #[must_use]
    pub const fn increase(mut self, increase: f64) -> Self {
        self.increase = increase;
        self
    }

    /// Sets the multiplicative decrease on overload (in `0.0 < b < 1.0`).
    #[must_use]
    pub const fn backoff(mut self, backoff: f64) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks the settings.
    pub fn validate(self) -> Result<Self, ConfigError> {
        check_bounds(self.initial, self.min, self.max)?;
        if !(self.increase.is_finite() && self.increase > 0.0) {
            return Err(ConfigError::new(
                "increase",
                "must be a finite number above 0",
            ));
        }
        check_backoff(self.backoff)?;
        Ok(self)
    }
}

/// Settings of [`crate::Gradient`].
///
/// | Setting | Default |
/// |---|---|
/// | `initial` / `min` / `max` | 20 / 1 / 200 |
/// | `smoothing` | [`DEFAULT_GRADIENT_SMOOTHING`] (0.2) |
/// | `tolerance` | [`DEFAULT_GRADIENT_TOLERANCE`] (1.5) |
/// | `min_rtt_window` | [`DEFAULT_GRADIENT_MIN_RTT_WINDOW`] (600 samples) |
/// | `queue` | [`DEFAULT_GRADIENT_QUEUE`] (4) |
/// | `backoff` | [`DEFAULT_AIMD_BACKOFF`] (× 0.9 on overload) |
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradientConfig {
    pub(crate) initial: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) smoothing: f64,
    pub(crate) tolerance: f64,
    pub(crate) min_rtt_window: u32,
    pub(crate) queue: f64,
    pub(crate) backoff: f64,
}

impl Default for GradientConfig {
    fn default() -> Self {
        Self {
            initial: DEFAULT_ADAPTIVE_INITIAL,
            min: DEFAULT_ADAPTIVE_MIN,
            max: DEFAULT_ADAPTIVE_MAX,
            smoothing: DEFAULT_GRADIENT_SMOOTHING,
            tolerance: DEFAULT_GRADIENT_TOLERANCE,
            min_rtt_window: DEFAULT_GRADIENT_MIN_RTT_WINDOW,
            queue: DEFAULT_GRADIENT_QUEUE,
            backoff: DEFAULT_AIMD_BACKOFF,
        }
    }
}

impl GradientConfig {
    /// Sets the starting limit, its floor and its ceiling.
    #[must_use]
    pub const fn limits(mut self, initial: usize, min: usize, max: usize) -> Self {
        self.initial = initial;
        self.min = min;
        self.max = max;
        self
    }

    /// Sets the weight of each new estimate (in `0.0 < s <= 1.0`).
    #[must_use]
    pub const fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// Sets how much latency may grow over the unloaded latency before the
    /// limit shrinks (at least 1.0).
    #[must_use]
    pub const fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Sets the window of the minimum RTT in samples (at least 1): the
    /// minimum is that of the last one to two windows, so shorter forgets an
    /// old minimum faster.
    #[must_use]
    pub const fn min_rtt_window(mut self, samples: u32) -> Self {
        self.min_rtt_window = samples;
        self
    }

    /// Sets the headroom added to each estimate (0 or more).
    #[must_use]
    pub const fn queue(mut self, queue: f64) -> Self {
        self.queue = queue;
        self
    }

    /// Sets the multiplicative decrease on overload (in `0.0 < b < 1.0`).
    #[must_use]
    pub const fn backoff(mut self, backoff: f64) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks the settings.
    pub fn validate(self) -> Result<Self, ConfigError> {
        check_bounds(self.initial, self.min, self.max)?;
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError::new("smoothing", "must be in (0, 1]"));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 1.0) {
            return Err(ConfigError::new(
                "tolerance",
                "must be a finite number of at least 1",
            ));
        }
        if self.min_rtt_window == 0 {
            return Err(ConfigError::new(
                "min_rtt_window",
                "must be at least 1 sample",
            ));
        }
        if !(self.queue.is_finite() && self.queue >= 0.0) {
            return Err(ConfigError::new(
                "queue",
                "must be a finite number of at least 0",
            ));
        }
        check_backoff(self.backoff)?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pinned() {
        assert_eq!(
            format!("{:?}", ConcurrencyConfig::default()),
            "ConcurrencyConfig { max_in_flight: 100, max_queue: 100, max_queue_wait: 5s, \
             release_on: BodyEnd, name: \"bulkhead\" }"
        );
        assert_eq!(
            format!("{:?}", PacingConfig::default()),
            "PacingConfig { max_keys: 10000, bare_429_pause: 1s, max_pause: 86400s, probe_timeout: 1s, name: \"pacing\" }"
        );
        assert_eq!(
            format!("{:?}", AimdConfig::default()),
            "AimdConfig { initial: 20, min: 1, max: 200, increase: 1.0, backoff: 0.9 }"
        );
        assert_eq!(
            format!("{:?}", GradientConfig::default()),
            "GradientConfig { initial: 20, min: 1, max: 200, smoothing: 0.2, tolerance: 1.5, \
             min_rtt_window: 600, queue: 4.0, backoff: 0.9 }"
        );
        assert_eq!(
            ConcurrencyConfig::builder().build(),
            Ok(ConcurrencyConfig::default())
        );
        assert_eq!(PacingConfig::builder().build(), Ok(PacingConfig::default()));
        assert!(AimdConfig::default().validate().is_ok());
        assert!(GradientConfig::default().validate().is_ok());
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let e = ConcurrencyConfig::builder()
            .max_in_flight(0)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "max_in_flight");
        assert_eq!(
            e.to_string(),
            "invalid limiter setting `max_in_flight`: must be between 1 and 16777216"
        );
        assert!(
            ConcurrencyConfig::builder()
                .max_queue(usize::MAX)
                .build()
                .is_err()
        );
        assert!(PacingConfig::builder().max_keys(0).build().is_err());
        let e = PacingConfig::builder()
            .probe_timeout(Duration::from_secs(86_401))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "probe_timeout");
        assert!(
            PacingConfig::builder()
                .max_pause(Duration::MAX)
                .build()
                .is_err()
        );
        assert!(AimdConfig::default().limits(0, 0, 10).validate().is_err());
        assert!(AimdConfig::default().limits(50, 1, 10).validate().is_err());
        assert!(AimdConfig::default().backoff(1.0).validate().is_err());
        assert!(AimdConfig::default().backoff(f64::NAN).validate().is_err());
        assert!(
            AimdConfig::default()
                .increase(f64::INFINITY)
                .validate()
                .is_err()
        );
        assert!(GradientConfig::default().smoothing(0.0).validate().is_err());
        assert!(GradientConfig::default().tolerance(0.5).validate().is_err());
        assert!(
            GradientConfig::default()
                .min_rtt_window(0)
                .validate()
                .is_err()
        );
        assert!(GradientConfig::default().queue(-1.0).validate().is_err());
    }
}
