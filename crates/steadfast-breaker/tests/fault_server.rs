//! The breaker over a real loopback server (FaultServer), with hyper-util's
//! client. Real time, short breaks; nothing asserts wall-clock speed.
#![cfg(not(loom))] // the test tools need tokio's `net`, which loom builds leave out

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, Error as HyperError};
use hyper_util::rt::TokioExecutor;
use steadfast_breaker::{Breaker, BreakerConfig, BreakerError, BreakerLayer, HalfOpen, State};
use steadfast_core::{Transport, TransportExt};
use steadfast_testkit::FaultServer;

/// hyper-util's pooled client as a Transport.
#[derive(Clone, Debug)]
struct Hyper(Client<HttpConnector, Empty<Bytes>>);

impl Transport<Empty<Bytes>> for Hyper {
    type Body = hyper::body::Incoming;
    type Error = HyperError;

    async fn send(
        &self,
        req: Request<Empty<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, HyperError> {
        self.0.request(req).await
    }
}

const BREAK: Duration = Duration::from_millis(200);

fn client() -> Breaker<Hyper> {
    let hyper = Hyper(Client::builder(TokioExecutor::new()).build_http());
    hyper.with(BreakerLayer::per_origin(
        BreakerConfig::builder()
            .name("fault-server")
            .consecutive_failures(3)
            .break_duration(BREAK)
            .break_growth(1.0)
            .half_open(HalfOpen::quick())
            .build()
            .unwrap(),
    ))
}

async fn get(client: &Breaker<Hyper>, url: &str) -> Result<u16, BreakerError<HyperError>> {
    let res = client
        .send(Request::get(url).body(Empty::new()).unwrap())
        .await?;
    let status = res.status().as_u16();
    // Read the body so the connection goes back to the pool.
    res.into_body().collect().await.unwrap();
    Ok(status)
}

fn breaker_state(client: &Breaker<Hyper>, server: &FaultServer) -> State {
    let key = format!("http://{}", server.addr());
    client.registry().unwrap().get(&key).unwrap().state()
}

#[tokio::test]
async fn opens_on_503_and_stops_sending() {
    let server = FaultServer::start().await;
    let client = client();
    let url = server.url("/status/503");

    for _ in 0..3 {
        assert_eq!(get(&client, &url).await.unwrap(), 503);
    }
    assert_eq!(breaker_state(&client, &server), State::Open);
    assert_eq!(server.hits("/status/503"), 3);

    // Open: fail fast, the server sees nothing, on any route of the origin.
    let requests = server.stats().requests;
    for path in ["/status/503", "/status/200", "/echo"] {
        for _ in 0..10 {
            let err = get(&client, &server.url(path)).await.unwrap_err();
            let open = err.as_open().expect("a rejection");
            assert_eq!(*open.key, format!("http://{}", server.addr()));
            assert!(open.retry_after <= BREAK);
        }
    }
    assert_eq!(server.stats().requests, requests);
    assert_eq!(server.hits("/status/503"), 3);

    // After the break exactly one probe goes out; still failing, so it reopens.
    tokio::time::sleep(BREAK).await;
    assert_eq!(get(&client, &url).await.unwrap(), 503);
    assert!(get(&client, &url).await.unwrap_err().is_open());
    assert_eq!(server.hits("/status/503"), 4);
    assert_eq!(breaker_state(&client, &server), State::Open);
}

#[tokio::test]
async fn recovers_when_the_route_heals() {
    let server = FaultServer::start().await;
    let client = client();
    // Fails three times for this key, then answers 200.
    let url = server.url("/flaky?fail=3&key=breaker-heal");

    for _ in 0..3 {
        assert_eq!(get(&client, &url).await.unwrap(), 503);
    }
    assert_eq!(breaker_state(&client, &server), State::Open);
    for _ in 0..5 {
        assert!(get(&client, &url).await.unwrap_err().is_open());
    }
    assert_eq!(
        server.hits("/flaky"),
        3,
        "no request reached the server while open"
    );

    tokio::time::sleep(BREAK).await;
    // The probe finds the route healed and closes the breaker.
    assert_eq!(get(&client, &url).await.unwrap(), 200);
    assert_eq!(breaker_state(&client, &server), State::Closed);
    for _ in 0..5 {
        assert_eq!(get(&client, &url).await.unwrap(), 200);
    }
    assert_eq!(server.hits("/flaky"), 9);
    let snap = client
        .registry()
        .unwrap()
        .get(&format!("http://{}", server.addr()))
        .unwrap()
        .snapshot();
    assert_eq!(snap.rejections, 5);
    assert_eq!(snap.transitions, 3);
}
