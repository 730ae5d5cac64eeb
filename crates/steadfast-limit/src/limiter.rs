//! [`RateLimiter`]: one GCRA, lock-free on the fast path, with fair waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use steadfast_core::Deadline;
use tokio::time::Instant;

use crate::queue::{WaitQueue, wait_turn};
use crate::state::{Clock, Epoch, Gcra, NotUntil};
use crate::{Quota, names, sync};

/// A rate limiter for one stream of requests (a "direct" limiter): GCRA with
/// its state in one `AtomicU64`.
///
/// - [`RateLimiter::check`] never blocks: it admits the request or says
///   when to retry ([`NotUntil`]).
/// - [`RateLimiter::until_ready`] waits its turn. Waiters are served FIFO;
///   only the first in line sleeps on a timer, and each admission wakes the
///   next, so a refill wakes one task, not all of them. Dropping the future
///   (a timeout, `select!`, an aborted task) takes the waiter out of line
///   without consuming anything.
/// - `check` does not jump the line: while tasks wait, it refuses.
///
/// Time comes from [`tokio::time::Instant`] as nanoseconds since the
/// instant the limiter was built; [`RateLimiter::check_at`] is the pure form
/// that takes that number as an argument.
///
/// ```
/// use std::num::NonZeroU32;
/// use steadfast_limit::{Quota, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::new(Quota::per_second(NonZeroU32::new(2).unwrap()));
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_ok());
/// let not_until = limiter.check().unwrap_err();
/// assert!(not_until.wait() <= std::time::Duration::from_millis(500));
///
/// limiter.until_ready().await; // half a second (of paused time, here)
/// # }
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    /// The theoretical arrival time, nanoseconds since `epoch`.
    tat: sync::AtomicU64,
    gcra: Gcra,
    epoch: Epoch,
    waiters: WaitQueue,
    counters: Counters,
    quota: Quota,
    name: Arc<str>,
}

#[derive(Debug, Default)]
struct Counters {
    refused: AtomicU64,
    queued: AtomicU64,
    wait_nanos: AtomicU64,
    deadline_refusals: AtomicU64,
}

impl RateLimiter {
    /// A limiter holding `quota`, starting with a full burst.
    pub fn new(quota: Quota) -> Self {
        Self {
            tat: sync::AtomicU64::new(0),
            gcra: Gcra::new(quota),
            epoch: Epoch::now(),
            waiters: WaitQueue::new(),
            counters: Counters::default(),
            quota,
            name: Arc::from(names::RATE_LIMIT),
        }
    }

