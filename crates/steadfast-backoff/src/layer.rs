//! [`Retry`]: the transport wrapper, and [`RetryLayer`], its constructor.

use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use http::{Extensions, HeaderMap, Method, Request, Response, Uri, Version};
use steadfast_core::replay::ReplayError;
use steadfast_core::{
    Classify, Deadline, DefaultClassifier, ErrorClass, Layer, NotReplayable, Outcome, TimeoutError,
    TimeoutPhase, Transport, TryCloneBody,
};
use tokio::time::Instant;

use crate::budget::{RetryBudget, Withdrawal};
use crate::config::{BudgetChoice, HedgeDelay, RetryConfig};
use crate::error::{Cause, RetryCause, RetryError};
use crate::future::{AttemptFuture, instant_after};
use crate::histogram::LatencyHistogram;
use crate::policy::{Decision, RetryState, Retryable, Safety, Stop};

/// Retries failed requests of the wrapped transport: backoff with jitter,
/// Retry-After, a shared retry budget, deadlines and hedging.
///
/// A cheap `Clone` handle: clones share the configuration, the counters
/// and the budget. See the crate documentation for the rules.
pub struct Retry<T, C = DefaultClassifier> {
    inner: T,
    shared: Arc<Shared<C>>,
}

/// Wraps transports in [`Retry`]. Every transport wrapped by one layer shares
/// its counters and its retry budget.
///
/// With the `tower` feature, `steadfast_core::tower::TowerLayer` makes it a
/// `tower::Layer`:
///
/// ```
/// # #[cfg(feature = "tower")] {
/// use steadfast_backoff::{RetryConfig, RetryLayer};
/// use steadfast_core::tower::TowerLayer;
///
/// let layer = TowerLayer::new(RetryLayer::new(RetryConfig::default()));
/// let svc = tower_layer::Layer::layer(&layer, tower_service_fn());
/// # fn tower_service_fn() -> impl tower_service::Service<
/// #     http::Request<bytes::Bytes>, Response = http::Response<()>, Error = std::io::Error,
/// #     Future = std::future::Ready<Result<http::Response<()>, std::io::Error>>> + Clone + Send + Sync + 'static {
/// #     #[derive(Clone)] struct S;
/// #     impl tower_service::Service<http::Request<bytes::Bytes>> for S {
/// #         type Response = http::Response<()>; type Error = std::io::Error;
/// #         type Future = std::future::Ready<Result<http::Response<()>, std::io::Error>>;
/// #         fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), std::io::Error>> { std::task::Poll::Ready(Ok(())) }
/// #         fn call(&mut self, _: http::Request<bytes::Bytes>) -> Self::Future { std::future::ready(Ok(http::Response::new(()))) }
/// #     }
/// #     S
/// # }
/// # let _ = svc;
/// # }
/// ```
pub struct RetryLayer<C = DefaultClassifier> {
    shared: Arc<Shared<C>>,
}

struct Shared<C> {
    config: RetryConfig,
    classifier: C,
    budget: Option<RetryBudget>,
    histogram: Option<LatencyHistogram>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    hedges: AtomicU64,
    hedges_won: AtomicU64,
    budget_exhausted: AtomicU64,
}

/// Counters of a retry layer, read with [`Retry::snapshot`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetrySnapshot {
    /// Logical requests sent through the layer.
    pub requests: u64,
    /// Attempts sent to the wrapped transport: requests + retries + hedges.
    pub attempts: u64,
    /// Retries sent (a retry cancelled during its wait is not counted).
    pub retries: u64,
    /// Hedges sent.
    pub hedges: u64,
    /// Hedges whose success was returned instead of the hedged attempt's
    /// answer.
    pub hedges_won: u64,
    /// Retries and hedges refused by the retry budget.
    pub budget_exhausted: u64,
}

impl<C> Shared<C> {
    fn new(config: RetryConfig, classifier: C) -> Self {
        let budget = match &config.budget {
            BudgetChoice::Disabled => None,
            // Validated when the config was built.
            BudgetChoice::New(b) => Some(RetryBudget::new(*b).unwrap_or_default()),
            BudgetChoice::Shared(b) => Some(b.clone()),
        };
        let histogram = match config.hedging.map(|h| h.delay) {
            Some(HedgeDelay::Percentile {
                percentile,
                min_samples,
                ..
            }) => Some(LatencyHistogram::new(percentile, min_samples)),
            _ => None,
        };
        Self {
            config,
            classifier,
            budget,
            histogram,
            counters: Counters::default(),
        }
    }

