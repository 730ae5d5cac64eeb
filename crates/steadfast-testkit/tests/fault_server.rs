//! FaultServer over real loopback sockets, with hyper-util's client.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, LINK, RANGE, RETRY_AFTER,
};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use steadfast_core::signals::ServerSignals;
use steadfast_testkit::FaultServer;
use steadfast_testkit::fault::{LimitedStats, StartError, pattern_mismatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn h1() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

#[derive(Debug)]
struct Fetched {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Fetched {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

fn request(method: Method, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Fetched {
    let res = client.request(req).await.expect("request failed");
    let status = res.status();
    let version = res.version();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .expect("body failed")
        .to_bytes();
    Fetched {
        status,
        version,
        headers,
        body,
    }
}

async fn get(client: &HttpClient, url: &str) -> Fetched {
    send(
        client,
        request(Method::GET, url).body(Full::default()).unwrap(),
    )
    .await
}

/// Reads a body until its end or its error: what arrived, and whether it failed.
async fn read_partial(mut body: Incoming) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => got.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// Sends one raw HTTP/1.1 request and reads until the server closes.
async fn raw(server: &FaultServer, path: &str) -> (Vec<u8>, std::io::Result<()>) {
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

fn body_of(raw: &[u8]) -> &[u8] {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no head");
    &raw[at + 4..]
}

fn assert_bad_param(res: &Fetched, param: &str) {
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{:?}", res.body);
    assert_eq!(res.json()["param"], param, "{}", res.json());
}

#[tokio::test]
async fn status_codes_with_retry_after_in_both_forms() {
    let server = FaultServer::start().await;
    let c = h1();

    let res = get(&c, &server.url("/status/503?retry_after=2")).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.header("retry-after"), "2");
    assert_eq!(res.json(), json!({ "status": 503 }));

    let res = get(
        &c,
        &server.url("/status/429?retry_after=3&retry_after_date=1"),
    )
    .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        res.header("retry-after").ends_with(" GMT"),
        "{}",
        res.header("retry-after")
    );
    let signals = ServerSignals::from_headers(&res.headers, SystemTime::now());
    assert!(signals.malformed().is_empty(), "{:?}", signals.malformed());
    let delay = signals.retry_after().unwrap();
    assert!(
        delay > Duration::from_secs(2) && delay <= Duration::from_secs(4),
        "{delay:?}"
    );

    let res = get(&c, &server.url("/status/200")).await;
    assert_eq!(
        (res.status, res.headers.get(RETRY_AFTER)),
        (StatusCode::OK, None)
    );

    let res = get(&c, &server.url("/status/204")).await;
    assert_eq!((res.status, res.body.len()), (StatusCode::NO_CONTENT, 0));

    for bad in [
        "/status/99",
        "/status/150",
        "/status/600",
        "/status/abc",
        "/status/",
    ] {
        let res = get(&c, &server.url(bad)).await;
        assert_bad_param(&res, "code");
    }
    let res = get(&c, &server.url("/status/503?retry_after=soon")).await;
    assert_bad_param(&res, "retry_after");

    assert_eq!(server.hits("/status/503"), 2);
    assert_eq!(server.hits_prefix("/status/"), 10);
}

#[tokio::test]
async fn flaky_fails_n_times_per_key_then_succeeds() {
    let server = FaultServer::start().await;
    let c = h1();
    let url = server.url("/flaky?fail=2&key=a&retry_after=1");

    for attempt in 1..=2 {
        let res = get(&c, &url).await;
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.header("retry-after"), "1");
        assert_eq!(res.json()["attempt"], attempt);
    }
    let res = get(&c, &url).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers.get(RETRY_AFTER), None);
    assert_eq!(res.json(), json!({ "attempt": 3 }));

    // Another key starts over, with its own status.
    let res = get(&c, &server.url("/flaky?fail=1&key=b&status=429")).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    let res = get(&c, &server.url("/flaky?fail=1&key=b&status=429")).await;
    assert_eq!(res.status, StatusCode::OK);

    // Defaults: key "default", one failure with 503.
    assert_eq!(
        get(&c, &server.url("/flaky")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&c, &server.url("/flaky")).await.status, StatusCode::OK);

    assert_bad_param(&get(&c, &server.url("/flaky?status=1000")).await, "status");
    assert_eq!(server.hits("/flaky"), 8);
}

#[tokio::test]
async fn limited_allows_the_burst_then_refuses_with_parseable_signals() {
    let server = FaultServer::builder().limited(1.0, 3).start().await;
    let c = h1();
    let url = server.url("/limited?key=k");

    for expected_remaining in [2u64, 1, 0] {
        let res = get(&c, &url).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.header("ratelimit-policy"), "\"default\";q=3;w=3");
        let signals = ServerSignals::from_headers(&res.headers, SystemTime::now());
        assert!(signals.malformed().is_empty(), "{:?}", signals.malformed());
        let rl = signals.rate_limit().unwrap();
        assert_eq!(rl.remaining(), expected_remaining, "{:?}", res.headers);
        assert_eq!(rl.limit(), Some(3));
        assert!(rl.reset() >= Duration::from_secs(1), "{rl:?}");
        assert_eq!(
            res.header("x-ratelimit-remaining"),
            expected_remaining.to_string()
        );
    }

    let refused = get(&c, &url).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), "1");
    let signals = ServerSignals::from_headers(&refused.headers, SystemTime::now());
    assert!(signals.malformed().is_empty(), "{:?}", signals.malformed());
    assert_eq!(signals.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(signals.rate_limit().unwrap().remaining(), 0);
    assert!(
        refused
            .header("ratelimit")
            .starts_with("\"default\";r=0;t=")
    );
    assert_eq!(
        server.limited_stats("k"),
        LimitedStats {
            allowed: 3,
            refused: 1
        }
    );

    // Other keys have their own credit.
    assert_eq!(
        get(&c, &server.url("/limited?key=other")).await.status,
        StatusCode::OK
    );

    // Waiting what Retry-After said is enough.
    tokio::time::sleep(signals.retry_delay().unwrap()).await;
    assert_eq!(get(&c, &url).await.status, StatusCode::OK);
    assert_eq!(
        server.limited_stats("k"),
        LimitedStats {
            allowed: 4,
            refused: 1
        }
    );
    assert_eq!(server.limited_stats("unknown"), LimitedStats::default());
}

