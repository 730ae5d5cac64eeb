//! [`RetryError`]: why the retry layer stopped, after how many attempts, and
//! the last cause.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::header::HeaderName;
use http::{Method, StatusCode};
use steadfast_core::{NotReplayable, TimeoutError};

/// What an attempt ended with, when it was not a success.
///
/// `E` is the transport's error. The `on_retry` hook sees a borrowed,
/// type-erased form, [`RetryCause`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause<E> {
    /// The transport failed.
    Transport(E),
    /// The attempt timed out ([`steadfast_core::TimeoutPhase::Attempt`]) or
    /// the deadline passed during it ([`steadfast_core::TimeoutPhase::Total`]).
    Timeout(TimeoutError),
    /// The server answered with a status the classifier called retryable
    /// (503, 429, ...).
    Status(StatusCode),
}

/// The cause passed to the `on_retry` hook: [`Cause`] with the transport
/// error borrowed and type-erased.
pub type RetryCause<'a> = Cause<&'a (dyn StdError + Send + Sync + 'static)>;

impl<E: fmt::Display> fmt::Display for Cause<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => e.fmt(f),
            Self::Timeout(t) => t.fmt(f),
            Self::Status(s) => write!(f, "status {s}"),
        }
    }
}

impl<E> Cause<E> {
    /// The transport error, if that was the cause.
    pub fn into_transport(self) -> Option<E> {
        match self {
            Self::Transport(e) => Some(e),
            _ => None,
        }
    }

    /// The transport error, if that was the cause.
    pub const fn transport(&self) -> Option<&E> {
        match self {
            Self::Transport(e) => Some(e),
            _ => None,
        }
    }

    /// The timeout, if that was the cause.
    pub const fn timeout(&self) -> Option<&TimeoutError> {
        match self {
            Self::Timeout(t) => Some(t),
            _ => None,
        }
    }

    /// The status of the last response, if that was the cause.
    pub const fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status(s) => Some(*s),
            _ => None,
        }
    }

    pub(crate) fn as_source(&self) -> Option<&(dyn StdError + 'static)>
    where
        E: StdError + 'static,
    {
        match self {
            Self::Transport(e) => Some(e),
            Self::Timeout(t) => Some(t),
            Self::Status(_) => None,
        }
    }
}

/// The error of a [`crate::Retry`] transport: the request failed, and
/// either retrying was not allowed or it did not help.
///
/// Every variant says how many attempts were made (every copy of the
/// request sent, hedges included) and carries the last [`Cause`]; the transport error (or timeout) is also the error's
/// [`source`](StdError::source), so [`steadfast_core::ErrorClass::of`] sees
/// through it.
///
/// When the last attempt returned a retryable *response* (a 503 after the
/// last retry, a 503 on a POST, a 503 when the budget is spent), the layer
/// returns that response as `Ok`, as tower's and reqwest-middleware's retry
/// do: the caller gets the server's answer, body included. Only the
/// deadline variants and [`RetryError::RetryAfterTooLong`] turn a response
/// into an error, because the server's answer ("come back in N s") cannot
/// be acted on within the deadline, or within `max_server_delay`.
#[non_exhaustive]
#[derive(Debug)]
pub enum RetryError<E> {
    /// The classifier did not consider the error retryable.
    NotRetryable {
        /// The last cause.
        cause: Cause<E>,
        /// Attempts made.
        attempts: u32,
    },
    /// Every allowed retry was used.
    Exhausted {
        /// The last cause.
        cause: Cause<E>,
        /// Attempts made (`max_retries + 1`, plus any hedges; fewer when
        /// the backoff's `max_elapsed` ended the schedule first).
        attempts: u32,
    },
    /// The request may have reached the server and its method is not
    /// idempotent, so re-sending it could apply it twice.
    NotIdempotent {
        /// The last cause.
        cause: Cause<E>,
        /// Attempts made.
        attempts: u32,
        /// The request's method.
        method: Method,
        /// The header that would have made it retryable.
        header: HeaderName,
    },
    /// The request body cannot be sent again.
    NotReplayable {
        /// The last cause.
        cause: Cause<E>,
        /// Attempts made.
        attempts: u32,
        /// Why the body cannot be replayed.
        reason: NotReplayable,
    },
    /// The retry budget is spent: too many requests of this client are
    /// being retried at once.
    BudgetExhausted {
        /// The last cause.
        cause: Cause<E>,
        /// Attempts made.
        attempts: u32,
    },
    /// The wait before the next attempt does not fit in the time left before
    /// the deadline, so the layer fails now instead of sleeping past it.
    DeadlineExceeded {
        /// The last cause.
        cause: Cause<E>,
        /// Attempts made.
        attempts: u32,
        /// The wait that was needed.
        wait: Duration,
        /// `true` when the server asked for that wait (Retry-After, or the
        /// reset of an exhausted rate limit).
        from_server: bool,
        /// Time left before the deadline.
        remaining: Duration,
    },
    /// The server asked to wait longer than `max_server_delay`.
    RetryAfterTooLong {
        /// The last cause.
        cause: Cause<E>,
        /// Attempts made.
        attempts: u32,
        /// The wait the server asked for.
        retry_after: Duration,
        /// The configured limit.
        max_server_delay: Duration,
    },
    /// The deadline passed while an attempt was in flight, or before the
    /// next one could be sent (`attempts: 0` when the deadline had already
    /// passed when the request reached the layer: nothing was sent); the
    /// cause is the [`TimeoutError`] of phase `Total`.
    TimedOut {
        /// The last cause.
        cause: Cause<E>,
        /// Attempts made, an interrupted one included.
        attempts: u32,
    },
}

