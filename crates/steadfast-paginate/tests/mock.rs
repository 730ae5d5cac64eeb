//! Behaviour that needs a scripted transport: origins and credentials,
//! errors on every step of a page, prefetch ordering and speculation,
//! resuming after a failure, custom strategies. Time is paused.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderValue, Request, Response};
use http_body_util::Empty;
use serde_json::{Value, json};
use steadfast_core::Transport;
use steadfast_paginate::strategy::{Next, PageView, Strategy, StrategyError};
use steadfast_paginate::{
    Checkpoint, CheckpointError, Config, ConfigError, Cursor, DEFAULT_PREFETCH, DecodeError,
    ErrorKind, LinkHeader, OffsetLimit, PageNumber, Paginator,
};
use steadfast_testkit::{MockTransport, Reply, Route};
use tokio::time::Instant;

use common::scripted::{Error, ids, page, uri};

#[tokio::test(start_paused = true)]
async fn credentials_are_never_sent_to_another_origin() {
    let mock = MockTransport::new();
    mock.on(Route::get("/items").host("api.test")).reply(
        Reply::json(200, page(0..2)).header("link", "<http://cdn.test/items?page=2>; rel=next"),
    );
    mock.on(Route::get("/items").host("cdn.test"))
        .reply(Reply::json(200, page(2..3)));
    let mut key = HeaderValue::from_static("secret");
    key.set_sensitive(true);
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .allow_cross_origin(true)
        .header(AUTHORIZATION, HeaderValue::from_static("Bearer t"))
        .header(COOKIE, HeaderValue::from_static("session=1"))
        .header("x-api-key".parse().unwrap(), key)
        .header(
            "x-request-source".parse().unwrap(),
            HeaderValue::from_static("tests"),
        )
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 1, 2]);

    let calls = mock.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].header("authorization"), Some("Bearer t"));
    assert_eq!(calls[0].header("cookie"), Some("session=1"));
    assert_eq!(calls[0].header("x-api-key"), Some("secret"));
    assert_eq!(calls[1].uri.host(), Some("cdn.test"));
    for name in ["authorization", "cookie", "x-api-key"] {
        assert_eq!(
            calls[1].header(name),
            None,
            "{name} leaked to another origin"
        );
    }
    assert_eq!(calls[1].header("x-request-source"), Some("tests"));
    assert_eq!(calls[1].header("accept"), Some("application/json"));
}

#[tokio::test(start_paused = true)]
async fn another_origin_is_refused_by_default_even_for_a_scheme_change() {
    let mock = MockTransport::new();
    mock.on(Route::get("/items").host("api.test")).reply(
        Reply::json(200, page(0..1)).header("link", "<http://api.test:443/items?p=2>; rel=next"),
    );
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("https://api.test/items")).items()).await;
    assert_eq!(got, [0]);
    let err = err.unwrap();
    assert!(err.is_cross_origin(), "{err}");
    assert!(
        err.to_string().contains("allow_cross_origin(true)"),
        "{err}"
    );
    mock.assert_called(1);
}

/// The user's stack around the transport: here a one-shot retry of 503s.
#[derive(Clone, Debug)]
struct RetryOnce<T>(T);

impl<T> Transport<Empty<Bytes>> for RetryOnce<T>
where
    T: Transport<Empty<Bytes>>,
    T::Body: Send,
{
    type Body = T::Body;
    type Error = T::Error;

    async fn send(&self, req: Request<Empty<Bytes>>) -> Result<Response<T::Body>, T::Error> {
        let copy = || {
            let mut r = Request::new(Empty::new());
            *r.uri_mut() = req.uri().clone();
            *r.headers_mut() = req.headers().clone();
            r
        };
        let res = self.0.send(copy()).await?;
        if res.status() == 503 {
            return self.0.send(copy()).await;
        }
        Ok(res)
    }
}

