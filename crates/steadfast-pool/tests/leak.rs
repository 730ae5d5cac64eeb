//! The leak detector over synthetic events, on paused time.

use std::time::Duration;

use steadfast_pool::{
    Acquired, ConnectionId, HostObserver, LeakDetector, PoolObserver, PoolStats, WatchdogError,
};
use tokio::time::{Instant, advance};

const KEY: &str = "http://127.0.0.1:8080";

fn take(host: &dyn HostObserver, id: u64) {
    host.acquire_started();
    host.acquire_finished(Duration::ZERO, Acquired::Reused(ConnectionId(id)));
}

#[tokio::test(start_paused = true)]
async fn a_connection_held_past_the_threshold_is_reported_once_with_host_and_age() {
    let stats = PoolStats::new();
    let detector = LeakDetector::builder(stats.clone())
        .threshold(Duration::from_secs(30))
        .build()
        .unwrap();
    let host = stats.host(KEY);
    for id in 1..=3 {
        host.connection_opened(ConnectionId(id));
    }
    take(&*host, 1); // the leak: never released
    advance(Duration::from_secs(20)).await;
    take(&*host, 2); // held, but not long enough
    assert!(detector.check(Instant::now()).is_empty());

    advance(Duration::from_secs(11)).await;
    let report = detector.check(Instant::now());
    assert_eq!(report.held.len(), 1, "{report}");
    let held = &report.held[0];
    assert_eq!(held.host, KEY);
    assert_eq!(held.connection, ConnectionId(1));
    assert_eq!(held.age, Duration::from_secs(31));
    assert!(held.newly_detected);
    assert_eq!(
        report.to_string(),
        "http://127.0.0.1:8080 conn#1 in use for 31.0s (1 request(s))"
    );

    // Reported (warned and counted) once; still listed while it lasts.
    advance(Duration::from_secs(5)).await;
    let again = detector.check(Instant::now());
    assert_eq!(again.held.len(), 1);
    assert!(!again.held[0].newly_detected);
    assert_eq!(stats.host_snapshot(KEY).unwrap().held_too_long_total, 1);

    // Given back, it is no longer reported; a new busy period starts afresh.
    host.connection_released(ConnectionId(1), Duration::from_secs(36));
    host.connection_released(ConnectionId(2), Duration::from_secs(16));
    assert!(detector.check(Instant::now()).held.is_empty());
    take(&*host, 1);
    advance(Duration::from_secs(30)).await;
    let report = detector.check(Instant::now());
    assert!(report.held[0].newly_detected);
    assert_eq!(report.held[0].age, Duration::from_secs(30));
    assert_eq!(stats.host_snapshot(KEY).unwrap().held_too_long_total, 2);
}

#[tokio::test(start_paused = true)]
async fn in_use_that_never_returns_to_zero_after_quiescence_is_reported() {
    // Tracking off: the stuck check needs only the counters.
    let stats = PoolStats::builder()
        .track_connections(false)
        .build()
        .unwrap();
    let detector = LeakDetector::builder(stats.clone())
        .quiescence(Duration::from_secs(10))
        .build()
        .unwrap();
    let host = stats.host(KEY);
    host.connection_opened(ConnectionId(1));
    host.connection_opened(ConnectionId(2));
    take(&*host, 1);
    take(&*host, 2);
    host.connection_released(ConnectionId(2), Duration::from_millis(5));

    // Busy traffic: every check sees new acquires, so nothing is stuck even
    // though one request stays out.
    for _ in 0..5 {
        assert!(detector.check(Instant::now()).is_empty());
        advance(Duration::from_secs(4)).await;
        take(&*host, 2);
        host.connection_released(ConnectionId(2), Duration::from_millis(5));
    }
    // Quiet: first check starts the period, a later one past it reports.
    assert!(detector.check(Instant::now()).is_empty());
    advance(Duration::from_secs(6)).await;
    assert!(detector.check(Instant::now()).is_empty());
    advance(Duration::from_secs(4)).await;
    let report = detector.check(Instant::now());
    assert_eq!(report.stuck.len(), 1, "{report}");
    let stuck = &report.stuck[0];
    assert_eq!((stuck.host.as_str(), stuck.in_use), (KEY, 1));
    assert_eq!(stuck.quiet_for, Duration::from_secs(10));
    assert!(stuck.newly_detected);
    assert!(
        report.held.is_empty(),
        "no per-connection ages without tracking"
    );

    advance(Duration::from_secs(1)).await;
    assert!(!detector.check(Instant::now()).stuck[0].newly_detected);
    assert_eq!(stats.host_snapshot(KEY).unwrap().stuck_total, 1);

    // Returning to zero ends the episode.
    host.connection_released(ConnectionId(1), Duration::from_secs(60));
    advance(Duration::from_secs(30)).await;
    assert!(detector.check(Instant::now()).is_empty());
}

