//! The breaker as a transport layer, over MockTransport, on paused time.
#![cfg(not(loom))] // the test tools need tokio's `net`, which loom builds leave out

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use steadfast_breaker::{
    Breaker, BreakerConfig, BreakerConfigBuilder, BreakerError, BreakerLayer, BreakerOpen,
    HalfOpen, Reason, SlidingWindow, State,
};
use steadfast_core::{DefaultClassifier, ErrorClass, Outcome, Transport, TransportExt};
use steadfast_testkit::mock::{MockBody, MockError};
use steadfast_testkit::{MockTransport, Reply, Route};
use tokio::time::{Instant, advance, sleep};

type Client = Breaker<MockTransport>;
type Log = Arc<Mutex<Vec<(State, State, Reason, Option<Duration>)>>>;

fn get(uri: &str) -> Request<String> {
    Request::get(uri).body(String::new()).unwrap()
}

/// A mock with `/ok` (200), `/fail` (503), `/missing` (404), `/slow` (200
/// after 300 ms), `/hang` (200 after an hour).
fn mock() -> MockTransport {
    let mock = MockTransport::new();
    mock.on(Route::get("/ok")).reply(Reply::status(200));
    mock.on(Route::get("/fail")).reply(Reply::status(503));
    mock.on(Route::get("/missing")).reply(Reply::status(404));
    mock.on(Route::get("/slow"))
        .reply(Reply::status(200).delay(Duration::from_millis(300)));
    mock.on(Route::get("/hang"))
        .reply(Reply::status(200).delay(Duration::from_secs(3_600)));
    mock
}

/// A breaker config that only trips the way each test asks, logging transitions.
fn config(log: &Log) -> BreakerConfigBuilder {
    let log = log.clone();
    BreakerConfig::builder()
        .name("api")
        .consecutive_failures(None)
        .break_duration(Duration::from_secs(1))
        .max_break_duration(Duration::from_secs(30))
        .on_transition(move |e| {
            let t = e.transition;
            assert_eq!(e.name, "api");
            log.lock()
                .unwrap()
                .push((t.from, t.to, t.reason, t.break_duration));
        })
}

fn client(mock: &MockTransport, config: BreakerConfigBuilder) -> Client {
    mock.clone()
        .with(BreakerLayer::new(config.build().unwrap()))
}

async fn status(client: &Client, path: &str) -> Result<u16, BreakerError<MockError>> {
    client
        .send(get(&format!("http://api.test{path}")))
        .await
        .map(|r| r.status().as_u16())
}

fn state(client: &Client) -> State {
    client.breaker().unwrap().state()
}

