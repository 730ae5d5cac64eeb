//! The live counters: [`PoolStats`] (one per client) hands out a
//! [`HostStats`] per pool key; both observe the transport's pool events.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use steadfast_core::pool::{Acquired, ConnectionId, HostObserver, PoolObserver};
use tokio::time::Instant;

use crate::config::{OVERFLOW_HOST, PoolStatsBuilder, PoolStatsConfig};
use crate::connections::ConnectionTable;
use crate::histogram::{AtomicHistogram, Layout, RawHistogram};
use crate::snapshot::{HostSnapshot, PoolSnapshot};

/// Pool metrics for one client: implements [`PoolObserver`], so a transport
/// feeds it, and [`snapshot`](Self::snapshot) reads it.
///
/// Each pool key gets a [`HostStats`] the first time the transport asks for
/// it (one short write lock per key, ever); after that every event is a
/// handful of atomic adds on that host's counters.
///
/// ```
/// use steadfast_core::pool::{Acquired, ConnectionId, PoolObserver};
/// use std::time::Duration;
///
/// let stats = steadfast_pool::PoolStats::new();
/// let host = stats.host("https://api.example.com:443"); // a transport caches this
/// host.connection_opened(ConnectionId(1));
/// host.acquire_started();
/// host.acquire_finished(Duration::from_micros(40), Acquired::New(ConnectionId(1)));
/// host.connection_released(ConnectionId(1), Duration::from_millis(12));
///
/// let snap = stats.snapshot();
/// assert_eq!((snap.total.open, snap.total.idle, snap.total.in_use), (1, 1, 0));
/// ```
pub struct PoolStats {
    config: PoolStatsConfig,
    hosts: RwLock<BTreeMap<Arc<str>, Arc<HostStats>>>,
}

impl PoolStats {
    /// Pool stats with the default settings, shared: pass
    /// `stats.clone()` to the transport and keep `stats` to read it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::from_config(PoolStatsConfig::default()))
    }

    /// Pool stats with a name, per-connection tracking switched off, or a
    /// different host cap.
    pub fn builder() -> PoolStatsBuilder {
        PoolStatsBuilder::default()
    }

    pub(crate) fn from_config(config: PoolStatsConfig) -> Self {
        Self {
            config,
            hosts: RwLock::new(BTreeMap::new()),
        }
    }

    /// The settings this was built with.
    pub fn config(&self) -> &PoolStatsConfig {
        &self.config
    }

    /// The stats of pool key `key`, created on first use. Beyond
    /// `max_hosts` keys, new keys share the [`OVERFLOW_HOST`] entry.
    ///
    /// This is [`PoolObserver::host`] with the concrete type, for transports
    /// that want static dispatch.
    pub fn host_stats(&self, key: &str) -> Arc<HostStats> {
        if let Some(host) = self.read_hosts().get(key) {
            return host.clone();
        }
        let mut hosts = self.hosts.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = hosts.get(key) {
            return host.clone();
        }
        let tracked = hosts.len() - usize::from(hosts.contains_key(OVERFLOW_HOST));
        let key = if tracked >= self.config.max_hosts {
            OVERFLOW_HOST
        } else {
            key
        };
        hosts
            .entry(Arc::from(key))
            .or_insert_with_key(|key| Arc::new(HostStats::new(key.clone(), &self.config)))
            .clone()
    }

    /// Reads every host and the totals. Allocates (host names, histogram
    /// buckets); meant for logging, printing and exporting, not the request
    /// path.
    pub fn snapshot(&self) -> PoolSnapshot {
        let hosts = self.hosts();
        let mut total = Reading::new();
        let mut snapshots = Vec::with_capacity(hosts.len());
        for host in &hosts {
            let reading = host.read();
            total.merge(&reading);
            snapshots.push(reading.finish(host.key().to_owned()));
        }
        PoolSnapshot {
            name: self.config.name.as_deref().map(str::to_owned),
            track_connections: self.config.track_connections,
            total: total.finish("*".to_owned()),
            hosts: snapshots,
        }
    }

    /// The snapshot of one pool key, if it has been seen.
    pub fn host_snapshot(&self, key: &str) -> Option<HostSnapshot> {
        self.read_hosts().get(key).map(|host| host.snapshot())
    }

    /// Every host seen so far, in key order.
    pub(crate) fn hosts(&self) -> Vec<Arc<HostStats>> {
        self.read_hosts().values().cloned().collect()
    }

    fn read_hosts(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Arc<str>, Arc<HostStats>>> {
        self.hosts.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PoolObserver for PoolStats {
    fn host(&self, key: &str) -> Arc<dyn HostObserver> {
        self.host_stats(key)
    }
}

impl fmt::Debug for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolStats")
            .field("config", &self.config)
            .field("hosts", &self.read_hosts().len())
            .finish()
    }
}

