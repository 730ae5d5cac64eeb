//! The request body as hyper holds it, and what it tells the request's
//! future: the moment a connection takes the request to send it.
//!
//! hyper must decide how to frame a request (`Content-Length`, chunked, or
//! no body) before it writes the first byte of its head, and it can only
//! learn that from the body: `is_end_stream`, `size_hint` or `poll_frame`.
//! So the first call to any of them is the moment the request leaves the
//! pool's hands for a connection's — on HTTP/1 and HTTP/2 alike. That
//! moment starts the read timeout, ends the request's wait for a
//! connection, and decides whether a failure may have reached the server.
//! Noticing it costs one clock read on the connection's task and one
//! allocation per request, where hyper-util's `capture_connection` costs a
//! watch channel, an extension map and a clone of the connection metadata.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use steadfast_core::BoxError;
use tokio::time::Instant;

use crate::conn::HostState;

/// Not polled yet: not counted as waiting.
const IDLE: u8 = 0;
/// Polled, and waiting for a connection to take it.
const WAITING: u8 = 1;
/// A connection took it.
const SENT: u8 = 2;
/// Finished or dropped before any connection took it.
const GONE: u8 = 3;

/// What a request's future and its body (inside hyper) share.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) host: Arc<HostState>,
    /// When the request was handed to hyper-util; `sent` counts from here.
    pub(crate) created: Instant,
    state: AtomicU8,
    /// Nanoseconds from `created` to the moment a connection took the
    /// request, plus one; zero until then.
    sent: AtomicU64,
}

impl InFlight {
    pub(crate) fn new(host: Arc<HostState>, created: Instant) -> Arc<Self> {
        Arc::new(Self {
            host,
            created,
            state: AtomicU8::new(IDLE),
            sent: AtomicU64::new(0),
        })
    }

    /// The future's first poll: the request now waits for a connection.
    pub(crate) fn start_waiting(&self) {
        self.host.waiting.fetch_add(1, Ordering::Relaxed);
        self.state.store(WAITING, Ordering::Release);
    }

    /// The future finished or was dropped: if no connection took the
    /// request, it waits no more.
    pub(crate) fn stop_waiting(&self) {
        if self
            .state
            .compare_exchange(WAITING, GONE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.host.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// When a connection took the request to send it, if one did.
    pub(crate) fn sent_at(&self) -> Option<Instant> {
        match self.sent.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.created + Duration::from_nanos(n - 1)),
        }
    }

    /// `true` once a connection took the request: from then on it may have
    /// reached the server.
    pub(crate) fn sent(&self) -> bool {
        self.sent.load(Ordering::Acquire) != 0
    }

    /// Called through the body by hyper's connection task, first thing
    /// before it writes the request.
    fn mark_sent(&self) {
        if self.state.load(Ordering::Acquire) != WAITING {
            return;
        }
        let nanos = Instant::now()
            .saturating_duration_since(self.created)
            .as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        // The time first, so that whoever sees `SENT` finds it.
        self.sent.store(stamp, Ordering::Release);
        if self
            .state
            .compare_exchange(WAITING, SENT, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.host.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The request body handed to hyper-util: the caller's body, boxed, and
/// the [`InFlight`] it marks as sent.
pub(crate) struct RequestBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
    in_flight: Arc<InFlight>,
}

impl RequestBody {
    pub(crate) fn new(inner: UnsyncBoxBody<Bytes, BoxError>, in_flight: Arc<InFlight>) -> Self {
        Self { inner, in_flight }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.in_flight.mark_sent();
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.in_flight.mark_sent();
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.in_flight.mark_sent();
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("sent", &self.in_flight.sent())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body::Body;
    use http_body_util::{BodyExt, Empty};
    use tokio::time::Instant;

    use super::{InFlight, RequestBody};
    use crate::config::Config;
    use crate::conn::Hosts;

    fn body(in_flight: &std::sync::Arc<InFlight>) -> RequestBody {
        let inner = Empty::<Bytes>::new().map_err(Into::into).boxed_unsync();
        RequestBody::new(inner, in_flight.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_look_at_the_body_marks_the_request_sent_once() {
        let hosts = Hosts::new(None, &Config::default());
        let host = hosts.get(false, &"example.test".parse().unwrap());
        let created = Instant::now();
        let in_flight = InFlight::new(host.clone(), created);
        let body = body(&in_flight);
        in_flight.start_waiting();
        assert_eq!(host.waiting.load(Ordering::Relaxed), 1);
        assert_eq!(in_flight.sent_at(), None);

        tokio::time::advance(Duration::from_millis(40)).await;
        assert!(body.is_end_stream(), "the caller's body answers as before");
        tokio::time::advance(Duration::from_millis(10)).await;
        let _ = body.size_hint();
        assert_eq!(
            in_flight.sent_at(),
            Some(created + Duration::from_millis(40)),
            "the first call counts"
        );
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0);
        in_flight.stop_waiting();
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0, "not counted twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_stops_waiting_unsent_is_never_marked_sent() {
        let hosts = Hosts::new(None, &Config::default());
        let host = hosts.get(false, &"example.test".parse().unwrap());
        let in_flight = InFlight::new(host.clone(), Instant::now());
        let body = body(&in_flight);

        // Never polled: nothing counted, nothing to undo.
        in_flight.stop_waiting();
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0);

        let in_flight = InFlight::new(host.clone(), Instant::now());
        let late = super::RequestBody::new(
            Empty::<Bytes>::new().map_err(Into::into).boxed_unsync(),
            in_flight.clone(),
        );
        in_flight.start_waiting();
        in_flight.stop_waiting();
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0);
        let _ = late.is_end_stream();
        assert!(!in_flight.sent(), "given up before any connection took it");
        assert_eq!(host.waiting.load(Ordering::Relaxed), 0);
        drop(body);
    }
}
