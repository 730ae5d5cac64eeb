#![doc = include_str!("../README.md")]

pub mod fault;
pub mod mock;
mod percent;

pub use fault::{FaultServer, FaultServerBuilder, ServerStats};
pub use mock::{MockError, MockTransport, RecordedCall, Reply, Route, RouteHandle};
