//! Builders, validated configs and their defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::leak::LeakDetector;
use crate::stats::PoolStats;

/// Default cap on distinct pool keys tracked one by one; events for further
/// keys are pooled under [`OVERFLOW_HOST`], which bounds both memory and
/// metric cardinality when a client talks to unbounded sets of hosts.
pub const DEFAULT_MAX_HOSTS: usize = 1024;

/// Per-connection tracking is on by default: it is what gives leak ages and
/// the requests-per-connection histogram, and it costs tens of nanoseconds
/// per request (see the crate's Benchmarks section).
pub const DEFAULT_TRACK_CONNECTIONS: bool = true;

/// The key under which hosts beyond `max_hosts` are counted together.
pub const OVERFLOW_HOST: &str = "(other)";

/// Default age past which a connection still in use is reported as leaked.
/// Long enough for slow APIs and modest downloads; lower it for APIs whose
/// responses are small, raise it when you stream large bodies.
pub const DEFAULT_LEAK_THRESHOLD: Duration = Duration::from_secs(60);

/// Default quiet period after which a host whose requests in flight stayed
/// above zero with no new request is reported as stuck. Equal to
/// [`DEFAULT_LEAK_THRESHOLD`]: every request of a stuck host started before
/// the quiet period, so a shorter period would report a lone slow download
/// as stuck before the held-too-long check finds its age suspicious.
pub const DEFAULT_QUIESCENCE: Duration = DEFAULT_LEAK_THRESHOLD;

/// The validated settings of a [`PoolStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatsConfig {
    /// Shown in tracing events and as the `pool.name` metric label.
    pub name: Option<Arc<str>>,
    /// Track each connection (in-use-since, requests served).
    pub track_connections: bool,
    /// Distinct pool keys tracked one by one.
    pub max_hosts: usize,
}

impl Default for PoolStatsConfig {
    fn default() -> Self {
        Self {
            name: None,
            track_connections: DEFAULT_TRACK_CONNECTIONS,
            max_hosts: DEFAULT_MAX_HOSTS,
        }
    }
}

/// Builds a [`PoolStats`]; see [`PoolStats::builder`].
#[derive(Debug, Clone, Default)]
pub struct PoolStatsBuilder {
    config: PoolStatsConfig,
}

impl PoolStatsBuilder {
    /// Names the pool in tracing events and metric labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Whether to track each connection (default
    /// [`DEFAULT_TRACK_CONNECTIONS`]). Without it the counters, gauges and
    /// histograms still work, the leak detector only finds stuck hosts (not
    /// which connection, nor its age), and the requests-per-connection
    /// histogram stays empty.
    pub fn track_connections(mut self, on: bool) -> Self {
        self.config.track_connections = on;
        self
    }

    /// How many distinct pool keys to track one by one (default
    /// [`DEFAULT_MAX_HOSTS`]); the rest are counted under [`OVERFLOW_HOST`].
    pub fn max_hosts(mut self, max: usize) -> Self {
        self.config.max_hosts = max;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<Arc<PoolStats>, ConfigError> {
        if self.config.max_hosts == 0 {
            return Err(ConfigError::ZeroMaxHosts);
        }
        Ok(Arc::new(PoolStats::from_config(self.config)))
    }
}

/// The validated settings of a [`LeakDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakConfig {
    /// A connection in use for at least this long is reported.
    pub threshold: Duration,
    /// A host whose in-use count stays above zero for this long with no new
    /// request is reported as stuck.
    pub quiescence: Duration,
}

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_LEAK_THRESHOLD,
            quiescence: DEFAULT_QUIESCENCE,
        }
    }
}

/// Builds a [`LeakDetector`]; see [`LeakDetector::builder`].
#[derive(Debug, Clone)]
pub struct LeakDetectorBuilder {
    stats: Arc<PoolStats>,
    config: LeakConfig,
}

impl LeakDetectorBuilder {
    pub(crate) fn new(stats: Arc<PoolStats>) -> Self {
        Self {
            stats,
            config: LeakConfig::default(),
        }
    }

    /// Age past which a connection in use is reported (default
    /// [`DEFAULT_LEAK_THRESHOLD`]).
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.config.threshold = threshold;
        self
    }

    /// Quiet period for the stuck-host check (default [`DEFAULT_QUIESCENCE`]).
    pub fn quiescence(mut self, quiescence: Duration) -> Self {
        self.config.quiescence = quiescence;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<LeakDetector, ConfigError> {
        if self.config.threshold.is_zero() {
            return Err(ConfigError::ZeroThreshold);
        }
        if self.config.quiescence.is_zero() {
            return Err(ConfigError::ZeroQuiescence);
        }
        Ok(LeakDetector::from_config(self.stats, self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pinned() {
        assert_eq!(
            format!("{:?}", PoolStatsConfig::default()),
            "PoolStatsConfig { name: None, track_connections: true, max_hosts: 1024 }"
        );
        assert_eq!(
            format!("{:?}", LeakConfig::default()),
            "LeakConfig { threshold: 60s, quiescence: 60s }"
        );
        assert_eq!(OVERFLOW_HOST, "(other)");
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        assert_eq!(
            PoolStats::builder().max_hosts(0).build().unwrap_err(),
            ConfigError::ZeroMaxHosts
        );
        let stats = PoolStats::new();
        let err = LeakDetector::builder(stats.clone())
            .threshold(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::ZeroThreshold);
        assert!(err.to_string().contains("greater than zero"));
        let err = LeakDetector::builder(stats)
            .quiescence(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::ZeroQuiescence);
    }
}
