//! The errors of a crawl, of configuration, and of resuming.

use std::fmt;

use http::{StatusCode, Uri};
use steadfast_core::BoxError;

use crate::decode::{DecodeError, PointerError};
use crate::strategy::StrategyError;
use crate::uri::Origin;

/// A crawl failed. The stream yields the error once and then ends; its
/// [`checkpoint`](crate::Items::checkpoint) still points at the last fully
/// processed position, so the crawl can be resumed after a transient
/// failure (not after a loop, see [`is_loop`](Self::is_loop)).
///
/// What happened is in [`kind`](Self::kind); which page it concerns in
/// [`page`](Self::page) and [`uri`](Self::uri). The error is one pointer
/// wide, so a stream of small items does not pay for the size of its
/// error case on every item.
///
/// `E` is the transport's error type.
pub struct PaginateError<E> {
    inner: Box<Inner<E>>,
}

struct Inner<E> {
    page: Option<u64>,
    uri: Option<Uri>,
    kind: ErrorKind<E>,
}

/// What went wrong in a crawl.
#[non_exhaustive]
#[derive(Debug)]
pub enum ErrorKind<E> {
    /// The transport (and the policies stacked in it) gave up on the page.
    Transport(E),
    /// The page answered with a non-success status.
    Status(StatusCode),
    /// The page's body could not be read.
    Body(BoxError),
    /// The page's body is larger than `max_page_bytes`.
    PageTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body is not JSON, or the items could not be decoded.
    Decode {
        /// Where the items were expected (`""` is the whole body).
        pointer: String,
        /// What went wrong (with line and column for JSON errors).
        source: DecodeError,
    },
    /// The strategy could not tell what follows the page.
    Strategy(StrategyError),
    /// The page leads back to a URI (a next link, or the same cursor) this
    /// crawl already fetched.
    Loop {
        /// The URI seen before.
        uri: Uri,
    },
    /// The page has the same items as one of the last
    /// [`REPEAT_WINDOW`](crate::REPEAT_WINDOW) pages, under another URI:
    /// the server ignores the pagination parameter (or hands out a fresh
    /// cursor to the same page) and would serve the same items forever.
    /// The page's items are not yielded. See
    /// [`full_repeat_check`](crate::PaginatorBuilder::full_repeat_check)
    /// for when a repeat of an older page is caught.
    RepeatedPage {
        /// The URI of the earlier page whose items this one repeats.
        previous: Uri,
    },
    /// The page leads to another origin than the one the crawl started on.
    CrossOrigin {
        /// The crawl's origin.
        from: Origin,
        /// The refused URI.
        to: Uri,
    },
    /// The API has more pages than `max_pages`.
    TooManyPages {
        /// The configured limit.
        limit: u64,
    },
    /// Following the page's redirects took more than
    /// [`MAX_REDIRECTS`](crate::MAX_REDIRECTS) hops (a redirect loop, most
    /// likely).
    TooManyRedirects {
        /// The limit.
        limit: u32,
    },
}

impl<E> PaginateError<E> {
    pub(crate) fn new(page: Option<u64>, uri: Option<Uri>, kind: ErrorKind<E>) -> Self {
        Self {
            inner: Box::new(Inner { page, uri, kind }),
        }
    }

    /// An error about page `page`, fetched from `uri`.
    pub(crate) fn at(page: u64, uri: Uri, kind: ErrorKind<E>) -> Self {
        Self::new(Some(page), Some(uri), kind)
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind<E> {
        &self.inner.kind
    }

    /// What went wrong, owned (to take the transport error out).
    pub fn into_kind(self) -> ErrorKind<E> {
        self.inner.kind
    }

    /// The 1-based number of the page the error concerns (for a loop or
    /// another origin, the page that leads there).
    pub fn page(&self) -> Option<u64> {
        self.inner.page
    }

    /// The URI of that page.
    pub fn uri(&self) -> Option<&Uri> {
        self.inner.uri.as_ref()
    }

    /// The status, when the page answered with a non-success one.
    pub fn status(&self) -> Option<StatusCode> {
        match self.inner.kind {
            ErrorKind::Status(status) => Some(status),
            _ => None,
        }
    }

    /// Whether the transport failed (no response).
    pub fn is_transport(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Transport(_))
    }