#[tokio::test(start_paused = true)]
async fn each_page_request_goes_through_the_users_stack() {
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("cursor", "c2"))
        .reply_times(1, Reply::status(503))
        .reply(Reply::json(200, json!({"data": page(2..4), "next": null})));
    mock.on(Route::get("/items"))
        .reply(Reply::json(200, json!({"data": page(0..2), "next": "c2"})));
    let paginator = Paginator::builder(RetryOnce(mock.clone()), Cursor::body("/next"))
        .items_at("/data")
        .build()
        .unwrap();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [0, 1, 2, 3]);
    mock.assert_called(3);

    // Without the stack, the 503 is a typed error naming the page.
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("cursor", "c2"))
        .reply(Reply::status(503));
    mock.on(Route::get("/items"))
        .reply(Reply::json(200, json!({"data": page(0..2), "next": "c2"})));
    let bare = Paginator::builder(mock, Cursor::body("/next"))
        .items_at("/data")
        .build()
        .unwrap();
    let (got, err) = ids(bare.start(uri("http://api.test/items")).items()).await;
    assert_eq!(got, [0, 1]);
    let err = err.expect("a status error");
    assert_eq!(
        (err.page(), err.status().map(|s| s.as_u16())),
        (Some(2), Some(503))
    );
    assert_eq!(err.uri().unwrap().query(), Some("cursor=c2"));
}

