//! Delay schedules as plain iterators.
//!
//! A schedule is any `Iterator<Item = Duration>`: the delay before retry 1,
//! retry 2, ... It knows nothing of HTTP, clocks or async, so it can be
//! tested with `collect()` and used for anything that retries.
//!
//! | Curve | Delays (base `b`) |
//! |---|---|
//! | [`Constant`] | `b, b, b, ...` |
//! | [`Linear`] | `b, b + s, b + 2s, ...` (step `s`, default `b`) |
//! | [`Exponential`] | `b, b·f, b·f², ...` (factor `f`, default 2) |
//! | [`Fibonacci`] | `b, b, 2b, 3b, 5b, ...` |
//! | [`Decorrelated`] | AWS "decorrelated jitter": `min(cap, random(b, 3·previous))` |
//!
//! Curves are infinite and saturate instead of overflowing. [`ScheduleExt`]
//! shapes any schedule: [`max_delay`](ScheduleExt::max_delay) caps each
//! delay, [`full_jitter`](ScheduleExt::full_jitter) and
//! [`equal_jitter`](ScheduleExt::equal_jitter) spread them (the AWS
//! Architecture Blog definitions, "Exponential Backoff And Jitter", 2015),
//! [`max_retries`](ScheduleExt::max_retries) and
//! [`max_elapsed`](ScheduleExt::max_elapsed) end them.
//!
//! Cap before jittering: `Exponential::new(b).max_delay(cap).full_jitter()`
//! draws from `[0, min(cap, b·2ⁿ)]`, which is AWS's full jitter.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_backoff::schedule::{Exponential, ScheduleExt};
//!
//! let ms = Duration::from_millis;
//! let plain: Vec<_> = Exponential::new(ms(100)).max_delay(ms(500)).max_retries(4).collect();
//! assert_eq!(plain, [ms(100), ms(200), ms(400), ms(500)]);
//!
//! for (n, d) in Exponential::new(ms(100)).full_jitter().seed(7).take(4).enumerate() {
//!     assert!(d <= ms(100) * 2u32.pow(n as u32));
//! }
//! ```

use std::hash::{BuildHasher, RandomState};
use std::iter::FusedIterator;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The same delay every time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constant {
    delay: Duration,
}

impl Constant {
    /// `delay, delay, delay, ...`
    pub const fn new(delay: Duration) -> Self {
        Self { delay }
    }
}

impl Iterator for Constant {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.delay)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl FusedIterator for Constant {}

/// Delays that grow by a fixed step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linear {
    next: Duration,
    step: Duration,
}

impl Linear {
    /// `base, 2·base, 3·base, ...`
    pub const fn new(base: Duration) -> Self {
        Self {
            next: base,
            step: base,
        }
    }

    /// Grows by `step` instead of by `base`: `base, base + step, ...`
    #[must_use]
    pub const fn step(mut self, step: Duration) -> Self {
        self.step = step;
        self
    }
}

impl Iterator for Linear {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = self.next.saturating_add(self.step);
        Some(d)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl FusedIterator for Linear {}

/// Delays that grow by a constant factor: `base · factorⁿ`.
#[derive(Clone, Debug, PartialEq)]
pub struct Exponential {
    base: Duration,
    factor: f64,
    n: i32,
    last: Duration,
}

impl Exponential {
    /// `base, 2·base, 4·base, ...`
    pub const fn new(base: Duration) -> Self {
        Self {
            base,
            factor: 2.0,
            n: 0,
            last: base,
        }
    }

