//! [`Adaptive`]: a concurrency limit that finds the server's capacity.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::{Request, Response};
use steadfast_core::{Classify, Deadline, ErrorClass, Layer, Outcome, Transport};
use tokio::time::Instant;

use crate::adaptive::{LimitAlgorithm, Sample, Signal};
use crate::error::LimitError;
use crate::state::Epoch;
use crate::{Bulkhead, BulkheadSnapshot, ConcurrencyConfig, PermitBody, ReleaseOn, names};

/// The default classification for adaptive concurrency: 429 and 503 and
/// timeouts mean overload; other 5xx and other errors say nothing about
/// capacity; everything else is a normal answer whose latency counts.
///
/// | Result | Outcome | Signal |
/// |---|---|---|
/// | 429, 503 | `Retryable` | overload |
/// | timeout ([`ErrorClass::Timeout`]) | `Retryable` | overload |
/// | other 5xx, other errors | `Failure` | ignored |
/// | anything else | `Success` | latency sample |
///
/// Any [`Classify`] can replace it: `Retryable` means overload, `Success`
/// and `Rejected` are latency samples, `Failure` is ignored.
#[derive(Clone, Copy, Debug, Default)]
pub struct OverloadClassifier;

impl<RB, E: StdError + 'static> Classify<RB, E> for OverloadClassifier {
    fn classify(&self, result: &Result<Response<RB>, E>) -> Outcome {
        match result {
            Ok(res) => match res.status().as_u16() {
                429 | 503 => Outcome::RETRY,
                500..=599 => Outcome::Failure,
                _ => Outcome::Success,
            },
            Err(e) if matches!(ErrorClass::of(e), ErrorClass::Timeout(_)) => Outcome::RETRY,
            Err(_) => Outcome::Failure,
        }
    }
}

struct Shared<A, C> {
    bulkhead: Bulkhead,
    algorithm: Mutex<A>,
    classify: C,
    epoch: Epoch,
    samples: AtomicU64,
    overloads: AtomicU64,
}

/// A [`Transport`] whose concurrency limit follows a [`LimitAlgorithm`]
/// ([`crate::Aimd`], [`crate::Gradient`]): every response is classified
/// into a [`Signal`] and fed to the algorithm, and a [`Bulkhead`] is
/// resized to the limit it returns. Requests over the limit queue and are
/// rejected like the bulkhead's ([`LimitError::Rejected`]).
///
/// Place it where [`crate::ConcurrencyLimit`] would go (above retry), or
/// below retry to let each attempt count.
pub struct Adaptive<T, A, C = OverloadClassifier> {
    inner: T,
    shared: Arc<Shared<A, C>>,
}

impl<T: Clone, A, C> Clone for Adaptive<T, A, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T: fmt::Debug, A, C> fmt::Debug for Adaptive<T, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adaptive")
            .field("inner", &self.inner)
            .field("bulkhead", &self.shared.bulkhead)
            .finish_non_exhaustive()
    }
}

/// A point-in-time view of an adaptive limit.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdaptiveSnapshot {
    /// The limit the algorithm set last.
    pub limit: usize,
    /// Responses fed to the algorithm.
    pub samples: u64,
    /// Of which overload signals.
    pub overloads: u64,
    /// The bulkhead underneath.
    pub bulkhead: BulkheadSnapshot,
}

fn snapshot<A, C>(shared: &Shared<A, C>) -> AdaptiveSnapshot {
    AdaptiveSnapshot {
        limit: shared.bulkhead.limit(),
        samples: shared.samples.load(Ordering::Relaxed),
        overloads: shared.overloads.load(Ordering::Relaxed),
        bulkhead: shared.bulkhead.snapshot(),
    }
}

impl<T, A, C> Adaptive<T, A, C> {
    /// Counters and the current limit.
    pub fn snapshot(&self) -> AdaptiveSnapshot {
        snapshot(&self.shared)
    }

