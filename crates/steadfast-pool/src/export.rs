//! Publishing snapshots through the [`metrics`] facade under OpenTelemetry
//! names (feature `metrics`).
//!
//! Nothing is recorded on the request path: you call
//! [`MetricsExporter::export`] with a snapshot when you want the metrics
//! updated (every scrape, or every few seconds from a task you own):
//!
//! ```
//! # async fn demo() {
//! use std::time::Duration;
//! use steadfast_pool::{MetricsExporter, PoolStats};
//!
//! let stats = PoolStats::new();
//! // ... hand `stats.clone()` to the transport ...
//! MetricsExporter::describe();
//! let exporter = MetricsExporter::new();
//! let task = tokio::spawn(async move {
//!     let mut every = tokio::time::interval(Duration::from_secs(10));
//!     loop {
//!         every.tick().await;
//!         exporter.export(&stats.snapshot());
//!     }
//! });
//! # task.abort();
//! # }
//! ```
//!
//! | metric | kind | unit | labels |
//! |---|---|---|---|
//! | `http.client.open_connections` | gauge | connections | `http.connection.state` = `active` \| `idle` |
//! | `http.client.active_requests` | gauge | requests | (in use + waiting) |
//! | `http.client.connection.duration` | histogram | s | lifetime of closed connections |
//! | `http.client.request.time_in_queue` | histogram | s | wait for a connection (the .NET name) |
//! | `steadfast.pool.hold_time` | histogram | s | time a request held its connection |
//! | `steadfast.pool.requests_per_connection` | histogram | requests | per closed connection |
//! | `steadfast.pool.waiting` | gauge | requests | waiting for a connection |
//! | `steadfast.pool.connections.opened` / `.closed` | counter | connections | |
//! | `steadfast.pool.acquires` | counter | acquires | `outcome` = `reused` \| `new` \| `timed_out` \| `failed` \| `cancelled` |
//! | `steadfast.pool.leaks` | counter | findings | `kind` = `held_too_long` \| `stuck` |
//!
//! Every metric also carries `server.address`, `server.port` and
//! `url.scheme` split from the pool key, and `pool.name` when the pool has
//! a name. Counters are published as absolute values.
//!
//! Histograms are published as the change in each bucket since the last
//! export, each observation standing at its bucket's midpoint (within 12.5 %
//! of its true value for durations; for requests per connection, whose
//! buckets are powers of two, within a third). Use one exporter per [`PoolStats`](crate::PoolStats).
//!
//! `http.client.request.duration` is not published here: the pool sees the
//! wait for a connection and the time it was held, not the request. The
//! request-level layer that owns the span owns that metric.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{Label, Unit};

use crate::histogram::{HistogramSnapshot, HistogramValue, midpoint};
use crate::snapshot::{HostSnapshot, PoolSnapshot};

/// Metric names, as published.
pub mod names {
    /// Gauge: open connections, by `http.connection.state`.
    pub const OPEN_CONNECTIONS: &str = "http.client.open_connections";
    /// Gauge: requests in use or waiting.
    pub const ACTIVE_REQUESTS: &str = "http.client.active_requests";
    /// Histogram (s): lifetime of closed connections.
    pub const CONNECTION_DURATION: &str = "http.client.connection.duration";
    /// Histogram (s): wait for a connection.
    pub const TIME_IN_QUEUE: &str = "http.client.request.time_in_queue";
    /// Histogram (s): time a request held its connection.
    pub const HOLD_TIME: &str = "steadfast.pool.hold_time";
    /// Histogram: requests served per closed connection.
    pub const REQUESTS_PER_CONNECTION: &str = "steadfast.pool.requests_per_connection";
    /// Gauge: requests waiting for a connection.
    pub const WAITING: &str = "steadfast.pool.waiting";
    /// Counter: connections opened.
    pub const OPENED: &str = "steadfast.pool.connections.opened";
    /// Counter: connections closed.
    pub const CLOSED: &str = "steadfast.pool.connections.closed";
    /// Counter: acquires, by `outcome`.
    pub const ACQUIRES: &str = "steadfast.pool.acquires";
    /// Counter: leak findings, by `kind`.
    pub const LEAKS: &str = "steadfast.pool.leaks";
}

/// Publishes [`PoolSnapshot`]s to the installed `metrics` recorder.
#[derive(Debug, Default)]
pub struct MetricsExporter {
    published: Mutex<HashMap<SeriesKey, PublishedBuckets>>,
}

