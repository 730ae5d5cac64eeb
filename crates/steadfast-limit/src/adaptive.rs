//! Adaptive concurrency: pure algorithms that find how much concurrency a
//! server takes, from what its responses say.
//!
//! - [`Aimd`]: additive increase, multiplicative decrease, as TCP does with
//!   its window. Each window of `limit` successes adds `increase`; an
//!   overload signal (429, 503, a timeout) multiplies by `backoff`, at most
//!   once per window: responses to requests sent before the last decrease
//!   do not count again.
//! - [`Gradient`]: the idea of Netflix concurrency-limits' gradient limits.
//!   The limit follows `limit × tolerance × min_rtt / rtt` (the gradient,
//!   clamped to `[0.5, 1]`) plus a little headroom, smoothed. `min_rtt` is
//!   the unloaded latency: the lowest RTT of the last one to two windows of
//!   `min_rtt_window` samples, so that a lucky minimum is forgotten and a
//!   server that became slower for good is re-learned within two windows,
//!   however far off the old minimum was. A single sample below half the
//!   minimum (a response from a cache, a clock hiccup) is taken for a fluke
//!   until the next sample agrees: one 0 ns sample would otherwise hold the
//!   limit at its floor for two windows. Gradient2's exponential average
//!   was tried first and rejected: under sustained queueing it converges to
//!   the queued latency and the limit creeps back up. Overload signals
//!   decrease as in AIMD.
//!
//! Both grow only while the limit is actually used (in flight ≥ limit / 2):
//! a client that sends little proves nothing about the server.
//!
//! The [`crate::Adaptive`] layer feeds them and resizes a [`crate::Bulkhead`].

use std::time::Duration;

use crate::config::{AimdConfig, ConfigError, GradientConfig};

/// What one response says about the server's capacity.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The server answered normally, in `rtt`.
    Success {
        /// Time from sending to the response head.
        rtt: Duration,
    },
    /// The server is overloaded (429, 503, a timeout).
    Overload,
    /// Says nothing about capacity (a 500, a connect error, ...).
    Ignore,
}

/// One observation fed to a [`LimitAlgorithm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When the request was sent (nanoseconds on the algorithm's clock).
    pub sent_at: u64,
    /// When its result arrived.
    pub now: u64,
    /// Requests in flight when it was sent, itself included.
    pub in_flight: usize,
    /// What it says.
    pub signal: Signal,
}

/// A pure adaptive-concurrency algorithm: samples in, a limit out.
pub trait LimitAlgorithm: Send + 'static {
    /// The current limit.
    fn limit(&self) -> usize;

    /// Learns from one sample; returns the new limit.
    fn on_sample(&mut self, sample: Sample) -> usize;
}

/// Additive-increase, multiplicative-decrease concurrency limit.
///
/// ```
/// use std::time::Duration;
/// use steadfast_limit::{Aimd, AimdConfig, LimitAlgorithm, Sample, Signal};
///
/// let mut aimd = Aimd::new(AimdConfig::default().limits(10, 1, 100))?;
/// let ok = |at| Sample { sent_at: at, now: at + 1, in_flight: 10, signal: Signal::Success { rtt: Duration::from_millis(1) } };
/// for i in 0..10 { aimd.on_sample(ok(i)); }
/// assert_eq!(aimd.limit(), 11);             // one window of successes: +1
/// let overload = Sample { signal: Signal::Overload, ..ok(20) };
/// assert_eq!(aimd.on_sample(overload), 9);  // × 0.9, rounded down
/// // Another 429 from a request sent before that decrease: same window, ignored.
/// assert_eq!(aimd.on_sample(Sample { sent_at: 15, ..overload }), 9);
/// # Ok::<(), steadfast_limit::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Aimd {
    config: AimdConfig,
    limit: f64,
    successes: usize,
    last_decrease: Option<u64>,
}

impl Aimd {
    /// AIMD with `config` (validated).
    pub fn new(config: AimdConfig) -> Result<Self, ConfigError> {
        let config = config.validate()?;
        Ok(Self {
            config,
            limit: config.initial as f64,
            successes: 0,
            last_decrease: None,
        })
    }
}

