//! [`Quota`]: how many requests, per how long, with how much burst.

use std::num::NonZeroU32;
use std::time::Duration;

/// The longest emission interval a quota accepts: about 146 years, so that
/// all arithmetic on nanoseconds since a limiter's epoch stays far from
/// `u64::MAX`.
pub const MAX_INTERVAL: Duration = Duration::from_nanos(MAX_INTERVAL_NANOS);

const MAX_INTERVAL_NANOS: u64 = u64::MAX / 4;

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
/// The interval is a whole number of nanoseconds, rounded **up** from
/// `period / n`, so a quota is never exceeded: a rate that does not divide
/// its period evenly comes out a hair slower (`per_second(3)` is one every
/// 333 333 334 ns). The rounding only shows for rates near the resolution:
/// `per_second(600_000_000)` is one every 2 ns, 500 million per second.
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
    /// `n` requests per second, spread one every `1 s / n` (rounded up to
    /// whole nanoseconds), with a burst of `n`. Rates above 10^9 per second
    /// are one per nanosecond.
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

    /// `n` requests per `period`, one every `period / n` (rounded up to
    /// whole nanoseconds), with a burst of `n`.
    ///
    /// Fails if `period / n` is shorter than a nanosecond or longer than
    /// [`MAX_INTERVAL`].
    pub fn new(n: NonZeroU32, period: Duration) -> Result<Self, QuotaError> {
        let nanos = period.as_nanos();
        if nanos < u128::from(n.get()) {
            return Err(QuotaError::TooFast { n, period });
        }
        match u64::try_from(nanos.div_ceil(u128::from(n.get()))) {
            Ok(interval_nanos) if interval_nanos <= MAX_INTERVAL_NANOS => Ok(Self {
                interval_nanos,
                burst: n,
            }),
            _ => Err(QuotaError::TooSlow { n, period }),
        }
    }

    const fn per_nanos(period_nanos: u64, n: NonZeroU32) -> Self {
        // Rounded up: n intervals never fit in less than the period. One
        // request per nanosecond is the finest rate there is.
        let interval = period_nanos.div_ceil(n.get() as u64);
        Self {
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
    /// The interval between two requests would be longer than
    /// [`MAX_INTERVAL`].
    #[error(
        "a quota of {n} requests per {period:?} spaces them more than about 146 years apart, the supported maximum; use a shorter period or more requests"
    )]
    TooSlow {
        /// Requests per period.
        n: NonZeroU32,
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
        assert_eq!(q.interval_nanos(), 333_333_334); // rounded up
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
    fn the_interval_rounds_up_so_a_quota_is_never_exceeded() {
        // 1.67 ns rounded down to 1 ns was a 67 % faster rate.
        assert_eq!(Quota::per_second(nz(600_000_000)).interval_nanos(), 2);
        assert_eq!(Quota::per_second(nz(3)).interval_nanos(), 333_333_334);
        assert_eq!(
            Quota::new(nz(7), Duration::from_nanos(10))
                .unwrap()
                .interval_nanos(),
            2
        );
        assert_eq!(Quota::per_minute(nz(7)).interval_nanos(), 8_571_428_572);
    }

    #[test]
    fn the_bound_is_on_the_interval_not_the_period() {
        let years = |n: u64| Duration::from_secs(n * 365 * 24 * 3600);
        // 1 000 requests per 200 years: one every 73 days.
        let q = Quota::new(nz(1_000), years(200)).unwrap();
        assert_eq!(q.interval(), years(200) / 1_000);
        assert!(matches!(
            Quota::new(nz(1), years(200)),
            Err(QuotaError::TooSlow { .. })
        ));
        // A period past u64 nanoseconds is not truncated into a valid one.
        assert!(matches!(
            Quota::new(nz(1), Duration::from_nanos(u64::MAX) * 2),
            Err(QuotaError::TooSlow { .. })
        ));
        let q = Quota::new(nz(u32::MAX), Duration::from_nanos(u64::MAX) * 2).unwrap();
        assert!(q.interval() <= MAX_INTERVAL);
    }

    proptest::proptest! {
        #[test]
        fn n_intervals_cover_the_period(n in 1u32.., nanos in 1u64..) {
            let period = Duration::from_nanos(nanos);
            if let Ok(q) = Quota::new(NonZeroU32::new(n).unwrap(), period) {
                let covered = u128::from(q.interval_nanos()) * u128::from(n);
                // Never faster than asked, and less than a nanosecond per request slower.
                proptest::prop_assert!(covered >= u128::from(nanos));
                proptest::prop_assert!(covered < u128::from(nanos) + u128::from(n));
            }
        }
    }

    #[test]
    fn tolerance_saturates_instead_of_overflowing() {
        let q = Quota::per_hour(nz(1)).burst(nz(u32::MAX));
        assert_eq!(q.tolerance_nanos(), MAX_TOLERANCE_NANOS);
        assert_eq!(Quota::per_second(nz(10)).tolerance_nanos(), 1_000_000_000);
    }
}
