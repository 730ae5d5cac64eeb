//! How to get from one page to the next: the [`Strategy`] trait and the
//! built-in strategies.
//!
//! A strategy is a small, synchronous state machine. It never performs I/O:
//! the paginator fetches a page, decodes it, and hands the strategy a
//! [`PageView`]; the strategy answers with [`Next::Fetch`] or
//! [`Next::Done`]. That keeps every stopping rule testable without a
//! transport, and lets the paginator apply loop detection, origin checks,
//! limits and prefetch uniformly on top.
//!
//! | strategy | next request | stops when |
//! |---|---|---|
//! | [`LinkHeader`] | the `rel="next"` target, resolved against the request URI | no next link |
//! | [`Cursor`] | `?cursor=<value>` from a body pointer or a header | cursor absent, `null` or `""` |
//! | [`PageNumber`] | `?page=N+1` | `N` reaches the total pages (given or computed from a total count); without totals, an empty page |
//! | [`OffsetLimit`] | `?offset=O+items` | the total count is reached; without a total, an empty page |
//! | [`HasMore`] | `?starting_after=<id of the last item>` | the flag is `false` |
//!
//! An empty page alone never ends a [`LinkHeader`], [`Cursor`] or
//! [`HasMore`] crawl: many cursor APIs return empty pages while a filter
//! skips ahead. Opt in with
//! [`PaginatorBuilder::stop_on_empty_page`](crate::PaginatorBuilder::stop_on_empty_page).

use http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

use std::borrow::Cow;

use crate::decode::{Field, Rest, raw_at};
use crate::link::LinkError;
use crate::uri::UriError;

mod cursor;
mod has_more;
mod link_header;
mod offset_limit;
mod page_number;

pub use cursor::{Cursor, DEFAULT_CURSOR_PARAM};
pub use has_more::{DEFAULT_AFTER_PARAM, DEFAULT_FLAG_POINTER, DEFAULT_ID_POINTER, HasMore};
pub use link_header::{DEFAULT_REL, LinkHeader};
pub use offset_limit::{DEFAULT_LIMIT_PARAM, DEFAULT_OFFSET_PARAM, OffsetLimit};
pub use page_number::{DEFAULT_FIRST_PAGE, DEFAULT_PAGE_PARAM, PageNumber};

/// What follows a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Fetch this URI next.
    Fetch(Uri),
    /// The collection is complete.
    Done,
}

/// Everything a strategy may look at to decide what follows a page.
#[derive(Clone, Copy, Debug)]
pub struct PageView<'a> {
    number: u64,
    uri: &'a Uri,
    status: StatusCode,
    headers: &'a HeaderMap,
    body: Body<'a>,
    item_count: usize,
    last_item: Option<&'a Value>,
    /// The last item's text as received, when the page came off the wire.
    last_raw: Option<&'a str>,
}

