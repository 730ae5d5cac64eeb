//! The pure core of the retry layer: given what an attempt ended with, retry
//! (after how long) or stop (and why). No I/O, no clock: `now` is an
//! argument, so tests and simulators run it on any timeline.
//!
//! # The rules, in order
//!
//! 1. **Retries left?** The [`Backoff`]'s schedule yields the next delay, or
//!    ends: [`Stop::Exhausted`].
//! 2. **Safe to re-send?** Idempotent methods (RFC 9110 §9.2.2: GET, HEAD,
//!    OPTIONS, TRACE, PUT, DELETE) are. POST, PATCH and other methods are
//!    only when the request carries the idempotency header (the same key is
//!    re-sent on every attempt), or when the error shows the request never
//!    left the client ([`steadfast_core::ErrorClass::request_not_sent`]: a
//!    connect failure, a pool or queue timeout), which is safe whatever the
//!    method. Otherwise: [`Stop::NotIdempotent`].
//! 3. **Replayable?** The body must be copyable for another attempt
//!    ([`steadfast_core::TryCloneBody`]); otherwise [`Stop::NotReplayable`].
//! 4. **Server's wait.** A delay from the server (Retry-After, the reset of
//!    an exhausted rate limit) is a floor under the backoff delay: the wait
//!    is the longer of the two. A server wait longer than the backoff is
//!    waited in full (shortening it would only earn another 429) and is not
//!    capped by the backoff's `max_delay` (that cap is for the client's own
//!    guesses); a shorter one, `Retry-After: 0` or a date in the past, does
//!    not switch the backoff (and its jitter) off.
//! 5. **Deadline.** A wait that does not end before the deadline stops at
//!    once, instead of sleeping past it: [`Stop::DeadlineExceeded`]. Checked
//!    before the next rule, so a Retry-After beyond both the deadline and
//!    `max_server_delay` is reported as the deadline it cannot fit.
//! 6. **Server's wait too long.** A server wait above `max_server_delay`
//!    stops at once, when it is the wait (longer than the backoff's):
//!    [`Stop::RetryAfterTooLong`].
//! 7. **Budget.** The retry budget must have a token:
//!    [`Stop::BudgetExhausted`]. It is asked last, so a retry that would not
//!    happen anyway does not spend one. The token is taken here; a caller
//!    that does not send the retry after all (cancelled during the wait)
//!    gives it back with [`RetryBudget::refund`] (the pool that paid is in
//!    [`Decision::Retry`]'s `token`).

use std::time::Duration;

use http::header::HeaderName;
use http::{Method, Request};
use steadfast_core::{Deadline, NotReplayable};
use tokio::time::Instant;

use crate::backoff::{Backoff, Schedule};
use crate::budget::{RetryBudget, Withdrawal};

/// How safe it is to send a request more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Safety {
    /// An idempotent method: safe to retry and to hedge.
    Idempotent,
    /// A non-idempotent method carrying an idempotency key: safe to retry
    /// with the same key (not hedged: two copies in flight at once may be
    /// refused as a conflict by the server).
    Keyed,
    /// Re-sending may apply the request twice. Retried only when the
    /// request certainly did not leave the client.
    Unsafe,
}

impl Safety {
    /// Reads the method and the idempotency header of `req`.
    pub fn of<B>(req: &Request<B>, idempotency_header: &HeaderName) -> Self {
        if is_idempotent(req.method()) {
            Self::Idempotent
        } else if req.headers().contains_key(idempotency_header) {
            Self::Keyed
        } else {
            Self::Unsafe
        }
    }

    /// `true` when a request that may have reached the server can be sent again.
    pub const fn allows_resend(self) -> bool {
        matches!(self, Self::Idempotent | Self::Keyed)
    }
}

/// `true` for the idempotent methods of RFC 9110 §9.2.2.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// What a retryable attempt result brings to the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retryable {
    /// The wait the server asked for, if any.
    pub server_delay: Option<Duration>,
    /// Whether the request may be sent again (see [`Safety`]).
    pub safe: bool,
    /// Whether the body can be sent again.
    pub replayable: Result<(), NotReplayable>,
}

/// What to do after a retryable result.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Wait `delay`, then send the next attempt.
    Retry {
        /// The wait.
        delay: Duration,
        /// `true` when the server's wait was the longer one, so the wait is
        /// the server's.
        from_server: bool,
        /// The budget token taken for this retry (with a budget): give it
        /// back with [`RetryBudget::refund`] if the retry is not sent.
        token: Option<Withdrawal>,
    },
    /// Give up.
    Stop(Stop),
}