    /// Grows by `factor` instead of 2.
    ///
    /// A factor below 1 (or NaN) would shrink the delays, which no backoff
    /// wants; it is treated as 1. [`crate::Backoff`] rejects it with an
    /// error instead.
    pub const fn factor(mut self, factor: f64) -> Self {
        self.factor = if factor >= 1.0 { factor } else { 1.0 };
        self
    }
}

impl Iterator for Exponential {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = if self.n == 0 {
            self.base
        } else if self.factor.fract() == 0.0 && self.factor <= f64::from(u32::MAX) {
            // Whole factors (the usual 2) multiply exactly, step by step.
            self.last
                .checked_mul(self.factor as u32)
                .unwrap_or(Duration::MAX)
        } else {
            // Others go through f64, from the base each time so rounding does
            // not accumulate; never below the previous delay.
            let nanos = self.base.as_nanos() as f64 * self.factor.powi(self.n);
            duration_from_nanos_f64(nanos).max(self.last)
        };
        self.n = self.n.saturating_add(1);
        self.last = d;
        Some(d)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl FusedIterator for Exponential {}

/// Delays that follow the Fibonacci sequence: `base, base, 2·base, 3·base, 5·base, ...`
///
/// Grows more gently than doubling (by about 1.618 per step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fibonacci {
    current: Duration,
    next: Duration,
}

impl Fibonacci {
    /// `base, base, 2·base, 3·base, 5·base, ...`
    pub const fn new(base: Duration) -> Self {
        Self {
            current: base,
            next: base,
        }
    }
}

impl Iterator for Fibonacci {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.current;
        self.current = self.next;
        self.next = d.saturating_add(self.next);
        Some(d)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl FusedIterator for Fibonacci {}

/// AWS's "decorrelated jitter": each delay is drawn from
/// `[base, 3 · previous delay]`, capped at `cap`; the first previous delay
/// is `base`.
///
/// Every delay lies in `[base, cap]`. It spreads clients as well as full
/// jitter while keeping a floor of `base` between attempts.
///
/// ```
/// use std::time::Duration;
/// use steadfast_backoff::schedule::Decorrelated;
///
/// let (base, cap) = (Duration::from_millis(100), Duration::from_secs(2));
/// for d in Decorrelated::new(base, cap).seed(1).take(10) {
///     assert!(base <= d && d <= cap);
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decorrelated<R = SmallRng> {
    base: Duration,
    cap: Duration,
    previous: Duration,
    rng: R,
}

impl Decorrelated {
    /// Decorrelated jitter between `base` and `cap`, seeded at random.
    ///
    /// A `base` above `cap` is lowered to `cap`: the cap is the promise.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::with_rng(base, cap, SmallRng::seed_from_u64(random_seed()))
    }

    /// The same schedule with a fixed seed, for reproducible delays.
    #[must_use]
    pub fn seed(self, seed: u64) -> Self {
        Self::with_rng(self.base, self.cap, SmallRng::seed_from_u64(seed))
    }
}

impl<R: Rng> Decorrelated<R> {
    /// Decorrelated jitter drawing from `rng`.
    pub fn with_rng(base: Duration, cap: Duration, rng: R) -> Self {
        let base = base.min(cap);
        Self {
            base,
            cap,
            previous: base,
            rng,
        }
    }
}

impl<R: Rng> Iterator for Decorrelated<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let high = self.previous.saturating_mul(3).max(self.base);
        let d = uniform(&mut self.rng, self.base, high).min(self.cap);
        self.previous = d;
        Some(d)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl<R: Rng> FusedIterator for Decorrelated<R> {}

/// A schedule whose delays never exceed a cap; see [`ScheduleExt::max_delay`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxDelay<S> {
    inner: S,
    cap: Duration,
}

impl<S: Iterator<Item = Duration>> Iterator for MaxDelay<S> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.inner.next().map(|d| d.min(self.cap))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<S: FusedIterator<Item = Duration>> FusedIterator for MaxDelay<S> {}

/// How [`Jittered`] spreads a delay `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spread {
    /// Uniform in `[0, d]`.
    Full,
    /// Uniform in `[d/2, d]`.
    Equal,
}

/// A schedule with random jitter; see [`ScheduleExt::full_jitter`] and
/// [`ScheduleExt::equal_jitter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jittered<S, R = SmallRng> {
    inner: S,
    spread: Spread,
    rng: R,
}

impl<S> Jittered<S> {
    /// The same schedule with a fixed seed, for reproducible delays.
    #[must_use]
    pub fn seed(self, seed: u64) -> Self {
        self.with_rng(SmallRng::seed_from_u64(seed))
    }
}

impl<S, R> Jittered<S, R> {
    /// The same schedule drawing from `rng`.
    pub fn with_rng<R2: Rng>(self, rng: R2) -> Jittered<S, R2> {
        Jittered {
            inner: self.inner,
            spread: self.spread,
            rng,
        }
    }
}

