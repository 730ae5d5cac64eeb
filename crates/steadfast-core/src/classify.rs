//! [`Classify`]: what a result means for retry and circuit breaking.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Response, StatusCode};

use crate::error::ErrorClass;
use crate::signals::ServerSignals;

/// What one attempt's result means.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It worked (1xx, 2xx, 3xx by default).
    Success,
    /// The request itself was refused (4xx other than 408 and 429): a new
    /// attempt would fail the same way, and the server is healthy, so it
    /// neither retries nor counts against a circuit breaker.
    Rejected,
    /// A transient failure a new attempt may fix; `after` is the delay the
    /// server asked for, if it did (Retry-After, exhausted RateLimit).
    Retryable {
        /// The server-given delay before the next attempt.
        after: Option<Duration>,
    },
    /// A failure of the server or network that a retry will not fix
    /// (500, 501, ... and unrecognised errors). Counts against a breaker.
    Failure,
}

impl Outcome {
    /// A retryable outcome with no server-given delay.
    pub const RETRY: Self = Self::Retryable { after: None };

    /// `true` for [`Outcome::Retryable`].
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    /// `true` when the outcome says the server or network is unhealthy
    /// ([`Outcome::Retryable`] and [`Outcome::Failure`]).
    pub const fn is_failure(self) -> bool {
        matches!(self, Self::Retryable { .. } | Self::Failure)
    }

    /// The server-given delay, for a retryable outcome.
    pub const fn retry_after(self) -> Option<Duration> {
        match self {
            Self::Retryable { after } => after,
            _ => None,
        }
    }
}

/// Decides what a result means. Used by retry (retry or not, and when) and
/// by the circuit breaker (does it count as a failure).
///
/// Implemented by [`DefaultClassifier`] and by any closure
/// `Fn(&Result<Response<RB>, E>) -> Outcome`:
///
/// ```
/// use steadfast_core::{Classify, DefaultClassifier, Outcome};
/// use http::Response;
///
/// // Also retry 500s, otherwise behave as the default.
/// let classify = |r: &Result<Response<()>, std::io::Error>| match r {
///     Ok(res) if res.status() == 500 => Outcome::RETRY,
///     other => DefaultClassifier.classify(other),
/// };
/// let res = Response::builder().status(500).body(()).unwrap();
/// assert!(classify.classify(&Ok(res)).is_retryable());
/// ```
pub trait Classify<RB, E>: Send + Sync + 'static {
    /// Classifies one attempt's result.
    fn classify(&self, result: &Result<Response<RB>, E>) -> Outcome;
}

impl<F, RB, E> Classify<RB, E> for F
where
    F: Fn(&Result<Response<RB>, E>) -> Outcome + Send + Sync + 'static,
{
    fn classify(&self, result: &Result<Response<RB>, E>) -> Outcome {
        self(result)
    }
}

/// The default classification.
///
/// | Result | Outcome |
/// |---|---|
/// | 1xx, 2xx, 3xx | `Success` |
/// | 408, 429, 502, 503, 504 | `Retryable`, with the delay of `Retry-After` or of an exhausted `RateLimit` |
/// | other 4xx | `Rejected` |
/// | other 5xx, and undefined codes 600..=999 | `Failure` |
/// | connect error, timeout, connection reset ([`ErrorClass::is_transient`]) | `Retryable` |
/// | any other error | `Failure` |
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl<RB, E> Classify<RB, E> for DefaultClassifier
where
    E: StdError + 'static,
{
    fn classify(&self, result: &Result<Response<RB>, E>) -> Outcome {
        match result {
            // Only retryable statuses need the clock (to read an HTTP-date
            // Retry-After); a success path must not pay for a clock read.
            Ok(res) if is_retryable_status(res.status()) => {
                classify_status(res.status(), res.headers(), SystemTime::now())
            }
            Ok(res) => classify_status(res.status(), res.headers(), SystemTime::UNIX_EPOCH),
            Err(e) => classify_error(e),
        }
    }
}

/// The default classification of a response head. `now` is the wall clock
/// used to read HTTP-date `Retry-After` values.
pub fn classify_status(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Outcome {
    if is_retryable_status(status) {
        return Outcome::Retryable {
            after: ServerSignals::from_headers(headers, now).retry_delay(),
        };
    }
    match status.as_u16() {
        100..=399 => Outcome::Success,
        400..=499 => Outcome::Rejected,
        // 5xx, and the 600..=999 codes `http` accepts but HTTP does not define.
        _ => Outcome::Failure,
    }
}

/// The statuses the default classification retries: 408, 429, 502, 503, 504.
pub const fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 502 | 503 | 504)
}

/// The default classification of a transport error: transient ones
/// (connect, timeout, reset) are retryable, the rest are failures.
pub fn classify_error(err: &(dyn StdError + 'static)) -> Outcome {
    if ErrorClass::of(err).is_transient() {
        Outcome::RETRY
    } else {
        Outcome::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, headers: &[(&str, &str)]) -> Outcome {
        let mut b = Response::builder().status(code);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res: Result<Response<()>, std::io::Error> = Ok(b.body(()).unwrap());
        DefaultClassifier.classify(&res)
    }

    #[test]
    fn default_table() {
        for code in [200, 201, 204, 301, 304] {
            assert_eq!(status(code, &[]), Outcome::Success, "{code}");
        }
        for code in [408, 429, 502, 503, 504] {
            assert_eq!(status(code, &[]), Outcome::RETRY, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert_eq!(status(code, &[]), Outcome::Rejected, "{code}");
        }
        for code in [500, 501, 505, 600, 999] {
            assert_eq!(status(code, &[]), Outcome::Failure, "{code}");
        }
    }

    #[test]
    fn server_delay_is_carried() {
        assert_eq!(
            status(503, &[("retry-after", "7")]).retry_after(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            status(429, &[("ratelimit", "\"x\";r=0;t=3")]).retry_after(),
            Some(Duration::from_secs(3))
        );
        // A 404 with Retry-After is still the caller's problem.
        assert_eq!(status(404, &[("retry-after", "7")]), Outcome::Rejected);
    }

    #[test]
    fn errors() {
        let refused: Result<Response<()>, _> =
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(DefaultClassifier.classify(&refused), Outcome::RETRY);
        let other: Result<Response<()>, _> = Err(std::io::Error::other("bad certificate"));
        assert_eq!(DefaultClassifier.classify(&other), Outcome::Failure);
    }
}
