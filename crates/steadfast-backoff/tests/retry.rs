//! The retry layer over MockTransport, on paused time: every wait is exact
//! and no test sleeps for real.
#![cfg(not(loom))] // the test tools need tokio's `net`, which loom builds leave out

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use steadfast_backoff::{
    Backoff, BudgetConfig, Cause, Hedging, Jitter, Retry, RetryBudget, RetryConfig, RetryError,
};
use steadfast_core::replay::ReplayBody;
use steadfast_core::{
    Classify, Deadline, DefaultClassifier, ErrorClass, NotReplayable, Outcome, TimeoutPhase,
    Transport,
};
use steadfast_testkit::mock::{MockBody, MockError};
use steadfast_testkit::{MockTransport, Reply, Route};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn request(method: Method, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://api.test{path}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

fn get(path: &str) -> Request<Full<Bytes>> {
    request(Method::GET, path)
}

/// Gaps between the arrivals of the recorded calls.
fn gaps(mock: &MockTransport) -> Vec<Duration> {
    let at: Vec<Instant> = mock.calls().iter().map(|c| c.at).collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// No jitter: the delays are exactly 100 ms, 200 ms, 400 ms, ...
fn doubling_from_100ms() -> RetryConfig {
    RetryConfig::builder()
        .backoff(Backoff::exponential(ms(100)).jitter(Jitter::None))
        .build()
        .unwrap()
}

type Delays = Arc<Mutex<Vec<(u32, Duration, String)>>>;

fn recording(config: steadfast_backoff::RetryConfigBuilder) -> (RetryConfig, Delays) {
    let delays: Delays = Arc::default();
    let sink = Arc::clone(&delays);
    let config = config
        .on_retry(move |attempt, delay, cause| {
            sink.lock()
                .unwrap()
                .push((attempt, delay, cause.to_string()));
        })
        .build()
        .unwrap();
    (config, delays)
}

#[tokio::test(start_paused = true)]
async fn fails_twice_then_succeeds_after_delays_drawn_from_the_schedule() {
    let mock = MockTransport::new();
    mock.on(Route::get("/users"))
        .reply_times(2, Reply::status(503))
        .reply(Reply::json(200, serde_json::json!({"ok": true})));
    let (config, delays) = recording(RetryConfig::builder().backoff(Backoff::default().seed(42)));
    let retry = Retry::new(mock.clone(), config);

    let res = retry.send(get("/users")).await.unwrap();

    assert_eq!(res.status(), StatusCode::OK);
    mock.assert_called(3);
    let delays = delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 2);
    // Full jitter: attempt n waits uniformly in [0, 100 ms · 2^(n-1)].
    for ((attempt, delay, cause), top) in delays.iter().zip([ms(100), ms(200)]) {
        assert!(*delay <= top, "attempt {attempt}: {delay:?} > {top:?}");
        assert_eq!(cause, "status 503 Service Unavailable");
    }
    // The layer waited the delays it announced (tokio's timer rounds up to
    // the millisecond, never down).
    for (gap, (_, delay, _)) in gaps(&mock).into_iter().zip(&delays) {
        assert!(
            *delay <= gap && gap < *delay + ms(1),
            "waited {gap:?} for {delay:?}"
        );
    }
    let snap = retry.snapshot();
    assert_eq!((snap.requests, snap.attempts, snap.retries), (1, 3, 2));
}

#[tokio::test(start_paused = true)]
async fn without_jitter_the_delays_are_the_curve() {
    let mock = MockTransport::new();
    mock.on(Route::get("/users"))
        .reply_times(3, Reply::connect_error())
        .reply(Reply::status(200));
    let res = Retry::new(mock.clone(), doubling_from_100ms())
        .send(get("/users"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(gaps(&mock), [ms(100), ms(200), ms(400)]);
}

#[tokio::test(start_paused = true)]
async fn seeded_layers_repeat_their_delays() {
    async fn run() -> Vec<Duration> {
        let mock = MockTransport::new();
        mock.on(Route::get("/x"))
            .reply_times(3, Reply::status(503))
            .reply(Reply::status(200));
        let config = RetryConfig::builder()
            .backoff(Backoff::default().seed(7))
            .build()
            .unwrap();
        Retry::new(mock.clone(), config)
            .send(get("/x"))
            .await
            .unwrap();
        gaps(&mock)
    }
    assert_eq!(run().await, run().await);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_in_full_even_above_max_delay() {
    let mock = MockTransport::new();
    mock.on(Route::get("/busy"))
        .reply_once(Reply::status(503).header("retry-after", "2"))
        .reply_once(Reply::status(429).header("retry-after", "20"))
        .reply(Reply::status(200));
    let retry = Retry::new(mock.clone(), RetryConfig::default());

    let res = retry.send(get("/busy")).await.unwrap();

    assert_eq!(res.status(), 200);
    // Not less than asked: the backoff (at most 200 ms here) is replaced, and
    // max_delay (10 s) caps only the client's own delays.
    assert_eq!(gaps(&mock), [secs(2), secs(20)]);
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_rate_limit_is_honoured_like_retry_after() {
    let mock = MockTransport::new();
    mock.on(Route::get("/quota"))
        .reply_once(Reply::status(429).header("ratelimit", "\"default\";r=0;t=3"))
        .reply(Reply::status(200));
    let res = Retry::new(mock.clone(), RetryConfig::default())
        .send(get("/quota"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(gaps(&mock), [secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_deadline_fails_at_once_naming_it() {
    let mock = MockTransport::new();
    mock.on(Route::get("/busy"))
        .reply(Reply::status(503).header("retry-after", "30"));
    let config = RetryConfig::builder().timeout(secs(10)).build().unwrap();
    let t0 = Instant::now();

    let err = Retry::new(mock.clone(), config)
        .send(get("/busy"))
        .await
        .unwrap_err();

    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "failed early instead of sleeping"
    );
    mock.assert_called(1);
    match &err {
        RetryError::DeadlineExceeded {
            wait,
            from_server,
            remaining,
            attempts,
            cause,
            ..
        } => {
            assert_eq!(
                (*wait, *from_server, *remaining, *attempts),
                (secs(30), true, secs(10), 1)
            );
            assert_eq!(cause.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("Retry-After") && msg.contains("30s") && msg.contains("10s"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_set_by_an_outer_layer_is_honoured_too() {
    let mock = MockTransport::new();
    mock.on(Route::get("/busy"))
        .reply(Reply::status(503).header("retry-after", "5"));
    let mut req = get("/busy");
    Deadline::after(secs(3)).apply(&mut req);
    let err = Retry::new(mock.clone(), RetryConfig::default())
        .send(req)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RetryError::DeadlineExceeded { wait, .. } if wait == secs(5)),
        "{err}"
    );
    // The deadline travels with the request to the transport below.
    assert!(Deadline::from_extensions(&mock.calls()[0].extensions).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_above_max_server_delay_fails_at_once() {
    let mock = MockTransport::new();
    mock.on(Route::get("/busy"))
        .reply(Reply::status(503).header("retry-after", "3600"));
    let err = Retry::new(mock.clone(), RetryConfig::default())
        .send(get("/busy"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RetryError::RetryAfterTooLong { retry_after, .. } if retry_after == secs(3600)),
        "{err}"
    );
    assert!(err.to_string().contains("max_server_delay"), "{err}");
    mock.assert_called(1);
}

#[tokio::test(start_paused = true)]
async fn our_own_backoff_never_sleeps_past_the_deadline() {
    let mock = MockTransport::new();
    mock.on(Route::get("/down")).reply(Reply::connect_error());
    let config = RetryConfig::builder()
        .backoff(
            Backoff::constant(secs(2))
                .jitter(Jitter::None)
                .max_retries(10),
        )
        .timeout(secs(5))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = Retry::new(mock.clone(), config)
        .send(get("/down"))
        .await
        .unwrap_err();
    // Waits at 0 → 2 → 4; a third 2 s wait would end at 6 s > 5 s.
    assert_eq!(t0.elapsed(), secs(4));
    assert!(
        matches!(
            err,
            RetryError::DeadlineExceeded {
                from_server: false,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        ErrorClass::of(&err),
        ErrorClass::Connect,
        "the last cause stays in the chain"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_an_attempt_in_flight() {
    let mock = MockTransport::new();
    mock.on(Route::get("/slow"))
        .reply(Reply::status(200).delay(secs(60)));
    let config = RetryConfig::builder().timeout(secs(2)).build().unwrap();
    let t0 = Instant::now();
    let err = Retry::new(mock, config)
        .send(get("/slow"))
        .await
        .unwrap_err();
    assert_eq!(t0.elapsed(), secs(2));
    assert!(
        matches!(err, RetryError::TimedOut { attempts: 1, .. }),
        "{err}"
    );
    assert_eq!(
        ErrorClass::of(&err),
        ErrorClass::Timeout(Some(TimeoutPhase::Total))
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_and_is_retried() {
    let mock = MockTransport::new();
    mock.on(Route::get("/flaky"))
        .reply_once(Reply::status(200).delay(secs(30)))
        .reply(Reply::status(200).delay(ms(50)));
    let config = RetryConfig::builder()
        .attempt_timeout(secs(1))
        .backoff(Backoff::constant(ms(10)).jitter(Jitter::None))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let res = Retry::new(mock.clone(), config)
        .send(get("/flaky"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(t0.elapsed(), secs(1) + ms(10) + ms(50));
    mock.assert_called(2);
}

#[tokio::test(start_paused = true)]
async fn attempts_never_exceed_the_maximum() {
    for max in [0u32, 1, 3, 5] {
        let mock = MockTransport::new();
        mock.on(Route::get("/down")).reply(Reply::reset());
        let config = RetryConfig::builder().max_retries(max).build().unwrap();
        let err = Retry::new(mock.clone(), config)
            .send(get("/down"))
            .await
            .unwrap_err();
        mock.assert_called(max as usize + 1);
        assert!(matches!(err, RetryError::Exhausted { .. }), "{err}");
        assert_eq!(err.attempts(), max + 1);
        assert_eq!(ErrorClass::of(&err), ErrorClass::Reset);
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_retryable_response_is_returned_as_is() {
    let mock = MockTransport::new();
    mock.on(Route::get("/down"))
        .reply(Reply::text(503, "maintenance").header("retry-after", "1"));
    let res = Retry::new(mock.clone(), RetryConfig::default())
        .send(get("/down"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    mock.assert_called(4);
}

#[tokio::test(start_paused = true)]
async fn failures_and_rejections_are_not_retried() {
    let mock = MockTransport::new();
    mock.on(Route::get("/missing")).reply(Reply::status(404));
    mock.on(Route::get("/broken")).reply(Reply::status(500));
    mock.on(Route::get("/tls"))
        .reply(Reply::io_error(std::io::ErrorKind::InvalidData));
    let retry = Retry::new(mock.clone(), RetryConfig::default());
    assert_eq!(retry.send(get("/missing")).await.unwrap().status(), 404);
    assert_eq!(retry.send(get("/broken")).await.unwrap().status(), 500);
    let err = retry.send(get("/tls")).await.unwrap_err();
    assert!(
        matches!(err, RetryError::NotRetryable { attempts: 1, .. }),
        "{err}"
    );
    mock.assert_called(3);
    assert_eq!(retry.snapshot().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn post_without_idempotency_key_is_not_retried() {
    let mock = MockTransport::new();
    mock.on(Route::post("/orders"))
        .reply_once(Reply::status(503))
        .reply(Reply::reset());
    let retry = Retry::new(mock.clone(), RetryConfig::default());

    // A retryable response is handed back untouched...
    let res = retry.send(request(Method::POST, "/orders")).await.unwrap();
    assert_eq!(res.status(), 503);
    // ...and an error says why it was not retried.
    let err = retry
        .send(request(Method::POST, "/orders"))
        .await
        .unwrap_err();
    mock.assert_called(2);
    assert!(
        matches!(err, RetryError::NotIdempotent { ref method, .. } if method == Method::POST),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("POST is not idempotent") && msg.contains("idempotency-key"),
        "{msg}"
    );
    assert_eq!(ErrorClass::of(&err), ErrorClass::Reset);
}

#[tokio::test(start_paused = true)]
async fn post_that_never_left_the_client_is_retried() {
    let mock = MockTransport::new();
    mock.on(Route::post("/orders"))
        .reply_times(2, Reply::connect_error())
        .reply(Reply::status(201));
    let res = Retry::new(mock.clone(), RetryConfig::default())
        .send(request(Method::POST, "/orders"))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    mock.assert_called(3);
}

#[tokio::test(start_paused = true)]
async fn post_with_idempotency_key_is_retried_with_the_same_key() {
    let mock = MockTransport::new();
    let orders = mock
        .on(Route::post("/orders").header_present("idempotency-key"))
        .reply_times(2, Reply::status(503))
        .reply(Reply::status(201));
    let mut req = request(Method::POST, "/orders");
    req.headers_mut()
        .insert("idempotency-key", "order-7f3a".parse().unwrap());

    let res = Retry::new(mock.clone(), RetryConfig::default())
        .send(req)
        .await
        .unwrap();

    assert_eq!(res.status(), 201);
    let calls = orders.calls();
    assert_eq!(calls.len(), 3);
    for c in &calls {
        assert_eq!(c.header("idempotency-key"), Some("order-7f3a"));
        assert_eq!(&c.body[..], b"{}", "the body is replayed too");
    }
}

#[tokio::test(start_paused = true)]
async fn the_idempotency_header_is_configurable() {
    let mock = MockTransport::new();
    mock.on(Route::patch("/users/1"))
        .reply_once(Reply::status(503))
        .reply(Reply::status(200));
    let config = RetryConfig::builder()
        .idempotency_header("X-Request-Id")
        .build()
        .unwrap();
    let mut req = request(Method::PATCH, "/users/1");
    req.headers_mut()
        .insert("x-request-id", "r-1".parse().unwrap());
    let res = Retry::new(mock.clone(), config).send(req).await.unwrap();
    assert_eq!(res.status(), 200);
    mock.assert_called(2);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_cannot_be_replayed_is_not_retried_and_the_error_says_so() {
    let mock = MockTransport::new();
    mock.on(Route::put("/upload")).reply(Reply::reset());
    // 10 bytes through a 4-byte replay buffer: gone once sent.
    let body = ReplayBody::new(Full::new(Bytes::from_static(b"0123456789")), 4);
    let req = Request::put("http://api.test/upload").body(body).unwrap();

    let err = Retry::new(mock.clone(), RetryConfig::default())
        .send(req)
        .await
        .unwrap_err();

    mock.assert_called(1);
    assert!(
        matches!(
            err,
            RetryError::NotReplayable {
                reason: NotReplayable::TooLarge { cap: 4 },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("replay buffer"), "{err}");
}

/// A body that cannot be copied at all, like a one-shot stream.
struct OneShot(Full<Bytes>);

impl hyper::body::Body for OneShot {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }
}

impl steadfast_core::TryCloneBody for OneShot {
    fn try_clone_body(&self) -> Result<Self, NotReplayable> {
        Err(NotReplayable::Streaming)
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_cannot_be_copied_is_sent_once_and_errors_name_why() {
    let mock = MockTransport::new();
    mock.on(Route::any()).reply(Reply::reset());
    let retry = Retry::new(mock.clone(), RetryConfig::default());
    let one_shot = |method| {
        Request::builder()
            .method(method)
            .uri("http://api.test/upload")
            .body(OneShot(Full::new(Bytes::from_static(b"data"))))
            .unwrap()
    };

    let err = retry.send(one_shot(Method::PUT)).await.unwrap_err();
    assert!(
        matches!(
            err,
            RetryError::NotReplayable {
                reason: NotReplayable::Streaming,
                attempts: 1,
                ..
            }
        ),
        "{err}"
    );
    // Not idempotent either: that is said first, and names the method,
    // though no copy of the request could be kept.
    let err = retry.send(one_shot(Method::PATCH)).await.unwrap_err();
    assert!(
        matches!(err, RetryError::NotIdempotent { ref method, attempts: 1, .. } if method == Method::PATCH),
        "{err}"
    );
    mock.assert_called(2);
}

#[tokio::test(start_paused = true)]
async fn a_small_streamed_body_is_replayed_through_replay_body() {
    let mock = MockTransport::new();
    let upload = mock
        .on(Route::put("/upload"))
        .reply_once(Reply::reset())
        .reply(Reply::status(204));
    let body = ReplayBody::with_default_cap(Full::new(Bytes::from_static(b"payload")));
    let req = Request::put("http://api.test/upload").body(body).unwrap();
    let res = Retry::new(mock.clone(), RetryConfig::default())
        .send(req)
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(upload.calls().iter().all(|c| &c.body[..] == b"payload"));
}

#[derive(Debug)]
struct BreakerOpen {
    open_for: Duration,
}

impl std::fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "circuit open for another {:?}", self.open_for)
    }
}

impl std::error::Error for BreakerOpen {}

#[tokio::test(start_paused = true)]
async fn a_classifier_maps_a_rejection_to_a_server_wait() {
    // As a circuit breaker below the retry layer would: its rejection says
    // when to come back.
    let mock = MockTransport::new();
    mock.on(Route::get("/api"))
        .reply_once(Reply::error_with(|| BreakerOpen { open_for: secs(3) }))
        .reply(Reply::status(200));
    let classify = |r: &Result<Response<MockBody>, MockError>| {
        if let Err(e) = r {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(err) = cur {
                if let Some(open) = err.downcast_ref::<BreakerOpen>() {
                    return Outcome::Retryable {
                        after: Some(open.open_for),
                    };
                }
                cur = err.source();
            }
        }
        DefaultClassifier.classify(r)
    };
    let retry = Retry::with_classifier(mock.clone(), RetryConfig::default(), classify);
    let res = retry.send(get("/api")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(gaps(&mock), [secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn budget_exhaustion_stops_a_retry_storm() {
    const REQUESTS: u64 = 1_000;
    let mock = MockTransport::new();
    mock.on(Route::get("/down")).reply(Reply::status(503));
    let retry = Retry::new(mock.clone(), RetryConfig::default());
    let t0 = Instant::now();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let retry = retry.clone();
        tasks.spawn(async move { retry.send(get("/down")).await });
    }
    while let Some(res) = tasks.join_next().await {
        assert_eq!(res.unwrap().unwrap().status(), 503);
    }

    let elapsed = t0.elapsed().as_secs_f64();
    let snap = retry.snapshot();
    let config = BudgetConfig::default();
    let bound =
        config.ratio_value() * REQUESTS as f64 + f64::from(config.floor_value()) * (elapsed + 1.0);
    assert_eq!(snap.requests, REQUESTS);
    assert!(
        (snap.retries as f64) <= bound,
        "{} retries for {REQUESTS} requests in {elapsed:.1}s; the budget allows {bound:.0}",
        snap.retries
    );
    // Without the budget this would have been 3,000 retries.
    assert!(
        snap.retries >= 200,
        "the ratio's share was spent: {}",
        snap.retries
    );
    assert!(
        snap.budget_exhausted >= 700,
        "refusals are counted: {}",
        snap.budget_exhausted
    );
    assert_eq!(mock.call_count() as u64, snap.attempts);
}

#[tokio::test(start_paused = true)]
async fn a_budget_can_be_shared_between_clients() {
    let budget = RetryBudget::new(BudgetConfig::new().ratio(0.0).floor(1)).unwrap();
    let mock = MockTransport::new();
    mock.on(Route::get("/down")).reply(Reply::connect_error());
    let config = || {
        RetryConfig::builder()
            .shared_budget(budget.clone())
            .build()
            .unwrap()
    };
    let a = Retry::new(mock.clone(), config());
    let b = Retry::new(mock.clone(), config());
    let err = a.send(get("/down")).await.unwrap_err();
    assert!(
        matches!(err, RetryError::BudgetExhausted { attempts: 2, .. }),
        "{err}"
    );
    // `a` spent the only token of this second; `b` gets none.
    let err = b.send(get("/down")).await.unwrap_err();
    assert!(
        matches!(err, RetryError::BudgetExhausted { attempts: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("retry budget"), "{err}");
    assert_eq!(budget.snapshot().withdrawn, 1);
    assert_eq!(b.snapshot().budget_exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn the_hook_sees_every_retry_with_its_cause() {
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply_once(Reply::connect_error())
        .reply_once(Reply::timeout())
        .reply_once(Reply::status(429).header("retry-after", "1"))
        .reply(Reply::status(200));
    let (config, delays) = recording(RetryConfig::builder().max_retries(5));
    Retry::new(mock, config).send(get("/x")).await.unwrap();
    let seen = delays.lock().unwrap().clone();
    let attempts: Vec<u32> = seen.iter().map(|s| s.0).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert!(seen[0].2.contains("failure scripted"), "{}", seen[0].2);
    assert_eq!(seen[2].1, secs(1));
    assert_eq!(seen[2].2, "status 429 Too Many Requests");
}

#[tokio::test(start_paused = true)]
async fn retry_causes_are_typed() {
    let mock = MockTransport::new();
    mock.on(Route::get("/t"))
        .reply(Reply::status(200).delay(secs(5)));
    let config = RetryConfig::builder()
        .attempt_timeout(secs(1))
        .max_retries(1)
        .build()
        .unwrap();
    let err = Retry::new(mock, config).send(get("/t")).await.unwrap_err();
    match err.cause() {
        Cause::Timeout(t) => assert_eq!(t.phase(), TimeoutPhase::Attempt),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ErrorClass::of(&err),
        ErrorClass::Timeout(Some(TimeoutPhase::Attempt))
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_zero_or_in_the_past_does_not_switch_the_backoff_off() {
    for retry_after in ["0", "Wed, 21 Oct 2015 07:28:00 GMT"] {
        let mock = MockTransport::new();
        mock.on(Route::get("/busy"))
            .reply_times(3, Reply::status(503).header("retry-after", retry_after))
            .reply(Reply::status(200));
        let res = Retry::new(mock.clone(), doubling_from_100ms())
            .send(get("/busy"))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        // The server's wait is a floor under the backoff, not a replacement.
        assert_eq!(gaps(&mock), [ms(100), ms(200), ms(400)], "{retry_after}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_deadline_and_max_server_delay_names_the_deadline() {
    // Raising max_server_delay would not help: the deadline is the limit.
    let mock = MockTransport::new();
    mock.on(Route::get("/busy"))
        .reply(Reply::status(503).header("retry-after", "120"));
    let config = RetryConfig::builder().timeout(secs(30)).build().unwrap();
    let err = Retry::new(mock.clone(), config)
        .send(get("/busy"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RetryError::DeadlineExceeded { wait, from_server: true, .. } if wait == secs(120)),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("120s") && msg.contains("30s") && !msg.contains("max_server_delay"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_too_large_to_add_means_no_limit() {
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply(Reply::status(200).delay(secs(5)));
    let config = RetryConfig::builder()
        .attempt_timeout(Duration::MAX)
        .build()
        .unwrap();
    let res = Retry::new(mock, config).send(get("/x")).await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_retry_cancelled_during_its_wait_is_not_counted_and_gives_its_token_back() {
    let mock = MockTransport::new();
    mock.on(Route::get("/busy"))
        .reply(Reply::status(503).header("retry-after", "10"));
    // One retry per second at most, and nothing from the ratio.
    let budget = RetryBudget::new(BudgetConfig::new().ratio(0.0).floor(1)).unwrap();
    let config = RetryConfig::builder()
        .shared_budget(budget.clone())
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);

    // The caller gives up during the 10 s wait.
    let cancelled = tokio::time::timeout(ms(100), retry.send(get("/busy"))).await;

    assert!(cancelled.is_err());
    mock.assert_called(1);
    let snap = retry.snapshot();
    assert_eq!((snap.attempts, snap.retries), (1, 0), "{snap:?}");
    assert_eq!(budget.snapshot().withdrawn, 0, "the token went back");
    // So the next request of this second can still retry.
    mock.reset();
    mock.on(Route::get("/flaky"))
        .reply_once(Reply::status(503))
        .reply(Reply::status(200));
    assert_eq!(retry.send(get("/flaky")).await.unwrap().status(), 200);
    assert_eq!(retry.snapshot().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn duration_max_in_every_setting_never_panics() {
    // Every duration the config takes at its largest: the delays still come
    // from the curve, and nothing overflows the clock.
    let mock = MockTransport::new();
    mock.on(Route::get("/x"))
        .reply_times(2, Reply::status(503).header("retry-after", "0"))
        .reply(Reply::status(200));
    let config = RetryConfig::builder()
        .backoff(
            Backoff::exponential(ms(1))
                .jitter(Jitter::None)
                .max_delay(Duration::MAX)
                .max_elapsed(Duration::MAX),
        )
        .max_server_delay(Duration::MAX)
        .attempt_timeout(Duration::MAX)
        .timeout(Duration::MAX)
        .budget(BudgetConfig::new().window(Duration::MAX))
        .hedging(Hedging::after(Duration::MAX))
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);
    assert_eq!(retry.send(get("/x")).await.unwrap().status(), 200);
    assert_eq!(gaps(&mock), [ms(1), ms(2)]);
    assert_eq!(retry.snapshot().hedges, 0);

    // A wait of Duration::MAX does not fit before a Duration::MAX deadline
    // (which the clock caps at ~30 years): it fails at once, naming it.
    let mock = MockTransport::new();
    mock.on(Route::get("/x")).reply(Reply::status(503));
    let config = RetryConfig::builder()
        .backoff(
            Backoff::constant(Duration::MAX)
                .max_delay(Duration::MAX)
                .jitter(Jitter::None),
        )
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = Retry::new(mock.clone(), config)
        .send(get("/x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RetryError::DeadlineExceeded {
                wait: Duration::MAX,
                from_server: false,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(t0.elapsed(), Duration::ZERO);
    mock.assert_called(1);
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_deadline_has_already_passed_is_not_sent() {
    let mock = MockTransport::new();
    mock.on(Route::get("/x")).reply(Reply::status(200));
    let retry = Retry::new(mock.clone(), RetryConfig::default());
    let mut req = get("/x");
    Deadline::after(secs(1)).apply(&mut req);
    tokio::time::advance(secs(2)).await;

    let err = retry.send(req).await.unwrap_err();

    assert!(
        matches!(err, RetryError::TimedOut { attempts: 0, .. }),
        "{err:?}"
    );
    assert_eq!(
        ErrorClass::of(&err),
        ErrorClass::Timeout(Some(TimeoutPhase::Total))
    );
    assert!(err.to_string().contains("not sent"), "{err}");
    mock.assert_called(0);
    let snap = retry.snapshot();
    assert_eq!((snap.requests, snap.attempts), (0, 0), "{snap:?}");

    // A deadline that ends exactly now has passed too (hedged or not).
    let config = RetryConfig::builder()
        .hedging(Hedging::after(ms(50)))
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);
    let mut req = get("/x");
    Deadline::after(Duration::ZERO).apply(&mut req);
    let err = retry.send(req).await.unwrap_err();
    assert!(
        matches!(err, RetryError::TimedOut { attempts: 0, .. }),
        "{err:?}"
    );
    mock.assert_called(0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_on_retry_hook_gives_the_budget_token_back() {
    let mock = MockTransport::new();
    mock.on(Route::get("/flaky"))
        .reply_once(Reply::status(503))
        .reply(Reply::status(200));
    let budget = RetryBudget::new(BudgetConfig::new().ratio(0.0).floor(1)).unwrap();
    let config = RetryConfig::builder()
        .shared_budget(budget.clone())
        .on_retry(|_, _, _| panic!("hook failed"))
        .build()
        .unwrap();
    let retry = Retry::new(mock.clone(), config);

    let task = tokio::spawn({
        let retry = retry.clone();
        async move { retry.send(get("/flaky")).await.map(|r| r.status()) }
    });

    assert!(task.await.unwrap_err().is_panic());
    mock.assert_called(1);
    assert_eq!(budget.snapshot().withdrawn, 0, "the token went back");
    assert_eq!(retry.snapshot().retries, 0);
}