    /// The wrapped transport.
    pub const fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<B, T, A, C> Transport<B> for Adaptive<T, A, C>
where
    T: Transport<B>,
    A: LimitAlgorithm,
    C: Classify<T::Body, T::Error>,
    B: Send + 'static,
{
    type Body = PermitBody<T::Body>;
    type Error = LimitError<T::Error>;

    async fn send(&self, req: Request<B>) -> Result<Response<Self::Body>, Self::Error> {
        let s = &*self.shared;
        let permit = s.bulkhead.acquire_before(Deadline::of(&req)).await?;
        let in_flight = s.bulkhead.in_flight();
        let start = Instant::now();
        let result = self.inner.send(req).await;
        let end = Instant::now();
        let signal = match s.classify.classify(&result) {
            Outcome::Success | Outcome::Rejected => Signal::Success { rtt: end - start },
            Outcome::Retryable { .. } => Signal::Overload,
            _ => Signal::Ignore,
        };
        let sample = Sample {
            sent_at: s.epoch.nanos(start),
            now: s.epoch.nanos(end),
            in_flight,
            signal,
        };
        let (old, new) = {
            let mut algorithm = s.algorithm.lock().unwrap_or_else(PoisonError::into_inner);
            let old = algorithm.limit();
            let new = algorithm.on_sample(sample);
            // Resized under the same lock: two responses' limits reach the
            // bulkhead in the order the algorithm decided them.
            if new != old {
                s.bulkhead.set_limit(new);
            }
            (old, new)
        };
        #[cfg(test)]
        if let Some(hook) = tests::AFTER_DECISION.take() {
            hook();
        }
        s.samples.fetch_add(1, Ordering::Relaxed);
        if signal == Signal::Overload {
            s.overloads.fetch_add(1, Ordering::Relaxed);
        }
        if new != old {
            tracing::debug!(
                policy.name = %s.bulkhead.name(),
                limit.old = old,
                limit.new = new,
                limit.in_flight = in_flight,
                "adaptive concurrency: limit changed"
            );
        }
        let res = result.map_err(LimitError::Inner)?;
        let permit = match s.bulkhead.config().release_on() {
            ReleaseOn::ResponseHead => None,
            _ => Some(permit),
        };
        Ok(res.map(|body| PermitBody::new(body, permit)))
    }
}

/// Wraps transports in [`Adaptive`]; every transport it wraps shares the
/// same limit.
///
/// ```
/// use steadfast_core::{transport_fn, Transport, TransportExt};
/// use steadfast_limit::{AdaptiveLayer, Aimd, AimdConfig};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = AdaptiveLayer::new(Aimd::new(AimdConfig::default())?);
/// let client = transport_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::io::Error>(http::Response::builder().status(503).body(()).unwrap())
/// })
/// .with(layer.clone());
/// drop(client.send(http::Request::new(())).await?);
/// assert_eq!(layer.snapshot().limit, 18); // 20 × 0.9
/// # Ok(()) }
/// ```
pub struct AdaptiveLayer<A, C = OverloadClassifier> {
    shared: Arc<Shared<A, C>>,
}

impl<A, C> Clone for AdaptiveLayer<A, C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<A, C> fmt::Debug for AdaptiveLayer<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLayer")
            .field("bulkhead", &self.shared.bulkhead)
            .finish_non_exhaustive()
    }
}

impl<A: LimitAlgorithm> AdaptiveLayer<A, OverloadClassifier> {
    /// An adaptive limit driven by `algorithm`, with the default queue
    /// settings of [`ConcurrencyConfig`] and [`OverloadClassifier`].
    pub fn new(algorithm: A) -> Self {
        let config = ConcurrencyConfig::builder()
            .name(names::ADAPTIVE)
            .build()
            .expect("the default concurrency settings are valid");
        Self::with_config(algorithm, config, OverloadClassifier)
    }
}

impl<A: LimitAlgorithm, C> AdaptiveLayer<A, C> {
    /// An adaptive limit with explicit queue settings and classifier.
    /// `config.max_in_flight` is replaced by the algorithm's limit, clamped
    /// to `1 ..=` [`MAX_IN_FLIGHT_LIMIT`](crate::config::MAX_IN_FLIGHT_LIMIT) as
    /// every later limit is.
    pub fn with_config(algorithm: A, config: ConcurrencyConfig, classify: C) -> Self {
        let mut config = config;
        config.max_in_flight = algorithm
            .limit()
            .clamp(1, crate::config::MAX_IN_FLIGHT_LIMIT);
        Self {
            shared: Arc::new(Shared {
                bulkhead: Bulkhead::new(config),
                algorithm: Mutex::new(algorithm),
                classify,
                epoch: Epoch::now(),
                samples: AtomicU64::new(0),
                overloads: AtomicU64::new(0),
            }),
        }
    }

    /// Counters and the current limit.
    pub fn snapshot(&self) -> AdaptiveSnapshot {
        snapshot(&self.shared)
    }
}

impl<T, A, C> Layer<T> for AdaptiveLayer<A, C> {
    type Transport = Adaptive<T, A, C>;

    fn layer(&self, inner: T) -> Adaptive<T, A, C> {
        Adaptive {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use http::{Request, Response};
    use steadfast_core::{TransportExt, transport_fn};

    use super::*;
    use crate::ConcurrencyConfig;

    type Hook = Box<dyn FnOnce() + 'static>;

    thread_local! {
        /// Runs once on this thread right after the algorithm has decided
        /// (and the lock around it is released), to line up a race.
        pub(super) static AFTER_DECISION: RefCell<Option<Hook>> =
            const { RefCell::new(None) };
    }

    /// Says 5, then the limits of its script, one per sample.
    struct Script(Vec<usize>, usize);

    impl LimitAlgorithm for Script {
        fn limit(&self) -> usize {
            self.1
        }
        fn on_sample(&mut self, _: Sample) -> usize {
            self.1 = self.0.remove(0);
            self.1
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn the_bulkhead_takes_the_limits_in_the_order_they_were_decided() {
        let config = ConcurrencyConfig::builder().build().unwrap();
        let layer = AdaptiveLayer::with_config(Script(vec![10, 20], 5), config, OverloadClassifier);
        let client =
            transport_fn(|_req: Request<()>| async { Ok::<_, std::io::Error>(Response::new(())) })
                .with(layer.clone());
        // Request A gets the first decision (10); before A's thread does
        // anything else, request B runs start to finish on another (20).
        let b = client.clone();
        AFTER_DECISION.set(Some(Box::new(move || {
            std::thread::spawn(move || runtime().block_on(b.send(Request::new(()))).map(drop))
                .join()
                .unwrap()
                .unwrap();
        })));
        drop(runtime().block_on(client.send(Request::new(()))).unwrap());
        assert_eq!(
            layer.snapshot().limit,
            20,
            "an older decision overwrote a newer one"
        );
    }
}
