//! Regression tests, one per reported defect: each failed before its fix.
//! Scripted transport, paused time.

mod common;

use std::time::Duration;

use futures_util::StreamExt as _;
use http::HeaderValue;
use http::header::{AUTHORIZATION, COOKIE};
use serde_json::{Value, json};
use steadfast_paginate::{
    Cursor, ErrorKind, HasMore, LinkHeader, MAX_REDIRECTS, OffsetLimit, PageNumber, PaginateError,
    Paginator,
};
use steadfast_testkit::{MockTransport, Reply, Route};
use tokio::time::Instant;

use common::scripted::{ids, page, uri};

fn queries(mock: &MockTransport) -> Vec<String> {
    mock.calls()
        .iter()
        .map(|c| c.uri.query().unwrap_or("").to_owned())
        .collect()
}

/// `?page=N[&per_page=P]` over 25 items, pages capped at 10 whatever is
/// asked for; pages past the end answer 404, as many APIs do.
fn capped_page_api(mock: &MockTransport) {
    mock.on(Route::get("/items")).reply(Reply::with(|call| {
        let page: u64 = call.query("page").unwrap().parse().unwrap();
        let per_page = call
            .query("per_page")
            .map_or(10, |p| p.parse::<u64>().unwrap().min(10));
        let start = (page - 1) * per_page;
        if start >= 25 {
            return Reply::status(404);
        }
        Reply::json(200, json!({"data": page_of(start, per_page), "total": 25}))
    }));
}

fn page_of(start: u64, len: u64) -> Value {
    page(start..(start + len).min(25))
}

// Finding 1: the page size behind `total_at` was guessed from the size asked
// for (silent data loss when the server caps it) or from a short last page
// (requests past the end, a 404 failing a complete crawl).
#[tokio::test(start_paused = true)]
async fn page_numbers_with_a_total_count_neither_lose_items_nor_overshoot() {
    // Asked for 20 a page, served 10: all 25 items, in 3 requests.
    let mock = MockTransport::new();
    capped_page_api(&mock);
    let paginator = Paginator::builder(
        mock.clone(),
        PageNumber::new()
            .total_at("/total")
            .per_page("per_page", 20),
    )
    .items_at("/data")
    .build()
    .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, (0..25).collect::<Vec<_>>());
    mock.assert_called(3);

    // No size given: the short page 3 is the last, page 4 (a 404) is never
    // requested, with or without prefetch.
    for k in [1, 4] {
        let mock = MockTransport::new();
        capped_page_api(&mock);
        let paginator = Paginator::builder(mock.clone(), PageNumber::new().total_at("/total"))
            .items_at("/data")
            .prefetch(k)
            .build()
            .unwrap();
        let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
        assert!(err.is_none(), "prefetch({k}): {err:?}");
        assert_eq!(got, (0..25).collect::<Vec<_>>(), "prefetch({k})");
        assert_eq!(
            queries(&mock),
            ["page=1", "page=2", "page=3"],
            "prefetch({k})"
        );
    }
}

/// `?page=N` over pages whose sizes are `sizes` (filtered after slicing, as
/// permission-checking APIs do), with `total` in the body when given, and
/// empty pages past the end.
fn uneven_page_api(mock: &MockTransport, sizes: &'static [u64], total: Option<u64>) {
    mock.on(Route::get("/items"))
        .reply(Reply::with(move |call| {
            let number: usize = call.query("page").unwrap().parse().unwrap();
            let start: u64 = sizes.iter().take(number - 1).sum();
            let len = sizes.get(number - 1).copied().unwrap_or(0);
            let mut body = json!({"data": page(start..start + len)});
            if let Some(total) = total {
                body["total"] = json!(total);
            }
            Reply::json(200, body)
        }));
}