/// Multiplicative decrease, at most once per window: a sample sent before
/// the last decrease saw the old limit and is not news.
fn decrease(
    limit: &mut f64,
    last: &mut Option<u64>,
    sample: &Sample,
    backoff: f64,
    min: usize,
) -> bool {
    if last.is_some_and(|at| sample.sent_at < at) {
        return false;
    }
    *limit = (*limit * backoff).max(min as f64);
    *last = Some(sample.now);
    true
}

impl LimitAlgorithm for Aimd {
    fn limit(&self) -> usize {
        self.limit as usize
    }

    fn on_sample(&mut self, sample: Sample) -> usize {
        let c = &self.config;
        match sample.signal {
            Signal::Overload => {
                if decrease(
                    &mut self.limit,
                    &mut self.last_decrease,
                    &sample,
                    c.backoff,
                    c.min,
                ) {
                    self.successes = 0;
                }
            }
            Signal::Success { .. } if sample.in_flight * 2 >= self.limit() => {
                self.successes += 1;
                if self.successes >= self.limit() {
                    self.successes = 0;
                    self.limit = (self.limit + c.increase).min(c.max as f64);
                }
            }
            Signal::Success { .. } | Signal::Ignore => {}
        }
        self.limit()
    }
}

/// Latency-gradient concurrency limit (after Netflix's Gradient2).
///
/// ```
/// use std::time::Duration;
/// use steadfast_limit::{Gradient, GradientConfig, LimitAlgorithm, Sample, Signal};
///
/// let mut g = Gradient::new(GradientConfig::default().limits(20, 1, 200))?;
/// let sample = |rtt_ms, i| Sample {
///     sent_at: i, now: i + 1, in_flight: 1_000, signal: Signal::Success { rtt: Duration::from_millis(rtt_ms) },
/// };
/// for i in 0..50 { g.on_sample(sample(10, i)); }
/// let steady = g.limit();
/// assert!(steady > 20);                      // latency flat: grows
/// for i in 50..60 { g.on_sample(sample(40, i)); }
/// assert!(g.limit() < steady);               // latency ×4: shrinks
/// # Ok::<(), steadfast_limit::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Gradient {
    config: GradientConfig,
    limit: f64,
    /// The unloaded RTT in nanoseconds: the least of these two windows'
    /// minimums (infinite while a window has no sample).
    window_min: f64,
    previous_window_min: f64,
    window_samples: u32,
    /// The last sample was below half the minimum and is waiting for a
    /// second one to confirm it.
    low_pending: bool,
    last_decrease: Option<u64>,
}

/// A sample below this fraction of the minimum RTT needs a second one to
/// move the minimum.
const FLUKE_BELOW: f64 = 0.5;

impl Gradient {
    /// A gradient limit with `config` (validated).
    pub fn new(config: GradientConfig) -> Result<Self, ConfigError> {
        let config = config.validate()?;
        Ok(Self {
            config,
            limit: config.initial as f64,
            window_min: f64::INFINITY,
            previous_window_min: f64::INFINITY,
            window_samples: 0,
            low_pending: false,
            last_decrease: None,
        })
    }

    /// The unloaded-RTT estimate, once there is one.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt_nanos().map(|n| Duration::from_nanos(n as u64))
    }

    fn min_rtt_nanos(&self) -> Option<f64> {
        let m = self.window_min.min(self.previous_window_min);
        m.is_finite().then_some(m)
    }

    /// Counts `rtt` into the windowed minimum, unless it looks like a fluke.
    fn learn_rtt(&mut self, rtt: f64) {
        let low = self.min_rtt_nanos().is_some_and(|m| rtt < m * FLUKE_BELOW);
        if low && !self.low_pending {
            self.low_pending = true;
        } else {
            self.low_pending = false;
            self.window_min = self.window_min.min(rtt);
        }
        self.window_samples += 1;
        if self.window_samples >= self.config.min_rtt_window {
            self.previous_window_min = self.window_min;
            self.window_min = f64::INFINITY;
            self.window_samples = 0;
        }
    }
}

impl LimitAlgorithm for Gradient {
    fn limit(&self) -> usize {
        self.limit as usize
    }

