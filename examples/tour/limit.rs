//! Chapter: rate and concurrency limits — a rate limit held, pacing from the
//! server's own headers, a bulkhead rejecting.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steadfast_core::{Transport, TransportExt, transport_fn};
use steadfast_limit::{
    ConcurrencyConfig, ConcurrencyLimitLayer, HostKey, PacingConfig, PacingLayer, Quota,
    RateLimitLayer,
};
use steadfast_testkit::FaultServer;
use tokio::time::Instant;

use crate::BoxError;
use crate::say::{detail, line};

/// Sends `total` GETs to `url` from `workers` tasks; counts 200s and 429s.
async fn burst<T>(client: &T, url: &str, total: u64, workers: usize) -> (u64, u64, Duration)
where
    T: Transport<Empty<Bytes>> + Clone,
    T::Body: http_body::Body<Data = Bytes> + Send,
    <T::Body as http_body::Body>::Error: Send,
    T::Error: std::fmt::Debug,
{
    let (ok, refused, next) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            let (ok, refused, next) = (ok.clone(), refused.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let req = Request::get(&url).body(Empty::new()).unwrap();
                    let res = client.send(req).await.expect("the loopback server answers");
                    let status = res.status();
                    let _ = res.into_body().collect().await;
                    match status {
                        StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        start.elapsed(),
    )
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:.1} req/s", n as f64 / d.as_secs_f64())
}

pub(crate) async fn run(server: &FaultServer) -> Result<(), BoxError> {
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let raw = transport_fn(move |req: Request<Empty<Bytes>>| hyper.request(req));
    quota_held(server, &raw).await;
    paced_by_the_server(&raw).await?;
    bulkhead(server).await
}

/// Our own quota, under the server's.
async fn quota_held<T>(server: &FaultServer, raw: &T)
where
    T: Transport<Empty<Bytes>> + Clone,
    T::Body: http_body::Body<Data = Bytes> + Send,
    <T::Body as http_body::Body>::Error: Send,
    T::Error: std::fmt::Debug,
{
    let rate_layer = RateLimitLayer::new(
        Quota::per_second(NonZeroU32::new(8).unwrap()).burst(NonZeroU32::new(2).unwrap()),
    );
    let limited = raw.clone().with(rate_layer.clone());
    line("A GCRA rate limit of 8/s (burst 2) in front of /limited, which allows 10/s (burst 5):");
    let (ok, refused, took) = burst(&limited, &server.url("/limited?key=tour-rate"), 12, 4).await;
    let s = rate_layer.limiter().snapshot();
    detail(
        "sent by 4 tasks",
        format!("{ok} × 200, {refused} × 429 in {took:.2?}: 2 at once, then one every 125 ms"),
    );
    detail(
        "limiter",
        format!(
            "{} of them waited in its FIFO line, {:.2?} of waiting in all",
            s.queued, s.total_wait
        ),
    );
}

/// No rate configured at all: the server's headers set the pace.
async fn paced_by_the_server<T>(raw: &T) -> Result<(), BoxError>
where
    T: Transport<Empty<Bytes>> + Clone,
    T::Body: http_body::Body<Data = Bytes> + Send,
    <T::Body as http_body::Body>::Error: Send,
    T::Error: std::fmt::Debug,
{
    let api = FaultServer::builder().limited(20.0, 20).start().await;
    line("");
    line("No configured rate: a second FaultServer allowing 20/s (burst 20), hit by 4 tasks.");
    let (ok, refused, took) = burst(raw, &api.url("/limited?key=tour-unpaced"), 30, 4).await;
    detail(
        "without pacing",
        format!("{ok} × 200, {refused} × 429 in {took:.2?}: the burst, then a wall of 429s"),
    );
    // A fresh server-side key: a full burst again, as for the first run.
    let url = api.url("/limited?key=tour-paced");
    let pacing = PacingLayer::new(PacingConfig::default());
    let paced = raw.clone().with(pacing.clone());
    let (ok, refused, took) = burst(&paced, &url, 30, 4).await;
    detail(
        "with Pacing",
        format!(
            "{ok} × 200, {refused} × 429 in {took:.2?} ({})",
            rate(ok, took)
        ),
    );
    let view = pacing.pacer().view(&HostKey::of(&url.parse()?));
    detail(
        "pace learned",
        format!(
            "{:.1} req/s from `RateLimit: r=…;t=…` (remaining spread until reset)",
            view.rate_per_second.unwrap_or_default()
        ),
    );
    // The same layer, another route of the origin: a 429 pauses all of it.
    let retry_after = raw.clone().with(pacing.clone());
    let t0 = Instant::now();
    drop(
        retry_after
            .send(Request::get(api.url("/status/429?retry_after=1")).body(Empty::new())?)
            .await?,
    );
    drop(
        retry_after
            .send(Request::get(api.url("/status/200")).body(Empty::new())?)
            .await?,
    );
    detail(
        "429 + Retry-After: 1",
        format!(
            "the next request to that origin waited {:.2?}",
            t0.elapsed()
        ),
    );

    Ok(())
}

/// A bulkhead: 2 in flight, 2 queued, the rest refused at once.
async fn bulkhead(server: &FaultServer) -> Result<(), BoxError> {
    line("");
    line("A bulkhead (2 in flight, queue of 2) in front of /slow?ms=300, 6 requests 5 ms apart,");
    line("each timed from its own start:");
    let bulkhead = ConcurrencyLimitLayer::new(
        ConcurrencyConfig::builder()
            .max_in_flight(2)
            .max_queue(2)
            .max_queue_wait(Duration::from_secs(1))
            .name("tour-bulkhead")
            .build()?,
    );
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let guarded =
        transport_fn(move |req: Request<Empty<Bytes>>| client.request(req)).with(bulkhead.clone());
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (guarded, url) = (guarded.clone(), server.url("/slow?ms=300"));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5 * i)).await; // arrive in order
                let start = Instant::now();
                let result = guarded
                    .send(Request::get(url).body(Empty::new()).unwrap())
                    .await;
                let outcome = match result {
                    Ok(res) => {
                        let status = res.status();
                        let _ = res.into_body().collect().await; // the permit is released here
                        format!("{status} after {:.2?}", start.elapsed())
                    }
                    Err(e) => format!(
                        "rejected after {:.2?}: {}",
                        start.elapsed(),
                        steadfast_core::Report::new(&e)
                    ),
                };
                (i, outcome)
            })
        })
        .collect();
    for t in tasks {
        let (i, outcome) = t.await?;
        detail(&format!("request #{}", i + 1), outcome);
    }
    let s = bulkhead.bulkhead().snapshot();
    detail(
        "bulkhead",
        format!(
            "{} admitted ({} after queueing), {} rejected (queue full), {} in flight now",
            s.acquired, s.waited, s.rejected_queue_full, s.in_flight
        ),
    );
    Ok(())
}