#[derive(Clone, Copy, Debug)]
enum Body<'a> {
    Value(&'a Value),
    Rest(&'a Rest),
}

impl<'a> PageView<'a> {
    /// A view of page `number` (1-based), fetched from `uri`, with the
    /// response `headers` and the JSON `body` (items replaced by `null`)
    /// holding `item_count` items. Handy for testing a custom strategy.
    pub const fn new(
        number: u64,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        body: &'a Value,
        item_count: usize,
    ) -> Self {
        Self::with_body(number, uri, headers, Body::Value(body), item_count)
    }

    pub(crate) const fn of_page(
        number: u64,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        rest: &'a Rest,
        item_count: usize,
    ) -> Self {
        Self::with_body(number, uri, headers, Body::Rest(rest), item_count)
    }

    const fn with_body(
        number: u64,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        body: Body<'a>,
        item_count: usize,
    ) -> Self {
        Self {
            number,
            uri,
            status: StatusCode::OK,
            headers,
            body,
            item_count,
            last_item: None,
            last_raw: None,
        }
    }

    pub(crate) const fn with_last_raw(mut self, raw: Option<&'a str>) -> Self {
        self.last_raw = raw;
        self
    }

    /// The value at `field` of the body; only that member is parsed. A
    /// [`StrategyError::BadValue`] when the member is valid JSON that
    /// `serde_json::Value` cannot hold (`1e400`, nesting deeper than 128):
    /// it is there, so it must not read as absent.
    pub(crate) fn lookup(&self, field: &Field) -> Result<Option<Cow<'a, Value>>, StrategyError> {
        match self.body {
            Body::Value(value) => Ok(field.get(value).map(Cow::Borrowed)),
            Body::Rest(rest) => rest.lookup(field).map_err(|e| StrategyError::BadValue {
                location: format!("body {}", field.as_str()),
                expected: "JSON that serde_json can hold (numbers within the f64 range, nesting up to 128 deep)",
                found: format!("a value it cannot read ({e})"),
            }),
        }
    }

    /// The value at `field` of the body as a [`Token`].
    pub(crate) fn token(&self, field: &Field) -> Token<'a> {
        match self.body {
            Body::Value(value) => Token::of_value(field.get(value)),
            Body::Rest(rest) => Token::of_raw(rest.lookup_raw(field)),
        }
    }

    /// The value at `field` of the last item as a [`Token`].
    pub(crate) fn last_item_token(&self, field: &Field) -> Token<'a> {
        match (self.last_raw, self.last_item) {
            (Some(raw), _) => Token::of_raw(field.tokens().and_then(|t| raw_at(raw.as_bytes(), t))),
            (None, Some(item)) => Token::of_value(field.get(item)),
            (None, None) => Token::Absent,
        }
    }

    /// Sets the response status (default 200).
    #[must_use]
    pub const fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Sets the last item, as JSON.
    #[must_use]
    pub const fn with_last_item(mut self, item: Option<&'a Value>) -> Self {
        self.last_item = item;
        self
    }

    /// The page's 1-based position in the crawl (continued across resumes).
    pub const fn number(&self) -> u64 {
        self.number
    }

    /// The URI the page was fetched from; relative references resolve against it.
    pub const fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The response status (always a success: other statuses are errors
    /// before a strategy sees them).
    pub const fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub const fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The JSON body with the items array replaced by `null` (the items
    /// were decoded straight into the item type). `null` when the whole
    /// body is the items array.
    ///
    /// Built on first use: the built-in strategies read single members
    /// without building it, so call this only when you need the whole body.
    pub fn body(&self) -> &'a Value {
        match self.body {
            Body::Value(value) => value,
            Body::Rest(rest) => rest.value(),
        }
    }

    /// How many items the page held.
    pub const fn item_count(&self) -> usize {
        self.item_count
    }

    /// The last item as JSON, when the strategy asked for it with
    /// [`Strategy::wants_last_item`] and the page was not empty.
    pub const fn last_item(&self) -> Option<&'a Value> {
        self.last_item
    }
}

/// A pagination scheme: the request for the first page, and what follows
/// each page.
///
/// Implement it for APIs the built-ins do not cover. `next` sees every page
/// in order. Loop detection, origin checks, limits and prefetch are the
/// paginator's job, not the strategy's.
///
/// ```
/// use http::{HeaderMap, Uri};
/// use serde_json::{json, Value};
/// use steadfast_paginate::strategy::{Next, PageView, Strategy, StrategyError};
///
/// /// `{"items": [...], "links": {"next": "/items?p=3"}}`
/// #[derive(Clone, Debug)]
/// struct HalLinks;
///
/// impl Strategy for HalLinks {
///     fn next(&mut self, page: &PageView<'_>) -> Result<Next, StrategyError> {
///         match page.body().pointer("/links/next").and_then(Value::as_str) {
///             Some(next) => Ok(Next::Fetch(steadfast_paginate::uri::resolve(page.uri(), next)?)),
///             None => Ok(Next::Done),
///         }
///     }
/// }
///
/// let uri: Uri = "http://api.test/items?p=2".parse().unwrap();
/// let body = json!({"items": null, "links": {"next": "/items?p=3"}});
/// let headers = HeaderMap::new();
/// let view = PageView::new(2, &uri, &headers, &body, 10);
/// assert_eq!(
///     HalLinks.next(&view).unwrap(),
///     Next::Fetch("http://api.test/items?p=3".parse().unwrap()),
/// );
/// ```
pub trait Strategy: Clone + Send {
    /// Checks the strategy's configuration; called once by
    /// [`PaginatorBuilder::build`](crate::PaginatorBuilder::build).
    fn validate(&self) -> Result<(), StrategyError> {
        Ok(())
    }

