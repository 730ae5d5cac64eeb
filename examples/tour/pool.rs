//! Chapter: pool metrics. PoolStats watches HyperTransport's connection
//! pool through a burst in which 30 % of the requests are cancelled, shows
//! that every connection came back, and catches a response body left unread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use steadfast_core::Transport;
use steadfast_hyper::HyperTransport;
use steadfast_pool::{HostSnapshot, LeakDetector, PoolStats};
use steadfast_testkit::FaultServer;
use tokio::time::Instant;

use crate::BoxError;
use crate::say::{detail, line};

const CAP: usize = 16;
const REQUESTS: u64 = 1_000;
const CONCURRENCY: u64 = 100;

pub(crate) async fn run(server: &FaultServer) -> Result<(), BoxError> {
    let stats = PoolStats::builder().name("tour").build()?;
    let transport = HyperTransport::builder()
        .max_connections_per_host(CAP)
        .pool_observer(stats.clone())
        .build()?;
    // The pool key is scheme://host:port; this handle reads one host.
    let host = stats.host_stats(server.base_url());
    let accepted_before = server.stats().connections_accepted;

    line(format!(
        "HyperTransport reports every pool event to PoolStats: {CAP} connections per host at most."
    ));
    line("Before any request, the pool is empty:");
    show(&host.snapshot());

    line("");
    line(format!(
        "A burst: {REQUESTS} GETs, {CONCURRENCY} at a time. 10 % are dropped before they are sent,"
    ));
    line("10 % 5 ms after (most still waiting for a connection, the others for a head that");
    line("takes 20 ms), and 10 % half-way through the body:");
    let cancelled = burst(&transport, server).await;
    // Connections killed by a cancellation close in the background.
    for _ in 0..100 {
        let h = host.snapshot();
        if h.in_use == 0 && h.open == server.stats().connections_open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let h = host.snapshot();
    detail("requests cancelled", cancelled);
    show(&h);
    detail(
        "server accepted",
        format!(
            "{} connections (the client opened {})",
            server.stats().connections_accepted - accepted_before,
            h.opened_total
        ),
    );
    line(format!(
        "{CONCURRENCY} requests share {CAP} connections, so most waited their turn (the wait above)."
    ));
    line(format!(
        "In use is back to {}: no cancelled request kept its connection. A response abandoned",
        h.in_use
    ));
    line(
        "half-way is drained in the background (drain_on_cancel: up to 64 KiB within 1 s), so its",
    );
    line("HTTP/1 connection is reused too instead of closed.");
    let t = transport.snapshot();
    detail(
        "drained",
        format!(
            "{} of {} abandoned responses",
            t.drains_succeeded, t.drains_started
        ),
    );

    line("");
    line("The leak detector: a response whose body nobody reads holds its connection.");
    let threshold = Duration::from_millis(300);
    line(format!(
        "Threshold here {} ms (default {} s), so the tour need not wait a minute:",
        threshold.as_millis(),
        steadfast_pool::DEFAULT_LEAK_THRESHOLD.as_secs()
    ));
    let detector = LeakDetector::builder(stats.clone())
        .threshold(threshold)
        .build()?;
    let forgotten = transport.send(get(&server.url("/bytes/4096"))).await?;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let report = detector.check(Instant::now());
    for held in &report.held {
        detail(
            "found",
            format!(
                "{} on {}, in use for {}",
                held.connection,
                held.host,
                ms(held.age)
            ),
        );
    }
    drop(forgotten);
    // The unread rest is drained in the background; the release follows.
    while transport.snapshot().drains_running() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    detail("after dropping it", detector.check(Instant::now()));
    line("Run it from a task you own with LeakDetector::spawn_watchdog(interval); findings are");
    line("logged with tracing::warn! and counted in held_too_long_total / stuck_total.");
    Ok(())
}

/// Sends `REQUESTS` requests from `CONCURRENCY` workers; returns how many
/// were cancelled.
async fn burst(transport: &HyperTransport, server: &FaultServer) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicU64::new(0));
    let urls = Arc::new([
        server.url("/bytes/512"),
        server.url("/slow?ms=20"),
        server.url("/drip?chunks=6&interval_ms=2&chunk_size=256"),
    ]);
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (t, next, cancelled, urls) = (
                transport.clone(),
                next.clone(),
                cancelled.clone(),
                urls.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= REQUESTS {
                        break;
                    }
                    let finished = match i % 10 {
                        // Dropped before it is sent.
                        0 => {
                            drop(t.send(get(&urls[0])));
                            false
                        }
                        // Dropped while waiting for a head that takes 20 ms.
                        1 => tokio::time::timeout(Duration::from_millis(5), t.send(get(&urls[1])))
                            .await
                            .is_ok(),
                        // Dropped after the first chunk of a dripping body.
                        2 => match t.send(get(&urls[2])).await {
                            Ok(res) => {
                                let mut body = res.into_body();
                                let _ = body.frame().await;
                                false
                            }
                            Err(_) => false,
                        },
                        _ => match t.send(get(&urls[0])).await {
                            Ok(res) => res.into_body().collect().await.is_ok(),
                            Err(_) => false,
                        },
                    };
                    if !finished {
                        cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    cancelled.load(Ordering::Relaxed)
}

fn show(h: &HostSnapshot) {
    detail(
        "connections",
        format!(
            "{} open ({} idle, {} in use), {} waiting, peak {}",
            h.open, h.idle, h.in_use, h.waiting, h.peak_open
        ),
    );
    if h.acquired_total() == 0 {
        return;
    }
    detail(
        "opened / closed",
        format!("{} / {}", h.opened_total, h.closed_total),
    );
    detail(
        "acquires",
        format!(
            "{} ({:.1} % reused), {} cancelled while waiting",
            h.acquired_total(),
            h.reuse_ratio() * 100.0,
            h.cancelled_total
        ),
    );
    detail(
        "wait for a connection",
        format!(
            "p50 {}, p99 {} (histogram estimates, within 25 %)",
            ms(h.acquire_wait.p50),
            ms(h.acquire_wait.p99)
        ),
    );
    detail(
        "requests / connection",
        format!("{:.1}", h.mean_requests_per_connection()),
    );
}

/// Milliseconds, to the precision the numbers have.
fn ms(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).expect("a valid URL")
}
