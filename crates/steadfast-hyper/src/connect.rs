//! The connector hyper-util's pool calls to open a connection: take a
//! per-host slot (pool acquire timeout), then DNS + TCP + TLS under the
//! connect timeout, then wrap the stream in [`Conn`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};
use steadfast_core::TimeoutPhase;
use tokio::sync::OwnedSemaphorePermit;
use tower_service::Service;

use crate::config::Config;
use crate::conn::{Conn, HostState, Hosts, Stream};
use crate::error::{DnsError, ErrorKind, HyperError, find_in_chain};

/// Opens connections for hyper-util's pool. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    hosts: Arc<Hosts>,
    tcp: HttpConnector<Resolver>,
    #[cfg(feature = "rustls")]
    tls: crate::tls::Tls,
    connect_timeout: Duration,
    pool_acquire_timeout: Duration,
    /// Every connection speaks HTTP/2 (h2c or TLS without ALPN), whatever
    /// the handshake negotiated.
    prior_knowledge: bool,
}

impl Connector {
    pub(crate) fn new(
        config: &Config,
        hosts: Arc<Hosts>,
        #[cfg(feature = "rustls")] tls: crate::tls::Tls,
    ) -> Self {
        let mut tcp = HttpConnector::new_with_resolver(Resolver(GaiResolver::new()));
        tcp.enforce_http(false);
        tcp.set_nodelay(config.tcp_nodelay);
        tcp.set_keepalive(config.tcp_keepalive);
        Self {
            shared: Arc::new(Shared {
                hosts,
                tcp,
                #[cfg(feature = "rustls")]
                tls,
                connect_timeout: config.connect_timeout,
                pool_acquire_timeout: config.pool_acquire_timeout,
                prior_knowledge: config.http2_prior_knowledge,
            }),
        }
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = HyperError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, HyperError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { shared.connect(dst).await })
    }
}

