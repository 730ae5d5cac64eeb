//! [`HyperTransport`]: the steadfast [`Transport`] over hyper-util's pooled
//! client, with the request-side timeouts and pool events.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::capture_connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use steadfast_core::pool::PoolObserver;
use steadfast_core::{BoxError, Deadline, TimeoutPhase, Transport};
use tokio::time::Instant;

use crate::body::HyperBody;
use crate::config::{Builder, Config};
use crate::conn::{ConnShared, HostState, Hosts, without_userinfo};
use crate::connect::Connector;
use crate::error::{ErrorKind, HyperError, find_in_chain};
use crate::future::ResponseFuture;
use crate::request::{InFlight, RequestBody};

/// A production [`Transport`] over hyper-util's pooled client.
///
/// Cheap to clone (one `Arc`): clones share the pool, the per-host caps
/// and the counters. See the crate docs for the timeouts, the per-host cap,
/// the pool events and the errors.
#[derive(Clone)]
pub struct HyperTransport {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<Connector, RequestBody>,
    hosts: Arc<Hosts>,
    config: Config,
    #[cfg(feature = "pool-stats")]
    pool_stats: Option<Arc<steadfast_pool::PoolStats>>,
}

impl fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransport")
            .field("config", &self.inner.config)
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// Counters of a [`HyperTransport`], read with [`HyperTransport::snapshot`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportSnapshot {
    /// Requests started.
    pub requests: u64,
    /// Connections opened since the transport was built.
    pub connections_opened: u64,
    /// Connections closed since the transport was built.
    pub connections_closed: u64,
    /// Connections open now, busy or idle, over all hosts.
    pub connections_open: usize,
    /// Per-host slots taken now: open connections plus connects in flight.
    pub permits_in_use: usize,
    /// Requests that failed with a pool timeout (`ErrorKind::PoolTimeout`).
    pub pool_timeouts: u64,
    /// Abandoned HTTP/1 responses whose drain started (see
    /// [`Builder::drain_on_cancel`]); not counted: those whose
    /// `Content-Length` said more was left than the drain allows.
    pub drains_started: u64,
    /// Drains that read their response to the end within the limits. On
    /// HTTP/1 that puts the connection back into the pool, unless the
    /// response said `Connection: close`; a response that turned out to be
    /// HTTP/2 counts here once its head came (its stream is reset, and the
    /// connection was never at stake).
    pub drains_succeeded: u64,
    /// Drains that gave up (too large, too slow, or the exchange failed):
    /// the connection closed. Running drains are the started ones not yet
    /// counted as succeeded or abandoned.
    pub drains_abandoned: u64,
}

impl TransportSnapshot {
    /// Drains running now: started, not yet ended. Once it is zero, every
    /// drained connection has been released to the pool observer.
    pub const fn drains_running(&self) -> u64 {
        self.drains_started
            .saturating_sub(self.drains_succeeded)
            .saturating_sub(self.drains_abandoned)
    }
}

