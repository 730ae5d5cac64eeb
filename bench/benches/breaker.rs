//! Circuit breaker, closed-state success path: the cost a healthy service
//! pays for having a breaker. steadfast's `Breaker` layer over a ready no-op
//! transport, side by side with failsafe's future-aware breaker and
//! seatbelt's (Microsoft's oxidizer) breaker over the same no-op call.
//!
//! `cargo bench -p steadfast-bench --bench breaker -- --warm-up-time 1 --measurement-time 3`
//!
//! Every future here is ready on first poll, so each call is driven by one
//! poll with a no-op waker: what is measured is the breaker, not a runtime.

use std::future::Future;
use std::hint::black_box;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, Uri};
use steadfast_breaker::{BreakerConfig, BreakerLayer, SlidingWindow};
use steadfast_core::{Transport, TransportExt};

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

/// Polls a future that must be ready at once.
///
/// Always inlined, so that every future is polled in its own benchmark's
/// frame, as `.await` polls it in its caller's. Left to the inliner, an
/// instantiation shared by several benchmarks (steadfast's three layers share
/// one future type) is called out of line and pays a copy of the whole future
/// that a future used by one benchmark does not: that measured the inliner's
/// call-site count, not the breaker.
#[allow(clippy::inline_always)]
#[inline(always)]
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked call was not ready on first poll"),
    }
}

fn request(uri: &Uri) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    req
}

fn closed_success(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let uri = Uri::from_static("http://api.example.com/users");
    let mut g = c.benchmark_group("breaker_closed_success");

    g.bench_function("baseline: no-op transport, no breaker", |b| {
        b.iter(|| ready(Noop.send(black_box(request(&uri)))).unwrap());
    });

    let steadfast = Noop.with(BreakerLayer::new(BreakerConfig::default()));
    g.bench_function("steadfast: Breaker layer (count window, defaults)", |b| {
        b.iter(|| ready(steadfast.send(black_box(request(&uri)))).unwrap());
    });

    // The same with core's DefaultClassifier, which reads the wall clock on
    // every response (for HTTP-date Retry-After): shows what that costs.
    let default_classifier = Noop.with(
        BreakerLayer::new(BreakerConfig::default()).classify(steadfast_core::DefaultClassifier),
    );
    g.bench_function("steadfast: Breaker layer + core DefaultClassifier", |b| {
        b.iter(|| ready(default_classifier.send(black_box(request(&uri)))).unwrap());
    });

    let time_window = Noop.with(BreakerLayer::new(
        BreakerConfig::builder()
            .window(SlidingWindow::time(Duration::from_secs(30)))
            .build()
            .unwrap(),
    ));
    g.bench_function("steadfast: Breaker layer (30 s time window)", |b| {
        b.iter(|| ready(time_window.send(black_box(request(&uri)))).unwrap());
    });

    let per_origin = Noop.with(BreakerLayer::per_origin(BreakerConfig::default()));
    g.bench_function("steadfast: per-origin registry (count window)", |b| {
        b.iter(|| ready(per_origin.send(black_box(request(&uri)))).unwrap());
    });

    {
        use failsafe::futures::CircuitBreaker as _;
        let failsafe = failsafe::Config::new().build();
        g.bench_function("failsafe: futures CircuitBreaker::call (defaults)", |b| {
            b.iter(|| ready(failsafe.call(Noop.send(black_box(request(&uri))))).unwrap());
        });
    }

    {
        use layered::{Execute, Service as _, Stack as _};
        use seatbelt::breaker::Breaker;
        use seatbelt::{RecoveryInfo, ResilienceContext};

        let clock = tick::Clock::new_tokio();
        let context = ResilienceContext::new(&clock).name("bench");
        let seatbelt = (
            Breaker::layer("bench", &context)
                .recovery_with(|r: &Result<Response<()>, io::Error>, _| match r {
                    Ok(_) => RecoveryInfo::never(),
                    Err(_) => RecoveryInfo::retry(),
                })
                .rejected_input_error(|_, _| io::Error::other("circuit open")),
            Execute::new(|req: Request<()>| async move { Noop.send(req).await }),
        )
            .into_service();
        g.bench_function("seatbelt: Breaker layer (defaults)", |b| {
            b.iter(|| ready(seatbelt.execute(black_box(request(&uri)))).unwrap());
        });
    }

    g.finish();
}

criterion_group!(benches, closed_success);
criterion_main!(benches);