// Finding 1 (continued): a page shorter than the ones before it, or than
// the size asked for, is no proof of the end; only the total or an empty
// page is.
#[tokio::test(start_paused = true)]
async fn short_pages_in_the_middle_of_a_crawl_lose_no_items() {
    const SIZES: &[u64] = &[10, 7, 10, 3];
    for (total, requests) in [(Some(30), 4), (None, 5)] {
        for k in [1, 4] {
            let mock = MockTransport::new();
            uneven_page_api(&mock, SIZES, total);
            let mut strategy = PageNumber::new().per_page("per_page", 10);
            if total.is_some() {
                strategy = strategy.total_at("/total");
            }
            let paginator = Paginator::builder(mock.clone(), strategy)
                .items_at("/data")
                .prefetch(k)
                .build()
                .unwrap();
            let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
            let case = format!("total {total:?}, prefetch({k})");
            assert!(err.is_none(), "{case}: {err:?}");
            assert_eq!(got, (0..30).collect::<Vec<_>>(), "{case}");
            // With the total, the 30th item ends the crawl; without, the
            // empty page 5 does.
            mock.assert_called(requests);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_page_number_crawl_resumed_on_its_short_last_page_ends_there() {
    let mock = MockTransport::new();
    capped_page_api(&mock);
    let paginator = Paginator::builder(mock.clone(), PageNumber::new().total_at("/total"))
        .items_at("/data")
        .build()
        .unwrap();
    let mut items = paginator
        .start(uri("http://api.test/items"))
        .items::<Value>();
    for _ in 0..22 {
        items.next().await.unwrap().unwrap();
    }
    let checkpoint = items.checkpoint();
    drop(items);
    // The learned page size travels in the checkpoint.
    assert_eq!(
        checkpoint.strategy_state(),
        &json!({"items": 20, "page_size": 10})
    );
    mock.clear_calls();
    let (rest, err) = ids(paginator.resume(&checkpoint).unwrap().items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rest, [22, 23, 24]);
    assert_eq!(queries(&mock), ["page=3"]);
}

// Finding 2: prefetched requests were lazy futures, only polled once the
// consumer asked for the next page, so they never overlapped consumption.
#[tokio::test(start_paused = true)]
async fn prefetched_requests_run_while_the_consumer_works() {
    fn offsets_api(mock: &MockTransport) {
        mock.on(Route::get("/items")).reply(Reply::with(|call| {
            let offset: u64 = call.query("offset").unwrap().parse().unwrap();
            Reply::json(200, json!({"data": page(offset..offset + 10), "total": 50}))
                .delay(Duration::from_millis(10))
        }));
    }
    // When each request was sent, in ms from the start, and its offset.
    fn sends(mock: &MockTransport, t0: Instant) -> Vec<(u128, String)> {
        mock.calls()
            .iter()
            .map(|c| {
                (
                    (c.at - t0).as_millis(),
                    c.query("offset").unwrap_or_default(),
                )
            })
            .collect()
    }
    let sent = |pairs: &[(u128, &str)]| -> Vec<(u128, String)> {
        pairs.iter().map(|&(t, o)| (t, o.to_owned())).collect()
    };

    for k in [4, 1] {
        let mock = MockTransport::new();
        offsets_api(&mock);
        let paginator = Paginator::builder(
            mock.clone(),
            OffsetLimit::new().limit(10).total_at("/total"),
        )
        .items_at("/data")
        .prefetch(k)
        .build()
        .unwrap();
        let t0 = Instant::now();
        let mut pages = paginator
            .start(uri("http://api.test/items"))
            .pages::<Value>();
        let mut got = 0;
        while let Some(page) = pages.next().await {
            got += page.unwrap().items().len();
            // The consumer works on each page for 100 ms.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got, 50);
        if k == 4 {
            // Page 1 answers at 10 ms; pages 2-4 are sent at once, while
            // page 1 is processed; page 5 takes the slot page 1 frees.
            assert_eq!(
                sends(&mock, t0),
                sent(&[(0, "0"), (10, "10"), (10, "20"), (10, "30"), (110, "40")])
            );
        } else {
            // prefetch(1) is a hand-written loop: nothing runs ahead.
            assert_eq!(
                sends(&mock, t0),
                sent(&[(0, "0"), (110, "10"), (220, "20"), (330, "30"), (440, "40")])
            );
        }
    }
}

// Finding 2 (continued): with `prefetch(k)`, `k` requests are in flight at
// once, whatever order they complete in, and pages are yielded in order.
#[tokio::test(start_paused = true)]
async fn prefetch_keeps_k_requests_in_flight_and_yields_in_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http::Request;
    use http_body_util::Empty;
    use steadfast_core::{Transport as _, transport_fn};

    for k in [1, 2, 4] {
        let mock = MockTransport::new();
        // Later pages answer sooner: the order must come from the crawl.
        mock.on(Route::get("/items")).reply(Reply::with(|call| {
            let p: u64 = call.query("page").unwrap().parse().unwrap();
            Reply::json(
                200,
                json!({"data": page(p * 10..p * 10 + 2), "total_pages": 8}),
            )
            .delay(Duration::from_millis(100 - p * 10))
        }));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let transport = transport_fn({
            let (mock, in_flight, most) = (mock.clone(), in_flight.clone(), most.clone());
            move |req: Request<Empty<Bytes>>| {
                let (mock, in_flight, most) = (mock.clone(), in_flight.clone(), most.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let res = mock.send(req).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    res
                }
            }
        });
        let paginator =
            Paginator::builder(transport, PageNumber::new().total_pages_at("/total_pages"))
                .items_at("/data")
                .prefetch(k)
                .build()
                .unwrap();
        let mut pages = paginator
            .start(uri("http://api.test/items"))
            .pages::<Value>();
        let mut got = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            got.extend(page.items().iter().map(|v| v["id"].as_u64().unwrap()));
            // A fast consumer: it always waits on the next page, with all
            // `k` requests in flight (`k - 1` run ahead while it consumes,
            // see `prefetched_requests_run_while_the_consumer_works`).
        }
        let expected: Vec<u64> = (1..=8).flat_map(|p| [p * 10, p * 10 + 1]).collect();
        assert_eq!(got, expected, "prefetch({k})");
        assert_eq!(most.load(Ordering::SeqCst), k, "prefetch({k})");
        mock.assert_called(8);
    }
}

// Finding 3: after TooManyPages the checkpoint pointed back at the last
// page, all its items skipped, so a resume fetched it again, yielded
// nothing and failed again.
#[tokio::test(start_paused = true)]
async fn a_crawl_stopped_by_max_pages_resumes_past_the_limit() {
    let mock = MockTransport::new();
    mock.on(Route::get("/items")).reply(Reply::with(|call| {
        let p: u64 = call.query("page").unwrap().parse().unwrap();
        Reply::json(
            200,
            json!({"data": page(p * 10..p * 10 + 3), "total_pages": 5}),
        )
    }));
    let strategy = PageNumber::new().total_pages_at("/total_pages");
    let limited = Paginator::builder(mock.clone(), strategy.clone())
        .items_at("/data")
        .max_pages(3)
        .build()
        .unwrap();
    let mut items = limited.start(uri("http://api.test/items")).items::<Value>();
    let mut got = Vec::new();
    let err = loop {
        match items.next().await.unwrap() {
            Ok(v) => got.push(v["id"].as_u64().unwrap()),
            Err(e) => break e,
        }
    };
    assert_eq!(got, [10, 11, 12, 20, 21, 22, 30, 31, 32]);
    assert!(
        matches!(err.kind(), ErrorKind::TooManyPages { limit: 3 }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("resume from the checkpoint with a higher max_pages"),
        "{err}"
    );
    let checkpoint = items.checkpoint();
    assert_eq!(checkpoint.next(), Some("http://api.test/items?page=4"));
    assert_eq!(
        (checkpoint.pages(), checkpoint.skip(), checkpoint.items()),
        (3, 0, 9)
    );
    mock.assert_called(3);

    // The same limit: a clear error, without a request.
    let (rest, err) = ids(limited.resume(&checkpoint).unwrap().items()).await;
    assert!(rest.is_empty());
    assert!(matches!(
        err.unwrap().kind(),
        ErrorKind::TooManyPages { .. }
    ));
    mock.assert_called(3);

    // A higher limit: the rest, page 3 not fetched again.
    let higher = Paginator::builder(mock.clone(), strategy)
        .items_at("/data")
        .max_pages(10)
        .build()
        .unwrap();
    let (rest, err) = ids(higher.resume(&checkpoint).unwrap().items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rest, [40, 41, 42, 50, 51, 52]);
    assert_eq!(
        queries(&mock),
        ["page=1", "page=2", "page=3", "page=4", "page=5"]
    );
}

// Finding 4: a `next` link anchored on another resource (RFC 8288 §3.2)
// was followed as if it were the page's.
#[tokio::test(start_paused = true)]
async fn a_link_anchored_elsewhere_is_not_the_next_page() {
    let mock = MockTransport::new();
    mock.on(Route::get("/items"))
        .reply(Reply::json(200, page(10..12)).header(
            "link",
            r#"</other?page=9>; rel="next"; anchor="/other?page=8""#,
        ));
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [10, 11]);
    mock.assert_called(1);
}

// Finding 5: numeric cursors and ids went through f64 and came back as
// `1.8446744073709552e19`.
#[tokio::test(start_paused = true)]
async fn large_numeric_cursors_and_ids_are_sent_back_verbatim() {
    const BIG: &str = "18446744073709551617";
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("cursor", BIG))
        .reply(Reply::json(200, json!({"data": page(1..2), "next": null})));
    mock.on(Route::get("/items")).reply(Reply::bytes(
        200,
        format!(r#"{{"data": [{{"id": 0}}], "next": {BIG}}}"#),
    ));
    let paginator = Paginator::builder(mock.clone(), Cursor::body("/next"))
        .items_at("/data")
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 1]);
    assert_eq!(queries(&mock)[1], format!("cursor={BIG}"));

    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("starting_after", BIG))
        .reply(Reply::json(
            200,
            json!({"data": [{"id": 7}], "has_more": false}),
        ));
    mock.on(Route::get("/items")).reply(Reply::bytes(
        200,
        format!(r#"{{"data": [{{"id": 1}}, {{"id": {BIG}}}], "has_more": true}}"#),
    ));
    let paginator = Paginator::builder(mock.clone(), HasMore::new())
        .items_at("/data")
        .build()
        .unwrap();
    let items: Vec<Value> = paginator
        .start(uri("http://api.test/items"))
        .items()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items.len(), 3);
    assert_eq!(queries(&mock)[1], format!("starting_after={BIG}"));
}