    fn snapshot(&self) -> RetrySnapshot {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (requests, retries, hedges) = (load(&c.requests), load(&c.retries), load(&c.hedges));
        RetrySnapshot {
            requests,
            attempts: requests + retries + hedges,
            retries,
            hedges,
            hedges_won: load(&c.hedges_won),
            budget_exhausted: load(&c.budget_exhausted),
        }
    }
}

impl RetryLayer {
    /// A layer with the default classifier.
    pub fn new(config: RetryConfig) -> Self {
        Self::with_classifier(config, DefaultClassifier)
    }
}

impl<C> RetryLayer<C> {
    /// A layer that decides what is retryable with `classifier`, for example
    /// a closure mapping a circuit breaker's rejection to
    /// `Outcome::Retryable { after: Some(open_for) }`.
    pub fn with_classifier(config: RetryConfig, classifier: C) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, classifier)),
        }
    }

    /// The counters shared by every transport this layer wrapped.
    pub fn snapshot(&self) -> RetrySnapshot {
        self.shared.snapshot()
    }

    /// The retry budget, if enabled: share it with other layers through
    /// [`crate::RetryConfigBuilder::shared_budget`].
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget.as_ref()
    }
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<T, C> Layer<T> for RetryLayer<C> {
    type Transport = Retry<T, C>;

    fn layer(&self, inner: T) -> Retry<T, C> {
        Retry {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Retry<T> {
    /// Wraps `inner` with the default classifier.
    pub fn new(inner: T, config: RetryConfig) -> Self {
        Self::with_classifier(inner, config, DefaultClassifier)
    }
}

impl<T, C> Retry<T, C> {
    /// Wraps `inner`, classifying results with `classifier`.
    pub fn with_classifier(inner: T, config: RetryConfig, classifier: C) -> Self {
        Self {
            inner,
            shared: Arc::new(Shared::new(config, classifier)),
        }
    }

    /// The counters: requests, attempts, retries, hedges, budget refusals.
    pub fn snapshot(&self) -> RetrySnapshot {
        self.shared.snapshot()
    }

    /// The retry budget, if enabled.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// The wrapped transport.
    pub const fn inner(&self) -> &T {
        &self.inner
    }

    /// Unwraps the transport.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: Clone, C> Clone for Retry<T, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: fmt::Debug, C> fmt::Debug for Retry<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("name", &self.shared.config.name)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// How one attempt ended.
pub(crate) enum Attempt<RB, E> {
    Done(Result<Response<RB>, E>),
    TimedOut(TimeoutError),
}

impl<RB, E> Attempt<RB, E>
where
    E: StdError + Send + Sync + 'static,
{
    fn cause(&self) -> RetryCause<'_> {
        match self {
            Self::Done(Ok(res)) => Cause::Status(res.status()),
            Self::Done(Err(e)) => Cause::Transport(e),
            Self::TimedOut(t) => Cause::Timeout(*t),
        }
    }

    fn into_cause(self) -> Result<Response<RB>, Cause<E>> {
        match self {
            Self::Done(Ok(res)) => Ok(res),
            Self::Done(Err(e)) => Err(Cause::Transport(e)),
            Self::TimedOut(t) => Err(Cause::Timeout(t)),
        }
    }

    /// `true` when the error shows the request never left the client.
    fn not_sent(&self) -> bool {
        match self {
            Self::Done(Err(e)) => ErrorClass::of(e).request_not_sent(),
            _ => false,
        }
    }

    /// `true` when this copy of a hedged request failed only because its
    /// body fell behind the other copy's past the replay buffer
    /// ([`ReplayBody`](steadfast_core::ReplayBody) answers it with
    /// [`NotReplayable`]): it says nothing about the request, only that
    /// the copy could not be sent.
    fn fell_behind(&self) -> bool {
        let Self::Done(Err(e)) = self else {
            return false;
        };
        let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
        while let Some(err) = cur {
            if err.is::<NotReplayable>()
                || matches!(
                    err.downcast_ref::<ReplayError>(),
                    Some(ReplayError::NotReplayable(_))
                )
            {
                return true;
            }
            cur = err.source();
        }
        false
    }
}

/// The OpenTelemetry `error.type` of a cause: the status code for a
/// response (`"503"`), the class of a recognised transport error
/// (`"connect"`, `"timeout"`, `"reset"`, `"network"`), else the transport
/// error's type name (`E`).
fn error_type<'a, E>(cause: &'a RetryCause<'_>) -> &'a str {
    match cause {
        Cause::Status(s) => s.as_str(),
        Cause::Timeout(_) => "timeout",
        Cause::Transport(e) => match ErrorClass::of(*e) {
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout(_) => "timeout",
            ErrorClass::Reset => "reset",
            ErrorClass::Network => "network",
            _ => std::any::type_name::<E>(),
        },
    }
}

/// `true` for the only outcome that ends a hedge race at once: a success.
/// Anything else, a rejection (4xx) included, waits for the other copy: a
/// rejection may be caused by the other copy's success (a DELETE's 404, a
/// conditional PUT's 412), so it says nothing the other copy will get too.
const fn ends_race(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Success)
}

/// The result of a hedge race in which no copy succeeded: the first
/// attempt's answer (the hedge was a second chance for it), unless that
/// copy only fell behind the hedge's body; the server's wait is the longer
/// of the two copies', so a Retry-After on either is honoured.
fn race_lost<RB, E>(
    primary: (Attempt<RB, E>, Outcome),
    hedge: Option<(Attempt<RB, E>, Outcome)>,
) -> (Attempt<RB, E>, Outcome)
where
    E: StdError + Send + Sync + 'static,
{
    let Some(hedge) = hedge else {
        return primary;
    };
    if primary.0.fell_behind() {
        return hedge;
    }
    if hedge.0.fell_behind() {
        return primary;
    }
    let (attempt, outcome) = primary;
    let outcome = match (outcome, hedge.1) {
        (Outcome::Retryable { after }, Outcome::Retryable { after: other }) => Outcome::Retryable {
            after: after.max(other),
        },
        (outcome, _) => outcome,
    };
    (attempt, outcome)
}

/// When the current attempt must end, and the error to report then.
#[derive(Clone, Copy)]
struct Limits {
    deadline: Option<Deadline>,
    /// The whole request's time limit, for the `Total` timeout error.
    total: Duration,
    attempt_timeout: Option<Duration>,
}

impl Limits {
    const fn is_unbounded(&self) -> bool {
        self.deadline.is_none() && self.attempt_timeout.is_none()
    }

    fn attempt_end(&self) -> Option<(Instant, TimeoutError)> {
        let total = self.deadline.map(|d| {
            (
                d.instant(),
                TimeoutError::new(TimeoutPhase::Total, self.total),
            )
        });
        let Some(limit) = self.attempt_timeout else {
            return total;
        };
        let end = instant_after(Instant::now(), limit);
        match total {
            Some(t) if t.0 <= end => Some(t),
            _ => Some((end, TimeoutError::new(TimeoutPhase::Attempt, limit))),
        }
    }
}

impl<T, C> Retry<T, C> {
    /// The span of one attempt: the transport's events (and those of the
    /// layers below) nest under it. `Span::none()` when DEBUG is off.
    fn attempt_span(&self, resend_count: u32, hedge: bool) -> tracing::Span {
        tracing::debug_span!(
            "http.client.attempt",
            retry.name = %self.shared.config.name,
            http.request.resend_count = resend_count,
            retry.hedge = hedge,
        )
    }

    /// One attempt, cut short by the attempt timeout and the deadline, in
    /// its span. A hand-written future (not an `async fn`) so the request
    /// is moved once, into the transport's future, and not also kept as a
    /// parameter.
    fn attempt<B>(
        &self,
        req: Request<B>,
        limits: Limits,
        resend_count: u32,
        hedge: bool,
    ) -> AttemptFuture<impl Future<Output = Result<Response<T::Body>, T::Error>> + Send>
    where
        T: Transport<B>,
    {
        let span = self.attempt_span(resend_count, hedge);
        let fut = span.in_scope(|| self.inner.send(req));
        match limits.attempt_end() {
            None => AttemptFuture::Plain { fut, span },
            Some((at, err)) => AttemptFuture::Timed {
                fut: tokio::time::timeout_at(at, fut),
                err,
                span,
            },
        }
    }

    fn outcome<RB, E>(&self, attempt: &Attempt<RB, E>) -> Outcome
    where
        C: Classify<RB, E>,
    {
        match attempt {
            Attempt::Done(r) => self.shared.classifier.classify(r),
            Attempt::TimedOut(_) => Outcome::RETRY,
        }
    }

    /// The hedge delay for the next attempt, if hedging applies.
    fn hedge_delay(&self) -> Option<Duration> {
        match self.shared.config.hedging?.delay {
            HedgeDelay::Fixed(d) => Some(d),
            HedgeDelay::Percentile { fallback, .. } => self
                .shared
                .histogram
                .as_ref()
                .and_then(LatencyHistogram::current)
                .or(fallback),
        }
    }

    /// One attempt of an idempotent request, with a hedge sent after
    /// `delay` (if the budget allows and the deadline has not passed). A
    /// success ends the race at once, and the other copy is cancelled by
    /// being dropped; any other answer (a failure, or a rejection, which
    /// may be caused by the other copy's success) waits for the other copy
    /// (see [`race_lost`]). Returns the attempt, its outcome, and the
    /// hedges sent (0 or 1).
    async fn hedged<B>(
        &self,
        first: Request<B>,
        template: &mut Template<B>,
        delay: Option<Duration>,
        limits: Limits,
        resend_count: u32,
    ) -> (Attempt<T::Body, T::Error>, Outcome, u32)
    where
        T: Transport<B>,
        B: TryCloneBody,
        C: Classify<T::Body, T::Error>,
    {
        let shared = &*self.shared;
        let started = Instant::now();
        let mut primary = pin!(Slot::Running {
            fut: self.attempt(first, limits, resend_count, false),
        });
        let mut hedge = pin!(Slot::Idle);
        let mut timer = pin!(delay.map(|d| tokio::time::sleep_until(instant_after(started, d))));
        let mut hedges = 0;
        let mut primary_failed = None;
        let mut hedge_failed = None;
        // The latency of the first answer (success or rejection) the
        // request got, recorded once.
        let mut recorded = false;
        let mut record = || {
            if let Some(h) = &shared.histogram
                && !recorded
            {
                recorded = true;
                h.record(started.elapsed());
            }
        };
        poll_fn(|cx| {
            loop {
                if let Some(Poll::Ready(a)) = primary.as_mut().poll_running(cx) {
                    primary.set(Slot::Done);
                    let o = self.outcome(&a);
                    if ends_race(o) {
                        record();
                        return Poll::Ready((a, o, hedges));
                    }
                    if o == Outcome::Rejected {
                        record();
                    }
                    primary_failed = Some((a, o));
                }
                if let Some(Poll::Ready(a)) = hedge.as_mut().poll_running(cx) {
                    hedge.set(Slot::Done);
                    let o = self.outcome(&a);
                    if ends_race(o) {
                        shared.counters.hedges_won.fetch_add(1, Ordering::Relaxed);
                        // The first attempt took at least this long. Its
                        // latency, not the hedge's (a sample biased to the
                        // fast side: only hedges that win are seen), keeps
                        // the tail in the histogram.
                        record();
                        tracing::debug!(retry.name = %shared.config.name, "hedge won");
                        return Poll::Ready((a, o, hedges));
                    }
                    hedge_failed = Some((a, o));
                }
                let hedge_running = matches!(*hedge, Slot::Running { .. });
                if !hedge_running && let Some(failed) = primary_failed.take() {
                    // Nothing is in flight any more, and nothing succeeded.
                    let (a, o) = race_lost(failed, hedge_failed.take());
                    return Poll::Ready((a, o, hedges));
                }
                // The first attempt is still in flight.
                if matches!(*hedge, Slot::Idle)
                    && let Some(sleep) = timer.as_mut().as_pin_mut()
                    && sleep.poll(cx).is_ready()
                {
                    timer.set(None);
                    hedge.set(Slot::Done);
                    // No hedge once the deadline has passed: it could only
                    // time out at once, after spending a token. (The first
                    // attempt's timer, polled above, normally ends the race
                    // first: this keeps that true by construction.)
                    let now = Instant::now();
                    if limits.deadline.is_some_and(|d| d.is_expired_at(now)) {
                        continue;
                    }
                    // The copy first: a body that can no longer be copied
                    // means no hedge, and no token spent on one.
                    let Ok(req) = template.request() else {
                        continue;
                    };
                    if shared.budget.as_ref().is_some_and(|b| !b.try_withdraw(now)) {
                        shared.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(retry.name = %shared.config.name, "hedge refused by the retry budget");
                        continue;
                    }
                    shared.counters.hedges.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        retry.name = %shared.config.name,
                        retry.hedge_delay_ms =
                            u64::try_from(delay.unwrap_or_default().as_millis()).unwrap_or(u64::MAX),
                        "hedging request"
                    );
                    hedges = 1;
                    hedge.set(Slot::Running {
                        fut: self.attempt(req, limits, resend_count + 1, true),
                    });
                    continue;
                }
                return Poll::Pending;
            }
        })
        .await
    }

    /// Announces a retry (event, hook) before its wait; it is counted when
    /// it is sent. `attempt` is the number of the attempt that failed (for
    /// the hook), `resend_count` the copies sent so far, hedges included.
    fn report_retry<E>(
        &self,
        attempt: u32,
        resend_count: u32,
        delay: Duration,
        from_server: bool,
        cause: RetryCause<'_>,
    ) {
        let shared = &*self.shared;
        tracing::debug!(
            retry.name = %shared.config.name,
            http.request.resend_count = resend_count,
            http.response.status_code = cause.status().map(|s| s.as_u16()),
            error.type = error_type::<E>(&cause),
            retry.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            retry.from_server = from_server,
            retry.cause = %cause,
            "retrying request"
        );
        if let Some(hook) = &shared.config.on_retry {
            hook(attempt, delay, cause);
        }
    }

    /// Ends the request after a retryable failure. `attempts`: the copies
    /// sent, hedges included.
    fn give_up<RB, E>(
        &self,
        stop: Stop,
        attempt: Attempt<RB, E>,
        attempts: u32,
        method: &Method,
    ) -> Result<Response<RB>, RetryError<E>>
    where
        E: StdError + Send + Sync + 'static,
    {
        let shared = &*self.shared;
        if stop == Stop::BudgetExhausted {
            shared
                .counters
                .budget_exhausted
                .fetch_add(1, Ordering::Relaxed);
        }
        let last = attempt.cause();
        tracing::debug!(
            retry.name = %shared.config.name,
            http.request.resend_count = attempts - 1,
            error.type = error_type::<E>(&last),
            retry.stop = ?stop,
            "not retrying"
        );
        let cause = match (stop, attempt.into_cause()) {
            // A retryable response is still the server's answer: hand it over.
            (
                Stop::NotIdempotent
                | Stop::NotReplayable(_)
                | Stop::Exhausted
                | Stop::BudgetExhausted,
                Ok(res),
            ) => return Ok(res),
            (_, Ok(res)) => Cause::Status(res.status()),
            (_, Err(cause)) => cause,
        };
        Err(match stop {
            Stop::NotIdempotent => RetryError::NotIdempotent {
                cause,
                attempts,
                method: method.clone(),
                header: shared.config.idempotency_header.clone(),
            },
            Stop::NotReplayable(reason) => RetryError::NotReplayable {
                cause,
                attempts,
                reason,
            },
            Stop::BudgetExhausted => RetryError::BudgetExhausted { cause, attempts },
            Stop::DeadlineExceeded {
                wait,
                from_server,
                remaining,
            } => RetryError::DeadlineExceeded {
                cause,
                attempts,
                wait,
                from_server,
                remaining,
            },
            Stop::RetryAfterTooLong { retry_after } => RetryError::RetryAfterTooLong {
                cause,
                attempts,
                retry_after,
                max_server_delay: shared.config.max_server_delay,
            },
            // `Stop` is non-exhaustive for users, not for this crate; new
            // variants land here until mapped.
            _ => RetryError::Exhausted { cause, attempts },
        })
    }
}

/// The copy of a request that later attempts are made from, taken before
/// the first attempt consumes the request: its parts, cloned one by one
/// (cheaper than [`steadfast_core::try_clone_request`], which builds a whole
/// `Request` with default parts and then overwrites them).
struct Template<B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    body: B,
}

