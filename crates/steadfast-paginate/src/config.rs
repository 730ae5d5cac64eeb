//! Configuration: the builder, the validated [`Config`], and the defaults.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::Empty;

use crate::decode::Pointer;
use crate::error::ConfigError;
use crate::paginator::{Counters, Paginator, Shared};
use crate::strategy::Strategy;

/// Name shown in tracing events when none is set.
pub const DEFAULT_NAME: &str = "paginate";
/// Where the items are by default: the whole body is the array.
pub const DEFAULT_ITEMS_POINTER: &str = "";
/// Largest page body read by default (16 MiB); larger is
/// [`PageTooLarge`](crate::ErrorKind::PageTooLarge).
pub const DEFAULT_MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;
/// Page requests in flight by default: 1, i.e. no prefetch.
pub const DEFAULT_PREFETCH: usize = 1;
/// The most page requests `prefetch` allows in flight: a few pages ahead
/// hide the latency; more only loads the API.
pub const MAX_PREFETCH: usize = 64;
/// The page limit by default: a runaway guard, not a quota. Far more than a
/// sane crawl needs (10 million items at 100 a page), it still ends a crawl
/// that would otherwise never end, say against a server that invents a new
/// cursor on every page. Raise it with
/// [`max_pages`](PaginatorBuilder::max_pages) for larger collections.
pub const DEFAULT_MAX_PAGES: u64 = 100_000;
/// The most redirects followed for one page request (same-origin, or
/// cross-origin when allowed): more is
/// [`TooManyRedirects`](crate::ErrorKind::TooManyRedirects).
pub const MAX_REDIRECTS: u32 = 10;
/// How many recent pages with items content-loop detection remembers: a
/// page whose items (the whole body when the items are not a top-level
/// member) are byte for byte those of one of them is
/// [`RepeatedPage`](crate::ErrorKind::RepeatedPage) (at once with
/// [`full_repeat_check`](PaginatorBuilder::full_repeat_check), otherwise
/// at once for the page right before it and on the next showing for an
/// older one). Content cycles are
/// short (a server ignoring the page parameter repeats the first page at
/// once); the window is fixed so that it costs a few KiB at most.
pub const REPEAT_WINDOW: usize = 64;
/// How many recent page URIs loop detection remembers by default.
///
/// Real loops are short (a cursor that repeats, a last page linking to the
/// first); 10 000 catches any loop up to that many pages while capping the
/// memory at about 250 KiB whatever the crawl's length.
pub const DEFAULT_LOOP_WINDOW: usize = 10_000;

/// A validated paginator configuration. Build it with
/// [`Paginator::builder`]; `Config::default()` shows the defaults.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) name: Cow<'static, str>,
    pub(crate) items_at: String,
    pub(crate) max_pages: u64,
    pub(crate) max_items: Option<u64>,
    pub(crate) max_page_bytes: usize,
    pub(crate) prefetch: usize,
    pub(crate) loop_window: usize,
    pub(crate) stop_on_empty_page: bool,
    pub(crate) full_repeat_check: bool,
    pub(crate) allow_cross_origin: bool,
    pub(crate) headers: HeaderMap,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: Cow::Borrowed(DEFAULT_NAME),
            items_at: DEFAULT_ITEMS_POINTER.to_owned(),
            max_pages: DEFAULT_MAX_PAGES,
            max_items: None,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
            prefetch: DEFAULT_PREFETCH,
            loop_window: DEFAULT_LOOP_WINDOW,
            stop_on_empty_page: false,
            full_repeat_check: false,
            allow_cross_origin: false,
            headers: HeaderMap::new(),
        }
    }
}

impl Config {
    /// The name shown in tracing events.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JSON pointer to the items array.
    pub fn items_at(&self) -> &str {
        &self.items_at
    }

    /// The page limit (default [`DEFAULT_MAX_PAGES`]).
    pub const fn max_pages(&self) -> u64 {
        self.max_pages
    }

    /// The item limit, if any.
    pub const fn max_items(&self) -> Option<u64> {
        self.max_items
    }

    /// Page requests allowed in flight.
    pub const fn prefetch(&self) -> usize {
        self.prefetch
    }
}

/// Builds a [`Paginator`]. Start with [`Paginator::builder`].
///
/// `B` is the request body type the transport takes; every page request is
/// a `GET` with `B::default()` as its body. It is
/// [`http_body_util::Empty<Bytes>`] unless changed with
/// [`request_body`](Self::request_body).
pub struct PaginatorBuilder<Tr, S, B = Empty<Bytes>> {
    transport: Tr,
    strategy: S,
    config: Config,
    _body: PhantomData<fn() -> B>,
}

impl<Tr, S, B> std::fmt::Debug for PaginatorBuilder<Tr, S, B>
where
    S: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaginatorBuilder")
            .field("strategy", &self.strategy)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<Tr, S> Paginator<Tr, S, Empty<Bytes>> {
    /// Starts configuring a paginator that sends page requests through
    /// `transport` (your whole policy stack: retry, limits, ...) and moves
    /// from page to page with `strategy`.
    pub fn builder(transport: Tr, strategy: S) -> PaginatorBuilder<Tr, S, Empty<Bytes>> {
        PaginatorBuilder {
            transport,
            strategy,
            config: Config::default(),
            _body: PhantomData,
        }
    }
}

