//! The retry layer against the loopback FaultServer, over a real hyper
//! client: real sockets, real time (no assertion on wall-clock speed).
#![cfg(not(loom))] // the test tools need tokio's `net`, which loom builds leave out

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steadfast_backoff::{Retry, RetryConfig};
use steadfast_core::{Transport, transport_fn};
use steadfast_testkit::FaultServer;

/// A minimal HTTP/1.1 transport on hyper-util's pooled client.
fn http_client()
-> impl Transport<Full<Bytes>, Body = Incoming, Error = hyper_util::client::legacy::Error> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    transport_fn(move |req: Request<Full<Bytes>>| {
        let client = client.clone();
        async move { client.request(req).await }
    })
}

fn get(url: String) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

async fn json(res: Response<Incoming>) -> serde_json::Value {
    let body = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn flaky_succeeds_on_the_third_attempt() {
    let server = FaultServer::start().await;
    let retry = Retry::new(http_client(), RetryConfig::default());

    let res = retry
        .send(get(server.url("/flaky?fail=2&key=backoff-it")))
        .await
        .unwrap();

    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["attempt"], 3);
    assert_eq!(server.hits("/flaky"), 3);
    let snap = retry.snapshot();
    assert_eq!((snap.attempts, snap.retries), (3, 2));
}

#[tokio::test]
async fn flaky_beyond_the_retry_limit_returns_the_last_503() {
    let server = FaultServer::start().await;
    let config = RetryConfig::builder().max_retries(1).build().unwrap();
    let retry = Retry::new(http_client(), config);
    let res = retry
        .send(get(server.url("/flaky?fail=5&key=backoff-limit")))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(json(res).await["attempt"], 2);
    assert_eq!(server.hits("/flaky"), 2);
}

#[tokio::test]
async fn limited_is_waited_out_by_honouring_retry_after() {
    // Burst 2, then one request per second: the third request is refused
    // with Retry-After: 1 and succeeds once that second has passed.
    let server = FaultServer::builder().limited(1.0, 2).start().await;
    let retry = Retry::new(http_client(), RetryConfig::default());

    for _ in 0..3 {
        let res = retry
            .send(get(server.url("/limited?key=backoff")))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    let stats = server.limited_stats("backoff");
    let snap = retry.snapshot();
    assert_eq!(stats.allowed, 3, "{stats:?}");
    assert!(stats.refused >= 1, "the server did push back: {stats:?}");
    // Every 429 was retried (after its Retry-After), none was given up on.
    assert_eq!(stats.refused, snap.retries, "{snap:?}");
    assert_eq!(server.hits("/limited"), snap.attempts);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported_with_its_cause() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = RetryConfig::builder().max_retries(2).build().unwrap();
    let retry = Retry::new(http_client(), config);
    let err = retry
        .send(get(format!("http://127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 3);
    assert_eq!(
        steadfast_core::ErrorClass::of(&err),
        steadfast_core::ErrorClass::Connect
    );
}
