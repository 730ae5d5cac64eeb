//! Chapter: pagination. The FaultServer's `/items` serves one collection
//! behind five pagination protocols; the paginator crawls each one as a
//! stream of items, catches a loop, refuses a next link to another origin,
//! resumes a "crashed" crawl from a checkpoint, and prefetches pages ahead.

use futures_util::StreamExt as _;
use http::Uri;
use serde_json::Value;
use steadfast_hyper::HyperTransport;
use steadfast_paginate::{
    Checkpoint, Cursor, ErrorKind, HasMore, LinkHeader, OffsetLimit, PageNumber, Paginator,
    Strategy,
};
use steadfast_testkit::FaultServer;
use tokio::time::Instant;

use crate::BoxError;
use crate::say::{detail, line};

const TOTAL: u64 = 95;
const PER_PAGE: u64 = 10;

pub(crate) async fn run(server: &FaultServer) -> Result<(), BoxError> {
    let transport = HyperTransport::builder().build()?;

    line(format!(
        "One collection of {TOTAL} items, {PER_PAGE} per page, behind five pagination styles."
    ));
    line("Each crawl is a Stream of items; the server counts the page requests:");
    crawl_each_style(server, &transport).await?;

    line("");
    line("A cursor API may return empty pages mid-collection; they do not end the crawl:");
    let start = url(server, "cursor", "&empty_pages=1");
    let cursor = Paginator::builder(transport.clone(), Cursor::body("/next_cursor"))
        .items_at("/data")
        .build()?;
    let (ids, error) = drain(cursor.start(start).items::<Value>()).await;
    detail("items", summary(&ids));
    detail("error", error.as_deref().unwrap_or("none"));

    line("");
    line("Broken servers. A next link that points back to page 1 (loop=1):");
    let link = Paginator::builder(transport.clone(), LinkHeader::new()).build()?;
    let (ids, error) = drain(link.start(url(server, "link", "&loop=1")).items::<Value>()).await;
    detail("items before the error", summary(&ids));
    detail("error", error.unwrap_or_default());
    line("A cursor that comes back (loop=1), same typed error:");
    let (ids, error) = drain(
        cursor
            .start(url(server, "cursor", "&loop=1"))
            .items::<Value>(),
    )
    .await;
    detail("items before the error", summary(&ids));
    detail("error", error.unwrap_or_default());
    line(
        "A next link to http://evil.invalid (cross_origin=1) is refused, credentials never leave:",
    );
    let (ids, error) = drain(
        link.start(url(server, "link", "&cross_origin=1"))
            .items::<Value>(),
    )
    .await;
    detail("items before the error", summary(&ids));
    detail("error", error.unwrap_or_default());

    line("");
    resume(server, &transport).await?;

    line("");
    prefetch(server, &transport).await?;
    Ok(())
}

async fn crawl_each_style(
    server: &FaultServer,
    transport: &HyperTransport,
) -> Result<(), BoxError> {
    async fn one<S: Strategy + 'static>(
        server: &FaultServer,
        transport: &HyperTransport,
        style: &str,
        what: &str,
        strategy: S,
        items_at: &str,
    ) -> Result<(), BoxError> {
        let paginator = Paginator::builder(transport.clone(), strategy)
            .items_at(items_at)
            .build()?;
        let before = server.hits("/items");
        let (ids, error) = drain(paginator.start(url(server, style, "")).items::<Value>()).await;
        if let Some(error) = error {
            return Err(error.into());
        }
        let ok = ids == (0..TOTAL).collect::<Vec<_>>();
        detail(
            style,
            format!(
                "{} in {} requests, {} ({what})",
                summary(&ids),
                server.hits("/items") - before,
                if ok { "each once, in order" } else { "WRONG" },
            ),
        );
        Ok(())
    }
    one(
        server,
        transport,
        "link",
        "RFC 8288 Link rel=\"next\"",
        LinkHeader::new(),
        "",
    )
    .await?;
    one(
        server,
        transport,
        "cursor",
        "next_cursor until null",
        Cursor::body("/next_cursor"),
        "/data",
    )
    .await?;
    let pages = PageNumber::new().total_pages_at("/total_pages");
    one(
        server,
        transport,
        "page",
        "page=N up to total_pages",
        pages,
        "/data",
    )
    .await?;
    let offsets = OffsetLimit::new().limit(PER_PAGE).total_at("/total");
    one(
        server,
        transport,
        "offset",
        "offset+limit up to total",
        offsets,
        "/data",
    )
    .await?;
    one(
        server,
        transport,
        "has_more",
        "starting_after=<last id>",
        HasMore::new(),
        "/data",
    )
    .await?;
    Ok(())
}