#[tokio::test(start_paused = true)]
async fn body_errors_are_typed_and_name_the_page() {
    type Check = fn(&Error) -> bool;
    let cases: Vec<(Reply, Check)> = vec![
        (
            Reply::bytes(200, r#"{"data": [{"id": 1}, oops]}"#),
            |e| matches!(e.kind(), ErrorKind::Decode { pointer, source: DecodeError::Json(_) } if pointer == "/data"),
        ),
        (Reply::json(200, json!({"items": []})), |e| {
            matches!(
                e.kind(),
                ErrorKind::Decode {
                    source: DecodeError::Missing,
                    ..
                }
            )
        }),
        (Reply::text(200, "<html>"), |e| {
            matches!(e.kind(), ErrorKind::Decode { .. })
        }),
        (Reply::bytes(200, vec![b' '; 100]), |e| {
            matches!(e.kind(), ErrorKind::PageTooLarge { limit: 64 })
        }),
        (
            Reply::json(200, json!({"data": []})).fail_body_after(3),
            |e| matches!(e.kind(), ErrorKind::Body(_)),
        ),
        (Reply::connect_error(), |e| e.is_transport()),
        (Reply::json(200, json!({"data": [], "next": [1]})), |e| {
            matches!(
                e.kind(),
                ErrorKind::Strategy(StrategyError::BadValue { .. })
            )
        }),
    ];
    for (reply, check) in cases {
        let mock = MockTransport::new();
        mock.on(Route::any()).reply(reply);
        let paginator = Paginator::builder(mock, Cursor::body("/next"))
            .items_at("/data")
            .max_page_bytes(64)
            .build()
            .unwrap();
        let (_, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
        let err = err.expect("an error");
        assert!(check(&err), "unexpected error: {err:?}");
        assert_eq!(err.page(), Some(1));
        assert_eq!(paginator.snapshot().errors, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn items_that_do_not_match_the_type_are_decode_errors() {
    #[derive(Debug, serde::Deserialize)]
    struct Item {
        #[allow(dead_code)]
        id: u64,
    }
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("cursor", "2"))
        .reply(Reply::json(
            200,
            json!({"data": [{"id": 2}, {"id": "three"}], "next": null}),
        ));
    mock.on(Route::get("/items"))
        .reply(Reply::json(200, json!({"data": [{"id": 1}], "next": 2})));
    let paginator = Paginator::builder(mock, Cursor::body("/next"))
        .items_at("/data")
        .build()
        .unwrap();
    let got: Vec<_> = paginator
        .start(uri("http://api.test/items"))
        .items::<Item>()
        .collect()
        .await;
    assert_eq!(got.len(), 2, "one item, then the error: {got:?}");
    let err = got.into_iter().nth(1).unwrap().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Decode { .. }), "{err:?}");
    assert_eq!(err.page(), Some(2));
    assert_eq!(
        err.to_string(),
        "page 2: could not decode the items at JSON pointer \"/data\" of http://api.test/items?cursor=2"
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        source.contains("invalid type: string \"three\", expected u64"),
        "{source}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crawl_resumes_after_a_transient_failure() {
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("page", "3"))
        .reply_times(1, Reply::status(500))
        .reply(Reply::with(|_| {
            Reply::json(200, json!({"data": page(20..25)}))
        }));
    mock.on(Route::get("/items")).reply(Reply::with(|call| {
        let p: u64 = call.query("page").unwrap().parse().unwrap();
        let start = (p - 1) * 10;
        Reply::json(200, json!({"data": page(start..(start + 10).min(25))}))
    }));
    let paginator = Paginator::builder(mock.clone(), PageNumber::new())
        .items_at("/data")
        .build()
        .unwrap();
    let mut items = paginator
        .start(uri("http://api.test/items"))
        .items::<Value>();
    let mut got = Vec::new();
    let err = loop {
        match items.next().await.unwrap() {
            Ok(v) => got.push(v["id"].as_u64().unwrap()),
            Err(e) => break e,
        }
    };
    assert_eq!(
        (err.page(), err.status().map(|s| s.as_u16())),
        (Some(3), Some(500)),
        "{err}"
    );
    assert!(
        items.next().await.is_none(),
        "the stream ends after its error"
    );
    let checkpoint: Checkpoint =
        serde_json::from_value(serde_json::to_value(items.checkpoint()).unwrap()).unwrap();
    assert_eq!(checkpoint.next(), Some("http://api.test/items?page=3"));
    let (rest, err) = ids(paginator.resume(&checkpoint).unwrap().items()).await;
    assert!(err.is_none(), "{err:?}");
    got.extend(rest);
    assert_eq!(got, (0..25).collect::<Vec<_>>());
}

fn offset_api(mock: &MockTransport, total: u64, cap: u64, delay_of: fn(u64) -> u64) {
    mock.on(Route::get("/items"))
        .reply(Reply::with(move |call| {
            let offset: u64 = call.query("offset").unwrap().parse().unwrap();
            let limit: u64 = call.query("limit").unwrap().parse().unwrap();
            let end = (offset + limit.min(cap)).min(total);
            Reply::json(
                200,
                json!({"data": page(offset..end.max(offset)), "total": total}),
            )
            .delay(Duration::from_millis(delay_of(offset)))
        }));
}

/// Offset pages of 10 under `/data`, the total at `/total`, up to
/// `prefetch` requests in flight.
fn offset_paginator(
    mock: &MockTransport,
    prefetch: usize,
) -> Paginator<MockTransport, OffsetLimit> {
    Paginator::builder(
        mock.clone(),
        OffsetLimit::new().limit(10).total_at("/total"),
    )
    .items_at("/data")
    .prefetch(prefetch)
    .build()
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn prefetch_overlaps_requests_and_still_yields_in_order() {
    let mock = MockTransport::new();
    // Later pages answer faster: completion order is the reverse of page order.
    offset_api(&mock, 50, 10, |offset| 100 - offset);
    let paginator = offset_paginator(&mock, 4);
    let t0 = Instant::now();
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    mock.assert_called(5);
    // Page 1 alone (100 ms), then pages 2-5 together (at most 90 ms).
    assert_eq!(t0.elapsed(), Duration::from_millis(190));

    let sequential = offset_paginator(&mock, DEFAULT_PREFETCH);
    let t0 = Instant::now();
    let _ = ids(sequential.start(uri("http://api.test/items")).items()).await;
    assert_eq!(t0.elapsed(), Duration::from_millis(100 + 90 + 80 + 70 + 60));
}

#[tokio::test(start_paused = true)]
async fn wrong_predictions_are_dropped_not_yielded() {
    let mock = MockTransport::new();
    // The server caps pages at 7 items although 10 were asked for; after
    // the first page the paginator predicts with the size it saw.
    offset_api(&mock, 30, 7, |_| 10);
    let paginator = offset_paginator(&mock, 3);
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    assert_eq!(
        paginator.snapshot().prefetch_discarded,
        0,
        "the learned step was right"
    );

    // Now the collection shrinks mid-crawl: predictions made for 40 items
    // are dropped once a page says 15.
    let mock = MockTransport::new();
    mock.on(Route::get("/items").query("offset", "0"))
        .reply(Reply::json(200, json!({"data": page(0..10), "total": 40})));
    mock.on(Route::get("/items").query("offset", "10")).reply(
        Reply::json(200, json!({"data": page(10..15), "total": 15}))
            .delay(Duration::from_millis(5)),
    );
    mock.on(Route::get("/items"))
        .reply(Reply::json(200, json!({"data": [], "total": 15})));
    let paginator = offset_paginator(&mock, 3);
    let (got, err) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, (0..15).collect::<Vec<_>>());
    assert_eq!(paginator.snapshot().prefetch_discarded, 2);
}

/// A custom strategy with its own state: `?after=<n>` where `n` counts the
/// items seen so far, kept in the strategy (not derivable from the URI
/// alone), saved in checkpoints.
#[derive(Clone, Debug, Default)]
struct Counting {
    seen: u64,
}

impl Strategy for Counting {
    fn next(&mut self, page: &PageView<'_>) -> Result<Next, StrategyError> {
        self.seen += page.item_count() as u64;
        if page.item_count() == 0 {
            return Ok(Next::Done);
        }
        let next =
            steadfast_paginate::uri::with_query_param(page.uri(), "after", &self.seen.to_string())?;
        Ok(Next::Fetch(next))
    }

    fn save(&self) -> Value {
        json!(self.seen)
    }

    fn restore(&mut self, state: &Value) -> Result<(), StrategyError> {
        self.seen = state
            .as_u64()
            .ok_or_else(|| StrategyError::Config("bad state".into()))?;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn custom_strategy_state_survives_a_resume_mid_page() {
    let mock = MockTransport::new();
    mock.on(Route::get("/items")).reply(Reply::with(|call| {
        let after: u64 = call.query("after").map_or(0, |a| a.parse().unwrap());
        Reply::json(200, page(after..(after + 4).min(10)))
    }));
    let paginator = Paginator::builder(mock.clone(), Counting::default())
        .build()
        .unwrap();
    let mut items = paginator
        .start(uri("http://api.test/items"))
        .items::<Value>();
    for _ in 0..6 {
        items.next().await.unwrap().unwrap();
    }
    let checkpoint = items.checkpoint();
    assert_eq!(
        checkpoint.strategy_state(),
        &json!(4),
        "state before the page being read"
    );
    assert_eq!(checkpoint.skip(), 2);
    let (rest, err) = ids(paginator.resume(&checkpoint).unwrap().items()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(rest, (6..10).collect::<Vec<_>>());

    let mut bad = serde_json::to_value(&checkpoint).unwrap();
    bad["strategy"] = json!("x");
    let bad: Checkpoint = serde_json::from_value(bad).unwrap();
    assert!(matches!(
        paginator.resume(&bad),
        Err(CheckpointError::Strategy(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn checkpoints_are_validated_and_complete_ones_do_nothing() {
    let mock = MockTransport::new();
    mock.on(Route::any()).reply(Reply::json(200, page(0..3)));
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .build()
        .unwrap();
    let mut items = paginator
        .start(uri("http://api.test/items"))
        .items::<Value>();
    while items.next().await.is_some() {}
    let done = items.checkpoint();
    assert!(done.is_complete());
    assert_eq!(done.items(), 3);
    let (rest, err) = ids(paginator.resume(&done).unwrap().items()).await;
    assert!(rest.is_empty() && err.is_none());
    mock.assert_called(1);

    let bad: Checkpoint = serde_json::from_value(json!({
        "start": "http://api.test/items", "next": "http://a b", "pages": 1, "items": 3
    }))
    .unwrap();
    let err = paginator.resume(&bad).unwrap_err();
    assert!(
        matches!(err, CheckpointError::InvalidUri { field: "next", .. }),
        "{err}"
    );

    // A checkpoint edited to point elsewhere is held to the start's origin.
    let moved: Checkpoint = serde_json::from_value(json!({
        "start": "http://api.test/items", "next": "http://evil.test/items", "pages": 1, "items": 3
    }))
    .unwrap();
    let (_, err) = ids(paginator.resume(&moved).unwrap().items()).await;
    assert!(err.unwrap().is_cross_origin());
    mock.assert_called(1);
}

#[tokio::test(start_paused = true)]
async fn a_strategy_that_cannot_start_fails_the_first_poll() {
    let mock = MockTransport::new();
    let paginator = Paginator::builder(mock.clone(), PageNumber::new())
        .build()
        .unwrap();
    let (got, err) = ids(paginator
        .start(uri("http://api.test/items?page=abc"))
        .items())
    .await;
    assert!(got.is_empty());
    let err = err.unwrap();
    assert!(matches!(err.kind(), ErrorKind::Strategy(_)), "{err:?}");
    assert_eq!(err.page(), Some(1));
    assert!(
        format!("{:?}", std::error::Error::source(&err)).contains("page"),
        "{err:?}"
    );
    mock.assert_called(0);
}

#[tokio::test(start_paused = true)]
async fn request_body_type_is_configurable() {
    let mock = MockTransport::new();
    mock.on(Route::any()).reply(Reply::json(200, page(0..2)));
    let paginator = Paginator::builder(mock.clone(), LinkHeader::new())
        .request_body::<String>()
        .build()
        .unwrap();
    let (got, _) = ids(paginator.start(uri("http://api.test/items")).items()).await;
    assert_eq!(got, [0, 1]);
}

#[test]
fn configuration_is_validated_once_at_build() {
    let mock = MockTransport::new();
    let err = Paginator::builder(mock.clone(), LinkHeader::new())
        .items_at("data")
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::ItemsPointer(_)), "{err}");
    assert!(err.to_string().contains("RFC 6901"), "{err}");
    for (builder, field) in [
        (
            Paginator::builder(mock.clone(), LinkHeader::new()).prefetch(0),
            "prefetch",
        ),
        (
            Paginator::builder(mock.clone(), LinkHeader::new()).max_pages(0),
            "max_pages",
        ),
        (
            Paginator::builder(mock.clone(), LinkHeader::new()).max_items(0),
            "max_items",
        ),
        (
            Paginator::builder(mock.clone(), LinkHeader::new()).max_page_bytes(0),
            "max_page_bytes",
        ),
    ] {
        let err = builder.build().unwrap_err();
        assert_eq!(err.to_string(), format!("{field} must be at least 1"));
    }
    let err = Paginator::builder(mock.clone(), LinkHeader::new())
        .prefetch(65)
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "prefetch must be at most 64");
    let err = Paginator::builder(mock, Cursor::body("next"))
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::Strategy(_)), "{err}");
}

#[test]
fn defaults_are_pinned() {
    assert_eq!(
        format!("{:?}", Config::default()),
        "Config { name: \"paginate\", items_at: \"\", max_pages: 100000, max_items: None, \
         max_page_bytes: 16777216, prefetch: 1, loop_window: 10000, stop_on_empty_page: false, \
         full_repeat_check: false, allow_cross_origin: false, headers: {} }"
    );
    // The fixed limits beside the configuration.
    assert_eq!(
        (
            steadfast_paginate::MAX_PREFETCH,
            steadfast_paginate::MAX_REDIRECTS,
            steadfast_paginate::REPEAT_WINDOW,
        ),
        (64, 10, 64)
    );
}

#[tokio::test(start_paused = true)]
async fn streams_are_send_and_unpin_so_they_can_be_spawned() {
    fn check<S: Send + Unpin>(_: &S) {}
    let paginator = Paginator::builder(MockTransport::new(), Cursor::body("/next"))
        .build()
        .unwrap();
    check(
        &paginator
            .start(uri("http://api.test/items"))
            .items::<Value>(),
    );
    check(
        &paginator
            .start(uri("http://api.test/items"))
            .pages::<Value>(),
    );
    let spawned = tokio::spawn(async move {
        let items = paginator
            .start(uri("http://api.test/items"))
            .items::<Value>();
        format!("{items:?}")
    });
    drop(spawned);
}