/// The counters of one pool key. Every [`HostObserver`] event is a few
/// atomic adds (plus, with per-connection tracking, one short lock of one
/// shard of the connection table).
///
/// Gauges are derived, never stored: `open = opened − closed`,
/// `in_flight = acquired − released`, `waiting = started − finished`,
/// `in_use` = connections the table finds serving a request when the
/// snapshot is read (with tracking; else `in_flight`), clamped to `open`, and
/// `idle = open − in_use`. So no event can leave a gauge drifting, a
/// snapshot never reads a negative value, and `open = idle + in_use` holds
/// in every snapshot, even one taken while events race.
pub struct HostStats {
    key: Arc<str>,
    pool_name: Option<Arc<str>>,

    // Request path: three atomic adds per request (`started`, one bucket of
    // `wait_reused`, one bucket of `hold_time`). Histogram counts double as
    // totals so no separate counter is needed. Snapshots read `started`
    // after the outcome counts (bumped with Release): see `read`.
    started: AtomicU64,
    /// Waits that ended with a reused connection; its count is `reused`.
    wait_reused: AtomicHistogram,
    /// Waits that ended with a new connection; its count is `new`.
    wait_new: AtomicHistogram,
    /// Waits that ended without a connection, counted by outcome below.
    wait_other: AtomicHistogram,
    timed_out: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    /// Its count is the number of releases.
    hold_time: AtomicHistogram,

    // Connection path.
    opened: AtomicU64,
    closed: AtomicU64,
    peak_open: AtomicU64,
    lifetime: AtomicHistogram,
    requests_per_connection: AtomicHistogram,

    // Leak detector.
    pub(crate) held_too_long: AtomicU64,
    pub(crate) stuck: AtomicU64,

    connections: Option<ConnectionTable>,
}

impl HostStats {
    fn new(key: Arc<str>, config: &PoolStatsConfig) -> Self {
        Self {
            key,
            pool_name: config.name.clone(),
            started: AtomicU64::new(0),
            wait_reused: AtomicHistogram::new(Layout::DURATION),
            wait_new: AtomicHistogram::new(Layout::DURATION),
            wait_other: AtomicHistogram::new(Layout::DURATION),
            timed_out: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            hold_time: AtomicHistogram::new(Layout::DURATION),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            lifetime: AtomicHistogram::new(Layout::DURATION),
            requests_per_connection: AtomicHistogram::new(Layout::COUNT),
            held_too_long: AtomicU64::new(0),
            stuck: AtomicU64::new(0),
            connections: config.track_connections.then(ConnectionTable::new),
        }
    }

    /// The pool key (`scheme://host:port`, or [`OVERFLOW_HOST`]).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The name of the pool this host belongs to, if it has one.
    pub fn pool_name(&self) -> Option<&str> {
        self.pool_name.as_deref()
    }

    /// Reads this host's counters.
    pub fn snapshot(&self) -> HostSnapshot {
        self.read().finish(self.key.to_string())
    }

    pub(crate) fn key_arc(&self) -> &Arc<str> {
        &self.key
    }

    pub(crate) fn connections(&self) -> Option<&ConnectionTable> {
        self.connections.as_ref()
    }

