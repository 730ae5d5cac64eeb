//! `drain_on_cancel` against the loopback FaultServer: an abandoned HTTP/1
//! response is read to its end in the background, within its limits, so
//! the next request reuses the connection (the server accepts one
//! connection, not two); beyond the limits the connection closes as
//! without draining; and a request abandoned before a connection took it
//! never reaches the server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Event, Recorder, get, read_all};
use http_body_util::BodyExt;
use steadfast_core::Transport;
use steadfast_core::pool::{Acquired, NoopPoolObserver};
use steadfast_hyper::{ConnectionInfo, DrainConfig, HyperTransport, TransportSnapshot};
use steadfast_testkit::FaultServer;

/// Polls `cond` every 10 ms for up to 10 s (real time: the server is real).
async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// Waits for every drain to end, then gives hyper-util a moment to put the
/// connection back into its pool (it does so from the connection's task).
async fn drains_ended(t: &HyperTransport) -> TransportSnapshot {
    assert!(
        wait_until(|| t.snapshot().drains_running() == 0).await,
        "a drain never ended: {:?}",
        t.snapshot()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    t.snapshot()
}

/// Sends a GET to `path`, reads it all, and returns the connection it used.
async fn fetch(t: &HyperTransport, server: &FaultServer, path: &str) -> ConnectionInfo {
    let res = t.send(get(&server.url(path))).await.unwrap();
    let info = res.extensions().get::<ConnectionInfo>().unwrap().clone();
    read_all(res.into_body()).await.unwrap();
    info
}

#[tokio::test]
async fn a_body_dropped_mid_way_is_drained_and_its_connection_reused() {
    let server = FaultServer::start().await;
    let rec = Recorder::new();
    let t = HyperTransport::builder()
        .pool_observer(common::observer(&rec))
        .build()
        .unwrap();

    let res = t
        .send(get(&server.url("/bytes/20000?chunk=1000")))
        .await
        .unwrap();
    let first = res.extensions().get::<ConnectionInfo>().unwrap().id();
    let mut body = res.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert!(frame.data_ref().is_some_and(|d| d.len() < 20_000));
    assert!(body.received() < 20_000, "dropped half-way");
    drop(body);

    let s = drains_ended(&t).await;
    assert_eq!(
        (s.drains_started, s.drains_succeeded, s.drains_abandoned),
        (1, 1, 0),
        "{s:?}"
    );
    assert_eq!(
        rec.events().last(),
        Some(&Event::Released(first)),
        "released once the drain ended"
    );

    let next = fetch(&t, &server, "/bytes/10").await;
    assert_eq!(next.id(), first, "the drained connection is reused");
    assert_eq!(next.requests(), 2);
    assert_eq!(server.stats().connections_accepted, 1);
    assert_eq!(
        rec.events()
            .iter()
            .filter(|e| matches!(e, Event::Finished(Acquired::Reused(_))))
            .count(),
        1,
        "{:?}",
        rec.events()
    );
    rec.check_protocol();
}

#[tokio::test]
async fn a_body_with_more_left_than_max_bytes_is_not_drained() {
    let server = FaultServer::start().await;
    let t = HyperTransport::builder().build().unwrap();
    assert_eq!(t.config().drain_on_cancel(), Some(DrainConfig::default()));

    // 200,000 bytes announced by Content-Length: over the 64 KiB default.
    let res = t
        .send(get(&server.url("/bytes/200000?chunk=1000")))
        .await
        .unwrap();
    let first = res.extensions().get::<ConnectionInfo>().unwrap().id();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);

    // The connection closes, as without draining.
    assert!(wait_until(|| t.snapshot().connections_closed == 1).await);
    let s = t.snapshot();
    assert_eq!(s.drains_started, 0, "{s:?}");
    let next = fetch(&t, &server, "/bytes/10").await;
    assert_ne!(next.id(), first);
    assert_eq!(server.stats().connections_accepted, 2);
}

#[tokio::test]
async fn a_drain_slower_than_max_time_is_abandoned() {
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .drain_on_cancel(Some(DrainConfig::new(64 * 1024, Duration::from_millis(50))))
        .build()
        .unwrap();
    // 5 chunks, one every 200 ms: the drain's 50 ms run out first.
    let res = t
        .send(get(
            &server.url("/drip?chunks=5&interval_ms=200&chunk_size=16")
        ))
        .await
        .unwrap();
    drop(res);
    let s = drains_ended(&t).await;
    assert_eq!(
        (s.drains_started, s.drains_succeeded, s.drains_abandoned),
        (1, 0, 1),
        "{s:?}"
    );
    assert!(wait_until(|| t.snapshot().connections_closed == 1).await);
    fetch(&t, &server, "/bytes/10").await;
    assert_eq!(server.stats().connections_accepted, 2);
}

