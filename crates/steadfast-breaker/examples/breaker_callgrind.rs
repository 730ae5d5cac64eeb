//! A deterministic cost probe for the closed-state success path: `N` calls
//! through a breaker layer over a ready no-op transport, each polled once
//! with a no-op waker, as in `bench/benches/breaker.rs` (whose wall-clock
//! numbers a shared machine makes noisy). Modes: `base` (no breaker),
//! `count` (the default count window), `time` (a 30 s time window),
//! `origin` (the per-origin registry, count window).
//!
//! Meant to run under callgrind, twice per mode (`N` and `3N`), so that the
//! difference of the totals divided by `2N` is the cost of one call with the
//! start-up cost cancelled out:
//!
//! ```text
//! cargo build --release -p steadfast-breaker --example breaker_callgrind
//! for m in base count time origin; do for n in 10000 30000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$m.$n \
//!     target/release/examples/breaker_callgrind $m $n
//! done; done
//! ```
//!
//! Callgrind counts a clock read or an atomic read-modify-write as one
//! instruction, or a few: the time window's clock read costs more than its
//! count suggests (tens of nanoseconds on a VM).

use std::future::Future;
use std::hint::black_box;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

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

/// Polls a future that must be ready at once (inlined, as in the bench).
#[allow(clippy::inline_always)]
#[inline(always)]
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the call was not ready on first poll"),
    }
}

fn request(uri: &Uri) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    req
}

#[inline(never)]
fn run<T: Transport<()>>(transport: &T, uri: &Uri, n: u64) {
    for _ in 0..n {
        black_box(ready(transport.send(black_box(request(uri)))).is_ok());
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(Ok(n))) = (args.next(), args.next().map(|n| n.parse::<u64>())) else {
        eprintln!("usage: breaker_callgrind base|count|time|origin N");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let _guard = rt.enter();
    let uri = Uri::from_static("http://api.example.com/users");
    let time_window = || {
        BreakerConfig::builder()
            .window(SlidingWindow::time(Duration::from_secs(30)))
            .build()
            .expect("a valid config")
    };
    match mode.as_str() {
        "base" => run(&Noop, &uri, n),
        "count" => run(
            &Noop.with(BreakerLayer::new(BreakerConfig::default())),
            &uri,
            n,
        ),
        "time" => run(&Noop.with(BreakerLayer::new(time_window())), &uri, n),
        "origin" => run(
            &Noop.with(BreakerLayer::per_origin(BreakerConfig::default())),
            &uri,
            n,
        ),
        other => {
            eprintln!("unknown mode {other:?}: base, count, time or origin");
            std::process::exit(2);
        }
    }
}