    /// Acquires started so far (the leak detector's activity signal).
    pub(crate) fn acquires_started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    /// Requests holding a connection now.
    pub(crate) fn holding(&self) -> (u64, u64) {
        let reading = self.read();
        let acquired = reading.acquired();
        (acquired.saturating_sub(reading.hold_time.count()), acquired)
    }

    /// Reads the counters so that every derived gauge is consistent: each
    /// "end" counter is loaded (Acquire) before the matching "start"
    /// counter, so a start is always seen when its end is.
    fn read(&self) -> Reading {
        let load = |c: &AtomicU64| c.load(Ordering::Acquire);
        let mut r = Reading::new();
        // Counted, not kept: two adds per request saved for a scan per snapshot.
        r.busy = self.connections.as_ref().map(ConnectionTable::busy);
        r.closed = load(&self.closed);
        self.lifetime.add_to(&mut r.lifetime);
        self.requests_per_connection
            .add_to(&mut r.requests_per_connection);
        self.hold_time.add_to(&mut r.hold_time);
        self.wait_reused.add_to(&mut r.wait_reused);
        self.wait_new.add_to(&mut r.wait_new);
        r.timed_out = load(&self.timed_out);
        r.failed = load(&self.failed);
        r.cancelled = load(&self.cancelled);
        self.wait_other.add_to(&mut r.wait_other);
        r.started = load(&self.started);
        r.opened = load(&self.opened);
        r.peak_open = load(&self.peak_open);
        r.held_too_long = load(&self.held_too_long);
        r.stuck = load(&self.stuck);
        r
    }

    #[inline]
    fn track_acquired(&self, id: ConnectionId, now: impl FnOnce() -> Instant) {
        if let Some(table) = &self.connections {
            table.acquired(id, now());
        }
    }

    /// `acquire_finished`, with `now` read only if tracking stamps the
    /// acquisition.
    #[inline]
    fn finish_acquire(&self, wait: Duration, result: Acquired, now: impl FnOnce() -> Instant) {
        // A success is one histogram add: the histogram's count is the total.
        let (histogram, id) = match result {
            Acquired::Reused(id) => (&self.wait_reused, id),
            Acquired::New(id) => (&self.wait_new, id),
            failed => {
                self.wait_other.record_duration(wait);
                let counter = match failed {
                    Acquired::TimedOut => &self.timed_out,
                    Acquired::Failed => &self.failed,
                    // `Acquired` is non-exhaustive: a future outcome counts
                    // as a cancelled wait, which keeps `waiting` right.
                    _ => &self.cancelled,
                };
                counter.fetch_add(1, Ordering::Release);
                return;
            }
        };
        self.track_acquired(id, now);
        histogram.record_duration(wait);
    }
}

impl HostObserver for HostStats {
    #[inline]
    fn acquire_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    fn acquire_finished(&self, wait: Duration, result: Acquired) {
        self.finish_acquire(wait, result, Instant::now);
    }

    #[inline]
    fn acquire_finished_at(&self, at: Instant, wait: Duration, result: Acquired) {
        self.finish_acquire(wait, result, || at);
    }

    #[inline]
    fn connection_released(&self, id: ConnectionId, held: Duration) {
        if let Some(table) = &self.connections {
            table.released(id, held, Instant::now);
        }
        self.hold_time.record_duration(held);
    }

    fn connection_opened(&self, id: ConnectionId) {
        if let Some(table) = &self.connections {
            table.opened(id);
        }
        let opened = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
        let open = opened.saturating_sub(self.closed.load(Ordering::Relaxed));
        self.peak_open.fetch_max(open, Ordering::Relaxed);
    }

    fn connection_closed(&self, id: ConnectionId, lifetime: Duration) {
        if let Some(requests) = self.connections.as_ref().and_then(|t| t.closed(id)) {
            self.requests_per_connection.record(requests);
        }
        self.lifetime.record_duration(lifetime);
        self.closed.fetch_add(1, Ordering::Release);
    }
}

impl fmt::Debug for HostStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostStats")
            .field("key", &self.key)
            .field("pool_name", &self.pool_name)
            .field("tracking", &self.connections.is_some())
            .finish_non_exhaustive()
    }
}

