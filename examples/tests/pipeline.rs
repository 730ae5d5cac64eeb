//! The standard pipeline, stacked as the facade will stack it, tested across
//! crates.
//!
//! Outermost first, as DESIGN.md ("Standard pipeline") and steadfast-limit's
//! "Where each layer goes" place them:
//!
//! ```text
//! bulkhead (one permit per logical request) -> retry -> pacing -> rate limit
//!     -> circuit breaker -> transport
//! ```
//!
//! The transport is a [`MockTransport`] on paused time, except for the
//! loopback tests at the end, which run [`HyperTransport`] against a real
//! [`FaultServer`] and only assert lower bounds on time.

use std::error::Error as StdError;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use steadfast_backoff::{Backoff, Jitter, Retry, RetryConfig, RetryError, RetryLayer};
use steadfast_breaker::{Breaker, BreakerConfig, BreakerLayer, BreakerOpen, State};
use steadfast_core::error::find_in_chain as find;
use steadfast_core::{
    Classify, Deadline, DefaultClassifier, ErrorClass, Outcome, TimeoutPhase, Transport,
    TransportExt,
};
use steadfast_hyper::{ErrorKind, HyperTransport};
use steadfast_limit::{
    ConcurrencyConfig, ConcurrencyLimit, ConcurrencyLimitLayer, LimitCause, LimitError, Pacing,
    PacingConfig, PacingLayer, Quota, RateLimit, RateLimitLayer, RateLimited,
};
use steadfast_testkit::{FaultServer, MockTransport, Reply, Route};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------

/// The whole client, as a type.
type Client<T, C> = ConcurrencyLimit<Retry<Pacing<RateLimit<Breaker<T>>>, C>>;

/// The client and a handle on every layer, for snapshots.
struct Pipeline<T, C> {
    client: Client<T, C>,
    retry: RetryLayer<C>,
    breaker: BreakerLayer,
    rate: RateLimitLayer,
    pacing: PacingLayer,
    bulkhead: ConcurrencyLimitLayer,
}

/// The settings of every layer; tests change the ones they are about.
struct Cfg {
    retry: RetryConfig,
    breaker: BreakerConfig,
    quota: Quota,
    pacing: PacingConfig,
    bulkhead: ConcurrencyConfig,
}

impl Cfg {
    /// Deterministic settings: no jitter, a breaker that trips after 3
    /// failures in a row for 5 s, a rate limit high enough not to matter.
    fn standard() -> Self {
        Self {
            retry: retry_config(3, ms(100)),
            breaker: breaker_config(3, secs(5)),
            quota: Quota::per_second(nz(100)),
            pacing: PacingConfig::default(),
            bulkhead: ConcurrencyConfig::builder()
                .max_in_flight(8)
                .build()
                .unwrap(),
        }
    }
}

fn retry_config(max_retries: u32, base: Duration) -> RetryConfig {
    RetryConfig::builder()
        .name("pipeline")
        .backoff(
            Backoff::exponential(base)
                .jitter(Jitter::None)
                .max_retries(max_retries),
        )
        .build()
        .unwrap()
}

fn breaker_config(consecutive_failures: u32, break_duration: Duration) -> BreakerConfig {
    BreakerConfig::builder()
        .name("pipeline")
        .consecutive_failures(consecutive_failures)
        .break_duration(break_duration)
        .max_break_duration(break_duration * 2)
        .build()
        .unwrap()
}

/// Stacks the standard pipeline on `transport`; `classifier` is the retry
/// layer's.
fn pipeline<T, C>(transport: T, cfg: Cfg, classifier: C) -> Pipeline<T, C> {
    let retry = RetryLayer::with_classifier(cfg.retry, classifier);
    let breaker = BreakerLayer::new(cfg.breaker);
    let rate = RateLimitLayer::new(cfg.quota);
    let pacing = PacingLayer::new(cfg.pacing);
    let bulkhead = ConcurrencyLimitLayer::new(cfg.bulkhead);
    let client = transport
        .with(breaker.clone())
        .with(rate.clone())
        .with(pacing.clone())
        .with(retry.clone())
        .with(bulkhead.clone());
    Pipeline {
        client,
        retry,
        breaker,
        rate,
        pacing,
        bulkhead,
    }
}

