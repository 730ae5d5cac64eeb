//! Hedging over MockTransport on paused time: a second copy of a slow
//! idempotent request, the first success wins, the loser is cancelled; a
//! failed copy waits for the other.
#![cfg(not(loom))] // the test tools need tokio's `net`, which loom builds leave out

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use steadfast_backoff::{Backoff, BudgetConfig, Hedging, Jitter, Retry, RetryBudget, RetryConfig};
use steadfast_core::replay::ReplayBody;
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

/// A streamed request body: `chunks` chunks of 10 bytes, one every `interval`.
struct Drip {
    left: usize,
    interval: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Drip {
    fn new(chunks: usize, interval: Duration) -> Self {
        Self {
            left: chunks,
            interval,
            sleep: None,
        }
    }
}

impl hyper::body::Body for Drip {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let interval = self.interval;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        std::task::ready!(sleep.as_mut().poll(cx));
        self.sleep = None;
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"0123456789",
        )))))
    }
}

fn put_streamed(chunks: usize, interval: Duration, cap: usize) -> Request<ReplayBody<Drip>> {
    Request::put("http://api.test/upload")
        .body(ReplayBody::new(Drip::new(chunks, interval), cap))
        .unwrap()
}

fn hedge_after(delay: Duration) -> RetryConfig {
    RetryConfig::builder()
        .hedging(Hedging::after(delay))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hedge_that_fails_for_good_does_not_beat_a_first_attempt_still_in_flight() {
    // The first attempt answers 200 after 300 ms; the hedge (sent at 50 ms)
    // a 500 after 10 ms. The 500 must not end the race: the 200 is coming.
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply_once(Reply::status(200).delay(ms(300)))
        .reply(Reply::status(500).delay(ms(10)));
    let retry = Retry::new(mock.clone(), hedge_after(ms(50)));
    let t0 = Instant::now();

    let res = retry.send(get("/x")).await.unwrap();

    assert_eq!(res.status(), 200);
    assert_eq!(t0.elapsed(), ms(300));
    let snap = retry.snapshot();
    assert_eq!((snap.hedges, snap.hedges_won), (1, 0), "{snap:?}");

    // Nor does a rejection (4xx): it may be the other copy's doing.
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply_once(Reply::status(200).delay(ms(300)))
        .reply(Reply::status(404).delay(ms(10)));
    let retry = Retry::new(mock.clone(), hedge_after(ms(50)));
    let t0 = Instant::now();
    assert_eq!(retry.send(get("/x")).await.unwrap().status(), 200);
    assert_eq!(t0.elapsed(), ms(300));
    assert_eq!(retry.snapshot().hedges_won, 0);
}

fn request(method: Method, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://api.test{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hedges_404_caused_by_the_first_copys_delete_does_not_hide_its_204() {
    // The server deletes on the first copy but answers it only after
    // 200 ms; the hedge, sent at 50 ms, finds nothing left: 404 at once.
    let mock = MockTransport::new();
    mock.on(Route::delete("/items/7"))
        .reply_once(Reply::status(204).delay(ms(200)))
        .reply(Reply::status(404));
    let retry = Retry::new(mock.clone(), hedge_after(ms(50)));
    let t0 = Instant::now();

    let res = retry
        .send(request(Method::DELETE, "/items/7"))
        .await
        .unwrap();

    assert_eq!(res.status(), 204);
    assert_eq!(t0.elapsed(), ms(200));
    mock.assert_called(2);
    let snap = retry.snapshot();
    assert_eq!((snap.hedges, snap.hedges_won, snap.attempts), (1, 0, 2));
}

#[tokio::test(start_paused = true)]
async fn a_hedges_412_caused_by_the_first_copys_conditional_put_does_not_hide_its_200() {
    // PUT with If-Match: the first copy changes the ETag, so the hedge's
    // precondition fails.
    let mock = MockTransport::new();
    mock.on(Route::put("/items/7").header("if-match", "\"v1\""))
        .reply_once(Reply::status(200).header("etag", "\"v2\"").delay(ms(200)))
        .reply(Reply::status(412));
    let retry = Retry::new(mock.clone(), hedge_after(ms(50)));
    let mut req = request(Method::PUT, "/items/7");
    req.headers_mut()
        .insert("if-match", http::HeaderValue::from_static("\"v1\""));

    let res = retry.send(req).await.unwrap();

    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"v2\"");
    mock.assert_called(2);
}