// Finding 6: a byte above 0x7F in a quoted Link parameter (legal obs-text)
// failed the whole crawl.
#[tokio::test(start_paused = true)]
async fn obs_text_in_a_link_parameter_does_not_fail_the_crawl() {
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("page", "2"))
        .reply(Reply::json(200, page(2..4)));
    mock.on(Route::get("/items"))
        .reply(Reply::json(200, page(0..2)).header(
            "link",
            HeaderValue::from_bytes(b"</items?page=2>; rel=\"next\"; title=\"caf\xe9\"").unwrap(),
        ));
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 1, 2, 3]);
}

// Finding 7: a server that ignores `?page` returned the same page forever,
// and with no default `max_pages` the stream never ended.
#[tokio::test(start_paused = true)]
async fn a_server_ignoring_the_page_parameter_is_a_loop_not_an_endless_stream() {
    let mock = MockTransport::new();
    mock.on(Route::get("/items"))
        .reply(Reply::json(200, page(0..10)));
    let paginator = Paginator::builder(mock.clone(), PageNumber::new())
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert_eq!(
        got,
        (0..10).collect::<Vec<_>>(),
        "page 1 once, no duplicate"
    );
    let err = err.expect("a loop error");
    assert!(err.is_loop(), "{err}");
    match err.kind() {
        ErrorKind::RepeatedPage { previous } => {
            assert_eq!(previous, "http://api.test/items?page=1");
        }
        other => panic!("expected RepeatedPage, got {other:?}"),
    }
    assert_eq!(err.page(), Some(2));
    assert!(
        err.to_string()
            .contains("the server returned the same page again"),
        "{err}"
    );
    mock.assert_called(2);
    assert_eq!(
        paginator.config().max_pages(),
        steadfast_paginate::DEFAULT_MAX_PAGES
    );
}