    /// Names this limiter in its tracing events and snapshots.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Reads the time from `clock` (default [`Clock::Tokio`]). Restarts the
    /// epoch; call it before using the limiter.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.epoch = Epoch::with_clock(clock);
        self
    }

    /// The name given with [`RateLimiter::with_name`] (default `"rate_limit"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The quota.
    pub const fn quota(&self) -> Quota {
        self.quota
    }

    /// Nanoseconds from this limiter's epoch (its creation) to `at`, the
    /// time unit of [`RateLimiter::check_at`].
    pub fn nanos_since_epoch(&self, at: Instant) -> u64 {
        self.epoch.nanos(at)
    }

    /// Takes one token now, or says when one will be there.
    #[inline]
    pub fn check(&self) -> Result<(), NotUntil> {
        self.check_at(self.epoch.now_nanos())
    }

    /// Takes one token at `now` (nanoseconds since the epoch, see
    /// [`RateLimiter::nanos_since_epoch`]), or says when one will be there.
    ///
    /// Refuses while tasks wait in [`RateLimiter::until_ready`], so they are
    /// not overtaken.
    #[inline]
    pub fn check_at(&self, now: u64) -> Result<(), NotUntil> {
        let ahead = self.waiters.len();
        let result = if ahead == 0 {
            self.take(now)
        } else {
            let tat = self.tat.load(Ordering::Relaxed);
            Err(self
                .gcra
                .earliest(tat, now)
                .saturating_add(self.gcra.interval().saturating_mul(ahead as u64)))
        };
        result.map_err(|earliest| {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            self.epoch.not_until(now, earliest)
        })
    }

    /// The GCRA compare-and-swap loop.
    #[inline]
    fn take(&self, now: u64) -> Result<(), u64> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = self.gcra.decide(tat, now)?;
            // Relaxed is enough: the TAT guards no other memory, and all
            // operations on one atomic are totally ordered.
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                // No counter here: an extra atomic add would cost the fast
                // path a third of its time. Refusals and waits are counted.
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Waits for a token, in line behind earlier waiters.
    ///
    /// Cancel-safe: dropping the future before it completes consumes
    /// nothing and lets the next waiter move up.
    pub async fn until_ready(&self) {
        // Without a deadline the wait cannot fail.
        let _ = self.wait(None).await;
    }

    /// Like [`RateLimiter::until_ready`], but fails at once, without waiting,
    /// when the token would come at or after `deadline`. The error tells the
    /// earliest instant a token could come.
    pub async fn until_ready_before(&self, deadline: Deadline) -> Result<(), NotUntil> {
        self.wait(Some(deadline)).await.map(drop)
    }

    /// Waits for a token; returns how long it waited.
    pub(crate) async fn wait(&self, deadline: Option<Deadline>) -> Result<Duration, NotUntil> {
        let start = Instant::now();
        let now = self.epoch.now_nanos();
        let limit = deadline.map(|d| self.epoch.nanos(d.instant()));
        if self.waiters.len() == 0 {
            match self.take(now) {
                Ok(()) => return Ok(Duration::ZERO),
                Err(earliest) if limit.is_some_and(|l| earliest >= l) => {
                    return Err(self.deadline_refusal(now, earliest));
                }
                Err(_) => {}
            }
        }
        let (id, ahead) = self.waiters.join();
        let estimate = self
            .gcra
            .earliest(self.tat.load(Ordering::Relaxed), now)
            .saturating_add(self.gcra.interval().saturating_mul(ahead as u64));
        if limit.is_some_and(|l| estimate >= l) {
            self.waiters.leave(id);
            return Err(self.deadline_refusal(now, estimate));
        }
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            policy.name = %self.name,
            limit.waiters_ahead = ahead,
            limit.wait_ms = Duration::from_nanos(estimate - now).as_millis() as u64,
            "rate limit: waiting for a token"
        );
        let result = wait_turn(&self.waiters, id, &self.epoch, limit, |now| self.take(now)).await;
        let waited = start.elapsed();
        self.counters
            .wait_nanos
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => Ok(waited),
            Err(earliest) => Err(self.deadline_refusal(self.epoch.now_nanos(), earliest)),
        }
    }

    fn deadline_refusal(&self, now: u64, earliest: u64) -> NotUntil {
        self.counters
            .deadline_refusals
            .fetch_add(1, Ordering::Relaxed);
        let refusal = self.epoch.not_until(now, earliest);
        tracing::debug!(
            policy.name = %self.name,
            limit.wait_ms = refusal.wait().as_millis() as u64,
            "rate limit: the next token comes after the request's deadline; failing now"
        );
        refusal
    }

    /// Tokens available right now (the burst left).
    pub fn available(&self) -> u64 {
        self.gcra
            .available(self.tat.load(Ordering::Relaxed), self.epoch.now_nanos())
    }

    /// Counters and current state; cheap (a few relaxed atomic loads).
    pub fn snapshot(&self) -> RateLimiterSnapshot {
        RateLimiterSnapshot {
            name: self.name.clone(),
            rate_per_second: self.quota.rate_per_second(),
            burst: self.quota.burst_size().get(),
            available: self.available(),
            refused: self.counters.refused.load(Ordering::Relaxed),
            queued: self.counters.queued.load(Ordering::Relaxed),
            waiting: self.waiters.len(),
            total_wait: Duration::from_nanos(self.counters.wait_nanos.load(Ordering::Relaxed)),
            deadline_refusals: self.counters.deadline_refusals.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time view of a [`RateLimiter`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimiterSnapshot {
    /// The limiter's name.
    pub name: Arc<str>,
    /// The sustained rate of the quota, requests per second.
    pub rate_per_second: f64,
    /// The burst of the quota.
    pub burst: u32,
    /// Tokens available now.
    pub available: u64,
    /// `check` calls refused.
    pub refused: u64,
    /// Waits that had to queue (not admitted at once).
    pub queued: u64,
    /// Tasks in line right now.
    pub waiting: usize,
    /// Time spent waiting in line, all waiters together.
    pub total_wait: Duration,
    /// Waits refused at once because the token would come after the deadline.
    pub deadline_refusals: u64,
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn limiter(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(
            Quota::per_second(NonZeroU32::new(rate).unwrap())
                .burst(NonZeroU32::new(burst).unwrap()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn check_admits_the_burst_then_says_when() {
        let l = limiter(10, 3).with_name("api");
        for _ in 0..3 {
            l.check().unwrap();
        }
        let nu = l.check().unwrap_err();
        assert_eq!(nu.wait(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        l.check().unwrap();
        let s = l.snapshot();
        assert_eq!((s.refused, s.available, s.waiting), (1, 0, 0));
        assert_eq!(&*s.name, "api");
    }

    #[tokio::test(start_paused = true)]
    async fn until_ready_waits_exactly_one_interval() {
        let l = limiter(20, 1);
        l.until_ready().await;
        let t0 = Instant::now();
        l.until_ready().await;
        assert_eq!(t0.elapsed(), Duration::from_millis(50));
        assert_eq!(l.snapshot().queued, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn check_does_not_overtake_waiters() {
        let l = Arc::new(limiter(10, 1));
        l.check().unwrap();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.until_ready().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(l.snapshot().waiting, 1);
        tokio::time::advance(Duration::from_millis(100)).await;
        // The token is there, but it is the waiter's.
        let nu = l.check().unwrap_err();
        assert_eq!(nu.wait(), Duration::from_millis(100));
        waiter.await.unwrap();
        assert_eq!(l.snapshot().waiting, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_fails_at_once() {
        let l = limiter(1, 1);
        l.check().unwrap();
        let t0 = Instant::now();
        let err = l
            .until_ready_before(Deadline::after(Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(err.wait(), Duration::from_secs(1));
        l.until_ready_before(Deadline::after(Duration::from_millis(1001)))
            .await
            .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(l.snapshot().deadline_refusals, 1);
    }
}