impl<B: TryCloneBody> Template<B> {
    /// A new request from the template. `&mut` (not `&`): a closure that
    /// uses the template this way captures the `&mut` (which is `Send` when
    /// `B` is), not a `&` (which would need `B: Sync`).
    fn request(&mut self) -> Result<Request<B>, NotReplayable> {
        let mut req = Request::new(self.body.try_clone_body()?);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.extensions_mut() = self.extensions.clone();
        Ok(req)
    }
}

pin_project_lite::pin_project! {
    /// The hedge's slot in the race.
    #[project = SlotProj]
    enum Slot<F> {
        Idle,
        Running { #[pin] fut: F },
        Done,
    }
}

impl<F: Future> Slot<F> {
    fn poll_running(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Option<Poll<F::Output>> {
        match self.project() {
            SlotProj::Running { fut } => Some(fut.poll(cx)),
            _ => None,
        }
    }
}

/// An attempt's result, seen by the retry rules.
enum Settled<RB, E> {
    /// The request is over.
    Done(Result<Response<RB>, RetryError<E>>),
    /// A retryable failure, with the server's wait if any.
    Retryable(Attempt<RB, E>, Option<Duration>),
}

/// What one logical request carries from attempt to attempt.
#[derive(Clone, Copy)]
struct Ctx {
    index: u64,
    limits: Limits,
    safety: Safety,
    hedging: bool,
    /// Whether a later attempt (retry or hedge) is configured at all.
    may_resend: bool,
}

/// What every later attempt is made from.
enum Replay<B> {
    /// A copy of the request, made before the first attempt consumed it.
    Template(Template<B>),
    /// No copy: why, and the method, for the error that names it.
    Unavailable(NotReplayable, Method),
}

impl<B: TryCloneBody> Replay<B> {
    fn of(req: &Request<B>, may_resend: bool) -> Self {
        // With no retry and no hedge configured, the decision stops at
        // `Stop::Exhausted` before it looks at the body: no copy is needed.
        let body = if may_resend {
            req.body().try_clone_body()
        } else {
            Err(NotReplayable::Streaming)
        };
        match body {
            Ok(body) => Self::Template(Template {
                method: req.method().clone(),
                uri: req.uri().clone(),
                version: req.version(),
                // An empty map's clone still walks three empty buffers.
                headers: if req.headers().is_empty() {
                    HeaderMap::new()
                } else {
                    req.headers().clone()
                },
                extensions: req.extensions().clone(),
                body,
            }),
            Err(reason) => Self::Unavailable(reason, req.method().clone()),
        }
    }

    fn request(&mut self) -> Result<Request<B>, NotReplayable> {
        match self {
            Self::Template(t) => t.request(),
            Self::Unavailable(reason, _) => Err(*reason),
        }
    }

    const fn method(&self) -> &Method {
        match self {
            Self::Template(t) => &t.method,
            Self::Unavailable(_, method) => method,
        }
    }
}

impl<T, C> Retry<T, C> {
    /// Bookkeeping before the first attempt: deadline, counters, budget
    /// deposit, safety. `Err` when the request's deadline has already
    /// passed: it is not sent (nor counted), as it could only time out.
    fn begin<B>(&self, req: &mut Request<B>) -> Result<Ctx, TimeoutError> {
        let shared = &*self.shared;
        let config = &shared.config;
        // The clock is read only when there is a deadline to honour.
        let limits = match (config.timeout, Deadline::of(req)) {
            (None, None) => Limits {
                deadline: None,
                total: Duration::ZERO,
                attempt_timeout: config.attempt_timeout,
            },
            (timeout, _) => {
                let now = Instant::now();
                let deadline = match timeout {
                    Some(t) => Deadline::after_from(now, t).apply(req),
                    None => Deadline::of(req).unwrap_or_else(|| Deadline::at(now)),
                };
                let total = deadline.remaining_at(now);
                if deadline.is_expired_at(now) {
                    return Err(TimeoutError::new(TimeoutPhase::Total, total));
                }
                Limits {
                    deadline: Some(deadline),
                    total,
                    attempt_timeout: config.attempt_timeout,
                }
            }
        };
        let index = shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(budget) = &shared.budget {
            budget.deposit();
        }
        let safety = Safety::of(req, &config.idempotency_header);
        // Hedging needs a method that is idempotent by itself (RFC 9110):
        // two copies in flight at once are not made safe by
        // `retry_non_idempotent`, nor by an idempotency key (the server may
        // refuse the second copy as a conflict while the first is running).
        let hedging = config.hedging.is_some() && safety == Safety::Idempotent;
        let safety = if config.retry_non_idempotent {
            Safety::Idempotent
        } else {
            safety
        };
        Ok(Ctx {
            index,
            limits,
            safety,
            hedging,
            may_resend: config.backoff.max_retries > 0 || hedging,
        })
    }

    /// One attempt, hedged when that applies, with its outcome and the
    /// hedges sent. `resend_count`: the copies of the request sent before.
    async fn attempt_classified<B>(
        &self,
        req: Request<B>,
        ctx: Ctx,
        replay: &mut Replay<B>,
        resend_count: u32,
    ) -> (Attempt<T::Body, T::Error>, Outcome, u32)
    where
        T: Transport<B>,
        B: TryCloneBody,
        C: Classify<T::Body, T::Error>,
    {
        if let (Replay::Template(template), true) = (replay, ctx.hedging) {
            let delay = self.hedge_delay();
            return self
                .hedged(req, template, delay, ctx.limits, resend_count)
                .await;
        }
        let a = self.attempt(req, ctx.limits, resend_count, false).await;
        let o = self.outcome(&a);
        (a, o, 0)
    }

    /// The answer to a request whose last attempt ended with a final outcome.
    fn finish<RB, E>(
        res: Result<Response<RB>, E>,
        attempts: u32,
    ) -> Result<Response<RB>, RetryError<E>> {
        res.map_err(|e| RetryError::NotRetryable {
            cause: Cause::Transport(e),
            attempts,
        })
    }

    /// Ends the request if `outcome` is final: `Some(result)`; `None` when
    /// it is retryable (the retry rules decide what follows).
    fn settle<RB, E>(attempt: Attempt<RB, E>, outcome: Outcome, attempts: u32) -> Settled<RB, E> {
        if let Attempt::TimedOut(t) = &attempt
            && t.phase() == TimeoutPhase::Total
        {
            return Settled::Done(Err(RetryError::TimedOut {
                cause: Cause::Timeout(*t),
                attempts,
            }));
        }
        let Outcome::Retryable { after } = outcome else {
            return Settled::Done(match attempt {
                Attempt::Done(res) => Self::finish(res, attempts),
                Attempt::TimedOut(t) => Err(RetryError::NotRetryable {
                    cause: Cause::Timeout(t),
                    attempts,
                }),
            });
        };
        Settled::Retryable(attempt, after)
    }

    /// Everything after a first attempt that failed retryably: decide, wait,
    /// try again. Kept out of `send`'s future (and boxed there) so the
    /// success path moves a small future, not the whole retry machinery.
    /// `sent`: the copies sent so far, hedges included.
    async fn retry_after_failure<B>(
        &self,
        ctx: Ctx,
        mut replay: Replay<B>,
        mut attempt: Attempt<T::Body, T::Error>,
        mut after: Option<Duration>,
        mut sent: u32,
    ) -> Result<Response<T::Body>, RetryError<T::Error>>
    where
        T: Transport<B>,
        B: TryCloneBody,
        C: Classify<T::Body, T::Error>,
    {
        let shared = &*self.shared;
        let config = &shared.config;
        let mut state = RetryState::for_request(config.backoff, config.max_server_delay, ctx.index);
        loop {
            let copy = replay.request();
            let input = Retryable {
                server_delay: after,
                safe: ctx.safety.allows_resend() || attempt.not_sent(),
                replayable: copy.as_ref().map(|_| ()).map_err(|r| *r),
            };
            let now = Instant::now();
            let next = match (
                state.decide(input, ctx.limits.deadline, shared.budget.as_ref(), now),
                copy,
            ) {
                (
                    Decision::Retry {
                        delay,
                        from_server,
                        token,
                    },
                    Ok(copy),
                ) => {
                    // `decide` took a budget token for this retry: if the
                    // caller gives up during the wait (or the hook panics),
                    // it goes back, to the pool that paid it.
                    let token = Token(shared.budget.as_ref().zip(token));
                    self.report_retry::<T::Error>(
                        state.attempts() - 1,
                        sent,
                        delay,
                        from_server,
                        attempt.cause(),
                    );
                    // Release the failed response (and its connection) before waiting.
                    drop(attempt);
                    // The wait ends when `decide` allowed it to, at `now +
                    // delay`, however long the hook took.
                    if !delay.is_zero() {
                        tokio::time::sleep_until(instant_after(now, delay)).await;
                    }
                    // The wait is over before the deadline, unless the hook
                    // outlasted the deadline: then the retry is not sent.
                    if let Some(deadline) = ctx.limits.deadline
                        && deadline.is_expired()
                    {
                        return Err(RetryError::TimedOut {
                            cause: Cause::Timeout(TimeoutError::new(
                                TimeoutPhase::Total,
                                ctx.limits.total,
                            )),
                            attempts: sent,
                        });
                    }
                    token.spend();
                    shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                    copy
                }
                (Decision::Stop(stop), _) => {
                    return self.give_up(stop, attempt, sent, replay.method());
                }
                (_, Err(reason)) => {
                    return self.give_up(
                        Stop::NotReplayable(reason),
                        attempt,
                        sent,
                        replay.method(),
                    );
                }
            };
            let (a, outcome, hedges) = self.attempt_classified(next, ctx, &mut replay, sent).await;
            sent += 1 + hedges;
            (attempt, after) = match Self::settle(a, outcome, sent) {
                Settled::Done(done) => return done,
                Settled::Retryable(a, after) => (a, after),
            };
        }
    }
}

/// A budget token taken for a retry that is waiting to be sent: given back
/// if the wait is cancelled (the request's future dropped), so a caller's
/// timeout does not spend the budget on retries that never happen.
struct Token<'a>(Option<(&'a RetryBudget, Withdrawal)>);

