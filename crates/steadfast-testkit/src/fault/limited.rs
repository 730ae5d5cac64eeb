//! `/limited`: a server-side GCRA rate limit per key, announced with the
//! IETF `RateLimit` / `RateLimit-Policy` fields and `X-RateLimit-*`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Default sustained rate of `/limited`, in requests per second.
pub const DEFAULT_LIMITED_RATE: f64 = 10.0;
/// Default burst of `/limited`: requests a fresh key may make at once.
pub const DEFAULT_LIMITED_BURST: u32 = 5;

/// Accepted range of the `/limited` rate, in requests per second.
pub(crate) const RATE_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1_000_000.0;
/// Accepted range of the `/limited` burst.
pub(crate) const BURST_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000_000;

/// The GCRA (generic cell rate algorithm) of a rate and a burst, on
/// nanosecond timestamps. Pure: the caller keeps the state and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// Nanoseconds of credit a full burst represents (`interval * burst`).
    tolerance: u64,
    burst: u32,
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    /// Requests that would still be allowed right now, after this one.
    pub(crate) remaining: u64,
    /// Until one more request's worth of quota is available: `remaining`
    /// goes up by one then (the `t` of the IETF `RateLimit` field since
    /// draft -10). Never zero; equal to `retry_after` on a refusal.
    pub(crate) next_quota: Duration,
    /// Until the next request can be allowed; zero when this one was.
    pub(crate) retry_after: Duration,
}

impl Gcra {
    /// `rate` and `burst` must already be validated (see [`RATE_RANGE`]).
    pub(crate) fn new(rate_per_sec: f64, burst: u32) -> Self {
        let interval = ((1e9 / rate_per_sec).round() as u64).max(1);
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst)),
            burst,
        }
    }

    pub(crate) const fn burst(&self) -> u32 {
        self.burst
    }

    /// The window of the `RateLimit-Policy`: the time a full burst takes to
    /// refill, in whole seconds rounded up (the field is an integer).
    pub(crate) fn window_secs(&self) -> u64 {
        ceil_secs(self.tolerance).max(1)
    }

    /// Decides a request at `now`; `tat` is the key's theoretical arrival
    /// time, both in nanoseconds on the same clock.
    pub(crate) fn check(&self, tat: &mut u64, now: u64) -> Decision {
        let start = (*tat).max(now);
        let next = start.saturating_add(self.interval);
        let debt = next - now;
        if debt > self.tolerance {
            let retry_after = Duration::from_nanos(debt - self.tolerance);
            return Decision {
                allowed: false,
                remaining: 0,
                next_quota: retry_after,
                retry_after,
            };
        }
        *tat = next;
        // `debt` is the credit in use now; the unused credit is
        // `remaining` whole intervals plus a part, and the next whole
        // interval completes when the part does.
        let unused = self.tolerance - debt;
        Decision {
            allowed: true,
            remaining: unused / self.interval,
            next_quota: Duration::from_nanos(self.interval - unused % self.interval),
            retry_after: Duration::ZERO,
        }
    }
}

/// Whole seconds, rounded up, of `nanos`.
const fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

/// Whole seconds, rounded up: what a client that honours the value must
/// wait at least.
pub(crate) fn ceil_duration(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Requests `/limited` allowed and refused for one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitedStats {
    /// Requests answered 200.
    pub allowed: u64,
    /// Requests answered 429.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct KeyState {
    tat: u64,
    stats: LimitedStats,
}

/// The per-key limiter of one server.
#[derive(Debug)]
pub(crate) struct Limiter {
    gcra: Gcra,
    epoch: Instant,
    keys: Mutex<HashMap<String, KeyState>>,
}

impl Limiter {
    pub(crate) fn new(gcra: Gcra) -> Self {
        Self {
            gcra,
            epoch: Instant::now(),
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) const fn gcra(&self) -> &Gcra {
        &self.gcra
    }

    pub(crate) fn check(&self, key: &str) -> Decision {
        let now = self.epoch.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let state = match keys.get_mut(key) {
            Some(s) => s,
            None => keys.entry(key.to_owned()).or_default(),
        };
        let d = self.gcra.check(&mut state.tat, now);
        if d.allowed {
            state.stats.allowed += 1;
        } else {
            state.stats.refused += 1;
        }
        d
    }

    pub(crate) fn stats(&self, key: &str) -> LimitedStats {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|s| s.stats)
            .unwrap_or_default()
    }

    pub(crate) fn reset_stats(&self) {
        for state in self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values_mut()
        {
            state.stats = LimitedStats::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_fresh_key_gets_the_burst_then_waits_one_interval() {
        let g = Gcra::new(2.0, 3);
        let mut tat = 0;
        let t0 = 10 * SEC;
        let remaining: Vec<_> = (0..3).map(|_| g.check(&mut tat, t0).remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = g.check(&mut tat, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        // Quota comes back one interval at a time: the next unit is what a
        // refused request waits for, not the whole burst.
        assert_eq!(refused.next_quota, refused.retry_after);
        assert!(g.check(&mut tat, t0 + SEC / 2).allowed);
        assert_eq!(g.window_secs(), 2);
    }

    #[test]
    fn rounding_is_up() {
        assert_eq!(ceil_duration(Duration::from_millis(1)), 1);
        assert_eq!(ceil_duration(Duration::from_secs(2)), 2);
        assert_eq!(ceil_duration(Duration::from_millis(2001)), 3);
        assert_eq!(Gcra::new(1000.0, 1).window_secs(), 1);
    }

    proptest! {
        /// Over any schedule, allowed requests never exceed the burst plus
        /// what the rate earned, and waiting `retry_after` always succeeds.
        #[test]
        fn never_allows_more_than_rate_plus_burst(
            rate in 0.5f64..1000.0,
            burst in 1u32..50,
            gaps in proptest::collection::vec(0u64..SEC, 1..200),
        ) {
            let g = Gcra::new(rate, burst);
            let mut tat = 0;
            let mut now = 0;
            let mut allowed = 0u64;
            for gap in gaps {
                now += gap;
                let d = g.check(&mut tat, now);
                if d.allowed {
                    allowed += 1;
                } else {
                    prop_assert_eq!(d.remaining, 0);
                    let mut probe = tat;
                    let later = now + d.retry_after.as_nanos() as u64;
                    prop_assert!(g.check(&mut probe, later).allowed);
                    let mut probe = tat;
                    prop_assert!(!g.check(&mut probe, later - 1).allowed);
                }
                prop_assert!(d.remaining < u64::from(burst));
                prop_assert!(!d.next_quota.is_zero());
                if d.allowed {
                    // `next_quota` is exactly when `remaining` goes up by one.
                    let at = now + d.next_quota.as_nanos() as u64;
                    let mut probe = tat;
                    let early = g.check(&mut probe, at - 1);
                    if d.remaining == 0 {
                        prop_assert!(!early.allowed);
                    } else {
                        prop_assert_eq!(early.remaining, d.remaining - 1);
                    }
                    let mut probe = tat;
                    let on_time = g.check(&mut probe, at);
                    prop_assert!(on_time.allowed);
                    prop_assert_eq!(on_time.remaining, d.remaining);
                } else {
                    prop_assert_eq!(d.next_quota, d.retry_after);
                }
                let earned = now / g.interval;
                prop_assert!(allowed <= u64::from(burst) + earned);
            }
        }
    }
}
