//! [`retry`]: retries any async operation along a schedule, no HTTP needed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Response;
use steadfast_core::{Deadline, TimeoutError};
use tokio::time::{Instant, Sleep, Timeout};
use tracing::Span;

use crate::layer::Attempt;

/// `now + d`, or about 30 years from now when that would overflow (as
/// [`Deadline::after_from`]): `Duration::MAX` means "never", not a panic.
pub(crate) fn instant_after(now: Instant, d: Duration) -> Instant {
    Deadline::after_from(now, d).instant()
}

/// Runs `op`, and runs it again after each delay of `schedule` while it
/// fails with an error `should_retry` accepts. Resolves to the first
/// success, or to the last error.
///
/// The schedule is any `IntoIterator<Item = Duration>`: a
/// [`Backoff`](crate::Backoff), a curve from [`crate::schedule`], a `Vec`.
/// It is turned into its iterator only when a first attempt fails, so a
/// success pays nothing for it (a [`Backoff`](crate::Backoff) seeds its
/// jitter then). Sleeping uses `tokio::time`, so paused-time tests run
/// instantly.
///
/// ```
/// use std::time::Duration;
/// use steadfast_backoff::retry;
/// use steadfast_backoff::schedule::{Exponential, ScheduleExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut calls = 0;
/// let value = retry(
///     || {
///         calls += 1;
///         let n = calls;
///         async move { if n < 3 { Err("busy") } else { Ok(n) } }
///     },
///     Exponential::new(Duration::from_millis(100)).full_jitter().take(4),
///     |e: &&str| *e == "busy",
/// )
/// .notify(|attempt, delay, e| println!("attempt {attempt} failed ({e}); retrying in {delay:?}"))
/// .await;
/// assert_eq!(value, Ok(3));
/// # }
/// ```
pub fn retry<Op, Fut, T, E, S, P>(
    op: Op,
    schedule: S,
    should_retry: P,
) -> Retrying<Op, Fut, S, P, NoNotify<E>>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    S: IntoIterator<Item = Duration>,
    P: FnMut(&E) -> bool,
{
    Retrying {
        op,
        schedule: Lazy::Pending(schedule),
        should_retry,
        notify: |_, _, _| {},
        deadline: None,
        attempt: 0,
        state: State::Idle,
    }
}

/// The notification of a [`Retrying`] until [`Retrying::notify`] sets one: nothing.
pub type NoNotify<E> = fn(u32, Duration, &E);

pin_project_lite::pin_project! {
    /// The future returned by [`retry`]; `S` is the schedule as given
    /// (an `IntoIterator`).
    #[must_use = "futures do nothing unless polled"]
    pub struct Retrying<Op, Fut, S: IntoIterator, P, N> {
        op: Op,
        schedule: Lazy<S>,
        should_retry: P,
        notify: N,
        deadline: Option<Deadline>,
        attempt: u32,
        #[pin]
        state: State<Fut>,
    }
}

/// A schedule turned into its iterator on first use.
enum Lazy<S: IntoIterator> {
    Pending(S),
    Started(S::IntoIter),
    /// Only while `Pending` turns into `Started`.
    Taken,
}

