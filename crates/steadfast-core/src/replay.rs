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
use std::task::{Context, Poll, Wake, Waker};

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
/// bytes from the start, trailers included. Copies may be polled one after
/// another (retry) or at the same time (hedging): whichever copy reaches
/// the end of the buffer reads the wrapped body, and every copy waiting
/// there is woken when it yields, so a stalled copy never blocks the
/// others. Dropping a copy mid-stream (a cancelled attempt) loses nothing.
///
/// Once more than `cap` bytes have gone through, the buffer is dropped and
/// no further copy can be made; the copy that is sending carries on, and a
/// copy that had fallen behind fails with [`NotReplayable::TooLarge`].
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
    /// Data frames this copy has yielded, counted from the start of the body.
    pos: usize,
    trailers_sent: bool,
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
    /// The waker the source is polled with: it wakes every copy waiting at
    /// the end of the buffer, whichever copy polled last.
    source_waker: Waker,
    waiting: Arc<WakeAll>,
}

impl<B> Shared<B> {
    fn frames_read(&self) -> usize {
        self.dropped + self.chunks.len()
    }

    fn finish(&mut self) {
        self.done = true;
        self.source = None;
    }
}

/// The wakers of the copies waiting for the source.
#[derive(Default)]
struct WakeAll {
    wakers: Mutex<Vec<Waker>>,
}

impl WakeAll {
    fn register(&self, waker: &Waker) {
        let mut wakers = self
            .wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }
}

impl Wake for WakeAll {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = std::mem::take(
            &mut *self
                .wakers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for w in wakers {
            w.wake();
        }
    }
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `cap` bytes for replay.
    pub fn new(body: B, cap: usize) -> Self {
        let hint = body.size_hint();
        let waiting = Arc::new(WakeAll::default());
        // An empty body (`Empty`, an empty `Full`) has ended before it starts.
        let done = body.is_end_stream();
        let shared = Shared {
            source: (!done).then_some(body),
            chunks: VecDeque::new(),
            dropped: 0,
            buffered: 0,
            cap,
            overflowed: false,
            trailers: None,
            done,
            failed: false,
            hint,
            source_waker: Waker::from(Arc::clone(&waiting)),
            waiting,
        };
        Self {
            shared: Arc::new(Mutex::new(shared)),
            pos: 0,
            trailers_sent: false,
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
        let s = lock(&self.shared);
        if s.failed {
            return Err(NotReplayable::SourceFailed);
        }
        if s.overflowed {
            return Err(NotReplayable::TooLarge { cap: s.cap });
        }
        Ok(Self {
            shared: Arc::clone(&self.shared),
            pos: 0,
            trailers_sent: false,
        })
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
        let mut guard = lock(&this.shared);
        let s = &mut *guard;

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
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        // 3. At the frontier: read the source on behalf of every waiting copy.
        s.waiting.register(cx.waker());
        let polled = Pin::new(source).poll_frame(&mut Context::from_waker(&s.source_waker));
        let out = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                s.finish();
                this.trailers_sent = true;
                None
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                s.source = None;
                Some(Err(ReplayError::Body(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => Some(Ok(match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    s.buffered += bytes.len();
                    if s.buffered > s.cap {
                        // Free the buffer at once: nobody can use it any more.
                        s.overflowed = true;
                        s.dropped = s.frames_read() + 1;
                        s.chunks.clear();
                    } else {
                        s.chunks.push_back(bytes.clone());
                    }
                    this.pos += 1;
                    // A source that knows it has ended (a `Full` after its
                    // one frame) ends every copy here: hyper then ends the
                    // request with this frame, not with an empty one.
                    if s.source.as_ref().is_some_and(Body::is_end_stream) {
                        s.finish();
                        this.trailers_sent = true;
                    }
                    Frame::data(bytes)
                }
                Err(frame) => match frame.into_trailers() {
                    // Trailers end a body: no need to poll the source again.
                    Ok(t) => {
                        s.trailers = Some(t.clone());
                        s.finish();
                        this.trailers_sent = true;
                        Frame::trailers(t)
                    }
                    // Unknown frame kinds are passed through, not replayed.
                    Err(frame) => frame.map_data(|mut d| d.copy_to_bytes(d.remaining())),
                },
            })),
        };
        // Copies waiting at the frontier can now replay (or see the end).
        s.waiting.wake_by_ref();
        Poll::Ready(out)
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
