//! Each timeout phase and each broken exchange, against the loopback
//! FaultServer, reported as that phase with the right retry hint.

mod common;

use std::time::Duration;

use common::{get, read_all};
use steadfast_core::{Deadline, ErrorClass, TimeoutPhase, Transport};
use steadfast_hyper::{ErrorKind, HyperTransport};
use steadfast_testkit::FaultServer;

fn transport() -> steadfast_hyper::Builder {
    HyperTransport::builder()
}

#[tokio::test]
async fn read_timeout_fires_while_waiting_for_the_head() {
    let server = FaultServer::start().await;
    let t = transport()
        .read_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let err = t.send(get(&server.url("/slow?ms=5000"))).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Read),
        "{err:?}"
    );
    assert_eq!(
        ErrorClass::of(&err),
        ErrorClass::Timeout(Some(TimeoutPhase::Read))
    );
    assert!(err.may_have_reached_server());
    assert!(
        err.to_string().contains(&server.base_url().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn read_timeout_fires_between_body_frames() {
    let server = FaultServer::start().await;
    let t = transport()
        .read_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    // The head comes at once; the chunks are 2 s apart.
    let res = t
        .send(get(
            &server.url("/drip?chunks=3&interval_ms=2000&chunk_size=8")
        ))
        .await
        .expect("the head arrives within the read timeout");
    assert_eq!(res.status(), 200);
    let err = read_all(res.into_body()).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Read),
        "{err:?}"
    );
    assert!(err.may_have_reached_server());
}

#[tokio::test]
async fn a_slow_body_within_the_read_timeout_completes() {
    let server = FaultServer::start().await;
    let t = transport()
        .read_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let res = t
        .send(get(
            &server.url("/drip?chunks=4&interval_ms=30&chunk_size=8")
        ))
        .await
        .unwrap();
    assert_eq!(read_all(res.into_body()).await.unwrap().len(), 32);
}

/// The read timeout counts from the moment a connection takes the request,
/// not from the first poll: here the second request waits 0.8 s for the
/// only connection, then gets its head 0.5 s after sending, 1.3 s after it
/// started, well within a 1 s read timeout of its own.
#[tokio::test]
async fn the_wait_for_a_connection_does_not_count_against_the_read_timeout() {
    let server = FaultServer::start().await;
    let t = transport()
        .max_connections_per_host(1)
        .read_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let first = tokio::spawn({
        let (t, url) = (t.clone(), server.url("/slow?ms=800"));
        async move { read_all(t.send(get(&url)).await?.into_body()).await }
    });
    // Once the first request holds the only connection, the second must wait.
    while t.snapshot().connections_open == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let res = t.send(get(&server.url("/slow?ms=500"))).await;
    let res = res.expect("the head came 0.5 s after sending, within the read timeout");
    assert_eq!(res.status(), 200);
    let conn = res
        .extensions()
        .get::<steadfast_hyper::ConnectionInfo>()
        .unwrap();
    assert_eq!(
        conn.requests(),
        2,
        "the second request on the only connection"
    );
    first.await.unwrap().unwrap();
    assert_eq!(
        server.stats().connections_accepted,
        1,
        "both on one connection"
    );
}

#[tokio::test]
async fn connect_timeout_fires_when_the_server_never_accepts() {
    let hole = common::blackhole().await;
    let t = transport()
        .connect_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = t
        .send(get(&format!("http://{}/", hole.addr)))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Connect),
        "{err:?}"
    );
    assert!(!err.may_have_reached_server());
    assert!(ErrorClass::of(&err).request_not_sent());
    assert_eq!(
        t.pool_permits_in_use(),
        0,
        "the failed connect gave its slot back"
    );
}

#[tokio::test]
async fn pool_timeout_names_the_host_and_the_counts() {
    let server = FaultServer::start().await;
    let t = transport()
        .max_connections_per_host(1)
        .pool_acquire_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let busy = tokio::spawn({
        let t = t.clone();
        let url = server.url("/slow?ms=1500");
        async move { t.send(get(&url)).await.map(|r| r.status()) }
    });
    // Wait until the only slot is taken by the slow request.
    while t.snapshot().connections_open == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = t.send(get(&server.url("/status/200"))).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::PoolTimeout { open: 1, max: 1 },
        "{err:?}"
    );
    assert_eq!(err.timeout_phase(), Some(TimeoutPhase::PoolAcquire));
    assert!(!err.may_have_reached_server());
    assert!(err.to_string().contains("1 of 1"), "{err}");
    assert!(err.to_string().contains(server.base_url()), "{err}");
    assert_eq!(t.snapshot().pool_timeouts, 1);
    assert_eq!(
        busy.await.unwrap().unwrap(),
        200,
        "the slow request was not disturbed"
    );
}

