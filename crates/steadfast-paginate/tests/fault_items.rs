//! Every pagination style of the FaultServer's `/items`, crawled over real
//! loopback HTTP.

mod common;

use common::{MODES, Mode, drain, through_json};
use futures_util::StreamExt as _;
use steadfast_paginate::ErrorKind;
use steadfast_testkit::FaultServer;

const PER_PAGE: u64 = 10;

/// Requests a correct crawl of `total` items needs: one per page, and one
/// for an empty collection.
fn pages_for(total: u64) -> u64 {
    total.div_ceil(PER_PAGE).max(1)
}

#[tokio::test]
async fn every_mode_yields_every_item_exactly_once_in_order() {
    let server = FaultServer::start().await;
    for mode in MODES {
        let paginator = mode.builder(PER_PAGE).build().unwrap();
        for total in [0, 1, PER_PAGE, PER_PAGE + 1, 95] {
            let before = server.hits("/items");
            let (ids, err) = drain(
                paginator
                    .start(mode.start(&server, total, PER_PAGE, ""))
                    .items::<common::Item>(),
            )
            .await;
            assert!(err.is_none(), "{mode:?} total {total}: {err:?}");
            assert_eq!(
                ids,
                (0..total).collect::<Vec<_>>(),
                "{mode:?} total {total}"
            );
            // With a total (or an explicit end signal) no request is wasted;
            // the total-count page mode learns the page size from the body.
            assert_eq!(
                server.hits("/items") - before,
                pages_for(total),
                "{mode:?} total {total}: requests"
            );
        }
    }
}

#[tokio::test]
async fn pages_stream_reports_each_page() {
    let server = FaultServer::start().await;
    let paginator = Mode::PageTotalPages.builder(PER_PAGE).build().unwrap();
    let pages: Vec<_> = paginator
        .start(Mode::PageTotalPages.start(&server, 25, PER_PAGE, ""))
        .pages::<common::Item>()
        .collect()
        .await;
    let pages: Vec<_> = pages.into_iter().map(Result::unwrap).collect();
    let sizes: Vec<_> = pages
        .iter()
        .map(|p| (p.number(), p.items().len()))
        .collect();
    assert_eq!(sizes, [(1, 10), (2, 10), (3, 5)]);
    assert_eq!(pages[2].body()["total_pages"], 3);
    assert_eq!(pages[2].body()["data"], serde_json::Value::Null);
    assert!(
        pages[1].uri().to_string().ends_with("page=2"),
        "{}",
        pages[1].uri()
    );
    assert_eq!(pages[0].status(), 200);
    assert_eq!(paginator.snapshot().pages, 3);
    assert_eq!(paginator.snapshot().items, 25);
}

#[tokio::test]
async fn a_link_loop_is_a_typed_error_before_any_duplicate() {
    let server = FaultServer::start().await;
    let paginator = Mode::Link.builder(PER_PAGE).build().unwrap();
    let start = Mode::Link.start(&server, 50, PER_PAGE, "&loop=1");
    let (ids, err) = drain(paginator.start(start).items::<common::Item>()).await;
    assert_eq!(ids, (0..20).collect::<Vec<_>>(), "pages 1 and 2, once each");
    let err = err.expect("a loop error");
    assert_eq!(err.page(), Some(2));
    match err.kind() {
        ErrorKind::Loop { uri } => assert!(uri.query().unwrap().contains("page=1"), "{uri}"),
        other => panic!("expected a loop error, got {other:?}"),
    }
    assert_eq!(server.hits("/items"), 2);
    assert_eq!(paginator.snapshot().errors, 1);
}

