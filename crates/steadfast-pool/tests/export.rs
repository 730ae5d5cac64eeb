//! The `metrics` exporter, against a recorder that keeps what it is given.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use steadfast_pool::{Acquired, ConnectionId, MetricsExporter, PoolObserver, PoolStats};

/// Every series as `name{k=v,...}`, labels sorted.
#[derive(Default)]
struct Memory {
    values: Mutex<BTreeMap<String, f64>>,
    histograms: Mutex<BTreeMap<String, Vec<f64>>>,
}

struct Series(Arc<Memory>, String);

impl CounterFn for Series {
    fn increment(&self, value: u64) {
        *self
            .0
            .values
            .lock()
            .unwrap()
            .entry(self.1.clone())
            .or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.0
            .values
            .lock()
            .unwrap()
            .insert(self.1.clone(), value as f64);
    }
}

impl GaugeFn for Series {
    fn increment(&self, value: f64) {
        *self
            .0
            .values
            .lock()
            .unwrap()
            .entry(self.1.clone())
            .or_default() += value;
    }
    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }
    fn set(&self, value: f64) {
        self.0.values.lock().unwrap().insert(self.1.clone(), value);
    }
}

impl HistogramFn for Series {
    fn record(&self, value: f64) {
        self.0
            .histograms
            .lock()
            .unwrap()
            .entry(self.1.clone())
            .or_default()
            .push(value);
    }
}

struct TestRecorder(Arc<Memory>);

impl TestRecorder {
    fn series(&self, key: &Key) -> Arc<Series> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        Arc::new(Series(
            self.0.clone(),
            format!("{}{{{}}}", key.name(), labels.join(",")),
        ))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.series(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.series(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.series(key))
    }
}

const LABELS: &str =
    "pool.name=api,server.address=api.example.com,server.port=8443,url.scheme=https";

#[tokio::test(start_paused = true)]
async fn publishes_otel_names_and_histogram_deltas() {
    let memory = Arc::new(Memory::default());
    let recorder = TestRecorder(memory.clone());
    let stats = PoolStats::builder().name("api").build().unwrap();
    let host = stats.host("https://api.example.com:8443");
    for id in 1..=3 {
        host.connection_opened(ConnectionId(id));
    }
    for id in 1..=2 {
        host.acquire_started();
        host.acquire_finished(Duration::from_millis(4), Acquired::New(ConnectionId(id)));
    }
    host.connection_released(ConnectionId(2), Duration::from_millis(20));
    host.acquire_started();
    host.connection_closed(ConnectionId(3), Duration::from_secs(2));

    let exporter = MetricsExporter::new();
    metrics::with_local_recorder(&recorder, || {
        MetricsExporter::describe();
        exporter.export(&stats.snapshot());
    });

    let get = |name: &str, extra: &str| value(&memory, name, extra);
    // Two open: one busy, one idle; one request in use and one waiting.
    assert_eq!(
        get(
            "http.client.open_connections",
            "http.connection.state=active"
        ),
        1
    );
    assert_eq!(
        get("http.client.open_connections", "http.connection.state=idle"),
        1
    );
    assert_eq!(get("http.client.active_requests", ""), 2);
    assert_eq!(get("steadfast.pool.waiting", ""), 1);
    assert_eq!(get("steadfast.pool.connections.opened", ""), 3);
    assert_eq!(get("steadfast.pool.connections.closed", ""), 1);
    assert_eq!(get("steadfast.pool.acquires", "outcome=new"), 2);
    assert_eq!(get("steadfast.pool.acquires", "outcome=reused"), 0);
    assert_eq!(get("steadfast.pool.leaks", "kind=stuck"), 0);

    let histogram = |name: &str| {
        memory
            .histograms
            .lock()
            .unwrap()
            .get(&format!("{name}{{{LABELS}}}"))
            .cloned()
            .unwrap_or_default()
    };
    let lifetime = histogram("http.client.connection.duration");
    assert_eq!(lifetime.len(), 1);
    assert!((lifetime[0] - 2.0).abs() / 2.0 < 0.125, "{lifetime:?}");
    let queue = histogram("http.client.request.time_in_queue");
    assert_eq!(queue.len(), 2);
    assert!(
        queue.iter().all(|&s| (s - 0.004).abs() / 0.004 < 0.125),
        "{queue:?}"
    );
    assert_eq!(histogram("steadfast.pool.hold_time").len(), 1);
    assert_eq!(histogram("steadfast.pool.requests_per_connection"), [0.0]);

    // A second export publishes only what is new.
    host.acquire_finished(Duration::from_millis(4), Acquired::Reused(ConnectionId(2)));
    metrics::with_local_recorder(&recorder, || exporter.export(&stats.snapshot()));
    assert_eq!(histogram("http.client.request.time_in_queue").len(), 3);
    assert_eq!(histogram("http.client.connection.duration").len(), 1);
    assert_eq!(
        value(&memory, "steadfast.pool.acquires", "outcome=reused"),
        1
    );
}

/// The value of series `name` with the pool's labels plus `extra`.
fn value(memory: &Memory, name: &str, extra: &str) -> u64 {
    let mut labels: Vec<&str> = LABELS.split(',').collect();
    if !extra.is_empty() {
        labels.push(extra);
    }
    labels.sort_unstable();
    let key = format!("{name}{{{}}}", labels.join(","));
    let values = memory.values.lock().unwrap();
    let v = *values
        .get(&key)
        .unwrap_or_else(|| panic!("no {key} in {values:#?}"));
    assert!(v >= 0.0 && v.fract() == 0.0, "{key} = {v}: a count");
    v as u64
}