/// A request whose deadline has passed is not sent at all, even with an
/// idle connection to hand: it could only time out, after the server saw it.
#[tokio::test]
async fn a_deadline_already_past_sends_nothing() {
    let server = FaultServer::start().await;
    let t = transport().build().unwrap();
    t.send(get(&server.url("/echo"))).await.unwrap(); // an idle connection now
    let before = server.stats().requests;
    for past in [Duration::ZERO, Duration::from_millis(1)] {
        let mut req = get(&server.url("/echo"));
        Deadline::at(tokio::time::Instant::now() - past).apply(&mut req);
        let err = t.send(req).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Timeout(TimeoutPhase::Total),
            "{err:?}"
        );
        assert!(!err.may_have_reached_server(), "never sent: safe to retry");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.stats().requests, before, "the server saw nothing");
}

#[tokio::test]
async fn the_request_deadline_cuts_every_wait_short() {
    let server = FaultServer::start().await;
    let t = transport()
        .read_timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // While waiting for the head.
    let mut req = get(&server.url("/slow?ms=5000"));
    Deadline::after(Duration::from_millis(150)).apply(&mut req);
    let err = t.send(req).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Total),
        "{err:?}"
    );
    assert!(err.may_have_reached_server());

    // Between body frames.
    let mut req = get(&server.url("/drip?chunks=3&interval_ms=2000&chunk_size=8"));
    Deadline::after(Duration::from_millis(300)).apply(&mut req);
    let res = t.send(req).await.unwrap();
    let err = read_all(res.into_body()).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Total),
        "{err:?}"
    );

    // Before a connection is even assigned: nothing was sent.
    let hole = common::blackhole().await;
    let mut req = get(&format!("http://{}/", hole.addr));
    Deadline::after(Duration::from_millis(100)).apply(&mut req);
    let err = t.send(req).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout(TimeoutPhase::Total),
        "{err:?}"
    );
    assert!(!err.may_have_reached_server());
}

#[tokio::test]
async fn a_reset_mid_body_is_a_typed_read_error() {
    let server = FaultServer::start().await;
    let t = transport().build().unwrap();
    let res = t.send(get(&server.url("/reset?after=100"))).await.unwrap();
    let err = read_all(res.into_body()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Read, "{err:?}");
    assert_eq!(ErrorClass::of(&err), ErrorClass::Reset, "{err:?}");
    assert!(err.may_have_reached_server());
}

#[tokio::test]
async fn a_truncated_body_is_a_typed_read_error() {
    let server = FaultServer::start().await;
    let t = transport().build().unwrap();
    let res = t.send(get(&server.url("/truncated"))).await.unwrap();
    let err = read_all(res.into_body()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Read, "{err:?}");
    assert_eq!(ErrorClass::of(&err), ErrorClass::Reset, "{err:?}");
}

#[tokio::test]
async fn max_body_stops_a_large_response() {
    let server = FaultServer::start().await;
    let t = transport().max_body(1000).build().unwrap();
    // Announced by Content-Length: refused before reading.
    let res = t.send(get(&server.url("/bytes/5000"))).await.unwrap();
    let err = read_all(res.into_body()).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::BodyTooLarge { limit: 1000 },
        "{err:?}"
    );
    // Within the limit: fine.
    let res = t.send(get(&server.url("/bytes/1000"))).await.unwrap();
    assert_eq!(read_all(res.into_body()).await.unwrap().len(), 1000);
}

#[tokio::test]
async fn refused_connections_are_connect_errors_that_never_reached_the_server() {
    // Bind then drop: nothing listens on that port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = transport().build().unwrap();
    let err = t.send(get(&format!("http://{addr}/"))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err:?}");
    assert_eq!(ErrorClass::of(&err), ErrorClass::Connect);
    assert!(!err.may_have_reached_server());
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_happens() {
    let t = transport().build().unwrap();
    let err = t
        .send(get("/relative/path?api_key=secret"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(
        !format!("{err} {err:?}").contains("secret"),
        "a query can carry credentials: {err:?}"
    );
    let err = t.send(get("ftp://example.test/")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(!err.may_have_reached_server());
    assert_eq!(t.snapshot().requests, 0);
}

#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn https_without_the_rustls_feature_says_so() {
    let t = transport().build().unwrap();
    let err = t.send(get("https://example.test/")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("rustls"), "{source}");
}

#[tokio::test]
async fn request_bodies_of_every_kind_are_sent() {
    use http_body_util::Full;
    use steadfast_core::ReplayBody;

    let server = FaultServer::start().await;
    let t = transport().build().unwrap();
    let echo = |res: http::Response<steadfast_hyper::HyperBody>| async move {
        let body = read_all(res.into_body()).await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["body"].clone()
    };

    let req = http::Request::post(server.url("/echo"))
        .body(Full::new(bytes::Bytes::from_static(b"full")))
        .unwrap();
    assert_eq!(echo(t.send(req).await.unwrap()).await, "full");

    let req = http::Request::post(server.url("/echo"))
        .body(ReplayBody::new(
            Full::new(bytes::Bytes::from_static(b"replay")),
            1024,
        ))
        .unwrap();
    assert_eq!(echo(t.send(req).await.unwrap()).await, "replay");

    let res = t.send(get(&server.url("/echo"))).await.unwrap();
    assert_eq!(echo(res).await, "");
}

/// A request body that sends one chunk, then fails.
struct FailingBody(bool);

impl http_body::Body for FailingBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let first = !std::mem::replace(&mut self.0, true);
        std::task::Poll::Ready(Some(if first {
            Ok(http_body::Frame::data(bytes::Bytes::from_static(b"chunk")))
        } else {
            Err(std::io::Error::other("the caller's body broke"))
        }))
    }
}

fn protocols() -> Vec<(&'static str, steadfast_hyper::Builder)> {
    vec![
        ("HTTP/1.1", transport()),
        #[cfg(feature = "http2")]
        ("h2c", transport().http2_prior_knowledge()),
    ]
}

#[tokio::test]
async fn a_failing_request_body_is_a_request_body_error() {
    let server = FaultServer::start().await;
    for (protocol, builder) in protocols() {
        let t = builder.build().unwrap();
        let req = http::Request::post(server.url("/echo"))
            .body(FailingBody(false))
            .unwrap();
        let err = t.send(req).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RequestBody, "{protocol}: {err:?}");
        assert!(err.may_have_reached_server(), "{protocol}");
    }
}

