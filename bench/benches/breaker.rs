//! Circuit breaker, closed-state success path: the cost a healthy service
//! pays for having a breaker. steadfast's `Breaker` layer over a ready no-op
//! transport, side by side with failsafe's future-aware breaker and
//! seatbelt's (Microsoft's oxidizer) breaker over the same no-op call.
//!
//! `cargo bench -p steadfast-bench --bench breaker -- --warm-up-time 1 --measurement-time 3`
//!
//! Every future here is ready on first poll, so each call is driven by one
//! poll with a no-op waker: what is measured is the breaker, not a runtime.
//!
//! The differences sought are a few dozen nanoseconds, which the load of
//! other tenants on a shared machine, drifting between one criterion
//! benchmark and the next, easily hides. `BREAKER_AB=<rounds>` runs an
//! interleaved comparison instead: each round makes the same number of
//! calls through every contender, in a rotating order, and takes each one's
//! overhead over the baseline within the round, so drift slower than a
//! round cancels out. It prints the median and quartiles over the rounds of
//! that overhead (nanoseconds per call of the bench thread's on-CPU time,
//! so time descheduled for other tenants does not count) and of
//! failsafe's and seatbelt's overhead divided by steadfast's:
//!
//! `BREAKER_AB=201 cargo bench -p steadfast-bench --bench breaker`

use std::future::Future;
use std::hint::black_box;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::Criterion;
use http::{Request, Response, Uri};
use steadfast_bench::{quartiles, thread_cpu_time};
use steadfast_breaker::{Breaker, BreakerConfig, BreakerLayer, SlidingWindow};
use steadfast_core::{DefaultClassifier, Transport, TransportExt};

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

/// Every contender, set up once for the criterion and the A/B modes.
struct Setup<FS, SB> {
    uri: Uri,
    steadfast: Breaker<Noop>,
    default_classifier: Breaker<Noop, DefaultClassifier>,
    time_window: Breaker<Noop>,
    per_origin: Breaker<Noop>,
    failsafe: FS,
    seatbelt: SB,
}

type NoopResult = Result<Response<()>, io::Error>;

fn setup() -> Setup<
    impl failsafe::futures::CircuitBreaker,
    impl layered::Service<Request<()>, Out = NoopResult>,
> {
    use layered::{Execute, Stack as _};
    use seatbelt::breaker::Breaker;
    use seatbelt::{RecoveryInfo, ResilienceContext};

    let clock = tick::Clock::new_tokio();
    let context = ResilienceContext::new(&clock).name("bench");
    let seatbelt = (
        Breaker::layer("bench", &context)
            .recovery_with(|r: &NoopResult, _| match r {
                Ok(_) => RecoveryInfo::never(),
                Err(_) => RecoveryInfo::retry(),
            })
            .rejected_input_error(|_, _| io::Error::other("circuit open")),
        Execute::new(|req: Request<()>| async move { Noop.send(req).await }),
    )
        .into_service();
    Setup {
        uri: Uri::from_static("http://api.example.com/users"),
        steadfast: Noop.with(BreakerLayer::new(BreakerConfig::default())),
        // The same with core's DefaultClassifier, which reads the wall clock
        // on every response (for HTTP-date Retry-After): shows what that costs.
        default_classifier: Noop
            .with(BreakerLayer::new(BreakerConfig::default()).classify(DefaultClassifier)),
        time_window: Noop.with(BreakerLayer::new(
            BreakerConfig::builder()
                .window(SlidingWindow::time(Duration::from_secs(30)))
                .build()
                .unwrap(),
        )),
        per_origin: Noop.with(BreakerLayer::per_origin(BreakerConfig::default())),
        failsafe: failsafe::Config::new().build(),
        seatbelt,
    }
}

/// One call per contender, each its own closure (and so its own
/// instantiation of `ready`), in the A/B table's order: the baseline first,
/// steadfast's count window second.
fn contenders<FS, SB>(s: &Setup<FS, SB>) -> Vec<(&'static str, Calls<'_>)>
where
    FS: failsafe::futures::CircuitBreaker,
    SB: layered::Service<Request<()>, Out = NoopResult>,
{
    vec![
        (
            BASELINE,
            timed(move || ready(Noop.send(black_box(request(&s.uri))))),
        ),
        (
            STEADFAST,
            timed(move || ready(s.steadfast.send(black_box(request(&s.uri))))),
        ),
        (
            "steadfast: Breaker layer + core DefaultClassifier",
            timed(move || ready(s.default_classifier.send(black_box(request(&s.uri))))),
        ),
        (
            "steadfast: Breaker layer (30 s time window)",
            timed(move || ready(s.time_window.send(black_box(request(&s.uri))))),
        ),
        (
            "steadfast: per-origin registry (count window)",
            timed(move || ready(s.per_origin.send(black_box(request(&s.uri))))),
        ),
        (
            FAILSAFE,
            timed(move || ready(s.failsafe.call(Noop.send(black_box(request(&s.uri)))))),
        ),
        (
            SEATBELT,
            timed(move || ready(s.seatbelt.execute(black_box(request(&s.uri))))),
        ),
    ]
}

