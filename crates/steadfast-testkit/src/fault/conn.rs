//! One accepted connection: its IO wrapper (byte counting, flush
//! notification, reset on close) and the state its requests share.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::server::Shared;

/// What the requests of one connection share with its IO.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub(crate) id: u64,
    /// Send a TCP RST instead of a FIN when the socket is dropped.
    reset_on_close: AtomicBool,
    /// How many times the IO was flushed with hyper's write buffer empty.
    flushes: AtomicU64,
    flush_waiter: Mutex<Option<Waker>>,
}

impl ConnShared {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            reset_on_close: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            flush_waiter: Mutex::new(None),
        }
    }

    pub(crate) fn reset_on_close(&self) {
        self.reset_on_close.store(true, Ordering::Relaxed);
    }

    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Acquire)
    }

    /// Wakes `cx` at the next completed flush.
    pub(crate) fn wake_on_flush(&self, cx: &Context<'_>) {
        *self
            .flush_waiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
    }

    fn flushed(&self) {
        self.flushes.fetch_add(1, Ordering::Release);
        let waiter = self
            .flush_waiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

/// The accepted socket as hyper sees it.
///
/// hyper calls `poll_flush` on its IO only once its own write buffer is
/// empty, so a completed flush tells a body that everything it produced so
/// far is in the kernel. That is what lets `/reset`, `/truncated` and
/// `fail_at` cut a connection after exactly the bytes they meant to send.
#[derive(Debug)]
pub(crate) struct ConnIo {
    stream: TcpStream,
    conn: Arc<ConnShared>,
    shared: Arc<Shared>,
}

impl ConnIo {
    pub(crate) fn new(stream: TcpStream, conn: Arc<ConnShared>, shared: Arc<Shared>) -> Self {
        Self {
            stream,
            conn,
            shared,
        }
    }

    fn sent(&self, n: usize) {
        self.shared.counters.bytes_sent(n);
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.conn.reset_on_close.load(Ordering::Relaxed) {
            // A zero linger makes close() send RST and discard unsent data.
            // Unlike a non-zero linger it never blocks the thread.
            let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        }
        self.shared.counters.connection_closed();
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.sent(n);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            self.sent(n);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.stream).poll_flush(cx);
        if let Poll::Ready(Ok(())) = res {
            self.conn.flushed();
        }
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
