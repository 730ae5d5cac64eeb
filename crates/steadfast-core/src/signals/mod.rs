//! What the server says about when to come back: `Retry-After`, the IETF
//! `RateLimit` / `RateLimit-Policy` fields and the vendor `X-RateLimit-*`
//! families, parsed once into a typed [`ServerSignals`].
//!
//! Retry and the rate limiter both read these, so they agree on what a
//! server meant.
//!
//! # What is understood
//!
//! | Field | Forms |
//! |---|---|
//! | `Retry-After` | delta-seconds; HTTP-date in all three RFC 9110 §5.6.7 forms (a date in the past means 0); decimal seconds tolerated |
//! | `RateLimit` + `RateLimit-Policy` | structured fields of draft-ietf-httpapi-ratelimit-headers (-08 and later, up to -11): `"name";r=<remaining>;t=<seconds>` and `"name";q=<quota>;w=<window>`; `t` is optional, the policy window `w` stands in for it |
//! | `RateLimit` (legacy) | the -07 dictionary `limit=, remaining=, reset=` and the `100;w=60` policy list |
//! | `RateLimit-Limit/-Remaining/-Reset` | the separate fields of drafts -00 to -06 |
//! | `X-RateLimit-*`, `X-Rate-Limit-*` | `Limit`, `Remaining` (decimals floored), `Reset`, `Reset-After` (preferred when present: it ignores clock skew), with optional `-Requests` / `-Tokens` suffixes; reset as delay seconds, epoch seconds (fraction allowed) or milliseconds, fractional seconds, or Go-style durations (`"6m0s"`, `"20ms"`) |
//!
//! # Hostile values
//!
//! Parsing works on raw bytes and never panics. Every delay is clamped to
//! [`MAX_SIGNAL_DELAY`] (a server cannot park a client for a year), huge
//! numbers saturate instead of overflowing, and malformed fields are
//! skipped but reported by [`ServerSignals::malformed`], so a layer can log
//! them.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::HeaderMap;
//! use steadfast_core::signals::ServerSignals;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", "2".parse().unwrap());
//! headers.insert("ratelimit-policy", r#""default";q=100;w=60"#.parse().unwrap());
//! headers.insert("ratelimit", r#""default";r=0;t=2"#.parse().unwrap());
//!
//! let s = ServerSignals::from_headers(&headers, SystemTime::now());
//! assert_eq!(s.retry_after(), Some(Duration::from_secs(2)));
//! let rl = s.rate_limit().unwrap();
//! assert_eq!((rl.limit(), rl.remaining(), rl.window()), (Some(100), 0, Some(Duration::from_secs(60))));
//! assert_eq!(s.retry_delay(), Some(Duration::from_secs(2)));
//! ```

mod ratelimit;
mod sf;
mod time;

use std::time::{Duration, SystemTime};

use http::HeaderMap;

pub use ratelimit::{RateLimit, RateLimitSource};
pub use time::{parse_reset, parse_retry_after};

/// The longest delay any server signal is trusted with: one day.
///
/// Longer `Retry-After` or reset values are clamped to it. Daily quotas are
/// the longest windows seen in practice.
pub const MAX_SIGNAL_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Everything a response said about pacing, parsed from its headers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerSignals {
    retry_after: Option<Duration>,
    rate_limit: Option<RateLimit>,
    malformed: Vec<SignalError>,
}

impl ServerSignals {
    /// Parses the pacing headers of a response. `now` is the wall clock,
    /// used to turn HTTP-dates and epoch resets into delays.
    ///
    /// Never fails: what is malformed is left out and listed in
    /// [`ServerSignals::malformed`].
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        let mut malformed = Vec::new();
        let retry_after = headers.get(http::header::RETRY_AFTER).and_then(|v| {
            parse_retry_after(v.as_bytes(), now)
                .map_err(|e| malformed.push(e))
                .ok()
        });
        let rate_limit = ratelimit::most_constraining(headers, now, &mut malformed);
        Self {
            retry_after,
            rate_limit,
            malformed,
        }
    }

    /// The parsed `Retry-After`, clamped to [`MAX_SIGNAL_DELAY`].
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The most constraining rate limit the response announced, if any.
    pub const fn rate_limit(&self) -> Option<&RateLimit> {
        self.rate_limit.as_ref()
    }

    /// How long the server asked the client to wait before the next request:
    /// `Retry-After` when present, otherwise the reset time of an exhausted
    /// rate limit (`remaining == 0`; when several are exhausted, the latest
    /// reset, since all must be restored).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after.or_else(|| {
            self.rate_limit
                .as_ref()
                .filter(|rl| rl.remaining() == 0)
                .map(RateLimit::reset)
        })
    }

    /// Pacing fields that were present but could not be understood.
    pub fn malformed(&self) -> &[SignalError] {
        &self.malformed
    }

    /// `true` if the response carried no usable pacing signal.
    pub const fn is_empty(&self) -> bool {
        self.retry_after.is_none() && self.rate_limit.is_none()
    }
}

/// A pacing header that was present but malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("server sent a malformed {field} header ({reason}); it was ignored")]
pub struct SignalError {
    field: &'static str,
    reason: &'static str,
}

impl SignalError {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The header name, as commonly capitalised (`Retry-After`, `RateLimit`, ...).
    pub const fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value was refused.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

pub(crate) fn clamp_secs(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else if secs >= MAX_SIGNAL_DELAY.as_secs_f64() {
        MAX_SIGNAL_DELAY
    } else {
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests;
