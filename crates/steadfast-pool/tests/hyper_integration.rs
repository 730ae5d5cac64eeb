//! PoolStats fed by the real HyperTransport against the loopback
//! FaultServer: 10,000 requests at concurrency 200, 30 % of them cancelled
//! at random points, and the pool comes back clean: nothing in use, the cap
//! held, idle connections reused, a following burst served without a pool
//! timeout, and the counters agree with the server's own. Abandoned
//! responses are drained (`drain_on_cancel`), so their HTTP/1 connections
//! are reused too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use steadfast_core::Transport;
use steadfast_hyper::{DrainConfig, HyperTransport};
use steadfast_pool::{LeakDetector, PoolStats};
use steadfast_testkit::FaultServer;
use tokio::time::Instant;

const REQUESTS: u64 = 10_000;
const CONCURRENCY: u64 = 200;
const CAP: usize = 32;

fn get(url: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url).body(Empty::new()).unwrap()
}

/// A tiny deterministic generator for the cancellation points.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// What one request does; 10 % each of the three cancellations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Dropped before it is sent: never polled, or timed out within the
    /// first moments (usually while waiting for a connection).
    CancelBeforeSend,
    /// Sent to a route that delays its head by 100 ms, dropped within 95
    /// ms: while waiting for the head if a connection took it by then,
    /// otherwise while waiting for a connection (the burst queues for the
    /// pool: 200 workers share 32 connections).
    CancelWaitingForHeaders,
    /// A dripping body, dropped after a few frames.
    CancelMidBody,
    /// Read to the end.
    Complete,
}

#[derive(Default)]
struct Tally {
    cancelled: [AtomicU64; 3],
    completed: AtomicU64,
}

