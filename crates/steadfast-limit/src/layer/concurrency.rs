//! [`ConcurrencyLimit`]: one permit per logical request (a bulkhead).

use http::{Request, Response};
use steadfast_core::{Deadline, Layer, Transport};

use crate::error::LimitError;
use crate::{Bulkhead, ConcurrencyConfig, PermitBody, ReleaseOn};

/// A [`Transport`] that runs at most `max_in_flight` requests at once,
/// queues a bounded number more for a bounded time, and rejects the rest
/// with [`LimitError::Rejected`].
///
/// Outermost in the standard pipeline (above retry): one permit per logical
/// request, held across its retries. The permit is owned by the response
/// future and then by the response body ([`PermitBody`]), so it is released
/// when the body ends ([`ReleaseOn::BodyEnd`], the default) or at the
/// response head ([`ReleaseOn::ResponseHead`]), and always when anything is
/// dropped: a cancelled request never strands a slot.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<T> {
    inner: T,
    bulkhead: Bulkhead,
}

impl<T> ConcurrencyLimit<T> {
    /// The bulkhead, for snapshots.
    pub const fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// The wrapped transport.
    pub const fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<B, T> Transport<B> for ConcurrencyLimit<T>
where
    T: Transport<B>,
    B: Send + 'static,
{
    type Body = PermitBody<T::Body>;
    type Error = LimitError<T::Error>;

    async fn send(&self, req: Request<B>) -> Result<Response<Self::Body>, Self::Error> {
        let permit = self.bulkhead.acquire_before(Deadline::of(&req)).await?;
        let res = self.inner.send(req).await.map_err(LimitError::Inner)?;
        let permit = match self.bulkhead.config().release_on() {
            ReleaseOn::ResponseHead => None,
            _ => Some(permit),
        };
        Ok(res.map(|body| PermitBody::new(body, permit)))
    }
}

/// Wraps transports in a [`ConcurrencyLimit`]. Every transport it wraps
/// shares the same bulkhead.
///
/// ```
/// use steadfast_core::{transport_fn, Transport, TransportExt};
/// use steadfast_limit::{ConcurrencyConfig, ConcurrencyLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = ConcurrencyLimitLayer::new(ConcurrencyConfig::builder().max_in_flight(8).build()?);
/// let client = transport_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::io::Error>(http::Response::new(()))
/// })
/// .with(layer.clone());
/// let res = client.send(http::Request::new(())).await?;
/// assert_eq!(layer.bulkhead().in_flight(), 1); // until the body is done
/// drop(res);
/// assert_eq!(layer.bulkhead().in_flight(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    bulkhead: Bulkhead,
}

impl ConcurrencyLimitLayer {
    /// A new bulkhead with `config`.
    pub fn new(config: ConcurrencyConfig) -> Self {
        Self::shared(Bulkhead::new(config))
    }

    /// Uses an existing bulkhead (a clone shares the limit).
    pub const fn shared(bulkhead: Bulkhead) -> Self {
        Self { bulkhead }
    }

    /// The bulkhead, for snapshots.
    pub const fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

impl<T> Layer<T> for ConcurrencyLimitLayer {
    type Transport = ConcurrencyLimit<T>;

    fn layer(&self, inner: T) -> ConcurrencyLimit<T> {
        ConcurrencyLimit {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}
