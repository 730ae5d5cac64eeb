//! Hedging over MockTransport on paused time: a second copy of a slow
//! idempotent request, the first answer wins, the loser is cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use steadfast_backoff::{BudgetConfig, Hedging, Retry, RetryConfig};
use steadfast_core::{Transport, transport_fn};
use steadfast_testkit::{MockTransport, Reply, Route};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://api.test{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A route where every `every`-th call is slow (1 s) and the others take 10 ms.
fn slow_tail(mock: &MockTransport, every: usize) {
    let n = Arc::new(AtomicUsize::new(0));
    mock.on(Route::get("/search")).reply(Reply::with(move |_| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let latency = if i % every == every - 1 {
            ms(1_000)
        } else {
            ms(10)
        };
        Reply::status(200).delay(latency)
    }));
}

/// Sends `n` requests one after another; returns their p99 latency.
async fn p99<T: Transport<Full<Bytes>>>(t: &T, n: usize) -> Duration
where
    T::Error: std::fmt::Debug,
{
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        t.send(get("/search")).await.unwrap();
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    latencies[(n * 99).div_ceil(100) - 1]
}

#[tokio::test(start_paused = true)]
async fn a_hedge_wins_when_the_first_attempt_is_slow() {
    let mock = MockTransport::new();
    mock.on(Route::get("/search"))
        .reply_once(Reply::status(200).delay(ms(5_000)))
        .reply(Reply::text(200, "fast").delay(ms(10)));
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);
    let t0 = Instant::now();

    let res = retry.send(get("/search")).await.unwrap();

    assert_eq!(t0.elapsed(), ms(60));
    assert_eq!(res.status(), 200);
    mock.assert_called(2);
    let snap = retry.snapshot();
    assert_eq!((snap.hedges, snap.hedges_won, snap.attempts), (1, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_answer_comes_first() {
    let mock = MockTransport::new();
    mock.on(Route::get("/search"))
        .reply(Reply::status(200).delay(ms(20)));
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);
    retry.send(get("/search")).await.unwrap();
    mock.assert_called(1);
    assert_eq!(retry.snapshot().hedges, 0);
}

#[tokio::test(start_paused = true)]
async fn hedging_cuts_p99_on_a_route_with_a_slow_tail() {
    // 1 request in 20 takes 1 s: without hedging p99 is that second.
    let plain = MockTransport::new();
    slow_tail(&plain, 20);
    let without = p99(&Retry::new(plain, RetryConfig::default()), 400).await;

    let hedged_mock = MockTransport::new();
    slow_tail(&hedged_mock, 20);
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .build()
        .unwrap();
    let hedged = Retry::new(hedged_mock, config);
    let with = p99(&hedged, 400).await;

    assert_eq!(without, ms(1_000));
    assert!(with <= ms(60), "p99 with hedging: {with:?}");
    let snap = hedged.snapshot();
    assert!(
        snap.hedges >= 19 && snap.hedges_won == snap.hedges,
        "{snap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_percentile_mode_learns_the_route_then_hedges_the_tail() {
    let mock = MockTransport::new();
    slow_tail(&mock, 20);
    let config = RetryConfig::builder()
        .hedging(Hedging::at_percentile(0.9).min_samples(50))
        .build()
        .unwrap();
    let retry = Retry::new(mock, config);
    // Warm-up: no hedges before 50 samples.
    let warm = p99(&retry, 49).await;
    assert_eq!(warm, ms(1_000));
    assert_eq!(retry.snapshot().hedges, 0);
    // Then p90 of the route (~10 ms) becomes the hedge delay.
    let with = p99(&retry, 400).await;
    assert!(with <= ms(30), "p99 after warm-up: {with:?}");
    assert!(retry.snapshot().hedges_won >= 19, "{:?}", retry.snapshot());
}

#[tokio::test(start_paused = true)]
async fn hedges_spend_the_retry_budget() {
    let mock = MockTransport::new();
    mock.on(Route::get("/search"))
        .reply(Reply::status(200).delay(ms(500)));
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .budget(BudgetConfig::new().ratio(0.0).floor(1))
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);
    for _ in 0..5 {
        retry.send(get("/search")).await.unwrap();
    }
    let snap = retry.snapshot();
    // Hedges are due at 0.05 s, 0.55 s, 1.05 s, ...; the floor allows one
    // per second, so every other one is refused (and counted).
    assert_eq!((snap.hedges, snap.budget_exhausted), (3, 2), "{snap:?}");
    assert_eq!(snap.hedges_won, 0, "the first attempts answered first");
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_not_hedged() {
    let mock = MockTransport::new();
    mock.on(Route::post("/orders"))
        .reply(Reply::status(201).delay(ms(500)));
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);
    let mut req = get("/orders");
    *req.method_mut() = Method::POST;
    req.headers_mut()
        .insert("idempotency-key", "k".parse().unwrap());
    retry.send(req).await.unwrap();
    mock.assert_called(1);
}

#[tokio::test(start_paused = true)]
async fn the_loser_is_cancelled_and_a_failed_attempt_does_not_win() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (c, d) = (Arc::clone(&calls), Arc::clone(&dropped));
    // Call 1: slow success; call 2 (the hedge): a fast 503; the slow one wins.
    let t = transport_fn(move |_req: Request<Full<Bytes>>| {
        let i = c.fetch_add(1, Ordering::SeqCst);
        let guard = Guard(Arc::clone(&d));
        async move {
            let _guard = guard;
            let (delay, status) = if i == 0 {
                (ms(300), 200)
            } else {
                (ms(10), 503)
            };
            tokio::time::sleep(delay).await;
            Ok::<_, std::io::Error>(Response::builder().status(status).body(()).unwrap())
        }
    });
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .max_retries(0)
        .build()
        .unwrap();
    let retry = Retry::new(t, config);
    let t0 = Instant::now();
    let res = retry.send(get("/x")).await.unwrap();
    assert_eq!(res.status(), 200, "the 503 hedge did not win");
    assert_eq!(t0.elapsed(), ms(300));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "both attempt futures are gone"
    );

    // Now the first is slow and the hedge fast: the first is dropped mid-flight.
    let t = transport_fn({
        let d = Arc::clone(&dropped);
        let c = Arc::new(AtomicUsize::new(0));
        move |_req: Request<Full<Bytes>>| {
            let i = c.fetch_add(1, Ordering::SeqCst);
            let guard = Guard(Arc::clone(&d));
            async move {
                let _guard = guard;
                tokio::time::sleep(if i == 0 { ms(10_000) } else { ms(10) }).await;
                Ok::<_, std::io::Error>(Response::new(()))
            }
        }
    });
    let retry = Retry::new(
        t,
        RetryConfig::builder()
            .hedging(Hedging::after(ms(50)))
            .build()
            .unwrap(),
    );
    let t0 = Instant::now();
    retry.send(get("/x")).await.unwrap();
    assert_eq!(t0.elapsed(), ms(60), "did not wait for the slow loser");
    assert_eq!(dropped.load(Ordering::SeqCst), 4, "the loser was dropped");
}
