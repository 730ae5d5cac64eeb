//! The pure cores: GCRA arithmetic on nanoseconds, and [`NotUntil`].
//!
//! Everything here is synchronous, allocation-free and takes the current
//! time as an argument, so it runs the same under real time, paused tokio
//! time and a simulator's virtual clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::Quota;

/// The generic cell rate algorithm (GCRA) of a [`Quota`], as pure arithmetic.
///
/// GCRA keeps a single number per limited thing, the *theoretical arrival
/// time* (TAT): the instant at which the bucket would be full again if no
/// more requests came. A request at `now` is admitted when, after it, the
/// TAT stays within `tolerance = burst × interval` of `now`; it then pushes
/// the TAT one interval further.
///
/// A TAT at or before `now` means a full bucket, exactly as if the thing had
/// never been seen: that is what lets the keyed limiter forget idle keys
/// without changing any decision.
///
/// Times are nanoseconds since an epoch the caller chooses.
///
/// ```
/// use std::num::NonZeroU32;
/// use steadfast_limit::{Gcra, Quota};
///
/// let gcra = Gcra::new(Quota::per_second(NonZeroU32::new(10).unwrap()).burst(NonZeroU32::new(2).unwrap()));
/// let tat = gcra.decide(0, 0).unwrap();      // first of the burst
/// let tat = gcra.decide(tat, 0).unwrap();    // second of the burst
/// let earliest = gcra.decide(tat, 0).unwrap_err();
/// assert_eq!(earliest, 100_000_000);         // next one 100 ms later
/// assert!(gcra.decide(tat, earliest).is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    /// The GCRA of `quota`.
    pub const fn new(quota: Quota) -> Self {
        Self {
            interval: quota.interval_nanos(),
            tolerance: quota.tolerance_nanos(),
        }
    }

    /// The emission interval in nanoseconds.
    pub const fn interval(&self) -> u64 {
        self.interval
    }

    /// Decides one request at `now` against the stored `tat`.
    ///
    /// `Ok(new_tat)` admits it (store `new_tat`); `Err(earliest)` refuses it
    /// and gives the earliest time at which the same request would pass.
    #[inline]
    pub const fn decide(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let base = if tat > now { tat } else { now };
        let next = base.saturating_add(self.interval);
        if next - now <= self.tolerance {
            Ok(next)
        } else {
            // Refusal implies tat > now (tolerance >= interval), so next > tolerance.
            Err(next - self.tolerance)
        }
    }

    /// The earliest time at which a request would pass, given `tat`, without
    /// deciding anything. `now` itself when one would pass now.
    #[inline]
    pub const fn earliest(&self, tat: u64, now: u64) -> u64 {
        match self.decide(tat, now) {
            Ok(_) => now,
            Err(earliest) => earliest,
        }
    }

    /// How many requests would pass at `now`, given `tat` (the tokens in the
    /// bucket).
    pub const fn available(&self, tat: u64, now: u64) -> u64 {
        let debt = tat.saturating_sub(now);
        (self.tolerance
            - if debt > self.tolerance {
                self.tolerance
            } else {
                debt
            })
            / self.interval
    }
}

/// A limiter said "not now": the earliest instant at which the request would
/// pass, and how long that is from the time of the check.
///
/// The instant is a lower bound: others may take the token first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUntil {
    earliest: Instant,
    wait: Duration,
}

impl NotUntil {
    pub(crate) const fn new(earliest: Instant, wait: Duration) -> Self {
        Self { earliest, wait }
    }

    /// The earliest instant at which a retry can pass.
    pub const fn earliest(&self) -> Instant {
        self.earliest
    }

    /// How long to wait from the time of the check.
    pub const fn wait(&self) -> Duration {
        self.wait
    }

    /// How long to wait from `now` (zero if that instant has passed).
    pub fn wait_from(&self, now: Instant) -> Duration {
        self.earliest.saturating_duration_since(now)
    }
}

impl std::fmt::Display for NotUntil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rate limited: retry in {:?}", self.wait)
    }
}

