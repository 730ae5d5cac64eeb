//! [`Builder`] and the validated [`Config`] of a [`HyperTransport`], with
//! every default as a named constant.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use steadfast_core::pool::{NoopPoolObserver, PoolObserver};
#[cfg(feature = "pool-stats")]
use steadfast_pool::PoolStats;

use crate::error::BuildError;
use crate::transport::HyperTransport;

/// Longest wait to establish a connection: DNS, TCP and TLS together.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the response head, and for each next body frame.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a free connection slot when the per-host cap is
/// reached. Equal to the connect timeout: waiting for a slot is the same
/// kind of wait as opening one.
pub const DEFAULT_POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections are closed after this long (hyper-util's and
/// reqwest's default).
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Open connections (and connects in flight) per host, busy and idle
/// together; see [`Builder::max_connections_per_host`].
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 100;
/// Idle connections kept per host: as many as may be open.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = DEFAULT_MAX_CONNECTIONS_PER_HOST;
/// TCP keepalive probe interval on idle sockets, so dead peers are found.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Largest `max_connections_per_host` accepted (tokio's semaphore limit).
pub const MAX_CONNECTIONS_PER_HOST_LIMIT: usize = tokio::sync::Semaphore::MAX_PERMITS;
/// Most bytes read (and discarded) from an abandoned HTTP/1 response to
/// save its connection: 64 KiB, a few TCP windows, most of which is usually
/// in the socket buffers already. Reading it costs less than the handshake
/// it saves.
pub const DEFAULT_DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// Longest an abandoned HTTP/1 response is drained (its head awaited, then
/// its body read) before its connection is closed instead.
pub const DEFAULT_DRAIN_MAX_TIME: Duration = Duration::from_secs(1);

/// How much of an abandoned HTTP/1 response is read to keep its connection;
/// see [`Builder::drain_on_cancel`].
///
/// HTTP/1 carries one response at a time: a connection whose response was
/// not read to its end cannot carry the next request, and hyper closes it.
/// Reading the rest (and discarding it) in the background puts the
/// connection back into the pool, as .NET's `HttpClient` does with its
/// `MaxResponseDrainSize` and `ResponseDrainTimeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DrainConfig {
    /// Most body bytes read; a response with more left (by its
    /// `Content-Length`, or as it arrives) closes its connection instead.
    pub max_bytes: u64,
    /// Longest the drain runs, from the cancel: the wait for the response
    /// head (if it had not come) and the body together. Must not be zero.
    pub max_time: Duration,
}

impl DrainConfig {
    /// Drains at most `max_bytes` within `max_time`.
    pub const fn new(max_bytes: u64, max_time: Duration) -> Self {
        Self {
            max_bytes,
            max_time,
        }
    }
}

impl Default for DrainConfig {
    /// [`DEFAULT_DRAIN_MAX_BYTES`] within [`DEFAULT_DRAIN_MAX_TIME`].
    fn default() -> Self {
        Self::new(DEFAULT_DRAIN_MAX_BYTES, DEFAULT_DRAIN_MAX_TIME)
    }
}

/// The validated settings of a [`HyperTransport`]; read them back with
/// [`HyperTransport::config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) pool_acquire_timeout: Duration,
    pub(crate) pool_idle_timeout: Option<Duration>,
    pub(crate) pool_max_idle_per_host: usize,
    pub(crate) max_connections_per_host: usize,
    pub(crate) tcp_nodelay: bool,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) max_body: Option<u64>,
    pub(crate) http2_prior_knowledge: bool,
    pub(crate) http2_alpn: bool,
    pub(crate) drain_on_cancel: Option<DrainConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            pool_acquire_timeout: DEFAULT_POOL_ACQUIRE_TIMEOUT,
            pool_idle_timeout: Some(DEFAULT_POOL_IDLE_TIMEOUT),
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            max_connections_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
            tcp_nodelay: true,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            max_body: None,
            http2_prior_knowledge: false,
            http2_alpn: cfg!(feature = "http2"),
            drain_on_cancel: Some(DrainConfig::default()),
        }
    }
}