/// Every answer has a new cursor and echoes the request, but from the
/// third page on the items cycle: A, B, C, B, C, ...
fn cycling_pages() -> MockTransport {
    let mock = MockTransport::new();
    mock.on(Route::get("/items")).reply(Reply::with(|call| {
        let n: u64 = call.query("cursor").map_or(0, |c| c.parse().unwrap());
        let items = match n {
            0 => page(0..3),
            n if n % 2 == 1 => page(3..6),
            _ => page(6..9),
        };
        Reply::json(
            200,
            json!({"request": n, "data": items, "next": (n + 1).to_string()}),
        )
    }));
    mock
}

// The default, sampled repeat check: a page repeating an older one (not the
// one right before it) is hashed in full, and the cycle is caught the
// second time round, never later.
#[tokio::test(start_paused = true)]
async fn a_cycle_of_pages_is_caught_the_second_time_round_by_default() {
    let mock = cycling_pages();
    let paginator = Paginator::builder(mock.clone(), Cursor::body("/next"))
        .items_at("/data")
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    let once: Vec<u64> = (0..9).collect();
    assert_eq!(got[..9], once, "each item once, then the cycle once more");
    assert_eq!(got[9..], [3, 4, 5, 6, 7, 8]);
    let err = err.expect("a repeated page");
    assert!(err.is_loop(), "{err}");
    match err.kind() {
        ErrorKind::RepeatedPage { previous } => {
            assert_eq!(previous, "http://api.test/items?cursor=3");
        }
        other => panic!("expected RepeatedPage, got {other:?}"),
    }
    assert_eq!(err.page(), Some(6));
    mock.assert_called(6);
}

