//! With the `tower` feature, every layer is a `tower::Layer`.
#![cfg(all(feature = "tower", not(loom)))] // the test tools need tokio's `net`, which loom builds leave out

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::num::NonZeroU32;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use steadfast_limit::{Quota, RateLimitLayer, TowerLayer};
use tower_layer::Layer;
use tower_service::Service;

/// A tower service that answers 204.
#[derive(Clone, Debug)]
struct NoContent;

impl Service<Request<()>> for NoContent {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        ready(Ok(Response::builder().status(204).body(()).unwrap()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_drops_into_a_tower_stack() {
    let quota = Quota::per_second(NonZeroU32::new(10).unwrap()).burst(NonZeroU32::MIN);
    let mut svc = TowerLayer::new(RateLimitLayer::new(quota)).layer(NoContent);
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let res = svc.call(Request::new(())).await.unwrap();
        assert_eq!(res.status(), 204);
    }
    assert_eq!(start.elapsed(), Duration::from_millis(200));
}