/// Every variant carries `cause` and `attempts`: picks `$field` out of any of
/// them. A macro, not a fn, because it must work by reference in a `const fn`
/// and by value in `into_cause`.
macro_rules! common_field {
    ($error:expr, $field:ident) => {
        match $error {
            RetryError::NotRetryable { $field, .. }
            | RetryError::Exhausted { $field, .. }
            | RetryError::NotIdempotent { $field, .. }
            | RetryError::NotReplayable { $field, .. }
            | RetryError::BudgetExhausted { $field, .. }
            | RetryError::DeadlineExceeded { $field, .. }
            | RetryError::RetryAfterTooLong { $field, .. }
            | RetryError::TimedOut { $field, .. } => $field,
        }
    };
}

impl<E> RetryError<E> {
    /// Attempts made: every copy of the request sent, the first one and
    /// hedges included.
    pub const fn attempts(&self) -> u32 {
        *common_field!(self, attempts)
    }

    /// What the last attempt ended with.
    pub const fn cause(&self) -> &Cause<E> {
        common_field!(self, cause)
    }

    /// The last cause, by value.
    pub fn into_cause(self) -> Cause<E> {
        common_field!(self, cause)
    }

    /// The transport's error, if the last attempt ended with one.
    pub fn into_inner(self) -> Option<E> {
        self.into_cause().into_transport()
    }

    /// `true` when the error is about time: the deadline passed, the wait
    /// did not fit before it, or the server asked for too long a wait.
    pub const fn is_deadline(&self) -> bool {
        matches!(
            self,
            Self::DeadlineExceeded { .. } | Self::RetryAfterTooLong { .. } | Self::TimedOut { .. }
        )
    }
}

