//! [`Backoff`]: a schedule described as a value (curve, jitter, cap, limits)
//! that a retry layer stores once and turns into a fresh [`Schedule`] for
//! every request.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::config::{
    ConfigError, DEFAULT_BASE, DEFAULT_FACTOR, DEFAULT_MAX_DELAY, DEFAULT_MAX_RETRIES,
};
use crate::schedule::{Constant, Exponential, Fibonacci, Linear, mix_seed, random_seed, uniform};

/// How delays are randomised, after the AWS Architecture Blog's
/// "Exponential Backoff And Jitter" (2015). `d` is the capped curve value.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// `d` as is. Clients that failed together retry together.
    None,
    /// Uniform in `[0, d]`: spreads clients the most; the default.
    #[default]
    Full,
    /// Uniform in `[d/2, d]`: keeps at least half of the delay.
    Equal,
    /// `min(cap, uniform(base, 3 · previous))`: grows by itself, so the
    /// curve contributes only its first delay, `base`. Delays lie in
    /// `[base, cap]`.
    Decorrelated,
}

/// The shape of the delays before jitter.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Curve {
    /// `base, base, ...`
    Constant,
    /// `base, base + step, base + 2·step, ...`
    Linear {
        /// Added at each retry.
        step: Duration,
    },
    /// `base, base·factor, base·factor², ...`
    Exponential {
        /// Multiplies the delay at each retry (at least 1).
        factor: f64,
    },
    /// `base, base, 2·base, 3·base, 5·base, ...`
    Fibonacci,
}

/// A complete backoff policy as a `Copy` value: curve, jitter, cap and
/// limits. [`Backoff::iter`] (or `for d in backoff`) yields the delays.
///
/// Every constructor starts from the steadfast defaults and changes only
/// the curve and its base: at most [`DEFAULT_MAX_RETRIES`] retries, each
/// delay capped at [`DEFAULT_MAX_DELAY`], [`Jitter::Full`].
///
/// ```
/// use std::time::Duration;
/// use steadfast_backoff::{Backoff, Jitter};
///
/// let ms = Duration::from_millis;
/// let b = Backoff::exponential(ms(100)).jitter(Jitter::None).max_delay(ms(300)).max_retries(4);
/// assert_eq!(b.iter().collect::<Vec<_>>(), [ms(100), ms(200), ms(300), ms(300)]);
///
/// // The default: exponential from 100 ms, full jitter, capped at 10 s, 3 retries.
/// let delays: Vec<_> = Backoff::default().seeded(1).collect();
/// assert_eq!(delays.len(), 3);
/// assert!(delays.iter().zip([100, 200, 400]).all(|(d, top)| *d <= ms(top)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    curve: Curve,
    base: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) jitter: Jitter,
    pub(crate) max_retries: u32,
    max_elapsed: Option<Duration>,
    seed: Option<u64>,
}

impl Default for Backoff {
    /// Exponential from [`DEFAULT_BASE`] by [`DEFAULT_FACTOR`], full jitter,
    /// capped at [`DEFAULT_MAX_DELAY`], [`DEFAULT_MAX_RETRIES`] retries.
    fn default() -> Self {
        Self::exponential(DEFAULT_BASE)
    }
}

impl Backoff {
    const fn with_curve(curve: Curve, base: Duration) -> Self {
        Self {
            curve,
            base,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: Jitter::Full,
            max_retries: DEFAULT_MAX_RETRIES,
            max_elapsed: None,
            seed: None,
        }
    }

    /// The same delay before every retry.
    pub const fn constant(delay: Duration) -> Self {
        Self::with_curve(Curve::Constant, delay)
    }

    /// Delays growing by `base` each retry; change the step with [`Backoff::step`].
    pub const fn linear(base: Duration) -> Self {
        Self::with_curve(Curve::Linear { step: base }, base)
    }