/// The retry classification the facade needs on top of core's default: a
/// breaker's rejection is retryable after the rest of its break (core cannot
/// know the breaker's error, so `DefaultClassifier` calls it a final
/// failure).
#[derive(Clone, Copy, Debug)]
struct WaitForBreaker;

impl<RB, E: StdError + 'static> Classify<RB, E> for WaitForBreaker {
    fn classify(&self, result: &Result<Response<RB>, E>) -> Outcome {
        if let Err(e) = result
            && let Some(open) = BreakerOpen::find(e)
        {
            return open.outcome();
        }
        DefaultClassifier.classify(result)
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn get(path: &str) -> Request<String> {
    Request::get(format!("http://api.test{path}"))
        .body(String::new())
        .unwrap()
}

fn post(path: &str) -> Request<String> {
    Request::post(format!("http://api.test{path}"))
        .header("content-type", "application/json")
        .body(r#"{"amount":100}"#.to_owned())
        .unwrap()
}

fn with_deadline<B>(mut req: Request<B>, timeout: Duration) -> Request<B> {
    Deadline::after(timeout).apply(&mut req);
    req
}

/// The retry layer's error, from under the bulkhead's `LimitError`.
fn retry_error<E: StdError + 'static>(err: LimitError<RetryError<E>>) -> RetryError<E> {
    match err {
        LimitError::Inner(e) => e,
        other => panic!("expected the retry layer's error, got the bulkhead's: {other}"),
    }
}

/// `err` and its sources, as a user's error report prints them.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// A small deterministic PRNG (xorshift64*), for reproducible chaos.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

// ---------------------------------------------------------------------------
// 1. Retry-After
// ---------------------------------------------------------------------------

/// A user relies on a `503` with `Retry-After: 2` being waited in full
/// before the next attempt (the server's wait is a floor under the backoff),
/// on the pacing layer holding *other* requests to that origin for the same
/// pause, and on never sending more than `max_retries + 1` attempts.
#[tokio::test(start_paused = true)]
async fn retry_after_on_503_is_waited_in_full_and_pauses_the_origin() {
    let mock = MockTransport::new();
    let orders = mock
        .on(Route::get("/orders"))
        .reply_times(2, Reply::status(503).header("retry-after", "2"))
        .reply(Reply::status(200));
    let other = mock.on(Route::get("/other")).reply(Reply::status(200));
    let p = pipeline(mock, Cfg::standard(), WaitForBreaker);
    let start = Instant::now();

    // Another request to the same origin, sent while the first one waits.
    let client = p.client.clone();
    let bystander = tokio::spawn(async move {
        tokio::time::sleep(ms(500)).await;
        client.send(get("/other")).await.map(|r| r.status())
    });

    let res = p.client.send(get("/orders")).await.unwrap();
    assert_eq!(res.status(), 200);
    let calls = orders.calls();
    assert_eq!(calls.len(), 3, "two 503s, then the 200");
    for pair in calls.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= secs(2),
            "retried after {gap:?}, before the Retry-After"
        );
    }
    let retry = p.retry.snapshot();
    assert_eq!(
        (retry.requests, retry.retries),
        (2, 2),
        "the bystander is not retried"
    );
    assert!(retry.attempts <= 1 + 1 + 3, "{retry:?}");

    // The pacing layer held the bystander until the origin's pause was over.
    assert_eq!(bystander.await.unwrap().unwrap(), 200);
    let sent_at = other.calls()[0].at.duration_since(start);
    assert!(sent_at >= secs(2), "the bystander went at {sent_at:?}");
    let pacer = p.pacing.pacer().snapshot();
    assert_eq!(pacer.pauses, 2, "{pacer:?}");
    assert!(pacer.paused >= 1, "{pacer:?}");
}

// ---------------------------------------------------------------------------
// 2. Outage: the breaker and the retry layer
// ---------------------------------------------------------------------------