#[tokio::test(start_paused = true)]
async fn when_no_copy_succeeds_the_first_attempts_answer_is_returned() {
    // The hedge's 404 comes first (at 50 ms), the first attempt's 409 at
    // 200 ms: neither succeeded, so the first attempt's answer is the
    // request's.
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply_once(Reply::status(409).delay(ms(200)))
        .reply(Reply::status(404));
    let retry = Retry::new(mock.clone(), hedge_after(ms(50)));
    let t0 = Instant::now();

    let res = retry.send(get("/x")).await.unwrap();

    assert_eq!(res.status(), 409);
    assert_eq!(t0.elapsed(), ms(200));
    let snap = retry.snapshot();
    assert_eq!((snap.hedges, snap.hedges_won), (1, 0), "{snap:?}");

    // A rejection of the first attempt before the hedge is due is final
    // at once: no hedge is sent.
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply(Reply::status(404).delay(ms(10)));
    let retry = Retry::new(mock.clone(), hedge_after(ms(50)));
    let t0 = Instant::now();
    assert_eq!(retry.send(get("/x")).await.unwrap().status(), 404);
    assert_eq!(t0.elapsed(), ms(10));
    mock.assert_called(1);
    assert_eq!(retry.snapshot().hedges, 0);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_hedge_waits_for_a_first_attempt_that_then_fails_and_is_retried() {
    // The first attempt's 503 (at 200 ms) goes on to the retry rules even
    // though the hedge was refused with a 404 before: the retry succeeds.
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply_once(Reply::status(503).delay(ms(200)))
        .reply_once(Reply::status(404))
        .reply(Reply::status(200));
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .backoff(Backoff::constant(ms(10)).jitter(Jitter::None))
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);

    let res = retry.send(get("/x")).await.unwrap();

    assert_eq!(res.status(), 200);
    mock.assert_called(3);
    let snap = retry.snapshot();
    assert_eq!(
        (snap.hedges, snap.retries, snap.hedges_won),
        (1, 1, 0),
        "{snap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hedge_whose_streamed_body_fell_behind_does_not_fail_the_upload() {
    // 100 bytes dripping over 200 ms through a 50-byte replay buffer: the
    // hedge, sent at 50 ms, shares the stream until the buffer overflows,
    // then fails with NotReplayable. That says only that the hedge cannot
    // be sent: the first attempt carries on and succeeds.
    let mock = MockTransport::new();
    let upload = mock.on(Route::put("/upload")).reply(Reply::status(200));
    let retry = Retry::new(mock.clone(), hedge_after(ms(50)));

    let res = retry.send(put_streamed(10, ms(20), 50)).await.unwrap();

    assert_eq!(res.status(), 200);
    upload.assert_called(1);
    assert_eq!(
        upload.calls()[0].body.len(),
        100,
        "the whole body went through"
    );
    let snap = retry.snapshot();
    assert_eq!((snap.hedges, snap.hedges_won), (1, 0), "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_whose_body_fell_behind_gives_way_to_its_hedge() {
    use http_body_util::BodyExt;
    // The first copy reads its body slowly (its server is slow to take the
    // upload); the hedge reads at full speed, reaches the overflow first,
    // and the first copy fails with NotReplayable: the hedge's answer is
    // the request's.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let t = transport_fn(move |req: Request<ReplayBody<Drip>>| {
        let i = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut body = req.into_body();
            let mut read = 0;
            while let Some(frame) = body.frame().await {
                read += frame?.into_data().map_or(0, |d| d.len());
                if i == 0 {
                    tokio::time::sleep(ms(100)).await;
                }
            }
            let status = if read == 100 { 201 } else { 400 };
            Ok::<_, steadfast_core::replay::ReplayError>(
                Response::builder().status(status).body(()).unwrap(),
            )
        }
    });
    let retry = Retry::new(t, hedge_after(ms(50)));

    let res = retry.send(put_streamed(10, ms(20), 50)).await.unwrap();

    assert_eq!(res.status(), 201);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(retry.snapshot().hedges_won, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_that_cannot_be_copied_spends_no_budget() {
    // 100 bytes through a 10-byte replay buffer: by the time the hedge is
    // due, the body cannot be copied, so no hedge is sent, and no retry
    // budget token is spent on it.
    let mock = MockTransport::new();
    mock.on(Route::put("/upload"))
        .reply(Reply::status(200).delay(ms(500)));
    let budget = RetryBudget::new(BudgetConfig::new()).unwrap();
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .shared_budget(budget.clone())
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);
    let body = ReplayBody::new(Full::new(Bytes::from_static(&[7; 100])), 10);
    let req = Request::put("http://api.test/upload").body(body).unwrap();

    assert_eq!(retry.send(req).await.unwrap().status(), 200);

    mock.assert_called(1);
    assert_eq!(retry.snapshot().hedges, 0);
    assert_eq!(budget.snapshot().withdrawn, 0, "a token spent on no hedge");
}

