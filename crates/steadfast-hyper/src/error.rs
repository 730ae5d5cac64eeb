//! [`HyperError`]: what failed, in which phase, and whether the request may
//! have reached the server.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use steadfast_core::error::find_in_chain;
use steadfast_core::{BoxError, ConnectError, TimeoutError, TimeoutPhase};

/// The phase of a request that failed; see [`HyperError::kind`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request cannot be sent as built: no host, an unsupported scheme
    /// (`https` without the `rustls` feature), a host name TLS cannot use.
    InvalidRequest,
    /// Resolving the host name failed.
    Dns,
    /// The TCP connection could not be established, or it closed before
    /// it took the request.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// Every connection slot of the host stayed taken for the whole pool
    /// acquire timeout.
    PoolTimeout {
        /// Connection slots of the host taken when the wait gave up: its
        /// open connections plus its connects in flight, each of which
        /// holds a slot (see [`crate::HyperTransport::pool_permits_in_use`]).
        open: usize,
        /// The per-host cap, `max_connections_per_host`.
        max: usize,
    },
    /// A timeout fired; the phase says which one. `Connect` covers DNS, TCP
    /// and TLS; `Read` the wait for the response head or for the next body
    /// frame; `Total` the request's [`steadfast_core::Deadline`].
    Timeout(TimeoutPhase),
    /// Writing the request failed: the connection broke while sending.
    Write,
    /// Reading the response failed: the connection broke, was reset, or
    /// ended before the body was complete.
    Read,
    /// The server refused the request before processing any of it: it
    /// reset the request's HTTP/2 stream with `REFUSED_STREAM` (RFC 9113
    /// §8.7), often because it had too many requests in progress. The
    /// request was sent but, by that guarantee, not acted on: it is safe
    /// to send again whatever its method.
    Refused,
    /// The server broke the HTTP protocol (unparsable head, bad framing).
    Protocol,
    /// The response body is larger than the `max_body` limit.
    BodyTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The request body returned an error while it was being sent.
    RequestBody,
}

impl ErrorKind {
    /// `true` for the phases that end before any byte of the request is
    /// written: a request that failed this way is safe to send again
    /// whatever its method. [`ErrorKind::Refused`] is as safe, though its
    /// request was written; [`HyperError::may_have_reached_server`] covers
    /// both.
    pub const fn before_send(self) -> bool {
        matches!(
            self,
            Self::InvalidRequest
                | Self::Dns
                | Self::Connect
                | Self::Tls
                | Self::PoolTimeout { .. }
                | Self::Timeout(TimeoutPhase::Connect | TimeoutPhase::PoolAcquire)
        )
    }
}

/// A request sent through [`crate::HyperTransport`] failed, or its response
/// body broke off.
///
/// - [`HyperError::kind`] says which phase failed;
/// - [`HyperError::may_have_reached_server`] says whether a retry could
///   repeat a side effect (`false` only when the request certainly never
///   left this process);
/// - the [`source`](StdError::source) chain holds steadfast-core's
///   [`TimeoutError`] (timeouts, with their phase) or [`ConnectError`]
///   (dns, connect, tls), or the `std::io::Error` of a broken connection, so
///   [`steadfast_core::ErrorClass::of`] classifies it like any other
///   transport's error.
///
/// Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct HyperError {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    host: Box<str>,
    reached: bool,
    source: Option<BoxError>,
}

