//! [`RateLimit`]: one token per attempt, from a direct or a keyed limiter.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use steadfast_core::{Deadline, Layer, Transport};

use crate::error::{LimitCause, LimitError, RateLimited};
use crate::{KeyFn, KeyedRateLimiter, Quota, RateLimiter};

/// What a [`RateLimit`] takes its tokens from: a [`RateLimiter`] (one quota
/// for everything) or [`Keyed`] (a quota per key).
///
/// The key is read from the request before waiting, so the wait does not
/// borrow the request.
pub trait TokenSource<B>: Send + Sync + 'static {
    /// What the source needs from the request.
    type Key: Send + 'static;

    /// Reads the key of `req`.
    fn key(&self, req: &Request<B>) -> Self::Key;

    /// Waits for a token for `key`, failing at once when it would come at
    /// or after `deadline`. Resolves to the time waited.
    fn acquire(
        &self,
        key: Self::Key,
        deadline: Option<Deadline>,
    ) -> impl Future<Output = Result<Duration, RateLimited>> + Send;
}

impl<B> TokenSource<B> for RateLimiter {
    type Key = ();

    fn key(&self, _req: &Request<B>) {}

    async fn acquire(&self, (): (), deadline: Option<Deadline>) -> Result<Duration, RateLimited> {
        self.wait(deadline)
            .await
            .map_err(|nu| RateLimited::new(Arc::from(self.name()), LimitCause::Quota, nu.wait()))
    }
}

/// A [`KeyedRateLimiter`] with the [`KeyFn`] that picks each request's key.
pub struct Keyed<K, F, S = std::collections::hash_map::RandomState> {
    limiter: KeyedRateLimiter<K, S>,
    key_fn: F,
}

impl<K, F, S> Keyed<K, F, S> {
    /// Pairs `limiter` with `key_fn`.
    pub const fn new(limiter: KeyedRateLimiter<K, S>, key_fn: F) -> Self {
        Self { limiter, key_fn }
    }

    /// The limiter, for snapshots.
    pub const fn limiter(&self) -> &KeyedRateLimiter<K, S> {
        &self.limiter
    }
}

impl<K: fmt::Debug, F, S: fmt::Debug> fmt::Debug for Keyed<K, F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<B, K, F, S> TokenSource<B> for Keyed<K, F, S>
where
    F: KeyFn<B, Key = K>,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    type Key = K;

    fn key(&self, req: &Request<B>) -> K {
        self.key_fn.key(req)
    }

    async fn acquire(&self, key: K, deadline: Option<Deadline>) -> Result<Duration, RateLimited> {
        self.limiter.wait(&key, deadline).await.map_err(|nu| {
            RateLimited::new(Arc::from(self.limiter.name()), LimitCause::Quota, nu.wait())
        })
    }
}

/// A [`Transport`] that takes one token per request before sending it.
///
/// Below retry in the standard pipeline, so each attempt takes a token. The
/// wait is bounded by the request's [`Deadline`]: if the token would come
/// after it, the request fails at once with [`LimitError::RateLimited`].
/// Build it with [`RateLimitLayer`].
pub struct RateLimit<T, L = RateLimiter> {
    inner: T,
    limiter: Arc<L>,
}

impl<T: Clone, L> Clone for RateLimit<T, L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
        }
    }
}

impl<T: fmt::Debug, L: fmt::Debug> fmt::Debug for RateLimit<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<T, L> RateLimit<T, L> {
    /// The limiter, for snapshots.
    pub const fn limiter(&self) -> &Arc<L> {
        &self.limiter
    }

    /// The wrapped transport.
    pub const fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<B, T, L> Transport<B> for RateLimit<T, L>
where
    T: Transport<B>,
    L: TokenSource<B>,
    B: Send + 'static,
{
    type Body = T::Body;
    type Error = LimitError<T::Error>;

    async fn send(&self, req: Request<B>) -> Result<Response<T::Body>, Self::Error> {
        let deadline = Deadline::of(&req);
        let key = self.limiter.key(&req);
        self.limiter.acquire(key, deadline).await?;
        self.inner.send(req).await.map_err(LimitError::Inner)
    }
}

/// Wraps transports in a [`RateLimit`]. Every transport it wraps shares the
/// same limiter.
///
/// ```
/// use std::num::NonZeroU32;
/// use steadfast_core::{transport_fn, Transport, TransportExt};
/// use steadfast_limit::{Quota, RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(50).unwrap()));
/// let client = transport_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::io::Error>(http::Response::new(()))
/// })
/// .with(layer.clone());
/// client.send(http::Request::new(())).await.unwrap();
/// assert_eq!(layer.limiter().snapshot().available, 49); // one of the burst taken
/// # }
/// ```
pub struct RateLimitLayer<L = RateLimiter> {
    limiter: Arc<L>,
}

impl<L> Clone for RateLimitLayer<L> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
        }
    }
}

impl<L: fmt::Debug> fmt::Debug for RateLimitLayer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl RateLimitLayer<RateLimiter> {
    /// One limiter with `quota` for every request.
    pub fn new(quota: Quota) -> Self {
        Self::shared(Arc::new(RateLimiter::new(quota)))
    }
}

impl<K, F, S> RateLimitLayer<Keyed<K, F, S>> {
    /// A quota per key: `key_fn` picks each request's key in `limiter`.
    pub fn keyed(limiter: KeyedRateLimiter<K, S>, key_fn: F) -> Self {
        Self::shared(Arc::new(Keyed::new(limiter, key_fn)))
    }
}

impl<L> RateLimitLayer<L> {
    /// Uses a limiter shared with other layers or code.
    pub const fn shared(limiter: Arc<L>) -> Self {
        Self { limiter }
    }

    /// The limiter, for snapshots.
    pub const fn limiter(&self) -> &Arc<L> {
        &self.limiter
    }
}

impl<T, L> Layer<T> for RateLimitLayer<L> {
    type Transport = RateLimit<T, L>;

    fn layer(&self, inner: T) -> RateLimit<T, L> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}