// Finding 7 (continued): a repeat is recognised by the page's items, not
// its URI or whole body, and (with `full_repeat_check`) not only right
// after the first showing.
#[tokio::test(start_paused = true)]
async fn the_same_items_under_fresh_cursors_are_a_repeat() {
    let mock = cycling_pages();
    let paginator = Paginator::builder(mock.clone(), Cursor::body("/next"))
        .items_at("/data")
        .full_repeat_check(true)
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert_eq!(got, (0..9).collect::<Vec<_>>(), "each item once");
    let err = err.expect("a repeated page");
    assert!(err.is_loop(), "{err}");
    match err.kind() {
        ErrorKind::RepeatedPage { previous } => {
            assert_eq!(previous, "http://api.test/items?cursor=1");
        }
        other => panic!("expected RepeatedPage, got {other:?}"),
    }
    assert_eq!(err.page(), Some(4));
    mock.assert_called(4);

    // Items under a nested pointer: the whole body is compared.
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("page", "3"))
        .reply(Reply::json(200, json!({"a": {"items": page(10..12)}})));
    mock.on(Route::get("/items")).reply(Reply::with(|call| {
        let n: u64 = call.query("page").unwrap().parse().unwrap();
        Reply::json(200, json!({"a": {"items": page(n * 10..n * 10 + 2)}}))
    }));
    let paginator = Paginator::builder(mock.clone(), PageNumber::new())
        .items_at("/a/items")
        .full_repeat_check(true)
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert_eq!(got, [10, 11, 20, 21]);
    assert!(
        matches!(err.as_ref().map(PaginateError::kind), Some(ErrorKind::RepeatedPage { previous }) if previous == "http://api.test/items?page=1"),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn identical_empty_pages_are_not_a_repeat() {
    // Empty pages while a filter skips ahead, each with its own next link.
    let mock = MockTransport::new();
    mock.on(Route::get("/items")).reply(Reply::with(|call| {
        let p: u64 = call.query("page").map_or(1, |p| p.parse().unwrap());
        let reply = Reply::json(200, if p == 4 { page(0..2) } else { page(0..0) });
        if p < 4 {
            reply.header("link", format!("</items?page={}>; rel=next", p + 1))
        } else {
            reply
        }
    }));
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 1]);
    mock.assert_called(4);
}

// Finding 8: redirects ended the crawl with a Status error.
#[tokio::test(start_paused = true)]
async fn same_origin_redirects_are_followed() {
    let mock = MockTransport::new();
    mock.on(Route::get("/v1/items")).reply(Reply::with(|call| {
        let target = format!("/v2/items?{}", call.uri.query().unwrap_or(""));
        Reply::status(301).header("location", target)
    }));
    mock.on(Route::get("/v2/items").query("page", "2"))
        .reply(Reply::json(200, page(2..3)));
    mock.on(Route::get("/v2/items")).reply(
        // A relative next link resolves against where the page came from.
        Reply::json(200, page(0..2)).header("link", "<items?page=2>; rel=next"),
    );
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .header(AUTHORIZATION, HeaderValue::from_static("Bearer t"))
        .build()
        .unwrap();
    let mut pages = paginator
        .start(uri("http://api.test/v1/items?page=1"))
        .pages::<Value>();
    let first = pages.next().await.unwrap().unwrap();
    assert_eq!(first.uri(), "http://api.test/v2/items?page=1");
    let second = pages.next().await.unwrap().unwrap();
    assert_eq!(second.items(), [json!({"id": 2})]);
    assert!(pages.next().await.is_none());
    let paths: Vec<_> = mock.calls().iter().map(|c| c.uri.to_string()).collect();
    assert_eq!(
        paths,
        [
            "http://api.test/v1/items?page=1",
            "http://api.test/v2/items?page=1",
            "http://api.test/v2/items?page=2",
        ]
    );
    for call in mock.calls() {
        assert_eq!(call.header("authorization"), Some("Bearer t"));
    }
}

