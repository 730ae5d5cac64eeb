//! The configured [`Paginator`], the [`Crawl`] it starts, and its counters.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::Uri;
use http_body::Body;
use http_body_util::Empty;
use serde::de::DeserializeOwned;
use steadfast_core::{BoxError, Transport};

use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::decode::Pointer;
use crate::error::CheckpointError;
use crate::strategy::{Strategy, StrategyError};
use crate::stream::{Items, Pages};

/// Crawls a paginated collection through any [`Transport`].
///
/// Build one with [`Paginator::builder`], then [`start`](Self::start) a
/// crawl at a URI (or [`resume`](Self::resume) one from a
/// [`Checkpoint`]) and take its [`pages`](Crawl::pages) or
/// [`items`](Crawl::items) as a `Stream`. A paginator is a cheap handle:
/// clone it, run many crawls from it; they share its counters.
pub struct Paginator<Tr, S, B = Empty<Bytes>> {
    transport: Tr,
    strategy: S,
    shared: Arc<Shared>,
    _body: PhantomData<fn() -> B>,
}

/// What every crawl of a paginator shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) items: Pointer,
    pub(crate) counters: Counters,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) crawls: AtomicU64,
    pub(crate) pages: AtomicU64,
    pub(crate) items: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A paginator's counters, over all its crawls.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Crawls started (or resumed).
    pub crawls: u64,
    /// Pages received and decoded.
    pub pages: u64,
    /// Items decoded.
    pub items: u64,
    /// Prefetched page requests dropped because the strategy chose
    /// another page (the collection changed during the crawl).
    pub prefetch_discarded: u64,
    /// Crawls that ended with an error.
    pub errors: u64,
}

impl<Tr: Clone, S: Clone, B> Clone for Paginator<Tr, S, B> {
    fn clone(&self) -> Self {
        Self {
            transport: self.transport.clone(),
            strategy: self.strategy.clone(),
            shared: Arc::clone(&self.shared),
            _body: PhantomData,
        }
    }
}

impl<Tr, S: std::fmt::Debug, B> std::fmt::Debug for Paginator<Tr, S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paginator")
            .field("strategy", &self.strategy)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<Tr, S, B> Paginator<Tr, S, B> {
    pub(crate) const fn from_parts(transport: Tr, strategy: S, shared: Arc<Shared>) -> Self {
        Self {
            transport,
            strategy,
            shared,
            _body: PhantomData,
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The counters of all crawls so far.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.shared.counters;
        Snapshot {
            crawls: c.crawls.load(Ordering::Relaxed),
            pages: c.pages.load(Ordering::Relaxed),
            items: c.items.load(Ordering::Relaxed),
            prefetch_discarded: c.discarded.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }
}

impl<Tr: Clone, S: Strategy, B> Paginator<Tr, S, B> {
    /// A crawl starting at `uri` (the strategy may add its first-page
    /// parameters, e.g. `page=1`). Its origin is the crawl's origin.
    pub fn start(&self, uri: Uri) -> Crawl<Tr, S, B> {
        let mut strategy = self.strategy.clone();
        let first = strategy.first(&uri).map(Some);
        Crawl {
            transport: self.transport.clone(),
            strategy,
            shared: Arc::clone(&self.shared),
            start: uri,
            first,
            skip: 0,
            pages: 0,
            items: 0,
            _body: PhantomData,
        }
    }

    /// A crawl that continues where `checkpoint` was taken: it yields
    /// exactly the items that had not been yielded.
    pub fn resume(&self, checkpoint: &Checkpoint) -> Result<Crawl<Tr, S, B>, CheckpointError> {
        let parse = |field: &'static str, text: &str| {
            text.parse::<Uri>()
                .map_err(|source| CheckpointError::InvalidUri {
                    field,
                    uri: text.to_owned(),
                    source,
                })
        };
        let start = parse("start", &checkpoint.start)?;
        let next = checkpoint
            .next
            .as_deref()
            .map(|n| parse("next", n))
            .transpose()?;
        let mut strategy = self.strategy.clone();
        strategy
            .restore(&checkpoint.strategy)
            .map_err(CheckpointError::Strategy)?;
        Ok(Crawl {
            transport: self.transport.clone(),
            strategy,
            shared: Arc::clone(&self.shared),
            start,
            first: Ok(next),
            skip: checkpoint.skip,
            pages: checkpoint.pages,
            items: checkpoint.items,
            _body: PhantomData,
        })
    }
}

/// A crawl, ready to be consumed as a stream of [`pages`](Self::pages) or
/// of [`items`](Self::items). Nothing is requested until the stream is
/// polled.
pub struct Crawl<Tr, S, B> {
    pub(crate) transport: Tr,
    pub(crate) strategy: S,
    pub(crate) shared: Arc<Shared>,
    pub(crate) start: Uri,
    /// The first request (`None`: the checkpoint was complete), or why the
    /// strategy could not make it.
    pub(crate) first: Result<Option<Uri>, StrategyError>,
    pub(crate) skip: usize,
    pub(crate) pages: u64,
    pub(crate) items: u64,
    _body: PhantomData<fn() -> B>,
}

impl<Tr, S: std::fmt::Debug, B> std::fmt::Debug for Crawl<Tr, S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crawl")
            .field("start", &self.start)
            .field("first", &self.first)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl<Tr, S, B> Crawl<Tr, S, B>
where
    Tr: Transport<B>,
    Tr::Body: Body + Send + 'static,
    <Tr::Body as Body>::Data: Send,
    <Tr::Body as Body>::Error: Into<BoxError>,
    B: Default + Send + 'static,
    S: Strategy,
{
    /// The crawl as a stream of pages, each with its items decoded as `T`
    /// (use `serde_json::Value` to keep them as JSON).
    pub fn pages<T: DeserializeOwned + Send + 'static>(self) -> Pages<Tr, S, B, T> {
        Counters::add(&self.shared.counters.crawls, 1);
        Pages::new(self)
    }

    /// The crawl as a stream of items, page after page, in order.
    pub fn items<T: DeserializeOwned + Send + 'static>(self) -> Items<Tr, S, B, T> {
        Counters::add(&self.shared.counters.crawls, 1);
        Items::new(self)
    }
}