/// A request that waited for a connection since before the quiet period
/// and took it during the period holds it for less than the period: not
/// stuck, as the held check (same length) agrees.
#[tokio::test(start_paused = true)]
async fn a_request_that_took_its_connection_late_restarts_the_quiet_period() {
    let stats = PoolStats::new();
    let detector = LeakDetector::new(stats.clone()); // 60 s and 60 s
    let host = stats.host(KEY);
    host.connection_opened(ConnectionId(1));
    take(&*host, 1); // R1
    host.acquire_started(); // R2 waits: a cap of one connection
    advance(Duration::from_secs(1)).await;
    assert!(detector.check(Instant::now()).is_empty());
    advance(Duration::from_secs(4)).await;
    host.connection_released(ConnectionId(1), Duration::from_secs(5));
    host.acquire_finished(Duration::from_secs(5), Acquired::Reused(ConnectionId(1)));
    // Checks at 16, 31, 46 and 61 s: at 61 s, R2 has held its connection
    // for 56 s.
    advance(Duration::from_secs(11)).await;
    for _ in 0..4 {
        assert!(detector.check(Instant::now()).is_empty());
        advance(Duration::from_secs(15)).await;
    }
    // 76 s: a period since the first check that saw R2 hold its
    // connection, and 71 s of holding. Both checks agree it is a leak.
    let report = detector.check(Instant::now());
    assert_eq!((report.held.len(), report.stuck.len()), (1, 1), "{report}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_host_is_never_stuck() {
    let stats = PoolStats::new();
    let detector = LeakDetector::builder(stats.clone())
        .quiescence(Duration::from_secs(1))
        .build()
        .unwrap();
    let host = stats.host(KEY);
    host.connection_opened(ConnectionId(1));
    take(&*host, 1);
    host.connection_released(ConnectionId(1), Duration::from_millis(1));
    for _ in 0..5 {
        advance(Duration::from_secs(10)).await;
        assert!(detector.check(Instant::now()).is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_outlives_its_detector_and_stops_with_the_stats() {
    let stats = PoolStats::new();
    let detector = LeakDetector::builder(stats.clone())
        .threshold(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(
        detector.spawn_watchdog(Duration::ZERO).unwrap_err(),
        WatchdogError::ZeroInterval
    );
    // One that would overflow the clock is refused too, not left to panic
    // inside the task.
    assert_eq!(
        detector.spawn_watchdog(Duration::MAX).unwrap_err(),
        WatchdogError::IntervalTooLong
    );
    detector
        .spawn_watchdog(steadfast_pool::MAX_WATCHDOG_INTERVAL)
        .unwrap()
        .abort();
    let watchdog = detector.spawn_watchdog(Duration::from_secs(2)).unwrap();
    // The README's one-liner drops the detector at once: the watchdog must
    // keep scanning regardless.
    drop(detector);
    let host = stats.host(KEY);
    host.connection_opened(ConnectionId(1));
    take(&*host, 1);
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert_eq!(stats.host_snapshot(KEY).unwrap().held_too_long_total, 1);
    // Still alive and still scanning: a second leak is found too.
    host.connection_opened(ConnectionId(2));
    take(&*host, 2);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!watchdog.is_finished());
    assert_eq!(stats.host_snapshot(KEY).unwrap().held_too_long_total, 2);

    // It holds the stats weakly: dropping the last handle (a host's
    // handle is not one) ends it at the next tick.
    let weak = std::sync::Arc::downgrade(&stats);
    drop(stats);
    assert!(
        weak.upgrade().is_none(),
        "the watchdog kept the stats alive"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(watchdog.is_finished());
    watchdog.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_and_its_detector_report_a_finding_once_between_them() {
    let stats = PoolStats::new();
    let detector = LeakDetector::builder(stats.clone())
        .threshold(Duration::from_secs(10))
        .build()
        .unwrap();
    let watchdog = detector.spawn_watchdog(Duration::from_secs(1)).unwrap();
    let host = stats.host(KEY);
    host.connection_opened(ConnectionId(1));
    take(&*host, 1);
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    // The watchdog saw it first; the detector lists it as already known.
    let report = detector.check(Instant::now());
    assert_eq!(report.held.len(), 1);
    assert!(!report.held[0].newly_detected);
    assert_eq!(stats.host_snapshot(KEY).unwrap().held_too_long_total, 1);
    watchdog.abort();
}

#[test]
fn the_watchdog_needs_a_runtime() {
    let detector = LeakDetector::new(PoolStats::new());
    assert_eq!(
        detector.spawn_watchdog(Duration::from_secs(1)).unwrap_err(),
        WatchdogError::NoRuntime
    );
}

/// A transport that reports the moment of the acquisition
/// (`acquire_finished_at`) has the hold counted from that moment, not from
/// when the observer heard of it.
#[tokio::test(start_paused = true)]
async fn the_moment_a_transport_reports_is_when_the_hold_started() {
    let stats = PoolStats::new();
    let detector = LeakDetector::builder(stats.clone())
        .threshold(Duration::from_secs(30))
        .build()
        .unwrap();
    let host = stats.host(KEY);
    host.connection_opened(ConnectionId(1));
    let taken = Instant::now();
    advance(Duration::from_secs(5)).await;
    host.acquire_started();
    host.acquire_finished_at(taken, Duration::ZERO, Acquired::Reused(ConnectionId(1)));
    advance(Duration::from_secs(26)).await;
    let report = detector.check(Instant::now());
    assert_eq!(report.held.len(), 1, "{report}");
    assert_eq!(report.held[0].age, Duration::from_secs(31));
}