#[tokio::test]
async fn bad_builder_settings_are_typed_errors() {
    let err = FaultServer::builder()
        .limited(-1.0, 3)
        .try_start()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::InvalidRate { .. }));
    let err = FaultServer::builder()
        .limited(1.0, 0)
        .try_start()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::InvalidBurst { burst: 0 }));
}

#[tokio::test]
async fn slow_delays_the_head() {
    let server = FaultServer::start().await;
    let c = h1();
    let started = tokio::time::Instant::now();
    let res = get(&c, &server.url("/slow?ms=150")).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(res.json(), json!({ "slept_ms": 150 }));
    assert_bad_param(&get(&c, &server.url("/slow?ms=-1")).await, "ms");
}

#[tokio::test]
async fn drip_sends_the_head_at_once_then_chunks_over_time() {
    let server = FaultServer::start().await;
    let c = h1();
    let started = tokio::time::Instant::now();
    let url = server.url("/drip?chunks=4&interval_ms=50&chunk_size=8");
    let res = c
        .request(request(Method::GET, &url).body(Full::default()).unwrap())
        .await
        .unwrap();
    let head_at = started.elapsed();
    assert_eq!(res.headers()[CONTENT_LENGTH], "32");
    let mut body = res.into_body();
    let mut got = Vec::new();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        frames += 1;
        got.extend_from_slice(frame.data_ref().unwrap());
    }
    let done_at = started.elapsed();
    // The chunks were paced after the head: four intervals of 50 ms, less
    // whatever delayed the head itself.
    let body_time = done_at.saturating_sub(head_at);
    assert!(
        body_time >= Duration::from_millis(150),
        "body took {body_time:?} after the head"
    );
    assert!(frames >= 2, "the chunks arrived in {frames} frame(s)");
    assert_eq!(got.len(), 32);
    assert_eq!(pattern_mismatch(0, &got), None);
}