/// A user relies on the breaker opening after its threshold (3 failures in a
/// row here), on calls failing at once while it is open with the breaker's
/// typed rejection in the error chain, on the retry layer (with core's
/// default classifier, which calls that rejection final) spending no retry,
/// no budget and no time on an open breaker, and on one half-open probe
/// closing it again after the break.
#[tokio::test(start_paused = true)]
async fn open_breaker_fails_fast_and_the_default_retry_does_not_hammer_it() {
    let mock = MockTransport::new();
    let orders = mock
        .on(Route::get("/orders"))
        .reply_times(3, Reply::status(503))
        .reply(Reply::status(200));
    let p = pipeline(mock, Cfg::standard(), DefaultClassifier);
    let breaker = p.breaker.breaker().unwrap().clone();

    // Three 503s trip the breaker; the fourth attempt is refused by it.
    let err = retry_error(p.client.send(get("/orders")).await.unwrap_err());
    assert!(
        matches!(err, RetryError::NotRetryable { attempts: 4, .. }),
        "{err:?}"
    );
    let open = BreakerOpen::find(&err).expect("the breaker's rejection is in the chain");
    assert_eq!(open.state, State::Open);
    assert!(open.retry_after > Duration::ZERO && open.retry_after <= secs(5));
    assert_eq!(orders.call_count(), 3);
    assert_eq!(breaker.state(), State::Open);

    // While it is open: every call fails at once, nothing is sent, and the
    // retry layer neither retries nor draws on its budget.
    let before = p.retry.snapshot();
    let budget_before = p.retry.budget().unwrap().snapshot();
    let t = Instant::now();
    for _ in 0..20 {
        let err = retry_error(p.client.send(get("/orders")).await.unwrap_err());
        assert_eq!(err.attempts(), 1);
        let open = BreakerOpen::find(&err).expect("typed rejection");
        assert_eq!(open.state, State::Open);
        let message = chain(&err);
        assert!(
            message.contains("circuit breaker is open; retry in"),
            "{message}"
        );
    }
    assert_eq!(t.elapsed(), Duration::ZERO, "an open breaker costs no wait");
    let after = p.retry.snapshot();
    assert_eq!(after.retries, before.retries);
    assert_eq!(after.requests, before.requests + 20);
    assert_eq!(p.retry.budget().unwrap().snapshot(), budget_before);
    assert_eq!(orders.call_count(), 3);
    assert_eq!(breaker.snapshot().rejections, 21);

    // After the break one probe goes; its success closes the breaker.
    tokio::time::sleep(secs(5)).await;
    let res = p.client.send(get("/orders")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(orders.call_count(), 4);
}

/// A user printing an error report (anyhow's `{:#}`, eyre's "Caused by:",
/// steadfast's `Report`) relies on each cause appearing once: each layer
/// says what it did, and leaves the rest to its `source()`.
#[tokio::test(start_paused = true)]
async fn error_report_names_each_cause_once() {
    let mock = MockTransport::new();
    mock.on(Route::get("/orders")).reply(Reply::status(503));
    let p = pipeline(mock, Cfg::standard(), DefaultClassifier);
    let _ = p.client.send(get("/orders")).await; // trips the breaker
    let err = p.client.send(get("/orders")).await.unwrap_err();
    let mut messages = vec![err.to_string()];
    let mut cur = StdError::source(&err);
    while let Some(e) = cur {
        messages.push(e.to_string());
        cur = e.source();
    }
    // The rejection itself is in the chain once; the layers above it say
    // only what they did (two limit layers say the same thing).
    let rejections = messages.iter().filter(|m| m.contains("is open")).count();
    assert_eq!(rejections, 1, "{messages:#?}");
    let report = steadfast_core::Report::new(&err).to_string();
    assert!(report.contains("circuit breaker"), "{report}");
    assert_eq!(report.matches("is open").count(), 1, "{report}");
}

/// A user who maps the breaker's rejection to "retry after `retry_after`"
/// (what the facade should do) relies on the retry layer waiting out the
/// rest of the break in one sleep, not polling the open breaker, and on the
/// probe after the break closing it and answering the request.
#[tokio::test(start_paused = true)]
async fn breaker_aware_retry_waits_out_the_break_then_probes() {
    let mock = MockTransport::new();
    let orders = mock
        .on(Route::get("/orders"))
        .reply_times(3, Reply::status(503))
        .reply(Reply::status(200));
    let cfg = Cfg {
        retry: retry_config(5, ms(100)),
        ..Cfg::standard()
    };
    let p = pipeline(mock, cfg, WaitForBreaker);
    let breaker = p.breaker.breaker().unwrap().clone();

    let res = p.client.send(get("/orders")).await.unwrap();
    assert_eq!(res.status(), 200);

    let calls = orders.calls();
    assert_eq!(calls.len(), 4, "three 503s, then the probe");
    let waited = calls[3].at.duration_since(calls[2].at);
    assert!(
        waited >= secs(5),
        "the probe went {waited:?} after the trip"
    );
    assert_eq!(breaker.state(), State::Closed);
    let snap = breaker.snapshot();
    assert_eq!(snap.rejections, 1, "one refusal, then one wait: {snap:?}");
    let retry = p.retry.snapshot();
    assert_eq!(retry.retries, 4, "{retry:?}");
    assert_eq!(p.retry.budget().unwrap().snapshot().withdrawn, 4);
}

// ---------------------------------------------------------------------------
// 3. The deadline bounds the whole stack
// ---------------------------------------------------------------------------

/// A user relies on a `Deadline` bounding retries and their server-given
/// waits: when the next `Retry-After` would end past it, the request fails
/// then, typed as a deadline error that names the wait and the time left,
/// instead of sleeping past it.
#[tokio::test(start_paused = true)]
async fn deadline_refuses_a_retry_wait_that_would_outlast_it() {
    let mock = MockTransport::new();
    let orders = mock
        .on(Route::get("/orders"))
        .reply(Reply::status(503).header("retry-after", "1").delay(ms(500)));
    let cfg = Cfg {
        quota: Quota::per_second(nz(1)),
        ..Cfg::standard()
    };
    let p = pipeline(mock, cfg, WaitForBreaker);
    let start = Instant::now();

    // 0 s: attempt 1; 0.5 s: 503, wait 1 s; 1.5 s: attempt 2; 2 s: 503, and
    // a wait to 3 s does not fit before 2.8 s.
    let req = with_deadline(get("/orders"), ms(2_800));
    let err = retry_error(p.client.send(req).await.unwrap_err());
    assert!(start.elapsed() <= ms(2_800), "ran {:?}", start.elapsed());
    assert!(err.is_deadline(), "{err:?}");
    match &err {
        RetryError::DeadlineExceeded {
            attempts,
            wait,
            from_server,
            remaining,
            cause,
        } => {
            assert_eq!(*attempts, 2);
            assert_eq!(*wait, secs(1));
            assert!(*from_server);
            assert!(*remaining < *wait, "{remaining:?}");
            assert_eq!(cause.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(orders.call_count(), 2);
}

/// A user relies on the deadline cutting an attempt that is still in
/// flight, with an error that classifies as a timeout of phase `Total`.
#[tokio::test(start_paused = true)]
async fn deadline_cuts_an_attempt_in_flight() {
    let mock = MockTransport::new();
    mock.on(Route::get("/hang"))
        .reply(Reply::status(200).delay(secs(10)));
    let p = pipeline(mock, Cfg::standard(), WaitForBreaker);
    let start = Instant::now();

    let req = with_deadline(get("/hang"), secs(3));
    let err = retry_error(p.client.send(req).await.unwrap_err());
    assert_eq!(start.elapsed(), secs(3));
    assert!(
        matches!(err, RetryError::TimedOut { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(err.is_deadline());
    assert_eq!(
        err.cause()
            .timeout()
            .map(steadfast_core::TimeoutError::phase),
        Some(TimeoutPhase::Total)
    );
    assert_eq!(
        ErrorClass::of(&err),
        ErrorClass::Timeout(Some(TimeoutPhase::Total))
    );
    assert_eq!(p.bulkhead.bulkhead().snapshot().in_flight, 0);
    // The retry layer sits above the breaker, so the attempt it cut was
    // dropped, not failed: the breaker saw nothing. For a hanging server to
    // trip the breaker, the facade needs an attempt timeout *below* it.
    assert_eq!(p.breaker.breaker().unwrap().snapshot().window.calls, 0);
}

/// A user relies on the limiters never queueing a request past its
/// deadline: a rate-limit token or a server pause that comes after it fails
/// the request at once, with a typed refusal saying why and how long it
/// would have waited.
#[tokio::test(start_paused = true)]
async fn deadline_bounds_rate_limit_and_pacing_waits() {
    // Our own quota: one request per 2 s.
    let mock = MockTransport::new();
    let orders = mock.on(Route::get("/orders")).reply(Reply::status(503));
    let cfg = Cfg {
        quota: Quota::with_period(secs(2)).unwrap(),
        ..Cfg::standard()
    };
    let p = pipeline(mock, cfg, WaitForBreaker);
    let start = Instant::now();
    // 0 s: attempt 1 takes the token; 0.1 s: the retry's token would come
    // at 2 s, after the deadline at 1.5 s.
    let err = retry_error(
        p.client
            .send(with_deadline(get("/orders"), ms(1_500)))
            .await
            .unwrap_err(),
    );
    assert_eq!(start.elapsed(), ms(100), "failed when the wait was known");
    let refused = find::<RateLimited>(&err).expect("the limiter's refusal is in the chain");
    assert_eq!(refused.cause(), LimitCause::Quota);
    assert!(refused.wait() >= ms(1_400), "{refused:?}");
    assert_eq!(err.attempts(), 2);
    assert_eq!(orders.call_count(), 1);
    assert_eq!(p.rate.limiter().snapshot().deadline_refusals, 1);

    // The server's pause: a 429 asking for 10 s.
    let mock = MockTransport::new();
    let busy = mock
        .on(Route::get("/busy"))
        .reply(Reply::status(429).header("retry-after", "10"));
    let other = mock.on(Route::get("/other")).reply(Reply::status(200));
    let p = pipeline(mock, Cfg::standard(), WaitForBreaker);
    let start = Instant::now();
    let err = retry_error(
        p.client
            .send(with_deadline(get("/busy"), secs(3)))
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(
            err,
            RetryError::DeadlineExceeded {
                attempts: 1,
                from_server: true,
                ..
            }
        ),
        "{err:?}"
    );
    // Another request to the paused origin, with 3 s to live, is refused by
    // the pacing layer at once: nothing is sent.
    let err = retry_error(
        p.client
            .send(with_deadline(get("/other"), secs(3)))
            .await
            .unwrap_err(),
    );
    let refused = find::<RateLimited>(&err).expect("pacing's refusal is in the chain");
    assert_eq!(refused.cause(), LimitCause::ServerPause);
    assert!(refused.wait() >= secs(9), "{refused:?}");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!((busy.call_count(), other.call_count()), (1, 0));
    assert_eq!(p.pacing.pacer().snapshot().deadline_refusals, 1);
}

// ---------------------------------------------------------------------------
// 4. Cancellation
// ---------------------------------------------------------------------------

/// A user relies on cancellation being free: 300 requests dropped at random
/// points (queued in the bulkhead, waiting for a retry, for a token, for a
/// pause, or in flight) leave no bulkhead permit or queue place taken, no
/// rate-limit waiter, no budget token spent on a retry that was never sent,
/// and no half-open probe slot held; once the breaks and pauses are over,
/// the next request goes at once.
#[tokio::test(start_paused = true)]
async fn cancelled_requests_leave_no_permit_probe_or_budget_behind() {
    let mock = MockTransport::new();
    let healthy = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let (h, n) = (Arc::clone(&healthy), Arc::clone(&served));
    mock.on(Route::get("/work")).reply(Reply::with(move |_| {
        if h.load(Ordering::SeqCst) {
            return Reply::status(200);
        }
        match n.fetch_add(1, Ordering::SeqCst) % 6 {
            0 => Reply::status(503).header("retry-after", "1").delay(ms(50)),
            1 | 2 => Reply::status(500).delay(ms(300)),
            3 => Reply::reset().delay(ms(200)),
            _ => Reply::status(200).delay(ms(400)),
        }
    }));
    let cfg = Cfg {
        retry: retry_config(3, ms(100)),
        breaker: breaker_config(3, secs(1)),
        quota: Quota::per_second(nz(20)).burst(nz(5)),
        bulkhead: ConcurrencyConfig::builder()
            .max_in_flight(4)
            .max_queue(1_000)
            .build()
            .unwrap(),
        ..Cfg::standard()
    };
    let p = pipeline(mock, cfg, WaitForBreaker);
    let breaker = p.breaker.breaker().unwrap().clone();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let start = ms(rng.below(4_000));
        let give_up = ms(rng.below(2_500));
        let client = p.client.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            tokio::time::timeout(give_up, async {
                // Dropping the response at once releases its permit too.
                let _ = client.send(get("/work")).await;
            })
            .await
            .is_err()
        }));
    }
    let mut cancelled = 0;
    for t in tasks {
        cancelled += u32::from(t.await.unwrap());
    }
    assert!(cancelled >= 100, "only {cancelled} requests were cancelled");
    assert!(
        breaker.snapshot().opened > 0,
        "the storm never tripped the breaker"
    );

    let bulkhead = p.bulkhead.bulkhead().snapshot();
    assert_eq!(
        (bulkhead.in_flight, bulkhead.queued),
        (0, 0),
        "{bulkhead:?}"
    );
    assert_eq!(p.rate.limiter().snapshot().waiting, 0);
    let retry = p.retry.snapshot();
    assert!(retry.retries > 0, "{retry:?}");
    assert_eq!(
        p.retry.budget().unwrap().snapshot().withdrawn,
        retry.retries,
        "every token taken for a retry that was cancelled went back"
    );

    // Every break, pause and token refill is over after 10 s: the next
    // request goes at once (a stranded probe slot would refuse it).
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(secs(10)).await;
    assert_eq!(p.rate.limiter().snapshot().available, 5);
    let start = Instant::now();
    let res = p.client.send(get("/work")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(start.elapsed(), Duration::ZERO);
    drop(res);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(p.bulkhead.bulkhead().snapshot().in_flight, 0);
}

/// A user relies on a half-open probe that is cancelled mid-flight giving
/// its slot back: the breaker does not stay half-open with no probe out,
/// refusing everything; the next request becomes the probe at once.
#[tokio::test(start_paused = true)]
async fn a_cancelled_half_open_probe_frees_its_slot() {
    let mock = MockTransport::new();
    let work = mock
        .on(Route::get("/work"))
        .reply_times(3, Reply::status(500))
        .reply(Reply::status(200).delay(secs(1)));
    let cfg = Cfg {
        retry: retry_config(0, ms(100)),
        breaker: breaker_config(3, secs(1)),
        ..Cfg::standard()
    };
    let p = pipeline(mock, cfg, WaitForBreaker);
    let breaker = p.breaker.breaker().unwrap().clone();
    for _ in 0..3 {
        let res = p.client.send(get("/work")).await.unwrap();
        assert_eq!(res.status(), 500);
    }
    assert_eq!(breaker.state(), State::Open);
    tokio::time::sleep(secs(1)).await;

    // The probe goes, and is dropped before its answer.
    let client = p.client.clone();
    let probe = tokio::spawn(async move { client.send(get("/work")).await.map(|r| r.status()) });
    tokio::time::sleep(ms(100)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    let err = retry_error(p.client.send(get("/work")).await.unwrap_err());
    let open = BreakerOpen::find(&err).expect("refused while the probe is out");
    assert_eq!(open.state, State::HalfOpen);
    probe.abort();
    assert!(probe.await.unwrap_err().is_cancelled());
    assert_eq!(work.call_count(), 4);

    // Its slot is free again: the next request is the probe, at once.
    let start = Instant::now();
    let res = p.client.send(get("/work")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(start.elapsed(), secs(1), "only the server's own latency");
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(work.call_count(), 5);
}

// ---------------------------------------------------------------------------
// 5. Idempotency
// ---------------------------------------------------------------------------

/// A pipeline whose breaker does not trip, for tests about the retry rules.
fn lenient<C>(mock: MockTransport, classifier: C) -> Pipeline<MockTransport, C> {
    let cfg = Cfg {
        breaker: breaker_config(100, secs(5)),
        ..Cfg::standard()
    };
    pipeline(mock, cfg, classifier)
}

/// A user relies on a POST that may have reached the server (a reset, a
/// read timeout, a 503) not being sent twice, with an error that names the
/// header that would have allowed it.
#[tokio::test(start_paused = true)]
async fn post_is_not_retried_after_it_may_have_reached_the_server() {
    let mock = MockTransport::new();
    let reset = mock.on(Route::post("/reset")).reply(Reply::reset());
    let slow = mock.on(Route::post("/slow")).reply(Reply::timeout());
    let busy = mock.on(Route::post("/busy")).reply(Reply::status(503));
    let p = lenient(mock, WaitForBreaker);

    let err = retry_error(p.client.send(post("/reset")).await.unwrap_err());
    match &err {
        RetryError::NotIdempotent {
            attempts,
            method,
            header,
            ..
        } => {
            assert_eq!(*attempts, 1);
            assert_eq!(method, http::Method::POST);
            assert_eq!(header, "idempotency-key");
        }
        other => panic!("expected NotIdempotent, got {other:?}"),
    }
    assert_eq!(ErrorClass::of(&err), ErrorClass::Reset);
    assert!(err.to_string().contains("idempotency-key"), "{err}");
    reset.assert_called_once();

    let err = retry_error(p.client.send(post("/slow")).await.unwrap_err());
    assert!(
        matches!(err, RetryError::NotIdempotent { attempts: 1, .. }),
        "{err:?}"
    );
    slow.assert_called_once();

    // A retryable response on a POST is the answer: returned, not retried.
    let res = p.client.send(post("/busy")).await.unwrap();
    assert_eq!(res.status(), 503);
    busy.assert_called_once();
    assert_eq!(p.retry.snapshot().retries, 0);
}

/// A user relies on a POST being retried when the error proves it never
/// left the client (a connect error, a connect timeout), and on a POST with
/// an `Idempotency-Key` being retried with the same key and body.
#[tokio::test(start_paused = true)]
async fn post_is_retried_when_it_never_left_or_carries_a_key() {
    let mock = MockTransport::new();
    let refused = mock
        .on(Route::post("/refused"))
        .reply_times(2, Reply::connect_error())
        .reply(Reply::status(201));
    let connect_timeout = mock
        .on(Route::post("/connect-timeout"))
        .reply_times(1, Reply::timeout_in(TimeoutPhase::Connect))
        .reply(Reply::status(201));
    let keyed = mock
        .on(Route::post("/keyed"))
        .reply_times(1, Reply::reset())
        .reply(Reply::status(201));
    let p = lenient(mock, WaitForBreaker);

    let res = p.client.send(post("/refused")).await.unwrap();
    assert_eq!(res.status(), 201);
    refused.assert_called(3);

    let res = p.client.send(post("/connect-timeout")).await.unwrap();
    assert_eq!(res.status(), 201);
    connect_timeout.assert_called(2);

    let mut req = post("/keyed");
    req.headers_mut()
        .insert("idempotency-key", "order-42".parse().unwrap());
    let res = p.client.send(req).await.unwrap();
    assert_eq!(res.status(), 201);
    let calls = keyed.calls();
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(call.header("idempotency-key"), Some("order-42"));
        assert_eq!(&call.body[..], br#"{"amount":100}"#);
    }
    assert_eq!(p.retry.snapshot().retries, 2 + 1 + 1);
}

// ---------------------------------------------------------------------------
// 6. Over loopback: HyperTransport + FaultServer (real time)
// ---------------------------------------------------------------------------

fn hyper() -> HyperTransport {
    HyperTransport::builder()
        .connect_timeout(secs(2))
        .read_timeout(ms(200))
        .build()
        .unwrap()
}

fn loopback_cfg(max_retries: u32) -> Cfg {
    Cfg {
        retry: retry_config(max_retries, ms(20)),
        breaker: BreakerConfig::default(),
        ..Cfg::standard()
    }
}

fn empty(url: String) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

/// A user relies on a real flaky endpoint (`503` twice) being answered by
/// the third attempt through the whole stack.
#[tokio::test]
async fn loopback_flaky_endpoint_succeeds_on_the_third_attempt() {
    let server = FaultServer::start().await;
    let p = pipeline(hyper(), loopback_cfg(3), WaitForBreaker);

    let res = p
        .client
        .send(empty(server.url("/flaky?fail=2&key=pipeline")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["attempt"], 3);
    assert_eq!(server.hits("/flaky"), 3);
    assert_eq!(p.retry.snapshot().retries, 2);
    assert_eq!(p.bulkhead.bulkhead().snapshot().in_flight, 0);
}

/// A user relies on a real `429` with `Retry-After: 1` being waited in full
/// before the retry, and on the origin staying paused afterwards: a request
/// whose deadline ends before the pause is refused without being sent.
#[tokio::test]
async fn loopback_429_retry_after_is_waited_and_paces_the_origin() {
    let server = FaultServer::start().await;
    let p = pipeline(hyper(), loopback_cfg(1), WaitForBreaker);

    let start = Instant::now();
    let res = p
        .client
        .send(empty(server.url("/status/429?retry_after=1")))
        .await
        .unwrap();
    // Retries used up on a retryable response: the last answer is returned.
    assert_eq!(res.status(), 429);
    drop(res);
    assert!(
        start.elapsed() >= secs(1),
        "retried after {:?}",
        start.elapsed()
    );
    assert_eq!(server.hits("/status/429"), 2);

    // The second 429 paused the origin again for 1 s.
    let err = retry_error(
        p.client
            .send(with_deadline(empty(server.url("/status/200")), ms(200)))
            .await
            .unwrap_err(),
    );
    let refused = find::<RateLimited>(&err).expect("pacing's refusal is in the chain");
    assert_eq!(refused.cause(), LimitCause::ServerPause);
    assert_eq!(server.hits("/status/200"), 0);
}

/// A user relies on the hyper transport's typed errors classifying as they
/// should through the stack: a refused connection is retried even for a
/// POST (it was never sent), a read timeout is retried for a GET but not
/// for a POST, and a reset mid-body is a transient `Reset` that may have
/// reached the server.
#[tokio::test]
async fn loopback_transport_errors_classify_through_the_stack() {
    let server = FaultServer::start().await;

    // Refused: a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let p = pipeline(hyper(), loopback_cfg(2), WaitForBreaker);
    let req = Request::post(format!("http://{addr}/orders"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let err = retry_error(p.client.send(req).await.unwrap_err());
    assert!(
        matches!(err, RetryError::Exhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(ErrorClass::of(&err), ErrorClass::Connect);
    let hyper_err = find::<steadfast_hyper::HyperError>(&err).unwrap();
    assert_eq!(hyper_err.kind(), ErrorKind::Connect);
    assert!(!hyper_err.may_have_reached_server());

    // Read timeout: retried for a GET, not for a POST.
    let p = pipeline(hyper(), loopback_cfg(1), WaitForBreaker);
    let err = retry_error(
        p.client
            .send(empty(server.url("/slow?ms=1000")))
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(err, RetryError::Exhausted { attempts: 2, .. }),
        "{err:?}"
    );
    assert_eq!(
        ErrorClass::of(&err),
        ErrorClass::Timeout(Some(TimeoutPhase::Read))
    );
    let req = Request::post(server.url("/slow?ms=1000"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let err = retry_error(p.client.send(req).await.unwrap_err());
    assert!(
        matches!(err, RetryError::NotIdempotent { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(server.hits("/slow"), 3);

    // Reset mid-body: the head came, so the layers have returned; the body's
    // error is a transient reset that may have reached the server.
    let res = p.client.send(empty(server.url("/reset"))).await.unwrap();
    assert_eq!(res.status(), 200);
    let body_err = res.into_body().collect().await.unwrap_err();
    assert_eq!(body_err.kind(), ErrorKind::Read);
    assert!(body_err.may_have_reached_server());
    assert_eq!(ErrorClass::of(&body_err), ErrorClass::Reset);
    let as_result: Result<Response<()>, _> = Err(body_err);
    assert!(DefaultClassifier.classify(&as_result).is_retryable());
    assert_eq!(server.hits("/reset"), 1);
}
