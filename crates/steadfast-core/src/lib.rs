#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod classify;
pub mod deadline;
pub mod error;
pub mod pool;
pub mod replay;
pub mod signals;
#[cfg(feature = "tower")]
pub mod tower;
mod transport;

pub use classify::{Classify, DefaultClassifier, Outcome};
pub use deadline::Deadline;
pub use error::{ConnectError, ErrorClass, Report, TimeoutError, TimeoutPhase};
pub use replay::{NotReplayable, ReplayBody, TryCloneBody, try_clone_request};
pub use signals::ServerSignals;
pub use transport::{Identity, Layer, Stack, Transport, TransportExt, TransportFn, transport_fn};

/// A boxed, thread-safe error, for error chains built from any source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
