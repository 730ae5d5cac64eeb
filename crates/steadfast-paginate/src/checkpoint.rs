//! Where a crawl is, as a serializable value.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a crawl stands: the page to fetch next, how many of its items were
/// already yielded, and the running counts. Take one with
/// [`Items::checkpoint`](crate::Items::checkpoint) or
/// [`Pages::checkpoint`](crate::Pages::checkpoint) after processing what the
/// stream yielded, store it (it is `serde`-serializable), and hand it to
/// [`Paginator::resume`](crate::Paginator::resume) after a crash: the
/// resumed crawl yields exactly the items that were not yielded before.
///
/// ```
/// # use steadfast_paginate::Checkpoint;
/// let json = r#"{"start":"http://api.test/items","next":"http://api.test/items?page=3","skip":4,"pages":2,"items":24}"#;
/// let checkpoint: Checkpoint = serde_json::from_str(json).unwrap();
/// assert_eq!(checkpoint.next(), Some("http://api.test/items?page=3"));
/// assert_eq!(serde_json::to_string(&checkpoint).unwrap(), json);
/// ```
///
/// Loop detection starts afresh on resume: the recent-URI window is not
/// stored, to keep checkpoints small enough to save after every page. So
/// do not resume after a loop error ([`PaginateError::is_loop`](crate::PaginateError::is_loop)):
/// the resumed crawl would follow the loop once more and yield its pages
/// again before catching it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub(crate) start: String,
    pub(crate) next: Option<String>,
    #[serde(default)]
    pub(crate) skip: usize,
    pub(crate) pages: u64,
    pub(crate) items: u64,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub(crate) strategy: Value,
}

impl Checkpoint {
    /// The URI the crawl started from; its origin stays the crawl's origin.
    pub fn start(&self) -> &str {
        &self.start
    }

    /// The page to fetch next; `None` when the crawl is complete.
    pub fn next(&self) -> Option<&str> {
        self.next.as_deref()
    }

    /// Items of that page already yielded (skipped on resume).
    pub const fn skip(&self) -> usize {
        self.skip
    }

    /// Pages fully processed so far.
    pub const fn pages(&self) -> u64 {
        self.pages
    }

    /// Items yielded so far.
    pub const fn items(&self) -> u64 {
        self.items
    }

    /// The strategy's own saved state: `null` for most built-ins, whose
    /// position is the next URI; [`PageNumber`](crate::PageNumber) keeps
    /// what it counted so far (`{"items": 200, "page_size": 50}`).
    pub const fn strategy_state(&self) -> &Value {
        &self.strategy
    }

    /// Whether the crawl had finished: resuming yields nothing.
    pub const fn is_complete(&self) -> bool {
        self.next.is_none()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn arb_state() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            (any::<u64>(), any::<u64>()).prop_map(|(i, s)| json!({"items": i, "page_size": s})),
            "\\PC{0,8}".prop_map(Value::from),
            prop::collection::vec(any::<i64>(), 0..3).prop_map(Value::from),
        ]
    }

    fn arb_checkpoint() -> impl Strategy<Value = Checkpoint> {
        (
            "\\PC{0,24}",
            prop::option::of("\\PC{0,24}"),
            any::<usize>(),
            any::<u64>(),
            any::<u64>(),
            arb_state(),
        )
            .prop_map(|(start, next, skip, pages, items, strategy)| Checkpoint {
                start,
                next,
                skip,
                pages,
                items,
                strategy,
            })
    }

    #[test]
    fn older_checkpoints_without_skip_or_state_still_load() {
        let c: Checkpoint =
            serde_json::from_str(r#"{"start":"/a","next":null,"pages":1,"items":2}"#).unwrap();
        assert_eq!((c.skip(), c.strategy_state()), (0, &Value::Null));
        assert!(c.is_complete());
    }

    proptest! {
        #[test]
        fn json_round_trips(c in arb_checkpoint()) {
            let text = serde_json::to_string(&c).unwrap();
            let back: Checkpoint = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&back, &c);
            // A null state is left out, anything else is kept.
            prop_assert_eq!(text.contains("\"strategy\""), !c.strategy.is_null());
            // And through a `Value`, the way a caller may embed it.
            let value = serde_json::to_value(&c).unwrap();
            prop_assert_eq!(serde_json::from_value::<Checkpoint>(value).unwrap(), c);
        }

        #[test]
        fn hostile_json_is_an_error_not_a_panic(text in "\\PC{0,64}") {
            let _ = serde_json::from_str::<Checkpoint>(&text);
        }
    }
}