impl HyperError {
    pub(crate) fn new(
        kind: ErrorKind,
        host: &str,
        reached: bool,
        source: Option<BoxError>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                host: host.into(),
                reached,
                source,
            }),
        }
    }

    /// A failure to establish the connection (`Dns`, `Connect` or `Tls`):
    /// the chain gets a [`ConnectError`] naming `authority`.
    pub(crate) fn connect(kind: ErrorKind, host: &str, authority: &str, cause: BoxError) -> Self {
        Self::new(
            kind,
            host,
            false,
            Some(Box::new(ConnectError::new(authority, cause))),
        )
    }

    /// A timeout in `phase` after `limit`.
    pub(crate) fn timeout(phase: TimeoutPhase, host: &str, limit: Duration, reached: bool) -> Self {
        Self::new(
            ErrorKind::Timeout(phase),
            host,
            reached,
            Some(Box::new(TimeoutError::new(phase, limit))),
        )
    }

    /// The pool acquire timeout fired with `taken` of `max` slots taken.
    pub(crate) fn pool_timeout(host: &str, limit: Duration, taken: usize, max: usize) -> Self {
        Self::new(
            ErrorKind::PoolTimeout { open: taken, max },
            host,
            false,
            Some(Box::new(TimeoutError::new(
                TimeoutPhase::PoolAcquire,
                limit,
            ))),
        )
    }

    /// The server reset the request's HTTP/2 stream with `REFUSED_STREAM`
    /// (see [`refused_stream`]). The chain holds an `io::Error` of kind
    /// `ConnectionRefused`, which [`steadfast_core::ErrorClass::of`] reads
    /// as "never sent", wrapping `cause`.
    pub(crate) fn refused(host: &str, cause: BoxError) -> Self {
        let source = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, cause);
        Self::new(ErrorKind::Refused, host, false, Some(Box::new(source)))
    }

    /// Which phase failed.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The pool key of the request: `scheme://host[:port]`, the port only
    /// when it is not the scheme's default, without any `user:password@`
    /// the URL carried (as [`crate::ConnectionInfo::host`]).
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// `false` only when the request certainly did not leave this process
    /// (pool wait, DNS, connect, TLS, or a deadline that expired before a
    /// connection took the request), or the server refused it unprocessed
    /// ([`ErrorKind::Refused`]), so even a non-idempotent request may be
    /// sent again. `true` means the server may have seen some or all of it.
    pub fn may_have_reached_server(&self) -> bool {
        self.inner.reached
    }

    /// `true` if a timeout fired (any phase, pool acquire included).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Timeout(_) | ErrorKind::PoolTimeout { .. }
        )
    }

    /// The timeout phase, if a timeout fired.
    pub fn timeout_phase(&self) -> Option<TimeoutPhase> {
        match self.inner.kind {
            ErrorKind::Timeout(phase) => Some(phase),
            ErrorKind::PoolTimeout { .. } => Some(TimeoutPhase::PoolAcquire),
            _ => None,
        }
    }
}

impl fmt::Display for HyperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = &self.inner.host;
        match self.inner.kind {
            ErrorKind::InvalidRequest => write!(f, "invalid request to {host}"),
            ErrorKind::Dns => write!(
                f,
                "DNS lookup for {host} failed; check the host name and the resolver"
            ),
            ErrorKind::Connect => write!(
                f,
                "could not open a connection to {host}, or it closed before the request was sent; \
                 is the server up and reachable?"
            ),
            ErrorKind::Tls => write!(
                f,
                "TLS handshake with {host} failed; check the server certificate and the trusted roots"
            ),
            ErrorKind::PoolTimeout { open, max } => write!(
                f,
                "no connection to {host} became free in time: {open} of {max} connection slots are taken \
                 (connections open or being opened); \
                 raise max_connections_per_host or pool_acquire_timeout, or send fewer requests at once"
            ),
            ErrorKind::Timeout(TimeoutPhase::Connect) => write!(
                f,
                "connect timeout: no connection to {host} (DNS, TCP and TLS) within the connect timeout; \
                 is the server up and reachable?"
            ),
            ErrorKind::Timeout(TimeoutPhase::Read) => write!(
                f,
                "read timeout: {host} sent nothing for the whole read timeout; \
                 the server may be overloaded, or raise read_timeout for slow endpoints"
            ),
            ErrorKind::Timeout(TimeoutPhase::Total) => {
                write!(f, "the request's deadline passed before {host} answered")
            }
            ErrorKind::Timeout(phase) => write!(f, "{phase} timeout on a request to {host}"),
            ErrorKind::Write => write!(
                f,
                "sending the request to {host} failed; the server may have received part of it"
            ),
            ErrorKind::Read => write!(
                f,
                "reading the response from {host} failed: the connection broke"
            ),
            ErrorKind::Refused => write!(
                f,
                "{host} refused the request without processing it (HTTP/2 REFUSED_STREAM); \
                 it is safe to send again, but the server may be at its limit of concurrent requests"
            ),
            ErrorKind::Protocol => write!(
                f,
                "{host} broke the HTTP protocol (unparsable or oversized response head, bad framing); \
                 is it an HTTP server on that port?"
            ),
            ErrorKind::BodyTooLarge { limit } => write!(
                f,
                "the response body from {host} is larger than the max_body limit of {limit} bytes"
            ),
            ErrorKind::RequestBody => write!(
                f,
                "the request body to {host} failed while it was being sent"
            ),
        }
    }
}