    /// Delays doubling from `base`; change the factor with [`Backoff::factor`].
    pub const fn exponential(base: Duration) -> Self {
        Self::with_curve(
            Curve::Exponential {
                factor: DEFAULT_FACTOR,
            },
            base,
        )
    }

    /// Delays following the Fibonacci sequence from `base`.
    pub const fn fibonacci(base: Duration) -> Self {
        Self::with_curve(Curve::Fibonacci, base)
    }

    /// Sets the factor of an exponential curve (ignored by other curves).
    /// Must be finite and at least 1.
    pub const fn factor(mut self, factor: f64) -> Self {
        if let Curve::Exponential { .. } = self.curve {
            self.curve = Curve::Exponential { factor };
        }
        self
    }

    /// Sets the step of a linear curve (ignored by other curves).
    pub const fn step(mut self, step: Duration) -> Self {
        if let Curve::Linear { .. } = self.curve {
            self.curve = Curve::Linear { step };
        }
        self
    }

    /// Caps every delay, before jitter is applied. Must be at least the base.
    pub const fn max_delay(mut self, cap: Duration) -> Self {
        self.max_delay = cap;
        self
    }

    /// Sets the jitter.
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// At most `n` retries (so `n + 1` attempts). `0` disables retries.
    pub const fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Ends the schedule before the delays add up to more than `limit`.
    /// (A retry layer bounds total time, attempts included, with a
    /// [`steadfast_core::Deadline`] instead.)
    pub const fn max_elapsed(mut self, limit: Duration) -> Self {
        self.max_elapsed = Some(limit);
        self
    }

    /// Fixes the jitter seed, for reproducible delays. A retry layer derives
    /// one seed per request from it.
    pub const fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The curve.
    pub const fn curve(&self) -> Curve {
        self.curve
    }

    /// The first delay of the curve.
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// Checks the parameters: a finite factor of at least 1, a base no
    /// larger than the cap, and a base above zero for the curves that grow
    /// from it (exponential, Fibonacci, linear without a step, decorrelated
    /// jitter), which would otherwise stay at zero and retry at once, every
    /// time. [`Backoff::constant`]`(Duration::ZERO)` retries at once on purpose.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Curve::Exponential { factor } = self.curve
            && !(factor.is_finite() && factor >= 1.0)
        {
            return Err(ConfigError::Factor(factor));
        }
        let grows_from_base = match self.curve {
            Curve::Constant => false,
            Curve::Linear { step } => step.is_zero(),
            Curve::Exponential { .. } | Curve::Fibonacci => true,
        };
        if self.base.is_zero() && (grows_from_base || self.jitter == Jitter::Decorrelated) {
            return Err(ConfigError::ZeroBase);
        }
        if self.base > self.max_delay {
            return Err(ConfigError::BaseAboveMaxDelay {
                base: self.base,
                max_delay: self.max_delay,
            });
        }
        Ok(())
    }

    /// The delays: seeded with [`Backoff::seed`] if set, at random otherwise.
    pub fn iter(&self) -> Schedule {
        self.seeded(self.seed.unwrap_or_else(random_seed))
    }

    /// The delays with jitter drawn from `seed`.
    pub fn seeded(&self, seed: u64) -> Schedule {
        let curve = match self.curve {
            Curve::Constant => CurveIter::Constant(Constant::new(self.base)),
            Curve::Linear { step } => CurveIter::Linear(Linear::new(self.base).step(step)),
            Curve::Exponential { factor } => {
                CurveIter::Exponential(Exponential::new(self.base).factor(factor))
            }
            Curve::Fibonacci => CurveIter::Fibonacci(Fibonacci::new(self.base)),
        };
        let base = self.base.min(self.max_delay);
        Schedule {
            curve,
            base,
            max_delay: self.max_delay,
            jitter: self.jitter,
            rng: SmallRng::seed_from_u64(seed),
            previous: base,
            retries_left: self.max_retries,
            elapsed_left: self.max_elapsed,
        }
    }

    /// The schedule of the `index`-th request of a layer: seeded from
    /// [`Backoff::seed`] and `index` when a seed is set, at random otherwise.
    pub(crate) fn for_request(&self, index: u64) -> Schedule {
        match self.seed {
            Some(seed) => self.seeded(mix_seed(seed, index)),
            None => self.seeded(random_seed()),
        }
    }
}

