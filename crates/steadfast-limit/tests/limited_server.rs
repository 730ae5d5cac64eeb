//! Pacing against the loopback FaultServer's `/limited` (server-side GCRA,
//! 429 + Retry-After + RateLimit headers), in real time.
//!
//! The client has no configured rate at all. With pacing, it must still get
//! ≥ 95 % of its requests through on the first try and reach ≥ 90 % of the
//! server's rate. Without pacing, the same client is printed for
//! comparison. Nothing here asserts speed beyond those two acceptance
//! numbers: the rate is measured with the client's own clock.
#![cfg(not(loom))] // the test tools need tokio's `net`, which loom builds leave out

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steadfast_core::signals::ServerSignals;
use steadfast_core::{Transport, TransportExt, transport_fn};
use steadfast_limit::{HostKey, PacingConfig, PacingLayer};
use steadfast_testkit::FaultServer;
use tokio::time::Instant;

/// The server's rate (requests per second) and burst. A burst of one
/// second's worth makes the policy's window exactly one second, so the
/// server's whole-second `RateLimit` fields describe its rate exactly, and
/// the same whether its `t` means the time until the burst has refilled or
/// until the next request's worth of quota (draft -10 on): `t=1` on every
/// success either way, and a `429` pauses for its `Retry-After`.
/// `tests/layers.rs` covers both meanings with a longer burst.
const RATE: f64 = 20.0;
const BURST: u32 = 20;
const WORKERS: usize = 4;
const RUN_FOR: Duration = Duration::from_millis(3_500);

#[derive(Debug, Default)]
struct Tally {
    logical: AtomicU64,
    first_try: AtomicU64,
    attempts: AtomicU64,
    refused: AtomicU64,
}

struct Report {
    logical: u64,
    first_try_share: f64,
    attempts: u64,
    refused: u64,
    rate: f64,
}

/// `WORKERS` tasks send logical requests back to back for `RUN_FOR`. Each
/// logical request is retried after the server's `Retry-After` until it
/// succeeds (as a retry layer would).
async fn drive<T>(client: T, url: String) -> Report
where
    T: Transport<Empty<Bytes>> + Clone,
    T::Body: http_body::Body<Data = Bytes> + Send,
    <T::Body as http_body::Body>::Error: Send,
{
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
            tokio::spawn(async move {
                while start.elapsed() < RUN_FOR {
                    tally.logical.fetch_add(1, Ordering::Relaxed);
                    for attempt in 0.. {
                        tally.attempts.fetch_add(1, Ordering::Relaxed);
                        let req = Request::get(&url).body(Empty::new()).unwrap();
                        let res = client.send(req).await.expect("the loopback server answers");
                        let (head, body) = res.into_parts();
                        let _ = body.collect().await;
                        if head.status == StatusCode::OK {
                            if attempt == 0 {
                                tally.first_try.fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                        assert_eq!(head.status, StatusCode::TOO_MANY_REQUESTS);
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                        let wait = ServerSignals::from_headers(
                            &head.headers,
                            std::time::SystemTime::now(),
                        )
                        .retry_delay()
                        .unwrap_or(Duration::from_secs(1));
                        tokio::time::sleep(wait).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let logical = tally.logical.load(Ordering::Relaxed);
    Report {
        logical,
        first_try_share: tally.first_try.load(Ordering::Relaxed) as f64 / logical as f64,
        attempts: tally.attempts.load(Ordering::Relaxed),
        refused: tally.refused.load(Ordering::Relaxed),
        rate: logical as f64 / elapsed.as_secs_f64(),
    }
}

fn print(label: &str, r: &Report) {
    println!(
        "pacing {label:>3}: {:>4} requests, {:>5.1} % first try, {:>4} attempts, {:>4} refused (429), \
         {:>5.1} req/s = {:>5.1} % of the server's {RATE}/s",
        r.logical,
        100.0 * r.first_try_share,
        r.attempts,
        r.refused,
        r.rate,
        100.0 * r.rate / RATE,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_alone_keeps_a_client_with_no_rate_within_the_servers_limit() {
    let server = FaultServer::builder().limited(RATE, BURST).start().await;
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let raw = transport_fn(move |req: Request<Empty<Bytes>>| {
        let hyper = hyper.clone();
        async move { hyper.request(req).await }
    });

    // Each run has its own server-side key, so each starts with a full burst.
    let off = drive(raw.clone(), server.url("/limited?key=off")).await;
    let pacing = PacingLayer::new(PacingConfig::default());
    let on = drive(raw.with(pacing.clone()), server.url("/limited?key=on")).await;

    print("off", &off);
    print("on", &on);
    let key = HostKey::of(&server.url("/").parse().unwrap());
    println!(
        "pacer: {:?}; {:?}",
        pacing.pacer().snapshot(),
        pacing.pacer().view(&key)
    );

    let stats = server.limited_stats("on");
    assert_eq!(stats.allowed, on.logical);
    assert!(
        on.first_try_share >= 0.95,
        "with pacing only {:.1} % succeeded on the first try",
        100.0 * on.first_try_share
    );
    assert!(
        on.rate >= 0.9 * RATE,
        "with pacing the client reached only {:.1} req/s of {RATE}",
        on.rate
    );
}