impl HyperTransport {
    /// A builder with every default; see [`Builder`].
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_parts(
        config: Config,
        #[cfg(feature = "pool-stats")] pool_stats: Option<Arc<steadfast_pool::PoolStats>>,
        observer: Option<Arc<dyn PoolObserver>>,
        #[cfg(feature = "rustls")] tls: crate::tls::Tls,
    ) -> Self {
        let hosts = Arc::new(Hosts::new(observer, &config));
        let connector = Connector::new(
            &config,
            hosts.clone(),
            #[cfg(feature = "rustls")]
            tls,
        );
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host);
        #[cfg(feature = "http2")]
        b.http2_only(config.http2_prior_knowledge);
        let client = b.build(connector);
        Self {
            inner: Arc::new(Inner {
                client,
                hosts,
                config,
                #[cfg(feature = "pool-stats")]
                pool_stats,
            }),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The `PoolStats` this transport reports its pool events to (feature
    /// `pool-stats`): the one given to [`Builder::pool_stats`], or the one
    /// [`Builder::build`] created because no observer was set. `None` with
    /// another observer, or with `NoopPoolObserver`.
    #[cfg(feature = "pool-stats")]
    pub fn pool_stats(&self) -> Option<&Arc<steadfast_pool::PoolStats>> {
        self.inner.pool_stats.as_ref()
    }

    /// Current counters; a handful of atomic loads and one short read lock.
    pub fn snapshot(&self) -> TransportSnapshot {
        let stats = &self.inner.hosts.stats;
        TransportSnapshot {
            requests: stats.requests.load(Ordering::Relaxed),
            connections_opened: stats.connections_opened.load(Ordering::Relaxed),
            connections_closed: stats.connections_closed.load(Ordering::Relaxed),
            connections_open: self.inner.hosts.sum(|h| h.open.load(Ordering::Relaxed)),
            permits_in_use: self.pool_permits_in_use(),
            pool_timeouts: stats.pool_timeouts.load(Ordering::Relaxed),
            drains_started: stats.drains_started.load(Ordering::Relaxed),
            // Acquire: a drain counted as ended has reported its release.
            drains_succeeded: stats.drains_succeeded.load(Ordering::Acquire),
            drains_abandoned: stats.drains_abandoned.load(Ordering::Acquire),
        }
    }

    /// Per-host connection slots taken now, over all hosts. Each open
    /// connection holds one for its whole life (idle in the pool included),
    /// and so does each connect in flight; nothing else can. Once the pool
    /// is empty and no connect is running, this is zero.
    pub fn pool_permits_in_use(&self) -> usize {
        self.inner.hosts.sum(HostState::permits_in_use)
    }
}

impl<B> Transport<B> for HyperTransport
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Body = HyperBody;
    type Error = HyperError;

    fn send(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<HyperBody>, HyperError>> + Send {
        self.inner.send(req)
    }
}

impl Inner {
    fn send<B>(&self, mut req: Request<B>) -> ResponseFuture
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // Checked on every request (a look for the port), rewritten rarely.
        if let Some(uri) = without_default_port(req.uri()) {
            *req.uri_mut() = uri;
        }
        let host = match self.host_of(req.uri()) {
            Ok(host) => host,
            Err(e) => return ResponseFuture::failed(e),
        };
        let deadline = Deadline::of(&req).map(Deadline::instant);
        // A deadline already past sends nothing: polled, hyper-util would
        // queue the request to an idle connection before our timer looked.
        if let Some(d) = deadline
            && d <= Instant::now()
        {
            return ResponseFuture::failed(HyperError::timeout(
                TimeoutPhase::Total,
                &host.key,
                Duration::ZERO,
                false,
            ));
        }
        self.hosts.stats.requests.fetch_add(1, Ordering::Relaxed);
        // With a pool observer, an HTTP/1 connection claims the request it
        // takes; an HTTP/2 one needs hyper-util's capture (see `request`).
        let observed = host.observer.is_some();
        let capture =
            (observed && host.h2.load(Ordering::Relaxed)).then(|| capture_connection(&mut req));
        let (parts, body) = req.into_parts();
        // An empty body (most GETs) is not boxed: hyper only asks whether it ended.
        let body = (!body.is_end_stream()).then(|| body.map_err(Into::into).boxed_unsync());
        let claim = observed && capture.is_none();
        let in_flight = InFlight::new(host, Instant::now(), claim, body);
        let req = Request::from_parts(parts, RequestBody::new(in_flight.clone()));
        let response = self.client.request(req);
        ResponseFuture::start(response, in_flight, capture, deadline)
    }

    /// The host state for `uri`, or why the request cannot be sent.
    fn host_of(&self, uri: &Uri) -> Result<Arc<HostState>, HyperError> {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            // The path alone: a query may carry credentials (`?api_key=`),
            // and the error goes to logs.
            let shown = uri
                .authority()
                .map_or_else(|| uri.path(), |a| without_userinfo(a.as_str()))
                .to_owned();
            return Err(HyperError::new(
                ErrorKind::InvalidRequest,
                &shown,
                false,
                Some("the URI must be absolute: scheme://host[:port]/path".into()),
            ));
        };
        let https = match scheme.as_str() {
            "http" => false,
            #[cfg(feature = "rustls")]
            "https" => true,
            #[cfg(not(feature = "rustls"))]
            "https" => {
                return Err(crate::connect::https_unsupported(&format!(
                    "https://{}",
                    without_userinfo(authority.as_str())
                )));
            }
            _ => {
                return Err(HyperError::new(
                    ErrorKind::InvalidRequest,
                    &format!("{scheme}://{}", without_userinfo(authority.as_str())),
                    false,
                    Some(format!("unsupported scheme {scheme:?}: use http or https").into()),
                ));
            }
        };
        Ok(self.hosts.get(https, authority))
    }
}

