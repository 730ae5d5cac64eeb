//! Pool hooks: how a transport tells an observer what its connection pool
//! is doing, without either side knowing the other.
//!
//! A transport (steadfast-hyper's, or your own) asks its [`PoolObserver`]
//! once per pool key for a [`HostObserver`], caches it, and reports every
//! connection event to it. steadfast-pool implements these traits with
//! lock-free counters and histograms; the default, [`NoopPoolObserver`],
//! costs nothing.
//!
//! The event protocol, per request:
//!
//! 1. [`HostObserver::acquire_started`] when the request starts waiting
//!    for a connection;
//! 2. exactly one [`HostObserver::acquire_finished`] (or
//!    [`HostObserver::acquire_finished_at`], which adds the moment), with
//!    the wait and the [`Acquired`] result, even when the request is
//!    cancelled;
//! 3. after a successful acquire, exactly one
//!    [`HostObserver::connection_released`] when the request no longer uses
//!    the connection (response body finished or dropped), never before the
//!    acquisition's report has returned, even when the two come from
//!    different threads (a request cancelled while its connection reports
//!    taking it).
//!
//! and per connection: one [`HostObserver::connection_opened`], then one
//! [`HostObserver::connection_closed`] when its IO is dropped.
//!
//! Transports implement the "exactly one" rules with drop guards, so
//! cancellation at any await point keeps the counts right.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Identifies one connection for its whole life. Unique among the
/// connections an observer hears of: an observer shared by several
/// transports tells their connections apart by id alone, so a transport
/// should number its connections for the whole process (steadfast-hyper
/// does), not from one for each instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// How a wait for a connection ended.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// An idle pooled connection was reused.
    Reused(ConnectionId),
    /// A new connection was opened for this request.
    New(ConnectionId),
    /// The pool timeout fired.
    TimedOut,
    /// Connecting failed.
    Failed,
    /// The request was dropped while waiting.
    Cancelled,
}

impl Acquired {
    /// The connection obtained, if any.
    pub const fn connection(self) -> Option<ConnectionId> {
        match self {
            Self::Reused(id) | Self::New(id) => Some(id),
            _ => None,
        }
    }
}

/// Receives the events of one pool key (`scheme://host:port`).
///
/// All methods have empty defaults and are called on the request path:
/// keep them cheap (atomics), never block.
pub trait HostObserver: Send + Sync + 'static {
    /// A request started waiting for a connection.
    fn acquire_started(&self) {}
    /// The wait ended; see [`Acquired`].
    fn acquire_finished(&self, wait: Duration, result: Acquired) {
        let _ = (wait, result);
    }
    /// The wait ended at `at` (on `tokio::time`'s clock); see [`Acquired`].
    ///
    /// A transport that knows the moment reports it with this method
    /// instead of [`acquire_finished`](Self::acquire_finished), so an
    /// observer that stamps acquisitions (steadfast-pool's connection
    /// tracking) need not read the clock again. Either counts as the one
    /// `acquire_finished` of the protocol. The default forwards to
    /// `acquire_finished`.
    fn acquire_finished_at(&self, at: tokio::time::Instant, wait: Duration, result: Acquired) {
        let _ = at;
        self.acquire_finished(wait, result);
    }
    /// A request stopped using connection `id` after `held`.
    fn connection_released(&self, id: ConnectionId, held: Duration) {
        let _ = (id, held);
    }
    /// Connection `id` was established.
    fn connection_opened(&self, id: ConnectionId) {
        let _ = id;
    }
    /// Connection `id` closed after `lifetime`.
    fn connection_closed(&self, id: ConnectionId, lifetime: Duration) {
        let _ = (id, lifetime);
    }
}

/// Hands out the [`HostObserver`] of each pool key. Called once per key;
/// transports cache the result.
pub trait PoolObserver: Send + Sync + 'static {
    /// The observer for `key`, a pool key such as `https://api.example.com:443`.
    fn host(&self, key: &str) -> Arc<dyn HostObserver>;
}

/// Observes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopPoolObserver;

impl HostObserver for NoopPoolObserver {}

impl PoolObserver for NoopPoolObserver {
    fn host(&self, _key: &str) -> Arc<dyn HostObserver> {
        Arc::new(Self)
    }
}

impl<T: PoolObserver + ?Sized> PoolObserver for Arc<T> {
    fn host(&self, key: &str) -> Arc<dyn HostObserver> {
        (**self).host(key)
    }
}
