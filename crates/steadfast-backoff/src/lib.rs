#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod backoff;
mod budget;
mod config;
mod error;
mod future;
mod histogram;
mod layer;
pub mod policy;
pub mod schedule;
mod sync;

pub use backoff::{Backoff, Curve, Jitter, Schedule};
pub use budget::{
    BudgetConfig, BudgetSnapshot, DEFAULT_BUDGET_FLOOR, DEFAULT_BUDGET_RATIO,
    DEFAULT_BUDGET_WINDOW, RetryBudget, Withdrawal,
};
pub use config::{
    ConfigError, DEFAULT_BASE, DEFAULT_FACTOR, DEFAULT_HEDGE_MIN_SAMPLES, DEFAULT_HEDGE_PERCENTILE,
    DEFAULT_IDEMPOTENCY_HEADER, DEFAULT_JITTER, DEFAULT_MAX_DELAY, DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_SERVER_DELAY, DEFAULT_NAME, HedgeDelay, Hedging, RetryConfig, RetryConfigBuilder,
};
pub use error::{Cause, RetryCause, RetryError};
pub use future::{NoNotify, Retrying, retry};
pub use layer::{Retry, RetryLayer, RetrySnapshot};