    /// The request for the first page, given the URI the crawl starts from.
    /// The default fetches `start` unchanged.
    fn first(&mut self, start: &Uri) -> Result<Uri, StrategyError> {
        Ok(start.clone())
    }

    /// What follows `page`.
    fn next(&mut self, page: &PageView<'_>) -> Result<Next, StrategyError>;

    /// Another URI naming the page [`next`](Self::next) just saw, when the
    /// strategy learned one: [`LinkHeader`] reports the first page's
    /// `rel="first"` link, which names the same page as a start URI without
    /// `?page=1`. Loop detection counts it as fetched, so a loop back to the
    /// first page is caught before its items are yielded twice. Called
    /// right after each successful `next`; the default is `None`.
    fn alias(&mut self) -> Option<Uri> {
        None
    }

    /// The request that follows `after` if it can be known without seeing
    /// the response to `after` (page numbers and offsets once the total is
    /// known). Enables prefetch; the default, `None`, never prefetches.
    ///
    /// A prediction is only a guess: the paginator still calls
    /// [`Strategy::next`] for every page and discards predicted requests
    /// that turn out different.
    fn predict(&self, after: &Uri) -> Option<Uri> {
        let _ = after;
        None
    }

    /// Whether [`PageView::last_item`] is needed. Decoding the last item as
    /// JSON as well costs time on every page, so it is off by default.
    fn wants_last_item(&self) -> bool {
        false
    }

    /// State to store in a [`Checkpoint`](crate::Checkpoint), for strategies
    /// whose position is not fully described by the next request URI.
    fn save(&self) -> Value {
        Value::Null
    }

    /// Restores what [`Strategy::save`] returned.
    fn restore(&mut self, state: &Value) -> Result<(), StrategyError> {
        let _ = state;
        Ok(())
    }
}

/// A strategy could not decide what follows a page.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    /// The `Link` header is malformed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The next request URI could not be built.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// A value the strategy reads has the wrong type or form.
    #[error("{location} is {found}, expected {expected}")]
    BadValue {
        /// Where the value was read (`body /next_cursor`, `header x-total`).
        location: String,
        /// What the strategy needs.
        expected: &'static str,
        /// What it found.
        found: String,
    },
    /// A value the strategy needs is absent.
    #[error("{location} is missing from the page; check the strategy's pointer or header name")]
    Missing {
        /// Where the value was looked for.
        location: String,
    },
    /// The server says more pages follow, but gave nothing to continue from.
    #[error("cannot continue: {0}")]
    NoProgress(&'static str),
    /// The strategy's configuration is invalid.
    #[error("invalid strategy configuration: {0}")]
    Config(String),
    /// A custom strategy's own error.
    #[error(transparent)]
    Other(steadfast_core::BoxError),
}

impl StrategyError {
    pub(crate) fn bad_value(location: String, expected: &'static str, found: &Value) -> Self {
        Self::BadValue {
            location,
            expected,
            found: describe(found),
        }
    }
}

/// "a string \"x\"", "the number 3", "an object": for error messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a long string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A scalar a strategy sends back to the server (a cursor, an id), read so
/// that it goes back exactly as it came: a string unescaped, a number as
/// the digits the server wrote (`18446744073709551617` must not come back
/// as `1.8446744073709552e19`).
#[derive(Debug)]
pub(crate) enum Token<'a> {
    /// Absent or `null`.
    Absent,
    /// A string's contents.
    Str(Cow<'a, str>),
    /// A number's text.
    Number(Cow<'a, str>),
    /// Anything else, for the error message.
    Other(Value),
}

impl<'a> Token<'a> {
    /// From JSON text as received.
    fn of_raw(raw: Option<&'a str>) -> Self {
        let Some(raw) = raw else {
            return Self::Absent;
        };
        match raw.as_bytes().first() {
            // The common case, a string without escapes, is borrowed.
            Some(b'"') => match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                Some(inner) if !inner.contains('\\') => Self::Str(Cow::Borrowed(inner)),
                _ => serde_json::from_str(raw).map_or(Self::Absent, |s| Self::Str(Cow::Owned(s))),
            },
            Some(b'-' | b'0'..=b'9') => Self::Number(Cow::Borrowed(raw)),
            Some(b'n') | None => Self::Absent,
            Some(_) => serde_json::from_str(raw).map_or(Self::Absent, Self::Other),
        }
    }

    /// From a parsed value (a [`PageView::new`] body, without the text).
    fn of_value(value: Option<&'a Value>) -> Self {
        match value {
            None | Some(Value::Null) => Self::Absent,
            Some(Value::String(s)) => Self::Str(Cow::Borrowed(s)),
            Some(Value::Number(n)) => Self::Number(Cow::Owned(n.to_string())),
            Some(other) => Self::Other(other.clone()),
        }
    }

    /// For an error message: what was found.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Absent => "null".to_owned(),
            Self::Str(s) => describe(&Value::String(s.clone().into_owned())),
            Self::Number(n) => format!("the number {n}"),
            Self::Other(value) => describe(value),
        }
    }
}

