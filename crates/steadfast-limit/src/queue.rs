//! The fair wait queue behind `until_ready`.
//!
//! Waiters line up FIFO; only the one at the front looks at the limiter and,
//! when refused, sleeps until the earliest instant it could pass. When it
//! leaves (admitted or cancelled) it wakes exactly the next one. So a refill
//! wakes one task, not all of them, admission order is arrival order, and a
//! cancelled waiter, which never took a token, just steps out of line.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::state::Epoch;

#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    /// Mirrors `entries.len()` so the lock-free fast path can see waiters.
    len: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Sorted by id: ids grow and removal keeps the order.
    entries: VecDeque<Slot>,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    waker: Option<Waker>,
}

impl WaitQueue {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Waiters in line (a relaxed read: a hint for the fast path).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held; a poisoned queue is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins at the back. Returns the ticket and how many are ahead.
    pub(crate) fn join(&self) -> (u64, usize) {
        let mut q = self.lock();
        let id = q.next_id;
        q.next_id += 1;
        let ahead = q.entries.len();
        q.entries.push_back(Slot { id, waker: None });
        self.len.store(q.entries.len(), Ordering::Relaxed);
        (id, ahead)
    }

    /// Ready once `id` is at the front; otherwise remembers the waker.
    pub(crate) fn poll_front(&self, id: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut q = self.lock();
        if q.entries.front().is_some_and(|s| s.id == id) {
            return Poll::Ready(());
        }
        if let Ok(i) = q.entries.binary_search_by_key(&id, |s| s.id) {
            let slot = &mut q.entries[i].waker;
            match slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }

    /// Leaves the line; if `id` was at the front, wakes the next waiter.
    pub(crate) fn leave(&self, id: u64) {
        let next = {
            let mut q = self.lock();
            let Ok(i) = q.entries.binary_search_by_key(&id, |s| s.id) else {
                return;
            };
            q.entries.remove(i);
            self.len.store(q.entries.len(), Ordering::Relaxed);
            if i == 0 {
                q.entries.front_mut().and_then(|s| s.waker.take())
            } else {
                None
            }
        };
        if let Some(w) = next {
            w.wake();
        }
    }
}

/// A place in line; leaving it (on admission, error or cancellation) is
/// its `Drop`, so no path forgets to wake the next waiter.
struct Ticket<'a> {
    queue: &'a WaitQueue,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.queue.leave(self.id);
    }
}

/// Waits in `queue` as ticket `id` (from [`WaitQueue::join`]) until
/// `attempt(now)` admits at the front of the line.
///
/// `attempt` returns `Err(earliest)` to refuse; the front waiter then sleeps
/// until `earliest`, or gives up at once with `Err(earliest)` when that is
/// at or past `deadline` (all in nanoseconds since `epoch`). The ticket is
/// released on every exit, cancellation included.
pub(crate) async fn wait_turn(
    queue: &WaitQueue,
    id: u64,
    epoch: &Epoch,
    deadline: Option<u64>,
    mut attempt: impl FnMut(u64) -> Result<(), u64>,
) -> Result<(), u64> {
    let _ticket = Ticket { queue, id };
    loop {
        std::future::poll_fn(|cx| queue.poll_front(id, cx)).await;
        let now = epoch.now_nanos();
        match attempt(now) {
            Ok(()) => return Ok(()),
            Err(earliest) if deadline.is_some_and(|d| earliest >= d) => return Err(earliest),
            Err(earliest) => tokio::time::sleep_until(epoch.instant(earliest)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn only_the_new_front_is_woken() {
        let q = WaitQueue::new();
        let counters: Vec<_> = (0..4)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let ids: Vec<_> = (0..4).map(|_| q.join().0).collect();
        assert_eq!(q.len(), 4);
        for (id, c) in ids.iter().zip(&counters) {
            let waker = Waker::from(c.clone());
            let ready = q.poll_front(*id, &mut Context::from_waker(&waker));
            assert_eq!(ready.is_ready(), *id == ids[0]);
        }
        // A cancelled waiter in the middle wakes nobody.
        q.leave(ids[2]);
        assert!(counters.iter().all(|c| c.0.load(Ordering::SeqCst) == 0));
        // The front leaving wakes the next one only.
        q.leave(ids[0]);
        let woken: Vec<_> = counters
            .iter()
            .map(|c| c.0.load(Ordering::SeqCst))
            .collect();
        assert_eq!(woken, [0, 1, 0, 0]);
        q.leave(ids[1]);
        let woken: Vec<_> = counters
            .iter()
            .map(|c| c.0.load(Ordering::SeqCst))
            .collect();
        assert_eq!(woken, [0, 1, 0, 1]);
        assert_eq!(q.len(), 1);
        q.leave(ids[3]);
        q.leave(ids[3]); // idempotent
        assert_eq!(q.len(), 0);
    }
}
