//! The future of one request: waits for a connection, then for the response
//! head, under the deadline and the read timeout, and reports the pool
//! events as it goes.
//!
//! One timer serves the whole wait, armed after the first poll that does
//! not finish. It first aims at a read timeout counted from `send`, the
//! earliest the response could be late, and when it fires, moves to where
//! the read timeout really ends: counted from the request's last progress
//! (see [`crate::request`]), or, while no connection has the request or
//! the caller's body has no frame ready, a full read timeout later. A
//! response that arrives in time costs one timer registration, no
//! re-arming and no clock read here.
//!
//! On a timeout the request is dropped before `may_have_reached_server`
//! is decided: only then is "its body was never looked at" final.
//!
//! With a pool observer, the connection that takes an HTTP/1 request
//! reports the acquisition itself (see [`crate::request`]); this future
//! reports the rest: the start of the wait, a wait that ends without a
//! connection, and the hold it hands to the response body. For hosts
//! known to speak HTTP/2, the connection comes from hyper-util's
//! `capture_connection`, which it fills synchronously while we poll its
//! response future: after every poll we look at the capture. A request no
//! connection claimed is bound, at the latest, by the connection its
//! response names. Without an observer nothing of this runs.

use std::cell::RefCell;
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
use steadfast_core::pool::Acquired;
use steadfast_core::{Deadline, TimeoutPhase};
use tokio::time::{Instant, Sleep};

use crate::body::{Held, HyperBody};
use crate::conn::{ConnShared, ConnectionInfo, HostState};
use crate::error::{ErrorKind, HyperError, find_in_chain, refused_stream};
use crate::request::{InFlight, Progress};
use crate::transport::failed_in_flight;

pin_project! {
    /// The future returned by [`crate::HyperTransport`]'s `send`.
    pub(crate) struct ResponseFuture {
        state: State,
        #[pin]
        timer: Timer,
    }
}

enum State {
    /// The request was refused before it started.
    Failed(HyperError),
    Running(Active),
    Done,
}

pin_project! {
    #[project = TimerProj]
    enum Timer {
        Idle,
        Armed { #[pin] sleep: Sleep },
    }
}

struct Active {
    /// `None` once it finished, or once the transport gave up on it.
    response: Option<hyper_util::client::legacy::ResponseFuture>,
    in_flight: Arc<InFlight>,
    /// The request's [`steadfast_core::Deadline`], if it has one.
    deadline: Option<Instant>,
    polled: bool,
    /// Only with a pool observer, on a host known to speak HTTP/2.
    capture: Option<CaptureConnection>,
}

impl ResponseFuture {
    /// A request that failed before it started.
    pub(crate) fn failed(err: HyperError) -> Self {
        Self {
            state: State::Failed(err),
            timer: Timer::Idle,
        }
    }

    /// `capture`: see [`Active::capture`].
    pub(crate) fn start(
        response: hyper_util::client::legacy::ResponseFuture,
        in_flight: Arc<InFlight>,
        capture: Option<CaptureConnection>,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            state: State::Running(Active {
                response: Some(response),
                in_flight,
                deadline,
                polled: false,
                capture,
            }),
            timer: Timer::Idle,
        }
    }
}

impl Active {
    fn host(&self) -> &HostState {
        &self.in_flight.host
    }

    /// Looks for the assignment hyper-util records in the capture.
    fn check_assigned(&self) {
        let Some(capture) = &self.capture else { return };
        if !self.in_flight.acquiring() {
            return;
        }
        if let Some(info) = connection_info(capture.connection_metadata().as_ref()) {
            self.in_flight.bind(&info.0);
        }
    }

