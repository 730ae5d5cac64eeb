//! PoolStats driven with synthetic events, as any transport would drive it.

use std::sync::Arc;
use std::time::Duration;

use steadfast_pool::{
    Acquired, ConnectionId, HostObserver, OVERFLOW_HOST, PoolObserver, PoolStats,
};

fn request(host: &dyn HostObserver, id: u64, wait: Duration, held: Duration, reused: bool) {
    host.acquire_started();
    let id = ConnectionId(id);
    let result = if reused {
        Acquired::Reused(id)
    } else {
        Acquired::New(id)
    };
    host.acquire_finished(wait, result);
    host.connection_released(id, held);
}

#[tokio::test(start_paused = true)]
async fn totals_add_up_over_hosts() {
    let stats = PoolStats::builder().name("api").build().unwrap();
    let a = stats.host("https://a.example:443");
    let b = stats.host("https://b.example:443");
    a.connection_opened(ConnectionId(1));
    b.connection_opened(ConnectionId(2));
    b.connection_opened(ConnectionId(3));
    request(
        &*a,
        1,
        Duration::from_millis(5),
        Duration::from_millis(20),
        false,
    );
    for _ in 0..9 {
        request(
            &*a,
            1,
            Duration::from_micros(2),
            Duration::from_millis(20),
            true,
        );
    }
    request(
        &*b,
        2,
        Duration::from_millis(7),
        Duration::from_millis(30),
        false,
    );
    b.acquire_started(); // still waiting
    b.acquire_started();
    b.acquire_finished(Duration::from_secs(1), Acquired::TimedOut);
    b.connection_closed(ConnectionId(3), Duration::from_secs(90));

    let snap = stats.snapshot();
    assert_eq!(snap.name.as_deref(), Some("api"));
    assert_eq!(snap.hosts.len(), 2);
    let a = snap.host("https://a.example:443").unwrap();
    assert_eq!(
        (a.server_address(), a.server_port(), a.url_scheme()),
        ("a.example", Some(443), Some("https"))
    );
    assert_eq!((a.open, a.idle, a.in_use, a.waiting), (1, 1, 0, 0));
    assert_eq!((a.reused_total, a.new_total), (9, 1));
    assert!((a.reuse_ratio() - 0.9).abs() < 1e-9);
    assert!((a.mean_requests_per_connection() - 10.0).abs() < 1e-9);
    let b = snap.host("https://b.example:443").unwrap();
    assert_eq!(
        (b.open, b.waiting, b.timed_out_total, b.closed_total),
        (1, 1, 1, 1)
    );
    assert_eq!(b.peak_open, 2);
    // The closed connection served no request.
    assert_eq!(b.requests_per_connection.count, 1);
    assert_eq!(b.requests_per_connection.max, 0);

    let t = &snap.total;
    assert_eq!(t.host, "*");
    assert_eq!((t.open, t.idle, t.in_use, t.waiting), (2, 2, 0, 1));
    assert_eq!(t.opened_total, 3);
    assert_eq!(t.acquired_total(), 11);
    assert_eq!(t.acquire_wait.count, 12);
    assert_eq!(t.new_connection_wait.count, 2);
    assert_eq!(t.hold_time.count, 11);
    // Nine of eleven acquires waited ~2 µs: the median says so.
    assert!(t.acquire_wait.p50 < Duration::from_micros(3));
    assert!(t.acquire_wait.max >= Duration::from_secs(1));
    assert!(t.connection_lifetime.p50 >= Duration::from_secs(67)); // 90 s within 25 %
}

#[test]
fn the_same_key_gets_the_same_host_and_unknown_keys_no_snapshot() {
    let stats = PoolStats::new();
    let first = stats.host_stats("http://x:80");
    let again = stats.host_stats("http://x:80");
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(first.key(), "http://x:80");
    assert!(stats.host_snapshot("http://y:80").is_none());
}

