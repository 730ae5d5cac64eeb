//! Loop detection: a bounded window of recently requested URIs.

use std::collections::{HashSet, VecDeque};

use http::Uri;

/// The last `window` URIs, stored as 64-bit hashes (a false "seen" needs a
/// hash collision among at most `window` URIs: odds around 2^-38 at the
/// default window).
#[derive(Debug)]
pub(crate) struct Seen {
    window: usize,
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl Seen {
    pub(crate) fn new(window: usize) -> Self {
        Self {
            window,
            order: VecDeque::new(),
            set: HashSet::default(),
        }
    }

    /// Records `uri`; `false` when it is already in the window.
    pub(crate) fn insert(&mut self, uri: &Uri) -> bool {
        if self.window == 0 {
            return true;
        }
        let key = hash(uri);
        if self.set.contains(&key) {
            return false;
        }
        self.set.insert(key);
        self.order.push_back(key);
        if self.order.len() > self.window
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    /// Whether `uri` is in the window, without recording it.
    pub(crate) fn contains(&self, uri: &Uri) -> bool {
        self.window > 0 && self.set.contains(&hash(uri))
    }
}

/// FNV-1a over the URI's parts. Not keyed: a server that crafted
/// colliding URIs could only make the crawl stop with a loop error, which
/// it can do anyway.
fn hash(uri: &Uri) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let parts = [
        uri.scheme_str().unwrap_or(""),
        "://",
        uri.authority().map_or("", http::uri::Authority::as_str),
        uri.path_and_query()
            .map_or("", http::uri::PathAndQuery::as_str),
    ];
    let mut h = OFFSET;
    for part in parts {
        for &b in part.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn uri(i: u64) -> Uri {
        format!("/items?cursor={i}").parse().unwrap()
    }

    #[test]
    fn repeats_are_caught_within_the_window() {
        let mut seen = Seen::new(3);
        assert!(seen.insert(&uri(1)));
        assert!(seen.insert(&uri(2)));
        assert!(!seen.insert(&uri(1)));
        assert!(seen.insert(&uri(3)));
        assert!(seen.insert(&uri(4)), "evicts 1");
        assert!(seen.insert(&uri(1)), "1 fell out of the window");
        assert!(seen.contains(&uri(4)));
        assert!(!seen.contains(&uri(2)));
    }

    #[test]
    fn window_zero_disables_detection() {
        let mut seen = Seen::new(0);
        assert!(seen.insert(&uri(1)));
        assert!(seen.insert(&uri(1)));
        assert!(!seen.contains(&uri(1)));
    }

    proptest! {
        /// Agrees with a plain list of the last `window` distinct URIs.
        #[test]
        fn matches_a_sliding_window_model(window in 1usize..6, ops in prop::collection::vec(0u64..8, 0..64)) {
            let mut seen = Seen::new(window);
            let mut model: VecDeque<u64> = VecDeque::new();
            for op in ops {
                let fresh = !model.contains(&op);
                prop_assert_eq!(seen.insert(&uri(op)), fresh);
                if fresh {
                    model.push_back(op);
                    if model.len() > window {
                        model.pop_front();
                    }
                }
                prop_assert!(seen.set.len() <= window);
            }
        }
    }
}
