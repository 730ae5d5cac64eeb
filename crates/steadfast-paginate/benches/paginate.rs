//! Paginator benchmarks.
//!
//! - `paginate/overhead_{tiny,issue}_items`: the paginator (`items()` and
//!   `pages()`) against the loop a user would write by hand (typed envelope,
//!   `serde_json::from_slice`, next cursor into the URI), over the same
//!   in-process transport serving 100 pre-built pages of 100 items, so the
//!   difference is the paginator's own cost. Tiny items (~30 bytes of JSON)
//!   are the worst case; issue-sized items (~600 bytes) are typical.
//! - `paginate/prefetch_20ms`: 40 pages from the loopback FaultServer with
//!   20 ms latency per page, `prefetch(1)` against `prefetch(4)`.
//!
//! `cargo bench -p steadfast-paginate --bench paginate`
//!
//! On a shared machine, criterion's wall-clock times drift with the load of
//! other tenants by more than the 2 % in question. `PAGINATE_AB=<rounds>`
//! runs the overhead comparison interleaved instead: each round crawls once
//! with each contender, in a rotating order, timing the bench thread's
//! on-CPU time (`CLOCK_THREAD_CPUTIME_ID`: time the thread was
//! descheduled for other tenants does not count) and wall time; the ratio to
//! the hand-written loop is taken within the round, and the median over the
//! rounds printed with its quartiles:
//!
//! `PAGINATE_AB=101 cargo bench -p steadfast-paginate --bench paginate`
//!
//! The in-process transport serves its pages for free, which magnifies the
//! paginator's share; users paginate over HTTP. `PAGINATE_AB_LOOPBACK=<rounds>`
//! runs the same interleaved comparison, same three contenders and same
//! pages, over real HTTP/1.1 on loopback: a minimal hyper server on its own
//! thread and runtime serves the pre-built page bytes by URI, and every
//! contender sends through one bare hyper-util pooled client (keep-alive,
//! `TCP_NODELAY`), so the transport costs all three the same. It times the
//! whole process's on-CPU time (`CLOCK_PROCESS_CPUTIME_ID`: client and
//! server threads, what a machine pays for the crawl), the client thread's
//! alone, and wall time. Both variables may be set at once:
//!
//! `PAGINATE_AB_LOOPBACK=61 cargo bench -p steadfast-paginate --bench paginate`

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use futures_util::StreamExt as _;
use http::{Request, Response, Uri};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use steadfast_core::Transport;
use steadfast_paginate::{OffsetLimit, PageNumber, Paginator, Strategy};
use steadfast_testkit::FaultServer;

use common::{Contender, Crawl, Issue, Tiny, crawl, issue, page_of, pages, tiny};

fn overhead_for<T: DeserializeOwned + Send + 'static>(
    c: &mut Criterion,
    name: &str,
    item: fn(usize) -> serde_json::Value,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let crawl = crawl(item);
    let mut group = c.benchmark_group(format!("paginate/overhead_{name}"));
    group.throughput(Throughput::Elements(crawl.total));
    for (how, id) in
        Contender::ALL
            .into_iter()
            .zip(["hand_written_loop", "paginator_items", "paginator_pages"])
    {
        group.bench_function(id, |b| b.to_async(&rt).iter(|| crawl.run::<T>(how)));
    }
    group.finish();
}

fn overhead(c: &mut Criterion) {
    overhead_for::<Tiny>(c, "tiny_items", tiny);
    overhead_for::<Issue>(c, "issue_items", issue);
}

/// hyper-util's pooled client, the plainest real transport.
#[derive(Clone, Debug)]
struct Client(HyperClient<HttpConnector, Empty<Bytes>>);

impl Transport<Empty<Bytes>> for Client {
    type Body = hyper::body::Incoming;
    type Error = hyper_util::client::legacy::Error;

    async fn send(&self, req: Request<Empty<Bytes>>) -> Result<Response<Self::Body>, Self::Error> {
        self.0.request(req).await
    }
}

