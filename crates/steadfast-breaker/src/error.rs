//! [`BreakerOpen`], the typed rejection, and [`BreakerError`], the layer's error.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use steadfast_core::Outcome;

use crate::event::State;

/// The breaker refused the call without sending it.
///
/// `retry_after` says when to come back: the rest of the break while open,
/// a short wait while half-open probes are out, the base break while
/// isolated. A retry layer outside the breaker can honour it by mapping the
/// rejection to [`Outcome::Retryable`] (see [`BreakerOpen::outcome`]).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerOpen {
    /// The breaker's key (for a registry: `scheme://host:port`).
    pub key: Arc<str>,
    /// When a call may be admitted again, at the earliest.
    pub retry_after: Duration,
    /// The breaker's state when it refused: [`State::Open`],
    /// [`State::HalfOpen`] (probe slots taken, or not this call's share) or
    /// [`State::Isolated`].
    pub state: State,
}

impl BreakerOpen {
    pub(crate) const fn new(key: Arc<str>, retry_after: Duration, state: State) -> Self {
        Self {
            key,
            retry_after,
            state,
        }
    }

    /// The outcome a retry layer should see: `Retryable` after `retry_after`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_breaker::{BreakerError, BreakerOpen};
    /// use steadfast_core::{Classify, DefaultClassifier, Outcome};
    ///
    /// // A retry classifier for a stack with the breaker inside the retry layer.
    /// fn classify<B, E: std::error::Error + 'static>(
    ///     r: &Result<http::Response<B>, BreakerError<E>>,
    /// ) -> Outcome {
    ///     match r {
    ///         Err(BreakerError::Open(open)) => open.outcome(),
    ///         other => DefaultClassifier.classify(other),
    ///     }
    /// }
    /// # let _ = classify::<(), std::io::Error>;
    /// ```
    pub const fn outcome(&self) -> Outcome {
        Outcome::Retryable {
            after: Some(self.retry_after),
        }
    }

    /// Finds a `BreakerOpen` in `err` or its `source()` chain, for
    /// classifiers that see the error only behind other layers.
    pub fn find<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a Self> {
        steadfast_core::error::find_in_chain(err)
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker")?;
        if !self.key.is_empty() {
            write!(f, " for {}", self.key)?;
        }
        match self.state {
            State::Isolated => {
                f.write_str(" is isolated by hand and refuses every call until reset()")?;
            }
            State::HalfOpen => f.write_str(" is half-open and letting only probes through")?,
            _ => f.write_str(" is open")?,
        }
        write!(f, "; retry in {}", Secs(self.retry_after))
    }
}

impl StdError for BreakerOpen {}

/// A duration for people: `350 ms`, `1.2 s`.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < Duration::from_secs(1) {
            write!(f, "{} ms", self.0.as_millis())
        } else {
            write!(f, "{:.1} s", self.0.as_secs_f64())
        }
    }
}

/// The error of a [`Breaker`](crate::Breaker) transport.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker refused the call; nothing was sent. The rejection, which
    /// says for how long, is the `source()`, where [`BreakerOpen::find`]
    /// sees it.
    #[error("the circuit breaker refused the request")]
    Open(#[from] BreakerOpen),
    /// The inner transport failed. Its error is the `source()`, where
    /// [`steadfast_core::ErrorClass::of`] still finds connect errors and
    /// timeouts behind the breaker.
    #[error("the transport below the circuit breaker failed")]
    Inner(#[source] E),
}

impl<E> BreakerError<E> {
    /// `true` when the breaker refused the call.
    pub const fn is_open(&self) -> bool {
        matches!(self, Self::Open(_))
    }

    /// The rejection, if the breaker refused the call.
    pub const fn as_open(&self) -> Option<&BreakerOpen> {
        match self {
            Self::Open(open) => Some(open),
            Self::Inner(_) => None,
        }
    }

    /// The inner transport's error, if it failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Open(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use steadfast_core::ErrorClass;

    use super::*;

    #[test]
    fn messages_say_when_to_come_back() {
        let open = BreakerOpen::new(
            "http://api.example.com:443".into(),
            Duration::from_millis(1_234),
            State::Open,
        );
        assert_eq!(
            open.to_string(),
            "circuit breaker for http://api.example.com:443 is open; retry in 1.2 s"
        );
        let probing = BreakerOpen::new("".into(), Duration::from_millis(500), State::HalfOpen);
        assert_eq!(
            probing.to_string(),
            "circuit breaker is half-open and letting only probes through; retry in 500 ms"
        );
        let isolated = BreakerOpen::new("k".into(), Duration::from_secs(5), State::Isolated);
        assert_eq!(
            isolated.to_string(),
            "circuit breaker for k is isolated by hand and refuses every call until reset(); retry in 5.0 s"
        );
    }

    #[test]
    fn retry_layers_can_honour_it() {
        let open = BreakerOpen::new("k".into(), Duration::from_secs(3), State::Open);
        assert_eq!(
            open.outcome(),
            Outcome::Retryable {
                after: Some(Duration::from_secs(3))
            }
        );
        let err: BreakerError<std::io::Error> = open.clone().into();
        assert!(err.is_open());
        assert_eq!(BreakerOpen::find(&err), Some(&open));
    }

    #[test]
    fn inner_errors_keep_their_chain() {
        let err: BreakerError<std::io::Error> =
            BreakerError::Inner(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(
            steadfast_core::error::Report::new(&err).to_string(),
            "the transport below the circuit breaker failed: connection refused"
        );
        assert!(err.source().is_some());
        assert_eq!(ErrorClass::of(&err), ErrorClass::Connect);
        assert_eq!(BreakerOpen::find(&err), None);
        assert!(err.into_inner().is_some());
    }
}
