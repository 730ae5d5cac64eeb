//! [`ResponseFuture`]: the future of [`Breaker::send`](crate::Breaker).
//!
//! Hand-written rather than `async`: admission happens synchronously in
//! `send`, and this future only wraps the inner one with the permit. An
//! `async fn` would move the request through two more state machines, which
//! on a ready transport costs several times the breaker itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;
use steadfast_core::Classify;
use tokio::time::Instant;

use crate::error::{BreakerError, BreakerOpen};
use crate::state::Permit;

pin_project! {
    /// A call through the breaker, or its rejection.
    #[project = ResponseFutureProj]
    pub(crate) enum ResponseFuture<'a, F, C> {
        /// Admitted (or untracked, with no permit): waiting for the inner transport.
        Call {
            #[pin]
            fut: F,
            // Dropped with the future: a cancelled probe frees its slot.
            permit: Option<Permit<'a>>,
            classify: &'a C,
            start: Option<Instant>,
        },
        /// Refused; resolves at once.
        Rejected { open: Option<BreakerOpen> },
    }
}

/// When a call starts, if its latency matters (slow-call detection).
#[inline]
pub(crate) fn start_for(permit: Option<&Permit<'_>>) -> Option<Instant> {
    permit
        .filter(|p| p.breaker().measures_latency())
        .map(|_| Instant::now())
}

impl<F, C, RB, E> Future for ResponseFuture<'_, F, C>
where
    F: Future<Output = Result<Response<RB>, E>>,
    C: Classify<RB, E>,
{
    type Output = Result<Response<RB>, BreakerError<E>>;

    // Measured, as for `Breaker::send`: keeps the future out of a call frame.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Call {
                fut,
                permit,
                classify,
                start,
            } => {
                let result = ready!(fut.poll(cx));
                if let Some(permit) = permit.take() {
                    let outcome = classify.classify(&result);
                    match *start {
                        Some(start) => {
                            let now = Instant::now();
                            permit.record(now, outcome, now.saturating_duration_since(start));
                        }
                        None => permit.record_with(Instant::now, outcome, Duration::ZERO),
                    }
                }
                Poll::Ready(result.map_err(BreakerError::Inner))
            }
            ResponseFutureProj::Rejected { open } => Poll::Ready(Err(BreakerError::Open(
                open.take().expect("ResponseFuture polled after completion"),
            ))),
        }
    }
}