/// Why retrying stopped.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The request is not safe to re-send.
    NotIdempotent,
    /// The body cannot be re-sent.
    NotReplayable(NotReplayable),
    /// No retries left.
    Exhausted,
    /// The retry budget refused.
    BudgetExhausted,
    /// The wait does not fit before the deadline.
    DeadlineExceeded {
        /// The wait needed.
        wait: Duration,
        /// Whether the server asked for it.
        from_server: bool,
        /// Time left.
        remaining: Duration,
    },
    /// The server's wait is above `max_server_delay`.
    RetryAfterTooLong {
        /// The wait asked for.
        retry_after: Duration,
    },
}

/// The retry state of one logical request.
///
/// ```
/// use std::time::Duration;
/// use steadfast_backoff::policy::{Decision, Retryable, RetryState, Stop};
/// use steadfast_backoff::{Backoff, Jitter};
/// use tokio::time::Instant;
///
/// let backoff = Backoff::constant(Duration::from_millis(10)).jitter(Jitter::None).max_retries(1);
/// let mut state = RetryState::new(backoff, Duration::from_secs(60));
/// let failed = Retryable { server_delay: None, safe: true, replayable: Ok(()) };
/// let now = Instant::now();
/// assert_eq!(
///     state.decide(failed, None, None, now),
///     Decision::Retry { delay: Duration::from_millis(10), from_server: false, token: None }
/// );
/// assert_eq!(state.decide(failed, None, None, now), Decision::Stop(Stop::Exhausted));
/// assert_eq!(state.attempts(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct RetryState {
    backoff: Backoff,
    max_server_delay: Duration,
    index: Option<u64>,
    schedule: Option<Schedule>,
    attempts: u32,
}

impl RetryState {
    /// The state of a request whose first attempt is in flight. The jitter
    /// is seeded from the backoff's seed, or at random.
    pub const fn new(backoff: Backoff, max_server_delay: Duration) -> Self {
        Self {
            backoff,
            max_server_delay,
            index: None,
            schedule: None,
            attempts: 1,
        }
    }

    /// As [`RetryState::new`], for the `index`-th request of a layer: with a
    /// seeded backoff, each request gets its own reproducible jitter.
    pub(crate) const fn for_request(
        backoff: Backoff,
        max_server_delay: Duration,
        index: u64,
    ) -> Self {
        Self {
            backoff,
            max_server_delay,
            index: Some(index),
            schedule: None,
            attempts: 1,
        }
    }

    /// Attempts made so far, the one being decided on included.
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Decides what follows a retryable result at `now`.
    pub fn decide(
        &mut self,
        input: Retryable,
        deadline: Option<Deadline>,
        budget: Option<&RetryBudget>,
        now: Instant,
    ) -> Decision {
        let decision = self.decide_inner(input, deadline, budget, now);
        if let Decision::Retry { .. } = decision {
            self.attempts += 1;
        }
        decision
    }