    /// The request failed: the error, typed by how far it got, and the
    /// hold on its connection if one was reported acquired (dropped after
    /// the request, it reports the release).
    fn failed(&mut self, e: hyper_util::client::legacy::Error) -> (HyperError, Option<Held>) {
        let conn = match self.in_flight.bound_conn() {
            Some(conn) => Some(conn),
            None => connection_info(e.connect_info()).map(|c| c.0),
        };
        // hyper-util has finished: it dropped the request unless the
        // connection still holds it.
        let reached = self.in_flight.may_have_reached_server();
        let body_failed = self.in_flight.body_failed();
        let err = classify(self.host(), conn.as_deref(), reached, body_failed, e);
        let result = match err.kind() {
            ErrorKind::PoolTimeout { open, max } => {
                let host = self.host();
                host.stats.pool_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    policy.name = host.name(),
                    server.pool = %host.key,
                    taken = open,
                    max,
                    "pool exhausted: no connection slot became free in time"
                );
                Acquired::TimedOut
            }
            _ => Acquired::Failed,
        };
        (err, self.in_flight.settle(result))
    }

    /// The hold the response's body takes over.
    fn held_for(&self, res: &Response<Incoming>) -> Result<Option<Held>, HyperError> {
        let info = || res.extensions().get::<ConnectionInfo>();
        if self.host().observer.is_none() {
            return Ok(info().map(|c| {
                // Counted here rather than at assignment: nobody watches the difference.
                c.0.assign();
                Held::unobserved(c.0.clone())
            }));
        }
        // No connection claimed the request (an HTTP/2 socket runs in a
        // task of its own): the response names it.
        if self.in_flight.acquiring()
            && let Some(info) = info()
        {
            self.in_flight.bind(&info.0);
        }
        if let Some(held) = self.in_flight.take_hold() {
            return Ok(Some(held));
        }
        drop(self.in_flight.settle(Acquired::Failed));
        Err(unassigned_response(self.host()))
    }

    /// When the timer goes off: where to aim it next, or the phase that
    /// timed out and its limit.
    fn on_timer(&self, now: Instant) -> Result<Instant, (TimeoutPhase, Duration)> {
        let deadline = self.deadline;
        if let Some(d) = deadline
            && d <= now
        {
            let limit = d.saturating_duration_since(self.in_flight.created);
            return Err((TimeoutPhase::Total, limit));
        }
        let read_timeout = self.host().read_timeout;
        let read_ends = match self.in_flight.progress() {
            Progress::At(last) => {
                let at = Deadline::after_from(last, read_timeout).instant();
                if at <= now {
                    return Err((TimeoutPhase::Read, read_timeout));
                }
                at
            }
            // Still waiting for a connection, which the pool and connect
            // timeouts bound, or for the caller's own body: the read
            // timeout ends a full one after the request moves again, so
            // no earlier than this.
            Progress::Unsent | Progress::CallerPending => {
                Deadline::after_from(now, read_timeout).instant()
            }
        };
        Ok(deadline.map_or(read_ends, |d| d.min(read_ends)))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.polled {
            return;
        }
        // A request that finished with its pool events reported (or none
        // to report) has nothing to settle.
        if self.response.is_some() || self.in_flight.unsettled() {
            self.abandon();
        }
        self.in_flight.stop_waiting();
    }
}

