//! The server: configuration, the accept loop, shutdown and counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::conn::{ConnIo, ConnShared};
use super::limited::{
    BURST_RANGE, DEFAULT_LIMITED_BURST, DEFAULT_LIMITED_RATE, Gcra, LimitedStats, Limiter,
    RATE_RANGE,
};
use super::routes::{self, Ctx};

/// A real HTTP/1.1 and HTTP/2 (prior knowledge) server on `127.0.0.1`,
/// with routes that fail on purpose. Shuts down when dropped.
///
/// See the [module docs](super) for the routes.
pub struct FaultServer {
    addr: SocketAddr,
    base_url: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    /// Dropping it is the shutdown signal: every task holds a receiver.
    _shutdown: watch::Sender<()>,
}

/// Configures a [`FaultServer`]. Obtained from [`FaultServer::builder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultServerBuilder {
    limited_rate: f64,
    limited_burst: u32,
}

/// Why a [`FaultServer`] could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The `/limited` rate is not a finite number in the accepted range.
    #[error(
        "FaultServer /limited rate must be between {} and {} requests per second, got {rate}",
        RATE_RANGE.start(),
        RATE_RANGE.end()
    )]
    InvalidRate {
        /// The rejected rate.
        rate: f64,
    },
    /// The `/limited` burst is out of range.
    #[error(
        "FaultServer /limited burst must be between {} and {}, got {burst}",
        BURST_RANGE.start(),
        BURST_RANGE.end()
    )]
    InvalidBurst {
        /// The rejected burst.
        burst: u32,
    },
    /// The loopback listener could not be bound.
    #[error("FaultServer could not listen on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
}

/// Counters of a [`FaultServer`], read with [`FaultServer::stats`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Requests received (every route, every protocol).
    pub requests: u64,
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// TCP connections open right now.
    pub connections_open: u64,
    /// The most connections that were open at once.
    pub max_connections_open: u64,
    /// Bytes written to sockets: response heads and bodies, HTTP/2 framing
    /// included.
    pub bytes_sent: u64,
}

impl Default for FaultServerBuilder {
    fn default() -> Self {
        Self {
            limited_rate: DEFAULT_LIMITED_RATE,
            limited_burst: DEFAULT_LIMITED_BURST,
        }
    }
}

impl FaultServerBuilder {
    /// The GCRA of `/limited`: a sustained `rate_per_sec` with bursts of
    /// `burst` requests per key. Defaults: [`DEFAULT_LIMITED_RATE`] and
    /// [`DEFAULT_LIMITED_BURST`]. Checked by [`try_start`](Self::try_start).
    ///
    /// [`DEFAULT_LIMITED_RATE`]: super::DEFAULT_LIMITED_RATE
    /// [`DEFAULT_LIMITED_BURST`]: super::DEFAULT_LIMITED_BURST
    pub const fn limited(mut self, rate_per_sec: f64, burst: u32) -> Self {
        self.limited_rate = rate_per_sec;
        self.limited_burst = burst;
        self
    }

    /// Starts the server, or says why the configuration or the bind failed.
    pub async fn try_start(self) -> Result<FaultServer, StartError> {
        let rate = self.limited_rate;
        if !(rate.is_finite() && RATE_RANGE.contains(&rate)) {
            return Err(StartError::InvalidRate { rate });
        }
        let burst = self.limited_burst;
        if !BURST_RANGE.contains(&burst) {
            return Err(StartError::InvalidBurst { burst });
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(StartError::Bind)?;
        let addr = listener.local_addr().map_err(StartError::Bind)?;
        let shared = Arc::new(Shared::new(Limiter::new(Gcra::new(rate, burst))));
        let (shutdown, signal) = watch::channel(());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), signal));
        tracing::debug!(server.address = %addr, "FaultServer listening");
        Ok(FaultServer {
            addr,
            base_url: format!("http://{addr}"),
            shared,
            accept: Some(accept),
            _shutdown: shutdown,
        })
    }

    /// Starts the server.
    ///
    /// # Panics
    ///
    /// With the [`StartError`] message if the configuration is invalid or
    /// no loopback port can be bound; use [`try_start`](Self::try_start)
    /// to handle those.
    pub async fn start(self) -> FaultServer {
        match self.try_start().await {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }
}

impl FaultServer {
    /// Starts a server with the default configuration.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound (see [`FaultServerBuilder::try_start`]).
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A builder for a server with non-default settings.
    pub fn builder() -> FaultServerBuilder {
        FaultServerBuilder::default()
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The absolute URL of `path_and_query` on this server.
    pub fn url(&self, path_and_query: &str) -> String {
        if path_and_query.starts_with('/') {
            format!("{}{path_and_query}", self.base_url)
        } else {
            format!("{}/{path_and_query}", self.base_url)
        }
    }

    /// The listening address.
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.shared.counters.snapshot()
    }

    /// Requests whose path (without the query) was exactly `path`, e.g.
    /// `"/flaky"` or `"/status/503"`.
    pub fn hits(&self, path: &str) -> u64 {
        self.shared.hits().get(path).copied().unwrap_or(0)
    }

