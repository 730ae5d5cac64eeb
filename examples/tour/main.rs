//! The steadfast tour: every capability, against a live loopback FaultServer.
//!
//! `cargo run --release --example tour`
//!
//! Each chapter is a module with `pub(crate) async fn run(server: &FaultServer) -> Result<(), BoxError>`.

mod say;
// chapters (one module each; keep in pipeline order)
mod breaker;
mod foundation;
mod hyper;
mod limit;
mod paginate;
mod pool;
mod retry;

use steadfast_testkit::FaultServer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let server = FaultServer::start().await;
    println!(
        "steadfast tour: a live FaultServer is listening on {}",
        server.base_url()
    );

    let chapters: Vec<(&str, ChapterFn)> = vec![
        (
            "Foundation: transport seam, server signals, MockTransport",
            |s| Box::pin(foundation::run(s)),
        ),
        (
            "Hyper transport: pool events, every timeout phase, TLS + HTTP/2",
            |s| Box::pin(hyper::run(s)),
        ),
        (
            "Retry: backoff with jitter, Retry-After, a retry budget, hedging",
            |s| Box::pin(retry::run(s)),
        ),
        (
            "Circuit breaker: open on failure, fail fast, probe, close",
            |s| Box::pin(breaker::run(s)),
        ),
        (
            "Rate and concurrency limits: a quota held, pacing from headers, a bulkhead",
            |s| Box::pin(limit::run(s)),
        ),
        (
            "Pool metrics: a burst with cancellations, before and after",
            |s| Box::pin(pool::run(s)),
        ),
        (
            "Pagination: five styles as Streams, loops caught, a resumed crawl, prefetch",
            |s| Box::pin(paginate::run(s)),
        ),
        // new chapters go here, in pipeline order
    ];
    for (i, (title, run)) in chapters.into_iter().enumerate() {
        say::chapter(i + 1, title);
        run(&server).await?;
    }
    println!();
    println!(
        "tour complete: {} requests served by the FaultServer",
        server.stats().requests
    );
    Ok(())
}

type ChapterFn = for<'a> fn(
    &'a FaultServer,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), BoxError>> + 'a>,
>;