    fn decide_inner(
        &mut self,
        input: Retryable,
        deadline: Option<Deadline>,
        budget: Option<&RetryBudget>,
        now: Instant,
    ) -> Decision {
        // Built on the first retry only: the success path never pays for
        // seeding an RNG.
        let (backoff, index) = (self.backoff, self.index);
        let schedule = self.schedule.get_or_insert_with(|| match index {
            Some(i) => backoff.for_request(i),
            None => backoff.iter(),
        });
        let Some(backoff_delay) = schedule.next() else {
            return Decision::Stop(Stop::Exhausted);
        };
        if !input.safe {
            return Decision::Stop(Stop::NotIdempotent);
        }
        if let Err(reason) = input.replayable {
            return Decision::Stop(Stop::NotReplayable(reason));
        }
        // The server's wait is a floor, not a replacement: a server asking
        // for less than the backoff (`Retry-After: 0`, a past date) must not
        // turn the backoff and its jitter off.
        let (wait, from_server) = match input.server_delay {
            Some(after) if after >= backoff_delay => (after, true),
            _ => (backoff_delay, false),
        };
        if let Some(deadline) = deadline
            && !deadline.allows_wait(now, wait)
        {
            return Decision::Stop(Stop::DeadlineExceeded {
                wait,
                from_server,
                remaining: deadline.remaining_at(now),
            });
        }
        // Only a wait the server sets is held to `max_server_delay`: a
        // backoff longer than the server's ask is the client's own.
        if let Some(after) = input.server_delay
            && from_server
            && after > self.max_server_delay
        {
            return Decision::Stop(Stop::RetryAfterTooLong { retry_after: after });
        }
        let token = match budget {
            Some(budget) => match budget.withdraw(now) {
                Some(paid) => Some(paid),
                None => return Decision::Stop(Stop::BudgetExhausted),
            },
            None => None,
        };
        Decision::Retry {
            delay: wait,
            from_server,
            token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Jitter;
    use crate::budget::BudgetConfig;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const OK: Retryable = Retryable {
        server_delay: None,
        safe: true,
        replayable: Ok(()),
    };

    #[test]
    fn safety_follows_rfc_9110_and_the_key() {
        let key = HeaderName::from_static("idempotency-key");
        let req = |m: Method, keyed: bool| {
            let mut b = Request::builder().method(m);
            if keyed {
                b = b.header("Idempotency-Key", "k1");
            }
            Safety::of(&b.body(()).unwrap(), &key)
        };
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert_eq!(req(m, false), Safety::Idempotent);
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert_eq!(req(m.clone(), false), Safety::Unsafe, "{m}");
            assert_eq!(req(m, true), Safety::Keyed);
        }
        assert!(!Safety::Unsafe.allows_resend());
    }

    #[test]
    fn the_rules_apply_in_order() {
        let b = Backoff::constant(ms(100))
            .jitter(Jitter::None)
            .max_retries(10);
        let now = Instant::now();
        let mut s = RetryState::new(b, Duration::from_secs(60));
        let unsafe_ = Retryable { safe: false, ..OK };
        assert_eq!(
            s.decide(unsafe_, None, None, now),
            Decision::Stop(Stop::NotIdempotent)
        );
        let big = Retryable {
            replayable: Err(NotReplayable::TooLarge { cap: 10 }),
            ..OK
        };
        assert_eq!(
            s.decide(big, None, None, now),
            Decision::Stop(Stop::NotReplayable(NotReplayable::TooLarge { cap: 10 }))
        );
        // The server's delay wins over the backoff, uncapped by max_delay.
        let server = Retryable {
            server_delay: Some(Duration::from_secs(30)),
            ..OK
        };
        assert_eq!(
            s.decide(server, None, None, now),
            Decision::Retry {
                delay: Duration::from_secs(30),
                from_server: true,
                token: None
            }
        );
        let hostile = Retryable {
            server_delay: Some(Duration::from_secs(3_600)),
            ..OK
        };
        assert_eq!(
            s.decide(hostile, None, None, now),
            Decision::Stop(Stop::RetryAfterTooLong {
                retry_after: Duration::from_secs(3_600)
            })
        );
        let deadline = Deadline::after_from(now, ms(150));
        assert_eq!(
            s.decide(server, Some(deadline), None, now),
            Decision::Stop(Stop::DeadlineExceeded {
                wait: Duration::from_secs(30),
                from_server: true,
                remaining: ms(150),
            })
        );
        let budget = RetryBudget::new_at(BudgetConfig::new().ratio(0.0).floor(0), now).unwrap();
        assert_eq!(
            s.decide(OK, None, Some(&budget), now),
            Decision::Stop(Stop::BudgetExhausted)
        );
        assert_eq!(budget.snapshot().denied, 1);
        assert_eq!(s.attempts(), 2);
    }

    #[test]
    fn a_short_server_wait_is_a_floor_under_the_backoff() {
        // Retry-After: 0 (or a date in the past) does not switch the backoff off.
        let b = Backoff::exponential(ms(100)).jitter(Jitter::None);
        let now = Instant::now();
        let mut s = RetryState::new(b, Duration::from_secs(60));
        let zero = Retryable {
            server_delay: Some(Duration::ZERO),
            ..OK
        };
        let short = Retryable {
            server_delay: Some(ms(150)),
            ..OK
        };
        assert_eq!(
            s.decide(zero, None, None, now),
            Decision::Retry {
                delay: ms(100),
                from_server: false,
                token: None
            }
        );
        assert_eq!(
            s.decide(short, None, None, now),
            Decision::Retry {
                delay: ms(200),
                from_server: false,
                token: None
            },
            "the backoff is longer"
        );
        assert_eq!(
            s.decide(short, None, None, now),
            Decision::Retry {
                delay: ms(400),
                from_server: false,
                token: None
            }
        );
    }

    #[test]
    fn max_server_delay_holds_only_a_wait_the_server_sets() {
        // The client's own backoff (30 s) is longer than the server's ask
        // (20 s, above max_server_delay): the wait is the client's, and it
        // is not refused as the server's.
        let now = Instant::now();
        let backoff = Backoff::constant(Duration::from_secs(30))
            .max_delay(Duration::from_secs(60))
            .jitter(crate::Jitter::None);
        let mut s = RetryState::new(backoff, Duration::from_secs(10));
        let input = Retryable {
            server_delay: Some(Duration::from_secs(20)),
            ..OK
        };
        assert_eq!(
            s.decide(input, None, None, now),
            Decision::Retry {
                delay: Duration::from_secs(30),
                from_server: false,
                token: None
            }
        );
    }

    #[test]
    fn a_server_wait_beyond_the_deadline_names_the_deadline() {
        // Above max_server_delay too, but raising it would not help: the
        // deadline is the limit to report.
        let now = Instant::now();
        let mut s = RetryState::new(Backoff::default(), Duration::from_secs(60));
        let input = Retryable {
            server_delay: Some(Duration::from_secs(120)),
            ..OK
        };
        let deadline = Deadline::after_from(now, Duration::from_secs(30));
        assert_eq!(
            s.decide(input, Some(deadline), None, now),
            Decision::Stop(Stop::DeadlineExceeded {
                wait: Duration::from_secs(120),
                from_server: true,
                remaining: Duration::from_secs(30),
            })
        );
        // With time enough before the deadline, the limit is max_server_delay.
        let deadline = Deadline::after_from(now, Duration::from_secs(300));
        assert_eq!(
            s.decide(input, Some(deadline), None, now),
            Decision::Stop(Stop::RetryAfterTooLong {
                retry_after: Duration::from_secs(120)
            })
        );
    }

    #[derive(Clone, Debug)]
    struct Step {
        server_delay: Option<u64>,
        safe: bool,
        elapsed: u64,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            proptest::option::of(0u64..90_000),
            proptest::bool::weighted(0.9),
            0u64..5_000,
        )
            .prop_map(|(server_delay, safe, elapsed)| Step {
                server_delay,
                safe,
                elapsed,
            })
    }

