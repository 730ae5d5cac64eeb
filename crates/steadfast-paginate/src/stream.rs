//! The crawl engine and the two streams over it, [`Pages`] and [`Items`].
//!
//! The engine owns the in-flight page requests (a [`Pipeline`], so pages
//! come out in request order whatever order they complete in), the
//! strategy, loop detection, and the position a checkpoint records. Each
//! received page goes through, in order:
//!
//! 1. the repeated-page check: a page with items whose content (see
//!    [`REPEAT_WINDOW`](crate::REPEAT_WINDOW)) is a recent page's is an
//!    error, not yielded;
//! 2. the strategy's `next`, which names the following request or ends;
//! 3. the paginator's own gates: origin, loop, page limit;
//! 4. with `prefetch(k)`, k > 1: reconciliation with prefetched requests
//!    (if the confirmed next request is not the first one in flight, the
//!    speculative ones are dropped and the confirmed one is sent), then
//!    top-up to `k - 1` requests in flight, each started at once so they
//!    run while the consumer works through the page.
//!
//! What follows a page only takes effect once the page is consumed: an
//! error about page N+1 (a loop, say) is yielded after page N's items, and
//! the request that fills the last prefetch slot (the only one, with
//! `prefetch(1)`) is sent then, as a hand-written loop would.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use http::{HeaderMap, StatusCode, Uri};
use http_body::Body;
use serde::de::DeserializeOwned;
use serde_json::Value;
use steadfast_core::{BoxError, Transport};

use crate::checkpoint::Checkpoint;
use crate::decode::Rest;
use crate::error::{ErrorKind, PaginateError};
use crate::fetch::{Fetched, PageRequest, PageTransport, fetch};
use crate::paginator::{Counters, Crawl, Shared};
use crate::pipeline::Pipeline;
use crate::seen::{Repeats, Seen};
use crate::strategy::{Next, PageView, Strategy};
use crate::uri::Origin;

/// The scheme and authority of `uri`, as written.
fn origin_text(uri: &Uri) -> (Option<&str>, Option<&str>) {
    (
        uri.scheme_str(),
        uri.authority().map(http::uri::Authority::as_str),
    )
}

/// One page of a crawl: its items and the response they came in.
#[derive(Clone, Debug)]
pub struct Page<T> {
    number: u64,
    uri: Uri,
    status: StatusCode,
    headers: HeaderMap,
    rest: Rest,
    items: Vec<T>,
}

impl<T> Page<T> {
    /// The page's 1-based position in the crawl (continued across resumes).
    pub const fn number(&self) -> u64 {
        self.number
    }

