//! The per-host cap and the pool events, against the loopback FaultServer:
//! the cap holds under load (checked on the server side), and cancellation
//! at any point leaves no slot behind.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Event, Recorder, get, read_all};
use steadfast_core::Transport;
use steadfast_core::pool::Acquired;
use steadfast_hyper::{ConnectionInfo, HyperTransport};
use steadfast_testkit::FaultServer;

#[tokio::test]
async fn events_follow_the_protocol_for_new_and_reused_connections() {
    let server = FaultServer::start().await;
    let rec = Recorder::new();
    let t = HyperTransport::builder()
        .pool_observer(common::observer(&rec))
        .pool_idle_timeout(Some(Duration::from_millis(200)))
        .build()
        .unwrap();

    let res = t.send(get(&server.url("/bytes/100"))).await.unwrap();
    let first = res.extensions().get::<ConnectionInfo>().unwrap().id();
    assert_eq!(
        rec.events(),
        vec![
            Event::Started,
            Event::Opened(first),
            Event::Finished(Acquired::New(first))
        ],
        "the connection is held while the body is unread"
    );
    assert_eq!(read_all(res.into_body()).await.unwrap().len(), 100);
    assert_eq!(rec.events().last(), Some(&Event::Released(first)));

    rec.clear();
    let res = t.send(get(&server.url("/bytes/100"))).await.unwrap();
    let info = res.extensions().get::<ConnectionInfo>().unwrap().clone();
    assert_eq!(info.id(), first, "the idle connection is reused");
    assert_eq!(info.requests(), 2);
    drop(res); // dropping the body releases the connection too...
    // ...once the 100 bytes left are drained, in the background.
    assert!(wait_until(|| t.snapshot().drains_running() == 0).await);
    assert_eq!(t.snapshot().drains_succeeded, 1, "{:?}", t.snapshot());
    assert_eq!(
        rec.events(),
        vec![
            Event::Started,
            Event::Finished(Acquired::Reused(first)),
            Event::Released(first)
        ]
    );

    // A bodiless response releases at once.
    rec.clear();
    let res = t.send(get(&server.url("/status/204"))).await.unwrap();
    assert_eq!(rec.events().last(), Some(&Event::Released(first)));
    drop(res);

    // The pool closes the idle connection: the IO wrapper reports it.
    assert!(wait_until(|| t.snapshot().connections_open == 0).await);
    assert_eq!(rec.events().last(), Some(&Event::Closed(first)));
    assert_eq!(t.pool_permits_in_use(), 0);
    let keys = rec.hosts_asked();
    assert_eq!(
        keys.get(server.base_url()),
        Some(&1),
        "host() is asked once per key: {keys:?}"
    );
}

/// The acquisition is reported when a connection takes the request, not
/// when the response comes back: while the server sits on the head, the
/// connection is in use. HTTP/1 connections claim the request they take;
/// on HTTP/2 the capture names the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acquisition_is_reported_before_the_response_head() {
    let server = FaultServer::start().await;
    let builders = [
        ("HTTP/1.1", HyperTransport::builder()),
        #[cfg(feature = "http2")]
        ("h2c", HyperTransport::builder().http2_prior_knowledge()),
    ];
    for (protocol, builder) in builders {
        let rec = Recorder::new();
        let t = builder
            .pool_observer(common::observer(&rec))
            .build()
            .unwrap();
        for round in ["a new connection", "a reused one"] {
            rec.clear();
            let slow = tokio::spawn({
                let t = t.clone();
                let url = server.url("/slow?ms=400");
                async move { t.send(get(&url)).await }
            });
            let acquired = wait_until(|| {
                rec.events()
                    .iter()
                    .any(|e| matches!(e, Event::Finished(a) if a.connection().is_some()))
            })
            .await;
            assert!(acquired, "{protocol}, {round}: {:?}", rec.events());
            assert!(
                !slow.is_finished(),
                "{protocol}, {round}: reported only with the response"
            );
            let res = slow.await.unwrap().unwrap();
            let id = res.extensions().get::<ConnectionInfo>().unwrap().id();
            read_all(res.into_body()).await.unwrap();
            let events = rec.events();
            let want = if round == "a new connection" {
                Acquired::New(id)
            } else {
                Acquired::Reused(id)
            };
            assert!(
                events.contains(&Event::Finished(want))
                    && events.last() == Some(&Event::Released(id)),
                "{protocol}, {round}: {events:?}"
            );
        }
    }
}

