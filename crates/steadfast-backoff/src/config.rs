//! [`RetryConfig`]: every option of the retry layer, its defaults as named
//! constants, and validation at build time.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;

use crate::backoff::{Backoff, Jitter};
use crate::budget::{BudgetConfig, RetryBudget};
use crate::error::RetryCause;

/// Name shown in tracing events when none is set.
pub const DEFAULT_NAME: &str = "retry";
/// Retries after the first attempt: 3 (so 4 attempts).
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// First backoff delay: 100 ms.
pub const DEFAULT_BASE: Duration = Duration::from_millis(100);
/// Growth factor of the exponential backoff: 2.
pub const DEFAULT_FACTOR: f64 = 2.0;
/// Cap on each backoff delay (before jitter): 10 s.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
/// Jitter: full (uniform in `[0, delay]`).
pub const DEFAULT_JITTER: Jitter = Jitter::Full;
/// Longest server-requested wait (Retry-After, rate-limit reset) that is
/// honoured: 60 s. Longer requests fail at once with
/// [`crate::RetryError::RetryAfterTooLong`].
pub const DEFAULT_MAX_SERVER_DELAY: Duration = Duration::from_secs(60);
/// Header that makes a non-idempotent request safe to retry: `idempotency-key`
/// (draft-ietf-httpapi-idempotency-key-header).
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Latency percentile after which a hedge is sent, in percentile mode: p95
/// ("The Tail at Scale", Dean and Barroso, 2013).
pub const DEFAULT_HEDGE_PERCENTILE: f64 = 0.95;
/// Latency samples needed before the percentile is trusted: 50.
pub const DEFAULT_HEDGE_MIN_SAMPLES: u32 = 50;

/// The hook called before each retry: `(attempt that failed, delay, cause)`.
pub(crate) type OnRetry = Arc<dyn Fn(u32, Duration, RetryCause<'_>) + Send + Sync>;

/// A configuration that could not be built; the message says which option
/// and what would be valid.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The exponential factor is below 1, infinite or NaN.
    #[error(
        "backoff factor {0} is invalid: use a finite number of at least 1 (2 doubles each delay)"
    )]
    Factor(f64),
    /// The backoff base is above its cap.
    #[error(
        "backoff base {base:?} is above max_delay {max_delay:?}: lower the base or raise max_delay"
    )]
    BaseAboveMaxDelay {
        /// The base.
        base: Duration,
        /// The cap.
        max_delay: Duration,
    },
    /// The backoff base is zero on a curve that grows from it (exponential,
    /// Fibonacci, linear without a step) or with decorrelated jitter: every
    /// delay would be zero.
    #[error(
        "backoff base is zero: an exponential, Fibonacci or stepless linear curve (or decorrelated jitter) from zero stays at zero, so every retry would be sent at once; use a base above zero, or Backoff::constant(Duration::ZERO) to retry at once on purpose"
    )]
    ZeroBase,
    /// The budget ratio is negative, infinite or NaN.
    #[error(
        "retry budget ratio {0} is invalid: use a finite number of at least 0 (0.2 lets retries add 20 % load)"
    )]
    BudgetRatio(f64),
    /// The budget floor is above a billion retries a second: the floor is
    /// kept as nanoseconds between retries, and past that it would refuse
    /// nothing at all.
    #[error(
        "retry budget floor {0} is too high: use at most 1,000,000,000 retries per second (or no budget at all)"
    )]
    BudgetFloor(u32),
    /// The hedge percentile is outside `(0, 1]`.
    #[error("hedge percentile {0} is invalid: use a number in (0, 1], such as 0.95")]
    Percentile(f64),
    /// A duration that must be positive is zero.
    #[error("{0} must be longer than zero")]
    Zero(&'static str),
    /// The idempotency header name is not a valid header name.
    #[error("`{0}` is not a valid HTTP header name (idempotency_header)")]
    HeaderName(String),
}

