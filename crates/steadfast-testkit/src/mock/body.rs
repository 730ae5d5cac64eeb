//! [`MockBody`]: the response body of the mock, whole, dripping, or breaking.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A response body: whole, streamed in chunks on a schedule, or failing
/// part-way like a connection reset.
///
/// Chunk `k` (counting from 1) of a chunked body becomes available `k ×
/// interval` after the body was created (when the response head was
/// returned), on the `tokio::time` clock: a reader that keeps up sees the
/// exact schedule under paused time; a slow reader finds the overdue
/// chunks waiting, as it would in a socket buffer.
///
/// A failing body yields its first `n` bytes, then a [`MockBodyError`]
/// whose source is an `io::Error` of the scripted kind, so
/// [`ErrorClass::of`](steadfast_core::ErrorClass::of) reports
/// `Reset` for `ConnectionReset` or `UnexpectedEof`. Its
/// [`size_hint`](Body::size_hint) still promises the whole body, as a
/// `Content-Length` would.
///
/// ```
/// use std::time::Duration;
/// use http_body_util::BodyExt;
/// use steadfast_core::ErrorClass;
/// use steadfast_testkit::mock::MockBody;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let body = MockBody::chunked(["ab", "cd"], Duration::from_millis(10));
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "abcd");
///
/// let broken = MockBody::new("abcdef").fail_after(4, std::io::ErrorKind::ConnectionReset);
/// let err = broken.collect().await.unwrap_err();
/// assert_eq!(err.bytes_sent(), 4);
/// assert_eq!(ErrorClass::of(&err), ErrorClass::Reset);
/// # }
/// ```
#[derive(Debug)]
pub struct MockBody {
    chunks: VecDeque<Bytes>,
    interval: Duration,
    started: Instant,
    sent_chunks: u32,
    sent_bytes: usize,
    // Bytes still promised by the size hint; for a failing body this
    // includes the bytes that will never come.
    promised: u64,
    // Fires once the (truncated) chunks run out.
    failure: Option<io::ErrorKind>,
    // Boxed once and reset for each chunk: keeps `MockBody: Unpin`, so
    // `BodyExt::frame` and other `Unpin`-bound readers work on it directly.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl MockBody {
    /// An empty body (end of stream at once).
    pub fn empty() -> Self {
        Self::chunked(std::iter::empty::<Bytes>(), Duration::ZERO)
    }

    /// A body of `bytes`, available at once in one frame.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self::chunked([bytes.into()], Duration::ZERO)
    }

    /// A body streamed as `chunks`, chunk `k` available `k × interval` after
    /// now. Empty chunks are skipped.
    pub fn chunked(chunks: impl IntoIterator<Item = impl Into<Bytes>>, interval: Duration) -> Self {
        let chunks: VecDeque<Bytes> = chunks
            .into_iter()
            .map(Into::into)
            .filter(|c| !c.is_empty())
            .collect();
        let promised = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            chunks,
            interval,
            started: Instant::now(),
            sent_chunks: 0,
            sent_bytes: 0,
            promised,
            failure: None,
            sleep: None,
        }
    }

    /// Makes the body fail with an `io::Error` of `kind` right after its
    /// first `after` bytes (at the end, if it is shorter). Bytes past the cut
    /// are never sent; the schedule of the bytes before it is kept.
    pub fn fail_after(mut self, after: usize, kind: io::ErrorKind) -> Self {
        let mut budget = after;
        let mut keep = 0;
        for chunk in &mut self.chunks {
            if budget == 0 {
                break;
            }
            if chunk.len() > budget {
                chunk.truncate(budget);
            }
            budget -= chunk.len();
            keep += 1;
        }
        self.chunks.truncate(keep);
        self.failure = Some(kind);
        self
    }

    /// When chunk number `n` (from 1) is due.
    fn due(&self, n: u32) -> Instant {
        let offset = self.interval.saturating_mul(n);
        self.started
            .checked_add(offset)
            // Absurd intervals mean "never"; ~30 years is as far as every platform's Instant goes.
            .or_else(|| {
                self.started
                    .checked_add(Duration::from_secs(86_400 * 365 * 30))
            })
            .unwrap_or(self.started)
    }
}

