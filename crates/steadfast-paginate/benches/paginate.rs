//! Paginator benchmarks.
//!
//! - `paginate/overhead_{tiny,issue}_items`: the paginator (`items()` and
//!   `pages()`) against the loop a user would write by hand (typed envelope,
//!   `serde_json::from_slice`, next cursor into the URI), over the same
//!   in-process transport serving 100 pre-built pages of 100 items, so the
//!   difference is the paginator's own cost. Tiny items (~30 bytes of JSON)
//!   are the worst case; issue-sized items (~600 bytes) are typical.
//! - `paginate/prefetch_20ms`: 40 pages from the loopback FaultServer with
//!   20 ms latency per page, `prefetch(1)` against `prefetch(4)`.
//!
//! `cargo bench -p steadfast-paginate --bench paginate`

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use futures_util::StreamExt as _;
use http::header::ACCEPT;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use steadfast_core::{Transport, transport_fn};
use steadfast_paginate::{Cursor, OffsetLimit, PageNumber, Paginator};
use steadfast_testkit::FaultServer;

const PAGES: usize = 100;
const PER_PAGE: usize = 100;
const BASE: &str = "http://api.test/items";

/// The FaultServer's item: about 30 bytes of JSON, the worst case for
/// per-item overhead.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Tiny {
    id: u64,
    name: String,
}

/// An item the size of a real API's (a trimmed GitHub issue, ~600 bytes).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Issue {
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

fn tiny(id: usize) -> serde_json::Value {
    serde_json::json!({"id": id, "name": format!("item-{id}")})
}

fn issue(id: usize) -> serde_json::Value {
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

/// Cursor pages `{"data": [..], "next_cursor": "N" | null}`, built once.
fn pages(item: fn(usize) -> serde_json::Value) -> Arc<Vec<Bytes>> {
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

/// Serves page `cursor` (absent: 0) from memory.
fn in_memory(pages: Arc<Vec<Bytes>>) -> impl Transport<Empty<Bytes>, Body = Full<Bytes>> {
    transport_fn(move |req: Request<Empty<Bytes>>| {
        let page = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("cursor="))
            .map_or(0, |c| c.parse::<usize>().unwrap());
        let body = pages[page].clone();
        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
    })
}

/// The loop a user writes without a paginator.
async fn hand_written<T: DeserializeOwned>(
    transport: &impl Transport<Empty<Bytes>, Body = Full<Bytes>>,
) -> u64 {
    let mut uri: Uri = BASE.parse().unwrap();
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
            Some(cursor) => uri = format!("{BASE}?cursor={cursor}").parse().unwrap(),
            None => return count,
        }
    }
}

fn overhead_for<T: DeserializeOwned + Send + 'static>(
    c: &mut Criterion,
    name: &str,
    item: fn(usize) -> serde_json::Value,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let transport = in_memory(pages(item));
    let paginator = Paginator::builder(transport.clone(), Cursor::body("/next_cursor"))
        .items_at("/data")
        .build()
        .unwrap();
    let start: Uri = BASE.parse().unwrap();
    let total = (PAGES * PER_PAGE) as u64;

    let mut group = c.benchmark_group(format!("paginate/overhead_{name}"));
    group.throughput(Throughput::Elements(total));
    group.bench_function("hand_written_loop", |b| {
        b.to_async(&rt)
            .iter(|| async { assert_eq!(hand_written::<T>(&transport).await, total) });
    });
    group.bench_function("paginator_items", |b| {
        b.to_async(&rt).iter(|| async {
            let mut items = paginator.start(start.clone()).items::<T>();
            let mut count = 0u64;
            while let Some(item) = items.next().await {
                black_box(&item.unwrap());
                count += 1;
            }
            assert_eq!(count, total);
        });
    });
    group.bench_function("paginator_pages", |b| {
        b.to_async(&rt).iter(|| async {
            let mut pages = paginator.start(start.clone()).pages::<T>();
            let mut count = 0u64;
            while let Some(page) = pages.next().await {
                for item in page.unwrap().into_items() {
                    black_box(&item);
                    count += 1;
                }
            }
            assert_eq!(count, total);
        });
    });
    group.finish();
}

fn overhead(c: &mut Criterion) {
    overhead_for::<Tiny>(c, "tiny_items", tiny);
    overhead_for::<Issue>(c, "issue_items", issue);
}

/// hyper-util's pooled client, the plainest real transport.
#[derive(Clone, Debug)]
struct Client(HyperClient<HttpConnector, Empty<Bytes>>);

impl Transport<Empty<Bytes>> for Client {
    type Body = hyper::body::Incoming;
    type Error = hyper_util::client::legacy::Error;

    async fn send(&self, req: Request<Empty<Bytes>>) -> Result<Response<Self::Body>, Self::Error> {
        self.0.request(req).await
    }
}

fn prefetch(c: &mut Criterion) {
    const TOTAL: u64 = 1000;
    const SIZE: u64 = 25;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(FaultServer::start());
    let client = Client(HyperClient::builder(TokioExecutor::new()).build_http());

    let mut group = c.benchmark_group("paginate/prefetch_20ms");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(TOTAL));
    for (style, name) in [("page", "page_number"), ("offset", "offset_limit")] {
        let start: Uri = server
            .url(&format!(
                "/items?style={style}&per_page={SIZE}&total={TOTAL}&latency_ms=20"
            ))
            .parse()
            .unwrap();
        for k in [1, 4] {
            group.bench_with_input(BenchmarkId::new(name, format!("k{k}")), &k, |b, &k| {
                b.to_async(&rt).iter(|| async {
                    let count = if style == "page" {
                        let strategy = PageNumber::new().total_pages_at("/total_pages");
                        let p = Paginator::builder(client.clone(), strategy)
                            .items_at("/data")
                            .prefetch(k)
                            .build()
                            .unwrap();
                        p.start(start.clone()).items::<Tiny>().count().await
                    } else {
                        let strategy = OffsetLimit::new().limit(SIZE).total_at("/total");
                        let p = Paginator::builder(client.clone(), strategy)
                            .items_at("/data")
                            .prefetch(k)
                            .build()
                            .unwrap();
                        p.start(start.clone()).items::<Tiny>().count().await
                    };
                    assert_eq!(count as u64, TOTAL);
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, overhead, prefetch);
criterion_main!(benches);