/// Plain counters read from one host, or summed over several.
#[derive(Debug, Clone)]
struct Reading {
    /// Busy connections, with tracking.
    busy: Option<u64>,
    started: u64,
    timed_out: u64,
    failed: u64,
    cancelled: u64,
    opened: u64,
    closed: u64,
    peak_open: u64,
    held_too_long: u64,
    stuck: u64,
    wait_reused: RawHistogram,
    wait_new: RawHistogram,
    wait_other: RawHistogram,
    hold_time: RawHistogram,
    lifetime: RawHistogram,
    requests_per_connection: RawHistogram,
}

impl Reading {
    fn new() -> Self {
        Self {
            busy: Some(0),
            started: 0,
            timed_out: 0,
            failed: 0,
            cancelled: 0,
            opened: 0,
            closed: 0,
            peak_open: 0,
            held_too_long: 0,
            stuck: 0,
            wait_reused: RawHistogram::new(Layout::DURATION),
            wait_new: RawHistogram::new(Layout::DURATION),
            wait_other: RawHistogram::new(Layout::DURATION),
            hold_time: RawHistogram::new(Layout::DURATION),
            lifetime: RawHistogram::new(Layout::DURATION),
            requests_per_connection: RawHistogram::new(Layout::COUNT),
        }
    }

    fn acquired(&self) -> u64 {
        self.wait_reused.count() + self.wait_new.count()
    }

    /// Connections serving at least one request. Without tracking, one per
    /// request in flight: exact on HTTP/1, an overcount on HTTP/2 that the
    /// clamp to `open` bounds.
    fn busy(&self) -> u64 {
        self.busy.unwrap_or_else(|| self.in_flight())
    }

    fn in_flight(&self) -> u64 {
        self.acquired().saturating_sub(self.hold_time.count())
    }

    /// Adds `o` in; gauges are summed per host (each clamped first), so the
    /// total keeps `open = idle + in_use` too.
    fn merge(&mut self, o: &Self) {
        let busy = self.busy().min(self.open()) + o.busy().min(o.open());
        self.busy = Some(busy);
        self.started += o.started;
        self.timed_out += o.timed_out;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.opened += o.opened;
        self.closed += o.closed;
        self.peak_open += o.peak_open;
        self.held_too_long += o.held_too_long;
        self.stuck += o.stuck;
        self.wait_reused.merge(&o.wait_reused);
        self.wait_new.merge(&o.wait_new);
        self.wait_other.merge(&o.wait_other);
        self.hold_time.merge(&o.hold_time);
        self.lifetime.merge(&o.lifetime);
        self.requests_per_connection
            .merge(&o.requests_per_connection);
    }

    fn open(&self) -> u64 {
        self.opened.saturating_sub(self.closed)
    }

    fn finish(&self, host: String) -> HostSnapshot {
        let released = self.hold_time.count();
        let finished = self.acquired() + self.timed_out + self.failed + self.cancelled;
        let open = self.open();
        let in_use = self.busy().min(open);
        let mut acquire_wait = self.wait_reused.clone();
        acquire_wait.merge(&self.wait_new);
        acquire_wait.merge(&self.wait_other);
        HostSnapshot {
            host,
            open,
            idle: open.saturating_sub(in_use),
            in_use,
            in_flight: self.in_flight(),
            waiting: self.started.saturating_sub(finished),
            peak_open: self.peak_open,
            opened_total: self.opened,
            closed_total: self.closed,
            reused_total: self.wait_reused.count(),
            new_total: self.wait_new.count(),
            timed_out_total: self.timed_out,
            failed_total: self.failed,
            cancelled_total: self.cancelled,
            released_total: released,
            held_too_long_total: self.held_too_long,
            stuck_total: self.stuck,
            acquire_wait: acquire_wait.snapshot(),
            new_connection_wait: self.wait_new.snapshot(),
            hold_time: self.hold_time.snapshot(),
            connection_lifetime: self.lifetime.snapshot(),
            requests_per_connection: self.requests_per_connection.snapshot(),
        }
    }
}
