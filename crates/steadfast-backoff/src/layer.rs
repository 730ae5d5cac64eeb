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
use steadfast_core::{
    Classify, Deadline, DefaultClassifier, ErrorClass, Layer, NotReplayable, Outcome, TimeoutError,
    TimeoutPhase, Transport, TryCloneBody,
};
use tokio::time::Instant;

use crate::budget::RetryBudget;
use crate::config::{BudgetChoice, HedgeDelay, RetryConfig};
use crate::error::{Cause, RetryCause, RetryError};
use crate::future::AttemptFuture;
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
    /// Retries sent.
    pub retries: u64,
    /// Hedges sent.
    pub hedges: u64,
    /// Hedges that answered before the attempt they hedged.
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
}

fn error_type(cause: &RetryCause<'_>) -> &'static str {
    match cause {
        Cause::Status(_) => "http_status",
        Cause::Timeout(_) => "timeout",
        Cause::Transport(e) => match ErrorClass::of(*e) {
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout(_) => "timeout",
            ErrorClass::Reset => "reset",
            _ => "other",
        },
    }
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
        let end = Instant::now() + limit;
        match total {
            Some(t) if t.0 <= end => Some(t),
            _ => Some((end, TimeoutError::new(TimeoutPhase::Attempt, limit))),
        }
    }
}