/// One histogram series: (pool name, host, metric name).
type SeriesKey = (Option<String>, String, &'static str);
/// Bucket counts already published, by the bucket's lower bound.
type PublishedBuckets = HashMap<u64, u64>;

impl MetricsExporter {
    /// An exporter that has published nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers units and descriptions with the installed recorder. Call
    /// once, after installing it.
    pub fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        use names::{
            ACQUIRES, ACTIVE_REQUESTS, CLOSED, CONNECTION_DURATION, HOLD_TIME, LEAKS,
            OPEN_CONNECTIONS, OPENED, REQUESTS_PER_CONNECTION, TIME_IN_QUEUE, WAITING,
        };
        describe_gauge!(
            OPEN_CONNECTIONS,
            Unit::Count,
            "Open HTTP connections, by state (active or idle)."
        );
        describe_gauge!(
            ACTIVE_REQUESTS,
            Unit::Count,
            "Requests holding or waiting for a pooled connection."
        );
        describe_histogram!(
            CONNECTION_DURATION,
            Unit::Seconds,
            "Lifetime of closed HTTP connections."
        );
        describe_histogram!(
            TIME_IN_QUEUE,
            Unit::Seconds,
            "Time requests waited for a pooled connection."
        );
        describe_histogram!(
            HOLD_TIME,
            Unit::Seconds,
            "Time requests held their connection."
        );
        describe_histogram!(
            REQUESTS_PER_CONNECTION,
            Unit::Count,
            "Requests served by each closed connection."
        );
        describe_gauge!(
            WAITING,
            Unit::Count,
            "Requests waiting for a pooled connection."
        );
        describe_counter!(OPENED, Unit::Count, "Connections opened.");
        describe_counter!(CLOSED, Unit::Count, "Connections closed.");
        describe_counter!(ACQUIRES, Unit::Count, "Connection acquires, by outcome.");
        describe_counter!(LEAKS, Unit::Count, "Leak detector findings, by kind.");
    }

    /// Publishes every host of `snapshot` (not the total, which a metrics
    /// backend sums itself).
    pub fn export(&self, snapshot: &PoolSnapshot) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for host in &snapshot.hosts {
            let labels = labels(snapshot.name.as_deref(), host);
            export_host(host, &labels);
            let mut histogram =
                |name: &'static str, buckets: Vec<(u64, u64, u64)>, seconds: bool| {
                    let key = (snapshot.name.clone(), host.host.clone(), name);
                    let seen = published.entry(key).or_default();
                    let handle = metrics::histogram!(name, labels.iter());
                    for (lower, upper, count) in buckets {
                        let before = seen.insert(lower, count).unwrap_or(0);
                        let delta = count.saturating_sub(before);
                        if delta == 0 {
                            continue;
                        }
                        let value = midpoint(lower, upper);
                        let value = if seconds {
                            Duration::from_nanos(value).as_secs_f64()
                        } else {
                            value as f64
                        };
                        handle.record_many(value, usize::try_from(delta).unwrap_or(usize::MAX));
                    }
                };
            histogram(
                names::CONNECTION_DURATION,
                raw(&host.connection_lifetime),
                true,
            );
            histogram(names::TIME_IN_QUEUE, raw(&host.acquire_wait), true);
            histogram(names::HOLD_TIME, raw(&host.hold_time), true);
            histogram(
                names::REQUESTS_PER_CONNECTION,
                raw(&host.requests_per_connection),
                false,
            );
        }
    }
}

fn raw<T: HistogramValue>(h: &HistogramSnapshot<T>) -> Vec<(u64, u64, u64)> {
    h.buckets
        .iter()
        .map(|b| (b.lower.to_raw(), b.upper.to_raw(), b.count))
        .collect()
}

fn labels(pool: Option<&str>, host: &HostSnapshot) -> Vec<Label> {
    let mut labels = vec![Label::new(
        "server.address",
        host.server_address().to_owned(),
    )];
    if let Some(port) = host.server_port() {
        labels.push(Label::new("server.port", port.to_string()));
    }
    if let Some(scheme) = host.url_scheme() {
        labels.push(Label::new("url.scheme", scheme.to_owned()));
    }
    if let Some(pool) = pool {
        labels.push(Label::new("pool.name", pool.to_owned()));
    }
    labels
}

fn with(labels: &[Label], key: &'static str, value: &'static str) -> Vec<Label> {
    let mut labels = labels.to_vec();
    labels.push(Label::from_static_parts(key, value));
    labels
}

fn export_host(host: &HostSnapshot, labels: &[Label]) {
    use metrics::{counter, gauge};
    use names::{ACQUIRES, ACTIVE_REQUESTS, CLOSED, LEAKS, OPEN_CONNECTIONS, OPENED, WAITING};
    let state = "http.connection.state";
    gauge!(OPEN_CONNECTIONS, with(labels, state, "active")).set(host.in_use as f64);
    gauge!(OPEN_CONNECTIONS, with(labels, state, "idle")).set(host.idle as f64);
    gauge!(ACTIVE_REQUESTS, labels.iter()).set((host.in_flight + host.waiting) as f64);
    gauge!(WAITING, labels.iter()).set(host.waiting as f64);
    counter!(OPENED, labels.iter()).absolute(host.opened_total);
    counter!(CLOSED, labels.iter()).absolute(host.closed_total);
    for (outcome, value) in [
        ("reused", host.reused_total),
        ("new", host.new_total),
        ("timed_out", host.timed_out_total),
        ("failed", host.failed_total),
        ("cancelled", host.cancelled_total),
    ] {
        counter!(ACQUIRES, with(labels, "outcome", outcome)).absolute(value);
    }
    counter!(LEAKS, with(labels, "kind", "held_too_long")).absolute(host.held_too_long_total);
    counter!(LEAKS, with(labels, "kind", "stuck")).absolute(host.stuck_total);
}