#[tokio::test]
async fn a_cursor_loop_is_a_typed_error() {
    let server = FaultServer::start().await;
    for mode in [Mode::CursorBody, Mode::CursorHeader] {
        let paginator = mode.builder(PER_PAGE).build().unwrap();
        let start = mode.start(&server, 50, PER_PAGE, "&loop=1");
        let (ids, err) = drain(paginator.start(start).items::<common::Item>()).await;
        assert_eq!(ids, (0..20).collect::<Vec<_>>(), "{mode:?}");
        let err = err.expect("a loop error");
        assert!(err.is_loop(), "{mode:?}: {err}");
        assert!(err.to_string().contains("loops"), "{err}");
    }
}

#[tokio::test]
async fn empty_cursor_pages_do_not_end_the_crawl_unless_asked() {
    let server = FaultServer::start().await;
    let start = Mode::CursorBody.start(&server, 25, PER_PAGE, "&empty_pages=1");
    let paginator = Mode::CursorBody.builder(PER_PAGE).build().unwrap();
    let (ids, err) = drain(paginator.start(start.clone()).items::<common::Item>()).await;
    assert!(err.is_none());
    assert_eq!(ids, (0..25).collect::<Vec<_>>());
    assert_eq!(
        server.hits("/items"),
        5,
        "three pages and two empty ones between"
    );

    let stopping = Mode::CursorBody
        .builder(PER_PAGE)
        .stop_on_empty_page(true)
        .build()
        .unwrap();
    let (ids, err) = drain(stopping.start(start).items::<common::Item>()).await;
    assert!(err.is_none());
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_cross_origin_next_link_is_refused() {
    let server = FaultServer::start().await;
    let paginator = Mode::Link.builder(PER_PAGE).build().unwrap();
    let start = Mode::Link.start(&server, 30, PER_PAGE, "&cross_origin=1");
    let (ids, err) = drain(paginator.start(start).items::<common::Item>()).await;
    assert_eq!(
        ids,
        (0..10).collect::<Vec<_>>(),
        "the first page is the API's own"
    );
    let err = err.expect("a cross-origin error");
    assert!(err.is_cross_origin());
    assert_eq!(err.page(), Some(1));
    match err.kind() {
        ErrorKind::CrossOrigin { from, to } => {
            assert_eq!(to.host(), Some("evil.invalid"));
            assert_eq!(from.to_string(), server.base_url().trim_end_matches('/'));
        }
        other => panic!("expected a cross-origin error, got {other:?}"),
    }
    assert_eq!(server.hits("/items"), 1);
}

#[tokio::test]
async fn resuming_from_a_checkpoint_yields_exactly_the_remaining_items() {
    let server = FaultServer::start().await;
    let total = 23;
    for mode in MODES {
        let paginator = mode.builder(PER_PAGE).build().unwrap();
        for stop_after in [0, 1, 9, 10, 11, 20, 23] {
            let mut first = paginator
                .start(mode.start(&server, total, PER_PAGE, ""))
                .items::<common::Item>();
            let mut seen = Vec::new();
            for _ in 0..stop_after {
                seen.push(first.next().await.unwrap().unwrap().id);
            }
            // The process "crashes" here: only the checkpoint survives.
            let checkpoint = through_json(&first.checkpoint());
            drop(first);
            assert_eq!(checkpoint.items(), stop_after);
            // Every mode learns the end from the last page itself.
            assert_eq!(checkpoint.is_complete(), stop_after == total);

            let resumed = paginator
                .resume(&checkpoint)
                .unwrap()
                .items::<common::Item>();
            let (rest, err) = drain(resumed).await;
            assert!(err.is_none(), "{mode:?} after {stop_after}: {err:?}");
            seen.extend(rest);
            assert_eq!(
                seen,
                (0..total).collect::<Vec<_>>(),
                "{mode:?} after {stop_after}"
            );
        }
    }
}

#[tokio::test]
async fn page_checkpoints_resume_at_the_next_page() {
    let server = FaultServer::start().await;
    let paginator = Mode::Offset.builder(PER_PAGE).build().unwrap();
    let mut pages = paginator
        .start(Mode::Offset.start(&server, 35, PER_PAGE, ""))
        .pages::<common::Item>();
    pages.next().await.unwrap().unwrap();
    pages.next().await.unwrap().unwrap();
    let checkpoint = through_json(&pages.checkpoint());
    assert_eq!(
        (checkpoint.pages(), checkpoint.items(), checkpoint.skip()),
        (2, 20, 0)
    );
    assert!(
        checkpoint.next().unwrap().contains("offset=20"),
        "{checkpoint:?}"
    );
    let rest: Vec<_> = paginator
        .resume(&checkpoint)
        .unwrap()
        .pages::<common::Item>()
        .map(|p| p.unwrap())
        .collect()
        .await;
    let numbers: Vec<_> = rest.iter().map(steadfast_paginate::Page::number).collect();
    assert_eq!(numbers, [3, 4], "page numbers continue across the resume");
    assert_eq!(rest[1].items().last().unwrap().id, 34);
}

#[tokio::test]
async fn prefetch_fetches_ahead_and_yields_in_order() {
    let server = FaultServer::start().await;
    for mode in [Mode::PageTotalPages, Mode::PageTotalCount, Mode::Offset] {
        let paginator = mode.builder(PER_PAGE).prefetch(4).build().unwrap();
        let before = server.hits("/items");
        // Latency makes requests overlap for real.
        let start = mode.start(&server, 95, PER_PAGE, "&latency_ms=5");
        let (ids, err) = drain(paginator.start(start).items::<common::Item>()).await;
        assert!(err.is_none(), "{mode:?}: {err:?}");
        assert_eq!(ids, (0..95).collect::<Vec<_>>(), "{mode:?}");
        assert_eq!(
            server.hits("/items") - before,
            10,
            "{mode:?}: no request wasted"
        );
        assert_eq!(paginator.snapshot().prefetch_discarded, 0);
    }
    assert!(
        server.stats().max_connections_open >= 4,
        "{:?}",
        server.stats()
    );
}

#[tokio::test]
async fn limits_end_or_fail_the_crawl() {
    let server = FaultServer::start().await;
    let start = Mode::CursorBody.start(&server, 95, PER_PAGE, "");

    let capped = Mode::CursorBody
        .builder(PER_PAGE)
        .max_pages(3)
        .build()
        .unwrap();
    let (ids, err) = drain(capped.start(start.clone()).items::<common::Item>()).await;
    assert_eq!(ids.len(), 30);
    let err = err.expect("too many pages");
    assert!(
        matches!(err.kind(), ErrorKind::TooManyPages { limit: 3 }),
        "{err:?}"
    );
    assert_eq!(err.page(), Some(3));

    let exact = Mode::CursorBody
        .builder(PER_PAGE)
        .max_pages(10)
        .build()
        .unwrap();
    let (ids, err) = drain(exact.start(start.clone()).items::<common::Item>()).await;
    assert!(
        err.is_none(),
        "ending on exactly max_pages is fine: {err:?}"
    );
    assert_eq!(ids.len(), 95);

    let quota = Mode::CursorBody
        .builder(PER_PAGE)
        .max_items(25)
        .build()
        .unwrap();
    let mut items = quota.start(start).items::<common::Item>();
    let mut ids = Vec::new();
    while let Some(item) = items.next().await {
        ids.push(item.unwrap().id);
    }
    assert_eq!(ids, (0..25).collect::<Vec<_>>());
    let checkpoint = items.checkpoint();
    assert_eq!(
        (checkpoint.items(), checkpoint.skip(), checkpoint.pages()),
        (25, 5, 2)
    );
    // A bigger quota continues where the first one stopped.
    let more = Mode::CursorBody
        .builder(PER_PAGE)
        .max_items(40)
        .build()
        .unwrap();
    let (ids, _) = drain(more.resume(&checkpoint).unwrap().items::<common::Item>()).await;
    assert_eq!(ids, (25..40).collect::<Vec<_>>());
}
