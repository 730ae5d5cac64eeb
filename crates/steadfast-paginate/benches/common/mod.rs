//! The fixture shared by `benches/paginate.rs` and
//! `examples/paginate_callgrind.rs`: 100 in-memory cursor pages of 100
//! items, the transport serving them, the loop a user would write by hand,
//! the loops that drain the paginator's streams, and [`Contender`], the
//! three crawls that the overhead comparisons set side by side. The same
//! pages can be served over any transport ([`Crawl::new`]), such as the
//! bench's loopback HTTP server.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt::Debug;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http::header::ACCEPT;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt as _, Empty, Full};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use steadfast_core::{Transport, transport_fn};
use steadfast_paginate::{Cursor, Page, Paginator};

const PAGES: usize = 100;
const PER_PAGE: usize = 100;
const BASE: &str = "http://api.test/items";

/// The FaultServer's item: about 30 bytes of JSON, the worst case for
/// per-item overhead.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub(crate) struct Tiny {
    id: u64,
    name: String,
}

/// An item the size of a real API's (a trimmed GitHub issue, ~600 bytes).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub(crate) struct Issue {
    id: u64,
    number: u64,
    title: String,
    state: String,
    locked: bool,
    comments: u32,
    created_at: String,
    updated_at: String,
    closed_at: Option<String>,
    author_association: String,
    user: User,
    labels: Vec<String>,
    body: String,
    url: String,
    html_url: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct User {
    login: String,
    id: u64,
    site_admin: bool,
    kind: String,
}

pub(crate) fn tiny(id: usize) -> serde_json::Value {
    serde_json::json!({"id": id, "name": format!("item-{id}")})
}

pub(crate) fn issue(id: usize) -> serde_json::Value {
    serde_json::json!({
        "id": id, "number": id % 5000,
        "title": format!("Crash when paginating collection number {id}"),
        "state": if id.is_multiple_of(3) { "closed" } else { "open" }, "locked": false, "comments": id % 17,
        "created_at": "2024-05-01T12:34:56Z", "updated_at": "2024-05-02T08:00:00Z",
        "closed_at": if id.is_multiple_of(3) { serde_json::json!("2024-05-03T09:10:11Z") } else { serde_json::Value::Null },
        "author_association": "CONTRIBUTOR",
        "user": {"login": format!("user{}", id % 97), "id": id % 97, "site_admin": false, "kind": "User"},
        "labels": ["bug", "needs-triage"],
        "body": "Steps to reproduce: start a crawl, kill the process, resume from the checkpoint. Expected the remaining items; got them.",
        "url": format!("https://api.example.test/repos/o/r/issues/{id}"),
        "html_url": format!("https://example.test/o/r/issues/{id}"),
    })
}

/// What a hand-written loop deserializes each page into.
#[derive(Deserialize)]
struct Envelope<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

/// Cursor pages `{"data": [..], "next_cursor": "N" | null}`, built once;
/// page `N` is served for `?cursor=N`, page 0 without a query.
pub(crate) fn pages(item: fn(usize) -> serde_json::Value) -> Arc<Vec<Bytes>> {
    let pages = (0..PAGES)
        .map(|p| {
            let data: Vec<_> = (p * PER_PAGE..(p + 1) * PER_PAGE).map(item).collect();
            let next = (p + 1 < PAGES).then(|| (p + 1).to_string());
            let page = serde_json::json!({"data": data, "next_cursor": next});
            Bytes::from(serde_json::to_vec(&page).unwrap())
        })
        .collect();
    Arc::new(pages)
}

/// The page a request for `uri` gets: `?cursor=N` is page `N`, no query
/// page 0.
pub(crate) fn page_of(uri: &Uri) -> usize {
    uri.query()
        .and_then(|q| q.strip_prefix("cursor="))
        .map_or(0, |c| c.parse::<usize>().unwrap())
}

/// Serves page `cursor` (absent: 0) from memory.
fn in_memory(pages: Arc<Vec<Bytes>>) -> impl Transport<Empty<Bytes>, Body = Full<Bytes>> {
    transport_fn(move |req: Request<Empty<Bytes>>| {
        let body = pages[page_of(req.uri())].clone();
        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
    })
}

