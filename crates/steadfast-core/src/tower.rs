//! Interop with tower (feature `tower`): any `tower::Service` becomes a
//! [`Transport`], any [`Transport`] a `tower::Service`, and any steadfast
//! [`Layer`] a `tower::Layer`, so the policies drop into axum, hyper and
//! tonic stacks.
//!
//! ```
//! use steadfast_core::tower::{FromTower, IntoService};
//! use steadfast_core::{transport_fn, Transport};
//! use tower::ServiceExt;
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let t = transport_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::io::Error>(http::Response::new("hi"))
//! });
//! // Transport -> Service -> Transport, round trip.
//! let svc = IntoService::new(t);
//! let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(*res.body(), "hi");
//! let back = FromTower::new(svc);
//! assert_eq!(*back.send(http::Request::new(())).await.unwrap().body(), "hi");
//!
//! // Type-erased services, which are not `Sync`, work too.
//! let boxed = tower::util::BoxCloneService::new(IntoService::new(back));
//! let again = FromTower::new(boxed);
//! assert_eq!(*again.send(http::Request::new(())).await.unwrap().body(), "hi");
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};

use crate::{BoxError, Layer, Transport};

/// A `tower::Service` used as a [`Transport`].
///
/// Each `send` clones the service, waits for `poll_ready`, then calls it,
/// which is how tower services are shared between tasks. The service sits
/// behind a mutex, held only while it is cloned, so services that are not
/// `Sync` (such as `tower::util::BoxCloneService`) work too.
#[derive(Debug)]
pub struct FromTower<S> {
    service: std::sync::Mutex<S>,
}

impl<S> FromTower<S> {
    /// Wraps `service`.
    pub const fn new(service: S) -> Self {
        Self {
            service: std::sync::Mutex::new(service),
        }
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.service
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn clone_service(&self) -> S
    where
        S: Clone,
    {
        self.service
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl<S: Clone> Clone for FromTower<S> {
    fn clone(&self) -> Self {
        Self::new(self.clone_service())
    }
}

/// The error of a [`FromTower`] transport: the service's error, boxed.
///
/// The service's error is this error's `source()` (not hidden behind a
/// transparent wrapper), so [`crate::ErrorClass::of`] finds it.
#[derive(Debug, thiserror::Error)]
#[error("the tower service failed")]
pub struct TowerError(#[source] BoxError);

impl TowerError {
    /// The service's own error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl<B, S, RB> Transport<B> for FromTower<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Body = RB;
    type Error = TowerError;

    fn send(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<RB>, TowerError>> + Send {
        let mut service = self.clone_service();
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(|e| TowerError(e.into()))?;
            service.call(req).await.map_err(|e| TowerError(e.into()))
        }
    }
}

/// A [`Transport`] used as a `tower::Service`. Always ready: backpressure
/// happens inside `send`.
#[derive(Clone, Debug)]
pub struct IntoService<T> {
    transport: T,
}

impl<T> IntoService<T> {
    /// Wraps `transport`.
    pub const fn new(transport: T) -> Self {
        Self { transport }
    }

    /// The wrapped transport.
    pub fn into_inner(self) -> T {
        self.transport
    }
}

/// The future of [`IntoService`]: boxed, because `Transport::send` returns
/// an unnameable future.
pub type ResponseFuture<RB, E> = Pin<Box<dyn Future<Output = Result<Response<RB>, E>> + Send>>;

impl<B, T> tower_service::Service<Request<B>> for IntoService<T>
where
    T: Transport<B>,
    B: Send + 'static,
{
    type Response = Response<T::Body>;
    type Error = T::Error;
    type Future = ResponseFuture<T::Body, T::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let t = self.transport.clone();
        Box::pin(async move { t.send(req).await })
    }
}

/// A steadfast [`Layer`] used as a `tower::Layer`: the service below is
/// adapted with [`FromTower`], wrapped, and exposed with [`IntoService`].
#[derive(Clone, Debug, Default)]
pub struct TowerLayer<L> {
    layer: L,
}

impl<L> TowerLayer<L> {
    /// Wraps `layer`.
    pub const fn new(layer: L) -> Self {
        Self { layer }
    }
}

impl<S, L> tower_layer::Layer<S> for TowerLayer<L>
where
    L: Layer<FromTower<S>>,
{
    type Service = IntoService<L::Transport>;

    fn layer(&self, inner: S) -> Self::Service {
        IntoService::new(self.layer.layer(FromTower::new(inner)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;

    #[tokio::test]
    async fn the_service_error_stays_classifiable() {
        let svc = tower::service_fn(|_req: Request<()>| async {
            Err::<Response<()>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
        });
        let err = FromTower::new(svc)
            .send(Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(ErrorClass::of(&err), ErrorClass::Reset);
        assert_eq!(err.to_string(), "the tower service failed");
        assert!(std::error::Error::source(&err).is_some());
    }
}