#[tokio::test]
async fn reset_and_truncated_fail_mid_body() {
    let server = FaultServer::start().await;
    let c = h1();

    for path in ["/reset", "/truncated"] {
        let res = c
            .request(
                request(Method::GET, &server.url(path))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let declared: usize = res.headers()[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let (got, failed) = read_partial(res.into_body()).await;
        assert!(failed, "{path}: the body ended cleanly");
        assert!(
            got.len() < declared,
            "{path}: {} of {declared} bytes",
            got.len()
        );
    }

    // On the wire: /reset is a TCP reset after exactly 100 body bytes ...
    let (got, end) = raw(&server, "/reset?after=100").await;
    assert_eq!(end.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
    assert_eq!(body_of(&got).len(), 100);
    assert_eq!(pattern_mismatch(0, body_of(&got)), None);
    // ... and /truncated a clean close after 50 of the 100 declared.
    let (got, end) = raw(&server, "/truncated").await;
    assert!(end.is_ok());
    assert!(
        String::from_utf8_lossy(&got)
            .to_ascii_lowercase()
            .contains("content-length: 100")
    );
    assert_eq!(body_of(&got).len(), 50);
}

#[tokio::test]
async fn echo_returns_what_was_sent() {
    let server = FaultServer::start().await;
    let c = h1();
    let req = request(Method::POST, &server.url("/echo?a=1&b=two"))
        .header("x-api-key", "k")
        .header("x-multi", "1")
        .header("x-multi", "2")
        .body(Full::new(Bytes::from_static(b"hello \xff")))
        .unwrap();
    let res = send(&c, req).await;
    assert_eq!(res.status, StatusCode::OK);
    let v = res.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/echo");
    assert_eq!(v["query"], "a=1&b=two");
    assert_eq!(v["headers"]["x-api-key"], "k");
    assert_eq!(v["headers"]["x-multi"], "1, 2");
    assert_eq!(v["body"], "hello \u{fffd}");
    assert_eq!(v["body_len"], 7);

    let v = get(&c, &server.url("/echo")).await.json();
    assert_eq!(
        (v["method"].as_str(), v["query"].is_null()),
        (Some("GET"), true)
    );
}

#[tokio::test]
async fn headers_route_sets_arbitrary_response_headers() {
    let server = FaultServer::start().await;
    let c = h1();
    let url = server.url(
        "/headers?status=429&retry-after=7&ratelimit=%22default%22%3Br%3D0%3Bt%3D7&x-a=1&x-a=2",
    );
    let res = get(&c, &url).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.header("ratelimit"), "\"default\";r=0;t=7");
    let all: Vec<_> = res.headers.get_all("x-a").iter().collect();
    assert_eq!(all, ["1", "2"]);
    let signals = ServerSignals::from_headers(&res.headers, SystemTime::now());
    assert_eq!(signals.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(signals.rate_limit().unwrap().remaining(), 0);

    assert_bad_param(
        &get(&c, &server.url("/headers?bad%20name=1")).await,
        "bad name",
    );
    assert_bad_param(
        &get(&c, &server.url("/headers?content-length=5")).await,
        "content-length",
    );
}

#[tokio::test]
async fn bytes_stream_the_pattern() {
    let server = FaultServer::start().await;
    let c = h1();
    let res = get(&c, &server.url("/bytes/1000003?chunk=4096")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("content-length"), "1000003");
    assert_eq!(res.body.len(), 1_000_003);
    assert_eq!(pattern_mismatch(0, &res.body), None);

    let res = get(&c, &server.url("/bytes/0")).await;
    assert_eq!((res.status, res.body.len()), (StatusCode::OK, 0));

    let head = send(
        &c,
        request(Method::HEAD, &server.url("/bytes/5000"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (head.header("content-length"), head.body.len()),
        ("5000", 0)
    );

    assert_bad_param(&get(&c, &server.url("/bytes/abc")).await, "n");
    assert_bad_param(&get(&c, &server.url("/bytes/17179869185")).await, "n");
    assert_bad_param(&get(&c, &server.url("/bytes/10?chunk=0")).await, "chunk");
}

async fn ranged(c: &HttpClient, url: &str, range: &str, if_range: Option<&str>) -> Fetched {
    let mut req = request(Method::GET, url).header(RANGE, range);
    if let Some(v) = if_range {
        req = req.header(IF_RANGE, v);
    }
    send(c, req.body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn file_serves_ranges_per_rfc_9110() {
    let server = FaultServer::start().await;
    let c = h1();
    let url = server.url("/file?size=1000");

    let full = get(&c, &url).await;
    assert_eq!(full.status, StatusCode::OK);
    assert_eq!(full.body.len(), 1000);
    assert_eq!(pattern_mismatch(0, &full.body), None);
    assert_eq!(full.header("accept-ranges"), "bytes");
    let etag = full.header("etag").to_owned();
    let modified = full.header("last-modified").to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");

    for (range, first, last) in [
        ("bytes=0-99", 0, 99),
        ("bytes=900-", 900, 999),
        ("bytes=-100", 900, 999),
        ("bytes=990-5000", 990, 999),
    ] {
        let res = ranged(&c, &url, range, None).await;
        assert_eq!(res.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            res.header("content-range"),
            format!("bytes {first}-{last}/1000")
        );
        assert_eq!(res.body.len() as u64, last - first + 1);
        assert_eq!(pattern_mismatch(first, &res.body), None, "{range}");
        assert_eq!(res.headers[ETAG], etag.as_str());
    }

    let res = ranged(&c, &url, "bytes=1000-", None).await;
    assert_eq!(res.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers[CONTENT_RANGE], "bytes */1000");

    // Several ranges, invalid syntax and other units: the whole body.
    for range in ["bytes=0-1,5-6", "bytes=5-1", "bytes=abc", "lines=0-1"] {
        let res = ranged(&c, &url, range, None).await;
        assert_eq!(
            (res.status, res.body.len()),
            (StatusCode::OK, 1000),
            "{range}"
        );
    }

    // If-Range: the current ETag or Last-Modified keeps the range; anything else does not.
    for (validator, status) in [
        (etag.as_str(), StatusCode::PARTIAL_CONTENT),
        (modified.as_str(), StatusCode::PARTIAL_CONTENT),
        ("\"stale\"", StatusCode::OK),
        (&format!("W/{etag}"), StatusCode::OK),
        ("Mon, 01 Jan 2024 00:00:00 GMT", StatusCode::OK),
    ] {
        let res = ranged(&c, &url, "bytes=10-19", Some(validator)).await;
        assert_eq!(res.status, status, "If-Range: {validator}");
    }
    // A different size is a different representation.
    let other = get(&c, &server.url("/file?size=999")).await;
    assert_ne!(other.headers[ETAG], etag.as_str());
    assert_eq!(other.headers[LAST_MODIFIED], modified.as_str());

    let head = send(
        &c,
        request(Method::HEAD, &url)
            .header(RANGE, "bytes=0-9")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        (head.header("content-length"), head.body.len()),
        ("1000", 0)
    );
    assert_eq!(get(&c, &server.url("/file")).await.body.len(), 1 << 20);
}

#[tokio::test]
async fn file_fail_at_cuts_then_a_ranged_resume_completes_it() {
    let server = FaultServer::start().await;
    let c = h1();
    let url = server.url("/file?size=300000&fail_at=123457");
    let res = c
        .request(request(Method::GET, &url).body(Full::default()).unwrap())
        .await
        .unwrap();
    let etag = res.headers()[ETAG].to_str().unwrap().to_owned();
    let (mut got, failed) = read_partial(res.into_body()).await;
    assert!(failed);
    assert_eq!(got.len(), 123_457);

    let rest = ranged(
        &c,
        &server.url("/file?size=300000"),
        "bytes=123457-",
        Some(&etag),
    )
    .await;
    assert_eq!(rest.status, StatusCode::PARTIAL_CONTENT);
    got.extend_from_slice(&rest.body);
    assert_eq!(got.len(), 300_000);
    assert_eq!(pattern_mismatch(0, &got), None);
}

// ---------------------------------------------------------------- /items

fn ids(data: &Value) -> Vec<u64> {
    data.as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let id = item["id"].as_u64().unwrap();
            assert_eq!(item["name"], format!("item-{id}"));
            id
        })
        .collect()
}

/// `(url, rel)` of every link of every Link line. The server's URLs hold no commas.
fn links(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(LINK)
        .iter()
        .flat_map(|line| line.to_str().unwrap().split(", "))
        .map(|link| {
            let (url, params) = link.split_once(">; ").unwrap();
            let rel = params.strip_prefix("rel=\"").unwrap().trim_end_matches('"');
            (url.trim_start_matches('<').to_owned(), rel.to_owned())
        })
        .collect()
}

fn rel<'a>(links: &'a [(String, String)], rel: &str) -> Option<&'a str> {
    links
        .iter()
        .find(|(_, r)| r == rel)
        .map(|(u, _)| u.as_str())
}

const MAX_PAGES: usize = 100;

/// Collects every id of a collection by following the style's protocol.
async fn crawl(
    server: &FaultServer,
    c: &HttpClient,
    style: &str,
    total: u64,
    per_page: u64,
) -> Vec<u64> {
    let (wire_style, extra) = match style {
        "cursor_gaps" => ("cursor", "&empty_pages=1"),
        other => (other, ""),
    };
    let base = format!("/items?style={wire_style}&total={total}&per_page={per_page}{extra}");
    let mut seen = Vec::new();
    let mut url = Some(base.clone());
    for page in 1..=MAX_PAGES as u64 {
        let Some(current) = url.take() else {
            return seen;
        };
        let res = get(c, &server.url(&current)).await;
        assert_eq!(res.status, StatusCode::OK);
        let v = res.json();
        url = match wire_style {
            "link" => {
                assert_eq!(res.header("x-total-count"), total.to_string());
                seen.extend(ids(&v));
                rel(&links(&res.headers), "next").map(str::to_owned)
            }
            "cursor" => {
                seen.extend(ids(&v["data"]));
                let next = v["next_cursor"].as_str();
                assert_eq!(
                    res.headers
                        .get("x-next-cursor")
                        .map(|h| h.to_str().unwrap()),
                    next
                );
                if let Some(cursor) = next {
                    assert!(
                        cursor.parse::<u64>().is_err(),
                        "cursor {cursor} is a bare number"
                    );
                }
                next.map(|cursor| format!("{base}&cursor={cursor}"))
            }
            "page" => {
                let pages = total.div_ceil(per_page);
                assert_eq!(
                    v,
                    json!({ "data": v["data"], "page": page, "per_page": per_page,
                            "total": total, "total_pages": pages })
                );
                let page_ids = ids(&v["data"]);
                assert_eq!(page_ids.is_empty(), page > pages, "page {page} of {pages}");
                seen.extend(page_ids);
                (page <= pages).then(|| format!("{base}&page={}", page + 1))
            }
            "offset" => {
                let offset = seen.len() as u64;
                assert_eq!(
                    v,
                    json!({ "data": v["data"], "offset": offset, "limit": per_page, "total": total })
                );
                let page_ids = ids(&v["data"]);
                let more = !page_ids.is_empty();
                seen.extend(page_ids);
                more.then(|| format!("{base}&offset={}", seen.len()))
            }
            "has_more" => {
                seen.extend(ids(&v["data"]));
                v["has_more"]
                    .as_bool()
                    .unwrap()
                    .then(|| format!("{base}&starting_after={}", seen.last().unwrap()))
            }
            other => unreachable!("{other}"),
        };
        assert!(
            seen.len() <= total as usize,
            "more ids than items: {seen:?}"
        );
    }
    panic!("style={style} total={total}: no end after {MAX_PAGES} pages");
}

#[tokio::test]
async fn items_every_style_yields_each_id_once_in_order() {
    let server = FaultServer::start().await;
    let c = h1();
    let per_page = 3;
    for style in [
        "link",
        "cursor",
        "cursor_gaps",
        "page",
        "offset",
        "has_more",
    ] {
        for total in [0, 1, per_page, per_page + 1, 10] {
            let seen = crawl(&server, &c, style, total, per_page).await;
            assert_eq!(
                seen,
                (0..total).collect::<Vec<_>>(),
                "style={style} total={total}"
            );
        }
    }
}

#[tokio::test]
async fn items_link_headers_follow_the_contract() {
    let server = FaultServer::start().await;
    let c = h1();

    let res = get(
        &c,
        &server.url("/items?style=link&page=2&per_page=10&total=95&extra=x%20y"),
    )
    .await;
    let lines: Vec<_> = res
        .headers
        .get_all(LINK)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "</items?style=link&page=3&per_page=10&total=95&extra=x%20y>; rel=\"next\", \
             </items?style=link&page=1&per_page=10&total=95&extra=x%20y>; rel=\"prev\"",
            "</items?style=link&page=1&per_page=10&total=95&extra=x%20y>; rel=\"first\", \
             </items?style=link&page=10&per_page=10&total=95&extra=x%20y>; rel=\"last\"",
        ]
    );
    assert_eq!(ids(&res.json()), (10..20).collect::<Vec<_>>());

    // Defaults, and total=0: one empty page, only first/last.
    let res = get(&c, &server.url("/items")).await;
    assert_eq!(res.header("x-total-count"), "100");
    assert_eq!(ids(&res.json()), (0..10).collect::<Vec<_>>());
    let res = get(&c, &server.url("/items?total=0")).await;
    assert_eq!(res.body, "[]");
    assert_eq!(res.headers.get_all(LINK).iter().count(), 1);
    assert_eq!(
        rel(&links(&res.headers), "last"),
        Some("/items?style=link&page=1&per_page=10&total=0")
    );

    // Out of range: empty, still 200.
    let res = get(&c, &server.url("/items?page=50")).await;
    assert_eq!(
        (res.status, res.body.as_ref()),
        (StatusCode::OK, &b"[]"[..])
    );

    // loop=1: page 2 leads back to page 1.
    let res = get(
        &c,
        &server.url("/items?style=link&page=2&per_page=10&total=95&loop=1"),
    )
    .await;
    let next = rel(&links(&res.headers), "next").unwrap().to_owned();
    assert!(
        next.contains("&page=1&") && next.contains("loop=1"),
        "{next}"
    );

    // cross_origin=1: next is absolute on another origin.
    let res = get(&c, &server.url("/items?cross_origin=1")).await;
    let next = rel(&links(&res.headers), "next").unwrap().to_owned();
    assert!(next.starts_with("http://evil.invalid/items?"), "{next}");
}

#[tokio::test]
async fn items_cursor_loop_and_gaps() {
    let server = FaultServer::start().await;
    let c = h1();
    let base = "/items?style=cursor&per_page=5&total=20";
    let first = get(&c, &server.url(base)).await.json();
    let c1 = first["next_cursor"].as_str().unwrap().to_owned();
    let second = get(&c, &server.url(&format!("{base}&cursor={c1}")))
        .await
        .json();
    assert_eq!(ids(&second["data"]), (5..10).collect::<Vec<_>>());
    assert_ne!(second["next_cursor"], c1.as_str());

    let looped = get(&c, &server.url(&format!("{base}&loop=1&cursor={c1}")))
        .await
        .json();
    assert_eq!(
        looped["next_cursor"],
        c1.as_str(),
        "page 2 must hand back its own cursor"
    );

    let first = get(&c, &server.url(&format!("{base}&empty_pages=1")))
        .await
        .json();
    let gap_cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let gap = get(
        &c,
        &server.url(&format!("{base}&empty_pages=1&cursor={gap_cursor}")),
    )
    .await
    .json();
    assert_eq!(gap["data"], json!([]));
    assert!(gap["next_cursor"].is_string());

    let seen: HashSet<_> = [c1, gap_cursor].into();
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn items_bad_params_name_the_param() {
    let server = FaultServer::start().await;
    let c = h1();
    for (query, param) in [
        ("per_page=0", "per_page"),
        ("per_page=1001", "per_page"),
        ("total=10000001", "total"),
        ("total=-1", "total"),
        ("style=scroll", "style"),
        ("page=0", "page"),
        ("style=cursor&cursor=42", "cursor"),
        ("style=offset&limit=0", "limit"),
        ("style=has_more&starting_after=x", "starting_after"),
        ("latency_ms=999999", "latency_ms"),
        ("loop=maybe", "loop"),
    ] {
        assert_bad_param(
            &get(&c, &server.url(&format!("/items?{query}"))).await,
            param,
        );
    }
    let started = tokio::time::Instant::now();
    let res = get(
        &c,
        &server.url("/items?latency_ms=60&total=10000000&per_page=1000&page=10000"),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(ids(&res.json()).first(), Some(&9_999_000));
}

// ---------------------------------------------------------------- server

#[tokio::test]
async fn unknown_paths_are_404_with_the_route_list() {
    let server = FaultServer::start().await;
    let res = get(&h1(), &server.url("/nope")).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert!(
        res.json()["routes"]
            .as_array()
            .unwrap()
            .contains(&json!("/items"))
    );
    assert_eq!(server.hits("/nope"), 1);
}

#[tokio::test]
async fn stats_count_connections_requests_and_hits() {
    let server = FaultServer::start().await;

    // One client reuses one connection.
    let c = h1();
    let mut conn_ids = HashSet::new();
    for _ in 0..3 {
        let res = get(&c, &server.url("/status/200")).await;
        conn_ids.insert(res.header("x-fault-connection").to_owned());
    }
    assert_eq!(conn_ids.len(), 1);
    assert_eq!(server.requests_per_connection(), [3]);

    // Three at once need three connections.
    let slow = server.url("/slow?ms=100");
    let clients = [h1(), h1(), h1()];
    let (a, b, d) = tokio::join!(
        get(&clients[0], &slow),
        get(&clients[1], &slow),
        get(&clients[2], &slow)
    );
    assert!(
        [a.status, b.status, d.status]
            .iter()
            .all(|s| *s == StatusCode::OK)
    );

    let stats = server.stats();
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.connections_accepted, 4);
    assert!(stats.max_connections_open >= 3, "{stats:?}");
    assert!(stats.bytes_sent > 0);
    assert_eq!(server.hits("/status/200"), 3);
    assert_eq!(server.hits("/slow"), 3);
    assert_eq!(server.hits("/status"), 0);

    server.reset_stats();
    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.connections_accepted, stats.bytes_sent),
        (0, 0, 0)
    );
    assert_eq!(server.hits("/slow"), 0);
    assert!(server.requests_per_connection().is_empty());

    drop((c, clients));
    // Connections close when the clients go away.
    for _ in 0..100 {
        if server.stats().connections_open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.stats().connections_open, 0);
}

