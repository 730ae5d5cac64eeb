#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod adaptive;
mod body;
mod bulkhead;
pub mod config;
mod error;
mod key;
mod keyed;
pub mod layer;
mod limiter;
pub mod pacing;
mod queue;
mod quota;
mod state;
mod sync;
mod table;

pub use adaptive::{Aimd, Gradient, LimitAlgorithm, Sample, Signal};
pub use body::PermitBody;
pub use bulkhead::{Bulkhead, BulkheadSnapshot, Permit};
pub use config::{
    AimdConfig, ConcurrencyConfig, ConfigError, GradientConfig, PacingConfig, ReleaseOn,
};
pub use error::{LimitCause, LimitError, RateLimited, RejectReason, Rejected};
pub use key::{ByHost, HostKey, KeyFn};
pub use keyed::{
    DEFAULT_MAX_KEYS, KeyedRateLimiter, KeyedRateLimiterBuilder, KeyedSnapshot, MAX_SHARDS,
};
pub use layer::{
    Adaptive, AdaptiveLayer, AdaptiveSnapshot, ConcurrencyLimit, ConcurrencyLimitLayer, Keyed,
    OverloadClassifier, Pacing, PacingLayer, RateLimit, RateLimitLayer, TokenSource,
};
pub use limiter::{RateLimiter, RateLimiterSnapshot};
pub use pacing::{PaceState, PaceView, Pacer, PacerSnapshot};
pub use quota::{MAX_INTERVAL, Quota, QuotaError};
pub use state::{Clock, Gcra, NotUntil};

/// With the `tower` feature: turns any layer of this crate into a
/// `tower::Layer` (`TowerLayer::new(RateLimitLayer::new(quota))`).
#[cfg(feature = "tower")]
pub use steadfast_core::tower::TowerLayer;

/// Default policy names, shown in tracing events until one is set.
mod names {
    pub(crate) const RATE_LIMIT: &str = "rate_limit";
    pub(crate) const KEYED_RATE_LIMIT: &str = "keyed_rate_limit";
    pub(crate) const BULKHEAD: &str = "bulkhead";
    pub(crate) const PACING: &str = "pacing";
    pub(crate) const ADAPTIVE: &str = "adaptive";
}