    proptest! {
        #[test]
        fn attempts_and_waits_stay_within_limits(
            retries in 0u32..8,
            base in 0u64..2_000,
            deadline in proptest::option::of(0u64..120_000),
            seed in any::<u64>(),
            steps in proptest::collection::vec(step(), 1..20),
        ) {
            let backoff = Backoff::exponential(ms(base)).max_retries(retries).seed(seed);
            let max_server = Duration::from_secs(60);
            let t0 = Instant::now();
            let deadline = deadline.map(|d| Deadline::after_from(t0, ms(d)));
            let mut state = RetryState::new(backoff, max_server);
            let mut now = t0;
            for s in steps {
                now += ms(s.elapsed); // the attempt's own duration
                let input = Retryable { server_delay: s.server_delay.map(ms), safe: s.safe, replayable: Ok(()) };
                match state.decide(input, deadline, None, now) {
                    Decision::Retry { delay, from_server, .. } => {
                        prop_assert!(s.safe);
                        prop_assert!(state.attempts() <= retries + 1, "attempt {} > max", state.attempts());
                        prop_assert!(
                            delay >= input.server_delay.unwrap_or_default(),
                            "waited less than the server asked"
                        );
                        if from_server {
                            prop_assert_eq!(Some(delay), input.server_delay, "server delay not honoured exactly");
                            prop_assert!(delay <= max_server);
                        } else {
                            prop_assert!(delay <= Backoff::default().max_delay);
                        }
                        now += delay;
                        if let Some(d) = deadline {
                            prop_assert!(now < d.instant(), "slept past the deadline");
                        }
                    }
                    Decision::Stop(stop) => {
                        match stop {
                            Stop::NotIdempotent => prop_assert!(!s.safe),
                            Stop::Exhausted => prop_assert_eq!(state.attempts(), retries + 1),
                            Stop::RetryAfterTooLong { retry_after } => prop_assert!(retry_after > max_server),
                            Stop::DeadlineExceeded { wait, remaining, .. } => prop_assert!(wait >= remaining),
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                        break;
                    }
                }
            }
        }
    }
}