impl<S: IntoIterator> Lazy<S> {
    /// The next delay, starting the schedule on the first call.
    fn next(&mut self) -> Option<S::Item> {
        if let Self::Pending(_) = self
            && let Self::Pending(schedule) = std::mem::replace(self, Self::Taken)
        {
            *self = Self::Started(schedule.into_iter());
        }
        match self {
            Self::Started(iter) => iter.next(),
            Self::Pending(_) | Self::Taken => None,
        }
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<Fut> {
        Idle,
        Running { #[pin] fut: Fut },
        Sleeping { #[pin] sleep: Sleep },
    }
}

impl<Op, Fut, T, E, S, P, N> Retrying<Op, Fut, S, P, N>
where
    S: IntoIterator,
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    /// Calls `notify(attempt, delay, &error)` before each retry; `attempt`
    /// is the number of the attempt that failed (1 for the first).
    pub fn notify<N2>(self, notify: N2) -> Retrying<Op, Fut, S, P, N2>
    where
        N2: FnMut(u32, Duration, &E),
    {
        Retrying {
            op: self.op,
            schedule: self.schedule,
            should_retry: self.should_retry,
            notify,
            deadline: self.deadline,
            attempt: self.attempt,
            state: self.state,
        }
    }

    /// Never sleeps past `deadline`: a delay that would end after it ends the
    /// retries, with the last error. (An attempt in flight is not cut
    /// short; wrap the operation in `tokio::time::timeout_at` for that.)
    pub fn deadline(mut self, deadline: Deadline) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

impl<Op, Fut, S: IntoIterator, P, N> fmt::Debug for Retrying<Op, Fut, S, P, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retrying")
            .field("attempt", &self.attempt)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<Op, Fut, T, E, S, P, N> Future for Retrying<Op, Fut, S, P, N>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    S: IntoIterator<Item = Duration>,
    P: FnMut(&E) -> bool,
    N: FnMut(u32, Duration, &E),
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Idle => {
                    *this.attempt += 1;
                    let fut = (this.op)();
                    this.state.set(State::Running { fut });
                }
                StateProj::Running { fut } => {
                    let err = match ready!(fut.poll(cx)) {
                        Ok(v) => return Poll::Ready(Ok(v)),
                        Err(e) => e,
                    };
                    if !(this.should_retry)(&err) {
                        return Poll::Ready(Err(err));
                    }
                    let Some(delay) = this.schedule.next() else {
                        return Poll::Ready(Err(err));
                    };
                    let now = Instant::now();
                    if this.deadline.is_some_and(|d| !d.allows_wait(now, delay)) {
                        return Poll::Ready(Err(err));
                    }
                    (this.notify)(*this.attempt, delay, &err);
                    this.state.set(State::Sleeping {
                        sleep: tokio::time::sleep_until(instant_after(now, delay)),
                    });
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Idle);
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// One attempt of the retry layer: the transport's future, under a
    /// timeout when there is one, polled in the attempt's span. (The span
    /// is a field, not an `Instrumented` wrapper: that would move the
    /// transport's future, request included, once more.)
    #[project = AttemptProj]
    pub(crate) enum AttemptFuture<F> {
        Plain { #[pin] fut: F, span: Span },
        Timed { #[pin] fut: Timeout<F>, err: TimeoutError, span: Span },
    }
}

impl<F, RB, E> Future for AttemptFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Attempt<RB, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Attempt<RB, E>> {
        match self.project() {
            AttemptProj::Plain { fut, span } => {
                let _in = span.enter();
                fut.poll(cx).map(Attempt::Done)
            }
            AttemptProj::Timed { fut, err, span } => {
                let _in = span.enter();
                fut.poll(cx).map(|r| match r {
                    Ok(r) => Attempt::Done(r),
                    Err(_) => Attempt::TimedOut(*err),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_waiting_each_delay() {
        let delays = [Duration::from_millis(100), Duration::from_millis(250)];
        let calls = RefCell::new(Vec::new());
        let t0 = Instant::now();
        let out = retry(
            || {
                calls.borrow_mut().push(t0.elapsed());
                let n = calls.borrow().len();
                async move { if n < 3 { Err(n) } else { Ok(n) } }
            },
            delays,
            |_| true,
        )
        .await;
        assert_eq!(out, Ok(3));
        assert_eq!(
            *calls.borrow(),
            [
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(350)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_on_errors_it_should_not_retry_and_when_the_schedule_ends() {
        let mut calls = 0;
        let out: Result<(), &str> = retry(
            || {
                calls += 1;
                async { Err("fatal") }
            },
            [Duration::from_millis(1); 5],
            |e| *e != "fatal",
        )
        .await;
        assert_eq!((out, calls), (Err("fatal"), 1));

        let mut notified = Vec::new();
        let mut calls = 0;
        let out: Result<(), u32> = retry(
            || {
                calls += 1;
                let n = calls;
                async move { Err(n) }
            },
            [Duration::from_millis(1); 2],
            |_| true,
        )
        .notify(|attempt, delay, e: &u32| notified.push((attempt, delay, *e)))
        .await;
        assert_eq!(out, Err(3), "three attempts, the last error");
        assert_eq!(
            notified,
            [
                (1, Duration::from_millis(1), 1),
                (2, Duration::from_millis(1), 2)
            ]
        );
    }

    /// A schedule that counts how often it is turned into its iterator.
    struct Counted<'a>(&'a std::cell::Cell<u32>);

    impl IntoIterator for Counted<'_> {
        type Item = Duration;
        type IntoIter = std::iter::Repeat<Duration>;

        fn into_iter(self) -> Self::IntoIter {
            self.0.set(self.0.get() + 1);
            std::iter::repeat(Duration::from_millis(1))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_schedule_starts_at_the_first_failure() {
        let started = std::cell::Cell::new(0);
        let out: Result<u32, u32> = retry(|| async { Ok(1) }, Counted(&started), |_| true).await;
        assert_eq!(
            (out, started.get()),
            (Ok(1), 0),
            "a success never starts it"
        );

        let mut calls = 0;
        let out: Result<u32, u32> = retry(
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err(n) } else { Ok(n) } }
            },
            Counted(&started),
            |_| true,
        )
        .await;
        assert_eq!(
            (out, started.get()),
            (Ok(3), 1),
            "started once, then followed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_delay_waits_instead_of_panicking() {
        let out: Result<(), &str> = retry(|| async { Err("x") }, [Duration::MAX], |_| true)
            .deadline(Deadline::after(Duration::from_secs(1)))
            .await;
        assert_eq!(out, Err("x"), "the deadline ends it");
        // Without a deadline the wait is "forever": still pending after a year.
        let mut calls = 0;
        let fut = retry(
            || {
                calls += 1;
                async { Err::<(), _>("x") }
            },
            [Duration::MAX],
            |_| true,
        );
        let year = Duration::from_secs(365 * 86_400);
        assert!(tokio::time::timeout(year, fut).await.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn never_sleeps_past_the_deadline() {
        let t0 = Instant::now();
        let out: Result<(), u32> =
            retry(|| async { Err(0) }, [Duration::from_secs(1); 10], |_| true)
                .deadline(Deadline::after(Duration::from_millis(2_500)))
                .await;
        assert!(out.is_err());
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(2),
            "two 1 s waits fit, the third does not"
        );
    }
}
