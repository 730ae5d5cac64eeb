//! [`ResponseFuture`]: the future of [`Breaker::send`](crate::Breaker).
//!
//! Hand-written rather than `async`: admission happens synchronously in
//! `send`, and this future only wraps the inner one with a [`Guard`] (what
//! to report, and to whom). An `async fn` would move the request through two
//! more state machines, which on a ready transport costs several times the
//! breaker itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use steadfast_core::{Classify, Outcome};
use tokio::time::Instant;

use crate::error::{BreakerError, BreakerOpen};
use crate::state::{Admitted, CircuitBreaker, Permit};

pin_project! {
    /// A call through the breaker, or its rejection.
    #[project = ResponseFutureProj]
    pub(crate) enum ResponseFuture<'a, F, C> {
        /// Admitted (or untracked): waiting for the inner transport.
        Call {
            #[pin]
            fut: F,
            guard: Guard<'a>,
            classify: &'a C,
        },
        /// Refused; resolves at once.
        Rejected { open: Option<BreakerOpen> },
    }
}

/// What a call reports to its breaker when it completes.
#[derive(Debug)]
pub(crate) enum Guard<'a> {
    /// Admitted by a closed breaker that does not time calls: the path of a
    /// healthy service, where a permit would cost more than the bookkeeping
    /// it does (dropped, such a call has nothing to release).
    Closed {
        breaker: &'a CircuitBreaker,
        admitted: Admitted,
    },
    /// Admitted otherwise (a probe, a per-key breaker, a timed call), or
    /// untracked (no permit). Dropped with the future: a cancelled probe
    /// frees its slot.
    Permit {
        permit: Option<Permit<'a>>,
        start: Option<Instant>,
    },
}

impl Guard<'_> {
    /// Reports the outcome of the call (once: later reports are ignored).
    // Measured: out of line, ~15 instructions more per call.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn report(&mut self, outcome: Outcome) {
        match self {
            Guard::Closed { breaker, admitted } => {
                breaker.record_admitted(admitted, Instant::now, outcome);
            }
            Guard::Permit {
                permit: Some(permit),
                start,
            } => match *start {
                Some(start) => {
                    let now = Instant::now();
                    let latency = now.saturating_duration_since(start);
                    permit.settle(|| now, outcome, Some(latency));
                }
                None => permit.settle(Instant::now, outcome, None),
            },
            Guard::Permit { permit: None, .. } => {}
        }
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

    // Measured (callgrind, ready transport): out of line, the inner result
    // is moved through the call frame, ~80 instructions more per call.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Call {
                fut,
                guard,
                classify,
            } => {
                let poll = fut.poll(cx);
                if let Poll::Ready(result) = &poll {
                    guard.report(classify.classify(result));
                }
                poll.map_err(BreakerError::Inner)
            }
            ResponseFutureProj::Rejected { open } => Poll::Ready(Err(BreakerError::Open(
                open.take().expect("ResponseFuture polled after completion"),
            ))),
        }
    }
}
