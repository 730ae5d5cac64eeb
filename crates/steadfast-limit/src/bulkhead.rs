//! [`Bulkhead`]: at most N requests in flight, a bounded FIFO queue, a
//! bounded wait. Its limit can be changed at run time (the adaptive layer
//! does).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use steadfast_core::Deadline;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::{ConcurrencyConfig, MAX_IN_FLIGHT_LIMIT};
use crate::error::{RejectReason, Rejected};
use crate::sync::AtomicUsize;

/// A concurrency limit: `max_in_flight` requests at once, up to `max_queue`
/// more waiting (FIFO, on a `tokio::sync::Semaphore`), each for at most
/// `max_queue_wait` (or its deadline, whichever is sooner).
///
/// A [`Permit`] is an owned value: wherever it goes (a response future, a
/// response body), dropping it gives the slot back, so a cancelled request
/// never strands one. A cancelled waiter leaves the queue.
///
/// Cloning a `Bulkhead` gives another handle to the same limit.
///
/// ```
/// use steadfast_limit::{Bulkhead, ConcurrencyConfig, RejectReason};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bulkhead = Bulkhead::new(ConcurrencyConfig::builder().max_in_flight(1).max_queue(0).build()?);
/// let permit = bulkhead.acquire().await?;
/// let refused = bulkhead.acquire().await.unwrap_err();
/// assert_eq!(refused.reason(), RejectReason::QueueFull);
/// drop(permit);
/// assert!(bulkhead.acquire().await.is_ok());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Bulkhead {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Holds the free slots. A granted permit is `forget`-ten at once and
    /// given back by [`Permit`]'s `Drop`, so a permit costs one `Arc` clone
    /// of this struct, not one of the semaphore as well.
    semaphore: Semaphore,
    /// The limit in force; permits above it are forgotten as they return.
    limit: AtomicUsize,
    /// Permits to forget when they come back (after a decrease).
    debt: AtomicUsize,
    queued: AtomicUsize,
    acquired: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
    rejected_full: AtomicU64,
    rejected_timeout: AtomicU64,
    rejected_deadline: AtomicU64,
    config: ConcurrencyConfig,
}

/// A slot of a [`Bulkhead`]; dropping it gives the slot back.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let s = &self.shared;
        // After a decrease, returning permits pay the debt instead.
        let paid = s.debt.load(Ordering::Acquire) > 0 && s.pay_one();
        if !paid {
            s.semaphore.add_permits(1);
            // A decrease may have recorded its debt after the look above,
            // and found no free permit to pay it with: this one pays.
            if s.has_debt() {
                s.settle();
            }
        }
    }
}

impl Shared {
    /// Takes one unit of debt off, if any is left.
    fn pay_one(&self) -> bool {
        self.debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok()
    }

    /// Whether debt is owed, read after freeing a permit. A decrease
    /// records its debt and then looks for free permits; this side frees a
    /// permit and then looks at the debt. Were both looks plain loads,
    /// each could read the other's old value and neither would pay. Both
    /// sides touch the debt with a read-modify-write instead, and those
    /// read the latest value and order the permit with it: whichever comes
    /// second sees the other's doing.
    fn has_debt(&self) -> bool {
        self.debt.fetch_add(0, Ordering::AcqRel) > 0
    }

    /// Pays the debt with free permits while both are there. Every path
    /// that frees a permit or records debt ends here, so once the last of
    /// them returns, a free permit and unpaid debt never stand together
    /// (the bulkhead would admit more than its limit).
    fn settle(&self) {
        while self.debt.load(Ordering::Acquire) > 0 {
            if self.semaphore.forget_permits(1) == 0 {
                // None free: the permits out pay as they come back.
                return;
            }
            if !self.pay_one() {
                // Paid meanwhile by a returning permit: give this one back,
                // and look again (new debt may have come since).
                self.semaphore.add_permits(1);
                if !self.has_debt() {
                    return;
                }
            }
        }
    }
}