const BASELINE: &str = "baseline: no-op transport, no breaker";
const STEADFAST: &str = "steadfast: Breaker layer (count window, defaults)";
const FAILSAFE: &str = "failsafe: futures CircuitBreaker::call (defaults)";
const SEATBELT: &str = "seatbelt: Breaker layer (defaults)";

/// A contender's calls: `n` of them, in a loop of its own, and the wall time
/// that took.
type Calls<'a> = Box<dyn Fn(u64) -> Duration + 'a>;

/// `call` made into [`Calls`].
fn timed<'a, E: std::fmt::Debug>(call: impl Fn() -> Result<Response<()>, E> + 'a) -> Calls<'a> {
    Box::new(move |n| {
        let start = Instant::now();
        for _ in 0..n {
            black_box(call().unwrap());
        }
        start.elapsed()
    })
}

/// The criterion group: every contender's calls timed as in the A/B mode.
fn closed_success(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let s = setup();
    let mut g = c.benchmark_group("breaker_closed_success");
    for (name, calls) in contenders(&s) {
        g.bench_function(name, |b| b.iter_custom(&calls));
    }
    g.finish();
}

/// The interleaved A/B comparison (see the crate docs above).
fn interleaved(rounds: usize) {
    const CALLS: u32 = 20_000;
    let rt = runtime();
    let _guard = rt.enter();
    let s = setup();
    let contenders = contenders(&s);
    let index = |name| contenders.iter().position(|(n, _)| *n == name).unwrap();
    let (base, ours, failsafe, seatbelt) = (
        index(BASELINE),
        index(STEADFAST),
        index(FAILSAFE),
        index(SEATBELT),
    );
    for (_, calls) in &contenders {
        calls(CALLS.into()); // warm up
    }
    // Per contender, the nanoseconds per call of each round.
    let mut ns = vec![Vec::with_capacity(rounds); contenders.len()];
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let i = (round + k) % contenders.len();
            // On-CPU time where readable, else wall time.
            let (before, wall) = (thread_cpu_time(), contenders[i].1(CALLS.into()));
            let took = match (before, thread_cpu_time()) {
                (Some(before), Some(after)) => after.saturating_sub(before),
                _ => wall,
            };
            ns[i].push(took.as_secs_f64() * 1e9 / f64::from(CALLS));
        }
    }
    // Overheads and their ratios are taken within each round.
    let over = |i: usize| -> Vec<f64> { ns[i].iter().zip(&ns[base]).map(|(x, b)| x - b).collect() };
    let ratio = |peer: usize| -> Vec<f64> {
        over(peer)
            .iter()
            .zip(over(ours))
            .map(|(p, o)| p / o.max(0.1))
            .collect()
    };
    println!(
        "{rounds} rounds of {CALLS} calls per contender; ns per call of on-CPU time, \
         median (quartiles):"
    );
    let b = quartiles(&mut ns[base].clone());
    println!(
        "  {:<52} {:.1} ns ({:.1} to {:.1})",
        contenders[base].0, b.1, b.0, b.2
    );
    for (i, (name, _)) in contenders.iter().enumerate().filter(|(i, _)| *i != base) {
        let q = quartiles(&mut over(i));
        println!("  {name:<52} +{:.1} ns ({:.1} to {:.1})", q.1, q.0, q.2);
    }
    let (f, sb) = (
        quartiles(&mut ratio(failsafe)),
        quartiles(&mut ratio(seatbelt)),
    );
    println!(
        "  overhead vs steadfast's count window: failsafe {:.1}x ({:.1} to {:.1}), \
         seatbelt {:.1}x ({:.1} to {:.1})",
        f.1, f.0, f.2, sb.1, sb.0, sb.2
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    if let Ok(rounds) = std::env::var("BREAKER_AB") {
        interleaved(
            rounds
                .parse()
                .expect("BREAKER_AB must be a number of rounds"),
        );
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    closed_success(&mut c);
    c.final_summary();
}