#[tokio::test]
async fn failed_connects_finish_the_acquire_as_failed() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rec = Recorder::new();
    let t = HyperTransport::builder()
        .pool_observer(common::observer(&rec))
        .build()
        .unwrap();
    t.send(get(&format!("http://{addr}/"))).await.unwrap_err();
    assert_eq!(
        rec.events(),
        vec![Event::Started, Event::Finished(Acquired::Failed)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_host_cap_holds_under_500_concurrent_requests() {
    const CAP: usize = 8;
    let server = FaultServer::start().await;
    let rec = Recorder::new();
    let t = HyperTransport::builder()
        .max_connections_per_host(CAP)
        .pool_acquire_timeout(Duration::from_secs(60))
        .pool_observer(common::observer(&rec))
        .build()
        .unwrap();
    let url = server.url("/slow?ms=20");
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let t = t.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let res = t.send(get(&url)).await?;
                let status = res.status();
                read_all(res.into_body()).await?;
                Ok::<_, steadfast_hyper::HyperError>(status)
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 200);
    }
    let stats = server.stats();
    assert_eq!(stats.requests, 500);
    assert!(
        stats.max_connections_open <= CAP as u64,
        "the server saw {} connections open at once; the cap is {CAP}",
        stats.max_connections_open
    );
    assert!(
        t.snapshot().connections_opened <= CAP as u64 * 2,
        "{:?}",
        t.snapshot()
    );
    let c = rec.check_protocol();
    assert_eq!(c.new + c.reused, 500, "{c:?}");
    assert!(t.pool_permits_in_use() <= CAP);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_1000_requests_at_random_points_leaks_no_slot() {
    const CAP: usize = 8;
    let server = FaultServer::start().await;
    let rec = Recorder::new();
    let t = HyperTransport::builder()
        .max_connections_per_host(CAP)
        .pool_acquire_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Some(Duration::from_millis(300)))
        .pool_observer(common::observer(&rec))
        .build()
        .unwrap();
    let mut rng = Lcg(0x5eed);
    let routes = [
        "/slow?ms=10",
        "/drip?chunks=4&interval_ms=5&chunk_size=64",
        "/bytes/200000",
        "/status/200",
    ];
    // 32 requests in flight at a time against a cap of 8: some wait for the
    // pool, some hold a connection, some are mid-body when cancelled.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(32));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let t = t.clone();
            let url = server.url(routes[i % routes.len()]);
            let cancel_after = Duration::from_micros(rng.below(30_000));
            let never_polled = rng.below(20) == 0;
            let read_body = rng.below(2) == 0;
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let _slot = in_flight.acquire_owned().await.unwrap();
                let work = async {
                    let res = t.send(get(&url)).await?;
                    if read_body {
                        read_all(res.into_body()).await?;
                    }
                    Ok::<_, steadfast_hyper::HyperError>(())
                };
                if never_polled {
                    drop(work);
                } else {
                    let _ = tokio::time::timeout(cancel_after, work).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    // Quiescence: no drain running (each holds its connection until it
    // ends), and every slot still taken belongs to an open connection.
    let settled = wait_until(|| {
        let s = t.snapshot();
        s.drains_running() == 0 && s.permits_in_use == s.connections_open
    })
    .await;
    assert!(
        settled,
        "a slot is held by no connection: {:?}",
        t.snapshot()
    );
    assert!(t.pool_permits_in_use() <= CAP);
    assert!(
        t.snapshot().drains_succeeded > 0,
        "some abandoned responses were drained: {:?}",
        t.snapshot()
    );
    let c = rec.check_protocol();
    assert!(
        c.cancelled > 0,
        "some requests were cancelled while waiting: {c:?}"
    );
    assert!(
        c.new + c.reused > 0,
        "some requests got a connection: {c:?}"
    );

    // Once the idle connections expire, nothing is held at all.
    assert!(
        wait_until(|| t.pool_permits_in_use() == 0).await,
        "{:?}",
        t.snapshot()
    );
    assert_eq!(t.snapshot().connections_open, 0);
    let c = rec.check_protocol();
    assert_eq!(c.opened, c.closed, "{c:?}");

    // And the next request goes straight through: a new connection, no pool wait.
    rec.clear();
    let res = t.send(get(&server.url("/status/200"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        matches!(
            rec.events()[..],
            [
                Event::Started,
                Event::Opened(_),
                Event::Finished(Acquired::New(_)),
                ..
            ]
        ),
        "{:?}",
        rec.events()
    );
    assert_eq!(t.snapshot().pool_timeouts, 0);
}

/// Polls `cond` every 20 ms for up to 10 s (real time: the server is real).
async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test]
async fn concurrent_requests_share_the_cap_and_reuse_connections() {
    let server = FaultServer::start().await;
    let t = Arc::new(
        HyperTransport::builder()
            .max_connections_per_host(2)
            .build()
            .unwrap(),
    );
    let url = server.url("/slow?ms=30");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let t = t.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let res = t.send(get(&url)).await.unwrap();
                let id = res.extensions().get::<ConnectionInfo>().unwrap().id();
                read_all(res.into_body()).await.unwrap();
                id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert!(ids.len() <= 2, "at most two connections: {ids:?}");
    assert!(server.stats().max_connections_open <= 2);
}

#[cfg(feature = "pool-stats")]
#[tokio::test]
async fn pool_stats_sees_the_connection_opened_used_and_released() {
    let server = FaultServer::start().await;
    let stats = steadfast_pool::PoolStats::new();
    let t = HyperTransport::builder()
        .pool_stats(stats.clone())
        .build()
        .unwrap();
    assert!(Arc::ptr_eq(t.pool_stats().unwrap(), &stats));

    let res = t.send(get(&server.url("/bytes/10"))).await.unwrap();
    let held = stats.host_snapshot(server.base_url()).unwrap();
    assert_eq!((held.in_use, held.released_total), (1, 0), "{held:?}");
    assert_eq!(read_all(res.into_body()).await.unwrap().len(), 10);

    let h = stats.host_snapshot(server.base_url()).unwrap();
    assert_eq!(
        (
            h.opened_total,
            h.new_total,
            h.released_total,
            h.in_use,
            h.idle
        ),
        (1, 1, 1, 0, 1),
        "{h:?}"
    );
}

#[cfg(feature = "pool-stats")]
#[tokio::test]
async fn build_creates_pool_stats_unless_another_observer_is_chosen() {
    use steadfast_core::pool::NoopPoolObserver;

    let server = FaultServer::start().await;
    let t = HyperTransport::builder().build().unwrap();
    let stats = t.pool_stats().expect("created by build()").clone();
    let res = t.send(get(&server.url("/bytes/10"))).await.unwrap();
    read_all(res.into_body()).await.unwrap();
    assert_eq!(stats.snapshot().total.released_total, 1);

    let quiet = HyperTransport::builder()
        .pool_observer(Arc::new(NoopPoolObserver))
        .build()
        .unwrap();
    assert!(quiet.pool_stats().is_none(), "NoopPoolObserver opts out");

    let rec = Recorder::new();
    let replaced = HyperTransport::builder()
        .pool_stats(steadfast_pool::PoolStats::new())
        .pool_observer(common::observer(&rec))
        .build()
        .unwrap();
    assert!(
        replaced.pool_stats().is_none(),
        "the last observer set wins"
    );
    let res = replaced
        .send(get(&server.url("/status/204")))
        .await
        .unwrap();
    drop(res);
    assert_eq!(rec.check_protocol().released, 1);
}

/// `http://h/` and `http://h:80/` are one server: the default port spelled
/// out is stripped before hyper-util pools the request, so both spellings
/// share one pool, one cap and one key, and the observer is asked once.
/// Userinfo still pools apart, under the same key.
#[tokio::test]
async fn a_default_port_spelled_out_is_the_same_host() {
    let rec = Recorder::new();
    let t = HyperTransport::builder()
        .connect_timeout(Duration::from_millis(300))
        .pool_observer(common::observer(&rec))
        .build()
        .unwrap();
    // Nothing needs to answer on port 80: the keys are what is checked.
    for url in [
        "http://127.0.0.1:80/a",
        "http://127.0.0.1/b",
        "http://user:pw@127.0.0.1:80/c",
        "http://127.0.0.1:443/d",
    ] {
        let host = match t.send(get(url)).await {
            Ok(res) => res
                .extensions()
                .get::<ConnectionInfo>()
                .unwrap()
                .host()
                .to_owned(),
            Err(e) => e.host().to_owned(),
        };
        let want = if url.contains(":443") {
            "http://127.0.0.1:443"
        } else {
            "http://127.0.0.1"
        };
        assert_eq!(host, want, "{url}");
    }
    let asked = rec.hosts_asked();
    assert_eq!(asked.get("http://127.0.0.1"), Some(&1), "{asked:?}");
    assert_eq!(asked.get("http://127.0.0.1:443"), Some(&1), "{asked:?}");
    assert_eq!(asked.len(), 2, "{asked:?}");
}
