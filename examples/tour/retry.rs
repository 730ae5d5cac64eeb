//! Chapter: retries with their delays, Retry-After honoured (and refused
//! when it cannot fit the deadline), the retry budget stopping a storm, and
//! a hedge beating a slow response.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steadfast_backoff::schedule::{Exponential, ScheduleExt};
use steadfast_backoff::{Backoff, Hedging, Jitter, RetryConfig, RetryLayer};
use steadfast_core::{Transport, TransportExt, transport_fn};
use steadfast_testkit::FaultServer;

use crate::BoxError;
use crate::say::{detail, line};

type Body = Empty<Bytes>;
type HyperError = hyper_util::client::legacy::Error;

/// Bare hyper-util as a Transport.
fn hyper() -> impl Transport<Body, Body = impl http_body::Body + Send, Error = HyperError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    transport_fn(move |req: Request<Body>| client.request(req))
}

fn get(url: &str) -> Request<Body> {
    Request::get(url).body(Empty::new()).expect("a valid URL")
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1_000.0)
}

pub(crate) async fn run(server: &FaultServer) -> Result<(), BoxError> {
    schedules();
    retries_with_delays(server).await?;
    retry_after(server).await?;
    budget_stops_a_storm(server).await?;
    hedge_beats_the_tail(server).await?;
    Ok(())
}

fn schedules() {
    line("Schedules are plain iterators of delays, usable without any HTTP:");
    let show = |d: Vec<Duration>| d.into_iter().map(ms).collect::<Vec<_>>().join(", ");
    let base = Duration::from_millis(100);
    detail(
        "exponential",
        show(
            Exponential::new(base)
                .max_delay(Duration::from_secs(10))
                .take(6)
                .collect(),
        ),
    );
    detail(
        "+ full jitter",
        show(
            Exponential::new(base)
                .full_jitter()
                .seed(7)
                .take(6)
                .collect(),
        ),
    );
    detail(
        "decorrelated",
        show(
            Backoff::exponential(base)
                .jitter(Jitter::Decorrelated)
                .max_retries(6)
                .seed(7)
                .iter()
                .collect(),
        ),
    );
}

async fn retries_with_delays(server: &FaultServer) -> Result<(), BoxError> {
    line("");
    line("GET /flaky (503 twice, then 200) through Retry with the defaults:");
    let started = Instant::now();
    let config = RetryConfig::builder()
        .name("tour")
        .on_retry(move |attempt, delay, cause| {
            detail(
                &format!("  attempt {attempt} at {:>4}", ms(started.elapsed())),
                format!("{cause}; retrying in {}", ms(delay)),
            );
        })
        .build()?;
    let client = hyper().with(RetryLayer::new(config));
    let res = client
        .send(get(&server.url("/flaky?fail=2&key=tour-retry")))
        .await?;
    detail(
        &format!("  attempt 3 at {:>4}", ms(started.elapsed())),
        format!("{} — server hits: {}", res.status(), server.hits("/flaky")),
    );
    line("Delays are drawn uniformly from [0, 100 ms · 2ⁿ] (full jitter).");
    Ok(())
}

async fn retry_after(server: &FaultServer) -> Result<(), BoxError> {
    line("");
    line("The server says `Retry-After: 1`: longer than the backoff, so it is waited in full.");
    let client = hyper().with(RetryLayer::new(RetryConfig::default()));
    let t = Instant::now();
    let res = client
        .send(get(
            &server.url("/flaky?fail=1&key=tour-after&retry_after=1")
        ))
        .await?;
    detail(
        "result",
        format!("{} after {}", res.status(), ms(t.elapsed())),
    );

    line("`Retry-After: 30` with a 5 s deadline cannot be honoured: it fails at once.");
    let config = RetryConfig::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let client = hyper().with(RetryLayer::new(config));
    let t = Instant::now();
    match client
        .send(get(&server.url("/status/503?retry_after=30")))
        .await
    {
        Ok(res) => detail("unexpected", res.status()),
        Err(e) => {
            detail("after", ms(t.elapsed()));
            detail("error", e);
        }
    }
    Ok(())
}

async fn budget_stops_a_storm(server: &FaultServer) -> Result<(), BoxError> {
    const REQUESTS: usize = 100;
    line("");
    line(format!(
        "A storm: {REQUESTS} concurrent requests to a route that always answers 503."
    ));
    let backoff = Backoff::exponential(Duration::from_millis(10));
    for (label, config) in [
        (
            "without a budget",
            RetryConfig::builder()
                .backoff(backoff)
                .no_budget()
                .build()?,
        ),
        (
            "with the budget",
            RetryConfig::builder().backoff(backoff).build()?,
        ),
    ] {
        let layer = RetryLayer::new(config);
        let client = hyper().with(layer.clone());
        let before = server.hits("/status/503");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..REQUESTS {
            let client = client.clone();
            let url = server.url("/status/503");
            tasks.spawn(async move { client.send(get(&url)).await.map(|r| r.status()) });
        }
        while let Some(res) = tasks.join_next().await {
            res??;
        }
        let snap = layer.snapshot();
        detail(
            label,
            format!(
                "{} retries, {} refused by the budget, {} requests reached the server",
                snap.retries,
                snap.budget_exhausted,
                server.hits("/status/503") - before
            ),
        );
    }
    line("The budget lets retries add 20 % load (+10/s): the failing server is not hammered.");
    Ok(())
}

/// A route with a slow tail: every fifth response takes 600 ms, the others 20 ms.
fn slow_tail(
    server: &FaultServer,
) -> impl Transport<Body, Body = impl http_body::Body + Send, Error = HyperError> {
    let inner = hyper();
    let n = Arc::new(AtomicUsize::new(0));
    let (slow, fast) = (server.url("/slow?ms=600"), server.url("/slow?ms=20"));
    transport_fn(move |mut req: Request<Body>| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let url = if i % 5 == 4 { &slow } else { &fast };
        *req.uri_mut() = url.parse().expect("a valid URL");
        let inner = inner.clone();
        async move { inner.send(req).await }
    })
}

async fn hedge_beats_the_tail(server: &FaultServer) -> Result<(), BoxError> {
    line("");
    line("Hedging: a route where 1 response in 5 takes 600 ms instead of 20 ms.");
    for (label, hedging) in [
        ("no hedging", None),
        (
            "hedge after 60 ms",
            Some(Hedging::after(Duration::from_millis(60))),
        ),
    ] {
        let mut builder = RetryConfig::builder();
        if let Some(h) = hedging {
            builder = builder.hedging(h);
        }
        let layer = RetryLayer::new(builder.build()?);
        let client = slow_tail(server).with(layer.clone());
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let t = Instant::now();
            let res = client.send(get(&server.url("/slow"))).await?;
            debug_assert!(res.status().is_success());
            worst = worst.max(t.elapsed());
        }
        let snap = layer.snapshot();
        detail(
            label,
            format!(
                "slowest of 10: {:>6}   hedges sent {}, won {}",
                ms(worst),
                snap.hedges,
                snap.hedges_won
            ),
        );
    }
    line("The slow copy is cancelled as soon as the hedge answers.");
    Ok(())
}
