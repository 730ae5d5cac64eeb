//! Configuration errors, reported once when a builder is built.

use thiserror::Error;

/// A setting was rejected by a builder.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// `max_hosts` was zero.
    #[error(
        "max_hosts must be at least 1: with 0 no host could be tracked (use NoopPoolObserver to track nothing)"
    )]
    ZeroMaxHosts,
    /// The leak threshold was zero.
    #[error(
        "the leak threshold must be greater than zero: every request in flight would be reported as a leak"
    )]
    ZeroThreshold,
    /// The quiescence period was zero.
    #[error(
        "the quiescence period must be greater than zero: any request in flight during a check would be reported as stuck"
    )]
    ZeroQuiescence,
}

/// The leak watchdog could not be started.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WatchdogError {
    /// The scan interval was zero.
    #[error(
        "the watchdog interval must be greater than zero (try a quarter of the leak threshold)"
    )]
    ZeroInterval,
    /// The scan interval was longer than [`MAX_WATCHDOG_INTERVAL`] (its
    /// ticks could not be scheduled on the clock).
    ///
    /// [`MAX_WATCHDOG_INTERVAL`]: crate::MAX_WATCHDOG_INTERVAL
    #[error("the watchdog interval must be at most a year (try a quarter of the leak threshold)")]
    IntervalTooLong,
    /// `spawn_watchdog` was called outside a Tokio runtime.
    #[error(
        "spawn_watchdog must be called from within a Tokio runtime (or call LeakDetector::check from your own task)"
    )]
    NoRuntime,
}
