//! [`Pacing`]: server-driven pacing on every response.

use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::Hash;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use steadfast_core::{Deadline, Layer, Transport};
use tokio::time::Instant;

use crate::error::{LimitCause, LimitError, RateLimited};
use crate::pacing::Slot;
use crate::{ByHost, HostKey, KeyFn, Pacer, PacingConfig};

/// A [`Transport`] that lets the server set the pace: it reads every
/// response's `Retry-After` and rate-limit headers and holds the next
/// requests to that key (origin by default) accordingly. See
/// [`crate::pacing`] for the rules.
///
/// A client with no configured rate at all still stays within what the
/// server allows. Waits are bounded by the request's [`Deadline`]: a request
/// whose slot comes after it fails at once with [`LimitError::RateLimited`].
/// A request cancelled while waiting gives its slot back when it was the
/// last one handed out. When a pause comes in, the requests already
/// holding slots reserve again after it, and with no pace known one probe
/// goes first (see [`crate::pacing`]).
pub struct Pacing<T, K = HostKey, F = ByHost> {
    inner: T,
    pacer: Arc<Pacer<K>>,
    key_fn: Arc<F>,
}

impl<T: Clone, K, F> Clone for Pacing<T, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            pacer: self.pacer.clone(),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<T: fmt::Debug, K: fmt::Debug, F> fmt::Debug for Pacing<T, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacing")
            .field("inner", &self.inner)
            .field("pacer", &self.pacer)
            .finish_non_exhaustive()
    }
}

impl<T, K, F> Pacing<T, K, F> {
    /// The pacer, for snapshots and [`Pacer::view`].
    pub const fn pacer(&self) -> &Arc<Pacer<K>> {
        &self.pacer
    }

    /// The wrapped transport.
    pub const fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// Gives a reserved slot back if the request is cancelled (or refused at
/// its deadline) before it goes, and the part of its wait not waited.
struct SlotGuard<'a, K: Hash + Eq + Clone> {
    pacer: &'a Pacer<K>,
    key: &'a K,
    slot: Option<Slot>,
}

impl<K: Hash + Eq + Clone> Drop for SlotGuard<'_, K> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let now = self.pacer.nanos_since_epoch(Instant::now());
            self.pacer.unwait(&slot, now);
            self.pacer.release(self.key, &slot);
        }
    }
}

/// How waiting for a slot ended.
enum Held {
    /// The slot came and still stands: go.
    Go,
    /// A pause or a probe's answer came in meanwhile: reserve again.
    Void,
    /// Still held behind a probe at the request's deadline, at this time.
    Deadline(u64),
}

/// Waits for the request's slot; returns it if the request is the probe
/// after a pause (see [`Slot::is_probe`]).
async fn wait_turn<K: Hash + Eq + Clone + Sync>(
    pacer: &Pacer<K>,
    key: &K,
    deadline: Option<Deadline>,
) -> Result<Option<Slot>, RateLimited> {
    let limit = deadline.map(|d| pacer.nanos_since_epoch(d.instant()));
    let refuse = |cause: Option<LimitCause>, wait: u64| {
        RateLimited::new(
            pacer.config().name.clone(),
            cause.unwrap_or(LimitCause::ServerPause),
            Duration::from_nanos(wait),
        )
    };
    let mut first = true;
    loop {
        let now = pacer.nanos_since_epoch(Instant::now());
        let reserved = if first {
            pacer.reserve_at(key, now, limit)
        } else {
            pacer.reserve_again_at(key, now, limit)
        };
        first = false;
        let slot = reserved.map_err(|s| refuse(s.cause(), s.start() - now))?;
        if slot.start() <= now {
            return Ok(slot.is_probe().then_some(slot));
        }
        tracing::debug!(
            policy.name = %pacer.config().name,
            limit.cause = ?slot.cause(),
            limit.wait_ms = Duration::from_nanos(slot.start() - now).as_millis() as u64,
            limit.behind_probe = slot.held(),
            "pacing: holding the request for its slot"
        );
        let mut guard = SlotGuard {
            pacer,
            key,
            slot: Some(slot),
        };
        match hold(pacer, key, &slot, limit).await {
            Held::Go => {
                guard.slot = None;
                return Ok(slot.is_probe().then_some(slot));
            }
            // The guard gives nothing back: a voided slot is no one's.
            Held::Void => guard.slot = None,
            Held::Deadline(now) => {
                return Err(refuse(Some(LimitCause::ServerPause), slot.start() - now));
            }
        }
    }
}