/// Cancels a request to `/slow?ms=50` after 10 ms, while it waits for the
/// head, then sends the next one; returns the two connections.
async fn cancel_waiting_for_the_head(
    t: &HyperTransport,
    server: &FaultServer,
) -> (ConnectionInfo, ConnectionInfo) {
    let first = fetch(t, server, "/status/200").await;
    tokio::time::sleep(Duration::from_millis(50)).await; // back in the pool
    let cancelled = tokio::time::timeout(
        Duration::from_millis(10),
        t.send(get(&server.url("/slow?ms=50"))),
    )
    .await;
    assert!(cancelled.is_err(), "the head comes after 50 ms");
    assert!(
        wait_until(|| server.hits("/slow") == 1).await,
        "the request was sent"
    );
    drains_ended(t).await;
    let next = fetch(t, server, "/bytes/10").await;
    (first, next)
}

#[tokio::test]
async fn a_request_dropped_while_waiting_for_its_head_leaves_a_reusable_connection() {
    let server = FaultServer::start().await;
    let rec = Recorder::new();
    let t = HyperTransport::builder()
        .pool_observer(common::observer(&rec))
        .build()
        .unwrap();
    let (first, next) = cancel_waiting_for_the_head(&t, &server).await;
    assert_eq!(next.id(), first.id(), "reused after the slow response");
    assert_eq!(next.requests(), 3, "/status/200, /slow, /bytes/10");
    assert_eq!(server.stats().connections_accepted, 1);
    let s = t.snapshot();
    assert_eq!((s.drains_started, s.drains_succeeded), (1, 1), "{s:?}");
    let c = rec.check_protocol();
    assert_eq!((c.new, c.reused, c.cancelled), (1, 2, 0), "{c:?}");

    // Without a pool observer the drain learns the connection from the head.
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .pool_observer(Arc::new(NoopPoolObserver))
        .build()
        .unwrap();
    let (first, next) = cancel_waiting_for_the_head(&t, &server).await;
    assert_eq!(next.id(), first.id());
    assert_eq!(next.requests(), 3);
    assert_eq!(server.stats().connections_accepted, 1);
}

#[tokio::test]
async fn without_draining_the_abandoned_connection_closes() {
    let server = FaultServer::start().await;
    let t = HyperTransport::builder()
        .drain_on_cancel(None)
        .build()
        .unwrap();
    let (first, next) = cancel_waiting_for_the_head(&t, &server).await;
    assert_ne!(next.id(), first.id());
    assert_eq!(server.stats().connections_accepted, 2);
    assert_eq!(t.snapshot().drains_started, 0);
}

#[tokio::test]
async fn a_request_dropped_before_it_got_a_connection_is_never_sent() {
    let server = FaultServer::start().await;
    let rec = Recorder::new();
    let t = HyperTransport::builder()
        .max_connections_per_host(1)
        .pool_acquire_timeout(Duration::from_secs(30))
        .pool_observer(common::observer(&rec))
        .build()
        .unwrap();
    // The only connection is busy with a slow request.
    let busy = tokio::spawn({
        let (t, url) = (t.clone(), server.url("/slow?ms=200"));
        async move { read_all(t.send(get(&url)).await.unwrap().into_body()).await }
    });
    assert!(wait_until(|| server.hits("/slow") == 1).await);

    let waited = tokio::time::timeout(
        Duration::from_millis(50),
        t.send(get(&server.url("/bytes/7"))),
    )
    .await;
    assert!(waited.is_err(), "no connection was free");
    busy.await.unwrap().unwrap();

    // Long enough for a wrongly kept request to go out on the freed connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.hits("/bytes/7"), 0, "a cancelled request was sent");
    assert_eq!(t.snapshot().drains_started, 0);
    let c = rec.check_protocol();
    assert_eq!((c.new, c.cancelled), (1, 1), "{c:?}");
    assert_eq!(server.stats().connections_accepted, 1);
}

#[test]
fn a_drain_cut_short_by_its_runtime_shutting_down_still_ends() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_rt.block_on(FaultServer::start());
    let t = HyperTransport::builder().build().unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        // A body that takes a second to come: the drain is still running
        // when the runtime goes.
        let url = server.url("/drip?chunks=5&interval_ms=200&chunk_size=16");
        drop(t.send(get(&url)).await.unwrap());
    });
    assert_eq!(t.snapshot().drains_running(), 1);
    drop(client_rt);
    let s = t.snapshot();
    assert_eq!(
        (s.drains_started, s.drains_abandoned, s.drains_running()),
        (1, 1, 0),
        "{s:?}"
    );
    drop(server);
}