impl Bulkhead {
    /// A bulkhead with `config`.
    pub fn new(config: ConcurrencyConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                semaphore: Semaphore::new(config.max_in_flight),
                limit: AtomicUsize::new(config.max_in_flight),
                debt: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                acquired: AtomicU64::new(0),
                waited: AtomicU64::new(0),
                wait_nanos: AtomicU64::new(0),
                rejected_full: AtomicU64::new(0),
                rejected_timeout: AtomicU64::new(0),
                rejected_deadline: AtomicU64::new(0),
                config,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ConcurrencyConfig {
        &self.shared.config
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Relaxed)
    }

    /// Requests holding a permit now (read without locking: exact when
    /// nothing changes at the same moment).
    pub fn in_flight(&self) -> usize {
        let s = &self.shared;
        // Every permit the semaphore was ever given is free, out, or owed.
        let total = s.limit.load(Ordering::Acquire) + s.debt.load(Ordering::Acquire);
        total.saturating_sub(s.semaphore.available_permits())
    }

    /// Changes the limit (clamped to 1 ..= 16 777 216). A decrease takes
    /// effect as permits come back; nothing in flight is interrupted.
    pub fn set_limit(&self, limit: usize) {
        let limit = limit.clamp(1, MAX_IN_FLIGHT_LIMIT);
        let old = self.shared.limit.swap(limit, Ordering::AcqRel);
        let s = &self.shared;
        if limit > old {
            let mut grow = limit - old;
            // Cancel debt first: those permits are still out and will now come back.
            let _ = s
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    let paid = d.min(grow);
                    Some(d - paid)
                })
                .map(|d| grow -= d.min(grow));
            if grow > 0 {
                s.semaphore.add_permits(grow);
                if s.has_debt() {
                    s.settle();
                }
            }
        } else if limit < old {
            // The whole decrease is debt first, then paid with the permits
            // free now; the rest is paid by permits as they come back.
            // (Forgetting first and recording what was left after would
            // let permits that return in between miss the debt.)
            s.debt.fetch_add(old - limit, Ordering::AcqRel);
            s.settle();
        }
    }

    fn grant(&self, permit: SemaphorePermit<'_>) -> Permit {
        permit.forget();
        self.granted()
    }

    /// A permit, its semaphore permit already forgotten.
    fn granted(&self) -> Permit {
        self.shared.acquired.fetch_add(1, Ordering::Relaxed);
        Permit {
            shared: self.shared.clone(),
        }
    }

    /// A permit if one is free now, without queueing.
    pub fn try_acquire(&self) -> Result<Permit, Rejected> {
        match self.shared.semaphore.try_acquire() {
            Ok(p) => Ok(self.grant(p)),
            Err(_) => Err(self.reject(RejectReason::QueueFull, Duration::ZERO)),
        }
    }

    /// Waits for a permit, in FIFO order, for at most `max_queue_wait`.
    /// Cancel-safe: dropping the future leaves the queue.
    pub async fn acquire(&self) -> Result<Permit, Rejected> {
        self.acquire_before(None).await
    }

    /// Like [`Bulkhead::acquire`], but never waits past `deadline`.
    pub async fn acquire_before(&self, deadline: Option<Deadline>) -> Result<Permit, Rejected> {
        let s = &self.shared;
        if let Ok(p) = s.semaphore.try_acquire() {
            return Ok(self.grant(p));
        }
        let start = Instant::now();
        let remaining = deadline.map(|d| d.remaining_at(start));
        if remaining == Some(Duration::ZERO) {
            return Err(self.reject(RejectReason::Deadline, Duration::ZERO));
        }
        let max_queue = s.config.max_queue;
        if s.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < max_queue).then_some(q + 1)
            })
            .is_err()
        {
            return Err(self.reject(RejectReason::QueueFull, Duration::ZERO));
        }
        let _queued = Dequeue(s);
        s.waited.fetch_add(1, Ordering::Relaxed);
        let max_wait = s.config.max_queue_wait;
        let (wait, reason) = match remaining {
            Some(r) if r < max_wait => (r, RejectReason::Deadline),
            _ => (max_wait, RejectReason::QueueTimeout),
        };
        tracing::debug!(
            policy.name = %s.config.name,
            limit.in_flight = self.in_flight(),
            limit.max = self.limit(),
            "bulkhead: all slots taken; queueing"
        );
        let until = start + wait;
        let acquired = loop {
            match tokio::time::timeout_at(until, s.semaphore.acquire()).await {
                Ok(Ok(p)) => {
                    // A permit handed over by a waiter that left (tokio
                    // passes it on without a look at our debt) pays a
                    // decrease's debt first, and this request waits on.
                    p.forget();
                    if s.debt.load(Ordering::Acquire) > 0 && s.pay_one() {
                        continue;
                    }
                    break true;
                }
                // The semaphore is never closed.
                Ok(Err(_)) | Err(_) => break false,
            }
        };
        let waited = start.elapsed();
        s.wait_nanos
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        if acquired {
            Ok(self.granted())
        } else {
            Err(self.reject(reason, waited))
        }
    }

    fn reject(&self, reason: RejectReason, waited: Duration) -> Rejected {
        let s = &self.shared;
        let counter = match reason {
            RejectReason::QueueFull => &s.rejected_full,
            RejectReason::QueueTimeout => &s.rejected_timeout,
            RejectReason::Deadline => &s.rejected_deadline,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let err = Rejected::new(
            reason,
            s.config.name.clone(),
            self.limit(),
            s.config.max_queue,
            waited,
        );
        tracing::info!(
            policy.name = %s.config.name,
            limit.in_flight = self.in_flight(),
            limit.max = self.limit(),
            limit.queued = s.queued.load(Ordering::Relaxed),
            limit.reason = ?reason,
            "bulkhead: request rejected"
        );
        err
    }

    /// Counters and current state; cheap (relaxed atomic loads).
    pub fn snapshot(&self) -> BulkheadSnapshot {
        let s = &self.shared;
        BulkheadSnapshot {
            name: s.config.name.clone(),
            limit: self.limit(),
            in_flight: self.in_flight(),
            queued: s.queued.load(Ordering::Relaxed),
            acquired: s.acquired.load(Ordering::Relaxed),
            waited: s.waited.load(Ordering::Relaxed),
            total_wait: Duration::from_nanos(s.wait_nanos.load(Ordering::Relaxed)),
            rejected_queue_full: s.rejected_full.load(Ordering::Relaxed),
            rejected_queue_timeout: s.rejected_timeout.load(Ordering::Relaxed),
            rejected_deadline: s.rejected_deadline.load(Ordering::Relaxed),
        }
    }
}

