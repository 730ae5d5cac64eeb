#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod classify;
pub mod config;
mod error;
mod event;
mod future;
mod layer;
pub mod registry;
mod state;
mod sync;
mod window;

pub use classify::BreakerClassifier;
pub use config::{
    BreakerConfig, BreakerConfigBuilder, ConfigError, HalfOpen, SlidingWindow, SlowCalls,
};
pub use error::{BreakerError, BreakerOpen};
pub use event::{Reason, State, Transition, TransitionEvent};
pub use layer::{Breaker, BreakerLayer};
pub use registry::{BreakerRegistry, RegistrySnapshot};
pub use state::{BreakerSnapshot, CircuitBreaker, Permit};
pub use window::{MAX_COUNT_WINDOW, WindowCounts};
