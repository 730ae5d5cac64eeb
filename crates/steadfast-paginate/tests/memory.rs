//! Crawling a million items holds memory flat: the paginator keeps one page
//! of items at a time, never the collection. Prints the numbers (run with
//! `--nocapture`); asserts only a generous bound, never speed.

mod common;

use common::Mode;
use futures_util::StreamExt as _;
use steadfast_testkit::FaultServer;

/// `VmHWM` (peak resident set) and `VmRSS` of this process, in KiB.
fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

async fn crawl(server: &FaultServer, total: u64) -> u64 {
    let per_page = 1000;
    let paginator = Mode::Offset.builder(per_page).build().unwrap();
    let mut items = paginator
        .start(Mode::Offset.start(server, total, per_page, ""))
        .items::<common::Item>();
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some(item) = items.next().await {
        let item = item.unwrap();
        assert_eq!(item.id, count, "in order");
        sum = sum.wrapping_add(item.id);
        count += 1;
    }
    assert_eq!(sum, total * (total - 1) / 2);
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_items_in_flat_memory() {
    let Some(baseline) = rss_kib() else {
        eprintln!("SKIPPED: /proc/self/status is not available on this platform");
        return;
    };
    let server = FaultServer::start().await;

    assert_eq!(crawl(&server, 100_000).await, 100_000);
    let after_small = rss_kib().unwrap();
    assert_eq!(crawl(&server, 1_000_000).await, 1_000_000);
    let after_large = rss_kib().unwrap();

    println!(
        "peak RSS (VmHWM) before any crawl:      {:>7} KiB",
        baseline.0
    );
    println!(
        "peak RSS after crawling   100,000 items: {:>7} KiB",
        after_small.0
    );
    println!(
        "peak RSS after crawling 1,000,000 items: {:>7} KiB",
        after_large.0
    );
    println!(
        "growth of the peak from 100k to 1M items: {} KiB (the items alone would take ~{} MiB)",
        after_large.0.saturating_sub(after_small.0),
        1_000_000 * std::mem::size_of::<common::Item>() / (1 << 20) + 1_000_000 * 10 / (1 << 20),
    );
    println!(
        "current RSS (VmRSS) at the end:          {:>7} KiB",
        after_large.1
    );

    let growth_mib = after_large.0.saturating_sub(baseline.0) / 1024;
    assert!(growth_mib < 64, "peak RSS grew by {growth_mib} MiB");
    let tenfold_mib = after_large.0.saturating_sub(after_small.0) / 1024;
    assert!(
        tenfold_mib < 16,
        "10x the items grew the peak by {tenfold_mib} MiB"
    );
}