#[tokio::test]
async fn http2_prior_knowledge_works() {
    let server = FaultServer::start().await;
    let c = h2();
    let res = get(&c, &server.url("/echo")).await;
    assert_eq!(res.version, Version::HTTP_2);
    assert_eq!(res.json()["version"], "HTTP/2.0");

    let res = get(&c, &server.url("/bytes/200000")).await;
    assert_eq!(pattern_mismatch(0, &res.body), None);
    assert_eq!(res.body.len(), 200_000);

    let res = ranged(&c, &server.url("/file?size=1000"), "bytes=-10", None).await;
    assert_eq!(
        (res.status, res.body.len()),
        (StatusCode::PARTIAL_CONTENT, 10)
    );

    // Broken bodies break only their stream.
    for path in ["/reset", "/truncated", "/file?size=1000&fail_at=10"] {
        let res = c
            .request(
                request(Method::GET, &server.url(path))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let (_, failed) = read_partial(res.into_body()).await;
        assert!(failed, "{path} over HTTP/2 ended cleanly");
    }
    assert_eq!(
        get(&c, &server.url("/status/200")).await.status,
        StatusCode::OK
    );
    assert_eq!(server.stats().connections_accepted, 1);
}

#[tokio::test]
async fn drop_shuts_the_server_down() {
    let server = FaultServer::start().await;
    let addr = server.addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(idle.read(&mut buf).await.unwrap() > 0);

    server.shutdown().await;

    // The kept-alive connection is closed ...
    let n = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return 0,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the open connection was not closed");
    assert_eq!(n, 0);
    // ... and new ones are refused.
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn dropping_without_waiting_also_stops_it() {
    let server = FaultServer::start().await;
    let addr = server.addr();
    drop(server);
    let mut refused = false;
    for _ in 0..100 {
        tokio::task::yield_now().await;
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "the listener outlived the server");
}

#[tokio::test]
async fn head_requests_carry_length_without_body() {
    let server = FaultServer::start().await;
    let c = h1();
    for path in [
        "/status/503",
        "/items?total=5",
        "/file?size=77",
        "/bytes/12",
    ] {
        let get_len = get(&c, &server.url(path)).await.body.len();
        let res = send(
            &c,
            request(Method::HEAD, &server.url(path))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(res.body.len(), 0, "{path}");
        assert_eq!(res.header("content-length"), get_len.to_string(), "{path}");
    }
}

// Regressions found in review.

#[tokio::test]
async fn items_answer_the_largest_page_numbers_without_panicking() {
    let server = FaultServer::start().await;
    let c = h1();
    for style in ["link", "page"] {
        for page in [u64::MAX, u64::MAX - 1] {
            let res = get(
                &c,
                &server.url(&format!("/items?style={style}&page={page}&total=10")),
            )
            .await;
            assert_eq!(res.status, StatusCode::OK, "{style} page {page}");
            let data = res.json();
            let items = if style == "link" {
                &data
            } else {
                &data["data"]
            };
            assert_eq!(items, &json!([]), "{style} page {page}");
        }
    }
    // Past the last page there is no next, only prev, first and last.
    let res = get(
        &c,
        &server.url(&format!("/items?page={}&total=0", u64::MAX)),
    )
    .await;
    let links = links(&res.headers);
    assert!(rel(&links, "next").is_none(), "{links:?}");
    assert!(
        rel(&links, "prev")
            .unwrap()
            .contains(&format!("page={}", u64::MAX - 1))
    );
    for query in [
        format!("style=offset&offset={}", u64::MAX),
        format!("style=has_more&starting_after={}", u64::MAX),
        format!("style=cursor&cursor=c{:x}", u64::MAX),
        format!("style=cursor&cursor=e{:x}&empty_pages=1", u64::MAX),
    ] {
        let res = get(&c, &server.url(&format!("/items?{query}"))).await;
        assert_eq!(res.status, StatusCode::OK, "{query}");
    }
    assert_eq!(server.hits("/items"), 9, "the server served every request");
}

#[tokio::test]
async fn limited_t_is_the_time_until_more_quota_and_matches_retry_after() {
    // One request per 2 s, burst 3: a token comes back every 2 s, the whole
    // burst only after 6 s. `t` (draft -10 on) and `X-RateLimit-Reset` say
    // when the next one comes back, so a 429's `t` is its `Retry-After`.
    let server = FaultServer::builder().limited(0.5, 3).start().await;
    let c = h1();
    let url = server.url("/limited?key=t");
    for remaining in [2, 1, 0] {
        let res = get(&c, &url).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.header("ratelimit-policy"), "\"default\";q=3;w=6");
        assert_eq!(
            res.header("ratelimit"),
            format!("\"default\";r={remaining};t=2")
        );
        assert_eq!(res.header("x-ratelimit-reset"), "2");
    }
    let refused = get(&c, &url).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), "2");
    assert_eq!(refused.header("ratelimit"), "\"default\";r=0;t=2");
    assert_eq!(refused.header("x-ratelimit-reset"), "2");
    let signals = ServerSignals::from_headers(&refused.headers, SystemTime::now());
    assert_eq!(signals.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(
        signals.rate_limit().unwrap().reset(),
        Duration::from_secs(2)
    );
}

#[tokio::test]
async fn an_empty_file_answers_a_suffix_range_with_its_empty_body() {
    // RFC 9110 §14.1.1: a suffix range with a non-zero length is
    // satisfiable, also for an empty representation; no 206 can express it,
    // so the answer is 200 with the (empty) representation.
    let server = FaultServer::start().await;
    let c = h1();
    let url = server.url("/file?size=0");
    let res = ranged(&c, &url, "bytes=-5", None).await;
    assert_eq!(
        (res.status, res.body.len(), res.header("content-length")),
        (StatusCode::OK, 0, "0")
    );
    assert!(!res.headers.contains_key(CONTENT_RANGE));
    // A first-pos range still cannot overlap nothing, nor can `-0`.
    for range in ["bytes=0-", "bytes=-0"] {
        let res = ranged(&c, &url, range, None).await;
        assert_eq!(res.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(res.headers[CONTENT_RANGE], "bytes */0");
    }
}

#[tokio::test]
async fn two_range_field_lines_are_invalid_and_ignored() {
    // `Range` is a singleton field: two lines make it invalid, and an
    // invalid Range is ignored (RFC 9110 §14.2), so the whole body is sent.
    let server = FaultServer::start().await;
    let c = h1();
    let url = server.url("/file?size=100");
    let req = request(Method::GET, &url)
        .header(RANGE, "bytes=0-9")
        .header(RANGE, "bytes=20-29")
        .body(Full::default())
        .unwrap();
    assert_eq!(req.headers().get_all(RANGE).iter().count(), 2);
    let res = send(&c, req).await;
    assert_eq!((res.status, res.body.len()), (StatusCode::OK, 100));
    assert!(!res.headers.contains_key(CONTENT_RANGE));
    assert_eq!(pattern_mismatch(0, &res.body), None);
}

#[tokio::test]
async fn headers_route_sends_percent_escaped_bytes_as_they_are() {
    let server = FaultServer::start().await;
    let c = h1();
    let res = get(
        &c,
        &server.url("/headers?x-a=%FF%FEok&x-b=caf%C3%A9&x-c=a+b"),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["x-a"].as_bytes(), b"\xff\xfeok");
    assert_eq!(res.headers["x-b"].as_bytes(), "café".as_bytes());
    assert_eq!(res.headers["x-c"].as_bytes(), b"a b");
    // Bytes a header value cannot hold are still refused by name.
    assert_bad_param(&get(&c, &server.url("/headers?x-d=a%0Ab")).await, "x-d");
}

#[tokio::test]
async fn echo_keeps_each_header_line_and_its_exact_bytes() {
    let server = FaultServer::start().await;
    let c = h1();
    let req = request(Method::GET, &server.url("/echo"))
        .header("x-raw", HeaderValue::from_bytes(b"\xff\xfeok").unwrap())
        .header("x-raw", "caf\u{e9}")
        .body(Full::default())
        .unwrap();
    let v = send(&c, req).await.json();
    // The readable view is lossy and joins the lines...
    assert_eq!(v["headers"]["x-raw"], "\u{fffd}\u{fffd}ok, caf\u{e9}");
    // ...the lines keep both apart, byte for byte.
    let lines: Vec<_> = v["header_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|line| line[0] == "x-raw")
        .map(|line| serde_json::from_value::<Vec<u8>>(line[1].clone()).unwrap())
        .collect();
    assert_eq!(lines, [&b"\xff\xfeok"[..], "caf\u{e9}".as_bytes()]);
}
