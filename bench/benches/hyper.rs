//! HyperTransport vs the bare hyper-util legacy client it wraps: requests
//! per second against the same loopback server, at concurrency 1 and 100,
//! in one criterion group so the ratio comes from one run. A third line
//! wraps the bare client in `tokio::time::timeout`, the least a caller adds
//! to get any timeout; HyperTransport always runs a read timeout. A fourth
//! runs HyperTransport with steadfast-pool's `PoolStats` as its observer:
//! pool metrics on vs off.
//!
//! The server is a minimal hyper HTTP/1.1 server answering `200 ok` on its
//! own thread and runtime; each client runs on a current-thread runtime on
//! the bench thread, so both sides get one core of the two. Both clients
//! use `TCP_NODELAY` and a pool large enough for 100 connections; the
//! transport runs with its default timeouts and the no-op pool observer
//! (chosen explicitly, so the `pool-stats` feature, if another package
//! enables it, does not swap in `PoolStats`).
//!
//! `cargo bench -p steadfast-bench --bench hyper -- --warm-up-time 1 --measurement-time 3`
//!
//! On a shared machine the load of other tenants drifts during a criterion
//! run, which measures one contender for seconds, then the next: a few
//! percent of drift hides a few percent of overhead. `HYPER_AB=<rounds>`
//! runs an interleaved A/B comparison instead: each round sends the same
//! number of requests through every contender, in a rotating order, and
//! the ratio to the bare client is taken within the round, so drift slower
//! than a round cancels out. It prints the median and quartiles of those
//! ratios for wall time (req/s) and for on-CPU time: of all threads of the
//! process (`/proc/self/task/*/schedstat`, so server included), and of the
//! client's thread alone (time descheduled for other tenants not counted):
//!
//! `HYPER_AB=41 cargo bench -p steadfast-bench --bench hyper`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use steadfast_bench::{process_cpu_time, quartiles, thread_cpu_time};
use steadfast_core::Transport;
use steadfast_core::pool::NoopPoolObserver;
use steadfast_hyper::HyperTransport;
use tokio::runtime::Runtime;

/// Starts the server on its own thread; returns its address.
fn start_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tcp.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

/// The transport's default read timeout, for the bare client's timeout line.
const READ_TIMEOUT: Duration = steadfast_hyper::config::DEFAULT_READ_TIMEOUT;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn request(uri: &http::Uri) -> http::Request<Empty<Bytes>> {
    http::Request::get(uri.clone()).body(Empty::new()).unwrap()
}

/// Runs `iters` requests spread over `concurrency` tasks; returns the wall time.
async fn drive<F, Fut>(iters: u64, concurrency: u64, send: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let per_task = iters.div_ceil(concurrency);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let send = send.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    send().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Normalise to exactly `iters` requests.
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * concurrency) as f64)
}

/// The server, the runtime the clients run on, and every contender.
struct Setup {
    rt: Runtime,
    uri: http::Uri,
    bare: Client<HttpConnector, Empty<Bytes>>,
    /// The transport with the no-op observer.
    transport: HyperTransport,
    /// The same feeding steadfast-pool's `PoolStats` (issue 8's "metrics on
    /// vs off"): exact pool events plus the counters.
    observed: HyperTransport,
    /// The same with `PoolStats` counters only (no connection tracking).
    counters_only: HyperTransport,
}

impl Setup {
    fn new() -> Self {
        let addr = start_server();
        let rt = runtime();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let bare = rt.block_on(async {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_max_idle_per_host(100)
                .build(connector)
        });
        let with_observer = |o: Arc<dyn steadfast_core::pool::PoolObserver>| {
            HyperTransport::builder().pool_observer(o).build().unwrap()
        };
        let counters = steadfast_pool::PoolStats::builder()
            .track_connections(false)
            .build()
            .unwrap();
        Self {
            uri: format!("http://{addr}/").parse().unwrap(),
            bare,
            transport: with_observer(Arc::new(NoopPoolObserver)),
            observed: with_observer(steadfast_pool::PoolStats::new()),
            counters_only: with_observer(counters),
            rt,
        }
    }

    /// `iters` requests through the bare client (inside
    /// `tokio::time::timeout` with `timeout`); the wall time.
    fn bare(&self, iters: u64, concurrency: u64, timeout: bool) -> Duration {
        let (client, uri) = (self.bare.clone(), self.uri.clone());
        self.rt.block_on(drive(iters, concurrency, move || {
            let (client, req) = (client.clone(), request(&uri));
            async move {
                let res = if timeout {
                    tokio::time::timeout(READ_TIMEOUT, client.request(req))
                        .await
                        .unwrap()
                } else {
                    client.request(req).await
                };
                let body = res.unwrap().into_body().collect().await.unwrap();
                assert_eq!(body.to_bytes().len(), 2);
            }
        }))
    }

