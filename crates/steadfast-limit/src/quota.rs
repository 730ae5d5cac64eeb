//! [`Quota`]: how many requests, per how long, with how much burst.

use std::num::NonZeroU32;
use std::time::Duration;

/// The longest emission interval a quota accepts: about 146 years, so that
/// all arithmetic on nanoseconds since a limiter's epoch stays far from
/// `u64::MAX`.
pub const MAX_INTERVAL: Duration = Duration::from_nanos(u64::MAX / 4);

/// The most tolerance (burst × interval) a limiter keeps: about 146 years.
/// A larger product saturates here, which only matters for absurd quotas
/// (a burst of four billion at one request per minute).
const MAX_TOLERANCE_NANOS: u64 = u64::MAX / 4;

/// A rate limit: one request per [`Quota::interval`] on average, with up to
/// [`Quota::burst_size`] requests at once after a quiet period.
///
/// This is the "generic cell rate" of GCRA: a limiter holding this quota
/// admits at most `burst + elapsed / interval` requests over any interval of
/// length `elapsed`, and never fewer when requests keep coming.
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use steadfast_limit::Quota;
///
/// let q = Quota::per_second(NonZeroU32::new(20).unwrap()).burst(NonZeroU32::new(5).unwrap());
/// assert_eq!(q.interval(), Duration::from_millis(50));
/// assert_eq!(q.burst_size().get(), 5);
///
/// // 100 requests per 10 minutes, no burst beyond the first one:
/// let q = Quota::new(NonZeroU32::new(100).unwrap(), Duration::from_secs(600))?
///     .burst(NonZeroU32::MIN);
/// assert_eq!(q.interval(), Duration::from_secs(6));
/// # Ok::<(), steadfast_limit::QuotaError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    interval_nanos: u64,
    burst: NonZeroU32,
}

impl Quota {
    /// `n` requests per second, spread one every `1 s / n`, with a burst of `n`.
    /// Rates above 10^9 per second are one per nanosecond.
    pub const fn per_second(n: NonZeroU32) -> Self {
        Self::per_nanos(1_000_000_000, n)
    }

    /// `n` requests per minute, spread one every `60 s / n`, with a burst of `n`.
    pub const fn per_minute(n: NonZeroU32) -> Self {
        Self::per_nanos(60 * 1_000_000_000, n)
    }

    /// `n` requests per hour, spread one every `3600 s / n`, with a burst of `n`.
    pub const fn per_hour(n: NonZeroU32) -> Self {
        Self::per_nanos(3600 * 1_000_000_000, n)
    }

    /// One request per `period`, with a burst of one.
    ///
    /// Fails if `period` is zero or longer than [`MAX_INTERVAL`].
    pub fn with_period(period: Duration) -> Result<Self, QuotaError> {
        Self::new(NonZeroU32::MIN, period).map(|q| q.burst(NonZeroU32::MIN))
    }

    /// `n` requests per `period`, with a burst of `n`.
    ///
    /// Fails if `period / n` is shorter than a nanosecond or longer than
    /// [`MAX_INTERVAL`].
    pub fn new(n: NonZeroU32, period: Duration) -> Result<Self, QuotaError> {
        if period > MAX_INTERVAL {
            return Err(QuotaError::TooSlow { period });
        }
        let nanos = period.as_nanos() as u64;
        if nanos < u64::from(n.get()) {
            return Err(QuotaError::TooFast { n, period });
        }
        Ok(Self::per_nanos(nanos, n))
    }

    const fn per_nanos(period_nanos: u64, n: NonZeroU32) -> Self {
        let interval = period_nanos / n.get() as u64;
        Self {
            // One request per nanosecond is the finest rate there is.
            interval_nanos: if interval == 0 { 1 } else { interval },
            burst: n,
        }
    }

    /// Sets how many requests may go at once after a quiet period (the
    /// bucket size). `burst(1)` spaces every request by the interval.
    #[must_use]
    pub const fn burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self
    }

    /// The average time between two requests (the emission interval).
    pub const fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// The emission interval in nanoseconds.
    pub const fn interval_nanos(&self) -> u64 {
        self.interval_nanos
    }

    /// The burst size.
    pub const fn burst_size(&self) -> NonZeroU32 {
        self.burst
    }

    /// The sustained rate in requests per second.
    pub fn rate_per_second(&self) -> f64 {
        1e9 / self.interval_nanos as f64
    }

    /// The delay variation tolerance of GCRA: `burst × interval`, saturated
    /// at about 146 years.
    pub(crate) const fn tolerance_nanos(&self) -> u64 {
        let t = self.interval_nanos as u128 * self.burst.get() as u128;
        if t > MAX_TOLERANCE_NANOS as u128 {
            MAX_TOLERANCE_NANOS
        } else {
            t as u64
        }
    }
}

/// A quota that cannot be represented.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The interval between two requests would be below one nanosecond.
    #[error(
        "a quota of {n} requests per {period:?} is faster than one request per nanosecond; use a longer period or fewer requests"
    )]
    TooFast {
        /// Requests per period.
        n: NonZeroU32,
        /// The period.
        period: Duration,
    },
    /// The period is longer than [`MAX_INTERVAL`].
    #[error("a quota period of {period:?} is longer than the supported maximum (about 146 years)")]
    TooSlow {
        /// The period.
        period: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn constructors() {
        let q = Quota::per_second(nz(3));
        assert_eq!(q.interval_nanos(), 333_333_333);
        assert_eq!(q.burst_size(), nz(3));
        assert_eq!(Quota::per_minute(nz(2)).interval(), Duration::from_secs(30));
        assert_eq!(Quota::per_hour(nz(1)).interval(), Duration::from_secs(3600));
        let p = Quota::with_period(Duration::from_millis(250)).unwrap();
        assert_eq!(
            (p.interval(), p.burst_size()),
            (Duration::from_millis(250), nz(1))
        );
        assert!((Quota::per_second(nz(20)).rate_per_second() - 20.0).abs() < 1e-9);
        assert_eq!(Quota::per_second(NonZeroU32::MAX).interval_nanos(), 1);
    }

    #[test]
    fn bad_quotas_are_typed_errors() {
        assert_eq!(
            Quota::with_period(Duration::ZERO),
            Err(QuotaError::TooFast {
                n: nz(1),
                period: Duration::ZERO
            })
        );
        assert!(matches!(
            Quota::new(nz(10), Duration::from_nanos(9)),
            Err(QuotaError::TooFast { .. })
        ));
        assert!(matches!(
            Quota::with_period(Duration::MAX),
            Err(QuotaError::TooSlow { .. })
        ));
        let msg = Quota::with_period(Duration::ZERO).unwrap_err().to_string();
        assert!(msg.contains("use a longer period"), "{msg}");
    }

    #[test]
    fn tolerance_saturates_instead_of_overflowing() {
        let q = Quota::per_hour(nz(1)).burst(nz(u32::MAX));
        assert_eq!(q.tolerance_nanos(), MAX_TOLERANCE_NANOS);
        assert_eq!(Quota::per_second(nz(10)).tolerance_nanos(), 1_000_000_000);
    }
}
