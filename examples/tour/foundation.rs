//! Chapter 1: the seam every policy speaks, and what servers say.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steadfast_core::signals::ServerSignals;
use steadfast_core::{Classify, DefaultClassifier, Outcome, Transport, transport_fn};
use steadfast_testkit::{FaultServer, MockTransport, Reply, Route};

use crate::BoxError;
use crate::say::{detail, line};

pub(crate) async fn run(server: &FaultServer) -> Result<(), BoxError> {
    // Any client becomes a Transport with one function: here, bare hyper-util.
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let transport = transport_fn(move |req: Request<Empty<Bytes>>| hyper.request(req));
    line("A Transport is one async `send`; bare hyper-util becomes one with `transport_fn`.");

    for path in [
        "/status/503?retry_after=2",
        "/status/429?retry_after=3&retry_after_date=1",
        "/status/404",
    ] {
        let req = Request::get(server.url(path)).body(Empty::new())?;
        let result = transport.send(req).await;
        let outcome = DefaultClassifier.classify(&result);
        let res = result?;
        line(format!("GET {path}"));
        detail("status", res.status());
        if let Some(v) = res.headers().get("retry-after") {
            detail("Retry-After", v.to_str()?);
        }
        detail("classified as", outcome_text(&outcome));
    }
    line("(An HTTP-date has whole seconds: \"retry after 3 s\" sent as a date reads as 3 to 4 s.)");

    line("");
    line(format!(
        "GET /limited ×7 (server-side GCRA: {} req/s, burst {}); each response's signals, parsed:",
        steadfast_testkit::fault::DEFAULT_LIMITED_RATE,
        steadfast_testkit::fault::DEFAULT_LIMITED_BURST
    ));
    for i in 1..=7 {
        let res = transport
            .send(Request::get(server.url("/limited?key=tour")).body(Empty::new())?)
            .await?;
        let signals = ServerSignals::from_headers(res.headers(), SystemTime::now());
        let rl = signals
            .rate_limit()
            .expect("the FaultServer always sends RateLimit");
        detail(
            &format!("#{i}: {}", res.status().as_u16()),
            format!(
                "remaining {}/{}, reset in {}, retry after {}",
                rl.remaining(),
                rl.limit().unwrap_or_default(),
                secs(rl.reset()),
                signals.retry_after().map_or_else(|| "-".to_owned(), secs)
            ),
        );
    }

    line("(The headers count whole seconds: a wait under one second is sent as 1 s.)");

    let vendor = "/headers?x-ratelimit-limit=500&x-ratelimit-remaining=0&x-ratelimit-reset=6m0s";
    let res = transport
        .send(Request::get(server.url(vendor)).body(Empty::new())?)
        .await?;
    let signals = ServerSignals::from_headers(res.headers(), SystemTime::now());
    line("Vendor headers (X-RateLimit-Reset: 6m0s, Go duration form):");
    detail(
        "retry delay",
        signals
            .retry_delay()
            .map_or_else(|| "none".to_owned(), secs),
    );

    line("");
    line("MockTransport, scripted: 503 with Retry-After twice, then 200 JSON.");
    let mock = MockTransport::new();
    let route = mock
        .on(Route::get("/orders/{id}"))
        .reply_times(2, Reply::status(503).header("retry-after", 1))
        .reply(
            Reply::json(200, serde_json::json!({"id": 42, "state": "shipped"}))
                .delay(Duration::from_millis(5)),
        );
    for _ in 0..3 {
        let res = mock
            .send(Request::get("http://api.test/orders/42").body(Empty::<Bytes>::new())?)
            .await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        detail(
            &format!("GET /orders/42 → {status}"),
            String::from_utf8_lossy(&body),
        );
    }
    route.assert_called(3);
    let err = mock
        .send(Request::get("http://api.test/order/42").body(Empty::<Bytes>::new())?)
        .await
        .unwrap_err();
    line("A typo in the path gets an error that names the closest route:");
    detail("error", err);
    Ok(())
}

/// A classifier's verdict, in words.
fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Retryable { after: Some(after) } => {
            format!(
                "retryable, after {} (the server's Retry-After)",
                secs(*after)
            )
        }
        Outcome::Retryable { after: None } => "retryable, after the backoff".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Seconds, to a tenth.
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
