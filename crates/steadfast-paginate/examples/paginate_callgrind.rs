//! A deterministic cost probe for the paginator's own overhead: `N` crawls
//! of 100 in-memory cursor pages of 100 items, through the paginator
//! (`items` or `pages`) or through the loop a user would write by hand
//! (`hand`), on one current-thread runtime. The pages are the ones of
//! `benches/paginate.rs`, from the fixture both share (`benches/common`):
//! `tiny` items of ~30 bytes, `issue` items of ~600.
//!
//! Meant to run under callgrind, twice per mode (`N` and `2N`), so that the
//! difference of the totals divided by `N` is the cost of one crawl with the
//! start-up cost cancelled out:
//!
//! ```text
//! cargo build --release -p steadfast-paginate --example paginate_callgrind
//! for m in hand items pages; do for n in 2 4; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$m.$n \
//!     target/release/examples/paginate_callgrind $m tiny $n
//! done; done
//! ```

#[path = "../benches/common/mod.rs"]
mod common;

use serde::de::DeserializeOwned;

use common::{Contender, Issue, Tiny, crawl, issue, tiny};

async fn run<T: DeserializeOwned + Send + 'static>(
    how: Contender,
    item: fn(usize) -> serde_json::Value,
    n: usize,
) {
    let crawl = crawl(item);
    for _ in 0..n {
        crawl.run::<T>(how).await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("items", String::as_str);
    let Some(how) = Contender::ALL.into_iter().find(|c| c.mode() == mode) else {
        panic!("unknown mode {mode:?}: use hand, items or pages");
    };
    let size = args.get(2).map_or("tiny", String::as_str);
    let n: usize = args.get(3).map_or(1, |n| n.parse().expect("a crawl count"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    match size {
        "tiny" => rt.block_on(run::<Tiny>(how, tiny, n)),
        "issue" => rt.block_on(run::<Issue>(how, issue, n)),
        other => panic!("unknown item size {other:?}: use tiny or issue"),
    }
}
