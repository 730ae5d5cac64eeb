#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod body;
pub mod config;
mod conn;
mod connect;
mod drain;
mod error;
mod future;
mod request;
#[cfg(feature = "rustls")]
mod tls;
mod transport;

pub use body::HyperBody;
pub use config::{Builder, Config, DrainConfig};
pub use conn::ConnectionInfo;
pub use error::{BuildError, ErrorKind, HyperError};
pub use transport::{HyperTransport, TransportSnapshot};
