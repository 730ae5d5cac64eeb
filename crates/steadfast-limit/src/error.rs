//! Errors of the limiter layers.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use steadfast_core::error::find_in_chain as find;
use steadfast_core::{TimeoutError, TimeoutPhase};

/// The error of every layer in this crate: the inner transport's error, or
/// the limiter's own refusal.
///
/// Limit layers stack (`LimitError<LimitError<E>>` for a bulkhead over a
/// rate limit); [`LimitError::rate_limited`] and [`LimitError::rejected`]
/// find a refusal at any depth, and [`steadfast_core::ErrorClass::of`] sees
/// through every level: each variant is the `source()` of this error, and a
/// bulkhead queue timeout carries a [`TimeoutError`] of phase
/// [`TimeoutPhase::Queue`].
///
/// Each variant displays what the limiter did and leaves the details to
/// its `source()` (the refusal, or the transport's error): print the whole
/// chain with [`steadfast_core::error::Report`] (or anyhow's `{:#}`).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LimitError<E> {
    /// The transport below failed.
    #[error("the transport below the limiter failed")]
    Inner(#[source] E),
    /// A rate limit or a server-requested pause would outlast the request's deadline.
    #[error("the limiter refused the request")]
    RateLimited(#[source] RateLimited),
    /// The concurrency limit refused the request.
    #[error("the limiter refused the request")]
    Rejected(#[source] Rejected),
}

impl<E> From<RateLimited> for LimitError<E> {
    fn from(e: RateLimited) -> Self {
        Self::RateLimited(e)
    }
}

impl<E> From<Rejected> for LimitError<E> {
    fn from(e: Rejected) -> Self {
        Self::Rejected(e)
    }
}

impl<E> LimitError<E> {
    /// The transport's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The transport's error, by reference.
    pub const fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }
}

impl<E: StdError + 'static> LimitError<E> {
    /// The rate-limit or pacing refusal behind this error, from whichever
    /// limit layer of the stack it came.
    pub fn rate_limited(&self) -> Option<&RateLimited> {
        find(self)
    }

    /// The concurrency refusal behind this error, from whichever limit
    /// layer of the stack it came.
    pub fn rejected(&self) -> Option<&Rejected> {
        find(self)
    }

    /// `true` when a rate limit or a server pause refused the request.
    pub fn is_rate_limited(&self) -> bool {
        self.rate_limited().is_some()
    }

    /// `true` when a concurrency limit refused the request.
    pub fn is_rejected(&self) -> bool {
        self.rejected().is_some()
    }
}

/// What made a request wait for its turn.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitCause {
    /// The client's own quota ([`crate::RateLimit`]).
    Quota,
    /// The server asked to pause (`Retry-After`, an exhausted `RateLimit`,
    /// or a bare 429), see [`crate::Pacing`].
    ServerPause,
    /// The server's remaining quota, spread until its reset, see [`crate::Pacing`].
    ServerPace,
}

impl std::fmt::Display for LimitCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Quota => "the rate limit",
            Self::ServerPause => "a pause the server asked for",
            Self::ServerPace => "the pace the server's quota allows",
        })
    }
}

/// A request was refused at once because waiting for its turn would
/// outlast its [`steadfast_core::Deadline`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{name}`: {cause} lets this request go in {wait:?}, after its deadline; failed at once instead \
     of waiting (give the request a longer deadline, or send less)"
)]
pub struct RateLimited {
    name: Arc<str>,
    cause: LimitCause,
    wait: Duration,
}

impl RateLimited {
    pub(crate) const fn new(name: Arc<str>, cause: LimitCause, wait: Duration) -> Self {
        Self { name, cause, wait }
    }

    /// The name of the policy that refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why the request had to wait.
    pub const fn cause(&self) -> LimitCause {
        self.cause
    }

    /// How long it would have waited (a lower bound).
    pub const fn wait(&self) -> Duration {
        self.wait
    }
}

/// Why a concurrency limit refused a request.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// All slots were taken and the queue was full.
    QueueFull,
    /// The request waited `max_queue_wait` for a slot.
    QueueTimeout,
    /// The request's deadline passed while it waited for a slot (or had
    /// already passed).
    Deadline,
}

