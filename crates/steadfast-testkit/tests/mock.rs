//! MockTransport: matchers, scripts, latency, bodies, errors, recording.

use std::error::Error as _;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use steadfast_core::{
    Classify, ConnectError, Deadline, DefaultClassifier, ErrorClass, Outcome, TimeoutError,
    TimeoutPhase, Transport, TransportExt,
};
use steadfast_testkit::mock::{ClosestRoute, MockBody};
use steadfast_testkit::{MockError, MockTransport, Reply, Route};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn req(method: Method, uri: &str) -> Request<String> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(String::new())
        .unwrap()
}

fn get(uri: &str) -> Request<String> {
    req(Method::GET, uri)
}

fn post_json(uri: &str, body: &serde_json::Value) -> Request<String> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(body.to_string())
        .unwrap()
}

async fn status(mock: &MockTransport, req: Request<String>) -> u16 {
    mock.send(req).await.unwrap().status().as_u16()
}

async fn text(res: Response<MockBody>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn unmatched(err: &MockError) -> &ClosestRoute {
    match err {
        MockError::Unmatched {
            closest: Some(c), ..
        } => c,
        other => panic!("expected Unmatched with a closest route, got {other:?}"),
    }
}

// ---------------------------------------------------------------- matchers

#[tokio::test]
async fn method_and_path_must_both_match() {
    let mock = MockTransport::new();
    mock.on(Route::get("/users")).reply(Reply::status(200));
    mock.on(Route::post("/users")).reply(Reply::status(201));
    mock.on(Route::put("/users/1")).reply(Reply::status(202));
    mock.on(Route::patch("/users/1")).reply(Reply::status(203));
    mock.on(Route::delete("/users/1")).reply(Reply::status(204));
    mock.on(Route::head("/users")).reply(Reply::status(205));
    mock.on(Route::method(Method::OPTIONS, "/users"))
        .reply(Reply::status(206));

    let base = "http://api.test";
    assert_eq!(status(&mock, get(&format!("{base}/users"))).await, 200);
    assert_eq!(
        status(&mock, req(Method::POST, &format!("{base}/users"))).await,
        201
    );
    assert_eq!(
        status(&mock, req(Method::PUT, &format!("{base}/users/1"))).await,
        202
    );
    assert_eq!(
        status(&mock, req(Method::PATCH, &format!("{base}/users/1"))).await,
        203
    );
    assert_eq!(
        status(&mock, req(Method::DELETE, &format!("{base}/users/1"))).await,
        204
    );
    assert_eq!(
        status(&mock, req(Method::HEAD, &format!("{base}/users"))).await,
        205
    );
    assert_eq!(
        status(&mock, req(Method::OPTIONS, &format!("{base}/users"))).await,
        206
    );

    // A method no route has for that path, and a trailing slash: both unmatched.
    let err = mock
        .send(req(Method::PATCH, &format!("{base}/users")))
        .await
        .unwrap_err();
    assert_eq!(
        unmatched(&err).mismatches,
        ["method was `PATCH`, expected `GET`"]
    );
    assert!(mock.send(get(&format!("{base}/users/"))).await.is_err());
}

#[tokio::test]
async fn path_params_are_captured_and_wildcards_match_the_rest() {
    let mock = MockTransport::new();
    let users = mock
        .on(Route::get("/users/{id}/posts/{post}"))
        .reply(Reply::with(|call| {
            let body = format!(
                "{}:{}",
                call.param("id").unwrap(),
                call.param("post").unwrap()
            );
            Reply::text(200, body)
        }));
    let files = mock.on(Route::get("/files/*")).reply(Reply::status(200));

    let res = mock
        .send(get("http://api.test/users/7/posts/hello%20world"))
        .await
        .unwrap();
    assert_eq!(text(res).await, "7:hello world");
    assert_eq!(
        users.calls()[0].params,
        [
            ("id".to_owned(), "7".to_owned()),
            ("post".to_owned(), "hello world".to_owned())
        ]
    );
    for path in ["/files", "/files/", "/files/a", "/files/a/b/c.txt"] {
        assert_eq!(status(&mock, get(path)).await, 200, "{path}");
    }
    files.assert_called(4);

    let err = mock.send(get("/users/7/posts")).await.unwrap_err();
    assert_eq!(
        unmatched(&err).mismatches,
        ["path was `/users/7/posts`, expected `/users/{id}/posts/{post}`"]
    );
    assert!(mock.send(get("/filesystem")).await.is_err());
}

#[tokio::test]
async fn query_matches_a_decoded_subset() {
    let mock = MockTransport::new();
    mock.on(Route::get("/search").query("q", "a b").query("tag", "x"))
        .reply(Reply::status(200));

    for ok in [
        "/search?q=a%20b&tag=x",
        "/search?tag=x&q=a+b&page=3",
        "/search?tag=y&tag=x&q=a%20b",
    ] {
        assert_eq!(status(&mock, get(ok)).await, 200, "{ok}");
    }
    let err = mock
        .send(get("/search?q=ab&tag=y&tag=z"))
        .await
        .unwrap_err();
    assert_eq!(
        unmatched(&err).mismatches,
        [
            "query `q` was `ab`, expected `a b`",
            "query `tag` was `y`, `z`, expected `x`"
        ]
    );
    let err = mock.send(get("/search?tag=x")).await.unwrap_err();
    assert_eq!(
        unmatched(&err).mismatches,
        ["query `q` missing, expected `a b`"]
    );
}

/// `.query()` takes its values as a URL's query reads them, like a query
/// in the route's path: encoded or not, they mean the same.
#[tokio::test]
async fn query_values_may_be_given_encoded() {
    let mock = MockTransport::new();
    let encoded = mock
        .on(Route::get("/a").query("q", "a%20b").query("sum", "1%2B1"))
        .reply(Reply::status(200));
    for ok in ["/a?q=a+b&sum=1%2B1", "/a?q=a%20b&sum=1%2b1"] {
        assert_eq!(status(&mock, get(ok)).await, 200, "{ok}");
    }
    encoded.assert_called(2);
    // A path's query is decoded once, not twice: `%2520` is a literal `%20`.
    let literal = mock
        .on(Route::get("/b?q=a%2520b"))
        .reply(Reply::status(200));
    assert_eq!(status(&mock, get("/b?q=a%2520b")).await, 200);
    assert!(mock.send(get("/b?q=a%20b")).await.is_err());
    literal.assert_called(1);
}

#[tokio::test]
async fn query_in_the_route_path_is_a_matcher() {
    let mock = MockTransport::new();
    mock.on(Route::get("/users?page=1"))
        .reply(Reply::text(200, "one"));
    mock.on(Route::get("/users?page=2"))
        .reply(Reply::text(200, "two"));
    let res = mock.send(get("/users?page=2&per_page=10")).await.unwrap();
    assert_eq!(text(res).await, "two");
}

#[tokio::test]
async fn headers_match_case_insensitively_and_by_presence() {
    let mock = MockTransport::new();
    mock.on(Route::get("/a")
        .header("X-Api-Key", "k")
        .header_present("Authorization"))
        .reply(Reply::status(200));

    let ok = Request::get("/a")
        .header("x-api-key", "other")
        .header("x-api-key", "k")
        .header("authorization", "Bearer t")
        .body(String::new())
        .unwrap();
    assert_eq!(status(&mock, ok).await, 200);

    let bad = Request::get("/a")
        .header("X-API-KEY", "nope")
        .body(String::new())
        .unwrap();
    let err = mock.send(bad).await.unwrap_err();
    assert_eq!(
        unmatched(&err).mismatches,
        [
            "header `x-api-key` was `nope`, expected `k`",
            "header `authorization` missing"
        ]
    );
    let err = mock.send(get("/a")).await.unwrap_err();
    assert_eq!(
        unmatched(&err).mismatches[0],
        "header `x-api-key` missing, expected `k`"
    );
}

#[tokio::test]
async fn a_header_matcher_finds_its_value_in_a_comma_separated_list() {
    // RFC 9110 §5.3: `accept: a, b` is the list `a`, `b`, as two lines would be.
    let mock = MockTransport::new();
    mock.on(Route::get("/list").header("accept", "b"))
        .reply(Reply::status(200));
    mock.on(Route::get("/date").header("if-modified-since", "Wed, 01 Jan 2025 00:00:00 GMT"))
        .reply(Reply::status(200));
    mock.on(Route::get("/quoted").header("x-tags", "c"))
        .reply(Reply::status(200));
    let with = |path: &str, name: &str, value: &str| {
        Request::get(path)
            .header(name, value)
            .body(String::new())
            .unwrap()
    };
    for value in ["a, b", "a,b", "b", "a ,\tb\t, c", "b,"] {
        assert_eq!(
            status(&mock, with("/list", "accept", value)).await,
            200,
            "{value:?}"
        );
    }
    for value in ["a, bb", "a, \"b\"", "ab", "a b"] {
        let err = mock.send(with("/list", "accept", value)).await.unwrap_err();
        assert_eq!(
            unmatched(&err).mismatches,
            [format!("header `accept` was `{value}`, expected `b`")],
            "{value:?}"
        );
    }
    // A value that itself holds a comma still matches whole.
    let date = "Wed, 01 Jan 2025 00:00:00 GMT";
    assert_eq!(
        status(&mock, with("/date", "if-modified-since", date)).await,
        200
    );
    // Commas inside a quoted string do not split it.
    assert!(
        mock.send(with("/quoted", "x-tags", "\"a, c\""))
            .await
            .is_err()
    );
    assert_eq!(
        status(&mock, with("/quoted", "x-tags", "\"a, c\", c")).await,
        200
    );
}

#[tokio::test]
async fn json_body_compares_semantically() {
    let mock = MockTransport::new();
    mock.on(Route::post("/orders").json_body(json!({"sku": 1, "items": [{"n": 2.0}]})))
        .reply(Reply::status(201));

    let same = json!({"items": [{"n": 2}], "sku": 1.0});
    assert_eq!(status(&mock, post_json("/orders", &same)).await, 201);

    let err = mock
        .send(post_json(
            "/orders",
            &json!({"sku": 1, "items": [{"n": 3}]}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        unmatched(&err).mismatches,
        ["json body differs at `$.items[0].n`: was `3`, expected `2.0`"]
    );
    let not_json = Request::post("/orders").body("sku=1".to_owned()).unwrap();
    let err = mock.send(not_json).await.unwrap_err();
    assert!(
        unmatched(&err).mismatches[0].starts_with("body is not JSON ("),
        "{err}"
    );

    // A struct serializes to the expected JSON too.
    #[derive(serde::Serialize)]
    struct Order {
        sku: u32,
    }
    mock.on(Route::post("/typed").json_body(Order { sku: 9 }))
        .reply(Reply::status(201));
    assert_eq!(
        status(&mock, post_json("/typed", &json!({"sku": 9}))).await,
        201
    );
}

#[tokio::test]
async fn exact_body_matches_bytes() {
    let mock = MockTransport::new();
    mock.on(Route::post("/raw").body("a=1&b=2"))
        .reply(Reply::status(200));

    let ok = Request::post("/raw")
        .body(Full::new(Bytes::from("a=1&b=2")))
        .unwrap();
    assert_eq!(mock.send(ok).await.unwrap().status(), 200);
    let bad = Request::post("/raw").body("a=1\n".to_owned()).unwrap();
    let err = mock.send(bad).await.unwrap_err();
    assert_eq!(
        unmatched(&err).mismatches,
        ["body was `a=1\\n` (4 bytes), expected `a=1&b=2` (7 bytes)"]
    );
}

#[tokio::test]
async fn host_matcher_serves_several_hosts() {
    let mock = MockTransport::new();
    mock.on(Route::get("/v1/x").host("a.test"))
        .reply(Reply::text(200, "a"));
    mock.on(Route::get("https://B.test/v1/x"))
        .reply(Reply::text(200, "b"));
    mock.on(Route::get("/v1/x").host("c.test:8443"))
        .reply(Reply::text(200, "c"));

    let body = |uri: &'static str| {
        let mock = mock.clone();
        async move { text(mock.send(get(uri)).await.unwrap()).await }
    };
    assert_eq!(body("http://a.test/v1/x").await, "a");
    assert_eq!(
        body("http://a.test:9000/v1/x").await,
        "a",
        "no port in the matcher: any port"
    );
    assert_eq!(body("https://b.test/v1/x").await, "b");
    assert_eq!(body("https://c.test:8443/v1/x").await, "c");

    // Origin-form request: the Host header decides.
    let origin = Request::get("/v1/x")
        .header("host", "c.test:8443")
        .body(String::new())
        .unwrap();
    assert_eq!(text(mock.send(origin).await.unwrap()).await, "c");

    let err = mock.send(get("https://c.test/v1/x")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "MockTransport has no route for `GET https://c.test/v1/x`; \
         closest route #0 `GET /v1/x, host a.test`: host was `c.test:443`, expected `a.test`"
    );
    let err = mock.send(get("/v1/x")).await.unwrap_err();
    assert!(
        unmatched(&err).mismatches[0].starts_with("request has no host"),
        "{err}"
    );
}

#[tokio::test]
async fn custom_predicates_see_the_whole_request() {
    let mock = MockTransport::new();
    mock.on(Route::post("/upload").matching(|call| call.body.len() > 3))
        .reply(Reply::status(413));
    mock.on(Route::post("/upload")).reply(Reply::status(200));

    let big = Request::post("/upload").body("12345".to_owned()).unwrap();
    let small = Request::post("/upload").body("12".to_owned()).unwrap();
    assert_eq!(status(&mock, big).await, 413);
    assert_eq!(status(&mock, small).await, 200);

    let only = MockTransport::new();
    only.on(Route::any().matching(|_| true).matching(|_| false))
        .reply(Reply::status(200));
    let err = only.send(get("/")).await.unwrap_err();
    assert_eq!(
        unmatched(&err).mismatches,
        ["`.matching(..)` predicate #2 returned false"]
    );
}

#[tokio::test]
async fn route_any_matches_everything() {
    let mock = MockTransport::new();
    let any = mock.on(Route::any()).reply(Reply::status(204));
    assert_eq!(status(&mock, get("/")).await, 204);
    assert_eq!(
        status(&mock, req(Method::DELETE, "http://x.test/a/b?c=d")).await,
        204
    );
    any.assert_called(2);
    assert_eq!(any.route().to_string(), "ANY *");
}

// ---------------------------------------------------------------- scripts

#[tokio::test]
async fn scripted_sequence_503_twice_then_200_json() {
    let mock = MockTransport::new();
    let route = mock
        .on(Route::get("/users"))
        .reply_times(2, Reply::status(503).header("retry-after", 1))
        .reply(Reply::json(200, json!({"ok": true})));

    for _ in 0..2 {
        let res = mock.send(get("http://api.test/users")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()["retry-after"], "1");
        // The core classifier reads the scripted Retry-After.
        let outcome = DefaultClassifier.classify(&Ok::<_, MockError>(res));
        assert_eq!(
            outcome,
            Outcome::Retryable {
                after: Some(Duration::from_secs(1))
            }
        );
    }
    for _ in 0..3 {
        let res = mock.send(get("http://api.test/users")).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(text(res).await, r#"{"ok":true}"#);
    }
    route.assert_called(5);
    assert!(!route.is_exhausted(), "a final `.reply` repeats for ever");
}

#[tokio::test]
async fn reply_steps_are_used_once_unless_last() {
    let mock = MockTransport::new();
    let r = mock
        .on(Route::any())
        .reply(Reply::status(201))
        .reply(Reply::status(202))
        .reply_once(Reply::status(203))
        .reply(Reply::status(204));
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(status(&mock, get("/")).await);
    }
    assert_eq!(seen, [201, 202, 203, 204, 204]);

    // Appending after a repeating last step: it has had its turn.
    r.reply(Reply::status(205));
    assert_eq!(status(&mock, get("/")).await, 205);
}

#[tokio::test]
async fn exhausted_scripts_fail_clearly() {
    let mock = MockTransport::new();
    let r = mock
        .on(Route::get("/once"))
        .reply_times(2, Reply::status(200));
    assert_eq!(status(&mock, get("/once")).await, 200);
    assert_eq!(status(&mock, get("/once")).await, 200);
    assert!(r.is_exhausted());

    let err = mock.send(get("/once")).await.unwrap_err();
    assert!(
        matches!(
            err,
            MockError::Exhausted {
                index: 0,
                calls: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "route #0 `GET /once` matched, but its script is used up after 2 call(s); \
         script more with `.reply_times(n, ..)`, or end the script with `.reply(..)`, whose last reply repeats"
    );
    r.assert_called(2);
    assert_eq!(mock.call_count(), 3, "the failed call is recorded");
    assert_eq!(mock.unmatched_calls().len(), 1);

    // A route that was never scripted is exhausted from the start.
    let empty = mock.on(Route::get("/empty"));
    assert!(empty.is_exhausted());
    assert!(matches!(
        mock.send(get("/empty")).await,
        Err(MockError::Exhausted {
            index: 1,
            calls: 0,
            ..
        })
    ));
    // `reply_times(0, ..)` adds nothing.
    empty.reply_times(0, Reply::status(200));
    assert!(empty.is_exhausted());
}

#[tokio::test]
async fn an_exhausted_route_lets_the_next_matching_route_serve() {
    let mock = MockTransport::new();
    let first = mock.on(Route::get("/x")).reply_once(Reply::status(503));
    let then = mock.on(Route::get("/x")).reply(Reply::status(200));
    assert_eq!(status(&mock, get("/x")).await, 503);
    assert_eq!(status(&mock, get("/x")).await, 200);
    assert_eq!(status(&mock, get("/x")).await, 200);
    first.assert_called_once();
    then.assert_called(2);
    mock.assert_no_unmatched();
    mock.assert_all_routes_called();
}

#[tokio::test]
async fn fallback_serves_unmatched_requests() {
    let mock = MockTransport::new();
    mock.on(Route::get("/known")).reply(Reply::status(200));
    mock.fallback(Reply::text(404, "no such route"));

    let res = mock.send(get("/unknown")).await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(text(res).await, "no such route");
    assert_eq!(mock.unmatched_calls()[0].path(), "/unknown");
    assert_eq!(mock.calls()[0].route, None);
}

// ---------------------------------------------------------------- latency and bodies

#[tokio::test(start_paused = true)]
async fn latency_uses_virtual_time_exactly() {
    let mock = MockTransport::new();
    mock.on(Route::get("/slow"))
        .reply(Reply::status(200).delay(250 * MS).delay(50 * MS));
    mock.on(Route::get("/fast")).reply(Reply::status(200));

    let start = Instant::now();
    mock.send(get("/fast")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    mock.send(get("/slow")).await.unwrap();
    assert_eq!(start.elapsed(), 300 * MS, "delays add up");
    assert_eq!(
        mock.calls()[1].at,
        start,
        "`at` is the arrival, before the delay"
    );
}

#[tokio::test(start_paused = true)]
async fn delays_hold_no_lock_so_requests_wait_in_parallel() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply(Reply::status(200).delay(100 * MS));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let mock = mock.clone();
        tasks.spawn(async move { mock.send(get("/")).await.unwrap().status() });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(start.elapsed(), 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn chunked_bodies_drip_on_schedule() {
    let mock = MockTransport::new();
    mock.on(Route::get("/drip")).reply(
        Reply::status(200)
            .delay(5 * MS)
            .chunks(["ab", "cd", "ef"], 10 * MS),
    );

    let start = Instant::now();
    let res = mock.send(get("/drip")).await.unwrap();
    assert_eq!(start.elapsed(), 5 * MS);
    let mut body = res.into_body();
    assert_eq!(body.size_hint().exact(), Some(6));
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        arrivals.push((data, start.elapsed()));
    }
    assert_eq!(
        arrivals,
        [
            (Bytes::from("ab"), 15 * MS),
            (Bytes::from("cd"), 25 * MS),
            (Bytes::from("ef"), 35 * MS),
        ]
    );
    assert!(body.is_end_stream());
}

#[tokio::test]
async fn failing_bodies_classify_as_reset() {
    let mock = MockTransport::new();
    mock.on(Route::get("/reset"))
        .reply(Reply::bytes(200, vec![7_u8; 100]).fail_body_after(40));
    mock.on(Route::get("/eof"))
        .reply(Reply::text(200, "truncated").fail_body_after_with(3, io::ErrorKind::UnexpectedEof));

    let res = mock.send(get("/reset")).await.unwrap();
    assert_eq!(res.status(), 200, "the head arrives; the body breaks");
    assert_eq!(res.body().size_hint().exact(), Some(100));
    let mut body = res.into_body();
    let mut received = 0;
    let err = loop {
        match body.frame().await.unwrap() {
            Ok(frame) => received += frame.into_data().unwrap().len(),
            Err(e) => break e,
        }
    };
    assert_eq!(received, 40);
    assert_eq!(err.bytes_sent(), 40);
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(ErrorClass::of(&err), ErrorClass::Reset);
    assert_eq!(err.to_string(), "mock response body failed after 40 bytes");

    let err = mock
        .send(get("/eof"))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(ErrorClass::of(&err), ErrorClass::Reset);
}

// ---------------------------------------------------------------- scripted errors

#[tokio::test]
async fn scripted_errors_classify_like_real_ones() {
    let mock = MockTransport::new();
    mock.on(Route::get("/connect"))
        .reply(Reply::connect_error());
    mock.on(Route::get("/timeout")).reply(Reply::timeout());
    mock.on(Route::get("/pool"))
        .reply(Reply::timeout_in(TimeoutPhase::PoolAcquire));
    mock.on(Route::get("/reset")).reply(Reply::reset());
    mock.on(Route::get("/aborted"))
        .reply(Reply::io_error(io::ErrorKind::ConnectionAborted));
    mock.on(Route::get("/other"))
        .reply(Reply::io_error(io::ErrorKind::PermissionDenied));
    mock.on(Route::get("/custom")).reply(Reply::error_with(|| {
        ConnectError::new("db:5432", "no route to host")
    }));

    let class = |path: &'static str| {
        let mock = mock.clone();
        async move {
            let err = mock
                .send(get(&format!("http://api.test:8080{path}")))
                .await
                .unwrap_err();
            assert!(matches!(err, MockError::Scripted { .. }), "{err:?}");
            ErrorClass::of(&err)
        }
    };
    assert_eq!(class("/connect").await, ErrorClass::Connect);
    assert_eq!(
        class("/timeout").await,
        ErrorClass::Timeout(Some(TimeoutPhase::Read))
    );
    assert_eq!(
        class("/pool").await,
        ErrorClass::Timeout(Some(TimeoutPhase::PoolAcquire))
    );
    assert_eq!(class("/reset").await, ErrorClass::Reset);
    assert_eq!(class("/aborted").await, ErrorClass::Reset);
    assert_eq!(class("/other").await, ErrorClass::Other);
    assert_eq!(class("/custom").await, ErrorClass::Connect);

    // The default classifier retries them, as it would real ones.
    let res = mock.send(get("http://api.test/connect")).await;
    assert!(DefaultClassifier.classify(&res).is_retryable());
    assert!(ErrorClass::of(res.as_ref().unwrap_err()).request_not_sent());
}

#[tokio::test]
async fn scripted_errors_keep_a_readable_source_chain() {
    let mock = MockTransport::new();
    mock.on(Route::get("/down")).reply(Reply::connect_error());
    let err = mock
        .send(get("http://api.test:8080/down"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "failure scripted by route #0 `GET /down`");
    let connect = err
        .source()
        .unwrap()
        .downcast_ref::<ConnectError>()
        .unwrap();
    assert_eq!(connect.authority(), "api.test:8080");
    let io = connect
        .source()
        .unwrap()
        .downcast_ref::<io::Error>()
        .unwrap();
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test(start_paused = true)]
async fn a_delayed_timeout_reports_the_time_it_waited() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply(Reply::timeout().delay(Duration::from_secs(30)));
    let start = Instant::now();
    let err = mock.send(get("/")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    let timeout = err
        .source()
        .unwrap()
        .downcast_ref::<TimeoutError>()
        .unwrap();
    assert_eq!(timeout.phase(), TimeoutPhase::Read);
    assert_eq!(timeout.limit(), Duration::from_secs(30));
}

#[tokio::test]
async fn invalid_replies_are_errors_not_panics() {
    let mock = MockTransport::new();
    mock.on(Route::get("/status")).reply(Reply::status(42));
    mock.on(Route::get("/header"))
        .reply(Reply::status(200).header("bad name", "v"));
    mock.on(Route::get("/value"))
        .reply(Reply::status(200).header("x", "a\nb"));
    mock.on(Route::get("/misuse"))
        .reply(Reply::reset().header("x", "y"));
    mock.on(Route::get("/deep")).reply(Reply::with(|_| {
        fn nest(n: u32) -> Reply {
            if n == 0 {
                Reply::status(200)
            } else {
                Reply::with(move |_| nest(n - 1))
            }
        }
        nest(100)
    }));

    let reason = |path: &'static str| {
        let mock = mock.clone();
        async move {
            match mock.send(get(path)).await.unwrap_err() {
                MockError::InvalidReply { reason, .. } => reason,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(reason("/status").await, "status 42 is not in 100..=999");
    assert_eq!(
        reason("/header").await,
        "invalid header name: invalid HTTP header name"
    );
    assert_eq!(
        reason("/value").await,
        "invalid value for header `x`: failed to parse header value"
    );
    assert_eq!(
        reason("/misuse").await,
        "`.header(..)` applies to responses, not to a failure reply"
    );
    assert!(reason("/deep").await.contains("nested more than 32 levels"));
    let err = mock.send(get("/status")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "route #0 `GET /status` scripted an invalid reply: status 42 is not in 100..=999"
    );
}

#[tokio::test]
async fn a_failing_request_body_is_a_body_read_error() {
    let mock = MockTransport::new();
    mock.on(Route::any()).reply(Reply::status(200));
    let body = MockBody::new("abc").fail_after(1, io::ErrorKind::ConnectionReset);
    let err = mock
        .send(Request::post("/").body(body).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, MockError::BodyRead(_)), "{err:?}");
    assert_eq!(ErrorClass::of(&err), ErrorClass::Reset);
    assert_eq!(
        mock.call_count(),
        0,
        "a request that could not be read is not recorded"
    );
}

// ---------------------------------------------------------------- unmatched

#[tokio::test]
async fn unmatched_names_the_closest_route_and_the_failed_matcher() {
    let mock = MockTransport::new();
    mock.on(Route::post("/orders")).reply(Reply::status(201));
    mock.on(Route::get("/users").header("x-api-key", "k"))
        .reply(Reply::status(200));
    mock.on(Route::get("/users?page=1"))
        .reply(Reply::status(200));

    let err = mock
        .send(get("http://api.test/users?page=2"))
        .await
        .unwrap_err();
    // Routes #1 and #2 both pass two matchers and fail one: the first registered wins.
    assert_eq!(
        err.to_string(),
        "MockTransport has no route for `GET http://api.test/users?page=2`; \
         closest route #1 `GET /users, header x-api-key: k`: header `x-api-key` missing, expected `k`"
    );

    let with_key = Request::get("http://api.test/users?page=2")
        .header("x-api-key", "k")
        .body(String::new())
        .unwrap();
    // Now route #1 matches... so make it fail differently: a POST.
    let mut post = with_key;
    *post.method_mut() = Method::POST;
    let err = mock.send(post).await.unwrap_err();
    let closest = unmatched(&err);
    assert_eq!(closest.index, 1, "{err}");
    assert_eq!(closest.mismatches, ["method was `POST`, expected `GET`"]);
}

#[tokio::test]
async fn unmatched_with_no_routes_says_how_to_add_one() {
    let mock = MockTransport::new();
    let err = mock.send(get("/x")).await.unwrap_err();
    assert!(matches!(err, MockError::Unmatched { closest: None, .. }));
    assert_eq!(
        err.to_string(),
        "MockTransport has no route for `GET /x`: no routes are registered; \
         add one with `mock.on(Route::get(..)).reply(..)` or serve every request with `mock.fallback(..)`"
    );
}

// ---------------------------------------------------------------- recording and assertions

#[tokio::test(start_paused = true)]
async fn calls_are_recorded_in_full() {
    let mock = MockTransport::new();
    let orders = mock
        .on(Route::post("/orders/{id}"))
        .reply(Reply::status(201));
    let start = Instant::now();
    tokio::time::advance(7 * MS).await;

    let mut request = post_json("http://api.test/orders/9?dry_run=true", &json!({"sku": 1}));
    request
        .headers_mut()
        .insert("idempotency-key", "k-1".parse().unwrap());
    Deadline::after(Duration::from_secs(60)).apply(&mut request);
    mock.send(request).await.unwrap();
    let _ = mock.send(get("/nowhere")).await;

    let calls = mock.calls();
    assert_eq!(calls.len(), 2);
    let call = &calls[0];
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.uri, "http://api.test/orders/9?dry_run=true");
    assert_eq!(call.path(), "/orders/9");
    assert_eq!(call.query("dry_run").as_deref(), Some("true"));
    assert_eq!(call.header("Idempotency-Key"), Some("k-1"));
    assert_eq!(call.body, r#"{"sku":1}"#);
    assert_eq!(call.text(), r#"{"sku":1}"#);
    assert_eq!(call.json::<serde_json::Value>().unwrap(), json!({"sku": 1}));
    assert_eq!(call.at, start + 7 * MS);
    assert_eq!(call.route, Some(0));
    assert_eq!(call.param("id"), Some("9"));
    assert_eq!(
        Deadline::of(&Request::from_parts(
            {
                let (mut parts, ()) = Request::new(()).into_parts();
                parts.extensions = call.extensions.clone();
                parts
            },
            ()
        ))
        .map(Deadline::instant),
        Some(start + 7 * MS + Duration::from_secs(60)),
        "extensions such as the Deadline are recorded"
    );
    assert_eq!(calls[1].route, None);
    assert_eq!(
        call.to_string(),
        "POST http://api.test/orders/9?dry_run=true (9-byte body)"
    );

    assert_eq!(orders.calls().len(), 1);
    assert_eq!(orders.call_count(), 1);
    assert_eq!(mock.last_call().unwrap().path(), "/nowhere");
    mock.assert_called(2);
    orders.assert_called_once();
}

#[tokio::test]
#[should_panic(expected = "MockTransport: expected 3 call(s), got 1:\n  #0 GET /a -> route #0")]
async fn assert_called_lists_the_calls_received() {
    let mock = MockTransport::new();
    mock.on(Route::get("/a")).reply(Reply::status(200));
    mock.send(get("/a")).await.unwrap();
    mock.assert_called(3);
}

#[tokio::test]
#[should_panic(
    expected = "route #1 `GET /b`: expected 1 call(s), got 0; calls received by the mock:\n  #0 GET /a -> route #0"
)]
async fn route_assert_called_names_the_route() {
    let mock = MockTransport::new();
    mock.on(Route::get("/a")).reply(Reply::status(200));
    let b = mock.on(Route::get("/b")).reply(Reply::status(200));
    mock.send(get("/a")).await.unwrap();
    b.assert_called_once();
}

#[tokio::test]
#[should_panic(
    expected = "1 call(s) were not served by any route:\n  #0 GET /a -> route #0\n  #1 DELETE /z -> no route"
)]
async fn assert_no_unmatched_reports_fallback_served_calls() {
    let mock = MockTransport::new();
    mock.on(Route::get("/a")).reply(Reply::status(200));
    mock.fallback(Reply::status(404));
    mock.send(get("/a")).await.unwrap();
    mock.send(req(Method::DELETE, "/z")).await.unwrap();
    mock.assert_no_unmatched();
}

#[tokio::test]
#[should_panic(expected = "1 route(s) were never called:\n  #1 `GET /b`")]
async fn assert_all_routes_called_names_idle_routes() {
    let mock = MockTransport::new();
    mock.on(Route::get("/a")).reply(Reply::status(200));
    mock.on(Route::get("/b")).reply(Reply::status(200));
    mock.send(get("/a")).await.unwrap();
    mock.assert_all_routes_called();
}

#[tokio::test]
async fn the_route_handle_marks_its_own_calls_in_failure_messages() {
    let mock = MockTransport::new();
    mock.on(Route::get("/a")).reply(Reply::status(200));
    let b = mock.on(Route::get("/b")).reply(Reply::status(200));
    mock.send(get("/a")).await.unwrap();
    mock.send(get("/b")).await.unwrap();
    let panic =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.assert_called(2))).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(
        msg.ends_with("  #0 GET /a -> route #0\n *#1 GET /b -> route #1"),
        "{msg}"
    );
}

#[tokio::test]
async fn clear_calls_and_reset() {
    let mock = MockTransport::new();
    let r = mock.on(Route::any()).reply(Reply::status(200));
    mock.send(get("/")).await.unwrap();
    mock.clear_calls();
    assert_eq!(mock.call_count(), 0);
    assert_eq!(r.call_count(), 0);
    assert_eq!(
        status(&mock, get("/")).await,
        200,
        "routes survive clear_calls"
    );

    mock.fallback(Reply::status(404));
    mock.reset();
    assert_eq!(mock.call_count(), 0);
    assert!(matches!(
        mock.send(get("/")).await,
        Err(MockError::Unmatched { closest: None, .. })
    ));
    r.reply(Reply::status(500));
    assert!(
        mock.send(get("/")).await.is_err(),
        "a detached handle scripts nothing"
    );
}

// ---------------------------------------------------------------- dynamic replies

#[tokio::test]
async fn dynamic_replies_echo_the_request() {
    let mock = MockTransport::new();
    mock.on(Route::post("/payments")).reply(Reply::with(|call| {
        match call.header("idempotency-key") {
            Some(key) => Reply::status(201).header("idempotency-key", key),
            None => Reply::text(400, "missing Idempotency-Key"),
        }
    }));
    let with_key = Request::post("/payments")
        .header("idempotency-key", "k-42")
        .body(String::new())
        .unwrap();
    let res = mock.send(with_key).await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["idempotency-key"], "k-42");
    let res = mock.send(req(Method::POST, "/payments")).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(text(res).await, "missing Idempotency-Key");
}