#[test]
fn hosts_beyond_the_cap_share_the_overflow_entry() {
    let stats = PoolStats::builder().max_hosts(2).build().unwrap();
    for i in 0..5 {
        let host = stats.host(&format!("http://h{i}:80"));
        host.connection_opened(ConnectionId(i));
    }
    let snap = stats.snapshot();
    let keys: Vec<&str> = snap.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(keys, ["(other)", "http://h0:80", "http://h1:80"]);
    assert_eq!(snap.host(OVERFLOW_HOST).unwrap().open, 3);
    assert_eq!(snap.total.open, 5);
    // A known host keeps its own entry after the cap is reached.
    assert!(Arc::ptr_eq(
        &stats.host_stats("http://h1:80"),
        &stats.host_stats("http://h1:80")
    ));
    assert_eq!(stats.host_stats("http://h1:80").key(), "http://h1:80");
}

#[test]
fn without_tracking_counters_still_work_and_requests_per_connection_stays_empty() {
    let stats = PoolStats::builder()
        .track_connections(false)
        .build()
        .unwrap();
    let host = stats.host("http://x:80");
    host.connection_opened(ConnectionId(1));
    // No runtime needed: nothing reads the clock.
    request(&*host, 1, Duration::ZERO, Duration::from_millis(1), false);
    request(&*host, 1, Duration::ZERO, Duration::from_millis(1), true);
    host.connection_closed(ConnectionId(1), Duration::from_secs(1));
    let snap = stats.snapshot();
    assert!(!snap.track_connections);
    let h = &snap.hosts[0];
    assert_eq!((h.open, h.acquired_total(), h.released_total), (0, 2, 2));
    assert_eq!(h.requests_per_connection.count, 0);
    assert!((h.mean_requests_per_connection() - 2.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn out_of_protocol_events_never_drive_a_gauge_negative() {
    let stats = PoolStats::new();
    let host = stats.host("http://x:80");
    // Release and close of connections never seen.
    host.connection_released(ConnectionId(9), Duration::from_millis(1));
    host.connection_closed(ConnectionId(8), Duration::from_millis(1));
    host.acquire_finished(Duration::ZERO, Acquired::Cancelled);
    let h = stats.host_snapshot("http://x:80").unwrap();
    assert_eq!((h.open, h.idle, h.in_use, h.waiting), (0, 0, 0, 0));
    assert_eq!((h.closed_total, h.released_total), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn snapshot_prints_and_reads_well() {
    let stats = PoolStats::builder().name("api").build().unwrap();
    let host = stats.host("https://api.example.com:443");
    host.connection_opened(ConnectionId(1));
    request(
        &*host,
        1,
        Duration::from_micros(1500),
        Duration::from_millis(20),
        false,
    );
    host.acquire_started();
    host.acquire_finished(Duration::from_micros(3), Acquired::Reused(ConnectionId(1)));
    let text = stats.snapshot().to_string();
    assert!(
        text.starts_with("pool \"api\"\n*: open 1 (idle 0, in use 1), waiting 0"),
        "{text}"
    );
    assert!(
        text.contains("https://api.example.com:443: open 1"),
        "{text}"
    );
    assert!(text.contains("acquired 2 (50.0% reused)"), "{text}");
    assert!(text.contains("2.0 requests/connection"), "{text}");
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn snapshot_round_trips_through_json() {
    let stats = PoolStats::new();
    let host = stats.host("http://x:80");
    host.connection_opened(ConnectionId(1));
    request(
        &*host,
        1,
        Duration::from_millis(3),
        Duration::from_millis(9),
        false,
    );
    let snap = stats.snapshot();
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["total"]["opened_total"], 1);
    assert_eq!(json["hosts"][0]["host"], "http://x:80");
    let back: steadfast_pool::PoolSnapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, snap);
}

/// Many threads, each driving its own connections through full request
/// cycles while another thread takes snapshots: every snapshot is sane and
/// the final one is exact.
#[test]
fn concurrent_events_and_snapshots_stay_consistent() {
    const THREADS: u64 = 4;
    const REQUESTS: u64 = 20_000;
    let stats = PoolStats::builder()
        .track_connections(false)
        .build()
        .unwrap();
    let host = stats.host("http://x:80");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stats, done) = (stats.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last_opened = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let s = stats.snapshot().total;
                assert!(s.idle <= s.open);
                assert!(s.open <= s.opened_total);
                assert!(s.in_use <= s.acquired_total());
                assert!(s.released_total <= s.acquired_total(), "{s:?}");
                assert!(s.closed_total <= s.opened_total, "{s:?}");
                assert!(s.opened_total >= last_opened);
                last_opened = s.opened_total;
            }
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let host = host.clone();
            std::thread::spawn(move || {
                for i in 0..REQUESTS {
                    let id = t * REQUESTS + i / 100;
                    if i % 100 == 0 {
                        host.connection_opened(ConnectionId(id));
                    }
                    request(&*host, id, Duration::ZERO, Duration::ZERO, i % 100 != 0);
                    if i % 100 == 99 {
                        host.connection_closed(ConnectionId(id), Duration::from_secs(1));
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    reader.join().unwrap();
    let s = stats.snapshot().total;
    assert_eq!((s.open, s.in_use, s.waiting), (0, 0, 0));
    assert_eq!(s.acquired_total(), THREADS * REQUESTS);
    assert_eq!(s.opened_total, THREADS * REQUESTS / 100);
    assert_eq!(s.reused_total, THREADS * REQUESTS * 99 / 100);
}

#[test]
fn multiplexed_streams_count_as_requests_in_flight_on_one_busy_connection() {
    for track in [true, false] {
        let stats = PoolStats::builder()
            .track_connections(track)
            .build()
            .unwrap();
        let h2 = stats.host("http://h2.test:80");
        let h1 = stats.host("http://h1.test:80");
        h2.connection_opened(ConnectionId(1));
        h2.connection_opened(ConnectionId(2));
        for _ in 0..5 {
            h2.acquire_started();
            h2.acquire_finished(Duration::ZERO, Acquired::Reused(ConnectionId(1)));
        }
        h1.connection_opened(ConnectionId(3));
        h1.connection_opened(ConnectionId(4));
        h1.acquire_started();
        h1.acquire_finished(Duration::ZERO, Acquired::Reused(ConnectionId(3)));

        let snap = stats.snapshot();
        let gauges = |h: &steadfast_pool::HostSnapshot| (h.open, h.idle, h.in_use, h.in_flight);
        let h2_snap = snap.host("http://h2.test:80").unwrap();
        if track {
            // Exact: one of two connections busy, five streams on it.
            assert_eq!(gauges(h2_snap), (2, 1, 1, 5));
            assert_eq!(gauges(&snap.total), (4, 2, 2, 6));
            assert!(
                h2_snap.to_string().contains("5 requests in flight"),
                "{h2_snap}"
            );
        } else {
            // Estimated as one connection per request, clamped to `open`.
            assert_eq!(gauges(h2_snap), (2, 0, 2, 5));
            assert_eq!(gauges(&snap.total), (4, 1, 3, 6));
        }
        assert_eq!(
            gauges(snap.host("http://h1.test:80").unwrap()),
            (2, 1, 1, 1)
        );
        for h in snap.hosts.iter().chain([&snap.total]) {
            assert_eq!(h.idle + h.in_use, h.open, "{h}");
        }

        // Closed under its streams: no longer busy, the streams still count
        // until released, and nothing goes below zero.
        h2.connection_closed(ConnectionId(1), Duration::from_secs(1));
        let h = stats.host_snapshot("http://h2.test:80").unwrap();
        assert_eq!(gauges(&h), (1, 1 - u64::from(!track), u64::from(!track), 5));
        for _ in 0..5 {
            h2.connection_released(ConnectionId(1), Duration::from_millis(1));
        }
        let h = stats.host_snapshot("http://h2.test:80").unwrap();
        assert_eq!(gauges(&h), (1, 1, 0, 0));
    }
}
