//! The layers over MockTransport, on paused time.
#![cfg(not(loom))] // the test tools need tokio's `net`, which loom builds leave out

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use steadfast_core::{Deadline, Transport, TransportExt, transport_fn};
use steadfast_limit::{
    AdaptiveLayer, Aimd, AimdConfig, ConcurrencyConfig, ConcurrencyLimitLayer, Gradient,
    GradientConfig, HostKey, KeyedRateLimiter, LimitCause, LimitError, PacingConfig, PacingLayer,
    Quota, RateLimitLayer, RejectReason, ReleaseOn,
};
use steadfast_testkit::{MockTransport, Reply, Route};
use tokio::time::Instant;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn get(uri: &str) -> Request<String> {
    Request::get(uri).body(String::new()).unwrap()
}

fn with_deadline(mut req: Request<String>, after: Duration) -> Request<String> {
    Deadline::after(after).apply(&mut req);
    req
}

#[tokio::test(start_paused = true)]
async fn rate_limit_spaces_attempts_and_fails_fast_past_the_deadline() {
    let mock = MockTransport::new();
    mock.on(Route::any()).reply(Reply::status(200));
    let layer = RateLimitLayer::new(Quota::per_second(nz(10)).burst(nz(1)));
    let client = mock.clone().with(layer.clone());
    let t0 = Instant::now();
    for _ in 0..3 {
        client.send(get("http://a.test/")).await.unwrap();
    }
    let at: Vec<_> = mock.calls().iter().map(|c| c.at - t0).collect();
    assert_eq!(
        at,
        [
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_millis(200)
        ]
    );

    // The next token is 100 ms away; a 50 ms deadline fails now, untouched.
    let t1 = Instant::now();
    let err = client
        .send(with_deadline(
            get("http://a.test/"),
            Duration::from_millis(50),
        ))
        .await
        .unwrap_err();
    let LimitError::RateLimited(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (e.cause(), e.wait(), e.name()),
        (LimitCause::Quota, Duration::from_millis(100), "rate_limit")
    );
    assert_eq!(t1.elapsed(), Duration::ZERO);
    mock.assert_called(3);
    let s = layer.limiter().snapshot();
    assert_eq!((s.queued, s.deadline_refusals, s.refused), (2, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn keyed_rate_limit_keeps_keys_apart() {
    let mock = MockTransport::new();
    mock.on(Route::any()).reply(Reply::status(200));
    let limiter = KeyedRateLimiter::builder(Quota::per_second(nz(1)).burst(nz(1)))
        .name("per-api-key")
        .build()
        .unwrap();
    let by_api_key = |req: &Request<String>| {
        req.headers()
            .get("x-api-key")
            .map(|v| v.as_bytes().to_vec())
    };
    let client = mock
        .clone()
        .with(RateLimitLayer::keyed(limiter, by_api_key));
    let req = |key: &str| {
        Request::get("http://a.test/")
            .header("x-api-key", key)
            .body(String::new())
            .unwrap()
    };
    let t0 = Instant::now();
    client.send(req("a")).await.unwrap();
    client.send(req("b")).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    client.send(req("a")).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    let s = client.limiter().limiter().snapshot();
    assert_eq!((&*s.name, s.keys, s.admitted), ("per-api-key", 2, 3));
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_holds_its_permit_until_the_body_ends() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply(Reply::status(200).chunks(["a", "b", "c"], Duration::from_millis(100)));
    let layer = ConcurrencyLimitLayer::new(
        ConcurrencyConfig::builder()
            .max_in_flight(1)
            .max_queue(0)
            .name("api")
            .build()
            .unwrap(),
    );
    let client = mock.clone().with(layer.clone());
    let res = client.send(get("http://a.test/")).await.unwrap();
    assert!(res.body().holds_permit());
    assert_eq!(layer.bulkhead().in_flight(), 1);
    // The body still streams: a second request finds no slot and no queue.
    let err = client.send(get("http://a.test/")).await.unwrap_err();
    let LimitError::Rejected(r) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (r.reason(), r.name(), r.limit()),
        (RejectReason::QueueFull, "api", 1)
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"abc");
    assert_eq!(layer.bulkhead().in_flight(), 0);
    mock.assert_called(1);

    // ReleaseOn::ResponseHead: free as soon as the head is in.
    let layer = ConcurrencyLimitLayer::new(
        ConcurrencyConfig::builder()
            .max_in_flight(1)
            .release_on(ReleaseOn::ResponseHead)
            .build()
            .unwrap(),
    );
    let client = mock.clone().with(layer.clone());
    let res = client.send(get("http://a.test/")).await.unwrap();
    assert!(!res.body().holds_permit());
    assert_eq!(layer.bulkhead().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_requests_release_their_permit_and_their_place_in_line() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply(Reply::status(200).delay(Duration::from_secs(1)));
    let layer = ConcurrencyLimitLayer::new(
        ConcurrencyConfig::builder()
            .max_in_flight(1)
            .max_queue(4)
            .build()
            .unwrap(),
    );
    let client = mock.with(layer.clone());
    let running = tokio::spawn({
        let c = client.clone();
        async move { c.send(get("http://a.test/")).await.map(drop) }
    });
    let queued = tokio::spawn({
        let c = client.clone();
        async move { c.send(get("http://a.test/")).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let s = layer.bulkhead().snapshot();
    assert_eq!((s.in_flight, s.queued), (1, 1));
    queued.abort();
    running.abort();
    let _ = (queued.await, running.await);
    let s = layer.bulkhead().snapshot();
    assert_eq!((s.in_flight, s.queued), (0, 0));
    // The slot is free again.
    let t0 = Instant::now();
    drop(client.send(get("http://a.test/")).await.unwrap());
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_queue_timeout_is_a_typed_rejection() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply(Reply::status(200).delay(Duration::from_secs(10)));
    let layer = ConcurrencyLimitLayer::new(
        ConcurrencyConfig::builder()
            .max_in_flight(1)
            .max_queue_wait(Duration::from_millis(250))
            .build()
            .unwrap(),
    );
    let client = mock.with(layer.clone());
    let _running = tokio::spawn({
        let c = client.clone();
        async move { c.send(get("http://a.test/")).await.map(drop) }
    });
    tokio::task::yield_now().await;
    let err = client.send(get("http://a.test/")).await.unwrap_err();
    let LimitError::Rejected(r) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (r.reason(), r.waited()),
        (RejectReason::QueueTimeout, Duration::from_millis(250))
    );
    assert_eq!(
        steadfast_core::ErrorClass::of(&err),
        steadfast_core::ErrorClass::Timeout(Some(steadfast_core::TimeoutPhase::Queue))
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_pauses_the_whole_origin() {
    let mock = MockTransport::new();
    mock.on(Route::any().host("a.test"))
        .reply_once(Reply::status(429).header("retry-after", "2"))
        .reply(Reply::status(200));
    mock.on(Route::any()).reply(Reply::status(200));
    let layer = PacingLayer::new(PacingConfig::default());
    let client = mock.clone().with(layer.clone());
    let t0 = Instant::now();
    assert_eq!(
        client.send(get("http://a.test/x")).await.unwrap().status(),
        429
    );
    // Another origin is not held.
    client.send(get("http://b.test/x")).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    // A request whose deadline falls inside the pause fails at once.
    let err = client
        .send(with_deadline(
            get("http://a.test/y"),
            Duration::from_secs(1),
        ))
        .await
        .unwrap_err();
    let LimitError::RateLimited(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (e.cause(), e.wait()),
        (LimitCause::ServerPause, Duration::from_secs(2))
    );
    assert_eq!(t0.elapsed(), Duration::ZERO);
    // Any other path of the origin waits for the pause, then goes.
    assert_eq!(
        client.send(get("http://a.test/z")).await.unwrap().status(),
        200
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    let s = layer.pacer().snapshot();
    assert_eq!((s.pauses, s.paused, s.deadline_refusals), (1, 1, 1));
    mock.assert_called(3);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_share_the_servers_pace() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply(Reply::status(200).header("ratelimit", r#""default";r=4;t=2"#));
    let layer = PacingLayer::new(PacingConfig::default());
    let client = mock.clone().with(layer.clone());
    let t0 = Instant::now();
    client.send(get("https://api.test/")).await.unwrap();
    let key = HostKey::of(&"https://api.test/".parse().unwrap());
    assert_eq!(layer.pacer().view(&key).rate_per_second, Some(2.0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.send(get("https://api.test/")).await.map(drop) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let at: Vec<_> = mock
        .calls()
        .iter()
        .map(|c| (c.at - t0).as_millis())
        .collect();
    assert_eq!(at, [0, 0, 500, 1000, 1500]);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_paced_request_gives_its_slot_back() {
    let mock = MockTransport::new();
    mock.on(Route::any()).reply(
        Reply::status(200)
            .header("x-ratelimit-remaining", "1")
            .header("x-ratelimit-reset", "1"),
    );
    let client = mock.clone().with(PacingLayer::new(PacingConfig::default()));
    client.send(get("https://api.test/")).await.unwrap();
    client.send(get("https://api.test/")).await.unwrap(); // slot 0, next at 1 s
    let t0 = Instant::now();
    let waiting = tokio::spawn({
        let c = client.clone();
        async move { c.send(get("https://api.test/")).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiting.abort();
    let _ = waiting.await;
    // The cancelled request's slot (1 s) is free again for the next one.
    client.send(get("https://api.test/")).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
}

/// `total_wait` counts the time requests waited: a request cancelled
/// while it waits gives back the part of its wait it did not wait.
#[tokio::test(start_paused = true)]
async fn a_cancelled_paced_request_counts_only_the_wait_it_waited() {
    let mock = MockTransport::new();
    mock.on(Route::any()).reply(
        Reply::status(200)
            .header("x-ratelimit-remaining", "1")
            .header("x-ratelimit-reset", "1"),
    );
    let layer = PacingLayer::new(PacingConfig::default());
    let client = mock.clone().with(layer.clone());
    client.send(get("https://api.test/")).await.unwrap();
    client.send(get("https://api.test/")).await.unwrap(); // slot 0, next at 1 s
    assert_eq!(layer.pacer().snapshot().total_wait, Duration::ZERO);
    let waiting = tokio::spawn({
        let c = client.clone();
        async move { c.send(get("https://api.test/")).await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(
        layer.pacer().snapshot().total_wait,
        Duration::from_millis(100)
    );
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Sends `n` concurrent requests to `uri`, in order, and waits for all.
async fn send_together<T>(client: &T, uri: &'static str, n: usize) -> Vec<Result<(), String>>
where
    T: Transport<String> + Clone + Send + Sync + 'static,
    T::Error: std::fmt::Debug + Send,
{
    let mut tasks = Vec::new();
    for _ in 0..n {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.send(get(uri))
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        }));
        tokio::task::yield_now().await; // each reserves before the next
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

fn sent_at(mock: &MockTransport, t0: Instant) -> Vec<u128> {
    mock.calls()
        .iter()
        .map(|c| (c.at - t0).as_millis())
        .collect()
}

/// The server paces one per second; mid-run, a 429 with `Retry-After: 3`.
/// The requests holding slots are spread again after the pause, one per
/// second, instead of all going when it ends.
#[tokio::test(start_paused = true)]
async fn a_pause_keeps_the_pace_of_the_requests_it_held() {
    let mock = MockTransport::new();
    let paced = || {
        Reply::status(200)
            .header("ratelimit", r#""a";r=5;t=5"#)
            .delay(ms(10))
    };
    mock.on(Route::any())
        .reply_once(paced())
        .reply_once(Reply::status(429).header("retry-after", "3").delay(ms(10)))
        .reply(paced());
    let client = mock.clone().with(PacingLayer::new(PacingConfig::default()));
    let t0 = Instant::now();
    client.send(get("https://api.test/")).await.unwrap(); // one per second from now
    let results = send_together(&client, "https://api.test/", 5).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // The 429 (sent at 10) pauses until 3 020: then one per second.
    assert_eq!(sent_at(&mock, t0), [0, 10, 3020, 4020, 5020, 6020]);
}

/// Slots booked far out under a slow pace: a 429 that brings a pause and a
/// faster pace voids them, and their requests book again at once, rather
/// than sleeping out their old slots (up to 40 s here) first.
#[tokio::test(start_paused = true)]
async fn a_pause_wakes_requests_booked_far_out_under_the_old_pace() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply_once(Reply::status(200).header("ratelimit", r#""a";r=6;t=60"#))
        .reply(Reply::status(200).header("ratelimit", r#""a";r=100;t=10"#));
    let layer = PacingLayer::new(PacingConfig::default());
    let client = mock.clone().with(layer.clone());
    let t0 = Instant::now();
    client.send(get("https://api.test/")).await.unwrap(); // one per 10 s from now
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.send(get("https://api.test/")).await.map(drop) })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await; // slots at 0, 10, 20, 30 s
    let mut headers = http::HeaderMap::new();
    headers.insert("retry-after", "1".parse().unwrap());
    headers.insert("ratelimit", r#""a";r=100;t=10"#.parse().unwrap());
    let key = HostKey::of(&"https://api.test/".parse().unwrap());
    layer.pacer().observe(
        &key,
        http::StatusCode::TOO_MANY_REQUESTS,
        &headers,
        std::time::SystemTime::now(),
    );
    for t in waiting {
        t.await.unwrap().unwrap();
    }
    // The first two go at once (the second had the slot at 0 s); the
    // others, booked at 10, 20 and 30 s, follow the pause (2 s) at ten a
    // second.
    assert_eq!(sent_at(&mock, t0), [0, 0, 2000, 2100, 2200]);
}

/// Slots booked under one request a second; then the server says two are
/// left for the next 10 s (other clients share the quota). The requests
/// holding slots at 1, 2 and 3 s book again, 5 s apart, instead of
/// spending three requests the server no longer has.
#[tokio::test(start_paused = true)]
async fn a_tighter_pace_respaces_the_requests_it_finds_booked() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply_once(Reply::status(200).header("ratelimit", r#""a";r=10;t=10"#))
        .reply(
            Reply::status(200)
                .header("ratelimit", r#""a";r=2;t=10"#)
                .delay(ms(10)),
        );
    let client = mock.clone().with(PacingLayer::new(PacingConfig::default()));
    let t0 = Instant::now();
    client.send(get("https://api.test/")).await.unwrap(); // one per second from now
    let results = send_together(&client, "https://api.test/", 4).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(sent_at(&mock, t0), [0, 0, 5000, 10_000, 15_000]);
}

/// A pause with no pace known: one request (the probe) goes when it ends;
/// the others wait for its answer and follow the pace it brings.
#[tokio::test(start_paused = true)]
async fn after_a_pause_with_no_pace_known_one_probe_goes_first() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply_once(Reply::status(429).header("retry-after", "2"))
        .reply(
            Reply::status(200)
                .header("ratelimit", r#""a";r=4;t=2"#)
                .delay(ms(50)),
        );
    let layer = PacingLayer::new(PacingConfig::default());
    let client = mock.clone().with(layer.clone());
    let t0 = Instant::now();
    client.send(get("https://api.test/")).await.unwrap();
    let results = send_together(&client, "https://api.test/", 5).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // The probe at 2 000, its answer at 2 050: 4 left in 2 s, one per 500 ms.
    assert_eq!(sent_at(&mock, t0), [0, 2000, 2050, 2550, 3050, 3550]);
}

/// The probe's answer says nothing about a pace: the held requests go when
/// it arrives. A probe with no answer holds them `probe_timeout` at most,
/// and a deadline inside that hold fails the request.
/// A probe that fails (or is cancelled) before its answer: the next
/// request probes in its place at once, rather than every held request
/// waiting out the probe timeout (1 s).
#[tokio::test(start_paused = true)]
async fn a_failed_probe_hands_the_probe_to_the_next_request() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply_once(Reply::status(429).header("retry-after", "1"))
        .reply_once(Reply::connect_error())
        .reply(Reply::status(200));
    let client = mock.clone().with(PacingLayer::new(PacingConfig::default()));
    let t0 = Instant::now();
    client.send(get("https://api.test/")).await.unwrap();
    let results = send_together(&client, "https://api.test/", 4).await;
    assert_eq!(
        results.iter().filter(|r| r.is_err()).count(),
        1,
        "{results:?}"
    );
    assert_eq!(sent_at(&mock, t0), [0, 1000, 1000, 1000, 1000]);
}

#[tokio::test(start_paused = true)]
async fn the_probes_answer_or_its_timeout_releases_the_others() {
    for (probe_delay, released_at) in [(50, 2050), (5_000, 3000)] {
        let mock = MockTransport::new();
        mock.on(Route::any())
            .reply_once(Reply::status(429).header("retry-after", "2"))
            .reply_once(Reply::status(200).delay(ms(probe_delay)))
            .reply(Reply::status(200));
        let client = mock.clone().with(PacingLayer::new(PacingConfig::default()));
        let t0 = Instant::now();
        client.send(get("https://api.test/")).await.unwrap();
        let late = tokio::spawn({
            let c = client.clone();
            async move {
                tokio::time::sleep(ms(1)).await; // after the probe
                let err = c
                    .send(with_deadline(get("https://api.test/"), ms(2_499)))
                    .await;
                (err.map(drop), t0.elapsed())
            }
        });
        let results = send_together(&client, "https://api.test/", 4).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            sent_at(&mock, t0)[..5],
            [0, 2000, released_at, released_at, released_at]
        );
        let (result, at) = late.await.unwrap();
        if probe_delay < 500 {
            assert!(result.is_ok());
            assert_eq!(at, ms(2050));
        } else {
            let err = result.unwrap_err();
            let refused = err.rate_limited().expect("held by pacing");
            assert_eq!(refused.cause(), LimitCause::ServerPause);
            assert_eq!(at, ms(2500));
        }
    }
}

/// What a server's `RateLimit` `t` (and `X-RateLimit-Reset`) means.
#[derive(Clone, Copy, Debug)]
enum ResetMeaning {
    /// Until the whole burst has refilled (drafts before -10).
    UntilFull,
    /// Until one more request's worth of quota is available (draft -10 on).
    NextQuota,
}

/// Requests (allowed, refused) by a [`gcra_server`].
type Counts = Arc<std::sync::Mutex<(u64, u64)>>;

/// A server-side GCRA (`rate` per second, `burst`) in the style of the
/// FaultServer's `/limited`: whole seconds rounded up, at least 1; 429 with
/// `Retry-After` when over. 5 ms per response.
fn gcra_server(
    rate: u64,
    burst: u64,
    meaning: ResetMeaning,
) -> (
    impl Transport<String, Body = String, Error = std::io::Error>,
    Counts,
) {
    const SEC: u64 = 1_000_000_000;
    let ceil_secs = |n: u64| n.div_ceil(SEC).max(1);
    let interval = SEC / rate;
    let tolerance = interval * burst;
    let t0 = Instant::now();
    let tat = Arc::new(std::sync::Mutex::new(0u64));
    let counts = Arc::new(std::sync::Mutex::new((0, 0)));
    let tally = counts.clone();
    let server = transport_fn(move |_req: Request<String>| {
        let (tat, counts) = (tat.clone(), counts.clone());
        async move {
            let now = u64::try_from(t0.elapsed().as_nanos()).unwrap();
            // Decided before the response time; no lock held across it.
            let res = {
                let mut tat = tat.lock().unwrap();
                let start = (*tat).max(now);
                let debt = start + interval - now;
                let mut res = Response::builder();
                if debt > tolerance {
                    let retry = ceil_secs(debt - tolerance);
                    let t = match meaning {
                        ResetMeaning::UntilFull => ceil_secs(start - now),
                        ResetMeaning::NextQuota => retry,
                    };
                    counts.lock().unwrap().1 += 1;
                    res = res
                        .status(429)
                        .header("retry-after", retry)
                        .header("ratelimit", format!("\"default\";r=0;t={t}"));
                } else {
                    *tat = start + interval;
                    let unused = tolerance - debt;
                    let t = match meaning {
                        ResetMeaning::UntilFull => ceil_secs(debt),
                        ResetMeaning::NextQuota => ceil_secs(interval - unused % interval),
                    };
                    counts.lock().unwrap().0 += 1;
                    res = res.status(200).header(
                        "ratelimit",
                        format!("\"default\";r={};t={t}", unused / interval),
                    );
                }
                res
            };
            tokio::time::sleep(ms(5)).await;
            Ok(res.body(String::new()).unwrap())
        }
    });
    (server, tally)
}

/// Pacing alone, against a server whose burst is one or three seconds of
/// its rate, under either meaning of `t`: nearly every request passes on
/// the first try, and the client still gets most of the server's rate.
/// (With a burst of one second both meanings say `t=1` on every success,
/// as the FaultServer test in `limited_server.rs` has it. Whole seconds
/// cost some rate: `r` counts the requests left after this one, so the
/// pace tops out at `(burst - 1) / 1 s`, 95 % of a rate of 20.)
#[tokio::test(start_paused = true)]
async fn pacing_follows_a_gcra_server_under_either_meaning_of_its_reset() {
    const RATE: u64 = 20;
    const RUN_FOR: Duration = Duration::from_secs(30);
    for burst in [RATE, 3 * RATE] {
        for meaning in [ResetMeaning::UntilFull, ResetMeaning::NextQuota] {
            let (server, counts) = gcra_server(RATE, burst, meaning);
            let client = server.with(PacingLayer::new(PacingConfig::default()));
            let t0 = Instant::now();
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let c = client.clone();
                    tokio::spawn(async move {
                        while t0.elapsed() < RUN_FOR {
                            let res = c.send(get("https://api.test/")).await.unwrap();
                            if let Some(wait) = res.headers().get("retry-after") {
                                let secs: u64 = wait.to_str().unwrap().parse().unwrap();
                                tokio::time::sleep(Duration::from_secs(secs)).await;
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.await.unwrap();
            }
            let (allowed, refused) = *counts.lock().unwrap();
            let rate = allowed as f64 / t0.elapsed().as_secs_f64();
            let case = format!(
                "burst {burst}, {meaning:?}: {allowed} allowed, {refused} refused, {rate:.1}/s"
            );
            println!("{case}");
            assert!(refused * 20 <= allowed, "{case}");
            assert!(rate >= 0.9 * RATE as f64, "{case}");
        }
    }
}

/// A server that takes `capacity` requests at once: within it, 20 ms per
/// request; beyond it, an immediate 429.
fn server_with_capacity(
    capacity: usize,
) -> impl Transport<String, Body = String, Error = std::io::Error> {
    let in_flight = Arc::new(AtomicUsize::new(0));
    transport_fn(move |_req: Request<String>| {
        let in_flight = in_flight.clone();
        async move {
            let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            let status = if n > capacity {
                429
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                200
            };
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(Response::builder()
                .status(status)
                .body(String::new())
                .unwrap())
        }
    })
}

async fn hammer<T>(client: T, workers: usize, per_worker: usize)
where
    T: Transport<String>,
{
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    let _ = c.send(get("http://a.test/")).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// An algorithm of the user's own whose limit is past what a semaphore
/// holds: clamped at construction as every later limit is, not a panic.
#[tokio::test(start_paused = true)]
async fn an_algorithms_huge_first_limit_is_clamped() {
    struct Unbounded;
    impl steadfast_limit::LimitAlgorithm for Unbounded {
        fn limit(&self) -> usize {
            usize::MAX
        }
        fn on_sample(&mut self, _: steadfast_limit::Sample) -> usize {
            usize::MAX
        }
    }
    let layer = AdaptiveLayer::new(Unbounded);
    assert_eq!(
        layer.snapshot().bulkhead.limit,
        steadfast_limit::config::MAX_IN_FLIGHT_LIMIT
    );
    let client = server_with_capacity(4).with(layer.clone());
    client.send(get("https://api.test/")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn aimd_finds_the_servers_capacity() {
    let layer = AdaptiveLayer::new(Aimd::new(AimdConfig::default().limits(2, 1, 100)).unwrap());
    let client = server_with_capacity(16).with(layer.clone());
    hammer(client, 40, 100).await;
    let s = layer.snapshot();
    assert!((13..=17).contains(&s.limit), "limit {}", s.limit);
    // Probing past the capacity costs about one 429 per window, not many.
    assert!(
        s.overloads * 10 < s.samples,
        "{} overloads of {}",
        s.overloads,
        s.samples
    );
    assert_eq!(s.bulkhead.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_gradient_shrinks_when_latency_climbs() {
    // Latency grows with concurrency past 4: 10 ms each, queued behind each other.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let server = transport_fn(move |_req: Request<String>| {
        let in_flight = in_flight.clone();
        async move {
            let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(10) * n.max(4) as u32 / 4).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Response::new(String::new()))
        }
    });
    let layer =
        AdaptiveLayer::new(Gradient::new(GradientConfig::default().limits(64, 1, 200)).unwrap());
    let client = server.with(layer.clone());
    // A light load first: the long-term RTT learns the unloaded 10 ms, and a
    // client using little of its limit does not move it.
    hammer(client.clone(), 2, 300).await;
    assert_eq!(layer.snapshot().limit, 64);
    // Then a crowd: latency climbs, the limit comes down towards what the
    // server takes without queueing.
    hammer(client, 100, 30).await;
    let s = layer.snapshot();
    assert!(s.limit < 32, "limit {}", s.limit);
    assert_eq!(s.overloads, 0);
}