    /// Requests whose path starts with `prefix`, e.g. `"/status/"` for
    /// every status code.
    pub fn hits_prefix(&self, prefix: &str) -> u64 {
        self.shared
            .hits()
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests served by each connection, in accept order (counted since
    /// the last [`reset_stats`](Self::reset_stats)). A client that reuses
    /// its connections shows few entries with large counts. Each response
    /// also names its connection in the `X-Fault-Connection` header.
    pub fn requests_per_connection(&self) -> Vec<u64> {
        self.shared
            .per_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .copied()
            .collect()
    }

    /// Requests `/limited?key=key` allowed and refused.
    pub fn limited_stats(&self, key: &str) -> LimitedStats {
        self.shared.limiter.stats(key)
    }

    /// Zeroes the counters: [`stats`](Self::stats) (except
    /// `connections_open`, and `max_connections_open` restarts from it),
    /// hits, per-connection counts and [`limited_stats`](Self::limited_stats).
    /// Route state (flaky attempts, rate-limit credit) is kept.
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
        self.shared.hits().clear();
        self.shared
            .per_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.shared.limiter.reset_stats();
    }

    /// Stops accepting, closes every connection and waits until the
    /// listener is closed. Dropping the server does the same without
    /// waiting.
    pub async fn shutdown(mut self) {
        let accept = self.accept.take();
        drop(self);
        if let Some(accept) = accept {
            let _ = accept.await;
        }
    }
}

impl fmt::Debug for FaultServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultServer")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// State shared by the accept loop, the connections and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    hits: Mutex<HashMap<String, u64>>,
    per_connection: Mutex<BTreeMap<u64, u64>>,
    flaky: Mutex<HashMap<String, u64>>,
    pub(crate) limiter: Limiter,
    next_connection: AtomicU64,
}

impl Shared {
    fn new(limiter: Limiter) -> Self {
        Self {
            counters: Counters::default(),
            hits: Mutex::new(HashMap::new()),
            per_connection: Mutex::new(BTreeMap::new()),
            flaky: Mutex::new(HashMap::new()),
            limiter,
            next_connection: AtomicU64::new(0),
        }
    }

    fn hits(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.hits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record_request(&self, path: &str, connection: u64) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut hits = self.hits();
        match hits.get_mut(path) {
            Some(n) => *n += 1,
            None => {
                hits.insert(path.to_owned(), 1);
            }
        }
        drop(hits);
        *self
            .per_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(connection)
            .or_default() += 1;
    }

    /// Counts a `/flaky` request of `key` and returns its 1-based number.
    pub(crate) fn flaky_attempt(&self, key: &str) -> u64 {
        let mut flaky = self.flaky.lock().unwrap_or_else(PoisonError::into_inner);
        let n = match flaky.get_mut(key) {
            Some(n) => n,
            None => flaky.entry(key.to_owned()).or_default(),
        };
        *n += 1;
        *n
    }
}

/// The atomics behind [`ServerStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    accepted: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    bytes_sent: AtomicU64,
}

impl Counters {
    fn connection_opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_open.fetch_max(open, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn bytes_sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ServerStats {
        ServerStats {
            requests: self.requests.load(Ordering::Relaxed),
            connections_accepted: self.accepted.load(Ordering::Relaxed),
            connections_open: self.open.load(Ordering::Relaxed),
            max_connections_open: self.max_open.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.accepted.store(0, Ordering::Relaxed);
        self.bytes_sent.store(0, Ordering::Relaxed);
        self.max_open
            .store(self.open.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Accepts until the shutdown signal, one task per connection.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut signal: watch::Receiver<()>) {
    let executor = ShutdownExecutor {
        signal: signal.clone(),
    };
    let http = auto::Builder::new(executor);
    loop {
        let stream = tokio::select! {
            _ = signal.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::debug!(error = %e, "FaultServer accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        serve(stream, &shared, http.clone(), signal.clone());
    }
    tracing::debug!("FaultServer stopped accepting");
}

fn serve(
    stream: TcpStream,
    shared: &Arc<Shared>,
    http: auto::Builder<ShutdownExecutor>,
    mut signal: watch::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    shared.counters.connection_opened();
    let conn = Arc::new(ConnShared::new(id));
    let io = TokioIo::new(ConnIo::new(stream, Arc::clone(&conn), Arc::clone(shared)));
    let ctx = Ctx {
        shared: Arc::clone(shared),
        conn,
    };
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(req, ctx).await) }
    });
    tokio::spawn(async move {
        let connection = http.serve_connection(io, service);
        tokio::select! {
            res = connection => {
                if let Err(e) = res {
                    tracing::trace!(connection = id, error = %e, "FaultServer connection ended");
                }
            }
            // Dropping the connection closes the socket; no graceful drain.
            _ = signal.changed() => {}
        }
    });
}

/// Spawns hyper's HTTP/2 stream tasks so that they, too, end at shutdown.
#[derive(Debug, Clone)]
struct ShutdownExecutor {
    signal: watch::Receiver<()>,
}

impl<F> hyper::rt::Executor<F> for ShutdownExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut signal = self.signal.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = signal.changed() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pinned() {
        assert_eq!(
            format!("{:?}", FaultServer::builder()),
            "FaultServerBuilder { limited_rate: 10.0, limited_burst: 5 }"
        );
    }

    #[tokio::test]
    async fn bad_config_is_an_error_not_a_panic() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
            let err = FaultServer::builder()
                .limited(rate, 1)
                .try_start()
                .await
                .unwrap_err();
            assert!(
                matches!(err, StartError::InvalidRate { .. }),
                "{rate}: {err}"
            );
        }
        let err = FaultServer::builder()
            .limited(1.0, 0)
            .try_start()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("burst"), "{err}");
    }
}
