//! In-flight page requests, polled together and handed out in the order
//! they were sent.
//!
//! A hand-rolled ordered queue rather than `FuturesOrdered`: prefetch is
//! bounded by [`MAX_PREFETCH`](crate::MAX_PREFETCH), so polling every
//! request on each wake-up costs less than the per-request task allocation
//! and waker bookkeeping of a general-purpose set, and the common case (one
//! request in flight) is a single poll.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

type BoxFuture<O> = Pin<Box<dyn Future<Output = O> + Send>>;

enum Slot<O> {
    Running(BoxFuture<O>),
    /// Boxed: an output waits here only with prefetch, when its request
    /// finished on the poll in `push` or before an earlier one. Over a
    /// network neither is common (an in-memory transport does the first
    /// every time), and a pointer-sized slot keeps pushing and popping the
    /// running ones cheap.
    Done(Box<O>),
}

pub(crate) struct Pipeline<O> {
    slots: VecDeque<Slot<O>>,
}

impl<O> Pipeline<O> {
    pub(crate) const fn new() -> Self {
        Self {
            slots: VecDeque::new(),
        }
    }

    /// Queues a request. With `cx`, it is also polled once right away, so
    /// it starts (and registers the waker) while the consumer works on the
    /// page before it; without, it starts at the next
    /// [`poll_next`](Self::poll_next).
    pub(crate) fn push(&mut self, mut future: BoxFuture<O>, cx: Option<&mut Context<'_>>) {
        let slot = match cx.map(|cx| future.as_mut().poll(cx)) {
            Some(Poll::Ready(out)) => Slot::Done(Box::new(out)),
            _ => Slot::Running(future),
        };
        self.slots.push_back(slot);
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Drops (cancels) every request in flight.
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
    }

    /// Polls every running request; yields the oldest once it is done.
    /// `Ready(None)` when nothing is in flight.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<O>> {
        // The oldest request finishing is the common case (the only one,
        // with `prefetch(1)`): its output goes straight out rather than
        // through its slot, which saves moving a whole page twice.
        let oldest = match self.slots.front_mut() {
            Some(Slot::Running(future)) => future.as_mut().poll(cx),
            _ => Poll::Pending,
        };
        for slot in self.slots.iter_mut().skip(1) {
            if let Slot::Running(future) = slot
                && let Poll::Ready(out) = future.as_mut().poll(cx)
            {
                *slot = Slot::Done(Box::new(out));
            }
        }
        if let Poll::Ready(out) = oldest {
            self.slots.pop_front();
            return Poll::Ready(Some(out));
        }
        match self.slots.front() {
            None => Poll::Ready(None),
            Some(Slot::Running(_)) => Poll::Pending,
            Some(Slot::Done(_)) => match self.slots.pop_front() {
                Some(Slot::Done(out)) => Poll::Ready(Some(*out)),
                _ => unreachable!("the front slot was just seen done"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn after(ms: u64, out: u32) -> BoxFuture<u32> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            out
        })
    }

    #[tokio::test(start_paused = true)]
    async fn yields_in_push_order_whatever_the_completion_order() {
        let mut p = Pipeline::new();
        p.push(after(30, 1), None);
        p.push(after(10, 2), None);
        p.push(after(20, 3), None);
        let start = tokio::time::Instant::now();
        let mut got = Vec::new();
        while let Some(out) = std::future::poll_fn(|cx| p.poll_next(cx)).await {
            got.push(out);
        }
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(30),
            "they ran concurrently"
        );
        assert_eq!(p.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn clear_cancels_what_is_in_flight() {
        let mut p = Pipeline::new();
        p.push(after(10, 1), None);
        p.clear();
        assert_eq!(std::future::poll_fn(|cx| p.poll_next(cx)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_pushed_with_a_context_starts_at_once() {
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&started);
        let mut p = Pipeline::new();
        std::future::poll_fn(|cx| {
            let flag = std::sync::Arc::clone(&flag);
            p.push(
                Box::pin(async move {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    7
                }),
                Some(cx),
            );
            Poll::Ready(())
        })
        .await;
        assert!(started.load(std::sync::atomic::Ordering::SeqCst));
        assert!(
            matches!(p.slots.front(), Some(Slot::Done(out)) if **out == 7),
            "parked"
        );
        p.push(after(5, 8), None);
        assert!(matches!(p.slots.back(), Some(Slot::Running(_))), "lazy");
        assert_eq!(std::future::poll_fn(|cx| p.poll_next(cx)).await, Some(7));
        assert_eq!(std::future::poll_fn(|cx| p.poll_next(cx)).await, Some(8));
    }
}
