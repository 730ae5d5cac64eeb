#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod checkpoint;
mod config;
mod decode;
mod error;
mod fetch;
pub mod link;
mod paginator;
mod pipeline;
mod seen;
pub mod strategy;
mod stream;
pub mod uri;

pub use checkpoint::Checkpoint;
pub use config::{
    Config, DEFAULT_ITEMS_POINTER, DEFAULT_LOOP_WINDOW, DEFAULT_MAX_PAGE_BYTES, DEFAULT_MAX_PAGES,
    DEFAULT_NAME, DEFAULT_PREFETCH, MAX_PREFETCH, MAX_REDIRECTS, PaginatorBuilder, REPEAT_WINDOW,
};
pub use decode::{DecodeError, PointerError};
pub use error::{CheckpointError, ConfigError, ErrorKind, PaginateError};
pub use link::{Link, parse_link_header};
pub use paginator::{Crawl, Paginator, Snapshot};
pub use strategy::{
    Cursor, HasMore, LinkHeader, Next, OffsetLimit, PageNumber, PageView, Strategy, StrategyError,
};
pub use stream::{Items, Page, Pages};