/// When to send a hedge: a second copy of an idempotent request, sent when
/// the first is slow; the first success wins and the other is cancelled.
/// A delay too large to add to the clock (`Duration::MAX`) means no hedge.
///
/// ```
/// use std::time::Duration;
/// use steadfast_backoff::Hedging;
///
/// let fixed = Hedging::after(Duration::from_millis(50));
/// let adaptive = Hedging::at_percentile(0.95).fallback(Duration::from_millis(200));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hedging {
    pub(crate) delay: HedgeDelay,
}

/// How long to wait before hedging.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HedgeDelay {
    /// A fixed delay.
    Fixed(Duration),
    /// The given latency percentile of past attempts, from a small
    /// histogram kept by the layer.
    Percentile {
        /// In `(0, 1]`; 0.95 hedges the slowest 5 %.
        percentile: f64,
        /// Samples needed before the percentile is used.
        min_samples: u32,
        /// The delay until then; `None` sends no hedge until then.
        fallback: Option<Duration>,
    },
}

impl Hedging {
    /// Hedge after a fixed `delay`.
    pub const fn after(delay: Duration) -> Self {
        Self {
            delay: HedgeDelay::Fixed(delay),
        }
    }

    /// Hedge once an attempt is slower than `percentile` of recent ones
    /// (after [`DEFAULT_HEDGE_MIN_SAMPLES`] samples; no hedging before).
    pub const fn at_percentile(percentile: f64) -> Self {
        Self {
            delay: HedgeDelay::Percentile {
                percentile,
                min_samples: DEFAULT_HEDGE_MIN_SAMPLES,
                fallback: None,
            },
        }
    }

    /// Samples needed before the percentile is used (percentile mode).
    pub const fn min_samples(mut self, n: u32) -> Self {
        if let HedgeDelay::Percentile {
            percentile,
            fallback,
            ..
        } = self.delay
        {
            self.delay = HedgeDelay::Percentile {
                percentile,
                min_samples: n,
                fallback,
            };
        }
        self
    }

    /// The delay used until enough samples are in (percentile mode).
    pub const fn fallback(mut self, delay: Duration) -> Self {
        if let HedgeDelay::Percentile {
            percentile,
            min_samples,
            ..
        } = self.delay
        {
            self.delay = HedgeDelay::Percentile {
                percentile,
                min_samples,
                fallback: Some(delay),
            };
        }
        self
    }

    /// How long to wait before hedging.
    pub const fn delay(&self) -> HedgeDelay {
        self.delay
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self.delay {
            HedgeDelay::Percentile { percentile, .. }
                if !(percentile > 0.0 && percentile <= 1.0) =>
            {
                Err(ConfigError::Percentile(percentile))
            }
            _ => Ok(()),
        }
    }
}

/// Which retry budget a layer uses.
#[derive(Clone, Debug)]
pub(crate) enum BudgetChoice {
    Disabled,
    New(BudgetConfig),
    Shared(RetryBudget),
}

/// The configuration of a [`crate::Retry`] layer. Build it with
/// [`RetryConfig::builder`]; [`RetryConfig::default`] is the steadfast
/// default pipeline's.
///
/// | Option | Default | Meaning |
/// |---|---|---|
/// | `name` | [`DEFAULT_NAME`] | shown in tracing events as `retry.name` |
/// | `backoff` | [`Backoff::default`]: exponential from [`DEFAULT_BASE`] ×[`DEFAULT_FACTOR`], [`DEFAULT_JITTER`], capped at [`DEFAULT_MAX_DELAY`], [`DEFAULT_MAX_RETRIES`] retries | delays between attempts |
/// | `max_server_delay` | [`DEFAULT_MAX_SERVER_DELAY`] | longest Retry-After honoured |
/// | `attempt_timeout` | none | limit on each attempt |
/// | `timeout` | none | total deadline, attempts and waits included |
/// | `budget` | [`BudgetConfig::default`]: 20 % + 10/s | retry budget |
/// | `idempotency_header` | [`DEFAULT_IDEMPOTENCY_HEADER`] | makes POST/PATCH retryable |
/// | `retry_non_idempotent` | `false` | retry every method |
/// | `hedging` | none | send a second copy of slow requests whose method is idempotent |
/// | `on_retry` | none | hook called before each retry |
#[derive(Clone)]
pub struct RetryConfig {
    pub(crate) name: Cow<'static, str>,
    pub(crate) backoff: Backoff,
    pub(crate) max_server_delay: Duration,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) budget: BudgetChoice,
    pub(crate) idempotency_header: HeaderName,
    pub(crate) retry_non_idempotent: bool,
    pub(crate) hedging: Option<Hedging>,
    pub(crate) on_retry: Option<OnRetry>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            name: Cow::Borrowed(DEFAULT_NAME),
            backoff: Backoff::default(),
            max_server_delay: DEFAULT_MAX_SERVER_DELAY,
            attempt_timeout: None,
            timeout: None,
            budget: BudgetChoice::New(BudgetConfig::default()),
            idempotency_header: HeaderName::from_static(DEFAULT_IDEMPOTENCY_HEADER),
            retry_non_idempotent: false,
            hedging: None,
            on_retry: None,
        }
    }
}

