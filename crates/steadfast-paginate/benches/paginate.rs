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

mod common;

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use futures_util::StreamExt as _;
use http::{Request, Response, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use steadfast_core::Transport;
use steadfast_paginate::{OffsetLimit, PageNumber, Paginator, Strategy};
use steadfast_testkit::FaultServer;

use common::{Contender, Issue, Tiny, crawl, issue, tiny};

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

/// The bench thread's on-CPU time so far (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u32::try_from(t.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

/// First quartile, median, third quartile.
fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

/// The interleaved overhead comparison; see the crate docs above.
fn interleaved_for<T: DeserializeOwned + Send + 'static>(
    rounds: usize,
    name: &str,
    item: fn(usize) -> serde_json::Value,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let crawl = crawl(item);
    let run = |which: usize| rt.block_on(crawl.run::<T>(Contender::ALL[which]));
    for which in 0..3 {
        run(which); // warm up
    }
    let (mut cpu, mut wall) = ([vec![], vec![]], [vec![], vec![]]);
    for round in 0..rounds {
        let mut took = [(Duration::ZERO, Duration::ZERO); 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            let (cpu0, wall0) = (thread_cpu().unwrap_or_default(), std::time::Instant::now());
            run(which);
            took[which] = (
                thread_cpu().unwrap_or_default().saturating_sub(cpu0),
                wall0.elapsed(),
            );
        }
        for i in 0..2 {
            cpu[i].push(took[i + 1].0.as_secs_f64() / took[0].0.as_secs_f64().max(1e-9));
            wall[i].push(took[i + 1].1.as_secs_f64() / took[0].1.as_secs_f64());
        }
    }
    println!("{name}: {rounds} rounds, time relative to the hand-written loop:");
    for (i, how) in Contender::ALL[1..].iter().enumerate() {
        let contender = format!("{}()", how.mode());
        let (c, w) = (quartiles(&mut cpu[i]), quartiles(&mut wall[i]));
        println!(
            "  {contender:<8} on-CPU median {:+.2} % (quartiles {:+.2} to {:+.2} %); \
             wall median {:+.2} % ({:+.2} to {:+.2} %)",
            (c.1 - 1.0) * 100.0,
            (c.0 - 1.0) * 100.0,
            (c.2 - 1.0) * 100.0,
            (w.1 - 1.0) * 100.0,
            (w.0 - 1.0) * 100.0,
            (w.2 - 1.0) * 100.0,
        );
    }
}

fn main() {
    if let Ok(rounds) = std::env::var("PAGINATE_AB") {
        let rounds = rounds
            .parse()
            .expect("PAGINATE_AB must be a number of rounds");
        interleaved_for::<Tiny>(rounds, "tiny items (~30 bytes)", tiny);
        interleaved_for::<Issue>(rounds, "issue-sized items (~600 bytes)", issue);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
