//! Request bodies that can be sent more than once.
//!
//! A retry or a hedge needs the request again, body included. Buffered
//! bodies (`Full<Bytes>`, `Bytes`, `String`, `Empty`) clone for free; a
//! streamed body is wrapped in [`ReplayBody`], which keeps a copy of what it
//! sends, up to a cap, so a later attempt can send the same bytes again.
//! Past the cap nothing more is kept, and [`try_clone_request`] says
//! clearly that the request cannot be re-sent.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};

/// The default replay buffer: 64 KiB. Typical JSON request bodies fit;
/// uploads do not, and should not be buffered silently.
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// Why a request cannot be sent again.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReplayable {
    /// The body grew past its replay buffer; what was sent is gone.
    #[error(
        "request body is larger than its {cap}-byte replay buffer, so it cannot be re-sent; raise the cap of ReplayBody or send a buffered body"
    )]
    TooLarge {
        /// The buffer size in bytes.
        cap: usize,
    },
    /// The body type is a one-shot stream.
    #[error("request body is a one-shot stream, so it cannot be re-sent; wrap it in ReplayBody")]
    Streaming,
    /// Reading the original body failed, so its bytes are not all known.
    #[error("request body failed while it was being sent, so it cannot be re-sent")]
    SourceFailed,
}

/// A body that can produce a copy of itself for another attempt.
pub trait TryCloneBody: Sized {
    /// A body that yields the same bytes from the start, or why not.
    fn try_clone_body(&self) -> Result<Self, NotReplayable>;
}

macro_rules! clone_body {
    ($($t:ty),* $(,)?) => {$(
        impl TryCloneBody for $t {
            fn try_clone_body(&self) -> Result<Self, NotReplayable> {
                Ok(self.clone())
            }
        }
    )*};
}
clone_body!(Bytes, String, Vec<u8>, &'static str, &'static [u8], ());

impl<D: Buf + Clone> TryCloneBody for http_body_util::Full<D> {
    fn try_clone_body(&self) -> Result<Self, NotReplayable> {
        Ok(self.clone())
    }
}

impl<D> TryCloneBody for http_body_util::Empty<D> {
    fn try_clone_body(&self) -> Result<Self, NotReplayable> {
        Ok(Self::new())
    }
}

/// Copies `req` (method, URI, version, headers, extensions and body) for
/// another attempt, or says why it cannot.
///
/// ```
/// use steadfast_core::replay::try_clone_request;
///
/// let req = http::Request::post("http://api.test/orders")
///     .header("idempotency-key", "k-1")
///     .body(bytes::Bytes::from_static(b"{}"))
///     .unwrap();
/// let again = try_clone_request(&req).unwrap();
/// assert_eq!(again.headers()["idempotency-key"], "k-1");
/// assert_eq!(again.body(), req.body());
/// ```
pub fn try_clone_request<B: TryCloneBody>(req: &Request<B>) -> Result<Request<B>, NotReplayable> {
    let body = req.body().try_clone_body()?;
    let mut out = Request::new(body);
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    *out.extensions_mut() = req.extensions().clone();
    Ok(out)
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// The error of a [`ReplayBody`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The wrapped body failed.
    #[error("request body failed")]
    Body(#[source] BoxError),
    /// This copy fell behind what could be buffered.
    #[error(transparent)]
    NotReplayable(NotReplayable),
}

/// A request body that keeps what it sends (up to a cap) so the request can
/// be sent again.
///
/// Every copy made by [`TryCloneBody::try_clone_body`] yields the same
/// bytes from the start. Copies may be polled one after another (retry) or
/// at the same time (hedging): the one furthest ahead reads the wrapped
/// body, the others replay the buffer and wait for it. Dropping a copy
/// mid-stream (a cancelled attempt) hands the wrapped body to the others.
///
/// Once more than `cap` bytes have gone through, the buffer is dropped and
/// no further copy can be made; the copy that is sending carries on.
///
/// ```
/// use http_body_util::{BodyExt, StreamBody};
/// use steadfast_core::replay::{ReplayBody, TryCloneBody};
///
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let chunks = ["he", "llo"].map(|s| Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(s))));
/// let body = ReplayBody::new(StreamBody::new(futures_util::stream::iter(chunks)), 1024);
/// let again = body.try_clone_body().unwrap();
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
/// assert_eq!(again.collect().await.unwrap().to_bytes(), "hello");
/// # });
/// ```
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// Frames of `Shared::chunks` this copy has yielded, counted from the start of the body.
    pos: usize,
    trailers_sent: bool,
    id: usize,
}

struct Shared<B> {
    source: Option<B>,
    /// Buffered data frames; `chunks[0]` is frame number `dropped`.
    chunks: VecDeque<Bytes>,
    dropped: usize,
    buffered: usize,
    cap: usize,
    overflowed: bool,
    trailers: Option<HeaderMap>,
    done: bool,
    failed: bool,
    hint: SizeHint,
    /// The copy currently reading `source`, if any.
    reader: Option<usize>,
    waiters: Vec<Waker>,
    next_id: usize,
}