impl Token<'_> {
    /// The retry is being sent: the token stays spent.
    fn spend(mut self) {
        self.0 = None;
    }
}

impl Drop for Token<'_> {
    fn drop(&mut self) {
        if let Some((budget, paid)) = self.0 {
            budget.refund(paid);
        }
    }
}

impl<T, B, C> Transport<B> for Retry<T, C>
where
    T: Transport<B>,
    T::Body: Send,
    B: TryCloneBody + Send + 'static,
    C: Classify<T::Body, T::Error>,
{
    type Body = T::Body;
    type Error = RetryError<T::Error>;

    // Not an `async fn`: an `async fn` moves its arguments once more, from
    // the future's captures into its locals, on the first poll (a 224-byte
    // request copy per call); an `async move` block uses them in place.
    #[expect(clippy::manual_async_fn, reason = "saves a move of the request")]
    fn send(
        &self,
        mut req: Request<B>,
    ) -> impl Future<Output = Result<Response<T::Body>, Self::Error>> + Send {
        async move {
            let ctx = match self.begin(&mut req) {
                Ok(ctx) => ctx,
                Err(t) => {
                    return Err(RetryError::TimedOut {
                        cause: Cause::Timeout(t),
                        attempts: 0,
                    });
                }
            };
            let mut replay = Replay::of(&req, ctx.may_resend);
            let (attempt, outcome, sent) = if ctx.hedging {
                // The race holds two attempts and a timer: boxed, so requests
                // that are not hedged do not carry its size.
                let (a, o, hedges) =
                    Box::pin(self.attempt_classified(req, ctx, &mut replay, 0)).await;
                (a, o, 1 + hedges)
            } else if ctx.limits.is_unbounded() {
                // The common case, kept free of timer machinery; a final
                // answer goes straight back.
                let span = self.attempt_span(0, false);
                let fut = {
                    let _in = span.enter();
                    self.inner.send(req)
                };
                let mut fut = pin!(fut);
                let res = poll_fn(|cx| {
                    let _in = span.enter();
                    fut.as_mut().poll(cx)
                })
                .await;
                let outcome = self.shared.classifier.classify(&res);
                if !outcome.is_retryable() {
                    return Self::finish(res, 1);
                }
                (Attempt::Done(res), outcome, 1)
            } else {
                let a = self.attempt(req, ctx.limits, 0, false).await;
                let o = self.outcome(&a);
                (a, o, 1)
            };
            match Self::settle(attempt, outcome, sent) {
                Settled::Done(done) => done,
                // The retry loop is boxed: the success path carries a small
                // future, and a retry is about to sleep anyway.
                Settled::Retryable(attempt, after) => {
                    Box::pin(self.retry_after_failure(ctx, replay, attempt, after, sent)).await
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("custom")]
    struct Custom;

    #[test]
    fn error_type_follows_opentelemetry() {
        let status = Cause::Status(http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_type::<Custom>(&status), "503");
        let timeout = Cause::Timeout(TimeoutError::new(TimeoutPhase::Attempt, Duration::ZERO));
        assert_eq!(error_type::<Custom>(&timeout), "timeout");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            error_type::<std::io::Error>(&Cause::Transport(&refused)),
            "connect"
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            error_type::<std::io::Error>(&Cause::Transport(&reset)),
            "reset"
        );
        // Unrecognised errors: the transport error's type.
        assert_eq!(
            error_type::<Custom>(&Cause::Transport(&Custom)),
            std::any::type_name::<Custom>()
        );
    }
}
