//! Retry, success path: what a healthy call pays for being retryable.
//! steadfast's `Retry` layer over a ready no-op transport, side by side with
//! backon's `Retryable` and `tower::retry::Retry` (with a status policy)
//! around the same call; and steadfast's generic `retry` executor with
//! backon's own closure, which rebuilds the request on each attempt.
//!
//! `cargo bench -p steadfast-bench --bench retry -- --warm-up-time 1 --measurement-time 3`
//!
//! Every future here is ready on first poll, so each call is driven by one
//! poll with a no-op waker: what is measured is the retry wrapper, not a
//! runtime. Each iteration builds its request (the same way for every
//! contender), so read the differences from the baseline, not the totals.
//!
//! A retry wrapper must keep a copy of the request before the first attempt
//! consumes it; that copy is the main cost on the success path, and it grows
//! with the headers (a `HeaderMap` clone allocates). Both request shapes are
//! measured: a bare one and one with four typical headers.
//!
//! Instructions per call, for callgrind: `RETRY_LOOP=<n>` runs the contenders
//! whose name contains the first argument `n` times each, without criterion.
//! Run it with n and 2n under `valgrind --tool=callgrind` and divide the
//! difference of the totals by n:
//!
//! `RETRY_LOOP=2000 valgrind --tool=callgrind target/release/deps/retry-<hash> "defaults (bare"`

use std::future::{Future, Ready, ready as ready_fut};
use std::hint::black_box;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use backon::{ExponentialBuilder, Retryable};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use http::{Request, Response, Uri};
use steadfast_backoff::{Backoff, RetryConfig, RetryLayer};
use steadfast_core::{Outcome, Transport, TransportExt};
use tower::{Service, ServiceExt};

/// A transport that answers 200 at once.
#[derive(Clone, Copy, Debug)]
struct Noop;

impl Transport<()> for Noop {
    type Body = ();
    type Error = io::Error;

    async fn send(&self, _req: Request<()>) -> Result<Response<()>, io::Error> {
        Ok(Response::new(()))
    }
}

/// The same no-op as a tower service.
#[derive(Clone, Copy, Debug)]
struct NoopService;

impl Service<Request<()>> for NoopService {
    type Response = Response<()>;
    type Error = io::Error;
    type Future = Ready<Result<Response<()>, io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        ready_fut(Ok(Response::new(())))
    }
}

/// tower's retry policy: 3 retries of 5xx and errors, cloning the request.
#[derive(Clone, Copy, Debug)]
struct StatusPolicy {
    left: u32,
}

impl tower::retry::Policy<Request<()>, Response<()>, io::Error> for StatusPolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<()>,
        result: &mut Result<Response<()>, io::Error>,
    ) -> Option<Self::Future> {
        let failed = result
            .as_ref()
            .map_or(true, |r| r.status().is_server_error());
        (failed && self.left > 0).then(|| {
            self.left -= 1;
            ready_fut(())
        })
    }

    fn clone_request(&mut self, req: &Request<()>) -> Option<Request<()>> {
        let mut copy = Request::new(());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// Polls a future that must be ready at once.
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked call was not ready on first poll"),
    }
}

fn request(uri: &Uri, headers: bool) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    if headers {
        let h = req.headers_mut();
        h.insert("accept", http::HeaderValue::from_static("application/json"));
        h.insert(
            "user-agent",
            http::HeaderValue::from_static("steadfast-bench/0.0"),
        );
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer 0123456789abcdef"),
        );
        h.insert("x-request-id", http::HeaderValue::from_static("4b1d-90c2"));
    }
    req
}

/// The server-error check every contender applies to the response.
fn server_error(r: &Result<Response<()>, io::Error>) -> Outcome {
    match r {
        Ok(res) if !res.status().is_server_error() => Outcome::Success,
        _ => Outcome::RETRY,
    }
}

/// Runs each contender: measured by criterion, or called in a plain loop.
enum Runner<'a> {
    Criterion(BenchmarkGroup<'a, WallTime>),
    /// `calls` calls of each contender whose name contains `filter`.
    Loop {
        filter: String,
        calls: u64,
    },
}

impl Runner<'_> {
    fn bench_function<R>(&mut self, name: String, mut call: impl FnMut() -> R) {
        match self {
            Self::Criterion(g) => {
                g.bench_function(name, |b| b.iter(&mut call));
            }
            Self::Loop { filter, calls } => {
                if name.contains(filter.as_str()) {
                    for _ in 0..*calls {
                        black_box(call());
                    }
                }
            }
        }
    }

    fn finish(self) {
        if let Self::Criterion(g) = self {
            g.finish();
        }
    }
}

fn success_path(mut g: Runner<'_>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let uri = Uri::from_static("http://api.example.com/users");

    for (shape, headers) in [("bare request", false), ("4 headers", true)] {
        g.bench_function(
            format!("baseline: no-op transport, no retry ({shape})"),
            || ready(Noop.send(black_box(request(&uri, headers)))).unwrap(),
        );

        let steadfast = Noop.with(RetryLayer::new(RetryConfig::default()));
        g.bench_function(
            format!("steadfast: Retry layer, defaults ({shape})"),
            || ready(steadfast.send(black_box(request(&uri, headers)))).unwrap(),
        );

        let same_check = Noop.with(RetryLayer::with_classifier(
            RetryConfig::default(),
            server_error,
        ));
        g.bench_function(
            format!("steadfast: Retry layer, 5xx classifier as the peers ({shape})"),
            || ready(same_check.send(black_box(request(&uri, headers)))).unwrap(),
        );

        let no_budget = Noop.with(RetryLayer::with_classifier(
            RetryConfig::builder().no_budget().build().unwrap(),
            server_error,
        ));
        g.bench_function(
            format!("steadfast: Retry layer, 5xx classifier, no budget ({shape})"),
            || ready(no_budget.send(black_box(request(&uri, headers)))).unwrap(),
        );

        g.bench_function(format!("backon: Retryable, exponential ({shape})"), || {
            ready(
                (|| async {
                    let res = Noop.send(black_box(request(&uri, headers))).await?;
                    if res.status().is_server_error() {
                        return Err(io::Error::other("server error"));
                    }
                    Ok(res)
                })
                .retry(ExponentialBuilder::default())
                .when(|_| true),
            )
            .unwrap()
        });

        // The generic executor, with the same closure as backon: the
        // operation rebuilds its request, so there is no copy to keep.
        g.bench_function(
            format!("steadfast: retry(), exponential, as backon ({shape})"),
            || {
                ready(steadfast_backoff::retry(
                    || async {
                        let res = Noop.send(black_box(request(&uri, headers))).await?;
                        if res.status().is_server_error() {
                            return Err(io::Error::other("server error"));
                        }
                        Ok(res)
                    },
                    Backoff::default(),
                    |_| true,
                ))
                .unwrap()
            },
        );

        let mut svc = tower::retry::Retry::new(StatusPolicy { left: 3 }, NoopService);
        g.bench_function(
            format!("tower: retry::Retry, status policy ({shape})"),
            || {
                ready(svc.ready()).unwrap();
                ready(svc.call(black_box(request(&uri, headers)))).unwrap()
            },
        );
    }
    g.finish();
}

fn main() {
    if let Ok(calls) = std::env::var("RETRY_LOOP") {
        let calls = calls.parse().expect("RETRY_LOOP must be a number of calls");
        let filter = std::env::args().nth(1).unwrap_or_default();
        success_path(Runner::Loop { filter, calls });
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    success_path(Runner::Criterion(c.benchmark_group("retry_success_path")));
    c.final_summary();
}
