//! [`Breaker`], the [`Transport`] wrapper, and [`BreakerLayer`], its [`Layer`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use steadfast_core::{Classify, Layer, Transport};
use tokio::time::Instant;

use crate::classify::BreakerClassifier;
use crate::config::BreakerConfig;
use crate::error::{BreakerError, BreakerOpen};
use crate::future::{Guard, ResponseFuture, start_for};
use crate::registry::BreakerRegistry;
use crate::state::{CircuitBreaker, Permit};

/// Which breaker a request goes through.
#[derive(Clone, Debug)]
enum Target {
    /// One breaker for every request.
    One(Arc<CircuitBreaker>),
    /// One breaker per key.
    PerKey(Arc<BreakerRegistry>),
}

impl Target {
    fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        match self {
            Self::One(b) => Some(b),
            Self::PerKey(_) => None,
        }
    }

    fn registry(&self) -> Option<&Arc<BreakerRegistry>> {
        match self {
            Self::PerKey(r) => Some(r),
            Self::One(_) => None,
        }
    }
}

/// Wraps transports in a [`Breaker`].
///
/// - [`BreakerLayer::per_origin`]: one breaker per `scheme://host:port`, the
///   right choice for a client that talks to several hosts.
/// - [`BreakerLayer::new`]: one breaker for everything the transport sends.
///
/// Outcomes are classified by [`BreakerClassifier`] (connect errors,
/// timeouts, resets, 408, 429, 5xx count as failures; other 4xx do not:
/// [`steadfast_core::DefaultClassifier`]'s verdicts); replace it with
/// [`classify`](Self::classify).
pub struct BreakerLayer<C = BreakerClassifier> {
    target: Target,
    classify: Arc<C>,
}

impl BreakerLayer {
    /// One breaker for every request.
    pub fn new(config: BreakerConfig) -> Self {
        Self::from_breaker(Arc::new(CircuitBreaker::new(config)))
    }

    /// One breaker per origin, in a registry with default bounds.
    pub fn per_origin(config: BreakerConfig) -> Self {
        Self::from_registry(Arc::new(BreakerRegistry::new(config)))
    }

    /// Uses `breaker`, which may be shared with other layers or inspected.
    pub fn from_breaker(breaker: Arc<CircuitBreaker>) -> Self {
        Self {
            target: Target::One(breaker),
            classify: Arc::new(BreakerClassifier),
        }
    }

    /// Uses `registry`: one breaker per key.
    pub fn from_registry(registry: Arc<BreakerRegistry>) -> Self {
        Self {
            target: Target::PerKey(registry),
            classify: Arc::new(BreakerClassifier),
        }
    }
}

impl<C> BreakerLayer<C> {
    /// Decides which results count as failures with `classify`
    /// ([`steadfast_core::Outcome::is_failure`]: `Retryable` and `Failure` count).
    pub fn classify<C2>(self, classify: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            target: self.target,
            classify: Arc::new(classify),
        }
    }

    /// The breaker, for a single-breaker layer.
    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.target.breaker()
    }

    /// The registry, for a per-key layer.
    pub fn registry(&self) -> Option<&Arc<BreakerRegistry>> {
        self.target.registry()
    }
}

impl<C> Clone for BreakerLayer<C> {
    fn clone(&self) -> Self {
        Self {
            target: self.target.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<C> fmt::Debug for BreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl<T, C> Layer<T> for BreakerLayer<C> {
    type Transport = Breaker<T, C>;

    fn layer(&self, inner: T) -> Breaker<T, C> {
        Breaker {
            inner,
            target: self.target.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// A transport behind a circuit breaker.
///
/// Each `send` asks the breaker first, when it is called (not when its
/// future is first polled): when it refuses, the future fails at once with
/// [`BreakerError::Open`] and nothing reaches the inner transport.
/// Otherwise the request goes out and its result, classified, is recorded
/// when the response head arrives. Dropping the future before that (a
/// timeout, a cancelled task, or never polling it) records nothing and
/// frees a half-open probe slot.
///
/// So a request timeout belongs *inside* the breaker: a layer below it,
/// closer to the transport, whose expiry is an error the breaker sees and
/// counts as a failure. A timeout wrapped around the breaker drops its
/// future instead, and a service that hangs on every request never trips
/// it.
pub struct Breaker<T, C = BreakerClassifier> {
    inner: T,
    target: Target,
    classify: Arc<C>,
}

impl<T, C> Breaker<T, C> {
    /// The wrapped transport.
    pub const fn inner(&self) -> &T {
        &self.inner
    }

    /// Unwraps the transport.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The breaker, for a single-breaker layer.
    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.target.breaker()
    }

    /// The registry, for a per-key layer.
    pub fn registry(&self) -> Option<&Arc<BreakerRegistry>> {
        self.target.registry()
    }
}

impl<T: Clone, C> Clone for Breaker<T, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            target: self.target.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<T: fmt::Debug, C> fmt::Debug for Breaker<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl<B, T, C> Transport<B> for Breaker<T, C>
where
    T: Transport<B>,
    C: Classify<T::Body, T::Error>,
    B: Send + 'static,
{
    type Body = T::Body;
    type Error = BreakerError<T::Error>;

    // Measured (callgrind, ready transport): inlined, the future is built
    // where the caller keeps it; out of line, ~15 instructions more per call.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn send(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<T::Body>, Self::Error>> + Send {
        // Admission is synchronous; only an admitted request is handed to the
        // inner transport. The clock is read only when the breaker is not
        // closed, measures latency, or the registry meets a new key.
        let admitted = match &self.target {
            Target::One(breaker) => match breaker.admit_closed() {
                // The path of a healthy service, straight through.
                Some(admitted) if !breaker.measures_latency() => {
                    return ResponseFuture::Call {
                        fut: self.inner.send(req),
                        guard: Guard::Closed { breaker, admitted },
                        classify: &*self.classify,
                    };
                }
                Some(admitted) => Ok(Some(breaker.permit(admitted))),
                None => acquire_not_closed(breaker).map(Some),
            },
            Target::PerKey(registry) => acquire_per_key(registry, &req),
        };
        match admitted {
            Ok(permit) => ResponseFuture::Call {
                guard: Guard::Permit {
                    start: start_for(permit.as_ref()),
                    permit,
                },
                fut: self.inner.send(req),
                classify: &*self.classify,
            },
            Err(open) => ResponseFuture::Rejected { open: Some(open) },
        }
    }
}

/// Admission when the breaker is not closed, out of line.
#[cold]
#[inline(never)]
fn acquire_not_closed(breaker: &CircuitBreaker) -> Result<Permit<'_>, BreakerOpen> {
    breaker.try_acquire_with(Instant::now)
}

/// The registry's share of `send`, kept out of line so that the
/// single-breaker path stays small enough to inline.
#[inline(never)]
fn acquire_per_key<B>(
    registry: &BreakerRegistry,
    req: &Request<B>,
) -> Result<Option<Permit<'static>>, BreakerOpen> {
    match registry.breaker_for(req, Instant::now) {
        Some(breaker) => breaker.try_acquire_owned_with(Instant::now).map(Some),
        None => Ok(None),
    }
}