#[tokio::test(start_paused = true)]
async fn dynamic_replies_can_count_and_add_delay() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let mock = MockTransport::new();
    let seen = Arc::clone(&attempts);
    mock.on(Route::any()).reply(
        Reply::with(move |_| match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::status(503).delay(10 * MS),
            _ => Reply::status(200),
        })
        .delay(5 * MS),
    );
    let start = Instant::now();
    assert_eq!(status(&mock, get("/")).await, 503);
    assert_eq!(start.elapsed(), 15 * MS, "outer and inner delays add up");
    assert_eq!(status(&mock, get("/")).await, 200);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------- concurrency and composition

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_use_from_100_tasks_counts_exactly() {
    let mock = MockTransport::new();
    let ok = mock
        .on(Route::get("/r"))
        .reply_times(60, Reply::status(200));
    let then = mock.on(Route::get("/r")).reply(Reply::status(503));
    let other = mock.on(Route::post("/w")).reply(Reply::status(201));

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let mock = mock.clone();
        tasks.spawn(async move {
            let r = if i % 4 == 0 {
                req(Method::POST, "/w")
            } else {
                get("/r")
            };
            mock.send(r).await.unwrap().status().as_u16()
        });
    }
    let mut counts = std::collections::BTreeMap::new();
    while let Some(status) = tasks.join_next().await {
        *counts.entry(status.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(counts, [(200, 60), (201, 25), (503, 15)].into());
    ok.assert_called(60);
    then.assert_called(15);
    other.assert_called(25);
    mock.assert_called(100);

    // Recording order is script order: the 60 OKs are the first 60 GETs.
    let gets: Vec<_> = mock
        .calls()
        .into_iter()
        .filter(|c| c.method == Method::GET)
        .collect();
    assert!(gets[..60].iter().all(|c| c.route == Some(0)));
    assert!(gets[60..].iter().all(|c| c.route == Some(1)));
}

/// A layer that stamps a header on every request.
#[derive(Clone, Debug)]
struct Stamp<T>(T);

impl<B: Send + 'static, T: Transport<B>> Transport<B> for Stamp<T> {
    type Body = T::Body;
    type Error = T::Error;

    async fn send(&self, mut req: Request<B>) -> Result<Response<T::Body>, T::Error> {
        req.headers_mut().insert("x-stamp", "1".parse().unwrap());
        self.0.send(req).await
    }
}