/// `uri` without its port when the port is the scheme's default (`http`
/// and 80, `https` and 443); `None` when there is nothing to strip.
///
/// hyper-util pools `http://h/` and `http://h:80/` apart: without this, the
/// two spellings of one server would get two pools, and two per-host caps.
/// Stripped, they share both, and one key (`http://h`). Userinfo stays.
#[inline]
fn without_default_port(uri: &Uri) -> Option<Uri> {
    let authority = uri.authority()?;
    let (default, digits): (u16, &[u8]) = match uri.scheme_str()? {
        "http" => (80, b"80"),
        "https" => (443, b"443"),
        _ => return None,
    };
    // Only an authority that ends in the default port's digits can spell
    // it (`h:80`, `h:080`): a look at its last bytes settles every other
    // request without parsing the port (which costs hundreds of
    // instructions on every request).
    if !authority.as_str().as_bytes().ends_with(digits) {
        return None;
    }
    strip_port(uri, authority, default)
}

#[cold]
fn strip_port(uri: &Uri, authority: &http::uri::Authority, default: u16) -> Option<Uri> {
    if authority.port_u16()? != default {
        return None;
    }
    let (stripped, _) = authority.as_str().rsplit_once(':')?;
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(stripped.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// A failure after the request was handed to a connection: it may have
/// reached the server. Tells a broken write from a broken read by which
/// direction of the socket failed first, and makes sure the chain holds an
/// `io::Error` that [`steadfast_core::ErrorClass`] reads as a reset.
///
/// `body_failed`: the caller's request body returned an error (see
/// [`InFlight::body_failed`]); only then is the failure the body's. hyper
/// raises other "user" errors with a cause, such as `DispatchGone` when the
/// task driving the connection is dropped mid-request (its runtime shut
/// down): those are the connection's failures.
pub(crate) fn failed_in_flight(
    host: &HostState,
    conn: Option<&ConnShared>,
    body_failed: bool,
    err: BoxError,
) -> HyperError {
    if body_failed {
        // Over HTTP/1 hyper passes the body's error on; over HTTP/2 it
        // resets the stream, and the reset is what comes back.
        return HyperError::new(ErrorKind::RequestBody, &host.key, true, Some(err));
    }
    let hyper_err = find_in_chain::<hyper::Error>(&*err);
    if let Some(h) = hyper_err {
        if h.is_parse() || h.is_parse_status() {
            return HyperError::new(ErrorKind::Protocol, &host.key, true, Some(err));
        }
        // Other "user" errors with a cause are the connection's (see above).
        if h.is_user() && std::error::Error::source(h).is_none() {
            return HyperError::new(ErrorKind::InvalidRequest, &host.key, true, Some(err));
        }
    }
    let kind = if conn.is_some_and(ConnShared::write_failed) {
        ErrorKind::Write
    } else {
        ErrorKind::Read
    };
    let source: BoxError = if find_in_chain::<std::io::Error>(&*err).is_some() {
        err
    } else {
        let io_kind = if hyper_err.is_some_and(hyper::Error::is_incomplete_message) {
            std::io::ErrorKind::UnexpectedEof
        } else {
            std::io::ErrorKind::ConnectionReset
        };
        Box::new(std::io::Error::new(io_kind, err))
    };
    HyperError::new(kind, &host.key, true, Some(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_default_port_spelled_out_is_stripped() {
        let strip = |uri: &str| without_default_port(&uri.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(
            strip("http://h:80/a?b=1").as_deref(),
            Some("http://h/a?b=1")
        );
        assert_eq!(strip("https://h:443/").as_deref(), Some("https://h/"));
        assert_eq!(
            strip("http://u:p@h:80/").as_deref(),
            Some("http://u:p@h/"),
            "userinfo stays"
        );
        assert_eq!(strip("http://[::1]:80/").as_deref(), Some("http://[::1]/"));
        assert_eq!(strip("http://h:080/").as_deref(), Some("http://h/"));
        for kept in [
            "http://h/",
            "http://h:443/",
            "https://h:80/",
            "http://h:8080/",
            "/path",
            "http://[::1]/",
        ] {
            assert_eq!(strip(kept), None, "{kept}");
        }
    }
}