/// Reads a non-negative integer (JSON number, or a string of digits as
/// some APIs send totals) at `field`; `None` when absent or null.
pub(crate) fn read_count(page: &PageView<'_>, field: &Field) -> Result<Option<u64>, StrategyError> {
    match page.lookup(field)?.as_deref() {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
        Some(other) => Err(StrategyError::bad_value(
            format!("body {}", field.as_str()),
            "a non-negative integer",
            other,
        )),
    }
}

/// Reads a non-negative integer query parameter of the request.
pub(crate) fn read_param(uri: &Uri, name: &str) -> Result<Option<u64>, StrategyError> {
    match crate::uri::query_param(uri, name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| StrategyError::BadValue {
            location: format!("query parameter {name}"),
            expected: "a non-negative integer",
            found: format!("{v:?}"),
        }),
    }
}

pub(crate) fn check_field(field: &Field) -> Result<(), StrategyError> {
    field
        .check()
        .map_err(|e| StrategyError::Config(e.to_string()))
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Owns what a [`PageView`] borrows.
    pub(crate) struct Fixture {
        pub(crate) uri: Uri,
        pub(crate) headers: HeaderMap,
        pub(crate) body: Value,
        pub(crate) items: usize,
        pub(crate) last: Option<Value>,
    }

    impl Fixture {
        pub(crate) fn new(uri: &str, body: Value, items: usize) -> Self {
            Self {
                uri: uri.parse().unwrap(),
                headers: HeaderMap::new(),
                body,
                items,
                last: None,
            }
        }

        pub(crate) fn header(mut self, name: &'static str, value: &'static str) -> Self {
            self.headers
                .append(name, http::HeaderValue::from_static(value));
            self
        }

        pub(crate) fn last(mut self, last: Value) -> Self {
            self.last = Some(last);
            self
        }

        pub(crate) fn view(&self) -> PageView<'_> {
            PageView::new(1, &self.uri, &self.headers, &self.body, self.items)
                .with_last_item(self.last.as_ref())
        }
    }

    pub(crate) fn fetch(s: &str) -> Next {
        Next::Fetch(s.parse().unwrap())
    }

    /// The decoded value of query parameter `name` of `uri`, owned.
    pub(crate) fn param(uri: &Uri, name: &str) -> Option<String> {
        crate::uri::query_param(uri, name).map(std::borrow::Cow::into_owned)
    }
}