/// Crawls `start` with `strategy`, `k` pages in flight; returns the items.
async fn count_prefetched<S: Strategy>(
    client: &Client,
    strategy: S,
    k: usize,
    start: &Uri,
) -> usize {
    let p = Paginator::builder(client.clone(), strategy)
        .items_at("/data")
        .prefetch(k)
        .build()
        .unwrap();
    p.start(start.clone()).items::<Tiny>().count().await
}

fn prefetch(c: &mut Criterion) {
    const TOTAL: u64 = 1000;
    const SIZE: u64 = 25;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(FaultServer::start());
    let client = Client(HyperClient::builder(TokioExecutor::new()).build_http());

    let mut group = c.benchmark_group("paginate/prefetch_20ms");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(TOTAL));
    for (style, name) in [("page", "page_number"), ("offset", "offset_limit")] {
        let start: Uri = server
            .url(&format!(
                "/items?style={style}&per_page={SIZE}&total={TOTAL}&latency_ms=20"
            ))
            .parse()
            .unwrap();
        for k in [1, 4] {
            group.bench_with_input(BenchmarkId::new(name, format!("k{k}")), &k, |b, &k| {
                b.to_async(&rt).iter(|| async {
                    let count = if style == "page" {
                        let strategy = PageNumber::new().total_pages_at("/total_pages");
                        count_prefetched(&client, strategy, k, &start).await
                    } else {
                        let strategy = OffsetLimit::new().limit(SIZE).total_at("/total");
                        count_prefetched(&client, strategy, k, &start).await
                    };
                    assert_eq!(count as u64, TOTAL);
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, overhead, prefetch);

/// On-CPU time so far by `clock` (`ThreadCPUTime`, `ProcessCPUTime`).
fn cpu(clock: rustix::time::ClockId) -> Duration {
    let t = rustix::time::clock_gettime(clock);
    let secs = u64::try_from(t.tv_sec).unwrap_or_default();
    let nanos = u32::try_from(t.tv_nsec).unwrap_or_default();
    Duration::new(secs, nanos)
}

/// The clocks read around each crawl, in this order.
const CLOCKS: [&str; 3] = ["thread on-CPU", "process on-CPU", "wall"];

/// The bench thread's on-CPU time, the process's (every thread) and the
/// wall time since `epoch`.
fn clocks(epoch: Instant) -> [Duration; 3] {
    [
        cpu(rustix::time::ClockId::ThreadCPUTime),
        cpu(rustix::time::ClockId::ProcessCPUTime),
        epoch.elapsed(),
    ]
}

/// First quartile, median, third quartile.
fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

/// Crawls once with each contender (warm-up), then `rounds` rounds of one
/// crawl with each, in a rotating order. Returns, for each of [`CLOCKS`]
/// and each paginator contender, its time relative to the hand-written
/// loop's in the same round, then the hand-written loop's own times in
/// seconds.
fn interleave(rounds: usize, mut run: impl FnMut(Contender)) -> [[Vec<f64>; 3]; 3] {
    for how in Contender::ALL {
        run(how);
    }
    let epoch = Instant::now();
    let mut ratios: [[Vec<f64>; 3]; 3] = Default::default();
    for round in 0..rounds {
        let mut took = [[Duration::ZERO; 3]; 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            let before = clocks(epoch);
            run(Contender::ALL[which]);
            let after = clocks(epoch);
            for (took, (after, before)) in took[which].iter_mut().zip(after.iter().zip(before)) {
                *took = after.saturating_sub(before);
            }
        }
        for (clock, ratios) in ratios.iter_mut().enumerate() {
            let hand = took[0][clock].as_secs_f64().max(1e-9);
            for (ratios, took) in ratios.iter_mut().zip(&took[1..]) {
                ratios.push(took[clock].as_secs_f64() / hand);
            }
            ratios[2].push(hand);
        }
    }
    ratios
}

/// Prints the median and quartiles of `ratios` for the clocks `shown`
/// (indices into [`CLOCKS`]), one line per paginator contender.
fn report(title: &str, rounds: usize, mut ratios: [[Vec<f64>; 3]; 3], shown: &[usize]) {
    let pct = |r: f64| (r - 1.0) * 100.0;
    let hand: Vec<String> = shown
        .iter()
        .map(|&clock| {
            let (_, median, _) = quartiles(&mut ratios[clock][2]);
            format!("{} {:.2} ms", CLOCKS[clock], median * 1e3)
        })
        .collect();
    println!(
        "{title}: {rounds} rounds; hand-written loop per crawl, median: {}; \
         time relative to it:",
        hand.join(", ")
    );
    for (i, how) in Contender::ALL[1..].iter().enumerate() {
        let line: Vec<String> = shown
            .iter()
            .map(|&clock| {
                let (q1, median, q3) = quartiles(&mut ratios[clock][i]);
                format!(
                    "{} median {:+.2} % (quartiles {:+.2} to {:+.2} %)",
                    CLOCKS[clock],
                    pct(median),
                    pct(q1),
                    pct(q3)
                )
            })
            .collect();
        println!("  {:<8} {}", format!("{}()", how.mode()), line.join("; "));
    }
}

/// The interleaved overhead comparison in process; see the crate docs above.
fn interleaved_for<T: DeserializeOwned + Send + 'static>(
    rounds: usize,
    name: &str,
    item: fn(usize) -> serde_json::Value,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let crawl = crawl(item);
    let ratios = interleave(rounds, |how| rt.block_on(crawl.run::<T>(how)));
    report(name, rounds, ratios, &[0, 2]);
}

/// Connections the loopback servers have accepted so far.
static ACCEPTED: AtomicU64 = AtomicU64::new(0);

/// Serves `pages` (by [`page_of`] the request URI) over HTTP/1.1 on
/// 127.0.0.1 from a thread of its own with a single-threaded runtime, for
/// as long as the process lives; returns the address.
fn serve(pages: Arc<Vec<Bytes>>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::Builder::new()
        .name("loopback-server".to_owned())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    ACCEPTED.fetch_add(1, Ordering::Relaxed);
                    stream.set_nodelay(true).unwrap();
                    let pages = Arc::clone(&pages);
                    let service = service_fn(move |req: Request<Incoming>| {
                        let body = pages[page_of(req.uri())].clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                    });
                    tokio::spawn(async move {
                        // The client hanging up ends the connection.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })
        .unwrap();
    addr
}

/// The interleaved overhead comparison over loopback HTTP; see the crate
/// docs above.
fn loopback_for<T: DeserializeOwned + Send + 'static>(
    rounds: usize,
    name: &str,
    item: fn(usize) -> serde_json::Value,
) {
    let addr = serve(pages(item));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client(HyperClient::builder(TokioExecutor::new()).build(connector));
    let crawl = Crawl::new(client, &format!("http://{addr}/items"));
    let mut opened = [0; 3];
    let ratios = interleave(rounds, |how| {
        let before = ACCEPTED.load(Ordering::Relaxed);
        rt.block_on(crawl.run::<T>(how));
        opened[how as usize] += ACCEPTED.load(Ordering::Relaxed) - before;
    });
    let title = format!("{name} over loopback HTTP (thread = client)");
    report(&title, rounds, ratios, &[1, 0, 2]);
    let [hand, items, pages] = opened;
    println!(
        "  connections opened: hand-written {hand}, items() {items}, pages() {pages} \
         ({} crawls each)",
        rounds + 1
    );
}

fn rounds(var: &str) -> Option<usize> {
    let rounds = std::env::var(var).ok()?;
    Some(
        rounds
            .parse()
            .unwrap_or_else(|_| panic!("{var} must be a number of rounds")),
    )
}

fn main() {
    let (in_process, loopback) = (rounds("PAGINATE_AB"), rounds("PAGINATE_AB_LOOPBACK"));
    if let Some(rounds) = in_process {
        interleaved_for::<Tiny>(rounds, "tiny items (~30 bytes)", tiny);
        interleaved_for::<Issue>(rounds, "issue-sized items (~600 bytes)", issue);
    }
    if let Some(rounds) = loopback {
        loopback_for::<Tiny>(rounds, "tiny items (~30 bytes)", tiny);
        loopback_for::<Issue>(rounds, "issue-sized items (~600 bytes)", issue);
    }
    if in_process.is_some() || loopback.is_some() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
