//! Errors every layer shares: timeouts with their phase, connect failures,
//! and [`ErrorClass`], which reads any error chain to tell what happened.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Which timeout of the hierarchy fired.
///
/// Defaults across steadfast: connect 5 s < read 30 s < total 60 s.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutPhase {
    /// Waiting for a pooled connection (or a per-host connection slot).
    PoolAcquire,
    /// Establishing the connection (TCP, and TLS when it applies).
    Connect,
    /// Writing the request.
    Write,
    /// Waiting for the response head, or between two body frames.
    Read,
    /// One attempt, from send to response head.
    Attempt,
    /// The whole logical request, all attempts and waits included ([`crate::Deadline`]).
    Total,
    /// Waiting in a policy's queue (concurrency limit, rate limit).
    Queue,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PoolAcquire => "pool acquire",
            Self::Connect => "connect",
            Self::Write => "write",
            Self::Read => "read",
            Self::Attempt => "attempt",
            Self::Total => "total",
            Self::Queue => "queue",
        })
    }
}

/// A timeout fired. Layers and transports put this type in their error
/// chain so [`ErrorClass::of`] and callers can tell which phase it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{phase} timeout: gave up after {limit:?}")]
pub struct TimeoutError {
    phase: TimeoutPhase,
    limit: Duration,
}

impl TimeoutError {
    /// A timeout in `phase` after waiting `limit`.
    pub const fn new(phase: TimeoutPhase, limit: Duration) -> Self {
        Self { phase, limit }
    }

    /// The phase that timed out.
    pub const fn phase(&self) -> TimeoutPhase {
        self.phase
    }

    /// How long was waited.
    pub const fn limit(&self) -> Duration {
        self.limit
    }
}

/// The connection could not be established, so the request never reached
/// the server and is safe to retry whatever its method.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to {authority}")]
pub struct ConnectError {
    authority: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ConnectError {
    /// A connect failure to `authority` (`host:port`), caused by `source`.
    pub fn new(
        authority: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            authority: authority.into(),
            source: Some(source.into()),
        }
    }

    /// The `host:port` that could not be reached.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// What kind of failure an error chain describes, as far as retry and
/// circuit breaking care.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// No connection: the request did not reach the server.
    Connect,
    /// A timeout fired; the phase is known when a [`TimeoutError`] is in the chain.
    Timeout(Option<TimeoutPhase>),
    /// The connection broke while the request or response was in flight.
    Reset,
    /// The network failed (host or network unreachable) on a socket whose
    /// state is unknown: transient, but the request may have been sent.
    Network,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Walks `err` and its `source()` chain and reports the first thing it
    /// recognises: steadfast's [`TimeoutError`] and [`ConnectError`],
    /// `tokio::time::error::Elapsed`, and `std::io::Error` kinds
    /// (refused → connect, unreachable → network, timed out → timeout,
    /// reset/aborted/broken pipe/unexpected EOF → reset). An error wrapped
    /// inside an `io::Error` (`io::Error::new(kind, inner)`) is looked at
    /// before the kind of its wrapper.
    ///
    /// `ConnectionRefused` counts as a connect failure because TCP reports
    /// it only from `connect()`; an established connection that dies
    /// reports a reset instead. Unreachable hosts and networks, though, are
    /// also reported on established sockets, so they are
    /// [`ErrorClass::Network`]: the request may have been sent.
    pub fn of(err: &(dyn StdError + 'static)) -> Self {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<TimeoutError>() {
                return Self::Timeout(Some(t.phase()));
            }
            if e.is::<ConnectError>() {
                return Self::Connect;
            }
            if e.is::<tokio::time::error::Elapsed>() {
                return Self::Timeout(None);
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                // `io::Error::source()` skips the wrapped error itself.
                if let Some(inner) = io.get_ref() {
                    let class = Self::of(inner);
                    if class != Self::Other {
                        return class;
                    }
                }
                if let Some(class) = Self::of_io_kind(io.kind()) {
                    return class;
                }
            }
            cur = e.source();
        }
        Self::Other
    }

    fn of_io_kind(kind: std::io::ErrorKind) -> Option<Self> {
        use std::io::ErrorKind as K;
        Some(match kind {
            K::ConnectionRefused | K::AddrNotAvailable => Self::Connect,
            K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => Self::Network,
            K::TimedOut => Self::Timeout(None),
            K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected => Self::Reset,
            _ => return None,
        })
    }

    /// `true` when the request certainly did not reach the server, so even a
    /// non-idempotent request may be re-sent.
    pub const fn request_not_sent(self) -> bool {
        matches!(
            self,
            Self::Connect
                | Self::Timeout(Some(
                    TimeoutPhase::Connect | TimeoutPhase::PoolAcquire | TimeoutPhase::Queue
                ))
        )
    }

    /// `true` for failures a new attempt may fix: connect errors, timeouts,
    /// resets, network failures.
    pub const fn is_transient(self) -> bool {
        !matches!(self, Self::Other)
    }
}

