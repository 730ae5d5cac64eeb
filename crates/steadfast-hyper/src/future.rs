//! The future of one request: waits for a connection, then for the response
//! head, under the deadline and the read timeout, and reports the pool
//! events as it goes.
//!
//! hyper-util tells nobody when its pool hands a connection to a request,
//! except through `capture_connection`, which it fills synchronously while
//! we poll its response future. So after every poll of that future we look
//! at the capture: the first time it is filled is the assignment, exactly.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{CaptureConnection, Connected};
use pin_project_lite::pin_project;
use steadfast_core::TimeoutPhase;
use steadfast_core::pool::Acquired;
use tokio::time::{Instant, Sleep};

use crate::body::{Held, HyperBody, Limits};
use crate::conn::{ConnectionInfo, HostState};
use crate::error::{ErrorKind, HyperError, find_in_chain};
use crate::transport::failed_in_flight;

pin_project! {
    /// The future returned by [`crate::HyperTransport`]'s `send`.
    pub(crate) struct ResponseFuture {
        state: Option<Active>,
        early: Option<HyperError>,
        #[pin]
        timer: Timer,
    }
}

pin_project! {
    #[project = TimerProj]
    enum Timer {
        Idle,
        Armed { #[pin] sleep: Sleep },
    }
}

struct Active {
    response: hyper_util::client::legacy::ResponseFuture,
    capture: CaptureConnection,
    host: Arc<HostState>,
    started: Instant,
    limits: Limits,
    max_body: Option<u64>,
    /// `Some` once the pool assigned a connection.
    held: Option<Held>,
    /// `true` from the first poll until `acquire_finished` is reported; a
    /// drop in between reports `Cancelled`. A future never polled reports nothing.
    acquiring: bool,
    /// What the armed timer means when it fires.
    timer_fires: Option<(TimeoutPhase, Duration)>,
    polled: bool,
}

impl ResponseFuture {
    /// A request that failed before it started.
    pub(crate) fn failed(err: HyperError) -> Self {
        Self {
            state: None,
            early: Some(err),
            timer: Timer::Idle,
        }
    }

    pub(crate) fn start(
        response: hyper_util::client::legacy::ResponseFuture,
        capture: CaptureConnection,
        host: Arc<HostState>,
        limits: Limits,
        max_body: Option<u64>,
    ) -> Self {
        Self {
            state: Some(Active {
                response,
                capture,
                host,
                started: Instant::now(),
                limits,
                max_body,
                held: None,
                acquiring: false,
                timer_fires: None,
                polled: false,
            }),
            early: None,
            timer: Timer::Idle,
        }
    }
}

impl Active {
    /// Reports the end of the wait for a connection, once.
    fn finish_acquire(&mut self, now: Instant, result: Acquired) {
        if self.acquiring {
            self.acquiring = false;
            self.host.waiting.fetch_sub(1, Ordering::Relaxed);
            let wait = now.saturating_duration_since(self.started);
            self.host.observer.acquire_finished(wait, result);
        }
    }

    /// Looks for the assignment hyper-util records in the capture.
    fn check_assigned(&mut self) -> Option<Instant> {
        if self.held.is_some() {
            return None;
        }
        let info = connection_info(self.capture.connection_metadata().as_ref())?;
        let now = Instant::now();
        let conn = info.0;
        let result = if conn.assign() {
            Acquired::New(conn.id)
        } else {
            Acquired::Reused(conn.id)
        };
        self.finish_acquire(now, result);
        self.held = Some(Held::new(conn, now));
        Some(now)
    }

    fn complete(
        &mut self,
        res: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
    ) -> Result<Response<HyperBody>, HyperError> {
        let Some(held) = self.held.take() else {
            let err = match res {
                Ok(_) => unassigned_response(&self.host),
                Err(e) => failed_before_assignment(&self.host, e),
            };
            let result = match err.kind() {
                ErrorKind::PoolTimeout { .. } => Acquired::TimedOut,
                _ => Acquired::Failed,
            };
            self.finish_acquire(Instant::now(), result);
            return Err(err);
        };
        match res {
            Ok(res) => {
                let (host, limits, max_body) = (self.host.clone(), self.limits, self.max_body);
                Ok(
                    res.map(|incoming| {
                        HyperBody::new(incoming, Some(held), host, limits, max_body)
                    }),
                )
            }
            Err(e) => Err(failed_in_flight(&self.host, Some(&held.conn), Box::new(e))),
        }
    }

    fn timed_out(&mut self, phase: TimeoutPhase, limit: Duration) -> HyperError {
        let reached = self.held.is_some();
        if !reached {
            self.finish_acquire(Instant::now(), Acquired::TimedOut);
        }
        HyperError::timeout(phase, &self.host.key, limit, reached)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        // Dropped while waiting for a connection: the protocol still wants its one event.
        if self.acquiring {
            self.finish_acquire(Instant::now(), Acquired::Cancelled);
        }
    }
}

impl Timer {
    /// Arms (or re-arms) the timer for `at`.
    fn arm(mut self: Pin<&mut Self>, at: Instant) {
        match self.as_mut().project() {
            TimerProj::Armed { sleep } => sleep.reset(at),
            TimerProj::Idle => self.set(Self::Armed {
                sleep: tokio::time::sleep_until(at),
            }),
        }
    }

    fn poll_fired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        match self.project() {
            TimerProj::Armed { sleep } => sleep.poll(cx).is_ready(),
            TimerProj::Idle => false,
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<HyperBody>, HyperError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(active) = this.state.as_mut() else {
            let err = this
                .early
                .take()
                .expect("ResponseFuture polled after completion");
            return Poll::Ready(Err(err));
        };
        if !active.polled {
            active.polled = true;
            active.started = Instant::now();
            active.acquiring = true;
            active.host.waiting.fetch_add(1, Ordering::Relaxed);
            active.host.observer.acquire_started();
            if let Some(deadline) = active.limits.deadline {
                let limit = deadline.saturating_duration_since(active.started);
                this.timer.as_mut().arm(deadline);
                active.timer_fires = Some((TimeoutPhase::Total, limit));
            }
        }

        let polled = Pin::new(&mut active.response).poll(cx);
        if let Some(now) = active.check_assigned() {
            // From here on the wait is for the response head.
            let (at, phase, limit) = active.limits.wait_from(now);
            this.timer.as_mut().arm(at);
            active.timer_fires = Some((phase, limit));
        }
        let out = match polled {
            Poll::Ready(res) => active.complete(res),
            Poll::Pending => {
                if !this.timer.as_mut().poll_fired(cx) {
                    return Poll::Pending;
                }
                let (phase, limit) = active.timer_fires.expect("an armed timer has a meaning");
                Err(active.timed_out(phase, limit))
            }
        };
        // Drop the request now: on a timeout this closes its HTTP/1
        // connection (or resets its HTTP/2 stream) before the release is reported.
        *this.state = None;
        Poll::Ready(out)
    }
}

fn connection_info(connected: Option<&Connected>) -> Option<ConnectionInfo> {
    let mut ext = http::Extensions::new();
    connected?.get_extras(&mut ext);
    ext.remove::<ConnectionInfo>()
}

/// A response without our connection tag: impossible with our connector,
/// reported rather than trusted.
fn unassigned_response(host: &HostState) -> HyperError {
    HyperError::new(
        ErrorKind::Protocol,
        &host.key,
        true,
        Some("hyper-util returned a response without connection metadata".into()),
    )
}

/// A failure before any connection was assigned: the request never left.
fn failed_before_assignment(
    host: &HostState,
    err: hyper_util::client::legacy::Error,
) -> HyperError {
    if let Some(ours) = find_in_chain::<HyperError>(&err) {
        return ours.clone();
    }
    if err.is_connect() {
        HyperError::connect(
            ErrorKind::Connect,
            &host.key,
            &host.authority,
            Box::new(err),
        )
    } else {
        HyperError::new(
            ErrorKind::InvalidRequest,
            &host.key,
            false,
            Some(Box::new(err)),
        )
    }
}