impl fmt::Debug for RetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConfig")
            .field("name", &self.name)
            .field("backoff", &self.backoff)
            .field("max_server_delay", &self.max_server_delay)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("timeout", &self.timeout)
            .field("budget", &self.budget)
            .field("idempotency_header", &self.idempotency_header)
            .field("retry_non_idempotent", &self.retry_non_idempotent)
            .field("hedging", &self.hedging)
            .field("on_retry", &self.on_retry.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl RetryConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> RetryConfigBuilder {
        RetryConfigBuilder {
            config: Self::default(),
            error: None,
        }
    }

    /// The name shown in tracing events.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backoff.
    pub const fn backoff(&self) -> Backoff {
        self.backoff
    }
}

/// Builds a [`RetryConfig`]; [`RetryConfigBuilder::build`] validates it.
///
/// ```
/// use std::time::Duration;
/// use steadfast_backoff::{Backoff, Jitter, RetryConfig};
///
/// let config = RetryConfig::builder()
///     .name("payments")
///     .backoff(Backoff::exponential(Duration::from_millis(200)).jitter(Jitter::Equal))
///     .max_retries(5)
///     .attempt_timeout(Duration::from_secs(2))
///     .timeout(Duration::from_secs(20))
///     .build()?;
/// # Ok::<(), steadfast_backoff::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct RetryConfigBuilder {
    config: RetryConfig,
    error: Option<ConfigError>,
}