impl<Tr, S: Strategy, B> PaginatorBuilder<Tr, S, B> {
    /// Names the paginator in tracing events.
    #[must_use]
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Where the items are: a JSON pointer to an array (`"/data"`), or `""`
    /// (the default) when the whole body is the array. `null` there reads
    /// as an empty page.
    #[must_use]
    pub fn items_at(mut self, pointer: impl Into<String>) -> Self {
        self.config.items_at = pointer.into();
        self
    }

    /// A runaway guard: a crawl that would fetch more than `pages` pages
    /// (over the whole crawl, resumes included) stops with
    /// [`TooManyPages`](crate::ErrorKind::TooManyPages) after yielding
    /// page `pages`; a crawl that ends on exactly `pages` pages is fine.
    /// Its checkpoint points at the next page, so a paginator with a
    /// higher limit resumes it. Default [`DEFAULT_MAX_PAGES`];
    /// `u64::MAX` for no limit.
    #[must_use]
    pub const fn max_pages(mut self, pages: u64) -> Self {
        self.config.max_pages = pages;
        self
    }

    /// A quota: the item stream ends cleanly after `items` items (over the
    /// whole crawl, resumes included); its checkpoint then continues from
    /// the next item. Default: no limit.
    #[must_use]
    pub const fn max_items(mut self, items: u64) -> Self {
        self.config.max_items = Some(items);
        self
    }

    /// The largest page body read (default [`DEFAULT_MAX_PAGE_BYTES`]).
    #[must_use]
    pub const fn max_page_bytes(mut self, bytes: usize) -> Self {
        self.config.max_page_bytes = bytes;
        self
    }

    /// Up to `pages` page requests in flight (at most [`MAX_PREFETCH`]), for strategies that can
    /// predict the following pages ([`PageNumber`](crate::PageNumber) and
    /// [`OffsetLimit`](crate::OffsetLimit) once the total is known):
    /// `pages - 1` run ahead while the consumer works on a page, `pages`
    /// while it waits for the next one. Pages are still yielded in order. Default 1:
    /// each page is requested when the previous one has been consumed.
    #[must_use]
    pub const fn prefetch(mut self, pages: usize) -> Self {
        self.config.prefetch = pages;
        self
    }

    /// The most page requests `prefetch` allows in flight: a few pages ahead
    /// hide the latency; more only loads the API.
    pub const MAX_PREFETCH: usize = 64;
    /// How many recent page URIs loop detection remembers (default
    /// [`DEFAULT_LOOP_WINDOW`]); 0 turns loop detection off.
    #[must_use]
    pub const fn loop_window(mut self, pages: usize) -> Self {
        self.config.loop_window = pages;
        self
    }

    /// Ends the crawl on the first page without items, whatever the
    /// strategy says. Off by default: cursor APIs may return empty pages
    /// mid-collection.
    #[must_use]
    pub const fn stop_on_empty_page(mut self, stop: bool) -> Self {
        self.config.stop_on_empty_page = stop;
        self
    }

    /// Hashes every page with items in full for repeated-page detection, so
    /// that a page repeating any of the last [`REPEAT_WINDOW`] pages is
    /// [`RepeatedPage`](crate::ErrorKind::RepeatedPage) at its first
    /// showing. Off by default: a page is then told apart by a sample of its
    /// content and compared in full only when the sample matches, which
    /// catches a page served again right after itself at once (exactly),
    /// and a cycle through several pages the second time round, for about
    /// half an instruction less per byte of every page. Neither mode ever
    /// reports two different pages as a repeat.
    #[must_use]
    pub const fn full_repeat_check(mut self, full: bool) -> Self {
        self.config.full_repeat_check = full;
        self
    }

    /// Follows next pages, and redirects, to another origin than the start
    /// URI. Off by default ([`CrossOrigin`](crate::ErrorKind::CrossOrigin)).
    /// Even when allowed, `Authorization`, `Proxy-Authorization`, `Cookie`
    /// and headers marked [sensitive](HeaderValue::set_sensitive) are not
    /// sent to another origin (nor anywhere after a redirect chain has left
    /// the origin).
    #[must_use]
    pub const fn allow_cross_origin(mut self, allow: bool) -> Self {
        self.config.allow_cross_origin = allow;
        self
    }

    /// A header sent with every page request (`Accept: application/json`
    /// is sent unless set here). Credentials are withheld from other
    /// origins, see [`allow_cross_origin`](Self::allow_cross_origin).
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.config.headers.append(name, value);
        self
    }

    /// Sends page requests with body type `B2` (`B2::default()`, e.g.
    /// `Full<Bytes>` or `String`), for transports that take another body
    /// type than [`Empty<Bytes>`].
    pub fn request_body<B2>(self) -> PaginatorBuilder<Tr, S, B2> {
        PaginatorBuilder {
            transport: self.transport,
            strategy: self.strategy,
            config: self.config,
            _body: PhantomData,
        }
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<Paginator<Tr, S, B>, ConfigError> {
        let config = self.config;
        let items = Pointer::parse(&config.items_at)?;
        for (name, zero) in [
            ("max_pages", config.max_pages == 0),
            ("max_items", config.max_items == Some(0)),
            ("max_page_bytes", config.max_page_bytes == 0),
            ("prefetch", config.prefetch == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero(name));
            }
        }
        if config.prefetch > MAX_PREFETCH {
            return Err(ConfigError::TooLarge {
                field: "prefetch",
                max: MAX_PREFETCH as u64,
            });
        }
        self.strategy.validate().map_err(ConfigError::Strategy)?;
        Ok(Paginator::from_parts(
            self.transport,
            self.strategy,
            Arc::new(Shared {
                config,
                items,
                counters: Counters::default(),
            }),
        ))
    }
}
