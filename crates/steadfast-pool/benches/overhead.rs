//! The cost a request pays for pool metrics: the per-request event sequence
//! (`acquire_started`, `acquire_finished(Reused)`, `connection_released`)
//! through `Arc<dyn HostObserver>`, as a transport calls it, against the
//! no-op observer, plus the clock read that connection tracking adds, for
//! scale. One group, so the differences come from one run.
//!
//! `cargo bench -p steadfast-pool --bench overhead`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use steadfast_core::pool::{Acquired, ConnectionId, HostObserver, NoopPoolObserver, PoolObserver};
use steadfast_pool::PoolStats;

const KEY: &str = "http://127.0.0.1:8080";
/// Requests rotate over this many pooled connections, as in a warm pool.
const CONNECTIONS: u64 = 64;

fn request(host: &dyn HostObserver, id: ConnectionId) {
    host.acquire_started();
    host.acquire_finished(black_box(Duration::from_micros(3)), Acquired::Reused(id));
    host.connection_released(id, black_box(Duration::from_micros(250)));
}

/// The same, as steadfast-hyper reports it: with the moment the wait ended,
/// which the transport read anyway.
fn request_at(host: &dyn HostObserver, id: ConnectionId, at: tokio::time::Instant) {
    host.acquire_started();
    host.acquire_finished_at(
        black_box(at),
        black_box(Duration::from_micros(3)),
        Acquired::Reused(id),
    );
    host.connection_released(id, black_box(Duration::from_micros(250)));
}

fn observer(name: &str, pool: &dyn PoolObserver) -> (String, Arc<dyn HostObserver>) {
    let host = pool.host(KEY);
    for id in 0..CONNECTIONS {
        host.connection_opened(ConnectionId(id));
    }
    (name.to_owned(), host)
}

fn overhead(c: &mut Criterion) {
    // Tracking reads `tokio::time::Instant::now()`, which wants a runtime
    // context for its (pausable) clock; a transport always has one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    let counters_only = PoolStats::builder()
        .track_connections(false)
        .build()
        .unwrap();
    let tracking = PoolStats::new();
    let observers = [
        observer("noop", &NoopPoolObserver),
        observer("stats (counters only)", &*counters_only),
        observer("stats (with connection tracking)", &*tracking),
    ];

    let mut group = c.benchmark_group("pool_observer_per_request");
    for (name, host) in &observers {
        let mut next = 0;
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                next = (next + 1) % CONNECTIONS;
                request(&**host, ConnectionId(next));
            });
        });
    }
    // Tracking, given the moment by the transport (`acquire_finished_at`).
    let (_, host) = &observers[2];
    let at = tokio::time::Instant::now();
    let mut next = 0;
    group.bench_function("stats (with connection tracking, moment given)", |b| {
        b.iter(|| {
            next = (next + 1) % CONNECTIONS;
            request_at(&**host, ConnectionId(next), at);
        });
    });
    // For scale: the clock read that connection tracking adds.
    group.bench_function("reference: tokio::time::Instant::now()", |b| {
        b.iter(tokio::time::Instant::now);
    });
    group.bench_function("reference: std::time::Instant::now()", |b| {
        b.iter(std::time::Instant::now);
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