/// Where a limiter reads the time.
///
/// ```
/// use std::num::NonZeroU32;
/// use steadfast_limit::{Clock, Quota, RateLimiter};
///
/// let limiter = RateLimiter::new(Quota::per_second(NonZeroU32::new(100).unwrap()))
///     .with_clock(Clock::Tokio); // the default
/// assert!(limiter.check().is_ok());
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Clock {
    /// [`tokio::time::Instant::now`]: follows tokio's paused clock, so tests
    /// with `start_paused = true` are exact. The default.
    #[default]
    Tokio,
    /// The CPU's time-stamp counter through the `quanta` crate (feature
    /// `quanta`), calibrated against the monotonic clock: several times
    /// cheaper to read where `clock_gettime` is slow (virtual machines), for
    /// limiters checked millions of times a second. It does not follow
    /// tokio's paused clock; waits still sleep on tokio's timer.
    #[cfg(feature = "quanta")]
    Quanta,
}

/// A limiter's clock: nanoseconds since the instant the limiter was built.
#[derive(Clone, Debug)]
pub(crate) struct Epoch {
    start: Instant,
    #[cfg(feature = "quanta")]
    tsc: Option<(quanta::Clock, u64)>,
}

impl Epoch {
    pub(crate) fn now() -> Self {
        Self::with_clock(Clock::Tokio)
    }

    pub(crate) fn with_clock(clock: Clock) -> Self {
        let start = Instant::now();
        match clock {
            Clock::Tokio => Self {
                start,
                #[cfg(feature = "quanta")]
                tsc: None,
            },
            #[cfg(feature = "quanta")]
            Clock::Quanta => {
                let tsc = quanta::Clock::new();
                let raw = tsc.raw();
                Self {
                    start,
                    tsc: Some((tsc, raw)),
                }
            }
        }
    }

    /// Nanoseconds from the epoch to `at` (zero before it), on tokio's clock.
    #[inline]
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.start);
        // u64 nanoseconds last 584 years of process uptime.
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    /// Nanoseconds from the epoch to now, on the limiter's clock.
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        #[cfg(feature = "quanta")]
        if let Some((tsc, raw)) = &self.tsc {
            return tsc.delta_as_nanos(*raw, tsc.raw());
        }
        self.nanos(Instant::now())
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.start + Duration::from_nanos(nanos)
    }

    /// The [`NotUntil`] for a refusal at `now` with `earliest` (both nanos).
    pub(crate) fn not_until(&self, now: u64, earliest: u64) -> NotUntil {
        NotUntil::new(
            self.instant(earliest),
            Duration::from_nanos(earliest.saturating_sub(now)),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn gcra(rate: u32, burst: u32) -> Gcra {
        Gcra::new(
            Quota::per_second(NonZeroU32::new(rate).unwrap())
                .burst(NonZeroU32::new(burst).unwrap()),
        )
    }

    #[test]
    fn burst_then_spacing() {
        let g = gcra(10, 3);
        let mut tat = 0;
        for _ in 0..3 {
            tat = g.decide(tat, 0).unwrap();
        }
        assert_eq!(g.available(tat, 0), 0);
        assert_eq!(g.decide(tat, 0), Err(100_000_000));
        assert_eq!(g.earliest(tat, 50_000_000), 100_000_000);
        assert_eq!(g.decide(tat, 99_999_999), Err(100_000_000));
        let tat = g.decide(tat, 100_000_000).unwrap();
        assert_eq!(g.decide(tat, 100_000_000), Err(200_000_000));
        // A long pause refills the whole burst, and no more.
        assert_eq!(g.available(tat, 10_000_000_000), 3);
    }

    #[test]
    fn a_tat_in_the_past_is_a_fresh_key() {
        let g = gcra(5, 2);
        for now in [0, 1, 1_000_000_000, u64::MAX / 8] {
            for old in [0, now / 2, now] {
                assert_eq!(g.decide(old, now), g.decide(0, now));
            }
        }
    }

    #[test]
    fn not_until_reports_the_wait() {
        let e = Epoch::now();
        let n = e.not_until(1_000, 251_000);
        assert_eq!(n.wait(), Duration::from_micros(250));
        assert_eq!(n.earliest(), e.instant(251_000));
        assert_eq!(n.to_string(), "rate limited: retry in 250µs");
    }
}