impl<S: Iterator<Item = Duration>, R: Rng> Iterator for Jittered<S, R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.inner.next()?;
        Some(match self.spread {
            Spread::Full => uniform(&mut self.rng, Duration::ZERO, d),
            Spread::Equal => {
                let half = d / 2;
                uniform(&mut self.rng, d.saturating_sub(half), d)
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<S: FusedIterator<Item = Duration>, R: Rng> FusedIterator for Jittered<S, R> {}

/// A schedule that ends once its delays would add up to more than a limit;
/// see [`ScheduleExt::max_elapsed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxElapsed<S> {
    inner: S,
    left: Option<Duration>,
}

impl<S: Iterator<Item = Duration>> Iterator for MaxElapsed<S> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let left = self.left?;
        match self.inner.next() {
            Some(d) if d <= left => {
                self.left = Some(left.saturating_sub(d));
                Some(d)
            }
            _ => {
                self.left = None;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.left.is_none() {
            return (0, Some(0));
        }
        (0, self.inner.size_hint().1)
    }
}

impl<S: Iterator<Item = Duration>> FusedIterator for MaxElapsed<S> {}

/// Shapes any schedule (`Iterator<Item = Duration>`).
pub trait ScheduleExt: Iterator<Item = Duration> + Sized {
    /// Caps every delay at `cap`.
    fn max_delay(self, cap: Duration) -> MaxDelay<Self> {
        MaxDelay { inner: self, cap }
    }

    /// AWS full jitter: each delay `d` becomes uniform in `[0, d]`. The
    /// RNG is seeded at random; [`Jittered::seed`] fixes it.
    fn full_jitter(self) -> Jittered<Self> {
        Jittered {
            inner: self,
            spread: Spread::Full,
            rng: SmallRng::seed_from_u64(random_seed()),
        }
    }

    /// AWS equal jitter: each delay `d` becomes uniform in `[d/2, d]`.
    fn equal_jitter(self) -> Jittered<Self> {
        Jittered {
            inner: self,
            spread: Spread::Equal,
            rng: SmallRng::seed_from_u64(random_seed()),
        }
    }

    /// At most `n` delays, so at most `n + 1` attempts.
    fn max_retries(self, n: u32) -> std::iter::Take<Self> {
        self.take(n as usize)
    }

    /// Ends the schedule before the delays yielded add up to more than
    /// `limit`.
    ///
    /// This counts time spent waiting only; an executor that also wants to
    /// bound the time spent in attempts uses a [`steadfast_core::Deadline`].
    fn max_elapsed(self, limit: Duration) -> MaxElapsed<Self> {
        MaxElapsed {
            inner: self,
            left: Some(limit),
        }
    }
}

impl<S: Iterator<Item = Duration>> ScheduleExt for S {}

/// A uniformly distributed duration in `[low, high]` (nanosecond steps).
///
/// Spans above `u64::MAX` nanoseconds (585 years) are cut to that.
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    let span = u64::try_from(high.saturating_sub(low).as_nanos()).unwrap_or(u64::MAX);
    // Lemire's multiply-shift: an unbiased-enough draw in [0, span] without division.
    let offset = ((u128::from(rng.next_u64()) * (u128::from(span) + 1)) >> 64) as u64;
    low.saturating_add(Duration::from_nanos(offset))
}

pub(crate) fn duration_from_nanos_f64(nanos: f64) -> Duration {
    if nanos.is_nan() || nanos <= 0.0 {
        Duration::ZERO
    } else if nanos >= u64::MAX as f64 {
        Duration::MAX
    } else {
        Duration::from_nanos(nanos.round() as u64)
    }
}

/// A seed for jitter that differs between calls and between processes.
///
/// std's `RandomState` is seeded from the OS once per thread, so this needs
/// no extra dependency; the counter makes successive seeds distinct.
/// Jitter spreads clients apart; it does not need cryptographic strength.
pub(crate) fn random_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// SplitMix64: derives well-spread per-request seeds from one base seed.
pub(crate) const fn mix_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn curves_follow_their_formula() {
        assert_eq!(Constant::new(ms(5)).take(3).collect::<Vec<_>>(), [ms(5); 3]);
        assert_eq!(
            Linear::new(ms(100)).take(3).collect::<Vec<_>>(),
            [ms(100), ms(200), ms(300)]
        );
        assert_eq!(
            Linear::new(ms(100))
                .step(ms(10))
                .take(3)
                .collect::<Vec<_>>(),
            [ms(100), ms(110), ms(120)]
        );
        assert_eq!(
            Exponential::new(ms(100)).take(5).collect::<Vec<_>>(),
            [ms(100), ms(200), ms(400), ms(800), ms(1600)]
        );
        assert_eq!(
            Exponential::new(ms(100))
                .factor(3.0)
                .take(3)
                .collect::<Vec<_>>(),
            [ms(100), ms(300), ms(900)]
        );
        assert_eq!(
            Fibonacci::new(ms(10)).take(6).collect::<Vec<_>>(),
            [ms(10), ms(10), ms(20), ms(30), ms(50), ms(80)]
        );
    }

    #[test]
    fn curves_saturate_instead_of_overflowing() {
        assert_eq!(Exponential::new(ms(1)).nth(2000), Some(Duration::MAX));
        assert_eq!(Fibonacci::new(Duration::MAX).nth(5), Some(Duration::MAX));
        assert_eq!(Linear::new(Duration::MAX).nth(5), Some(Duration::MAX));
        assert_eq!(
            Exponential::new(ms(100)).factor(f64::NAN).nth(3),
            Some(ms(100))
        );
        assert_eq!(Exponential::new(ms(100)).factor(0.5).nth(3), Some(ms(100)));
    }

    #[test]
    fn jitter_is_reproducible_with_a_seed_and_spread_without() {
        let a: Vec<_> = Exponential::new(ms(100))
            .full_jitter()
            .seed(3)
            .take(8)
            .collect();
        let b: Vec<_> = Exponential::new(ms(100))
            .full_jitter()
            .seed(3)
            .take(8)
            .collect();
        assert_eq!(a, b);
        let c: Vec<_> = Exponential::new(ms(100)).full_jitter().take(8).collect();
        let d: Vec<_> = Exponential::new(ms(100)).full_jitter().take(8).collect();
        assert_ne!(c, d, "two unseeded schedules drew the same 8 delays");
    }

    #[test]
    fn max_elapsed_stops_before_the_limit_and_stays_stopped() {
        let mut s = Constant::new(ms(40)).max_elapsed(ms(100));
        assert_eq!(s.next(), Some(ms(40)));
        assert_eq!(s.next(), Some(ms(40)));
        assert_eq!(s.next(), None);
        assert_eq!(s.next(), None);
    }

    #[test]
    fn uniform_covers_the_range_ends() {
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(uniform(&mut rng, ms(5), ms(5)), ms(5));
        assert_eq!(uniform(&mut rng, ms(5), ms(1)), ms(5));
        let d = uniform(&mut rng, Duration::ZERO, Duration::MAX);
        assert!(d <= Duration::from_nanos(u64::MAX));
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..=10_000).prop_map(Duration::from_millis),
            any::<u64>().prop_map(Duration::from_nanos),
            Just(Duration::MAX),
        ]
    }

    proptest! {
        #[test]
        fn full_jitter_lies_in_zero_to_the_capped_curve(
            base in any_duration(), cap in any_duration(), seed in any::<u64>(), n in 1usize..40,
        ) {
            let curve: Vec<_> = Exponential::new(base).max_delay(cap).take(n).collect();
            let jittered: Vec<_> = Exponential::new(base).max_delay(cap).full_jitter().seed(seed).take(n).collect();
            prop_assert_eq!(jittered.len(), n);
            for (d, top) in jittered.iter().zip(&curve) {
                prop_assert!(d <= top && *d <= cap, "{d:?} > {top:?} (cap {cap:?})");
            }
        }

        #[test]
        fn equal_jitter_lies_in_half_to_the_capped_curve(
            base in any_duration(), cap in any_duration(), seed in any::<u64>(), n in 1usize..40,
        ) {
            let curve = Fibonacci::new(base).max_delay(cap);
            let jittered = Fibonacci::new(base).max_delay(cap).equal_jitter().seed(seed);
            for (d, top) in jittered.zip(curve).take(n) {
                prop_assert!(top.saturating_sub(top / 2) <= d && d <= top);
            }
        }

        #[test]
        fn decorrelated_lies_in_base_to_cap(
            base in any_duration(), cap in any_duration(), seed in any::<u64>(), n in 1usize..60,
        ) {
            for d in Decorrelated::new(base, cap).seed(seed).take(n) {
                prop_assert!(base.min(cap) <= d && d <= cap, "{d:?} outside [{base:?}, {cap:?}]");
            }
        }

        #[test]
        fn curves_never_decrease_and_respect_the_cap(
            base in any_duration(), step in any_duration(), factor in 1.0f64..10.0, cap in any_duration(),
        ) {
            let curves: [Vec<Duration>; 4] = [
                Constant::new(base).max_delay(cap).take(30).collect(),
                Linear::new(base).step(step).max_delay(cap).take(30).collect(),
                Exponential::new(base).factor(factor).max_delay(cap).take(30).collect(),
                Fibonacci::new(base).max_delay(cap).take(30).collect(),
            ];
            for c in &curves {
                prop_assert_eq!(c[0], base.min(cap));
                prop_assert!(c.windows(2).all(|w| w[0] <= w[1]), "{c:?} decreases");
                prop_assert!(c.iter().all(|d| *d <= cap));
            }
        }

        #[test]
        fn max_elapsed_bounds_the_sum(
            base in 0u64..5_000, limit in 0u64..60_000, seed in any::<u64>(),
        ) {
            let limit = ms(limit);
            let delays: Vec<_> = Exponential::new(ms(base)).full_jitter().seed(seed)
                .max_elapsed(limit).take(100).collect();
            let total: Duration = delays.iter().sum();
            prop_assert!(total <= limit, "{total:?} > {limit:?}");
        }

        #[test]
        fn max_retries_bounds_the_count(n in 0u32..50) {
            prop_assert_eq!(Constant::new(MS).max_retries(n).count(), n as usize);
        }
    }
}