impl IntoIterator for Backoff {
    type Item = Duration;
    type IntoIter = Schedule;

    fn into_iter(self) -> Schedule {
        self.iter()
    }
}

impl IntoIterator for &Backoff {
    type Item = Duration;
    type IntoIter = Schedule;

    fn into_iter(self) -> Schedule {
        self.iter()
    }
}

#[derive(Clone, Debug)]
enum CurveIter {
    Constant(Constant),
    Linear(Linear),
    Exponential(Exponential),
    Fibonacci(Fibonacci),
}

impl CurveIter {
    fn next(&mut self) -> Duration {
        match self {
            Self::Constant(c) => c.next(),
            Self::Linear(c) => c.next(),
            Self::Exponential(c) => c.next(),
            Self::Fibonacci(c) => c.next(),
        }
        .unwrap_or(Duration::MAX)
    }
}

/// The delays of a [`Backoff`]: an iterator, ended by its retry and elapsed limits.
#[derive(Clone, Debug)]
pub struct Schedule {
    curve: CurveIter,
    base: Duration,
    max_delay: Duration,
    jitter: Jitter,
    rng: SmallRng,
    previous: Duration,
    retries_left: u32,
    elapsed_left: Option<Duration>,
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retries_left == 0 {
            return None;
        }
        let capped = self.curve.next().min(self.max_delay);
        let d = match self.jitter {
            Jitter::None => capped,
            Jitter::Full => uniform(&mut self.rng, Duration::ZERO, capped),
            Jitter::Equal => uniform(&mut self.rng, capped.saturating_sub(capped / 2), capped),
            Jitter::Decorrelated => {
                let high = self.previous.saturating_mul(3).max(self.base);
                let d = uniform(&mut self.rng, self.base, high).min(self.max_delay);
                self.previous = d;
                d
            }
        };
        if let Some(left) = self.elapsed_left {
            if d > left {
                self.retries_left = 0;
                return None;
            }
            self.elapsed_left = Some(left.saturating_sub(d));
        }
        self.retries_left -= 1;
        Some(d)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.retries_left as usize))
    }
}

impl std::iter::FusedIterator for Schedule {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_curve_and_jitter_is_reachable() {
        let plain = |b: Backoff| {
            b.jitter(Jitter::None)
                .max_retries(4)
                .iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(plain(Backoff::constant(ms(7))), [ms(7); 4]);
        assert_eq!(
            plain(Backoff::linear(ms(10)).step(ms(5))),
            [ms(10), ms(15), ms(20), ms(25)]
        );
        assert_eq!(
            plain(Backoff::exponential(ms(10)).factor(3.0)),
            [ms(10), ms(30), ms(90), ms(270)]
        );
        assert_eq!(
            plain(Backoff::fibonacci(ms(10))),
            [ms(10), ms(10), ms(20), ms(30)]
        );
        // factor/step on the wrong curve are ignored, not misapplied.
        assert_eq!(
            Backoff::constant(ms(1)).factor(9.0).curve(),
            Curve::Constant
        );
        assert_eq!(
            Backoff::fibonacci(ms(1)).step(ms(9)).curve(),
            Curve::Fibonacci
        );
    }

    #[test]
    fn validation_names_the_bad_parameter() {
        assert!(Backoff::default().validate().is_ok());
        let err = Backoff::exponential(ms(1))
            .factor(0.5)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("factor"), "{err}");
        assert!(
            Backoff::exponential(ms(1))
                .factor(f64::INFINITY)
                .validate()
                .is_err()
        );
        let err = Backoff::constant(ms(20_000)).validate().unwrap_err();
        assert!(err.to_string().contains("max_delay"), "{err}");
    }