/// A crawl of [`pages`]: the transport serving them, a cursor paginator
/// over it, where it starts and how many items it yields.
pub(crate) struct Crawl<Tr> {
    pub(crate) transport: Tr,
    pub(crate) paginator: Paginator<Tr, Cursor>,
    pub(crate) base: String,
    pub(crate) start: Uri,
    pub(crate) total: u64,
}

impl<Tr: Transport<Empty<Bytes>> + Clone> Crawl<Tr> {
    /// The crawl of [`pages`] served by `transport` at `base` (a URI without
    /// a query).
    pub(crate) fn new(transport: Tr, base: &str) -> Self {
        let paginator = Paginator::builder(transport.clone(), Cursor::body("/next_cursor"))
            .items_at("/data")
            .build()
            .unwrap();
        Self {
            transport,
            paginator,
            base: base.to_owned(),
            start: base.parse().unwrap(),
            total: (PAGES * PER_PAGE) as u64,
        }
    }
}

/// The in-memory crawl of [`pages`] of `item`.
pub(crate) fn crawl(
    item: fn(usize) -> serde_json::Value,
) -> Crawl<impl Transport<Empty<Bytes>, Body = Full<Bytes>>> {
    Crawl::new(in_memory(pages(item)), BASE)
}

/// One way to crawl the fixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contender {
    /// [`hand_written`].
    Hand,
    /// The paginator's `items()`.
    Items,
    /// The paginator's `pages()`.
    Pages,
}

impl Contender {
    /// The reference first.
    pub(crate) const ALL: [Self; 3] = [Self::Hand, Self::Items, Self::Pages];

    /// Its name on the callgrind probe's command line.
    pub(crate) const fn mode(self) -> &'static str {
        match self {
            Self::Hand => "hand",
            Self::Items => "items",
            Self::Pages => "pages",
        }
    }
}

impl<Tr> Crawl<Tr>
where
    Tr: Transport<Empty<Bytes>>,
    Tr::Error: Debug,
    Tr::Body: Body<Data = Bytes> + Send + 'static,
    <Tr::Body as Body>::Error: Debug + Into<Box<dyn StdError + Send + Sync>>,
{
    /// Crawls every page once the way `how` does; checks that every item
    /// came through.
    pub(crate) async fn run<T: DeserializeOwned + Send + 'static>(&self, how: Contender) {
        let count = match how {
            Contender::Hand => hand_written::<T, _>(&self.transport, &self.base).await,
            Contender::Items => {
                count_items(self.paginator.start(self.start.clone()).items::<T>()).await
            }
            Contender::Pages => {
                count_page_items(self.paginator.start(self.start.clone()).pages::<T>()).await
            }
        };
        assert_eq!(count, self.total);
    }
}

/// The loop a user writes without a paginator, from `base` (a URI without
/// a query).
pub(crate) async fn hand_written<T, Tr>(transport: &Tr, base: &str) -> u64
where
    T: DeserializeOwned,
    Tr: Transport<Empty<Bytes>>,
    Tr::Error: Debug,
    Tr::Body: Body<Data = Bytes>,
    <Tr::Body as Body>::Error: Debug,
{
    let mut uri: Uri = base.parse().unwrap();
    let mut count = 0;
    loop {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = uri.clone();
        req.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        let res = transport.send(req).await.unwrap();
        assert!(res.status().is_success());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let page: Envelope<T> = serde_json::from_slice(&body).unwrap();
        for item in page.data {
            black_box(&item);
            count += 1;
        }
        match page.next_cursor {
            Some(cursor) => uri = format!("{base}?cursor={cursor}").parse().unwrap(),
            None => return count,
        }
    }
}

/// Drains an `items()` stream; returns the items seen.
pub(crate) async fn count_items<T, E: Debug>(
    mut items: impl Stream<Item = Result<T, E>> + Unpin,
) -> u64 {
    let mut count = 0u64;
    while let Some(item) = items.next().await {
        black_box(&item.unwrap());
        count += 1;
    }
    count
}

/// Drains a `pages()` stream; returns the items seen.
pub(crate) async fn count_page_items<T, E: Debug>(
    mut pages: impl Stream<Item = Result<Page<T>, E>> + Unpin,
) -> u64 {
    let mut count = 0u64;
    while let Some(page) = pages.next().await {
        for item in page.unwrap().into_items() {
            black_box(&item);
            count += 1;
        }
    }
    count
}