    /// The URI the page was fetched from.
    pub const fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The response status.
    pub const fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub const fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The JSON body with the items array replaced by `null` (built on
    /// first use).
    pub fn body(&self) -> &Value {
        self.rest.value()
    }

    /// The items. After a resume in the middle of a page, the items yielded
    /// before the checkpoint are left out.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// The items, owned.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }
}

type PageResult<T, E> = Result<Fetched<T>, PaginateError<E>>;

/// What follows the page being consumed.
enum After<E> {
    Fetch(Uri),
    Done,
    /// The crawl fails once the page is consumed. With a URI, the page
    /// itself was fine and the crawl stops before that next page (the
    /// `max_pages` limit): a checkpoint then continues there.
    Fail(PaginateError<E>, Option<Uri>),
}

struct Engine<Tr: Transport<B>, S, B, T> {
    transport: Tr,
    strategy: S,
    shared: Arc<Shared>,
    start: Uri,
    origin: Arc<Origin>,
    queue: Pipeline<PageResult<T, Tr::Error>>,
    /// The URIs of `queue`, in the same order.
    queued: VecDeque<Uri>,
    seen: Seen,
    /// The fingerprints of the last pages with items, to catch a server
    /// that serves one again under another URI.
    repeats: Repeats,
    /// Scratch space for a page's content ranges.
    content: Vec<std::ops::Range<usize>>,
    /// Pages received so far (the last one's number).
    received: u64,
    after: Option<After<Tr::Error>>,
    failed: Option<PaginateError<Tr::Error>>,
    finished: bool,
    /// Items of the next received page to drop (yielded before a resume).
    skip_first: usize,
    keep_last: bool,
    // The checkpoint position: resuming fetches `resume_uri` and skips
    // `resume_skip` items of it.
    resume_uri: Option<Uri>,
    resume_skip: usize,
    pages_done: u64,
    items: u64,
    /// A page was received and is not fully consumed; `state_before` is
    /// the strategy's state before it saw that page.
    in_page: bool,
    state_before: Value,
    _body: std::marker::PhantomData<fn() -> B>,
}

impl<Tr, S, B, T> Engine<Tr, S, B, T>
where
    Tr: PageTransport<B>,
    B: Default + Send + 'static,
    S: Strategy,
    T: DeserializeOwned + Send + 'static,
{
    fn new(crawl: Crawl<Tr, S, B>) -> Self {
        let origin = Arc::new(Origin::of(&crawl.start));
        let window = crawl.shared.config.loop_window;
        let full_repeat_check = crawl.shared.config.full_repeat_check;
        let keep_last = crawl.strategy.wants_last_item();
        let mut engine = Self {
            transport: crawl.transport,
            strategy: crawl.strategy,
            shared: crawl.shared,
            origin,
            queue: Pipeline::new(),
            queued: VecDeque::new(),
            seen: Seen::new(window),
            repeats: Repeats::new(full_repeat_check),
            content: Vec::new(),
            received: crawl.pages,
            after: None,
            failed: None,
            finished: false,
            skip_first: crawl.skip,
            keep_last,
            resume_uri: None,
            resume_skip: crawl.skip,
            pages_done: crawl.pages,
            items: crawl.items,
            in_page: false,
            state_before: Value::Null,
            start: crawl.start,
            _body: std::marker::PhantomData,
        };
        let limit = engine.shared.config.max_pages;
        match crawl.first {
            Ok(Some(uri)) if crawl.pages >= limit => {
                // Resumed with the limit the crawl stopped at: the next
                // page is beyond it, not worth a request.
                engine.failed = Some(PaginateError::at(
                    crawl.pages,
                    uri.clone(),
                    ErrorKind::TooManyPages { limit },
                ));
                engine.resume_uri = Some(uri);
            }
            Ok(Some(uri)) => {
                engine.resume_uri = Some(uri.clone());
                if let Err(e) = engine.admit(crawl.pages, &engine.start, &uri) {
                    engine.failed = Some(e);
                } else {
                    engine.seen.insert(&uri);
                    engine.push(uri, None);
                }
            }
            Ok(None) => engine.finished = true,
            Err(source) => {
                engine.resume_uri = Some(engine.start.clone());
                engine.failed = Some(PaginateError::at(
                    crawl.pages.saturating_add(1),
                    engine.start.clone(),
                    ErrorKind::Strategy(source),
                ));
            }
        }
        engine
    }

    /// The origin gate, for a request that page `page` leads to.
    fn admit(&self, page: u64, from: &Uri, uri: &Uri) -> Result<(), PaginateError<Tr::Error>> {
        if self.shared.config.allow_cross_origin || self.same_origin(uri) {
            Ok(())
        } else {
            tracing::warn!(
                paginator = %self.shared.config.name,
                page,
                url.full = %uri,
                origin = %self.origin,
                "refused a next page on another origin"
            );
            Err(PaginateError::at(
                page,
                from.clone(),
                ErrorKind::CrossOrigin {
                    from: Origin::clone(&self.origin),
                    to: uri.clone(),
                },
            ))
        }
    }

    fn same_origin(&self, uri: &Uri) -> bool {
        // A next URI is almost always built from the start URI's own text:
        // comparing bytes settles it without the case-insensitive compare
        // of `Authority`'s `PartialEq`. The full check (case, default
        // ports) only runs when the fast one fails.
        (origin_text(uri) == origin_text(&self.start) && !self.origin.has_invalid_port())
            || self.origin.matches(uri)
    }

    /// Sends a request for the page after the last one queued. With `cx`
    /// it starts at once (see [`Pipeline::push`]).
    fn push(&mut self, uri: Uri, cx: Option<&mut Context<'_>>) {
        let request = PageRequest {
            number: self
                .received
                .saturating_add(self.queued.len() as u64)
                .saturating_add(1),
            // Unless other origins are allowed, every request made it
            // through the origin gate (`admit`, or `top_up`'s own check).
            cross_origin: self.shared.config.allow_cross_origin && !self.same_origin(&uri),
            keep_last: self.keep_last,
            uri: uri.clone(),
            origin: Arc::clone(&self.origin),
        };
        self.queue.push(
            fetch::<Tr, B, T>(&self.transport, &self.shared, request),
            cx,
        );
        self.queued.push_back(uri);
        debug_assert_eq!(self.queue.len(), self.queued.len());
    }

    fn discard_queue(&mut self) {
        if !self.queued.is_empty() {
            let n = self.queued.len() as u64;
            Counters::add(&self.shared.counters.discarded, n);
            tracing::debug!(paginator = %self.shared.config.name, requests = n, "dropped prefetched pages");
            self.queue.clear();
            self.queued.clear();
        }
    }

    /// Makes `uri`, the strategy's confirmed next request, the first one
    /// in flight: predictions that turned out wrong are dropped.
    fn confirm(&mut self, uri: &Uri, cx: Option<&mut Context<'_>>) {
        if self.queued.front() != Some(uri) {
            self.discard_queue();
            self.push(uri.clone(), cx);
        }
    }

    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<Option<PageResult<T, Tr::Error>>> {
        self.consume();
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Some(Err(self.fail(e))));
        }
        if self.finished {
            return Poll::Ready(None);
        }
        // The page is received where it lies and handed on as it came,
        // `Poll` and all: it is a few hundred bytes to move.
        let mut next = self.queue.poll_next(cx);
        match &mut next {
            Poll::Pending => {}
            Poll::Ready(None) => self.finished = true,
            Poll::Ready(Some(Err(e))) => self.failed_with(e),
            Poll::Ready(Some(Ok(page))) => {
                if let Err(e) = self.receive(page, cx) {
                    next = Poll::Ready(Some(Err(self.fail(e))));
                }
            }
        }
        next
    }

    fn fail(&mut self, e: PaginateError<Tr::Error>) -> PaginateError<Tr::Error> {
        self.failed_with(&e);
        e
    }

    /// The crawl stops with `e`.
    fn failed_with(&mut self, e: &PaginateError<Tr::Error>) {
        self.finish();
        Counters::add(&self.shared.counters.errors, 1);
        tracing::warn!(paginator = %self.shared.config.name, error = %e, "crawl stopped");
    }

    /// A page arrived: the strategy decides what follows it, and the
    /// pages after it are requested while this one is consumed.
    fn receive(
        &mut self,
        page: &mut Fetched<T>,
        cx: &mut Context<'_>,
    ) -> Result<(), PaginateError<Tr::Error>> {
        self.queued.pop_front();
        let count = page.items.len();
        if count > 0 {
            self.check_repeated(page)?;
        }
        self.received = page.number;
        let skip = std::mem::take(&mut self.skip_first);
        if skip > 0 {
            page.items.drain(..skip.min(count));
        }
        self.resume_skip = skip;
        self.in_page = true;
        self.state_before = self.strategy.save();
        Counters::add(&self.shared.counters.pages, 1);
        Counters::add(&self.shared.counters.items, count as u64);
        tracing::debug!(
            paginator = %self.shared.config.name,
            page = page.number,
            url.full = %page.uri,
            http.response.status_code = page.status.as_u16(),
            items = count,
            "page received"
        );

        let after = self.decide(page, count);
        let prefetch = self.shared.config.prefetch;
        match &after {
            // Up to `prefetch - 1` requests run ahead while the page is
            // consumed; the last slot is filled once it is, so that
            // `prefetch(1)` behaves exactly like a hand-written loop.
            After::Fetch(uri) if prefetch > 1 => {
                self.confirm(uri, Some(&mut *cx));
                self.top_up(prefetch - 1, Some(cx));
            }
            After::Fetch(_) => {}
            After::Done | After::Fail(..) => self.discard_queue(),
        }
        self.after = Some(after);
        Ok(())
    }

    /// A page with items whose content is a recent page's, under another
    /// URI: the server ignores the pagination parameter.
    fn check_repeated(&mut self, page: &Fetched<T>) -> Result<(), PaginateError<Tr::Error>> {
        page.rest.content(&mut self.content);
        let Some(previous) = self
            .repeats
            .insert(page.rest.bytes(), &self.content, &page.uri)
        else {
            return Ok(());
        };
        tracing::warn!(
            paginator = %self.shared.config.name,
            page = page.number,
            url.full = %page.uri,
            "the server returned the same page again"
        );
        Err(PaginateError::at(
            page.number,
            page.uri.clone(),
            ErrorKind::RepeatedPage {
                previous: previous.clone(),
            },
        ))
    }

    fn decide(&mut self, page: &Fetched<T>, count: usize) -> After<Tr::Error> {
        let config = &self.shared.config;
        if count == 0 && config.stop_on_empty_page {
            return After::Done;
        }
        let view = PageView::of_page(page.number, &page.uri, &page.headers, &page.rest, count)
            .with_status(page.status)
            .with_last_item(page.last_item.as_ref())
            .with_last_raw(page.last_raw.as_ref().and_then(|r| page.rest.text(r)));
        let uri = match self.strategy.next(&view) {
            Ok(Next::Fetch(uri)) => uri,
            Ok(Next::Done) => return After::Done,
            Err(source) => {
                return After::Fail(
                    PaginateError::at(page.number, page.uri.clone(), ErrorKind::Strategy(source)),
                    None,
                );
            }
        };
        if let Some(alias) = self.strategy.alias() {
            self.seen.insert(&alias);
        }
        if let Err(e) = self.admit(page.number, &page.uri, &uri) {
            return After::Fail(e, None);
        }
        if !self.seen.insert(&uri) {
            tracing::warn!(paginator = %config.name, page = page.number, url.full = %uri, "pagination loops");
            return After::Fail(
                PaginateError::at(page.number, page.uri.clone(), ErrorKind::Loop { uri }),
                None,
            );
        }
        let limit = config.max_pages;
        if page.number >= limit {
            return After::Fail(
                PaginateError::at(
                    page.number,
                    page.uri.clone(),
                    ErrorKind::TooManyPages { limit },
                ),
                Some(uri),
            );
        }
        After::Fetch(uri)
    }

    /// Sends predicted requests until `limit` are in flight.
    fn top_up(&mut self, limit: usize, mut cx: Option<&mut Context<'_>>) {
        let max_pages = self.shared.config.max_pages;
        let allow_cross_origin = self.shared.config.allow_cross_origin;
        while self.queued.len() < limit {
            let Some(last) = self.queued.back() else {
                return;
            };
            let Some(uri) = self.strategy.predict(last) else {
                return;
            };
            let beyond_limit = self.received.saturating_add(self.queued.len() as u64) >= max_pages;
            let cross = !allow_cross_origin && !self.same_origin(&uri);
            if beyond_limit || cross || self.seen.contains(&uri) {
                return;
            }
            self.push(uri, cx.as_deref_mut());
        }
    }

    /// The current page is consumed: what follows it takes effect (and is
    /// requested, if it was not yet).
    fn consume(&mut self) {
        match self.after.take() {
            None => {}
            Some(After::Fetch(uri)) => {
                self.confirm(&uri, None);
                self.top_up(self.shared.config.prefetch, None);
                self.resume_uri = Some(uri);
                self.resume_skip = 0;
                self.pages_done = self.received;
                self.in_page = false;
            }
            Some(After::Done) => {
                self.resume_uri = None;
                self.resume_skip = 0;
                self.pages_done = self.received;
                self.in_page = false;
                self.finished = true;
            }
            Some(After::Fail(e, next)) => {
                if let Some(next) = next {
                    // The page is done with; a resume (with a higher
                    // limit) starts at the page after it.
                    self.resume_uri = Some(next);
                    self.resume_skip = 0;
                    self.pages_done = self.received;
                    self.in_page = false;
                }
                self.failed = Some(e);
            }
        }
    }

    /// The page being read is done with, `taken` of its items yielded:
    /// the crawl moves past it, or ends there when the quota cut it short.
    #[inline(never)]
    fn page_done(&mut self, taken: usize, cut: bool) {
        // Saturating: the counts may come from a checkpoint, which is input.
        self.items = self.items.saturating_add(taken as u64);
        self.resume_skip = self.resume_skip.saturating_add(taken);
        if cut {
            self.finish();
        } else {
            self.consume();
        }
    }
}

