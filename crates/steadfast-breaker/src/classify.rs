//! [`BreakerClassifier`]: the default verdicts, without the work a breaker
//! does not need.

use std::error::Error as StdError;

use http::Response;
use steadfast_core::classify::classify_error;
use steadfast_core::{Classify, Outcome};

/// The breaker's default classification: the same verdicts as
/// [`steadfast_core::DefaultClassifier`] (connect errors, timeouts, resets,
/// 408, 429 and 5xx are failures; other 4xx and all 1xx–3xx are not), but it
/// never parses `Retry-After` or `RateLimit` headers nor reads the wall
/// clock: a breaker only asks whether a call failed, and on the success path
/// of a healthy service that clock read would cost more than the breaker.
///
/// Retryable outcomes it returns carry no server delay (`after: None`).
#[derive(Clone, Copy, Debug, Default)]
pub struct BreakerClassifier;

impl<RB, E> Classify<RB, E> for BreakerClassifier
where
    E: StdError + 'static,
{
    #[inline]
    fn classify(&self, result: &Result<Response<RB>, E>) -> Outcome {
        match result {
            // Successes first: the answer on the path of a healthy service.
            Ok(res) => match res.status().as_u16() {
                ..400 | 600.. => Outcome::Success,
                408 | 429 | 502..=504 => Outcome::RETRY,
                400..=499 => Outcome::Rejected,
                500..=599 => Outcome::Failure,
            },
            Err(e) => classify_error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use steadfast_core::DefaultClassifier;

    use super::*;

    #[test]
    fn same_verdicts_as_the_default_classifier() {
        for code in 100..=599u16 {
            for headers in [&[][..], &[("retry-after", "3")][..]] {
                let mut b = Response::builder().status(code);
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                let res: Result<Response<()>, std::io::Error> = Ok(b.body(()).unwrap());
                let ours = BreakerClassifier.classify(&res);
                let default = DefaultClassifier.classify(&res);
                assert_eq!(ours.is_failure(), default.is_failure(), "{code}");
                assert_eq!(ours.is_retryable(), default.is_retryable(), "{code}");
                assert_eq!(
                    ours == Outcome::Rejected,
                    default == Outcome::Rejected,
                    "{code}"
                );
            }
        }
        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::PermissionDenied,
        ] {
            let err: Result<Response<()>, std::io::Error> = Err(kind.into());
            assert_eq!(
                BreakerClassifier.classify(&err),
                DefaultClassifier.classify(&err),
                "{kind:?}"
            );
        }
    }
}
