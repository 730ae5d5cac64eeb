//! The [`Transport`] trait, the one thing a policy knows about HTTP, and the
//! glue that stacks policies on top of each other.

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};

/// An asynchronous HTTP client: sends one request, returns one response.
///
/// This is the seam of steadfast. Every policy (retry, breaker, limiter, ...)
/// is a wrapper type that is itself a `Transport`, so policies stack
/// (`Retry<Breaker<Limit<HyperTransport>>>`) and the stack is again a
/// `Transport`.
///
/// - `&self`, no `poll_ready`: a transport is a shared handle, cheap to
///   clone, used from many tasks at once. Backpressure lives in policies
///   (the concurrency limiter waits for a permit inside `send`).
/// - The returned future is `Send`, so stacks of wrappers stay spawnable from
///   generic code.
/// - `B` is the request body; [`Transport::Body`] the response body, usually
///   an [`http_body::Body`] that streams frame by frame.
///
/// Implementors may write `async fn send(&self, ..)`; the `+ Send` bound of
/// the trait then checks that the future is `Send`.
///
/// ```
/// use steadfast_core::Transport;
/// use http::{Request, Response};
///
/// #[derive(Clone)]
/// struct Echo;
///
/// impl Transport<String> for Echo {
///     type Body = String;
///     type Error = std::convert::Infallible;
///
///     async fn send(&self, req: Request<String>) -> Result<Response<String>, Self::Error> {
///         Ok(Response::new(req.into_body()))
///     }
/// }
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let res = Echo.send(Request::new("ping".to_owned())).await.unwrap();
/// assert_eq!(res.body(), "ping");
/// # });
/// ```
pub trait Transport<B>: Clone + Send + Sync + 'static {
    /// The response body.
    type Body;
    /// The error returned when no response could be obtained.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sends `req` and resolves to the response head (the body may still be
    /// streaming).
    fn send(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<Self::Body>, Self::Error>> + Send;
}

impl<B, T> Transport<B> for Arc<T>
where
    T: Transport<B>,
{
    type Body = T::Body;
    type Error = T::Error;

    fn send(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<Self::Body>, Self::Error>> + Send {
        (**self).send(req)
    }
}

/// A [`Transport`] made from an async function or closure; see [`transport_fn`].
#[derive(Clone, Copy)]
pub struct TransportFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for TransportFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportFn").finish_non_exhaustive()
    }
}

/// Makes a [`Transport`] from a function `Request<B> -> Future<Result<Response<RB>, E>>`.
///
/// Handy in tests and for small adapters:
///
/// ```
/// use steadfast_core::{transport_fn, Transport};
/// use http::{Request, Response, StatusCode};
///
/// let t = transport_fn(|_req: Request<()>| async {
///     Ok::<_, std::io::Error>(Response::builder().status(StatusCode::NO_CONTENT).body(()).unwrap())
/// });
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// assert_eq!(t.send(Request::new(())).await.unwrap().status(), 204);
/// # });
/// ```
pub const fn transport_fn<F>(f: F) -> TransportFn<F> {
    TransportFn { f }
}

impl<B, F, Fut, RB, E> Transport<B> for TransportFn<F>
where
    F: Fn(Request<B>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<RB>, E>> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    type Body = RB;
    type Error = E;

    fn send(&self, req: Request<B>) -> impl Future<Output = Result<Response<RB>, E>> + Send {
        (self.f)(req)
    }
}

/// Wraps one transport in another: the constructor side of a policy.
///
/// Every steadfast policy has a `...Layer` that implements this trait, so a
/// pipeline can be described once and applied to any transport. With the
/// `tower` feature, [`crate::tower::TowerLayer`] turns a `Layer` into a
/// `tower::Layer`.
pub trait Layer<T> {
    /// The wrapped transport.
    type Transport;

    /// Wraps `inner`.
    fn layer(&self, inner: T) -> Self::Transport;
}

/// The layer that wraps nothing: `Identity.layer(t)` is `t`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl<T> Layer<T> for Identity {
    type Transport = T;

    fn layer(&self, inner: T) -> T {
        inner
    }
}

/// Two layers applied in order: `inner` first, then `outer` around it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stack<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<Inner, Outer> Stack<Inner, Outer> {
    /// A stack that applies `inner` to the transport, then `outer` to the result.
    pub const fn new(inner: Inner, outer: Outer) -> Self {
        Self { inner, outer }
    }
}

impl<T, Inner, Outer> Layer<T> for Stack<Inner, Outer>
where
    Inner: Layer<T>,
    Outer: Layer<Inner::Transport>,
{
    type Transport = Outer::Transport;

    fn layer(&self, t: T) -> Self::Transport {
        self.outer.layer(self.inner.layer(t))
    }
}

impl<T, F, R> Layer<T> for F
where
    F: Fn(T) -> R,
{
    type Transport = R;

    fn layer(&self, inner: T) -> R {
        self(inner)
    }
}

/// Builder-style wrapping, available on every type.
///
/// `transport.with(a).with(b)` puts `a` around the transport and `b` around
/// `a`: read it from the wire outwards.
pub trait TransportExt: Sized {
    /// Wraps `self` in `layer`.
    fn with<L: Layer<Self>>(self, layer: L) -> L::Transport {
        layer.layer(self)
    }
}

impl<T> TransportExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct Tag<T>(&'static str, T);

    impl<B: Send + 'static, T: Transport<B, Body = String>> Transport<B> for Tag<T> {
        type Body = String;
        type Error = T::Error;

        async fn send(&self, req: Request<B>) -> Result<Response<String>, Self::Error> {
            let res = self.1.send(req).await?;
            Ok(res.map(|b| format!("{}({b})", self.0)))
        }
    }

    fn base() -> impl Transport<(), Body = String, Error = std::io::Error> {
        transport_fn(|_req: Request<()>| async { Ok(Response::new("wire".to_owned())) })
    }

    #[tokio::test]
    async fn layers_apply_inside_out() {
        let stack = Stack::new(|t| Tag("a", t), |t| Tag("b", t));
        let t = base().with(stack).with(Identity);
        let body = t.send(Request::new(())).await.unwrap().into_body();
        assert_eq!(body, "b(a(wire))");
    }

    #[tokio::test]
    async fn arc_is_a_transport_and_stays_spawnable() {
        fn spawn_send<T: Transport<()>>(t: T) -> tokio::task::JoinHandle<bool>
        where
            T::Body: Send,
        {
            tokio::spawn(async move { t.send(Request::new(())).await.is_ok() })
        }
        let t = Arc::new(Tag("arc", base()));
        assert!(spawn_send(t).await.unwrap());
    }
}