#[tokio::test(start_paused = true)]
async fn retry_non_idempotent_does_not_make_a_post_hedgeable() {
    let mock = MockTransport::new();
    mock.on(Route::post("/orders"))
        .reply(Reply::status(201).delay(ms(500)));
    let config = RetryConfig::builder()
        .retry_non_idempotent(true)
        .hedging(Hedging::after(ms(50)))
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);
    let mut req = get("/orders");
    *req.method_mut() = Method::POST;

    assert_eq!(retry.send(req).await.unwrap().status(), 201);

    mock.assert_called(1);
    assert_eq!(retry.snapshot().hedges, 0);
}

#[tokio::test(start_paused = true)]
async fn when_both_copies_fail_the_longer_retry_after_is_honoured() {
    // The hedge fails first (503, no Retry-After, at 60 ms); the first
    // attempt then fails with 503 and `Retry-After: 2` at 300 ms. The
    // server asked for 2 s: the next attempt waits for it.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let t0 = Instant::now();
    let t = transport_fn(move |_req: Request<Full<Bytes>>| {
        let i = {
            let mut log = log.lock().unwrap();
            log.push(t0.elapsed());
            log.len() - 1
        };
        async move {
            let (delay, status, retry_after) = match i {
                0 => (ms(300), 503, Some("2")),
                1 => (ms(10), 503, None),
                _ => (ms(1), 200, None),
            };
            tokio::time::sleep(delay).await;
            let mut res = Response::builder().status(status);
            if let Some(after) = retry_after {
                res = res.header("retry-after", after);
            }
            Ok::<_, std::io::Error>(res.body(()).unwrap())
        }
    });
    let retry = Retry::new(t, hedge_after(ms(50)));

    let res = retry.send(get("/x")).await.unwrap();

    assert_eq!(res.status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[..3], [ms(0), ms(50), ms(2_300)], "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn errors_count_every_copy_sent_hedges_included() {
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply_once(Reply::reset().delay(ms(300)))
        .reply(Reply::reset().delay(ms(10)));
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .max_retries(0)
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);

    let err = retry.send(get("/x")).await.unwrap_err();

    mock.assert_called(2);
    assert_eq!(err.attempts(), 2, "{err}");
    assert!(err.to_string().contains("after 2 attempts"), "{err}");
    assert_eq!(retry.snapshot().attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_delay_too_large_to_add_means_no_hedge() {
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply(Reply::status(200).delay(ms(10)));
    let retry = Retry::new(mock.clone(), hedge_after(Duration::MAX));
    assert_eq!(retry.send(get("/x")).await.unwrap().status(), 200);
    assert_eq!(retry.snapshot().hedges, 0);
}

#[tokio::test(start_paused = true)]
async fn the_percentile_mode_hedges_the_share_it_is_asked_to() {
    // Latencies spread evenly over 1-100 ms (a request's latency follows
    // from its number, so its hedge takes as long and never wins): at p90,
    // about 10 % of requests are slower than the hedge delay.
    let t = transport_fn(|req: Request<Full<Bytes>>| {
        let i: u64 = req.uri().query().unwrap().parse().unwrap();
        async move {
            tokio::time::sleep(ms((i * 37) % 100 + 1)).await;
            Ok::<_, std::io::Error>(Response::new(()))
        }
    });
    let config = RetryConfig::builder()
        .hedging(Hedging::at_percentile(0.9).min_samples(50))
        .no_budget()
        .build()
        .unwrap();
    let retry = Retry::new(t, config);
    const REQUESTS: u64 = 2_000;
    for i in 0..REQUESTS {
        retry.send(get(&format!("/x?{i}"))).await.unwrap();
    }
    let rate = retry.snapshot().hedges as f64 / REQUESTS as f64;
    assert!(
        (0.08..=0.12).contains(&rate),
        "hedged {:.1} %",
        rate * 100.0
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_first_attempt_fell_behind_a_failed_hedge_is_the_answer() {
    use http_body_util::BodyExt;
    // As above, the first copy falls behind its fast hedge and fails with
    // NotReplayable; but the hedge answers 503. That 503 is the server's
    // answer to the request: the caller gets it (the body can no longer be
    // copied for a retry), not the first copy's NotReplayable error.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let t = transport_fn(move |req: Request<ReplayBody<Drip>>| {
        let first = c.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
                if first {
                    tokio::time::sleep(ms(100)).await;
                }
            }
            Ok::<_, steadfast_core::replay::ReplayError>(
                Response::builder().status(503).body(()).unwrap(),
            )
        }
    });
    let retry = Retry::new(t, hedge_after(ms(50)));

    let res = retry.send(put_streamed(10, ms(20), 50)).await.unwrap();

    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(retry.snapshot().attempts, 2);
}