async fn one_request(
    t: &HyperTransport,
    server: &FaultServer,
    plan: Plan,
    rng: &mut Lcg,
    tally: &Tally,
) {
    match plan {
        Plan::CancelBeforeSend => {
            let work = t.send(get(&server.url("/bytes/512")));
            if rng.below(2) == 0 {
                drop(work);
            } else {
                let at = Duration::from_micros(rng.below(200));
                let _ = tokio::time::timeout(at, work).await;
            }
            tally.cancelled[0].fetch_add(1, Ordering::Relaxed);
        }
        Plan::CancelWaitingForHeaders => {
            let work = t.send(get(&server.url("/slow?ms=100")));
            let at = Duration::from_millis(1 + rng.below(95));
            let finished = tokio::time::timeout(at, work).await.is_ok();
            assert!(!finished, "the head comes after 100 ms, the cancel before");
            tally.cancelled[1].fetch_add(1, Ordering::Relaxed);
        }
        Plan::CancelMidBody => {
            let url = server.url("/drip?chunks=8&interval_ms=1&chunk_size=256");
            let res = t.send(get(&url)).await.expect("drip head");
            let mut body = res.into_body();
            for _ in 0..=rng.below(3) {
                body.frame().await.expect("a frame").expect("a good frame");
            }
            drop(body);
            tally.cancelled[2].fetch_add(1, Ordering::Relaxed);
        }
        Plan::Complete => {
            let res = t
                .send(get(&server.url("/bytes/512")))
                .await
                .expect("response");
            let body = res.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body.len(), 512);
            tally.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs `total` requests on `CONCURRENCY` workers.
async fn burst(
    t: &HyperTransport,
    server: &Arc<FaultServer>,
    total: u64,
    plan: fn(&mut Lcg) -> Plan,
    tally: &Arc<Tally>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (t, server, next, tally) = (t.clone(), server.clone(), next.clone(), tally.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let mut rng = Lcg(0x5eed_0000 ^ i);
                    let plan = plan(&mut rng);
                    one_request(&t, &server, plan, &mut rng, &tally).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}

/// Polls until `done` holds or ten seconds pass (real time: the server is real).
async fn settle(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_with_30_percent_cancelled_leave_a_clean_pool() {
    let server = Arc::new(FaultServer::start().await);
    let stats = PoolStats::new();
    let detector = LeakDetector::builder(stats.clone())
        .threshold(Duration::from_secs(5))
        .quiescence(Duration::from_millis(200))
        .build()
        .unwrap();
    let t = HyperTransport::builder()
        .max_connections_per_host(CAP)
        .pool_observer(stats.clone())
        // The default, spelled out: up to 64 KiB within 1 s of an
        // abandoned response is read so its connection can be reused.
        .drain_on_cancel(Some(DrainConfig::default()))
        .build()
        .unwrap();
    let tally = Arc::new(Tally::default());
    burst(
        &t,
        &server,
        REQUESTS,
        |rng| match rng.below(10) {
            0 => Plan::CancelBeforeSend,
            1 => Plan::CancelWaitingForHeaders,
            2 => Plan::CancelMidBody,
            _ => Plan::Complete,
        },
        &tally,
    )
    .await;
    let cancelled: u64 = tally
        .cancelled
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    assert!(
        (2_700..=3_300).contains(&cancelled),
        "about 30 % cancelled, got {cancelled}"
    );

    check_clean_pool(&t, &stats, &server, &tally).await;

    // The leak detector agrees: nothing held, nothing stuck.
    tokio::time::sleep(Duration::from_millis(250)).await;
    detector.check(Instant::now());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let report = detector.check(Instant::now());
    assert!(report.is_empty(), "{report}");

    follow_up_burst(&t, &server, &stats).await;
}

/// After the cancelled burst: nothing in use, the cap held, idle connections
/// reused, and the counters agree with the server's.
async fn check_clean_pool(
    t: &HyperTransport,
    stats: &PoolStats,
    server: &FaultServer,
    tally: &Tally,
) {
    let key = server.base_url();
    // Drains of abandoned responses end in the background, and connections
    // that could not be saved close asynchronously; wait for both, and for
    // the client and the server to agree.
    settle(|| {
        let h = stats.host_snapshot(key).unwrap();
        t.snapshot().drains_running() == 0
            && h.in_use == 0
            && h.open == server.stats().connections_open
    })
    .await;
    let drains = t.snapshot();
    let h = stats.host_snapshot(key).unwrap();
    let server_stats = server.stats();
    eprintln!(
        "after the burst:\n{}\nserver: {server_stats:?}",
        stats.snapshot()
    );

    assert_eq!(
        h.in_use, 0,
        "a cancelled request kept its connection: {h:?}"
    );
    assert_eq!(h.waiting, 0);
    assert_eq!(h.acquired_total(), h.released_total);
    // The cap, as the client's connection IO saw it. (The server's own
    // high-water mark can exceed it: it learns of a close one FIN later.)
    assert!(
        h.open <= CAP as u64 && h.peak_open <= CAP as u64,
        "cap {CAP}: {h:?}"
    );
    // The counters agree with the server's own: the same connections are
    // open now. The server may have accepted a few more than the client
    // opened: a request dropped mid-connect abandons a finished handshake
    // that the client never got to use (exact agreement is checked on the
    // burst without cancellations below).
    assert_eq!(h.open, server_stats.connections_open);
    let abandoned = server_stats.connections_accepted - h.opened_total;
    assert!(
        h.opened_total <= server_stats.connections_accepted
            && abandoned <= tally.cancelled[0].load(Ordering::Relaxed) / 10,
        "client opened {}, server accepted {}",
        h.opened_total,
        server_stats.connections_accepted
    );
    assert_eq!(h.timed_out_total, 0);
    // Idle connections are reused, those of abandoned responses included:
    // each was drained in the background and went back to the pool. Only
    // responses abandoned after the server got the request are drained:
    // every `/slow` request it saw was cancelled waiting for its head, and
    // every mid-body cancel had its head.
    let slow_sent = server.hits("/slow");
    let responses_abandoned = slow_sent + tally.cancelled[2].load(Ordering::Relaxed);
    assert!(
        slow_sent > 0,
        "no request was cancelled while waiting for its head"
    );
    assert!(
        drains.drains_started <= responses_abandoned,
        "only abandoned responses are drained: {drains:?}, {responses_abandoned} abandoned"
    );
    // Few connections close now (without draining, nearly every abandoned
    // response cost one). The rest: a drain that gave up, or a request
    // cancelled in the instant between its connection being assigned and
    // hyper taking it, too late to drop unsent yet too early to drain
    // (hyper then closes the connection rather than send it).
    assert!(
        h.closed_total * 10 < responses_abandoned,
        "{} closes for {responses_abandoned} responses abandoned: {drains:?}",
        h.closed_total,
    );
    assert!(
        h.reused_total + h.closed_total + CAP as u64 >= h.acquired_total(),
        "an acquire opened a connection while an idle one was there: {h:?}"
    );
    eprintln!(
        "reused {} of {} acquires ({:.1} %; {:.1} % of all {REQUESTS} requests, of which {} \
         never got a connection: cancelled before it or while queued for one); {} connections \
         closed; drains: {} started, {} succeeded, {} abandoned, for {responses_abandoned} responses \
         abandoned after the server got the request ({slow_sent} waiting for the head)",
        h.reused_total,
        h.acquired_total(),
        h.reuse_ratio() * 100.0,
        h.reused_total as f64 * 100.0 / REQUESTS as f64,
        REQUESTS - h.acquired_total(),
        h.closed_total,
        drains.drains_started,
        drains.drains_succeeded,
        drains.drains_abandoned,
    );
    assert!(
        h.reuse_ratio() > 0.9,
        "reused {} of {} acquires: not over 90 %",
        h.reused_total,
        h.acquired_total()
    );
}

/// A following burst is served entirely from the pool, without a timeout.
async fn follow_up_burst(t: &HyperTransport, server: &Arc<FaultServer>, stats: &PoolStats) {
    let key = server.base_url();
    let before = stats.host_snapshot(key).unwrap();
    let accepted_before = server.stats().connections_accepted;
    let tally = Arc::new(Tally::default());
    burst(t, server, 2_000, |_| Plan::Complete, &tally).await;
    assert_eq!(tally.completed.load(Ordering::Relaxed), 2_000);
    let after = stats.host_snapshot(key).unwrap();
    assert_eq!(after.timed_out_total, 0);
    assert_eq!(after.failed_total, before.failed_total);
    assert_eq!(after.acquired_total() - before.acquired_total(), 2_000);
    assert!(after.peak_open <= CAP as u64);
    // With no cancellation, reuse is near total: at most the connections
    // missing up to the cap are opened.
    let reused = after.reused_total - before.reused_total;
    assert_eq!(
        after.opened_total - before.opened_total,
        server.stats().connections_accepted - accepted_before,
        "without cancellations, every connection the server accepted was opened by the client"
    );
    assert!(reused > 1_800, "reused {reused} of 2000 requests");
    eprintln!(
        "follow-up burst: reused {reused} of 2000 requests\n{}",
        stats.snapshot()
    );
}

#[tokio::test]
async fn a_body_held_unread_past_the_threshold_is_reported() {
    const THRESHOLD: Duration = Duration::from_millis(500);
    let server = FaultServer::start().await;
    let stats = PoolStats::new();
    let detector = LeakDetector::builder(stats.clone())
        .threshold(THRESHOLD)
        .build()
        .unwrap();
    let t = HyperTransport::builder()
        .pool_observer(stats.clone())
        .build()
        .unwrap();
    let key = server.base_url();

    let res = t.send(get(&server.url("/bytes/1000"))).await.unwrap();
    let conn = res
        .extensions()
        .get::<steadfast_hyper::ConnectionInfo>()
        .unwrap()
        .id();
    assert!(detector.check(Instant::now()).is_empty());

    tokio::time::sleep(THRESHOLD + Duration::from_millis(100)).await;
    let report = detector.check(Instant::now());
    assert_eq!(report.held.len(), 1, "{report}");
    let held = &report.held[0];
    assert_eq!((held.host.as_str(), held.connection), (key, conn));
    assert!(held.age >= THRESHOLD);
    assert_eq!(stats.host_snapshot(key).unwrap().held_too_long_total, 1);

    // Dropping the body gives the connection back once the 1000 unread
    // bytes are drained, in the background: nothing left to report.
    drop(res);
    settle(|| t.snapshot().drains_running() == 0).await;
    assert_eq!(t.snapshot().drains_succeeded, 1);
    assert!(detector.check(Instant::now()).is_empty());
    assert_eq!(stats.host_snapshot(key).unwrap().in_use, 0);
}

/// One `PoolStats` shared by two transports: their connections are told
/// apart, so one transport's closed connection does not erase the other's
/// held one.
#[tokio::test]
async fn two_transports_sharing_one_pool_stats_keep_their_connections_apart() {
    const THRESHOLD: Duration = Duration::from_millis(300);
    let server = FaultServer::start().await;
    let stats = PoolStats::new();
    let detector = LeakDetector::builder(stats.clone())
        .threshold(THRESHOLD)
        .build()
        .unwrap();
    let transport = || {
        HyperTransport::builder()
            .pool_observer(stats.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (transport(), transport());
    let key = server.base_url();
    let id = |res: &http::Response<_>| {
        res.extensions()
            .get::<steadfast_hyper::ConnectionInfo>()
            .unwrap()
            .id()
    };
    let held = a.send(get(&server.url("/bytes/1000"))).await.unwrap();
    let other = b.send(get(&server.url("/bytes/10"))).await.unwrap();
    assert_ne!(id(&held), id(&other));
    other.into_body().collect().await.unwrap();
    drop(b); // closes its connection
    settle(|| stats.host_snapshot(key).unwrap().open == 1).await;
    let s = stats.host_snapshot(key).unwrap();
    assert_eq!((s.open, s.in_use, s.idle), (1, 1, 0), "{s:?}");
    tokio::time::sleep(THRESHOLD + Duration::from_millis(100)).await;
    let report = detector.check(Instant::now());
    assert_eq!(report.held.len(), 1, "{report}");
    assert_eq!(report.held[0].connection, id(&held));
}

/// HTTP/2 (h2c) multiplexes every request over one connection that, under
/// steady traffic, is never idle. Ages are per request: the busy connection
/// is healthy, and a stream held unread on it is the one reported, with its
/// own age rather than the connection's busy time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_http2_connection_is_not_a_leak_but_a_held_stream_on_it_is() {
    // Generous against a loaded machine: a 100 ms request would have to
    // stall for 2 s to be reported.
    const THRESHOLD: Duration = Duration::from_secs(2);
    const WORKERS: u64 = 4;
    let server = FaultServer::start().await;
    let stats = PoolStats::new();
    let detector = LeakDetector::builder(stats.clone())
        .threshold(THRESHOLD)
        .build()
        .unwrap();
    let t = HyperTransport::builder()
        .http2_prior_knowledge()
        .pool_observer(stats.clone())
        .build()
        .unwrap();
    let key = server.base_url().to_owned();

    // Staggered workers keep the connection busy without a break.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (t, stop) = (t.clone(), stop.clone());
            let url = server.url("/slow?ms=100");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(25 * i)).await;
                while !stop.load(Ordering::Relaxed) {
                    let res = t.send(get(&url)).await.unwrap();
                    assert_eq!(res.version(), http::Version::HTTP_2);
                    res.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();

    let mut most_in_flight = 0;
    let until = Instant::now() + 2 * THRESHOLD + Duration::from_millis(500);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = detector.check(Instant::now());
        assert!(
            report.held.is_empty(),
            "a busy connection reported: {report}"
        );
        let h = stats.host_snapshot(&key).unwrap();
        assert_eq!(h.idle + h.in_use, h.open, "{h}");
        most_in_flight = most_in_flight.max(h.in_flight);
    }
    let h = stats.host_snapshot(&key).unwrap();
    assert_eq!(h.opened_total, 1, "one multiplexed connection: {h}");
    assert!(
        most_in_flight > h.in_use,
        "several streams seen on one connection: {most_in_flight}"
    );

    // One stream held unread while the others keep the connection busy.
    let held = t.send(get(&server.url("/bytes/1000"))).await.unwrap();
    let conn = held
        .extensions()
        .get::<steadfast_hyper::ConnectionInfo>()
        .unwrap()
        .id();
    tokio::time::sleep(THRESHOLD + Duration::from_millis(300)).await;
    let report = detector.check(Instant::now());
    assert_eq!(report.held.len(), 1, "{report}");
    assert_eq!(report.held[0].connection, conn);
    // The stream's age, not the connection's (busy for over 6 s by now).
    let age = report.held[0].age;
    assert!(
        THRESHOLD <= age && age < 2 * THRESHOLD,
        "age {age:?} is the held stream's"
    );

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    drop(held);
    assert!(detector.check(Instant::now()).is_empty());
    let h = stats.host_snapshot(&key).unwrap();
    assert_eq!((h.in_use, h.in_flight, h.idle), (0, 0, h.open), "{h}");
}