/// The first `T` in `err` or its `source()` chain: how a layer finds an
/// error of its own (or of a layer below) behind the layers that wrapped
/// it.
///
/// ```
/// use steadfast_core::error::find_in_chain;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the transport failed")]
/// struct Wrapper(#[source] std::io::Error);
///
/// let err = Wrapper(std::io::ErrorKind::ConnectionRefused.into());
/// let io = find_in_chain::<std::io::Error>(&err).unwrap();
/// assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
/// ```
pub fn find_in_chain<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// An error and its causes on one line, outermost first: `a: b: c`.
///
/// steadfast's wrappers follow the Rust API guidelines on error chains:
/// each says what its own layer did (`the limiter refused the request`,
/// `the transport below the circuit breaker failed`) and leaves what went
/// wrong below to its `source()`, never both, so a chain reporter prints
/// every cause once. `Report` is such a reporter, for logs and messages;
/// anyhow's `{:#}` and eyre print the same chain. A cause whose text
/// repeats the one before it (a wrapper of another library that prints
/// its source as its own message) is printed once.
///
/// ```
/// use steadfast_core::error::Report;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the transport failed")]
/// struct Wrapper(#[source] std::io::Error);
///
/// let err = Wrapper(std::io::ErrorKind::ConnectionRefused.into());
/// assert_eq!(Report::new(&err).to_string(), "the transport failed: connection refused");
/// ```
#[derive(Clone, Copy)]
pub struct Report<'a>(&'a (dyn StdError + 'static));

impl<'a> Report<'a> {
    /// Reports `err` and its `source()` chain.
    pub fn new(err: &'a (dyn StdError + 'static)) -> Self {
        Self(err)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            let text = e.to_string();
            if text != last {
                write!(f, ": {text}")?;
                last = text;
            }
            cur = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_prints_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        struct Echo(#[source] Outer);
        let err = Echo(Outer(Box::new(TimeoutError::new(
            TimeoutPhase::Read,
            Duration::from_secs(30),
        ))));
        assert_eq!(
            Report::new(&err).to_string(),
            "outer: read timeout: gave up after 30s"
        );
        let lone = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(format!("{:?}", Report::new(&lone)), "connection refused");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Box<dyn StdError + Send + Sync>);

    #[test]
    fn finds_causes_deep_in_the_chain() {
        let t = Outer(Box::new(TimeoutError::new(
            TimeoutPhase::Read,
            Duration::from_secs(30),
        )));
        assert_eq!(
            ErrorClass::of(&t),
            ErrorClass::Timeout(Some(TimeoutPhase::Read))
        );
        let c = Outer(Box::new(ConnectError::new(
            "a:1",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )));
        assert_eq!(ErrorClass::of(&c), ErrorClass::Connect);
        assert!(ErrorClass::of(&c).request_not_sent());
        let r = Outer(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(ErrorClass::of(&r), ErrorClass::Reset);
        assert!(!ErrorClass::Reset.request_not_sent());
        let unreachable = Outer(Box::new(std::io::Error::from(
            std::io::ErrorKind::HostUnreachable,
        )));
        assert_eq!(ErrorClass::of(&unreachable), ErrorClass::Network);
        assert!(!ErrorClass::Network.request_not_sent());
        assert!(ErrorClass::Network.is_transient());
        let o = Outer(Box::new(std::fmt::Error));
        assert_eq!(ErrorClass::of(&o), ErrorClass::Other);
        assert!(!ErrorClass::Other.is_transient());
    }

    #[test]
    fn looks_inside_io_errors() {
        let wrapped = std::io::Error::other(ConnectError::new("h:1", "refused"));
        assert_eq!(ErrorClass::of(&wrapped), ErrorClass::Connect);
        let phase = std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            TimeoutError::new(TimeoutPhase::Connect, Duration::from_secs(5)),
        );
        assert_eq!(
            ErrorClass::of(&phase),
            ErrorClass::Timeout(Some(TimeoutPhase::Connect))
        );
        assert!(ErrorClass::of(&phase).request_not_sent());
        // An unrecognised inner error falls back to the wrapper's kind.
        let kind = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer went away");
        assert_eq!(ErrorClass::of(&kind), ErrorClass::Reset);
    }

    #[test]
    fn messages_say_what_happened() {
        let t = TimeoutError::new(TimeoutPhase::Connect, Duration::from_secs(5));
        assert_eq!(t.to_string(), "connect timeout: gave up after 5s");
        let c = ConnectError::new("example.com:443", "dns failure");
        assert_eq!(c.to_string(), "could not connect to example.com:443");
    }
}