impl<T, C> Retry<T, C> {
    /// One attempt, cut short by the attempt timeout and the deadline. A
    /// hand-written future (not an `async fn`) so the request is moved once,
    /// into the transport's future, and not also kept as a parameter.
    fn attempt<B>(
        &self,
        req: Request<B>,
        limits: Limits,
    ) -> AttemptFuture<impl Future<Output = Result<Response<T::Body>, T::Error>> + Send>
    where
        T: Transport<B>,
    {
        let fut = self.inner.send(req);
        match limits.attempt_end() {
            None => AttemptFuture::Plain { fut },
            Some((at, err)) => AttemptFuture::Timed {
                fut: tokio::time::timeout_at(at, fut),
                err,
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
    /// `delay` (if the budget allows): the first final answer wins and the
    /// other attempt is cancelled by being dropped.
    async fn hedged<B>(
        &self,
        first: Request<B>,
        template: &mut Template<B>,
        delay: Option<Duration>,
        limits: Limits,
    ) -> (Attempt<T::Body, T::Error>, Outcome)
    where
        T: Transport<B>,
        B: TryCloneBody,
        C: Classify<T::Body, T::Error>,
    {
        let shared = &*self.shared;
        let started = Instant::now();
        let mut primary = pin!(self.attempt(first, limits));
        let mut hedge = pin!(Slot::Idle);
        let mut timer = pin!(delay.map(|d| tokio::time::sleep_until(started + d)));
        let mut hedge_started = None;
        let mut primary_failed = None;
        let mut hedge_failed = None;
        let record = |since: Instant| {
            if let Some(h) = &shared.histogram {
                h.record(since.elapsed());
            }
        };
        poll_fn(|cx| {
            loop {
                if primary_failed.is_none()
                    && let Poll::Ready(a) = primary.as_mut().poll(cx)
                {
                    let o = self.outcome(&a);
                    if !o.is_retryable() {
                        record(started);
                        return Poll::Ready((a, o));
                    }
                    primary_failed = Some((a, o));
                }
                if let Some(Poll::Ready(a)) = hedge.as_mut().poll_running(cx) {
                    hedge.set(Slot::Done);
                    let o = self.outcome(&a);
                    if !o.is_retryable() {
                        shared.counters.hedges_won.fetch_add(1, Ordering::Relaxed);
                        if let Some(t) = hedge_started {
                            record(t);
                        }
                        tracing::debug!(retry.name = %shared.config.name, "hedge won");
                        return Poll::Ready((a, o));
                    }
                    hedge_failed = Some((a, o));
                }
                let hedge_pending = matches!(*hedge, Slot::Running { .. });
                if !hedge_pending && let Some(failed) = primary_failed.take() {
                    // Everything sent has failed: report the latest news.
                    return Poll::Ready(hedge_failed.take().unwrap_or(failed));
                }
                if matches!(*hedge, Slot::Idle)
                    && let Some(sleep) = timer.as_mut().as_pin_mut()
                    && sleep.poll(cx).is_ready()
                {
                    timer.set(None);
                    let now = Instant::now();
                    let copy = template.request();
                    let allowed = shared.budget.as_ref().is_none_or(|b| b.try_withdraw(now));
                    match copy {
                        Ok(req) if allowed => {
                            shared.counters.hedges.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(
                                retry.name = %shared.config.name,
                                retry.hedge_delay_ms = delay.unwrap_or_default().as_millis() as u64,
                                "hedging request"
                            );
                            hedge_started = Some(now);
                            hedge.set(Slot::Running {
                                fut: self.attempt(req, limits),
                            });
                            continue;
                        }
                        Ok(_) => {
                            shared.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(retry.name = %shared.config.name, "hedge refused by the retry budget");
                            hedge.set(Slot::Done);
                        }
                        Err(_) => hedge.set(Slot::Done),
                    }
                }
                return Poll::Pending;
            }
        })
        .await
    }

    fn report_retry(
        &self,
        attempt: u32,
        delay: Duration,
        from_server: bool,
        cause: RetryCause<'_>,
    ) {
        let shared = &*self.shared;
        shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            retry.name = %shared.config.name,
            http.request.resend_count = attempt,
            http.response.status_code = cause.status().map(|s| s.as_u16()),
            error.type = error_type(&cause),
            retry.delay_ms = delay.as_millis() as u64,
            retry.from_server = from_server,
            retry.cause = %cause,
            "retrying request"
        );
        if let Some(hook) = &shared.config.on_retry {
            hook(attempt, delay, cause);
        }
    }

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
        tracing::debug!(
            retry.name = %shared.config.name,
            http.request.resend_count = attempts - 1,
            error.type = error_type(&attempt.cause()),
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
                headers: req.headers().clone(),
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
    /// Bookkeeping before the first attempt: counters, budget deposit,
    /// deadline, safety.
    fn begin<B>(&self, req: &mut Request<B>) -> Ctx {
        let shared = &*self.shared;
        let config = &shared.config;
        let index = shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(budget) = &shared.budget {
            budget.deposit();
        }
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
                Limits {
                    deadline: Some(deadline),
                    total: deadline.remaining_at(now),
                    attempt_timeout: config.attempt_timeout,
                }
            }
        };
        let safety = if config.retry_non_idempotent {
            Safety::Idempotent
        } else {
            Safety::of(req, &config.idempotency_header)
        };
        let hedging = config.hedging.is_some() && safety == Safety::Idempotent;
        Ctx {
            index,
            limits,
            safety,
            hedging,
            may_resend: config.backoff.max_retries > 0 || hedging,
        }
    }

    /// One attempt, hedged when that applies, with its outcome.
    async fn attempt_classified<B>(
        &self,
        req: Request<B>,
        ctx: Ctx,
        replay: &mut Replay<B>,
    ) -> (Attempt<T::Body, T::Error>, Outcome)
    where
        T: Transport<B>,
        B: TryCloneBody,
        C: Classify<T::Body, T::Error>,
    {
        if let (Replay::Template(template), true) = (replay, ctx.hedging) {
            let delay = self.hedge_delay();
            return self.hedged(req, template, delay, ctx.limits).await;
        }
        let a = self.attempt(req, ctx.limits).await;
        let o = self.outcome(&a);
        (a, o)
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
    async fn retry_after_failure<B>(
        &self,
        ctx: Ctx,
        mut replay: Replay<B>,
        mut attempt: Attempt<T::Body, T::Error>,
        mut after: Option<Duration>,
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
                (Decision::Retry { delay, from_server }, Ok(copy)) => {
                    self.report_retry(state.attempts() - 1, delay, from_server, attempt.cause());
                    // Release the failed response (and its connection) before waiting.
                    drop(attempt);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    copy
                }
                (Decision::Stop(stop), _) => {
                    return self.give_up(stop, attempt, state.attempts(), replay.method());
                }
                (_, Err(reason)) => {
                    return self.give_up(
                        Stop::NotReplayable(reason),
                        attempt,
                        state.attempts(),
                        replay.method(),
                    );
                }
            };
            let (a, outcome) = self.attempt_classified(next, ctx, &mut replay).await;
            (attempt, after) = match Self::settle(a, outcome, state.attempts()) {
                Settled::Done(done) => return done,
                Settled::Retryable(a, after) => (a, after),
            };
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
            let ctx = self.begin(&mut req);
            let mut replay = Replay::of(&req, ctx.may_resend);
            let (attempt, outcome) = if ctx.hedging {
                // The race holds two attempts and a timer: boxed, so requests
                // that are not hedged do not carry its size.
                Box::pin(self.attempt_classified(req, ctx, &mut replay)).await
            } else if ctx.limits.is_unbounded() {
                // The common case, kept free of timer machinery; a final
                // answer goes straight back.
                let res = self.inner.send(req).await;
                let outcome = self.shared.classifier.classify(&res);
                if !outcome.is_retryable() {
                    return Self::finish(res, 1);
                }
                (Attempt::Done(res), outcome)
            } else {
                let a = self.attempt(req, ctx.limits).await;
                let o = self.outcome(&a);
                (a, o)
            };
            match Self::settle(attempt, outcome, 1) {
                Settled::Done(done) => done,
                // The retry loop is boxed: the success path carries a small
                // future, and a retry is about to sleep anyway.
                Settled::Retryable(attempt, after) => {
                    Box::pin(self.retry_after_failure(ctx, replay, attempt, after)).await
                }
            }
        }
    }
}