/// A download piped into an upload: the upload's body is a response of
/// this transport, so when the download breaks, the upload's error chain
/// holds our own error for the download. The upload failed by its body,
/// and says so, naming its own host.
#[tokio::test]
async fn a_broken_download_piped_into_an_upload_is_the_uploads_body_error() {
    let server = FaultServer::start().await;
    for (protocol, builder) in protocols() {
        let t = builder.build().unwrap();
        let download = t.send(get(&server.url("/truncated"))).await.unwrap();
        let req = http::Request::post(server.url("/echo"))
            .body(download.into_body())
            .unwrap();
        let err = t.send(req).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RequestBody, "{protocol}: {err:?}");
        assert!(err.may_have_reached_server(), "{protocol}");
    }
}

/// hyper reports a connection whose task was dropped mid-request (its
/// runtime shut down: a transport shared with a runtime that is gone) as
/// a "user" error with a cause, like a failing request body. It is the
/// connection's failure: a broken read that may have reached the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_with_its_runtime_is_a_read_error_not_the_bodys() {
    let server = FaultServer::start().await;
    for (protocol, builder) in protocols() {
        let t = builder.build().unwrap();
        let (pooled_tx, pooled_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Runtime A opens the connection (its task lives there) and pools it.
        let runtime_a = std::thread::spawn({
            let t = t.clone();
            let url = server.url("/status/200");
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let res = t.send(get(&url)).await.unwrap();
                    read_all(res.into_body()).await.unwrap();
                    pooled_tx.send(()).unwrap();
                    let _ = stop_rx.await;
                });
                // Drops the connection's task, in the middle of B's request.
                drop(rt);
            }
        });
        pooled_rx.await.unwrap();
        let before = server.hits("/slow");
        // Runtime B (this test's) sends over the pooled connection.
        let slow = tokio::spawn({
            let t = t.clone();
            let url = server.url("/slow?ms=3000");
            async move { t.send(get(&url)).await }
        });
        while server.hits("/slow") == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(()).unwrap();
        let err = slow.await.unwrap().unwrap_err();
        tokio::task::spawn_blocking(move || runtime_a.join().unwrap())
            .await
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Read, "{protocol}: {err:?}");
        assert!(err.may_have_reached_server(), "{protocol}");
        assert_eq!(
            ErrorClass::of(&err),
            ErrorClass::Reset,
            "{protocol}: {err:?}"
        );
    }
}

/// Connects in flight hold slots too: a pool timeout while every slot is
/// taken by a connect still says the cap is full.
#[tokio::test]
async fn pool_timeout_counts_the_slots_connects_hold() {
    let hole = common::blackhole().await;
    let t = transport()
        .max_connections_per_host(2)
        .connect_timeout(Duration::from_secs(30))
        .pool_acquire_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let url = format!("http://{}/", hole.addr);
    let connecting: Vec<_> = (0..2)
        .map(|_| {
            let (t, url) = (t.clone(), url.clone());
            tokio::spawn(async move { t.send(get(&url)).await })
        })
        .collect();
    while t.pool_permits_in_use() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = t.send(get(&url)).await.unwrap_err();
    assert_eq!(t.snapshot().connections_open, 0, "nothing connected yet");
    assert_eq!(
        err.kind(),
        ErrorKind::PoolTimeout { open: 2, max: 2 },
        "{err:?}"
    );
    assert!(err.to_string().contains("2 of 2"), "{err}");
    for c in connecting {
        c.abort();
    }
}