impl<Tr: Transport<B>, S: Strategy, B, T> Engine<Tr, S, B, T> {
    /// Ends the crawl where it stands, cancelling requests in flight.
    fn finish(&mut self) {
        self.finished = true;
        self.after = None;
        self.queue.clear();
        self.queued.clear();
    }

    fn quota_reached(&self) -> bool {
        self.shared
            .config
            .max_items
            .is_some_and(|max| self.items >= max)
    }

    /// Items of the current page that may still be yielded under the
    /// `max_items` quota.
    fn allowance(&self) -> usize {
        self.shared.config.max_items.map_or(usize::MAX, |max| {
            usize::try_from(max.saturating_sub(self.items)).unwrap_or(usize::MAX)
        })
    }

    /// `taken`: items of the current page yielded but not yet counted.
    fn checkpoint(&self, taken: usize) -> Checkpoint {
        Checkpoint {
            start: self.start.to_string(),
            next: self.resume_uri.as_ref().map(Uri::to_string),
            skip: self.resume_skip.saturating_add(taken),
            pages: self.pages_done,
            items: self.items.saturating_add(taken as u64),
            strategy: if self.in_page {
                self.state_before.clone()
            } else {
                self.strategy.save()
            },
        }
    }
}

impl<Tr: Transport<B>, S: Strategy, B, T> Engine<Tr, S, B, T> {
    /// The checkpoint [`page_done`](Self::page_done)`(taken, cut)` would
    /// leave, without doing it (nor sending what follows the page).
    fn checkpoint_done(&self, taken: usize, cut: bool) -> Checkpoint {
        let mut checkpoint = self.checkpoint(taken);
        let next = match &self.after {
            _ if cut => return checkpoint,
            Some(After::Fetch(uri) | After::Fail(_, Some(uri))) => Some(uri.to_string()),
            Some(After::Done) => None,
            Some(After::Fail(_, None)) | None => return checkpoint,
        };
        checkpoint.next = next;
        checkpoint.skip = 0;
        checkpoint.pages = self.received;
        checkpoint.strategy = self.strategy.save();
        checkpoint
    }
}