    /// Whether the API's pagination loops: a next request that comes back
    /// ([`ErrorKind::Loop`]) or a page served again under another URI
    /// ([`ErrorKind::RepeatedPage`]). Resuming after a loop is not safe:
    /// the resumed crawl does not know the pages before, and would yield
    /// them again.
    pub fn is_loop(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Loop { .. } | ErrorKind::RepeatedPage { .. }
        )
    }

    /// Whether a next page on another origin was refused.
    pub fn is_cross_origin(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::CrossOrigin { .. })
    }
}

impl<E> fmt::Display for PaginateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let page = self.inner.page.unwrap_or(0);
        let uri = match &self.inner.uri {
            Some(uri) => uri as &dyn fmt::Display,
            None => &"(no URI)",
        };
        match &self.inner.kind {
            ErrorKind::Transport(_) => write!(f, "page {page}: the request to {uri} failed"),
            ErrorKind::Status(status) if status.is_redirection() => write!(
                f,
                "page {page}: {uri} answered {status} without a Location the paginator can follow (an http or https URI reference)"
            ),
            ErrorKind::Status(status) => write!(
                f,
                "page {page}: {uri} answered {status}; a retry policy in the transport stack handles transient statuses"
            ),
            ErrorKind::Body(_) => write!(f, "page {page}: reading the body of {uri} failed"),
            ErrorKind::PageTooLarge { limit } => write!(
                f,
                "page {page}: the body of {uri} exceeds max_page_bytes ({limit} bytes); raise the limit or ask for smaller pages"
            ),
            ErrorKind::Decode { pointer, .. } => write!(
                f,
                "page {page}: could not decode the items at JSON pointer {pointer:?} of {uri}"
            ),
            ErrorKind::Strategy(_) => write!(f, "page {page}: cannot tell what follows {uri}"),
            ErrorKind::Loop { uri: seen } => write!(
                f,
                "page {page} leads back to {seen}, which this crawl already fetched: the API's pagination loops (a repeated cursor or next link), so the crawl stops instead of yielding duplicates"
            ),
            ErrorKind::CrossOrigin { from, to } => write!(
                f,
                "page {page} leads to {to}, on another origin than {from}: refused, because credentials must not leak and the data may not be the API's; allow it with `allow_cross_origin(true)`"
            ),
            ErrorKind::RepeatedPage { previous } => write!(
                f,
                "page {page}: the server returned the same page again ({uri} has the items of {previous}): does it ignore the page, offset or cursor parameter? The crawl stops instead of yielding the same items forever"
            ),
            ErrorKind::TooManyPages { limit } => write!(
                f,
                "page {page}: the crawl reached max_pages ({limit}) and the API has more pages; to fetch them, resume from the checkpoint with a higher max_pages (the limit counts the pages of the whole crawl, resumes included)"
            ),
            ErrorKind::TooManyRedirects { limit } => write!(
                f,
                "page {page}: following the redirects of {uri} took more than {limit} hops; the server's redirects loop"
            ),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for PaginateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaginateError")
            .field("page", &self.inner.page)
            .field("uri", &self.inner.uri)
            .field("kind", &self.inner.kind)
            .finish()
    }
}

impl<E: std::error::Error + 'static> std::error::Error for PaginateError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.kind {
            ErrorKind::Transport(e) => Some(e),
            ErrorKind::Body(e) => Some(&**e),
            ErrorKind::Decode { source, .. } => Some(source),
            ErrorKind::Strategy(e) => Some(e),
            _ => None,
        }
    }
}

/// A paginator's configuration is invalid.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `items_at` is not a JSON pointer.
    #[error("items_at: {0}")]
    ItemsPointer(#[from] PointerError),
    /// A limit that must be at least 1 is 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A setting is above its maximum.
    #[error("{field} must be at most {max}")]
    TooLarge {
        /// The setting.
        field: &'static str,
        /// Its maximum.
        max: u64,
    },
    /// The strategy's configuration is invalid.
    #[error("invalid strategy configuration")]
    Strategy(#[source] StrategyError),
}

/// A checkpoint cannot be resumed from.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A URI in the checkpoint does not parse.
    #[error(
        "the checkpoint's {field} URI {uri:?} is invalid; was the checkpoint edited or truncated?"
    )]
    InvalidUri {
        /// Which URI (`start` or `next`).
        field: &'static str,
        /// The text found.
        uri: String,
        /// Why it does not parse.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The strategy rejected the state saved in the checkpoint.
    #[error("the strategy rejected the checkpoint's state")]
    Strategy(#[source] StrategyError),
}
