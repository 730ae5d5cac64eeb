//! A deterministic cost probe for the paginator's own overhead: `N` crawls
//! of 100 in-memory cursor pages of 100 items, through the paginator
//! (`items` or `pages`) or through the loop a user would write by hand
//! (`hand`), on one current-thread runtime. The pages are the ones of
//! `benches/paginate.rs` (`tiny` items of ~30 bytes, `issue` items of ~600).
//!
//! Meant to run under callgrind, twice per mode (`N` and `2N`), so that the
//! difference of the totals divided by `N` is the cost of one crawl with the
//! start-up cost cancelled out:
//!
//! ```text
//! cargo build --release -p steadfast-paginate --example paginate_callgrind
//! for m in hand items pages; do for n in 2 4; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$m.$n \
//!     target/release/examples/paginate_callgrind $m tiny $n
//! done; done
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::ACCEPT;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt as _, Empty, Full};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use steadfast_core::{Transport, transport_fn};
use steadfast_paginate::{Cursor, Paginator};

const PAGES: usize = 100;
const PER_PAGE: usize = 100;
const BASE: &str = "http://api.test/items";

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Tiny {
    id: u64,
    name: String,
}

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

#[derive(Deserialize)]
struct Envelope<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

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

async fn run<T: DeserializeOwned + Send + 'static>(
    mode: &str,
    item: fn(usize) -> serde_json::Value,
    n: usize,
) {
    let transport = in_memory(pages(item));
    let paginator = Paginator::builder(transport.clone(), Cursor::body("/next_cursor"))
        .items_at("/data")
        .build()
        .unwrap();
    let start: Uri = BASE.parse().unwrap();
    let total = (PAGES * PER_PAGE) as u64;
    for _ in 0..n {
        let count = match mode {
            "hand" => hand_written::<T>(&transport).await,
            "items" => {
                let mut items = paginator.start(start.clone()).items::<T>();
                let mut count = 0u64;
                while let Some(item) = items.next().await {
                    black_box(&item.unwrap());
                    count += 1;
                }
                count
            }
            "pages" => {
                let mut pages = paginator.start(start.clone()).pages::<T>();
                let mut count = 0u64;
                while let Some(page) = pages.next().await {
                    for item in page.unwrap().into_items() {
                        black_box(&item);
                        count += 1;
                    }
                }
                count
            }
            other => panic!("unknown mode {other:?}: use hand, items or pages"),
        };
        assert_eq!(count, total);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("items", String::as_str);
    let size = args.get(2).map_or("tiny", String::as_str);
    let n: usize = args.get(3).map_or(1, |n| n.parse().expect("a crawl count"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    match size {
        "tiny" => rt.block_on(run::<Tiny>(mode, tiny, n)),
        "issue" => rt.block_on(run::<Issue>(mode, issue, n)),
        other => panic!("unknown item size {other:?}: use tiny or issue"),
    }
}