impl RetryConfigBuilder {
    /// Names the layer in tracing events (`retry.name`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Sets the backoff (curve, jitter, cap and retry limit).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// At most `n` retries (`n + 1` attempts); `0` disables retries (but
    /// not hedging).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.config.backoff = self.config.backoff.max_retries(n);
        self
    }

    /// The longest server-requested wait (Retry-After, rate-limit reset)
    /// the layer honours; a longer one fails at once.
    pub fn max_server_delay(mut self, limit: Duration) -> Self {
        self.config.max_server_delay = limit;
        self
    }

    /// Limits each attempt; a timed-out attempt is retried like a transient
    /// error (for requests that are safe to re-send).
    pub fn attempt_timeout(mut self, limit: Duration) -> Self {
        self.config.attempt_timeout = Some(limit);
        self
    }

    /// A total deadline for the request, attempts and waits included. It is
    /// stored in the request as a [`steadfast_core::Deadline`], so an
    /// earlier deadline set by an outer layer still wins.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.config.timeout = Some(limit);
        self
    }

    /// A retry budget of its own for this layer, with these parameters.
    pub fn budget(mut self, config: BudgetConfig) -> Self {
        self.config.budget = BudgetChoice::New(config);
        self
    }

    /// Spends this budget, shared with other layers or clients.
    pub fn shared_budget(mut self, budget: RetryBudget) -> Self {
        self.config.budget = BudgetChoice::Shared(budget);
        self
    }

    /// No retry budget: retries are limited only by `max_retries` and the
    /// deadline. Not recommended for clients of shared services.
    pub fn no_budget(mut self) -> Self {
        self.config.budget = BudgetChoice::Disabled;
        self
    }

    /// The header whose presence makes a non-idempotent request (POST,
    /// PATCH) safe to retry; the same value is sent on every attempt.
    pub fn idempotency_header(mut self, name: &str) -> Self {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => self.config.idempotency_header = h,
            Err(_) => {
                self.error
                    .get_or_insert(ConfigError::HeaderName(name.to_owned()));
            }
        }
        self
    }

    /// Retries every method, as if all were idempotent. Only for APIs whose
    /// non-idempotent endpoints deduplicate by themselves. It does not make
    /// them hedged: hedging sends two copies at once, and needs a method
    /// idempotent by itself (RFC 9110).
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.config.retry_non_idempotent = yes;
        self
    }

    /// Sends hedges for requests whose method is idempotent (RFC 9110: GET,
    /// HEAD, OPTIONS, TRACE, PUT, DELETE). A success ends the race; a
    /// failed copy waits for the other (see the crate docs, Hedging).
    pub fn hedging(mut self, hedging: Hedging) -> Self {
        self.config.hedging = Some(hedging);
        self
    }

    /// Calls `hook(attempt, delay, cause)` before each retry: `attempt` is
    /// the number of the attempt that failed (1 for the first), `delay` the
    /// wait before the next. Keep it cheap; it runs on the request's task.
    pub fn on_retry<F>(mut self, hook: F) -> Self
    where
        F: Fn(u32, Duration, RetryCause<'_>) + Send + Sync + 'static,
    {
        self.config.on_retry = Some(Arc::new(hook));
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<RetryConfig, ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let c = self.config;
        c.backoff.validate()?;
        if let BudgetChoice::New(b) = &c.budget {
            b.validate()?;
        }
        if let Some(h) = &c.hedging {
            h.validate()?;
        }
        if c.attempt_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::Zero("attempt_timeout"));
        }
        if c.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::Zero("timeout"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pinned() {
        assert_eq!(
            format!("{:?}", RetryConfig::default()),
            "RetryConfig { name: \"retry\", \
             backoff: Backoff { curve: Exponential { factor: 2.0 }, base: 100ms, max_delay: 10s, \
             jitter: Full, max_retries: 3, max_elapsed: None, seed: None }, \
             max_server_delay: 60s, attempt_timeout: None, timeout: None, \
             budget: New(BudgetConfig { ratio: 0.2, floor: 10, window: 10s }), \
             idempotency_header: \"idempotency-key\", retry_non_idempotent: false, \
             hedging: None, on_retry: None }"
        );
        assert_eq!(
            Hedging::at_percentile(DEFAULT_HEDGE_PERCENTILE).delay(),
            HedgeDelay::Percentile {
                percentile: 0.95,
                min_samples: 50,
                fallback: None,
            }
        );
        assert_eq!(DEFAULT_JITTER, Jitter::default());
    }

    #[test]
    fn builder_validates_once_with_clear_errors() {
        let cases: [(RetryConfigBuilder, &str); 7] = [
            (
                RetryConfig::builder().backoff(Backoff::default().factor(0.0)),
                "factor",
            ),
            (
                RetryConfig::builder().backoff(Backoff::exponential(Duration::ZERO)),
                "base is zero",
            ),
            (
                RetryConfig::builder().budget(BudgetConfig::new().ratio(-1.0)),
                "ratio",
            ),
            (
                RetryConfig::builder().hedging(Hedging::at_percentile(1.5)),
                "percentile",
            ),
            (RetryConfig::builder().timeout(Duration::ZERO), "timeout"),
            (
                RetryConfig::builder().attempt_timeout(Duration::ZERO),
                "attempt_timeout",
            ),
            (
                RetryConfig::builder().idempotency_header("bad header"),
                "bad header",
            ),
        ];
        for (builder, needle) in cases {
            let err = builder.build().unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
        let ok = RetryConfig::builder()
            .name("api")
            .idempotency_header("X-Request-Id")
            .max_retries(0)
            .build()
            .unwrap();
        assert_eq!(ok.name(), "api");
        assert_eq!(ok.idempotency_header, "x-request-id");
        assert_eq!(ok.backoff().max_retries, 0);
    }
}