fn spawn_send<T>(t: T, req: Request<String>) -> tokio::task::JoinHandle<u16>
where
    T: Transport<String>,
    T::Body: Send,
{
    tokio::spawn(async move { t.send(req).await.map_or(0, |r| r.status().as_u16()) })
}

#[tokio::test]
async fn works_behind_arc_and_through_layers() {
    let mock = MockTransport::new();
    let stamped = mock
        .on(Route::any().header("x-stamp", "1"))
        .reply(Reply::status(200));
    mock.fallback(Reply::status(400));

    let stack = mock.clone().with(Stamp).with(|t| Stamp(Stamp(t)));
    assert_eq!(spawn_send(stack, get("/")).await.unwrap(), 200);
    assert_eq!(
        spawn_send(Arc::new(mock.clone()), get("/")).await.unwrap(),
        400
    );
    assert_eq!(
        spawn_send(Arc::new(mock.clone().with(Stamp)), get("/"))
            .await
            .unwrap(),
        200
    );
    stamped.assert_called(2);
    assert_eq!(mock.calls()[0].headers.get_all("x-stamp").iter().count(), 1);
}

#[test]
fn the_handles_are_cheap_shared_and_thread_safe() {
    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync_clone::<MockTransport>();
    assert_send_sync_clone::<steadfast_testkit::RouteHandle>();
    assert_send_sync_clone::<Reply>();
    assert_send_sync_clone::<Route>();
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<MockError>();
    assert_error::<steadfast_testkit::mock::MockBodyError>();
    fn assert_unpin_body<B: http_body::Body + Send + Sync + Unpin + 'static>() {}
    assert_unpin_body::<MockBody>();

    let mock = MockTransport::new();
    let route = mock
        .on(Route::get("/a").query("x", "1"))
        .reply(Reply::status(200));
    assert_eq!(
        format!("{mock:?}"),
        "MockTransport { routes: [#0 `GET /a?x=1`], calls: 0, fallback: None }"
    );
    assert_eq!(
        format!("{route:?}"),
        "RouteHandle { index: 0, route: Route(GET /a?x=1), calls: 0, .. }"
    );
    assert_eq!(
        format!("{:?}", Reply::json(201, json!(1)).delay(MS)),
        r#"Reply { status: 201, headers: {"content-type": "application/json"}, body_len: 1, delay: 1ms }"#
    );
}