impl Default for MockBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for MockBody {
    fn from(bytes: Bytes) -> Self {
        Self::new(bytes)
    }
}

impl From<&'static str> for MockBody {
    fn from(s: &'static str) -> Self {
        Self::new(s)
    }
}

impl From<String> for MockBody {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<Vec<u8>> for MockBody {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = MockBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, MockBodyError>>> {
        let this = self.get_mut();
        if this.chunks.is_empty() {
            let Some(kind) = this.failure.take() else {
                return Poll::Ready(None);
            };
            this.promised = 0;
            return Poll::Ready(Some(Err(MockBodyError::new(kind, this.sent_bytes))));
        }
        if !this.interval.is_zero() {
            let due = this.due(this.sent_chunks.saturating_add(1));
            if Instant::now() < due {
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if sleep.deadline() != due {
                            sleep.as_mut().reset(due);
                        }
                        sleep
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep_until(due))),
                };
                ready!(sleep.as_mut().poll(cx));
            }
        }
        let Some(chunk) = this.chunks.pop_front() else {
            return Poll::Ready(None);
        };
        this.sent_chunks = this.sent_chunks.saturating_add(1);
        this.sent_bytes += chunk.len();
        this.promised = this.promised.saturating_sub(chunk.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.failure.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.promised)
    }
}

/// A [`MockBody`] failed as scripted, like a connection reset mid-body.
///
/// The [`source`](std::error::Error::source) is the `io::Error`, so
/// [`ErrorClass::of`](steadfast_core::ErrorClass::of) classifies it.
#[derive(Debug, thiserror::Error)]
#[error("mock response body failed after {sent} bytes")]
pub struct MockBodyError {
    sent: usize,
    #[source]
    source: io::Error,
}

impl MockBodyError {
    fn new(kind: io::ErrorKind, sent: usize) -> Self {
        Self {
            sent,
            source: io::Error::new(kind, format!("{kind} (scripted by MockTransport)")),
        }
    }

    /// The scripted `io::ErrorKind`.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// How many bytes the body yielded before it failed.
    pub fn bytes_sent(&self) -> usize {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn failing_cut_splits_the_straddling_chunk() {
        let mut body = MockBody::chunked(["abc", "def", "ghi"], Duration::from_millis(10))
            .fail_after(5, io::ErrorKind::UnexpectedEof);
        assert_eq!(body.size_hint().exact(), Some(9));
        let t0 = Instant::now();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            (first, t0.elapsed()),
            (Bytes::from("abc"), Duration::from_millis(10))
        );
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            (second, t0.elapsed()),
            (Bytes::from("de"), Duration::from_millis(20))
        );
        assert!(!body.is_end_stream());
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(
            (err.kind(), err.bytes_sent()),
            (io::ErrorKind::UnexpectedEof, 5)
        );
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(20),
            "the error follows at once"
        );
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn fail_after_zero_and_past_the_end() {
        let err = MockBody::new("abc")
            .fail_after(0, io::ErrorKind::ConnectionReset)
            .collect()
            .await
            .unwrap_err();
        assert_eq!(err.bytes_sent(), 0);
        let mut body = MockBody::new("abc").fail_after(10, io::ErrorKind::ConnectionReset);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "abc"
        );
        assert_eq!(body.frame().await.unwrap().unwrap_err().bytes_sent(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_finds_overdue_chunks_waiting() {
        let mut body = MockBody::chunked(["a", "b", "c"], Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(25)).await;
        let t0 = Instant::now();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "b"
        );
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "c"
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(5));
        assert!(body.is_end_stream());
    }

    #[test]
    fn empty_chunks_are_skipped_and_hints_are_exact() {
        let body = MockBody::chunked(["", "ab", ""], Duration::ZERO);
        assert_eq!(body.size_hint().exact(), Some(2));
        assert!(!body.is_end_stream());
        assert!(MockBody::empty().is_end_stream());
        assert!(MockBody::new("").is_end_stream());
        assert_eq!(MockBody::default().size_hint().exact(), Some(0));
    }
}