/// Leaves the queue when the wait ends, however it ends. Dropped after the
/// semaphore's acquire future: a waiter dropped (or timed out) just after
/// a permit was handed to it gives that permit back to the semaphore, and
/// a decrease may have recorded debt meanwhile, so it settles here.
struct Dequeue<'a>(&'a Shared);

impl Drop for Dequeue<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
        if self.0.has_debt() {
            self.0.settle();
        }
    }
}

/// A point-in-time view of a [`Bulkhead`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkheadSnapshot {
    /// The name.
    pub name: Arc<str>,
    /// The limit in force.
    pub limit: usize,
    /// Requests holding a permit.
    pub in_flight: usize,
    /// Requests waiting for one.
    pub queued: usize,
    /// Permits handed out.
    pub acquired: u64,
    /// Acquisitions that had to queue.
    pub waited: u64,
    /// Time spent queueing, all requests together.
    pub total_wait: Duration,
    /// Refused: all slots and the queue were full.
    pub rejected_queue_full: u64,
    /// Refused: waited `max_queue_wait`.
    pub rejected_queue_timeout: u64,
    /// Refused: the deadline passed while queued.
    pub rejected_deadline: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulkhead(n: usize, queue: usize, wait: Duration) -> Bulkhead {
        Bulkhead::new(
            ConcurrencyConfig::builder()
                .max_in_flight(n)
                .max_queue(queue)
                .max_queue_wait(wait)
                .name("b")
                .build()
                .unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn queue_full_and_queue_timeout() {
        let b = bulkhead(1, 1, Duration::from_millis(100));
        let p = b.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.snapshot().queued, 1);
        let full = b.acquire().await.unwrap_err();
        assert_eq!(full.reason(), RejectReason::QueueFull);
        let timed_out = waiter.await.unwrap().unwrap_err();
        assert_eq!(timed_out.reason(), RejectReason::QueueTimeout);
        assert_eq!(timed_out.waited(), Duration::from_millis(100));
        drop(p);
        let s = b.snapshot();
        assert_eq!(
            (
                s.in_flight,
                s.queued,
                s.acquired,
                s.rejected_queue_full,
                s.rejected_queue_timeout
            ),
            (0, 0, 1, 1, 1)
        );
    }

    /// A permit handed to a queued waiter that is then dropped, unpolled,
    /// goes back to the semaphore; a decrease in between recorded debt
    /// and found nothing free. The waiter's leaving settles the two, so
    /// the limit of one holds.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_dropped_with_a_permit_pays_a_decreases_debt() {
        let b = bulkhead(2, 1, Duration::from_secs(10));
        let (first, second) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.snapshot().queued, 1);
        drop(first); // handed to the waiter, which is not polled again
        b.set_limit(1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(b.in_flight(), 1, "{:?}", b.snapshot());
        assert!(
            b.try_acquire().is_err(),
            "a second permit under a limit of one"
        );
        drop(second);
        assert_eq!(b.in_flight(), 0);
        let one = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        drop(one);
    }

    /// The same with a second waiter queued: the dropped waiter's permit
    /// goes straight to the next one (tokio passes it on), which pays the
    /// debt with it and waits on.
    #[tokio::test(start_paused = true)]
    async fn a_permit_passed_between_waiters_pays_the_debt_first() {
        let b = bulkhead(2, 2, Duration::from_secs(10));
        let (first, second) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        let spawn_waiter = || {
            let b = b.clone();
            tokio::spawn(async move { b.acquire().await })
        };
        let a = spawn_waiter();
        tokio::task::yield_now().await;
        let next = spawn_waiter();
        tokio::task::yield_now().await;
        assert_eq!(b.snapshot().queued, 2);
        drop(first); // handed to `a`
        b.set_limit(1);
        a.abort();
        let _ = a.await;
        tokio::task::yield_now().await;
        assert_eq!(b.in_flight(), 1, "{:?}", b.snapshot());
        // `next` gets the slot when `second` comes back, not before.
        assert!(!next.is_finished());
        drop(second);
        let held = next.await.unwrap().unwrap();
        assert_eq!(b.in_flight(), 1);
        drop(held);
        assert_eq!(b.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_cuts_the_wait_short() {
        let b = bulkhead(1, 10, Duration::from_secs(5));
        let _p = b.acquire().await.unwrap();
        let e = b
            .acquire_before(Some(Deadline::after(Duration::from_millis(30))))
            .await
            .unwrap_err();
        assert_eq!(
            (e.reason(), e.waited()),
            (RejectReason::Deadline, Duration::from_millis(30))
        );
        let e = b
            .acquire_before(Some(Deadline::after(Duration::ZERO)))
            .await
            .unwrap_err();
        assert_eq!(e.reason(), RejectReason::Deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiters_leave_the_queue_and_fifo_holds() {
        let b = bulkhead(1, 10, Duration::from_secs(60));
        let p = b.acquire().await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (b, order) = (b.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = b.acquire().await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }));
            tokio::task::yield_now().await;
        }
        tasks[2].abort();
        tokio::task::yield_now().await;
        assert_eq!(b.snapshot().queued, 4);
        drop(p);
        for t in tasks {
            let _ = t.await;
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 3, 4]);
        assert_eq!(b.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_limit_can_shrink_and_grow_while_permits_are_out() {
        let b = bulkhead(4, 0, Duration::ZERO);
        let held: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
        b.set_limit(2);
        assert_eq!(b.limit(), 2);
        drop(held);
        let again: Vec<_> = std::iter::from_fn(|| b.try_acquire().ok())
            .take(10)
            .collect();
        assert_eq!(again.len(), 2);
        b.set_limit(3);
        assert!(b.try_acquire().is_ok());
        drop(again);
        b.set_limit(1);
        b.set_limit(5);
        let held: Vec<_> = std::iter::from_fn(|| b.try_acquire().ok())
            .take(10)
            .collect();
        assert_eq!(held.len(), 5);
    }
}
