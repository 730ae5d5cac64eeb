//! [`HyperBody`]: the response body, streamed frame by frame under the read
//! timeout and the `max_body` limit, releasing its connection when done.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use steadfast_core::TimeoutPhase;
use tokio::time::{Instant, Sleep};

use crate::conn::{ConnShared, HostState};
use crate::error::{ErrorKind, HyperError};
use crate::transport::failed_in_flight;

/// A request's hold on its connection. With a pool observer (`since` is
/// `Some`), dropping it reports `connection_released` once, with how long
/// the connection was held.
pub(crate) struct Held {
    pub(crate) conn: Arc<ConnShared>,
    since: Option<Instant>,
}

impl Held {
    /// A hold reported to the host's pool observer when it ends.
    pub(crate) fn observed(conn: Arc<ConnShared>, since: Instant) -> Self {
        Self {
            conn,
            since: Some(since),
        }
    }

    /// A hold nobody observes: only there to classify errors.
    pub(crate) fn unobserved(conn: Arc<ConnShared>) -> Self {
        Self { conn, since: None }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(since), Some(observer)) = (self.since, &self.conn.host.observer) {
            observer.connection_released(self.conn.id, since.elapsed());
        }
    }
}

/// The limits a wait runs under: the read timeout, cut short by the
/// request's deadline when that comes first.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) read_timeout: Duration,
    pub(crate) deadline: Option<Instant>,
}

impl Limits {
    /// When a wait starting at `now` gives up, which phase that is, and
    /// how long the wait was allowed.
    pub(crate) fn wait_from(self, now: Instant) -> (Instant, TimeoutPhase, Duration) {
        let read_at = steadfast_core::Deadline::after_from(now, self.read_timeout).instant();
        match self.deadline {
            Some(d) if d < read_at => (d, TimeoutPhase::Total, d.saturating_duration_since(now)),
            _ => (read_at, TimeoutPhase::Read, self.read_timeout),
        }
    }
}

/// The body of a response from [`crate::HyperTransport`].
///
/// Streams frame by frame as [`http_body::Body`] (use
/// `http_body_util::BodyExt` to collect or stream it). The read timeout
/// (cut short by the request's [`steadfast_core::Deadline`]) runs from the
/// first poll that finds no frame ready until a frame arrives: a caller
/// that takes its time between frames starts no wait, and nothing fires
/// while it is not polling. The timer is dropped with the body.
///
/// With `max_body` set, it fails with `ErrorKind::BodyTooLarge` as soon as
/// the limit is passed, or at once when `Content-Length` announces more.
///
/// The connection is released to the pool observer when the body ends,
/// fails, or is dropped. A body dropped before its end is drained in the
/// background to save its HTTP/1 connection (see
/// [`crate::Builder::drain_on_cancel`]); the release is reported when that
/// drain ends.
pub struct HyperBody {
    inner: Option<Incoming>,
    /// The connection the response came over, reported released when the
    /// body is done; `None` only if hyper-util lost its metadata.
    held: Option<Held>,
    host: Arc<HostState>,
    deadline: Option<Instant>,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
    /// When the current wait for the next frame started, if one is running.
    waiting_since: Option<Instant>,
    hint_checked: bool,
}

impl fmt::Debug for HyperBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperBody")
            .field("host", &self.host.key)
            .field("connection", &self.held.as_ref().map(|h| h.conn.id))
            .field("received", &self.received)
            .field("done", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}

impl HyperBody {
    #[inline]
    pub(crate) fn new(
        inner: Incoming,
        held: Option<Held>,
        host: Arc<HostState>,
        deadline: Option<Instant>,
    ) -> Self {
        let mut body = Self {
            inner: Some(inner),
            held,
            host,
            deadline,
            received: 0,
            timer: None,
            waiting_since: None,
            hint_checked: false,
        };
        if body.inner.as_ref().is_some_and(Body::is_end_stream) {
            body.finish();
        }
        body
    }

    /// Bytes of data received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    fn limits(&self) -> Limits {
        Limits {
            read_timeout: self.host.read_timeout,
            deadline: self.deadline,
        }
    }

    /// Ends the stream: drops the inner body and releases the connection.
    fn finish(&mut self) {
        self.inner = None;
        self.timer = None;
        self.held = None;
    }

    fn fail(&mut self, err: HyperError) -> Poll<Option<Result<Frame<Bytes>, HyperError>>> {
        self.finish();
        Poll::Ready(Some(Err(err)))
    }

    fn too_large(&self, limit: u64) -> HyperError {
        HyperError::new(
            ErrorKind::BodyTooLarge { limit },
            &self.host.key,
            true,
            None,
        )
    }

    /// Arms the timer for a wait that starts now, then polls it.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<HyperError> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let (at, phase, limit) = self.limits().wait_from(since);
        match &mut self.timer {
            Some(t) if t.deadline() != at => t.as_mut().reset(at),
            Some(_) => {}
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        let timer = self.timer.as_mut().expect("armed above");
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(HyperError::timeout(phase, &self.host.key, limit, true))
    }
}

impl Drop for HyperBody {
    fn drop(&mut self) {
        // Dropped before its end: the connection may be worth a drain.
        if let Some(inner) = self.inner.take() {
            crate::drain::body(&self.host, inner, self.held.take());
        }
    }
}

impl Body for HyperBody {
    type Data = Bytes;
    type Error = HyperError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HyperError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let max_body = this.host.max_body;
        if !this.hint_checked {
            this.hint_checked = true;
            if let Some(limit) = max_body
                && inner.size_hint().lower() > limit
            {
                let err = this.too_large(limit);
                return this.fail(err);
            }
        }
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting_since = None;
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if let Some(limit) = max_body
                        && this.received > limit
                    {
                        let err = this.too_large(limit);
                        return this.fail(err);
                    }
                }
                if inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let conn = this.held.as_ref().map(|h| &*h.conn);
                // Reading the response broke: the connection's failure.
                let err = failed_in_flight(&this.host, conn, false, Box::new(e));
                this.fail(err)
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => match this.poll_timer(cx) {
                Poll::Ready(err) => this.fail(err),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_the_read_timeout_short_and_names_itself() {
        let now = Instant::now();
        let read = Duration::from_secs(30);
        let free = Limits {
            read_timeout: read,
            deadline: None,
        };
        assert_eq!(free.wait_from(now), (now + read, TimeoutPhase::Read, read));

        let tight = Limits {
            read_timeout: read,
            deadline: Some(now + Duration::from_secs(2)),
        };
        let later = now + Duration::from_millis(500);
        assert_eq!(
            tight.wait_from(later),
            (
                now + Duration::from_secs(2),
                TimeoutPhase::Total,
                Duration::from_millis(1500)
            )
        );

        let loose = Limits {
            read_timeout: read,
            deadline: Some(now + Duration::from_secs(60)),
        };
        assert_eq!(loose.wait_from(now).1, TimeoutPhase::Read);

        let huge = Limits {
            read_timeout: Duration::MAX,
            deadline: None,
        };
        assert!(
            huge.wait_from(now).0 > now,
            "saturates instead of overflowing"
        );
    }
}