/// A concurrency limit (bulkhead or adaptive) refused a request; it was
/// never sent.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct Rejected {
    reason: RejectReason,
    name: Arc<str>,
    limit: usize,
    max_queue: usize,
    waited: Duration,
    #[source]
    timeout: Option<TimeoutError>,
}

impl Rejected {
    pub(crate) fn new(
        reason: RejectReason,
        name: Arc<str>,
        limit: usize,
        max_queue: usize,
        waited: Duration,
    ) -> Self {
        let timeout = (reason == RejectReason::QueueTimeout)
            .then(|| TimeoutError::new(TimeoutPhase::Queue, waited));
        Self {
            reason,
            name,
            limit,
            max_queue,
            waited,
            timeout,
        }
    }

    fn message(&self) -> String {
        let Self {
            name,
            limit,
            max_queue,
            waited,
            ..
        } = self;
        match self.reason {
            RejectReason::QueueFull => format!(
                "`{name}` rejected the request: {limit} in flight and {max_queue} queued already; \
                 shed load, or raise max_in_flight / max_queue"
            ),
            RejectReason::QueueTimeout => format!(
                "`{name}` rejected the request after {waited:?} in its queue (max_queue_wait) with \
                 {limit} in flight; the server is slow or the limit too low"
            ),
            RejectReason::Deadline => format!(
                "`{name}` rejected the request: its deadline passed after {waited:?} waiting for \
                 one of {limit} slots"
            ),
        }
    }

    /// Why.
    pub const fn reason(&self) -> RejectReason {
        self.reason
    }

    /// The name of the policy that refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The concurrency limit at the time.
    pub const fn limit(&self) -> usize {
        self.limit
    }

    /// How long the request waited before it was refused.
    pub const fn waited(&self) -> Duration {
        self.waited
    }
}

impl PartialEq for Rejected {
    fn eq(&self, other: &Self) -> bool {
        (
            self.reason,
            &self.name,
            self.limit,
            self.max_queue,
            self.waited,
        ) == (
            other.reason,
            &other.name,
            other.limit,
            other.max_queue,
            other.waited,
        )
    }
}

impl Eq for Rejected {}

#[cfg(test)]
mod tests {
    use steadfast_core::ErrorClass;

    use super::*;

    #[test]
    fn messages_say_what_happened_and_what_to_do() {
        let r = Rejected::new(RejectReason::QueueFull, "api".into(), 8, 4, Duration::ZERO);
        assert_eq!(
            r.to_string(),
            "`api` rejected the request: 8 in flight and 4 queued already; shed load, or raise \
             max_in_flight / max_queue"
        );
        let t = Rejected::new(
            RejectReason::QueueTimeout,
            "api".into(),
            8,
            4,
            Duration::from_secs(5),
        );
        assert!(t.to_string().contains("after 5s in its queue"), "{t}");
        let rl = RateLimited::new(
            "github".into(),
            LimitCause::ServerPause,
            Duration::from_secs(30),
        );
        assert_eq!(
            rl.to_string(),
            "`github`: a pause the server asked for lets this request go in 30s, after its \
             deadline; failed at once instead of waiting (give the request a longer deadline, or \
             send less)"
        );
    }

    #[test]
    fn error_class_sees_through() {
        let t = LimitError::<std::io::Error>::Rejected(Rejected::new(
            RejectReason::QueueTimeout,
            "b".into(),
            1,
            1,
            Duration::from_secs(1),
        ));
        assert_eq!(
            ErrorClass::of(&t),
            ErrorClass::Timeout(Some(TimeoutPhase::Queue))
        );
        let io = LimitError::Inner(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(ErrorClass::of(&io), ErrorClass::Connect);
        assert!(io.inner().is_some() && !io.is_rejected() && !io.is_rate_limited());
        // Stacked layers: the refusal is found at any depth.
        let rl = RateLimited::new("p".into(), LimitCause::ServerPace, Duration::from_secs(1));
        let nested = LimitError::<LimitError<std::io::Error>>::Inner(rl.clone().into());
        assert_eq!(nested.rate_limited(), Some(&rl));
        assert!(nested.is_rate_limited() && !nested.is_rejected());
        // Each level says what it did, the refusal says why: every cause once.
        assert_eq!(
            steadfast_core::error::Report::new(&nested).to_string(),
            format!(
                "the transport below the limiter failed: the limiter refused the request: {rl}"
            )
        );
    }
}