impl<B> Shared<B> {
    fn frames_read(&self) -> usize {
        self.dropped + self.chunks.len()
    }

    fn wake_all(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `cap` bytes for replay.
    pub fn new(body: B, cap: usize) -> Self {
        let hint = body.size_hint();
        let shared = Shared {
            source: Some(body),
            chunks: VecDeque::new(),
            dropped: 0,
            buffered: 0,
            cap,
            overflowed: false,
            trailers: None,
            done: false,
            failed: false,
            hint,
            reader: None,
            waiters: Vec::new(),
            next_id: 1,
        };
        Self {
            shared: Arc::new(Mutex::new(shared)),
            pos: 0,
            trailers_sent: false,
            id: 0,
        }
    }

    /// Wraps `body` with the [`DEFAULT_REPLAY_CAP`].
    pub fn with_default_cap(body: B) -> Self {
        Self::new(body, DEFAULT_REPLAY_CAP)
    }
}

impl<B> ReplayBody<B> {
    /// `true` while copies can still be made.
    pub fn is_replayable(&self) -> bool {
        let s = lock(&self.shared);
        !s.overflowed && !s.failed
    }
}

fn lock<B>(m: &Mutex<Shared<B>>) -> MutexGuard<'_, Shared<B>> {
    // A panic while holding the lock leaves only counters and buffers
    // behind, all consistent between statements; keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<B> TryCloneBody for ReplayBody<B> {
    fn try_clone_body(&self) -> Result<Self, NotReplayable> {
        let mut s = lock(&self.shared);
        if s.failed {
            return Err(NotReplayable::SourceFailed);
        }
        if s.overflowed {
            return Err(NotReplayable::TooLarge { cap: s.cap });
        }
        let id = s.next_id;
        s.next_id += 1;
        Ok(Self {
            shared: Arc::clone(&self.shared),
            pos: 0,
            trailers_sent: false,
            id,
        })
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        if s.reader == Some(self.id) {
            s.reader = None;
            s.wake_all();
        }
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.shared);
        f.debug_struct("ReplayBody")
            .field("pos", &self.pos)
            .field("buffered", &s.buffered)
            .field("cap", &s.cap)
            .field("overflowed", &s.overflowed)
            .field("done", &s.done)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ReplayError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let mut s = lock(&this.shared);

        // 1. Replay what is buffered.
        if this.pos < s.frames_read() {
            if this.pos < s.dropped {
                return Poll::Ready(Some(Err(ReplayError::NotReplayable(
                    NotReplayable::TooLarge { cap: s.cap },
                ))));
            }
            let chunk = s.chunks[this.pos - s.dropped].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        // 2. At the end of what the source gave.
        if s.done {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        if s.failed {
            return Poll::Ready(Some(Err(ReplayError::NotReplayable(
                NotReplayable::SourceFailed,
            ))));
        }
        // 3. At the frontier: read the source, unless another copy is.
        match s.reader {
            Some(id) if id != this.id => {
                s.waiters.push(cx.waker().clone());
                return Poll::Pending;
            }
            _ => s.reader = Some(this.id),
        }
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(source).poll_frame(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.done = true;
                s.source = None;
                s.reader = None;
                s.wake_all();
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                s.source = None;
                s.reader = None;
                s.wake_all();
                Poll::Ready(Some(Err(ReplayError::Body(e.into()))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(mut data) => {
                        let bytes = data.copy_to_bytes(data.remaining());
                        s.buffered += bytes.len();
                        if !s.overflowed && s.buffered > s.cap {
                            // Free the buffer at once: nobody can use it any more.
                            s.overflowed = true;
                        }
                        if s.overflowed {
                            s.dropped = s.frames_read() + 1;
                            s.chunks.clear();
                        } else {
                            s.chunks.push_back(bytes.clone());
                        }
                        this.pos += 1;
                        Frame::data(bytes)
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(t) => {
                            s.trailers = Some(t.clone());
                            this.trailers_sent = true;
                            Frame::trailers(t)
                        }
                        // Unknown frame kinds are passed through, not replayed.
                        Err(frame) => frame.map_data(|mut d| d.copy_to_bytes(d.remaining())),
                    },
                };
                s.wake_all();
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.shared);
        s.done && self.pos >= s.frames_read() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let s = lock(&self.shared);
        if s.done && !s.overflowed && s.dropped == 0 {
            let rest: usize = s.chunks.iter().skip(self.pos).map(Bytes::len).sum();
            return SizeHint::with_exact(rest as u64);
        }
        if self.pos == 0 {
            s.hint
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests;
