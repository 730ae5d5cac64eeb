#![doc = include_str!("../README.md")]

pub mod fault;
pub mod mock;

pub use fault::FaultServer;
pub use mock::{MockTransport, Reply, Route};