impl<Tr: Transport<B>, S, B, T> Engine<Tr, S, B, T> {
    fn fmt_position(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("start", &self.start)
            .field("next", &self.resume_uri)
            .field("skip", &self.resume_skip)
            .field("pages", &self.pages_done)
            .field("items", &self.items)
            .field("in_flight", &self.queued.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// A crawl as a stream of [`Page`]s, in order. See [`Crawl::pages`].
///
/// The stream ends after the last page, or after yielding one error.
pub struct Pages<Tr: Transport<B>, S, B, T> {
    engine: Engine<Tr, S, B, T>,
}

// Nothing is pinned structurally: requests in flight are boxed.
impl<Tr: Transport<B>, S, B, T> Unpin for Pages<Tr, S, B, T> {}

impl<Tr, S, B, T> Pages<Tr, S, B, T>
where
    Tr: Transport<B>,
    Tr::Body: Body + Send + 'static,
    <Tr::Body as Body>::Data: Send,
    <Tr::Body as Body>::Error: Into<BoxError>,
    B: Default + Send + 'static,
    S: Strategy,
    T: DeserializeOwned + Send + 'static,
{
    pub(crate) fn new(crawl: Crawl<Tr, S, B>) -> Self {
        Self {
            engine: Engine::new(crawl),
        }
    }
}

impl<Tr: Transport<B>, S: Strategy, B, T> Pages<Tr, S, B, T> {
    /// Where the crawl stands, counting every page yielded so far as
    /// processed. Resuming from it yields the pages after them.
    pub fn checkpoint(&self) -> Checkpoint {
        self.engine.checkpoint(0)
    }
}

impl<Tr: Transport<B>, S, B, T> fmt::Debug for Pages<Tr, S, B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.engine.fmt_position("Pages", f)
    }
}

impl<Tr, S, B, T> Stream for Pages<Tr, S, B, T>
where
    Tr: Transport<B>,
    Tr::Body: Body + Send + 'static,
    <Tr::Body as Body>::Data: Send,
    <Tr::Body as Body>::Error: Into<BoxError>,
    B: Default + Send + 'static,
    S: Strategy,
    T: DeserializeOwned + Send + 'static,
{
    type Item = Result<Page<T>, PaginateError<Tr::Error>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let engine = &mut self.get_mut().engine;
        if engine.quota_reached() {
            engine.finish();
            return Poll::Ready(None);
        }
        let mut page = match engine.poll_page(cx) {
            Poll::Ready(Some(Ok(page))) => page,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let cut = page.items.len() > engine.allowance();
        if cut {
            page.items.truncate(engine.allowance());
        }
        engine.page_done(page.items.len(), cut);
        Poll::Ready(Some(Ok(Page {
            number: page.number,
            uri: page.uri,
            status: page.status,
            headers: page.headers,
            rest: page.rest,
            items: page.items,
        })))
    }
}

/// A crawl as a stream of items, page after page, in order. See
/// [`Crawl::items`].
///
/// Holds at most one page of items (plus up to `prefetch` pages in
/// flight), whatever the size of the collection. The stream ends after the
/// last item, or after yielding one error.
pub struct Items<Tr: Transport<B>, S, B, T> {
    engine: Engine<Tr, S, B, T>,
    /// The current page's items not yet yielded.
    buffer: std::vec::IntoIter<T>,
    /// How many items `buffer` started with (progress is counted once per
    /// page, not per item, to keep the per-item path to a pointer bump).
    buffered: usize,
    /// The quota cut the current page short.
    cut: bool,
}

// Nothing is pinned structurally: requests in flight are boxed.
impl<Tr: Transport<B>, S, B, T> Unpin for Items<Tr, S, B, T> {}

impl<Tr, S, B, T> Items<Tr, S, B, T>
where
    Tr: Transport<B>,
    Tr::Body: Body + Send + 'static,
    <Tr::Body as Body>::Data: Send,
    <Tr::Body as Body>::Error: Into<BoxError>,
    B: Default + Send + 'static,
    S: Strategy,
    T: DeserializeOwned + Send + 'static,
{
    pub(crate) fn new(crawl: Crawl<Tr, S, B>) -> Self {
        Self {
            engine: Engine::new(crawl),
            buffer: Vec::new().into_iter(),
            buffered: 0,
            cut: false,
        }
    }

    /// The buffer is empty: the page it held is done with, and the next
    /// page with items is awaited.
    #[inline(never)]
    fn poll_page(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<T, PaginateError<Tr::Error>>>> {
        // The page is done with once all its items were yielded and the
        // next one is asked for, not as its last item is yielded: that
        // keeps a test per item off the per-item path. `checkpoint` counts
        // a page whose items are all yielded as done already.
        if self.buffered > 0 {
            self.engine
                .page_done(std::mem::take(&mut self.buffered), self.cut);
        }
        // The last page's allocation goes back before the next page is
        // decoded, as it does in a hand-written loop: held across it, it
        // changes how the allocator serves the next page's growing items
        // vector (measured: a few tenths of a percent more copying).
        self.buffer = Vec::new().into_iter();
        loop {
            if self.engine.quota_reached() {
                self.engine.finish();
                return Poll::Ready(None);
            }
            // Only the items are kept: matched out of the `Poll` in place
            // rather than moving the whole page out first.
            let mut items = match self.engine.poll_page(cx) {
                Poll::Ready(Some(Ok(page))) => page.items,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            self.cut = items.len() > self.engine.allowance();
            if self.cut {
                items.truncate(self.engine.allowance());
            }
            self.buffered = items.len();
            self.buffer = items.into_iter();
            if let Some(item) = self.buffer.next() {
                return Poll::Ready(Some(Ok(item)));
            }
            self.engine.page_done(0, self.cut);
        }
    }
}

impl<Tr: Transport<B>, S: Strategy, B, T> Items<Tr, S, B, T> {
    /// Where the crawl stands, counting every item yielded so far as
    /// processed. Resuming from it yields exactly the items after them,
    /// even from the middle of a page.
    pub fn checkpoint(&self) -> Checkpoint {
        let taken = self.buffered - self.buffer.len();
        if taken > 0 && self.buffer.len() == 0 {
            self.engine.checkpoint_done(taken, self.cut)
        } else {
            self.engine.checkpoint(taken)
        }
    }
}

impl<Tr: Transport<B>, S, B, T> fmt::Debug for Items<Tr, S, B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.engine.fmt_position("Items", f)
    }
}

impl<Tr, S, B, T> Stream for Items<Tr, S, B, T>
where
    Tr: Transport<B>,
    Tr::Body: Body + Send + 'static,
    <Tr::Body as Body>::Data: Send,
    <Tr::Body as Body>::Error: Into<BoxError>,
    B: Default + Send + 'static,
    S: Strategy,
    T: DeserializeOwned + Send + 'static,
{
    type Item = Result<T, PaginateError<Tr::Error>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // The per-item path: a pointer bump. Everything per page lives in
        // an out-of-line function so this stays small enough to inline.
        match this.buffer.next() {
            Some(item) => Poll::Ready(Some(Ok(item))),
            None => this.poll_page(cx),
        }
    }
}