/// Waits for `slot`: until it starts, or until the pacer has news (a
/// pause or a probe's answer that voids booked slots: a slot far off under
/// the old pace must not sleep out its old time); with no lost wake-up,
/// since the news is enabled before the slot is checked.
async fn hold<K: Hash + Eq + Clone + Sync>(
    pacer: &Pacer<K>,
    key: &K,
    slot: &Slot,
    limit: Option<u64>,
) -> Held {
    loop {
        let mut news = pin!(pacer.news());
        news.as_mut().enable();
        let now = pacer.nanos_since_epoch(Instant::now());
        if !pacer.is_current_at(key, slot, now) {
            pacer.unwait(slot, now);
            return Held::Void;
        }
        if now >= slot.start() {
            return Held::Go;
        }
        // Still before the slot, after a wake-up by news that left it
        // standing (another key's, or this key's for other slots), or,
        // behind a probe, by the deadline.
        if limit.is_some_and(|l| now >= l) {
            // The slot's guard gives it back, and its wait.
            return Held::Deadline(now);
        }
        // Behind a probe the slot's start is only a bound: the deadline
        // may come first.
        let until = if slot.held() {
            limit.map_or(slot.start(), |l| l.min(slot.start()))
        } else {
            slot.start()
        };
        let mut sleep = pin!(tokio::time::sleep_until(pacer.instant(until)));
        poll_fn(|cx| {
            if news.as_mut().poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl<B, T, K, F> Transport<B> for Pacing<T, K, F>
where
    T: Transport<B>,
    F: KeyFn<B, Key = K>,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    B: Send + 'static,
{
    type Body = T::Body;
    type Error = LimitError<T::Error>;

    async fn send(&self, req: Request<B>) -> Result<Response<T::Body>, Self::Error> {
        let key = self.key_fn.key(&req);
        let probe = wait_turn(&self.pacer, &key, Deadline::of(&req)).await?;
        // A probe that fails or is cancelled before its answer gives its
        // slot back: the next request probes in its place, rather than
        // the ones held behind it waiting out the probe timeout.
        let mut probe = SlotGuard {
            pacer: &self.pacer,
            key: &key,
            slot: probe,
        };
        let res = self.inner.send(req).await.map_err(LimitError::Inner)?;
        probe.slot = None;
        self.pacer
            .observe(&key, res.status(), res.headers(), SystemTime::now());
        Ok(res)
    }
}

/// Wraps transports in [`Pacing`]. Every transport it wraps shares the same
/// pacer.
///
/// ```
/// use steadfast_core::{transport_fn, Transport, TransportExt};
/// use steadfast_limit::{PacingConfig, PacingLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = PacingLayer::new(PacingConfig::default());
/// let client = transport_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::io::Error>(http::Response::builder().status(429).header("retry-after", "30").body(()).unwrap())
/// })
/// .with(layer.clone());
/// let req = || http::Request::get("https://api.example.com/x").body(()).unwrap();
/// client.send(req()).await?; // 429, Retry-After: 30 -> the origin pauses
/// let key = steadfast_limit::HostKey::of(req().uri());
/// assert!(layer.pacer().view(&key).paused_for.is_some());
/// # Ok(()) }
/// ```
pub struct PacingLayer<K = HostKey, F = ByHost> {
    pacer: Arc<Pacer<K>>,
    key_fn: Arc<F>,
}

impl<K, F> Clone for PacingLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            pacer: self.pacer.clone(),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<K: fmt::Debug, F> fmt::Debug for PacingLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacingLayer")
            .field("pacer", &self.pacer)
            .finish_non_exhaustive()
    }
}

impl PacingLayer<HostKey, ByHost> {
    /// Pacing per origin (scheme, host, port).
    pub fn new(config: PacingConfig) -> Self {
        Self::keyed(config, ByHost)
    }
}

impl<K: Hash + Eq + Clone, F> PacingLayer<K, F> {
    /// Pacing per key, as `key_fn` picks it (an API key, a tenant, ...).
    pub fn keyed(config: PacingConfig, key_fn: F) -> Self {
        Self {
            pacer: Arc::new(Pacer::new(config)),
            key_fn: Arc::new(key_fn),
        }
    }

    /// The pacer, for snapshots and [`Pacer::view`].
    pub const fn pacer(&self) -> &Arc<Pacer<K>> {
        &self.pacer
    }
}

impl<T, K, F> Layer<T> for PacingLayer<K, F> {
    type Transport = Pacing<T, K, F>;

    fn layer(&self, inner: T) -> Pacing<T, K, F> {
        Pacing {
            inner,
            pacer: self.pacer.clone(),
            key_fn: self.key_fn.clone(),
        }
    }
}