impl Config {
    /// The name shown in tracing events, if set.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// See [`Builder::connect_timeout`].
    pub const fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// See [`Builder::read_timeout`].
    pub const fn read_timeout(&self) -> Duration {
        self.read_timeout
    }
    /// See [`Builder::pool_acquire_timeout`].
    pub const fn pool_acquire_timeout(&self) -> Duration {
        self.pool_acquire_timeout
    }
    /// See [`Builder::pool_idle_timeout`].
    pub const fn pool_idle_timeout(&self) -> Option<Duration> {
        self.pool_idle_timeout
    }
    /// See [`Builder::pool_max_idle_per_host`].
    pub const fn pool_max_idle_per_host(&self) -> usize {
        self.pool_max_idle_per_host
    }
    /// See [`Builder::max_connections_per_host`].
    pub const fn max_connections_per_host(&self) -> usize {
        self.max_connections_per_host
    }
    /// See [`Builder::tcp_nodelay`].
    pub const fn tcp_nodelay(&self) -> bool {
        self.tcp_nodelay
    }
    /// See [`Builder::tcp_keepalive`].
    pub const fn tcp_keepalive(&self) -> Option<Duration> {
        self.tcp_keepalive
    }
    /// See [`Builder::max_body`].
    pub const fn max_body(&self) -> Option<u64> {
        self.max_body
    }
    /// `true` when every connection speaks HTTP/2 from the first byte.
    pub const fn http2_prior_knowledge(&self) -> bool {
        self.http2_prior_knowledge
    }
    /// `true` when TLS connections offer HTTP/2 through ALPN.
    pub const fn http2_alpn(&self) -> bool {
        self.http2_alpn
    }
    /// See [`Builder::drain_on_cancel`].
    pub const fn drain_on_cancel(&self) -> Option<DrainConfig> {
        self.drain_on_cancel
    }

    fn validate(&self) -> Result<(), BuildError> {
        for (option, value) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("pool_acquire_timeout", self.pool_acquire_timeout),
        ] {
            if value.is_zero() {
                return Err(BuildError::ZeroTimeout { option });
            }
        }
        if self.drain_on_cancel.is_some_and(|d| d.max_time.is_zero()) {
            return Err(BuildError::ZeroTimeout {
                option: "drain_on_cancel max_time",
            });
        }
        if self.pool_idle_timeout == Some(Duration::ZERO) {
            return Err(BuildError::ZeroTimeout {
                option: "pool_idle_timeout",
            });
        }
        let max = self.max_connections_per_host;
        if max == 0 || max > MAX_CONNECTIONS_PER_HOST_LIMIT {
            return Err(BuildError::MaxConnections {
                got: max,
                max: MAX_CONNECTIONS_PER_HOST_LIMIT,
            });
        }
        Ok(())
    }
}

/// Builds a [`HyperTransport`]; start with [`HyperTransport::builder`].
///
/// Every option has a documented default (see the crate docs' table);
/// [`Builder::build`] validates them once and says what is wrong.
#[must_use]
pub struct Builder {
    config: Config,
    observer: Observer,
    #[cfg(feature = "rustls")]
    tls: crate::tls::TlsOptions,
}

/// Who receives the pool events.
enum Observer {
    /// Nothing chosen: [`NoopPoolObserver`], or with the `pool-stats`
    /// feature a new `PoolStats`.
    Default,
    /// [`NoopPoolObserver`], chosen explicitly.
    Noop,
    Custom(Arc<dyn PoolObserver>),
    #[cfg(feature = "pool-stats")]
    Stats(Arc<PoolStats>),
}