fn open_err(r: Result<u16, BreakerError<MockError>>) -> BreakerOpen {
    match r {
        Err(BreakerError::Open(open)) => open,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Trips `client` with consecutive 503s (its config must trip on 1 failure).
async fn trip(client: &Client) {
    assert_eq!(status(client, "/fail").await.unwrap(), 503);
    assert_eq!(state(client), State::Open);
}

/// Trips on the first failure, for a 1 s break, no transition log.
fn trips_at_once() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .consecutive_failures(1)
        .break_duration(Duration::from_secs(1))
}

/// A client tripped by [`trip`] whose 1 s break is over: the next call is a
/// half-open probe.
async fn half_open_due(mock: &MockTransport, config: BreakerConfigBuilder) -> Client {
    let client = client(mock, config);
    trip(&client).await;
    sleep(Duration::from_secs(1)).await;
    client
}

#[tokio::test(start_paused = true)]
async fn trips_on_failure_rate_and_fails_fast() {
    let log = Log::default();
    let mock = mock();
    let client = client(
        &mock,
        config(&log)
            .window(SlidingWindow::count(10))
            .minimum_calls(10)
            .failure_rate(0.5),
    );

    for _ in 0..5 {
        assert_eq!(status(&client, "/ok").await.unwrap(), 200);
    }
    for _ in 0..4 {
        assert_eq!(status(&client, "/fail").await.unwrap(), 503);
    }
    // 9 calls: under the minimum, whatever the rate.
    assert_eq!(state(&client), State::Closed);
    assert_eq!(status(&client, "/fail").await.unwrap(), 503);
    assert_eq!(state(&client), State::Open);
    assert_eq!(
        log.lock().unwrap()[0],
        (
            State::Closed,
            State::Open,
            Reason::FailureRate { rate: 0.5 },
            Some(Duration::from_secs(1))
        )
    );

    // Open: nothing reaches the transport.
    let sent = mock.call_count();
    for _ in 0..100 {
        let open = open_err(status(&client, "/ok").await);
        assert_eq!(open.retry_after, Duration::from_secs(1));
        assert_eq!(open.state, State::Open);
    }
    assert_eq!(mock.call_count(), sent);
    let snap = client.breaker().unwrap().snapshot();
    assert_eq!(snap.rejections, 100);
    assert_eq!(snap.opened, 1);
    assert_eq!(snap.window.calls, 10);
    assert_eq!(snap.window.failures, 5);
}

#[tokio::test(start_paused = true)]
async fn trips_on_consecutive_failures_whatever_the_window() {
    let log = Log::default();
    let mock = mock();
    let client = client(
        &mock,
        config(&log).consecutive_failures(3).failure_rate(1.0),
    );

    for path in ["/fail", "/fail", "/ok", "/fail", "/fail"] {
        status(&client, path).await.unwrap();
    }
    // The success broke the run.
    assert_eq!(state(&client), State::Closed);
    assert_eq!(client.breaker().unwrap().snapshot().consecutive_failures, 2);
    status(&client, "/fail").await.unwrap();
    assert_eq!(state(&client), State::Open);
    assert_eq!(
        log.lock().unwrap()[0].2,
        Reason::ConsecutiveFailures { failures: 3 }
    );
}

#[tokio::test(start_paused = true)]
async fn trips_on_slow_calls() {
    let log = Log::default();
    let mock = mock();
    let client = client(
        &mock,
        config(&log)
            .window(SlidingWindow::count(4))
            .minimum_calls(4)
            .slow_calls(Duration::from_millis(250), 0.5),
    );

    let t0 = Instant::now();
    for path in ["/ok", "/slow", "/ok"] {
        assert_eq!(status(&client, path).await.unwrap(), 200);
    }
    assert_eq!(state(&client), State::Closed);
    assert_eq!(client.breaker().unwrap().snapshot().window.slow, 1);
    // Successful, but slow: the second slow call of four trips it.
    assert_eq!(status(&client, "/slow").await.unwrap(), 200);
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(600),
        "latency came from the paused clock"
    );
    assert_eq!(state(&client), State::Open);
    assert_eq!(log.lock().unwrap()[0].2, Reason::SlowCallRate { rate: 0.5 });
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_failures_but_429_is() {
    let mock = mock();
    mock.on(Route::get("/busy")).reply(Reply::status(429));
    let client = client(&mock, BreakerConfig::builder().consecutive_failures(3));

    for _ in 0..50 {
        assert_eq!(status(&client, "/missing").await.unwrap(), 404);
    }
    assert_eq!(state(&client), State::Closed);
    assert_eq!(client.breaker().unwrap().snapshot().window.failures, 0);
    for _ in 0..3 {
        assert_eq!(status(&client, "/busy").await.unwrap(), 429);
    }
    assert_eq!(state(&client), State::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_success_closes() {
    let log = Log::default();
    let mock = mock();
    let client = client(&mock, config(&log).consecutive_failures(1));
    trip(&client).await;

    advance(Duration::from_millis(999)).await;
    assert_eq!(
        open_err(status(&client, "/ok").await).retry_after,
        Duration::from_millis(1)
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(status(&client, "/ok").await.unwrap(), 200);
    assert_eq!(state(&client), State::Closed);

    let log = log.lock().unwrap();
    let path: Vec<_> = log.iter().map(|t| (t.0, t.1, t.2)).collect();
    assert_eq!(
        path,
        [
            (
                State::Closed,
                State::Open,
                Reason::ConsecutiveFailures { failures: 1 }
            ),
            (State::Open, State::HalfOpen, Reason::BreakElapsed),
            (State::HalfOpen, State::Closed, Reason::Recovered),
        ]
    );
    assert_eq!(client.breaker().unwrap().snapshot().transitions, 3);
}

#[tokio::test(start_paused = true)]
async fn half_open_failure_reopens_for_longer() {
    let log = Log::default();
    let mock = mock();
    let client = client(
        &mock,
        config(&log).consecutive_failures(1).break_growth(2.0),
    );
    trip(&client).await;

    // Break 1 s, probe fails: open again for 2 s, then 4 s.
    for (pause, grown) in [(1, 2), (2, 4)] {
        sleep(Duration::from_secs(pause)).await;
        assert_eq!(
            status(&client, "/fail").await.unwrap(),
            503,
            "the probe goes out"
        );
        assert_eq!(state(&client), State::Open);
        let open = open_err(status(&client, "/ok").await);
        assert_eq!(open.retry_after, Duration::from_secs(grown));
        assert_eq!(
            open.to_string(),
            format!("circuit breaker is open; retry in {grown}.0 s")
        );
    }
    let grown: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.1 == State::Open)
        .map(|t| (t.2, t.3.unwrap().as_secs()))
        .collect();
    assert_eq!(
        grown,
        [
            (Reason::ConsecutiveFailures { failures: 1 }, 1),
            (Reason::ProbeFailed, 2),
            (Reason::ProbeFailed, 4),
        ]
    );
    // Recovery resets the growth.
    sleep(Duration::from_secs(4)).await;
    assert_eq!(status(&client, "/ok").await.unwrap(), 200);
    trip(&client).await;
    assert_eq!(
        open_err(status(&client, "/ok").await).retry_after,
        Duration::from_secs(1)
    );
}

#[tokio::test(start_paused = true)]
async fn only_the_probes_go_out_while_half_open() {
    let mock = mock();
    let client = half_open_due(&mock, trips_at_once().half_open(HalfOpen::probes(2))).await;

    // Two slow probes out; the third caller is refused at once, not queued.
    let p1 = tokio::spawn({
        let c = client.clone();
        async move { status(&c, "/slow").await }
    });
    let p2 = tokio::spawn({
        let c = client.clone();
        async move { status(&c, "/slow").await }
    });
    sleep(Duration::from_millis(10)).await;
    let refused = open_err(status(&client, "/ok").await);
    assert_eq!(refused.state, State::HalfOpen);
    assert_eq!(refused.retry_after, Duration::from_millis(100));
    assert_eq!(p1.await.unwrap().unwrap(), 200);
    assert_eq!(p2.await.unwrap().unwrap(), 200);
    assert_eq!(state(&client), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_probe_frees_its_slot() {
    let mock = mock();
    let client = half_open_due(&mock, trips_at_once()).await;

    // The probe hangs; the caller gives up after 5 s (the future is dropped).
    let gave_up = tokio::time::timeout(Duration::from_secs(5), status(&client, "/hang")).await;
    assert!(gave_up.is_err());
    // Cancellation is neither success nor failure...
    assert_eq!(state(&client), State::HalfOpen);
    assert_eq!(client.breaker().unwrap().snapshot().opened, 1);
    // ...and the slot is free: the next caller is the new probe.
    assert_eq!(status(&client, "/ok").await.unwrap(), 200);
    assert_eq!(state(&client), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_does_not_leak_when_the_task_is_aborted() {
    let mock = mock();
    let client = half_open_due(&mock, trips_at_once()).await;
    let task = tokio::spawn({
        let c = client.clone();
        async move { status(&c, "/hang").await }
    });
    sleep(Duration::from_millis(10)).await;
    assert_eq!(
        open_err(status(&client, "/ok").await).state,
        State::HalfOpen
    );
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(status(&client, "/ok").await.unwrap(), 200);
    assert_eq!(state(&client), State::Closed);
}

/// Admission happens when `send` is called: a probe's future holds its
/// slot from then on, polled or not, and gives it back when dropped unpolled
/// (nothing reached the transport, nothing is recorded).
#[tokio::test(start_paused = true)]
async fn a_probe_dropped_before_its_first_poll_frees_its_slot() {
    let mock = mock();
    let client = half_open_due(&mock, trips_at_once()).await;
    let calls_before = mock.calls().len();

    let probe = client.send(get("http://api.test/ok"));
    // The slot is taken at `send`: a second caller is refused, though the
    // probe has not been polled.
    let refused = open_err(status(&client, "/ok").await);
    assert_eq!(refused.state, State::HalfOpen);
    drop(probe);

    // Nothing went out and nothing was recorded...
    assert_eq!(mock.calls().len(), calls_before);
    assert_eq!(state(&client), State::HalfOpen);
    // ...and the slot is free: the next caller is the probe, which closes it.
    assert_eq!(status(&client, "/ok").await.unwrap(), 200);
    assert_eq!(state(&client), State::Closed);
    assert_eq!(mock.calls().len(), calls_before + 1);
}

/// A rejection is decided at `send` too; its future, dropped unpolled,
/// sends nothing, and one polled later still carries that rejection.
#[tokio::test(start_paused = true)]
async fn a_rejection_is_decided_when_send_is_called() {
    let mock = mock();
    let client = client(&mock, trips_at_once());
    trip(&client).await;
    let calls_before = mock.calls().len();

    let unpolled = client.send(get("http://api.test/ok"));
    let refused_at_send = client.send(get("http://api.test/ok"));
    assert_eq!(client.breaker().unwrap().snapshot().rejections, 2);
    drop(unpolled);

    // Past the break, the future refused earlier still reports its refusal
    // (with the wait it was given), and the breaker is untouched by it.
    sleep(Duration::from_secs(2)).await;
    let open = open_err(refused_at_send.await.map(|r| r.status().as_u16()));
    assert_eq!(open.retry_after, Duration::from_secs(1));
    assert_eq!(state(&client), State::Open);
    assert_eq!(mock.calls().len(), calls_before);
    // The next call is the probe.
    assert_eq!(status(&client, "/ok").await.unwrap(), 200);
    assert_eq!(state(&client), State::Closed);
}

/// Per-key futures hold a share of their breaker; dropped unpolled, they
/// give it back, so the key can be evicted.
#[tokio::test(start_paused = true)]
async fn a_per_key_call_dropped_unpolled_lets_its_breaker_go() {
    let mock = mock();
    let registry = Arc::new(
        Arc::into_inner(registry(BreakerConfig::builder()))
            .unwrap()
            .idle_timeout(Duration::from_secs(10)),
    );
    let client = mock
        .clone()
        .with(BreakerLayer::from_registry(registry.clone()));

    let pending = client.send(get("http://api.test/ok"));
    assert_eq!(registry.len(), 1);
    sleep(Duration::from_secs(11)).await;
    registry.evict_idle(Instant::now());
    sleep(Duration::from_secs(11)).await;
    // In flight (created, not polled): kept.
    assert_eq!(registry.evict_idle(Instant::now()), 0);
    drop(pending);
    assert_eq!(registry.evict_idle(Instant::now()), 1);
    assert!(registry.is_empty());
    assert!(mock.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn progressive_half_open_ramps_up_traffic() {
    let log = Log::default();
    let mock = mock();
    let client = client(
        &mock,
        config(&log)
            .consecutive_failures(1)
            .half_open(HalfOpen::progressive_stages(
                Duration::from_secs(1),
                &[0.1, 0.5],
            )),
    );
    trip(&client).await;
    sleep(Duration::from_secs(1)).await;

    // Stage 1 (10 %): the first call, then one in ten.
    let mut passed = 0;
    for _ in 0..20 {
        match status(&client, "/ok").await {
            Ok(_) => passed += 1,
            Err(e) => assert_eq!(e.as_open().unwrap().state, State::HalfOpen),
        }
    }
    assert_eq!(passed, 2);
    // Stage 2 (50 %) after a second of good results.
    sleep(Duration::from_secs(1)).await;
    let mut passed = 0;
    for _ in 0..20 {
        passed += u32::from(status(&client, "/ok").await.is_ok());
    }
    assert_eq!(passed, 10);
    assert_eq!(state(&client), State::HalfOpen);
    // After the last stage: closed.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(status(&client, "/ok").await.unwrap(), 200);
    assert_eq!(state(&client), State::Closed);
    assert_eq!(log.lock().unwrap().last().unwrap().2, Reason::Recovered);
}

#[tokio::test(start_paused = true)]
async fn progressive_stage_failure_reopens() {
    let log = Log::default();
    let mock = mock();
    let client = half_open_due(
        &mock,
        config(&log)
            .consecutive_failures(1)
            .half_open(HalfOpen::progressive(Duration::from_secs(1))),
    )
    .await;
    assert_eq!(status(&client, "/fail").await.unwrap(), 503);
    assert_eq!(state(&client), State::Open);
    assert_eq!(
        log.lock().unwrap().last().unwrap().2,
        Reason::StageFailed { stage: 0 }
    );
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let mock = mock();
    let client = client(
        &mock,
        BreakerConfig::builder()
            .consecutive_failures(None)
            .window(SlidingWindow::time(Duration::from_secs(10)))
            .minimum_calls(4)
            .failure_rate(0.5),
    );
    for _ in 0..3 {
        status(&client, "/fail").await.unwrap();
    }
    // Ten seconds later those failures have left the window.
    sleep(Duration::from_secs(10)).await;
    status(&client, "/ok").await.unwrap();
    status(&client, "/fail").await.unwrap();
    assert_eq!(state(&client), State::Closed);
    let snap = client.breaker().unwrap().snapshot();
    assert_eq!((snap.window.calls, snap.window.failures), (2, 1));
    status(&client, "/fail").await.unwrap();
    status(&client, "/ok").await.unwrap();
    assert_eq!(
        state(&client),
        State::Closed,
        "2 of 4 failed, but the last call succeeded"
    );
    status(&client, "/fail").await.unwrap();
    assert_eq!(state(&client), State::Open, "3 of 5 failed");
}

#[tokio::test(start_paused = true)]
async fn isolate_and_reset_by_hand() {
    let mock = mock();
    let client = client(&mock, BreakerConfig::builder());
    let breaker = client.breaker().unwrap().clone();
    breaker.isolate();
    let open = open_err(status(&client, "/ok").await);
    assert_eq!(open.state, State::Isolated);
    // However long we wait.
    sleep(Duration::from_secs(3_600)).await;
    assert_eq!(
        open_err(status(&client, "/ok").await).state,
        State::Isolated
    );
    assert_eq!(mock.call_count(), 0);
    breaker.reset();
    assert_eq!(status(&client, "/ok").await.unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn per_origin_breakers_are_independent() {
    let mock = MockTransport::new();
    mock.on(Route::get("/").host("bad.test"))
        .reply(Reply::status(503));
    mock.on(Route::get("/").host("good.test"))
        .reply(Reply::status(200));
    let layer = BreakerLayer::per_origin(
        BreakerConfig::builder()
            .consecutive_failures(2)
            .build()
            .unwrap(),
    );
    let registry = layer.registry().unwrap().clone();
    let client = mock.clone().with(layer);

    for _ in 0..2 {
        assert_eq!(
            client.send(get("http://bad.test/")).await.unwrap().status(),
            503
        );
    }
    let err = client.send(get("http://bad.test/")).await.unwrap_err();
    let open = err.as_open().unwrap();
    assert_eq!(&*open.key, "http://bad.test:80");
    assert_eq!(
        steadfast_core::Report::new(&err).to_string(),
        "the circuit breaker refused the request: \
         circuit breaker for http://bad.test:80 is open; retry in 5.0 s"
    );
    assert_eq!(
        client
            .send(get("http://good.test/"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .send(get("http://GOOD.test:80/"))
            .await
            .unwrap()
            .status(),
        200
    );

    let all = registry.breakers();
    let states: Vec<_> = all.iter().map(|(k, s)| (&**k, s.state)).collect();
    assert_eq!(
        states,
        [
            ("http://bad.test:80", State::Open),
            ("http://good.test:80", State::Closed)
        ]
    );
    assert_eq!(registry.snapshot().keys, 2);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted_and_open_breakers_once_their_break_ends() {
    let mock = MockTransport::new();
    mock.on(Route::any().host("bad.test"))
        .reply_times(1, Reply::status(503))
        .reply(Reply::status(200));
    mock.on(Route::any()).reply(Reply::status(200));
    let registry = Arc::new(
        steadfast_breaker::BreakerRegistry::new(
            BreakerConfig::builder()
                .consecutive_failures(1)
                .break_duration(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .idle_timeout(Duration::from_secs(10)),
    );
    let client = mock
        .clone()
        .with(BreakerLayer::from_registry(registry.clone()));
    client.send(get("http://bad.test/")).await.unwrap();
    client.send(get("http://a.test/")).await.unwrap();
    assert_eq!(registry.len(), 2);

    // Two sweeps 10 s apart without use: the closed one goes, the open one
    // (59 s of break left) stays.
    sleep(Duration::from_secs(11)).await;
    registry.evict_idle(Instant::now());
    sleep(Duration::from_secs(11)).await;
    assert_eq!(registry.evict_idle(Instant::now()), 1);
    assert!(registry.get("http://a.test:80").is_none());
    assert_eq!(
        registry.get("http://bad.test:80").unwrap().state(),
        State::Open
    );
    // Past its break, still idle, it goes too: its key tripped and was
    // never asked for again, so it would otherwise hold its slot for ever.
    sleep(Duration::from_secs(60)).await;
    assert_eq!(registry.evict_idle(Instant::now()), 1);
    assert!(registry.is_empty());
    // The key's next call starts a fresh, closed breaker.
    client.send(get("http://bad.test/")).await.unwrap();
    assert_eq!(
        registry.get("http://bad.test:80").unwrap().state(),
        State::Closed
    );
    assert_eq!(registry.snapshot().evictions, 2);
}

/// A half-open breaker whose probe was cancelled, and that no call comes
/// to again, is forgotten by the idle sweep like an open one: only a call
/// would move it on, so kept it would hold its slot for ever. While a probe
/// is out, it stays.
#[tokio::test(start_paused = true)]
async fn an_idle_half_open_breaker_with_no_probe_out_is_evicted() {
    let mock = MockTransport::new();
    mock.on(Route::any().host("bad.test"))
        .reply_times(1, Reply::status(503))
        .reply(Reply::status(200).delay(Duration::from_secs(3600)));
    let registry = Arc::new(
        steadfast_breaker::BreakerRegistry::new(
            BreakerConfig::builder()
                .consecutive_failures(1)
                .break_duration(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
        .idle_timeout(Duration::from_secs(10)),
    );
    let client = mock
        .clone()
        .with(BreakerLayer::from_registry(registry.clone()));
    client.send(get("http://bad.test/")).await.unwrap(); // trips
    sleep(Duration::from_secs(6)).await;
    // The probe goes, and hangs.
    let probe = tokio::spawn({
        let client = client.clone();
        async move { client.send(get("http://bad.test/")).await.map(drop) }
    });
    sleep(Duration::from_secs(1)).await;
    let breaker = || registry.get("http://bad.test:80").unwrap().state();
    let probes = || {
        registry
            .get("http://bad.test:80")
            .unwrap()
            .snapshot()
            .probes_in_flight
    };
    assert_eq!(breaker(), State::HalfOpen);
    assert_eq!(probes(), 1);
    // Idle for two sweeps, but its probe is out: kept.
    sleep(Duration::from_secs(11)).await;
    registry.evict_idle(Instant::now());
    sleep(Duration::from_secs(11)).await;
    assert_eq!(registry.evict_idle(Instant::now()), 0);
    // Its probe cancelled, it stays half-open, with nothing to judge.
    probe.abort();
    let _ = probe.await;
    assert_eq!(breaker(), State::HalfOpen);
    assert_eq!(probes(), 0);
    sleep(Duration::from_secs(11)).await;
    assert_eq!(registry.evict_idle(Instant::now()), 1);
    assert!(registry.is_empty());
}

fn registry(config: BreakerConfigBuilder) -> Arc<steadfast_breaker::BreakerRegistry> {
    Arc::new(steadfast_breaker::BreakerRegistry::new(
        config.build().unwrap(),
    ))
}

/// A full registry never evicts a breaker with calls in flight: their
/// results would land on a breaker no request uses any more.
#[tokio::test(start_paused = true)]
async fn a_breaker_with_calls_in_flight_is_never_evicted() {
    let mock = MockTransport::new();
    mock.on(Route::any().host("bad.test"))
        .reply(Reply::status(503).delay(Duration::from_secs(1)));
    mock.on(Route::any()).reply(Reply::status(200));
    let registry = Arc::new(
        Arc::into_inner(registry(BreakerConfig::builder().consecutive_failures(3)))
            .unwrap()
            .max_keys(std::num::NonZeroUsize::MIN),
    );
    let client = mock
        .clone()
        .with(BreakerLayer::from_registry(registry.clone()));
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.send(get("http://bad.test/")).await })
        })
        .collect();
    tokio::task::yield_now().await;
    let bad = registry.get("http://bad.test:80").unwrap();
    // The registry is full of a closed breaker, but one in use: the new key
    // passes untracked.
    client.send(get("http://good.test/")).await.unwrap();
    assert_eq!(registry.snapshot().untracked, 1);
    for call in in_flight {
        assert_eq!(call.await.unwrap().unwrap().status(), 503);
    }
    assert!(Arc::ptr_eq(
        &registry.get("http://bad.test:80").unwrap(),
        &bad
    ));
    assert_eq!(bad.state(), State::Open);
    let err = client.send(get("http://bad.test/")).await.unwrap_err();
    assert!(err.is_open(), "{err}");
}

/// The idle sweep keeps a breaker whose call outlasts the idle timeout.
#[tokio::test(start_paused = true)]
async fn a_call_longer_than_the_idle_timeout_keeps_its_breaker() {
    let mock = MockTransport::new();
    mock.on(Route::any())
        .reply(Reply::status(503).delay(Duration::from_secs(60)));
    let registry = Arc::new(
        Arc::into_inner(registry(BreakerConfig::builder().consecutive_failures(1)))
            .unwrap()
            .idle_timeout(Duration::from_secs(10)),
    );
    let client = mock
        .clone()
        .with(BreakerLayer::from_registry(registry.clone()));
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.send(get("http://slow.test/")).await }
    });
    tokio::task::yield_now().await;
    let breaker = registry.get("http://slow.test:80").unwrap();
    for _ in 0..3 {
        sleep(Duration::from_secs(11)).await;
        assert_eq!(registry.evict_idle(Instant::now()), 0);
    }
    assert_eq!(call.await.unwrap().unwrap().status(), 503);
    assert!(Arc::ptr_eq(
        &registry.get("http://slow.test:80").unwrap(),
        &breaker
    ));
    assert_eq!(breaker.state(), State::Open);
}

/// A full registry keeps breakers that have tripped and not closed yet: past
/// their break, or half-open between probes. Forgotten, the host's next
/// calls would all go out, not one probe, and a grown break start over.
#[tokio::test(start_paused = true)]
async fn tripped_breakers_are_kept_until_they_close() {
    let mock = MockTransport::new();
    mock.on(Route::any().host("bad.test"))
        .reply_times(1, Reply::status(503))
        .reply(Reply::status(200));
    mock.on(Route::any()).reply(Reply::status(200));
    let registry = Arc::new(
        Arc::into_inner(registry(
            BreakerConfig::builder()
                .consecutive_failures(1)
                .break_duration(Duration::from_secs(5))
                .half_open(HalfOpen::progressive(Duration::from_secs(10))),
        ))
        .unwrap()
        .max_keys(std::num::NonZeroUsize::MIN),
    );
    let client = mock
        .clone()
        .with(BreakerLayer::from_registry(registry.clone()));
    client.send(get("http://bad.test/")).await.unwrap();
    let bad = registry.get("http://bad.test:80").unwrap();
    assert_eq!(bad.state(), State::Open);
    drop(bad);

    // Past the break, still open: kept.
    advance(Duration::from_secs(6)).await;
    client.send(get("http://other.test/")).await.unwrap();
    assert_eq!(registry.snapshot().untracked, 1);
    let bad = registry.get("http://bad.test:80").unwrap();
    assert_eq!(bad.state(), State::Open);
    drop(bad);

    // Half-open, its probe back, the stage not over: kept.
    client.send(get("http://bad.test/")).await.unwrap();
    let bad = registry.get("http://bad.test:80").unwrap();
    assert_eq!(bad.state(), State::HalfOpen);
    drop(bad);
    client.send(get("http://other.test/")).await.unwrap();
    assert_eq!(registry.snapshot().untracked, 2);
    assert_eq!(registry.snapshot().evictions, 0);
    let bad = registry.get("http://bad.test:80").unwrap();
    assert_eq!(bad.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn custom_classifier_decides_what_fails() {
    let mock = mock();
    // A 404 on this API means the backend lost its data: count it.
    let layer = BreakerLayer::new(
        BreakerConfig::builder()
            .consecutive_failures(2)
            .build()
            .unwrap(),
    )
    .classify(|r: &Result<Response<MockBody>, MockError>| match r {
        Ok(res) if res.status() == 404 => Outcome::Failure,
        other => steadfast_core::Classify::classify(&DefaultClassifier, other),
    });
    let client = mock.clone().with(layer);
    for _ in 0..2 {
        client.send(get("http://api.test/missing")).await.unwrap();
    }
    assert_eq!(client.breaker().unwrap().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_count_and_keep_their_class() {
    let mock = MockTransport::new();
    mock.on(Route::any()).reply(Reply::connect_error());
    let client = mock.clone().with(BreakerLayer::new(
        BreakerConfig::builder()
            .consecutive_failures(2)
            .build()
            .unwrap(),
    ));
    for _ in 0..2 {
        let err = client.send(get("http://down.test/")).await.unwrap_err();
        assert!(!err.is_open());
        assert_eq!(ErrorClass::of(&err), ErrorClass::Connect);
    }
    let err = client.send(get("http://down.test/")).await.unwrap_err();
    // A retry layer above sees when to come back.
    assert_eq!(
        BreakerOpen::find(&err).unwrap().outcome(),
        Outcome::Retryable {
            after: Some(Duration::from_secs(5))
        }
    );
}

#[cfg(feature = "tower")]
#[tokio::test(start_paused = true)]
async fn works_as_a_tower_layer() {
    use steadfast_core::tower::{IntoService, TowerLayer};
    use tower_layer::Layer as _;
    use tower_service::Service as _;

    let layer = TowerLayer::new(BreakerLayer::new(
        BreakerConfig::builder()
            .consecutive_failures(1)
            .build()
            .unwrap(),
    ));
    let mut svc = layer.layer(IntoService::new(mock()));
    let res = svc.call(get("http://api.test/fail")).await.unwrap();
    assert_eq!(res.status(), 503);
    let err = svc.call(get("http://api.test/ok")).await.unwrap_err();
    assert!(err.is_open());
}