async fn resume(server: &FaultServer, transport: &HyperTransport) -> Result<(), BoxError> {
    line("Checkpoints. A crawl processes 37 items, then the process \"crashes\":");
    let paginator = Paginator::builder(transport.clone(), Cursor::body("/next_cursor"))
        .items_at("/data")
        .build()?;
    let mut items = paginator.start(url(server, "cursor", "")).items::<Value>();
    let mut first = Vec::new();
    while first.len() < 37 {
        match items.next().await {
            Some(item) => first.push(id(&item?)),
            None => break,
        }
    }
    let saved = serde_json::to_string(&items.checkpoint())?;
    drop(items);
    detail("processed", summary(&first));
    detail("checkpoint saved", &saved);

    line("A new process loads the checkpoint and resumes: page 4 is fetched again, its first");
    line("7 items skipped, and the crawl goes on.");
    let checkpoint: Checkpoint = serde_json::from_str(&saved)?;
    let fresh = Paginator::builder(transport.clone(), Cursor::body("/next_cursor"))
        .items_at("/data")
        .build()?;
    let (rest, error) = drain(fresh.resume(&checkpoint)?.items::<Value>()).await;
    detail("resumed", summary(&rest));
    let mut all = first;
    all.extend(&rest);
    let exact = all == (0..TOTAL).collect::<Vec<_>>() && error.is_none();
    detail(
        "together",
        format!(
            "{} items, {}",
            all.len(),
            if exact { "each exactly once" } else { "WRONG" }
        ),
    );
    Ok(())
}

async fn prefetch(server: &FaultServer, transport: &HyperTransport) -> Result<(), BoxError> {
    const ITEMS: u64 = 400;
    const SIZE: u64 = 20;
    line(format!(
        "Prefetch. {} pages of {SIZE}, each answered after 20 ms (latency_ms=20); once the first",
        ITEMS / SIZE
    ));
    line("page gives the total, the following pages are known and requested K at a time:");
    let start: Uri = server
        .url(&format!(
            "/items?style=page&per_page={SIZE}&total={ITEMS}&latency_ms=20"
        ))
        .parse()?;
    let mut rates = Vec::new();
    for k in [1, 4] {
        let paginator = Paginator::builder(
            transport.clone(),
            PageNumber::new().total_pages_at("/total_pages"),
        )
        .items_at("/data")
        .prefetch(k)
        .build()?;
        let t0 = Instant::now();
        let (ids, error) = drain(paginator.start(start.clone()).items::<Value>()).await;
        let elapsed = t0.elapsed();
        if let Some(error) = error {
            return Err(error.into());
        }
        let rate = ids.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
        rates.push(rate);
        detail(
            &format!("prefetch({k})"),
            format!(
                "{} in {:>4} ms, {rate:>6.0} items/s",
                summary(&ids),
                elapsed.as_millis()
            ),
        );
    }
    detail(
        "speed-up",
        format!("{:.1}x, items still in order", rates[1] / rates[0]),
    );
    Ok(())
}

fn url(server: &FaultServer, style: &str, extra: &str) -> Uri {
    server
        .url(&format!(
            "/items?style={style}&per_page={PER_PAGE}&total={TOTAL}{extra}"
        ))
        .parse()
        .expect("the FaultServer's URLs are valid")
}

fn id(item: &Value) -> u64 {
    item["id"].as_u64().unwrap_or(u64::MAX)
}

/// The ids of a stream, and its error's message if it ended with one.
async fn drain<S, E>(mut items: S) -> (Vec<u64>, Option<String>)
where
    S: futures_util::Stream<Item = Result<Value, steadfast_paginate::PaginateError<E>>> + Unpin,
{
    let mut ids = Vec::new();
    while let Some(item) = items.next().await {
        match item {
            Ok(item) => ids.push(id(&item)),
            Err(e) => {
                let kind = match e.kind() {
                    ErrorKind::Loop { .. } => "Loop",
                    ErrorKind::CrossOrigin { .. } => "CrossOrigin",
                    _ => "error",
                };
                return (ids, Some(format!("{kind}: {e}")));
            }
        }
    }
    (ids, None)
}

/// "95 items: 0..=94" or "none".
fn summary(ids: &[u64]) -> String {
    match (ids.first(), ids.last()) {
        (Some(first), Some(last)) => format!("{:>3} items: ids {first}..={last}", ids.len()),
        _ => "no items".to_owned(),
    }
}