    #[test]
    fn a_zero_base_that_would_never_grow_is_refused() {
        let zero = Duration::ZERO;
        for b in [
            Backoff::exponential(zero),
            Backoff::fibonacci(zero),
            Backoff::linear(zero),
            Backoff::constant(zero).jitter(Jitter::Decorrelated),
        ] {
            assert_eq!(b.validate(), Err(ConfigError::ZeroBase), "{b:?}");
        }
        let err = ConfigError::ZeroBase.to_string();
        assert!(err.contains("base is zero"), "{err}");
        // Retrying at once is still possible, on purpose.
        assert!(Backoff::constant(zero).validate().is_ok());
        assert!(Backoff::linear(zero).step(ms(10)).validate().is_ok());
    }

    #[test]
    fn seeds_make_schedules_reproducible() {
        let b = Backoff::default().max_retries(10);
        assert_eq!(
            b.seeded(9).collect::<Vec<_>>(),
            b.seeded(9).collect::<Vec<_>>()
        );
        let s = b.seed(9);
        assert_eq!(s.iter().collect::<Vec<_>>(), s.iter().collect::<Vec<_>>());
        assert_ne!(
            s.for_request(0).collect::<Vec<_>>(),
            s.for_request(1).collect::<Vec<_>>()
        );
    }

    fn any_backoff() -> impl Strategy<Value = Backoff> {
        let curve = prop_oneof![
            Just(Curve::Constant),
            (0u64..2_000).prop_map(|s| Curve::Linear { step: ms(s) }),
            (1.0f64..5.0).prop_map(|factor| Curve::Exponential { factor }),
            Just(Curve::Fibonacci),
        ];
        let jitter = prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
        ];
        (
            curve,
            0u64..2_000,
            0u64..20_000,
            jitter,
            0u32..40,
            proptest::option::of(0u64..100_000),
        )
            .prop_map(|(curve, base, extra, jitter, retries, elapsed)| {
                let mut b = Backoff::with_curve(curve, ms(base))
                    .max_delay(ms(base + extra))
                    .jitter(jitter)
                    .max_retries(retries);
                if let Some(e) = elapsed {
                    b = b.max_elapsed(ms(e));
                }
                b
            })
    }

    proptest! {
        #[test]
        fn every_schedule_stays_within_its_bounds(b in any_backoff(), seed in any::<u64>()) {
            if let Err(e) = b.validate() {
                // The generator keeps factor >= 1 and max_delay >= base: only
                // a zero base that would never grow is refused.
                prop_assert_eq!(e, ConfigError::ZeroBase);
                prop_assert!(b.base().is_zero());
                return Ok(());
            }
            let delays: Vec<_> = b.seeded(seed).collect();
            prop_assert!(delays.len() <= b.max_retries as usize, "more delays than retries");
            let cap = b.max_delay;
            for d in &delays {
                prop_assert!(*d <= cap, "{d:?} above the cap {cap:?}");
                if b.jitter == Jitter::Decorrelated {
                    prop_assert!(*d >= b.base(), "{d:?} below the base");
                }
            }
            if let Some(limit) = b.max_elapsed {
                prop_assert!(delays.iter().sum::<Duration>() <= limit);
            } else {
                prop_assert_eq!(delays.len(), b.max_retries as usize);
            }
        }

        #[test]
        fn full_jitter_is_bounded_by_the_unjittered_schedule(b in any_backoff(), seed in any::<u64>()) {
            let b = b.jitter(Jitter::Full);
            let top = b.jitter(Jitter::None).max_elapsed(Duration::MAX).seeded(seed);
            for (d, t) in b.max_elapsed(Duration::MAX).seeded(seed).zip(top) {
                prop_assert!(d <= t);
            }
        }
    }
}