impl Shared {
    async fn connect(&self, dst: Uri) -> Result<Conn, HyperError> {
        let (Some(scheme), Some(authority)) = (dst.scheme(), dst.authority()) else {
            // hyper-util always passes `scheme://authority`; stay typed if that ever changes.
            return Err(HyperError::new(
                ErrorKind::InvalidRequest,
                dst.path(),
                false,
                Some("the URI has no scheme or no host".into()),
            ));
        };
        let host = self.hosts.get(scheme.as_str() == "https", authority);

        // The slot first: it is what the cap counts, and holding it while
        // connecting keeps concurrent connects within the cap too.
        let permit = if let Ok(p) = host.slots.clone().try_acquire_owned() {
            p
        } else {
            self.wait_for_slot(&host).await?
        };

        let opened = tokio::time::timeout(self.connect_timeout, self.open(&host, dst)).await;
        let (stream, h2) = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(policy.name = host.name(), server.pool = %host.key, error.type = ?e.kind(), "connect failed");
                return Err(e);
            }
            Err(_) => {
                tracing::debug!(policy.name = host.name(), server.pool = %host.key, "connect timeout");
                return Err(HyperError::timeout(
                    TimeoutPhase::Connect,
                    &host.key,
                    self.connect_timeout,
                    false,
                ));
            }
        };
        Ok(Conn::open(stream, host, permit, h2 || self.prior_knowledge))
    }

    /// The cap is reached: wait for a connection to close, up to the pool
    /// acquire timeout.
    async fn wait_for_slot(&self, host: &HostState) -> Result<OwnedSemaphorePermit, HyperError> {
        tracing::debug!(policy.name = host.name(), server.pool = %host.key, max = host.max, "connection cap reached, waiting for a slot");
        let acquire = host.slots.clone().acquire_owned();
        match tokio::time::timeout(self.pool_acquire_timeout, acquire).await {
            Ok(Ok(permit)) if host.waiting.load(Ordering::Relaxed) > 0 => Ok(permit),
            Ok(Ok(_unneeded)) => {
                // hyper-util finishes the connects of requests that were served
                // (or dropped) in the background; opening a connection for
                // nobody would only churn the server.
                tracing::trace!(policy.name = host.name(), server.pool = %host.key, "slot freed after every waiter was served; not connecting");
                Err(HyperError::new(
                    ErrorKind::Connect,
                    &host.key,
                    false,
                    Some(
                        "connect abandoned: no request is waiting for a connection any more".into(),
                    ),
                ))
            }
            // The semaphore is never closed; treat it like a timeout if it were.
            Ok(Err(_)) | Err(_) => Err(self.pool_timeout(host)),
        }
    }

    /// The wait for a slot timed out. Counted and logged where a request
    /// receives it ([`crate::future`]): a connect that hyper-util finishes
    /// in the background after its request was served (every request
    /// racing an HTTP/2 connection's ALPN does this) times out for nobody.
    fn pool_timeout(&self, host: &HostState) -> HyperError {
        // Slots, not open connections: connects in flight hold slots too.
        let taken = host.permits_in_use();
        tracing::debug!(
            policy.name = host.name(),
            server.pool = %host.key,
            taken,
            max = host.max,
            "no connection slot became free within the pool acquire timeout"
        );
        HyperError::pool_timeout(&host.key, self.pool_acquire_timeout, taken, host.max)
    }

    /// DNS + TCP, then TLS for `https`.
    async fn open(&self, host: &HostState, dst: Uri) -> Result<(Stream, bool), HyperError> {
        let is_https = dst.scheme_str() == Some("https");
        let hostname = dst.host().unwrap_or_default().to_owned();
        let tcp = self.tcp.clone().call(dst).await.map_err(|e| {
            let kind = if find_in_chain::<DnsError>(&e).is_some() {
                ErrorKind::Dns
            } else {
                ErrorKind::Connect
            };
            HyperError::connect(kind, &host.key, &host.server, Box::new(e))
        })?;
        let tcp = tcp.into_inner();
        if is_https {
            self.tls_handshake(host, &hostname, tcp).await
        } else {
            Ok((Stream::Tcp(tcp), false))
        }
    }

    #[cfg(feature = "rustls")]
    async fn tls_handshake(
        &self,
        host: &HostState,
        hostname: &str,
        tcp: tokio::net::TcpStream,
    ) -> Result<(Stream, bool), HyperError> {
        use crate::tls::TlsFailure;
        match self.tls.handshake(hostname, tcp).await {
            Ok((tls, h2)) => Ok((Stream::Tls(Box::new(tls)), h2)),
            Err(e @ TlsFailure::Name(_)) => Err(HyperError::new(
                ErrorKind::InvalidRequest,
                &host.key,
                false,
                Some(Box::new(e)),
            )),
            Err(e @ TlsFailure::Handshake(_)) => Err(HyperError::connect(
                ErrorKind::Tls,
                &host.key,
                &host.server,
                Box::new(e),
            )),
        }
    }

    #[cfg(not(feature = "rustls"))]
    #[allow(clippy::unused_async)]
    async fn tls_handshake(
        &self,
        host: &HostState,
        _hostname: &str,
        _tcp: tokio::net::TcpStream,
    ) -> Result<(Stream, bool), HyperError> {
        Err(https_unsupported(&host.key))
    }
}

/// `https` without the `rustls` feature.
#[cfg(not(feature = "rustls"))]
pub(crate) fn https_unsupported(host: &str) -> HyperError {
    HyperError::new(
        ErrorKind::InvalidRequest,
        host,
        false,
        Some("https needs the `rustls` feature of steadfast-hyper".into()),
    )
}

/// hyper-util's getaddrinfo resolver, with failures marked as DNS failures.
#[derive(Clone, Debug)]
struct Resolver(GaiResolver);

impl Service<Name> for Resolver {
    type Response = GaiAddrs;
    type Error = DnsError;
    type Future = Pin<Box<dyn Future<Output = Result<GaiAddrs, DnsError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(DnsError)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let lookup = self.0.call(name);
        Box::pin(async move { lookup.await.map_err(DnsError) })
    }
}