    /// `iters` requests through `t`; the wall time.
    fn transport(&self, t: &HyperTransport, iters: u64, concurrency: u64) -> Duration {
        let (t, uri) = (t.clone(), self.uri.clone());
        self.rt.block_on(drive(iters, concurrency, move || {
            let (t, req) = (t.clone(), request(&uri));
            async move {
                let res = t.send(req).await.unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body.len(), 2);
            }
        }))
    }
}

fn bench(c: &mut Criterion) {
    let setup = Setup::new();
    let mut group = c.benchmark_group("hyper_transport");
    group.throughput(Throughput::Elements(1));
    for concurrency in [1_u64, 100] {
        for (name, timeout) in [
            ("bare_hyper_util", false),
            ("bare_hyper_util_timeout", true),
        ] {
            group.bench_with_input(
                BenchmarkId::new(name, concurrency),
                &concurrency,
                |b, &n| b.iter_custom(|iters| setup.bare(iters, n, timeout)),
            );
        }
        for (name, t) in [
            ("steadfast_hyper", &setup.transport),
            ("steadfast_hyper_pool_stats", &setup.observed),
        ] {
            group.bench_with_input(
                BenchmarkId::new(name, concurrency),
                &concurrency,
                |b, &n| b.iter_custom(|iters| setup.transport(t, iters, n)),
            );
        }
    }
    group.finish();
}

/// The interleaved A/B comparison (see the crate docs above): `rounds`
/// rounds per concurrency, every contender once per round.
fn interleaved(rounds: usize) {
    let setup = Setup::new();
    let s = &setup;
    let contenders: [(&str, Run<'_>); 4] = [
        (
            "bare_hyper_util",
            Box::new(|iters, n| s.bare(iters, n, false)),
        ),
        (
            "steadfast_hyper",
            Box::new(|iters, n| s.transport(&s.transport, iters, n)),
        ),
        (
            "steadfast_hyper_pool_stats",
            Box::new(|iters, n| s.transport(&s.observed, iters, n)),
        ),
        (
            "steadfast_hyper_pool_counters",
            Box::new(|iters, n| s.transport(&s.counters_only, iters, n)),
        ),
    ];
    for (concurrency, iters) in [(1_u64, 2_000_u64), (100, 5_000)] {
        compare(&contenders, rounds, concurrency, iters);
    }
}

/// One contender: runs `iters` requests at a concurrency, returns the wall time.
type Run<'a> = Box<dyn Fn(u64, u64) -> Duration + 'a>;

/// The rounds of one concurrency: every contender once per round, the
/// first one the reference, the second the one without pool metrics.
fn compare(contenders: &[(&str, Run<'_>)], rounds: usize, concurrency: u64, iters: u64) {
    // Warm up: connections open, caches warm.
    for (_, run) in contenders {
        run(iters, concurrency);
    }
    let mut wall = vec![Vec::new(); contenders.len()];
    let mut cpu = vec![Vec::new(); contenders.len()];
    let mut client = vec![Vec::new(); contenders.len()];
    // Pool metrics on vs off: the observed transports against the plain one.
    let mut metrics = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        let mut took = vec![(Duration::ZERO, Duration::ZERO, Duration::ZERO); contenders.len()];
        for k in 0..contenders.len() {
            let i = (round + k) % contenders.len();
            let cpu_before = process_cpu_time().unwrap_or_default();
            let client_before = thread_cpu_time().unwrap_or_default();
            let elapsed = contenders[i].1(iters, concurrency);
            took[i] = (
                elapsed,
                process_cpu_time()
                    .unwrap_or_default()
                    .saturating_sub(cpu_before),
                thread_cpu_time()
                    .unwrap_or_default()
                    .saturating_sub(client_before),
            );
        }
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        for i in 1..contenders.len() {
            wall[i].push(ratio(took[0].0, took[i].0));
            cpu[i].push(ratio(took[i].1, took[0].1));
            client[i].push(ratio(took[i].2, took[0].2));
            metrics[i].push(ratio(took[1].0, took[i].0));
        }
    }
    println!("concurrency {concurrency}, {rounds} rounds of {iters} requests each:");
    for i in 1..contenders.len() {
        let (w, c) = (quartiles(&mut wall[i]), quartiles(&mut cpu[i]));
        let t = quartiles(&mut client[i]);
        println!(
            "  {:<28} req/s vs bare: median {:.3} (quartiles {:.3}-{:.3}); \
             CPU time vs bare: process {:.3} ({:.3}-{:.3}), \
             client thread {:.3} ({:.3}-{:.3})",
            contenders[i].0, w.1, w.0, w.2, c.1, c.0, c.2, t.1, t.0, t.2
        );
    }
    for i in 2..contenders.len() {
        let m = quartiles(&mut metrics[i]);
        println!(
            "  {:<28} req/s vs steadfast_hyper without an observer: median {:.3} ({:.3}-{:.3})",
            contenders[i].0, m.1, m.0, m.2
        );
    }
}

fn main() {
    if let Ok(rounds) = std::env::var("HYPER_AB") {
        interleaved(rounds.parse().expect("HYPER_AB must be a number of rounds"));
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
