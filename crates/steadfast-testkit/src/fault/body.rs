//! Response bodies: small buffered ones, and pattern streams that can drip,
//! stop short of their `Content-Length`, or cut the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Version;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use super::conn::ConnShared;
use super::pattern::fill_pattern;

/// How long an HTTP/2 body waits before cutting its stream. HTTP/1 bodies
/// wait for the flush instead (see [`Barrier`]); HTTP/2 multiplexes
/// streams over one flush, so a short pause stands in for it there.
const H2_CUT_DELAY: Duration = Duration::from_millis(50);

/// The body of every response the server sends.
#[derive(Debug)]
pub(crate) struct FaultBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Pattern(Box<PatternBody>),
}

/// The error a body yields to make hyper abort the response.
#[derive(Debug, thiserror::Error)]
#[error("FaultServer cut the response on purpose")]
pub(crate) struct CutOnPurpose;

impl FaultBody {
    pub(crate) const fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }
}

impl From<PatternBody> for FaultBody {
    fn from(p: PatternBody) -> Self {
        Self {
            kind: Kind::Pattern(Box::new(p)),
        }
    }
}

impl http_body::Body for FaultBody {
    type Data = Bytes;
    type Error = CutOnPurpose;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CutOnPurpose>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Pattern(p) => p.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Pattern(p) => p.done || p.declared_end == p.pos && p.cut.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Pattern(p) if p.done => SizeHint::with_exact(0),
            Kind::Pattern(p) => SizeHint::with_exact(p.declared_end - p.pos),
        }
    }
}

/// A slice of the deterministic pattern, produced chunk by chunk so memory
/// stays constant whatever the length.
#[derive(Debug)]
pub(crate) struct PatternBody {
    /// Absolute pattern offset of the next byte.
    pos: u64,
    /// Where sending stops; less than `declared_end` when the body is cut.
    stop: u64,
    /// Where the body would end according to its `Content-Length`.
    declared_end: u64,
    chunk: u64,
    interval: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    cut: Option<Cut>,
    done: bool,
}

/// How a body that stops short of its `Content-Length` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CutKind {
    /// End the body early: hyper closes the connection (FIN) because the
    /// message is incomplete.
    Close,
    /// Fail the body: hyper aborts the connection and, when the socket was
    /// marked for it, the close is a TCP reset.
    Abort,
}

#[derive(Debug)]
struct Cut {
    kind: CutKind,
    barrier: Barrier,
}

/// Waits until what was sent before the cut has left the process.
#[derive(Debug)]
pub(crate) enum Barrier {
    /// HTTP/1: the next flush of the connection's IO after the last chunk.
    Flush {
        conn: Arc<ConnShared>,
        seen: Option<u64>,
    },
    /// HTTP/2: a short pause.
    Delay(Option<Pin<Box<Sleep>>>),
}

impl Barrier {
    pub(crate) fn for_request(version: Version, conn: &Arc<ConnShared>) -> Self {
        if version == Version::HTTP_2 {
            Self::Delay(None)
        } else {
            Self::Flush {
                conn: Arc::clone(conn),
                seen: None,
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Self::Flush { conn, seen } => {
                // Register first, then read the count, so a flush on another
                // thread between the two cannot be missed.
                conn.wake_on_flush(cx);
                let now = conn.flushes();
                match *seen {
                    Some(before) if now > before => Poll::Ready(()),
                    Some(_) => Poll::Pending,
                    None => {
                        *seen = Some(now);
                        Poll::Pending
                    }
                }
            }
            Self::Delay(sleep) => sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(H2_CUT_DELAY)))
                .as_mut()
                .poll(cx),
        }
    }
}

impl PatternBody {
    /// `len` bytes of the pattern starting at absolute offset `start`.
    pub(crate) const fn new(start: u64, len: u64, chunk: u64) -> Self {
        Self {
            pos: start,
            stop: start.saturating_add(len),
            declared_end: start.saturating_add(len),
            chunk,
            interval: None,
            sleep: None,
            cut: None,
            done: false,
        }
    }

    /// Waits `interval` before each chunk.
    pub(crate) fn interval(mut self, interval: Duration) -> Self {
        self.interval = (!interval.is_zero()).then_some(interval);
        self
    }

    /// Sends only the first `sent` bytes, then ends as `kind` says once
    /// `barrier` lets it. A `sent` at or past the length cuts nothing.
    pub(crate) fn cut_after(mut self, sent: u64, kind: CutKind, barrier: Barrier) -> Self {
        let stop = self.pos.saturating_add(sent);
        if stop < self.declared_end {
            self.stop = stop;
            self.cut = Some(Cut { kind, barrier });
        }
        self
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CutOnPurpose>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.pos < self.stop {
            if let Some(interval) = self.interval {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            let n = self.chunk.min(self.stop - self.pos) as usize;
            let mut buf = BytesMut::zeroed(n);
            fill_pattern(self.pos, &mut buf);
            self.pos += n as u64;
            return Poll::Ready(Some(Ok(Frame::data(buf.freeze()))));
        }
        let Some(cut) = &mut self.cut else {
            self.done = true;
            return Poll::Ready(None);
        };
        ready!(cut.barrier.poll(cx));
        self.done = true;
        match cut.kind {
            CutKind::Close => Poll::Ready(None),
            CutKind::Abort => Poll::Ready(Some(Err(CutOnPurpose))),
        }
    }
}