impl Observer {
    /// The observer the transport reports to; `None` for the no-op one.
    fn into_dyn(self) -> Option<Arc<dyn PoolObserver>> {
        match self {
            Self::Default | Self::Noop => None,
            Self::Custom(observer) => Some(observer),
            #[cfg(feature = "pool-stats")]
            Self::Stats(stats) => Some(stats),
        }
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "Default",
            Self::Noop => "Noop",
            Self::Custom(_) => "Custom",
            #[cfg(feature = "pool-stats")]
            Self::Stats(_) => "PoolStats",
        })
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Builder");
        d.field("config", &self.config);
        d.field("pool_observer", &self.observer);
        #[cfg(feature = "rustls")]
        d.field("tls", &self.tls);
        d.finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder with every default.
    pub fn new() -> Self {
        Self {
            config: Config::default(),
            observer: Observer::Default,
            #[cfg(feature = "rustls")]
            tls: crate::tls::TlsOptions::new(),
        }
    }

    /// A name for this transport, shown as `policy.name` in its tracing
    /// events (connection opened and closed, connect failures, pool
    /// exhaustion, drains), as the steadfast policies show theirs.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Longest wait to establish a connection (DNS, TCP and TLS together).
    /// Default [`DEFAULT_CONNECT_TIMEOUT`]. Fails with
    /// `ErrorKind::Timeout(TimeoutPhase::Connect)`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Longest the server may stay silent: the wait for the response head,
    /// counted from the request's last progress (a connection took it, or
    /// took a frame of its streaming body), and then for each next response
    /// body frame. The wait for a connection does not count (the pool and
    /// connect timeouts bound that), nor does the time the caller's own
    /// request body takes to produce a frame. Default
    /// [`DEFAULT_READ_TIMEOUT`]. Fails with
    /// `ErrorKind::Timeout(TimeoutPhase::Read)`.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.read_timeout = timeout;
        self
    }

    /// Longest wait for a connection slot once `max_connections_per_host`
    /// connections are open. Default [`DEFAULT_POOL_ACQUIRE_TIMEOUT`]. Fails
    /// with `ErrorKind::PoolTimeout { open, max }` (`open`: the slots
    /// taken, connects in flight included).
    pub fn pool_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.config.pool_acquire_timeout = timeout;
        self
    }

    /// Idle pooled connections are closed after `timeout`; `None` keeps
    /// them until the server closes them, and so does a timeout of a
    /// century or more (hyper-util's idle reaper would overflow on
    /// `Duration::MAX`). Default [`DEFAULT_POOL_IDLE_TIMEOUT`].
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
        self.config.pool_idle_timeout = timeout.filter(|t| *t < FOREVER);
        self
    }

    /// Idle connections kept per host; `0` disables reuse. Default
    /// [`DEFAULT_POOL_MAX_IDLE_PER_HOST`].
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.config.pool_max_idle_per_host = max;
        self
    }

    /// Most connections open at once to one host (scheme, host and port),
    /// busy and idle together, connects in flight included. Default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_HOST`]. A slot is freed when its
    /// connection closes, whatever happened to the request that opened it.
    ///
    /// A port spelled out that is the scheme's default (`http://api:80/`,
    /// `https://api:443/`) is stripped from the request's URI before it is
    /// sent, so both spellings share one pool and one cap, and show as one
    /// key, `scheme://host` (`scheme://host:port` for other ports).
    ///
    /// URLs with userinfo (`http://alice@api/`) count apart from the same
    /// host without it, or with another user, as hyper-util pools them
    /// apart: they never share a connection, so one user's idle
    /// connections must not hold the slots another's requests need. Their
    /// pool events go to the same key, whose host observer is asked for
    /// once.
    pub fn max_connections_per_host(mut self, max: usize) -> Self {
        self.config.max_connections_per_host = max;
        self
    }

    /// Sets `TCP_NODELAY` (no Nagle delay on small writes). Default `true`.
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.config.tcp_nodelay = nodelay;
        self
    }

    /// TCP keepalive idle time; `None` disables keepalive. Default
    /// [`DEFAULT_TCP_KEEPALIVE`].
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.config.tcp_keepalive = idle;
        self
    }

    /// Fails a response body with `ErrorKind::BodyTooLarge` as soon as more
    /// than `limit` bytes arrive (or a `Content-Length` announces more).
    /// Default: no limit.
    pub fn max_body(mut self, limit: u64) -> Self {
        self.config.max_body = Some(limit);
        self
    }

    /// Saves the HTTP/1 connection of a response its caller abandoned, by
    /// reading the rest of it in the background (and discarding it), up to
    /// `max_bytes` within `max_time`; `None` closes such a connection at
    /// once. Default on: [`DrainConfig::default`], 64 KiB within 1 s.
    ///
    /// It applies when a [`crate::HyperBody`] is dropped before its end,
    /// and when a request's future is dropped after a connection took the
    /// request but before the response head came: the drain then waits for
    /// the head, then reads the body. A request dropped before any
    /// connection took it is dropped as before: it is never sent once its
    /// caller gave up. A body whose `Content-Length` says more than
    /// `max_bytes` is left is not drained at all, and neither is an
    /// HTTP/2 response (dropping it resets only its stream), nor one
    /// dropped outside a tokio runtime. The transport's own timeouts do
    /// not drain either: the read timeout means the server went silent.
    ///
    /// The connection stays in use, for the per-host cap and the pool
    /// observer, until the drain ends: it is released then and, if the
    /// response ended within the limits, reused by a later request
    /// (`Acquired::Reused`). Drains are counted in
    /// [`crate::TransportSnapshot`].
    ///
    /// Why on by default: a cancelled request (a timeout, a hedged
    /// request that lost, a caller that read only the head) is routine
    /// for a resilient client, and without draining each one costs a new
    /// connection (TCP and maybe TLS handshakes, a cold congestion window)
    /// and server-side churn. The cost is bounded: at most 64 KiB read and
    /// one short task per abandoned response, and at most one drain per
    /// open connection, so never more than the per-host cap. Turn it off
    /// when a connection slot must free the moment its request is
    /// abandoned, or when every dropped body is known to be large.
    pub fn drain_on_cancel(mut self, drain: Option<DrainConfig>) -> Self {
        self.config.drain_on_cancel = drain;
        self
    }

    /// Speak HTTP/2 from the first byte on every connection, without ALPN
    /// (h2c "prior knowledge" on plain TCP). Default off.
    #[cfg(feature = "http2")]
    pub fn http2_prior_knowledge(mut self) -> Self {
        self.config.http2_prior_knowledge = true;
        self
    }

    /// Offer only HTTP/1.1 through ALPN. By default, with the `http2`
    /// feature, TLS connections offer `h2` and `http/1.1` and speak what the
    /// server picks.
    #[cfg(feature = "http2")]
    pub fn http1_only(mut self) -> Self {
        self.config.http2_alpn = false;
        self
    }

    /// Receives connection pool events (steadfast-pool's `PoolStats`, or
    /// your own); replaces any observer set before. Default
    /// [`NoopPoolObserver`], or with the `pool-stats` feature a new
    /// `PoolStats` (see `Builder::pool_stats`).
    ///
    /// With an observer, the connection that takes a request reports the
    /// acquisition (over HTTP/2, hyper-util's `capture_connection` names
    /// it), so the events are exact: about 0.45 k instructions more per
    /// request (1.2 % of an empty loopback request). Pass [`NoopPoolObserver`] (or set
    /// none, without `pool-stats`) and none of that runs.
    pub fn pool_observer<O>(mut self, observer: Arc<O>) -> Self
    where
        O: PoolObserver + ?Sized,
    {
        self.observer = if TypeId::of::<O>() == TypeId::of::<NoopPoolObserver>() {
            Observer::Noop
        } else {
            // `Arc<O>` is itself a `PoolObserver`; `host()` runs once per pool
            // key, so the extra indirection costs nothing per request.
            Observer::Custom(Arc::new(observer))
        };
        self
    }

    /// Reports pool events to `stats` (feature `pool-stats`), readable back
    /// with [`HyperTransport::pool_stats`]; replaces any observer set
    /// before.
    ///
    /// With the feature on and no observer set, [`Builder::build`] creates
    /// a `PoolStats` with its defaults, so every transport has pool
    /// metrics; opt out with `pool_observer(Arc::new(NoopPoolObserver))`.
    #[cfg(feature = "pool-stats")]
    pub fn pool_stats(mut self, stats: Arc<PoolStats>) -> Self {
        self.observer = Observer::Stats(stats);
        self
    }

    /// Trusts `cert` (DER) as a root, in addition to the built-in roots.
    #[cfg(feature = "rustls")]
    pub fn add_root_certificate(
        mut self,
        cert: rustls::pki_types::CertificateDer<'static>,
    ) -> Self {
        self.tls.extra_roots.push(cert);
        self
    }

    /// Trusts the Mozilla roots compiled in by webpki-roots. Default `true`
    /// when the `webpki-roots` feature is on.
    #[cfg(feature = "webpki-roots")]
    pub fn webpki_roots(mut self, enable: bool) -> Self {
        self.tls.webpki_roots = enable;
        self
    }

    /// Trusts the operating system's roots, loaded once in
    /// [`Builder::build`]. Default `true` when the `native-roots` feature is
    /// on.
    #[cfg(feature = "native-roots")]
    pub fn native_roots(mut self, enable: bool) -> Self {
        self.tls.native_roots = enable;
        self
    }

    /// Uses `config` for TLS as it is, instead of building one from the
    /// root options above. ALPN protocols are set from the HTTP/2 options
    /// when `config` leaves them empty; when HTTP/2 is off
    /// ([`Builder::http1_only`], or no `http2` feature), `h2` is taken out
    /// of the list `config` brings.
    #[cfg(feature = "rustls")]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls.custom = Some(Arc::new(config));
        self
    }

    /// Validates the options and builds the transport.
    ///
    /// Must be called inside a tokio runtime only to send requests, not to
    /// build.
    pub fn build(self) -> Result<HyperTransport, BuildError> {
        self.config.validate()?;
        #[cfg(feature = "rustls")]
        let tls = crate::tls::build(&self.tls, &self.config)?;
        #[cfg(feature = "pool-stats")]
        let observer = match self.observer {
            Observer::Default => Observer::Stats(PoolStats::new()),
            chosen => chosen,
        };
        #[cfg(not(feature = "pool-stats"))]
        let observer = self.observer;
        Ok(HyperTransport::from_parts(
            self.config,
            #[cfg(feature = "pool-stats")]
            match &observer {
                Observer::Stats(stats) => Some(stats.clone()),
                _ => None,
            },
            observer.into_dyn(),
            #[cfg(feature = "rustls")]
            tls,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pinned() {
        let c = Config::default();
        assert_eq!(
            format!("{c:?}"),
            format!(
                "Config {{ name: None, connect_timeout: 5s, read_timeout: 30s, \
                 pool_acquire_timeout: 5s, pool_idle_timeout: Some(90s), pool_max_idle_per_host: 100, \
                 max_connections_per_host: 100, tcp_nodelay: true, tcp_keepalive: Some(60s), \
                 max_body: None, http2_prior_knowledge: false, http2_alpn: {}, \
                 drain_on_cancel: Some(DrainConfig {{ max_bytes: 65536, max_time: 1s }}) }}",
                cfg!(feature = "http2")
            )
        );
    }

    #[test]
    fn an_idle_timeout_of_a_century_or_more_keeps_connections() {
        let b = Builder::new().pool_idle_timeout(Some(Duration::MAX));
        assert_eq!(b.config.pool_idle_timeout, None);
        let b = Builder::new().pool_idle_timeout(Some(Duration::from_secs(3_600)));
        assert_eq!(b.config.pool_idle_timeout, Some(Duration::from_secs(3_600)));
    }

    #[test]
    fn bad_values_are_refused_at_build_time() {
        let err = Builder::new()
            .read_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.to_string(), "read_timeout must be greater than zero");
        let err = Builder::new()
            .max_connections_per_host(0)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, BuildError::MaxConnections { got: 0, .. }),
            "{err}"
        );
        let err = Builder::new()
            .max_connections_per_host(usize::MAX)
            .build()
            .unwrap_err();
        assert!(matches!(err, BuildError::MaxConnections { .. }), "{err}");
        let err = Builder::new()
            .drain_on_cancel(Some(DrainConfig::new(1024, Duration::ZERO)))
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "drain_on_cancel max_time must be greater than zero"
        );
        assert!(
            Builder::new()
                .drain_on_cancel(Some(DrainConfig::new(0, Duration::from_millis(1))))
                .build()
                .is_ok(),
            "draining nothing still saves a connection whose body already ended"
        );
        let err = Builder::new()
            .pool_idle_timeout(Some(Duration::ZERO))
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            BuildError::ZeroTimeout {
                option: "pool_idle_timeout"
            }
        ));
    }
}
