//! Paused-time tests of `until_ready`: FIFO order, no thundering herd, and
//! cancellation that loses no token.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use steadfast_limit::{KeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

const WAITERS: usize = 1_000;
const BURST: u32 = 5;
/// 50 per second: 20 ms apart, a whole number of the timer's milliseconds.
const RATE: u32 = 50;
const INTERVAL: Duration = Duration::from_millis(20);

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(RATE).unwrap()).burst(NonZeroU32::new(BURST).unwrap())
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// When the k-th token (0-based) is due: the burst at once, then one per interval.
fn slot(k: usize) -> Duration {
    INTERVAL * (k + 1).saturating_sub(BURST as usize) as u32
}

struct Outcome {
    arrivals: Vec<usize>,
    admissions: Vec<(usize, Duration)>,
    cancelled: Vec<bool>,
}

/// 1,000 waiters line up; at each `(at_ms, index)` the waiter `index` is
/// cancelled (a no-op if it was already admitted). `wait` is the waiting
/// call under test.
async fn run<W, F>(cancels: &[(u64, usize)], wait: W) -> Outcome
where
    W: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let admissions = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let (arrivals, admissions) = (arrivals.clone(), admissions.clone());
        let wait = wait();
        tasks.push(tokio::spawn(async move {
            // Arrival and joining the line happen in this same poll.
            arrivals.lock().unwrap().push(i);
            wait.await;
            admissions.lock().unwrap().push((i, start.elapsed()));
        }));
    }
    // All line up before the first cancel, even one at 0 ms: a task
    // aborted before its first poll never arrives at all.
    while arrivals.lock().unwrap().len() < WAITERS {
        tokio::task::yield_now().await;
    }
    let mut cancels = cancels.to_vec();
    cancels.sort_unstable();
    for (at_ms, i) in cancels {
        tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
        tasks[i].abort();
    }
    let mut cancelled = Vec::new();
    for t in tasks {
        cancelled.push(t.await.is_err_and(|e| e.is_cancelled()));
    }
    let arrivals = arrivals.lock().unwrap().clone();
    let admissions = admissions.lock().unwrap().clone();
    Outcome {
        arrivals,
        admissions,
        cancelled,
    }
}

fn check(o: &Outcome) -> Result<(), TestCaseError> {
    prop_assert_eq!(o.arrivals.len(), WAITERS);
    // Order: admissions are the arrivals minus the cancelled, in arrival order.
    let expected: Vec<usize> = o
        .arrivals
        .iter()
        .copied()
        .filter(|&i| !o.cancelled[i])
        .collect();
    let admitted: Vec<usize> = o.admissions.iter().map(|&(i, _)| i).collect();
    prop_assert_eq!(&admitted, &expected);
    // No token lost: the k-th admission happens exactly when the k-th token is due.
    for (k, &(i, at)) in o.admissions.iter().enumerate() {
        prop_assert_eq!(at, slot(k), "admission #{} (waiter {})", k, i);
    }
    // Equivalently: admitted by time T == burst + rate × T, while waiters remain.
    let end = o.admissions.last().map_or(Duration::ZERO, |&(_, at)| at);
    let mut t = Duration::ZERO;
    while t <= end {
        let by_t = o.admissions.iter().filter(|&&(_, at)| at <= t).count();
        let due = BURST as usize + (t.as_millis() / INTERVAL.as_millis()) as usize;
        prop_assert_eq!(by_t, due.min(o.admissions.len()), "at {:?}", t);
        t += Duration::from_millis(7);
    }
    Ok(())
}

fn cancels() -> impl Strategy<Value = Vec<(u64, usize)>> {
    // Up to a third of the waiters, at any time during the ~20 s it takes.
    prop::collection::vec((0u64..20_000, 0..WAITERS), 0..WAITERS / 3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn direct_waiters_are_fifo_and_cancels_lose_no_token(cancels in cancels()) {
        let outcome = paused_runtime().block_on(async {
            let limiter = Arc::new(RateLimiter::new(quota()));
            let o = run(&cancels, || {
                let l = limiter.clone();
                async move { l.until_ready().await }
            })
            .await;
            let s = limiter.snapshot();
            assert_eq!(s.waiting, 0);
            assert_eq!(s.queued as usize + BURST as usize, WAITERS);
            o
        });
        check(&outcome)?;
    }

    #[test]
    fn keyed_waiters_are_fifo_and_cancels_lose_no_token(cancels in cancels()) {
        let outcome = paused_runtime().block_on(async {
            let limiter = Arc::new(KeyedRateLimiter::builder(quota()).build::<&'static str>().unwrap());
            let o = run(&cancels, || {
                let l = limiter.clone();
                async move { l.until_key_ready(&"host").await }
            })
            .await;
            assert_eq!(limiter.snapshot().admitted as usize, o.admissions.len());
            o
        });
        check(&outcome)?;
    }
}

/// A refill wakes one waiter, not all of them: count polls of waiting futures.
#[test]
fn a_refill_wakes_one_waiter_not_the_herd() {
    paused_runtime().block_on(async {
        let limiter = Arc::new(RateLimiter::new(quota()));
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (l, polls) = (limiter.clone(), polls.clone());
            tasks.push(tokio::spawn(async move {
                let mut wait = std::pin::pin!(l.until_ready());
                std::future::poll_fn(|cx| {
                    polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    wait.as_mut().poll(cx)
                })
                .await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Each waiter is polled when it arrives, when it reaches the front,
        // and when its timer fires: a small constant each, not one per refill.
        let polls = polls.load(std::sync::atomic::Ordering::Relaxed);
        assert!(polls <= 200 * 3, "{polls} polls for 200 waiters");
    });
}