    fn on_sample(&mut self, sample: Sample) -> usize {
        let c = self.config;
        let rtt = match sample.signal {
            Signal::Overload => {
                decrease(
                    &mut self.limit,
                    &mut self.last_decrease,
                    &sample,
                    c.backoff,
                    c.min,
                );
                return self.limit();
            }
            Signal::Ignore => return self.limit(),
            Signal::Success { rtt } => (rtt.as_nanos() as f64).max(1.0),
        };
        self.learn_rtt(rtt);
        // The first sample is always learned, so the minimum is known here.
        let min_rtt = self.min_rtt_nanos().unwrap_or(rtt);
        if (sample.in_flight as f64) < self.limit / 2.0 {
            return self.limit();
        }
        let gradient = (c.tolerance * min_rtt / rtt).clamp(0.5, 1.0);
        let estimate = self.limit * gradient + c.queue;
        let next = self.limit * (1.0 - c.smoothing) + estimate * c.smoothing;
        self.limit = next.clamp(c.min as f64, c.max as f64);
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn success(i: u64, in_flight: usize, rtt_ms: u64) -> Sample {
        Sample {
            sent_at: i,
            now: i + 1,
            in_flight,
            signal: Signal::Success {
                rtt: Duration::from_millis(rtt_ms),
            },
        }
    }

    /// A server that takes `capacity` at once and answers 429 beyond.
    fn run(algo: &mut dyn LimitAlgorithm, capacity: usize, rounds: u64) -> Vec<usize> {
        let mut t = 0;
        let mut limits = Vec::new();
        for _ in 0..rounds {
            let in_flight = algo.limit();
            let sent = t;
            t += 10;
            for k in 0..in_flight {
                let signal = if k >= capacity {
                    Signal::Overload
                } else {
                    Signal::Success {
                        rtt: Duration::from_millis(10),
                    }
                };
                algo.on_sample(Sample {
                    sent_at: sent,
                    now: t,
                    in_flight,
                    signal,
                });
            }
            limits.push(algo.limit());
        }
        limits
    }

    #[test]
    fn aimd_finds_the_capacity_and_stays_near_it() {
        let mut aimd = Aimd::new(AimdConfig::default().limits(5, 1, 500)).unwrap();
        let limits = run(&mut aimd, 40, 400);
        let tail = &limits[200..];
        assert!(tail.iter().all(|&l| (35..=41).contains(&l)), "{tail:?}");
        assert!(tail.contains(&40) || tail.contains(&41));
    }

    #[test]
    fn aimd_decreases_once_per_window() {
        let mut aimd = Aimd::new(AimdConfig::default().limits(100, 1, 500)).unwrap();
        // 100 429s from one burst: one decrease, not 0.9^100.
        for _ in 0..100 {
            aimd.on_sample(Sample {
                signal: Signal::Overload,
                ..success(0, 100, 1)
            });
        }
        assert_eq!(aimd.limit(), 90);
    }

    #[test]
    fn idle_clients_do_not_grow() {
        let mut aimd = Aimd::new(AimdConfig::default().limits(10, 1, 500)).unwrap();
        let mut g = Gradient::new(GradientConfig::default().limits(10, 1, 500)).unwrap();
        for i in 0..1000 {
            aimd.on_sample(success(i, 2, 10));
            g.on_sample(success(i, 2, 10));
        }
        assert_eq!((aimd.limit(), g.limit()), (10, 10));
    }

    #[test]
    fn gradient_backs_off_when_latency_climbs_and_recovers() {
        let mut g = Gradient::new(GradientConfig::default().limits(50, 1, 500)).unwrap();
        for i in 0..200 {
            g.on_sample(success(i, g.limit(), 10));
        }
        let grown = g.limit();
        assert!(grown > 50, "{grown}");
        for i in 200..260 {
            g.on_sample(success(i, g.limit(), 50));
        }
        let shrunk = g.limit();
        assert!(shrunk < grown / 2, "{shrunk} vs {grown}");
        for i in 260..600 {
            g.on_sample(success(i, g.limit(), 10));
        }
        assert!(g.limit() > shrunk);
    }

    fn rtt(i: u64, in_flight: usize, rtt: Duration) -> Sample {
        Sample {
            signal: Signal::Success { rtt },
            ..success(i, in_flight, 0)
        }
    }

    /// A gradient grown to its ceiling on a steady 10 ms, and the sample count.
    fn steady_gradient() -> (Gradient, u64) {
        let mut g = Gradient::new(GradientConfig::default().limits(100, 1, 200)).unwrap();
        for i in 0..2_000 {
            g.on_sample(success(i, g.limit(), 10));
        }
        assert_eq!(g.limit(), 200);
        (g, 2_000)
    }

    #[test]
    fn one_freak_rtt_sample_does_not_collapse_the_gradient() {
        let (mut g, mut i) = steady_gradient();
        g.on_sample(rtt(i, g.limit(), Duration::ZERO));
        let mut lowest = g.limit();
        for _ in 0..1_000 {
            i += 1;
            lowest = lowest.min(g.on_sample(success(i, g.limit(), 10)));
        }
        assert_eq!(lowest, 200, "one 0 ns sample cut the limit to {lowest}");
        assert_eq!(g.min_rtt(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn a_false_minimum_is_forgotten_within_two_windows() {
        let (mut g, mut i) = steady_gradient();
        let window = u64::from(GradientConfig::default().min_rtt_window);
        // Several near-zero samples in a row are believed at first...
        for _ in 0..3 {
            i += 1;
            g.on_sample(rtt(i, g.limit(), Duration::from_nanos(1)));
        }
        for _ in 0..50 {
            i += 1;
            g.on_sample(success(i, g.limit(), 10));
        }
        assert!(g.limit() < 100, "{}", g.limit());
        // ...and forgotten after at most two windows, not log2(10 ms / 1 ns).
        let mut n = 0;
        while g.limit() < 200 {
            i += 1;
            n += 1;
            g.on_sample(success(i, g.limit(), 10));
            assert!(n <= 2 * window + 500, "still at {} after {n}", g.limit());
        }
    }

    #[test]
    fn a_server_that_became_faster_is_learned_at_once() {
        let (mut g, mut i) = steady_gradient();
        for _ in 0..2 {
            i += 1;
            g.on_sample(success(i, g.limit(), 2));
        }
        assert_eq!(g.min_rtt(), Some(Duration::from_millis(2)));
    }

    fn signal() -> impl Strategy<Value = Signal> {
        prop_oneof![
            (0u64..10_000).prop_map(|ms| Signal::Success {
                rtt: Duration::from_millis(ms)
            }),
            // Zero and sub-microsecond RTTs: no division by zero, no limit
            // blown past its bounds.
            (0u64..1_000).prop_map(|ns| Signal::Success {
                rtt: Duration::from_nanos(ns)
            }),
            Just(Signal::Overload),
            Just(Signal::Ignore),
        ]
    }

    proptest! {
        #[test]
        fn limits_stay_in_bounds_and_move_the_right_way(
            min in 1usize..20,
            span in 0usize..200,
            samples in prop::collection::vec((signal(), 0usize..400, 0u64..3), 1..300),
        ) {
            let max = min + span;
            let initial = min + span / 2;
            let mut aimd = Aimd::new(AimdConfig::default().limits(initial, min, max)).unwrap();
            let mut g = Gradient::new(GradientConfig::default().limits(initial, min, max)).unwrap();
            let mut t = 0;
            for (signal, in_flight, dt) in samples {
                t += dt;
                let s = Sample { sent_at: t.saturating_sub(dt), now: t, in_flight, signal };
                let before = aimd.limit();
                let after = aimd.on_sample(s);
                prop_assert!((min..=max).contains(&after));
                match signal {
                    Signal::Overload => prop_assert!(after <= before),
                    Signal::Success { .. } => prop_assert!(after >= before),
                    Signal::Ignore => prop_assert_eq!(after, before),
                }
                let before = g.limit();
                let after = g.on_sample(s);
                prop_assert!((min..=max).contains(&after));
                if matches!(signal, Signal::Overload) {
                    prop_assert!(after <= before);
                }
                if matches!(signal, Signal::Ignore) {
                    prop_assert_eq!(after, before);
                }
            }
        }
    }
}