/// A duration for people: `120s`, `4.998s`, `250ms`, `1.5ms`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d >= Duration::from_secs(1) {
            let ms = d.as_millis();
            if ms.is_multiple_of(1_000) {
                write!(f, "{}s", ms / 1_000)
            } else {
                // Rounded to the millisecond, which may make it whole
                // (4.9996 s is "5s", not "5.s").
                let text = format!("{:.3}", d.as_secs_f64());
                write!(f, "{}s", text.trim_end_matches('0').trim_end_matches('.'))
            }
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            let text = format!("{:.3}", d.as_secs_f64() * 1_000.0);
            write!(f, "{}ms", text.trim_end_matches('0').trim_end_matches('.'))
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.attempts();
        let s = plural(n);
        match self {
            Self::NotRetryable { .. } => write!(
                f,
                "request failed after {n} attempt{s} with an error that is not retried"
            ),
            Self::Exhausted { .. } => write!(
                f,
                "request failed after {n} attempt{s}: every allowed retry was used (raise max_retries, or check the server's health)"
            ),
            Self::NotIdempotent { method, header, .. } => write!(
                f,
                "{method} request failed after {n} attempt{s} and was not retried: {method} is not idempotent and the request may have reached the server; send an `{header}` header to make it safe to retry"
            ),
            Self::NotReplayable { reason, .. } => write!(
                f,
                "request failed after {n} attempt{s} and was not retried: {reason}"
            ),
            Self::BudgetExhausted { .. } => write!(
                f,
                "request failed after {n} attempt{s} and was not retried: the client's retry budget is spent (too many requests are failing at once); retries resume as requests succeed"
            ),
            Self::DeadlineExceeded {
                wait,
                from_server: true,
                remaining,
                ..
            } => write!(
                f,
                "the server asked to retry after {} (Retry-After), but only {} remain before the deadline: failing now after {n} attempt{s} instead of waiting",
                Human(*wait),
                Human(*remaining)
            ),
            Self::DeadlineExceeded {
                wait, remaining, ..
            } => write!(
                f,
                "the next retry would wait {}, but only {} remain before the deadline: failing now after {n} attempt{s} instead of waiting",
                Human(*wait),
                Human(*remaining)
            ),
            Self::RetryAfterTooLong {
                retry_after,
                max_server_delay,
                ..
            } => write!(
                f,
                "the server asked to retry after {} (Retry-After), longer than max_server_delay ({}): failing now after {n} attempt{s}; raise max_server_delay to wait that long",
                Human(*retry_after),
                Human(*max_server_delay)
            ),
            Self::TimedOut { attempts: 0, .. } => write!(
                f,
                "the request was not sent: its deadline had already passed when it reached the retry layer (give it more time, or check what spent it before this layer)"
            ),
            Self::TimedOut { .. } => write!(f, "the deadline passed after {n} attempt{s}"),
        }?;
        if let Cause::Status(status) = self.cause() {
            write!(f, " (last response: {status})")?;
        }
        Ok(())
    }
}

impl<E> StdError for RetryError<E>
where
    E: StdError + 'static,
{
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause().as_source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_core::{ErrorClass, TimeoutPhase};

    #[test]
    fn the_source_chain_reaches_the_transport_error() {
        let e: RetryError<std::io::Error> = RetryError::Exhausted {
            cause: Cause::Transport(std::io::ErrorKind::ConnectionRefused.into()),
            attempts: 4,
        };
        assert_eq!(ErrorClass::of(&e), ErrorClass::Connect);
        assert_eq!(e.attempts(), 4);
        assert!(
            e.to_string().starts_with("request failed after 4 attempts"),
            "{e}"
        );
        assert!(e.into_inner().is_some());
    }

    #[test]
    fn durations_read_well() {
        let h = |d: Duration| Human(d).to_string();
        assert_eq!(h(Duration::from_secs(120)), "120s");
        assert_eq!(h(Duration::from_nanos(4_997_581_143)), "4.998s");
        assert_eq!(h(Duration::from_millis(1_500)), "1.5s");
        // Rounds to a whole second (what the tour printed as "5.s").
        assert_eq!(h(Duration::from_micros(4_999_600)), "5s");
        assert_eq!(h(Duration::from_millis(250)), "250ms");
        assert_eq!(h(Duration::from_micros(1_500)), "1.5ms");
        assert_eq!(h(Duration::ZERO), "0ms");
    }

    #[test]
    fn messages_name_the_wait_and_the_status() {
        let e: RetryError<std::io::Error> = RetryError::DeadlineExceeded {
            cause: Cause::Status(StatusCode::SERVICE_UNAVAILABLE),
            attempts: 1,
            wait: Duration::from_secs(120),
            from_server: true,
            remaining: Duration::from_secs(30),
        };
        assert_eq!(
            e.to_string(),
            "the server asked to retry after 120s (Retry-After), but only 30s remain before the deadline: failing now after 1 attempt instead of waiting (last response: 503 Service Unavailable)"
        );
        assert!(e.is_deadline());
        let t: RetryError<std::io::Error> = RetryError::TimedOut {
            cause: Cause::Timeout(TimeoutError::new(
                TimeoutPhase::Total,
                Duration::from_secs(5),
            )),
            attempts: 2,
        };
        assert_eq!(
            ErrorClass::of(&t),
            ErrorClass::Timeout(Some(TimeoutPhase::Total))
        );
    }
}