impl Active {
    /// Dropped while running, or with pool events left to report: settles
    /// them, and drains what may save the connection.
    fn abandon(&mut self) {
        // Abandoned by its caller after a connection took the whole
        // request: waiting for the response may save the connection. A
        // request not yet taken is dropped with the future, unsent.
        let draining = self.in_flight.handed_over() && self.in_flight.host.drain.is_some();
        let response = self.response.take();
        // The assignment, if the last poll did not see it yet.
        self.check_assigned();
        // Dropped while waiting for a connection: the protocol still
        // wants its one event. Otherwise the hold, to release.
        let held = self.in_flight.settle(Acquired::Cancelled);
        match response {
            Some(response) if draining => {
                crate::drain::head(&self.in_flight.host, response, held);
            }
            // The request goes first: it closes the connection or stream
            // before the release is reported.
            response => drop((response, held)),
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
        let active = match this.state {
            State::Running(active) => active,
            State::Failed(_) => {
                let State::Failed(err) = std::mem::replace(this.state, State::Done) else {
                    unreachable!("matched above")
                };
                return Poll::Ready(Err(err));
            }
            State::Done => panic!("ResponseFuture polled after completion"),
        };
        let first = !active.polled;
        if first {
            active.polled = true;
            active.in_flight.start_waiting();
            active.in_flight.start_acquire();
        }

        let Some(response) = active.response.as_mut() else {
            unreachable!("running until the response future finishes")
        };
        let polled = Pin::new(response).poll(cx);
        active.check_assigned();
        let out = match polled {
            Poll::Ready(Ok(res)) => match active.held_for(&res) {
                Ok(held) => {
                    let (host, deadline) = (active.in_flight.host.clone(), active.deadline);
                    active.response = None;
                    *this.state = State::Done;
                    // Built in the return slot: a response is worth not copying twice.
                    let (parts, incoming) = res.into_parts();
                    let body = HyperBody::new(incoming, held, host, deadline);
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
                Err(err) => Err(err),
            },
            Poll::Ready(Err(e)) => {
                let (err, held) = active.failed(e);
                // The request goes first: on a failure this closes its
                // HTTP/1 connection (or resets its HTTP/2 stream) before
                // the release is reported.
                active.response = None;
                *this.state = State::Done;
                drop(held);
                return Poll::Ready(Err(err));
            }
            Poll::Pending => {
                if first {
                    // The earliest the read timeout could end: a full one after
                    // the request was handed over, were it sent at once.
                    let read_timeout = active.host().read_timeout;
                    let read_ends =
                        Deadline::after_from(active.in_flight.created, read_timeout).instant();
                    let at = active.deadline.map_or(read_ends, |d| d.min(read_ends));
                    this.timer.as_mut().arm(at);
                }
                loop {
                    if !this.timer.as_mut().poll_fired(cx) {
                        return Poll::Pending;
                    }
                    match active.on_timer(Instant::now()) {
                        Ok(at) => this.timer.as_mut().arm(at),
                        Err((phase, limit)) => {
                            let held = active.in_flight.settle(Acquired::TimedOut);
                            let in_flight = active.in_flight.clone();
                            // Drop the request first: only then does "never
                            // sent" settle (a connection looking at the body
                            // right now would otherwise race the answer).
                            // Not drained: the server went silent, or the
                            // caller's deadline passed.
                            active.response = None;
                            *this.state = State::Done;
                            drop(held);
                            let reached = in_flight.may_have_reached_server();
                            let key = &in_flight.host.key;
                            return Poll::Ready(Err(HyperError::timeout(
                                phase, key, limit, reached,
                            )));
                        }
                    }
                }
            }
        };
        // Drop the request now: on a failure this closes its HTTP/1
        // connection (or resets its HTTP/2 stream) before the release is reported.
        active.response = None;
        *this.state = State::Done;
        Poll::Ready(out)
    }
}

/// Our tag on the connection hyper-util recorded.
fn connection_info(connected: Option<&Connected>) -> Option<ConnectionInfo> {
    thread_local! {
        /// `Connected` hands out its extras only by copying them into an
        /// `Extensions`: reusing one map per thread saves allocating and
        /// freeing a map per request.
        static SCRATCH: RefCell<http::Extensions> = RefCell::new(http::Extensions::new());
    }
    let connected = connected?;
    SCRATCH.with_borrow_mut(|ext| {
        connected.get_extras(ext);
        ext.remove::<ConnectionInfo>()
    })
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

/// The error of a request hyper-util failed, typed by how far it got:
/// `conn` is the connection it was assigned, if any, and `reached` and
/// `body_failed` what its body saw (see [`InFlight`]).
fn classify(
    host: &HostState,
    conn: Option<&ConnShared>,
    reached: bool,
    body_failed: bool,
    err: hyper_util::client::legacy::Error,
) -> HyperError {
    // Our connector's own error, typed already. It can follow an assigned
    // connection: hyper-util retries a request a dead pooled connection
    // handed back unsent, and the retry's connect can fail (on HTTP/2 the
    // capture still names the dead connection). Only a connect failure:
    // a caller's body that is itself a response of ours (a download piped
    // into an upload) carries our error too, and is the body's failure.
    if err.is_connect()
        && let Some(ours) = find_in_chain::<HyperError>(&err)
    {
        return ours.clone();
    }
    // Refused unprocessed (RFC 9113 §8.7), wherever the request had got
    // to; unless the caller's body failed: that reset is the body's.
    if !body_failed && refused_stream(&err) {
        return HyperError::refused(&host.key, Box::new(err));
    }
    match conn {
        Some(conn) if reached => failed_in_flight(host, Some(conn), body_failed, Box::new(err)),
        Some(_) => failed_unsent(host, err),
        None => failed_before_assignment(host, err),
    }
}

/// A failure with no connection assigned, not our connector's: hyper-util
/// refusing the request, or its connector failing otherwise. Either way the
/// request never left: hyper-util names the connection in every error that
/// follows a handoff, and an earlier attempt it retries was handed back
/// unsent.
fn failed_before_assignment(
    host: &HostState,
    err: hyper_util::client::legacy::Error,
) -> HyperError {
    if err.is_connect() {
        HyperError::connect(ErrorKind::Connect, &host.key, &host.server, Box::new(err))
    } else {
        HyperError::new(
            ErrorKind::InvalidRequest,
            &host.key,
            false,
            Some(Box::new(err)),
        )
    }
}

/// A connection was assigned, but the request was dropped before it looked
/// at it: the connection closed before it could carry the request (hyper
/// hands the request back, and hyper-util gives up when the connection was
/// fresh), or hyper-util refused the request for this connection (an
/// `HTTP/2` request on an HTTP/1 connection).
fn failed_unsent(host: &HostState, err: hyper_util::client::legacy::Error) -> HyperError {
    if find_in_chain::<hyper::Error>(&err).is_some() {
        // As good as a refused connection: a retry cannot repeat anything.
        HyperError::connect(ErrorKind::Connect, &host.key, &host.server, Box::new(err))
    } else {
        HyperError::new(
            ErrorKind::InvalidRequest,
            &host.key,
            false,
            Some(Box::new(err)),
        )
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use steadfast_core::pool::NoopPoolObserver;

    use super::*;
    use crate::config::Config;
    use crate::conn::{Conn, Hosts};
    use crate::request::RequestBody;

    /// A connector that fails every connect with our own error.
    #[derive(Clone)]
    struct Refusing(HyperError);

    impl tower_service::Service<http::Uri> for Refusing {
        type Response = Conn;
        type Error = HyperError;
        type Future = std::future::Ready<Result<Conn, HyperError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HyperError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Uri) -> Self::Future {
            std::future::ready(Err(self.0.clone()))
        }
    }

    /// hyper-util retries a request that a dead pooled connection handed
    /// back unsent; when the retry's connect fails, the request is still
    /// bound to the dead connection (on HTTP/2, by the capture). Our typed
    /// error in the chain wins over "assigned but never sent".
    #[tokio::test]
    async fn a_failed_reconnect_after_an_assignment_keeps_our_typed_error() {
        let hosts = Hosts::new(Some(Arc::new(NoopPoolObserver)), &Config::default());
        let host = hosts.get(false, &"example.test".parse().unwrap());
        let ours = HyperError::pool_timeout(&host.key, Duration::from_secs(5), 8, 8);
        let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(Refusing(ours));
        let req = http::Request::get("http://example.test/")
            .body(Empty::new())
            .unwrap();
        let e = client.request(req).await.unwrap_err();

        let in_flight = InFlight::new(host.clone(), Instant::now(), false, None);
        in_flight.start_waiting();
        in_flight.start_acquire();
        // The dead connection the first attempt was bound to...
        let dead = crate::conn::ConnShared::for_test(host.clone(), 1);
        in_flight.bind(&dead);
        // ...which handed the request back unlooked at.
        drop(RequestBody::new(in_flight.clone()));
        let mut active = Active {
            response: None,
            in_flight,
            deadline: None,
            polled: true,
            capture: None,
        };
        let (err, held) = active.failed(e);
        assert_eq!(
            err.kind(),
            ErrorKind::PoolTimeout { open: 8, max: 8 },
            "{err:?}"
        );
        assert!(!err.may_have_reached_server());
        assert_eq!(host.stats.pool_timeouts.load(Ordering::Relaxed), 1);
        assert!(held.is_some(), "the acquisition reported is released");
        assert!(!active.in_flight.unsettled());
    }
}
