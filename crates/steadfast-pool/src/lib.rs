#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod config;
mod connections;
mod error;
#[cfg(feature = "metrics")]
pub mod export;
mod histogram;
mod key;
mod leak;
mod snapshot;
mod stats;

pub use config::{
    DEFAULT_LEAK_THRESHOLD, DEFAULT_MAX_HOSTS, DEFAULT_QUIESCENCE, DEFAULT_TRACK_CONNECTIONS,
    LeakConfig, LeakDetectorBuilder, OVERFLOW_HOST, PoolStatsBuilder, PoolStatsConfig,
};
pub use error::{ConfigError, WatchdogError};
#[cfg(feature = "metrics")]
pub use export::MetricsExporter;
pub use histogram::{Bucket, HistogramSnapshot, HistogramValue};
pub use leak::{HeldConnection, LeakDetector, LeakReport, MAX_WATCHDOG_INTERVAL, StuckHost};
pub use snapshot::{HostSnapshot, PoolSnapshot};
pub use stats::{HostStats, PoolStats};
/// The hook traits, re-exported from `steadfast_core::pool`.
pub use steadfast_core::pool::{
    Acquired, ConnectionId, HostObserver, NoopPoolObserver, PoolObserver,
};