#[tokio::test(start_paused = true)]
async fn cross_origin_redirects_are_refused_or_followed_without_credentials() {
    let script = |mock: &MockTransport| {
        mock.on(Route::get("/items").host("api.test"))
            .reply(Reply::status(302).header("location", "http://cdn.test/items?page=1"));
        mock.on(Route::get("/items").host("cdn.test"))
            .reply(Reply::json(200, page(0..2)));
    };
    let mock = MockTransport::new();
    script(&mock);
    let refusing = Paginator::builder(mock.clone(), LinkHeader::new())
        .build()
        .unwrap();
    let (got, err) = ids(refusing.start(uri("http://api.test/items")).items()).await;
    assert!(got.is_empty());
    let err = err.unwrap();
    assert!(err.is_cross_origin(), "{err}");
    mock.assert_called(1);

    let mock = MockTransport::new();
    script(&mock);
    let allowing = Paginator::builder(mock.clone(), LinkHeader::new())
        .allow_cross_origin(true)
        .header(AUTHORIZATION, HeaderValue::from_static("Bearer t"))
        .header(COOKIE, HeaderValue::from_static("s=1"))
        .build()
        .unwrap();
    let (got, err) = ids(allowing.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 1]);
    let calls = mock.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].header("authorization"), Some("Bearer t"));
    assert_eq!(calls[1].uri.host(), Some("cdn.test"));
    assert_eq!(calls[1].header("authorization"), None);
    assert_eq!(calls[1].header("cookie"), None);

    // A chain that leaves the origin and comes back: the hop back is
    // another origin's say, so credentials (and sensitive headers) stay
    // home for the rest of it.
    let mock = MockTransport::new();
    mock.on(Route::get("/start").host("api.test"))
        .reply(Reply::status(307).header("location", "http://cdn.test/bounce"));
    mock.on(Route::get("/bounce").host("cdn.test"))
        .reply(Reply::status(307).header("location", "http://api.test/items"));
    mock.on(Route::get("/items").host("api.test"))
        .reply(Reply::json(200, page(0..1)));
    let mut key = HeaderValue::from_static("k");
    key.set_sensitive(true);
    let allowing = Paginator::builder(mock.clone(), LinkHeader::new())
        .allow_cross_origin(true)
        .header(AUTHORIZATION, HeaderValue::from_static("Bearer t"))
        .header(http::HeaderName::from_static("x-api-key"), key)
        .build()
        .unwrap();
    let (got, err) = ids(allowing.start(uri("http://api.test/start")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0]);
    let sent: Vec<_> = mock
        .calls()
        .iter()
        .map(|c| {
            (
                c.uri.to_string(),
                c.header("authorization").is_some(),
                c.header("x-api-key").is_some(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("http://api.test/start".to_owned(), true, true),
            ("http://cdn.test/bounce".to_owned(), false, false),
            ("http://api.test/items".to_owned(), false, false),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn redirect_loops_and_unusable_redirects_are_typed_errors() {
    let mock = MockTransport::new();
    mock.on(Route::get("/a"))
        .reply(Reply::status(307).header("location", "/b"));
    mock.on(Route::get("/b"))
        .reply(Reply::status(308).header("location", "/a"));
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .build()
        .unwrap();
    let (_, err) = ids(paginator.start(uri("http://api.test/a")).items()).await;
    let err = err.unwrap();
    assert!(
        matches!(err.kind(), ErrorKind::TooManyRedirects { limit } if *limit == MAX_REDIRECTS),
        "{err:?}"
    );
    mock.assert_called(MAX_REDIRECTS as usize + 1);

    for reply in [
        Reply::status(301),
        Reply::status(302).header("location", "ftp://api.test/x"),
    ] {
        let mock = MockTransport::new();
        mock.on(Route::any()).reply(reply);
        let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
            .build()
            .unwrap();
        let (_, err) = ids(paginator.start(uri("http://api.test/a")).items()).await;
        let err = err.unwrap();
        assert!(err.status().unwrap().is_redirection(), "{err:?}");
        assert!(err.to_string().contains("without a Location"), "{err}");
        mock.assert_called(1);
    }
}

/// `?page=N` or `?offset=O` over 50 items, 10 a page, with `total` and
/// `total_pages` in the body; past the end, 404 (as many APIs do).
fn fifty_item_api(mock: &MockTransport) {
    mock.on(Route::get("/items")).reply(Reply::with(|call| {
        let start = match call.query("offset") {
            Some(offset) => offset.parse().unwrap(),
            None => (call.query("page").unwrap().parse::<u64>().unwrap() - 1) * 10,
        };
        if start >= 50 {
            return Reply::status(404);
        }
        Reply::json(
            200,
            json!({"data": page(start..(start + 10).min(50)), "total": 50, "total_pages": 5, "per_page": 10}),
        )
    }));
}

// Review 2, finding 1: a crawl with a total count started on a later page
// (`?page=3`) counted from 0, so the total was never reached and it asked
// for page 6 (a 404 failing a complete crawl), more with prefetch.
#[tokio::test(start_paused = true)]
async fn a_crawl_started_mid_collection_ends_at_the_total() {
    let strategies = [
        ("total", PageNumber::new().total_at("/total")),
        (
            "total+per_page",
            PageNumber::new()
                .total_at("/total")
                .per_page_at("/per_page"),
        ),
        (
            "total_pages",
            PageNumber::new().total_pages_at("/total_pages"),
        ),
    ];
    for (name, strategy) in strategies {
        for k in [1, 4] {
            let mock = MockTransport::new();
            fifty_item_api(&mock);
            let paginator = Paginator::builder(mock.clone(), strategy.clone())
                .items_at("/data")
                .prefetch(k)
                .build()
                .unwrap();
            let (got, err) =
                ids(paginator.start(uri("http://api.test/items?page=3")).items()).await;
            let case = format!("{name}, prefetch({k})");
            assert!(err.is_none(), "{case}: {err:?}");
            assert_eq!(got, (20..50).collect::<Vec<_>>(), "{case}");
            assert_eq!(queries(&mock), ["page=3", "page=4", "page=5"], "{case}");
        }
    }

    // Offsets are absolute: a start offset needs no estimate.
    for k in [1, 4] {
        let mock = MockTransport::new();
        fifty_item_api(&mock);
        let paginator = Paginator::builder(mock.clone(), OffsetLimit::new().total_at("/total"))
            .items_at("/data")
            .prefetch(k)
            .build()
            .unwrap();
        let (got, err) = ids(paginator
            .start(uri("http://api.test/items?offset=20"))
            .items())
        .await;
        assert!(err.is_none(), "prefetch({k}): {err:?}");
        assert_eq!(got, (20..50).collect::<Vec<_>>(), "prefetch({k})");
        assert_eq!(
            queries(&mock),
            ["offset=20", "offset=30", "offset=40"],
            "prefetch({k})"
        );
    }
}

// Review 2, finding 3: a hostile or corrupt checkpoint (counts at the top
// of their range) overflowed the running counts, a panic in debug builds.
#[tokio::test(start_paused = true)]
async fn a_checkpoint_with_counts_at_their_limits_does_not_overflow() {
    let hostile: steadfast_paginate::Checkpoint = serde_json::from_value(json!({
        "start": "http://api.test/items",
        "next": "http://api.test/items?page=2",
        "skip": 1,
        "pages": u64::MAX - 3,
        "items": u64::MAX,
        "strategy": {"items": u64::MAX, "page_size": u64::MAX},
    }))
    .unwrap();
    for k in [1, 4] {
        let mock = MockTransport::new();
        uneven_page_api(&mock, &[3, 3, 3], Some(9));
        let paginator = Paginator::builder(mock.clone(), PageNumber::new().total_at("/total"))
            .items_at("/data")
            .max_pages(u64::MAX)
            .prefetch(k)
            .build()
            .unwrap();
        let mut items = paginator.resume(&hostile).unwrap().items::<Value>();
        let mut got = Vec::new();
        while let Some(item) = items.next().await {
            got.push(item.unwrap()["id"].as_u64().unwrap());
            let checkpoint = items.checkpoint();
            assert_eq!(checkpoint.items(), u64::MAX, "prefetch({k})");
        }
        assert_eq!(
            got,
            [4, 5],
            "prefetch({k}): the strategy's total is reached"
        );
        let checkpoint = items.checkpoint();
        assert!(checkpoint.is_complete(), "prefetch({k})");
        assert_eq!(checkpoint.pages(), u64::MAX - 2, "prefetch({k})");
    }
}

/// Follows the `next` member of the body as an absolute URI, as written: a
/// strategy that does not go through `uri::resolve`.
#[derive(Clone, Debug)]
struct VerbatimNext;

impl steadfast_paginate::Strategy for VerbatimNext {
    fn next(
        &mut self,
        page: &steadfast_paginate::PageView<'_>,
    ) -> Result<steadfast_paginate::Next, steadfast_paginate::StrategyError> {
        Ok(match page.body()["next"].as_str() {
            Some(next) => steadfast_paginate::Next::Fetch(next.parse().unwrap()),
            None => steadfast_paginate::Next::Done,
        })
    }
}

// Review 2, finding 2: a port beyond 65535 (which `http::Uri` accepts, then
// reports as absent) passed the origin check as the default port, and with
// `allow_cross_origin(true)` credentials went to it.
#[tokio::test(start_paused = true)]
async fn a_port_out_of_range_is_on_another_origin() {
    const HOSTILE: &str = "http://api.test:99999/items?page=2";
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("page", "2"))
        .reply(Reply::json(200, json!({"data": page(2..3)})));
    mock.on(Route::get("/items")).reply(
        Reply::json(200, json!({"data": page(0..2), "next": HOSTILE}))
            .header("link", format!("<{HOSTILE}>; rel=\"next\"")),
    );

    // A Link header target is resolved: a typed error, no request.
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .items_at("/data")
        .allow_cross_origin(true)
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert_eq!(got, [0, 1]);
    let err = err.unwrap();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Strategy(steadfast_paginate::StrategyError::Uri(
                steadfast_paginate::uri::UriError::InvalidPort { .. }
            ))
        ),
        "{err:?}"
    );
    mock.assert_called(1);

    // Any other URI: refused as another origin...
    let strict = Paginator::builder(mock.clone(), VerbatimNext)
        .items_at("/data")
        .build()
        .unwrap();
    let (got, err) = ids(strict.start(uri("http://api.test/items")).items()).await;
    assert_eq!(got, [0, 1]);
    assert!(err.as_ref().unwrap().is_cross_origin(), "{err:?}");

    // ...or, when other origins are allowed, fetched without credentials.
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("page", "2"))
        .reply(Reply::json(200, json!({"data": page(2..3)})));
    mock.on(Route::get("/items")).reply(Reply::json(
        200,
        json!({"data": page(0..2), "next": HOSTILE}),
    ));
    let allowing = Paginator::builder(mock.clone(), VerbatimNext)
        .items_at("/data")
        .allow_cross_origin(true)
        .header(AUTHORIZATION, HeaderValue::from_static("Bearer t"))
        .build()
        .unwrap();
    let (got, err) = ids(allowing.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 1, 2]);
    let calls = mock.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].header("authorization"), Some("Bearer t"));
    assert_eq!(calls[1].uri.port(), None, "{}", calls[1].uri);
    assert_eq!(calls[1].header("authorization"), None);
}

// Review 2, finding 4: a body member that is valid JSON but that
// `serde_json::Value` cannot hold (`1e400`, nesting deeper than 128) read as
// absent, so `"total": 1e400` was ignored and the crawl went on without it.
#[tokio::test(start_paused = true)]
async fn an_unreadable_total_is_a_bad_value_not_an_absent_one() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for total in ["1e400", deep.as_str()] {
        let mock = MockTransport::new();
        mock.on(Route::get("/items")).reply(Reply::bytes(
            200,
            format!(r#"{{"data": [{{"id": 0}}], "total": {total}}}"#),
        ));
        let paginator = Paginator::builder(mock.clone(), PageNumber::new().total_at("/total"))
            .items_at("/data")
            .build()
            .unwrap();
        let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
        assert_eq!(got, [0]);
        let err = err.unwrap();
        let ErrorKind::Strategy(source @ steadfast_paginate::StrategyError::BadValue { .. }) =
            err.kind()
        else {
            panic!("{err:?}");
        };
        assert!(source.to_string().starts_with("body /total is"), "{source}");
        mock.assert_called(1);
    }
}