impl fmt::Debug for HyperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperError")
            .field("kind", &self.inner.kind)
            .field("host", &self.inner.host)
            .field("may_have_reached_server", &self.inner.reached)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl StdError for HyperError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The resolver failed; marks DNS failures in the chain of hyper-util's
/// connector error, which does not expose its own kind.
#[derive(Debug, thiserror::Error)]
#[error("DNS lookup failed")]
pub(crate) struct DnsError(#[source] pub(crate) std::io::Error);

/// Why [`crate::Builder::build`] refused a configuration.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A timeout was set to zero, which would fail every request.
    #[error("{option} must be greater than zero")]
    ZeroTimeout {
        /// The builder option.
        option: &'static str,
    },
    /// `max_connections_per_host` is zero or too large.
    #[error("max_connections_per_host must be between 1 and {max}, got {got}")]
    MaxConnections {
        /// The value given.
        got: usize,
        /// The largest value accepted.
        max: usize,
    },
    /// A root certificate or the TLS configuration was rejected.
    #[cfg(feature = "rustls")]
    #[error("invalid TLS configuration")]
    Tls(#[source] rustls::Error),
    /// The operating system's root store could not be read.
    #[cfg(feature = "native-roots")]
    #[error("could not load the native root certificates: {0}")]
    NativeRoots(String),
}

/// `true` if the server reset the request's HTTP/2 stream with
/// `REFUSED_STREAM`, which RFC 9113 §8.7 allows only for a stream it did not
/// process. Only a reset the server sent counts: h2 raises
/// `REFUSED_STREAM` itself for pushes it declines.
///
/// h2 (0.4) reports a stream above a GOAWAY's last stream id as a GOAWAY
/// error with the GOAWAY's own reason, just as it reports the streams the
/// server did take when the connection then closes: such failures are
/// not told apart, and stay "may have reached the server".
#[cfg(feature = "http2")]
pub(crate) fn refused_stream(err: &(dyn StdError + 'static)) -> bool {
    find_in_chain::<h2::Error>(err).is_some_and(|e| {
        e.is_reset() && e.is_remote() && e.reason() == Some(h2::Reason::REFUSED_STREAM)
    })
}

/// Without HTTP/2, no stream to refuse.
#[cfg(not(feature = "http2"))]
pub(crate) fn refused_stream(_: &(dyn StdError + 'static)) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use steadfast_core::ErrorClass;

    use super::*;

    #[test]
    fn chains_classify_through_core() {
        let t = HyperError::timeout(
            TimeoutPhase::Read,
            "http://a:1",
            Duration::from_secs(30),
            true,
        );
        assert_eq!(
            ErrorClass::of(&t),
            ErrorClass::Timeout(Some(TimeoutPhase::Read))
        );
        assert!(t.may_have_reached_server());
        assert_eq!(t.timeout_phase(), Some(TimeoutPhase::Read));
        assert_eq!(
            t.to_string(),
            "read timeout: http://a:1 sent nothing for the whole read timeout; \
             the server may be overloaded, or raise read_timeout for slow endpoints"
        );

        let p = HyperError::pool_timeout("http://a:1", Duration::from_secs(5), 8, 8);
        assert_eq!(p.kind(), ErrorKind::PoolTimeout { open: 8, max: 8 });
        assert!(ErrorClass::of(&p).request_not_sent());
        assert!(!p.may_have_reached_server());
        assert!(p.to_string().contains("8 of 8"), "{p}");

        let c = HyperError::connect(
            ErrorKind::Dns,
            "http://nowhere.test:80",
            "nowhere.test:80",
            Box::new(DnsError(std::io::Error::other("no such host"))),
        );
        assert_eq!(ErrorClass::of(&c), ErrorClass::Connect);
        assert!(c.to_string().contains("nowhere.test"));
        assert!(find_in_chain::<DnsError>(&c).is_some());
        assert!(c.kind().before_send());
        assert!(!ErrorKind::Read.before_send());

        // Sent, but refused unprocessed: never sent as far as retries care.
        let r = HyperError::refused("http://a:1", "stream reset: REFUSED_STREAM".into());
        assert_eq!(r.kind(), ErrorKind::Refused);
        assert!(!r.may_have_reached_server());
        assert!(!r.kind().before_send());
        assert_eq!(ErrorClass::of(&r), ErrorClass::Connect);
        assert!(ErrorClass::of(&r).request_not_sent());
    }
}
