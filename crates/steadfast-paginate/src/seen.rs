//! Loop detection: a bounded window of recently requested URIs, and one
//! of the fingerprints of recent pages.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use http::Uri;

use crate::config::REPEAT_WINDOW;

/// The last `window` URIs, stored as 64-bit hashes (a false "seen" needs a
/// hash collision among at most `window` URIs: odds around 2^-38 at the
/// default window).
#[derive(Debug)]
pub(crate) struct Seen {
    window: usize,
    order: VecDeque<u64>,
    /// The keys are hashes already: the set uses them as they are.
    set: HashSet<u64, BuildHasherDefault<Prehashed>>,
}

/// The `Hasher` of keys that are hashes already.
#[derive(Debug, Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with it; fold anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
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
        if !self.set.insert(key) {
            return false;
        }
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

/// A 64-bit hash of the URI's parts (see [`Hash64`]). Not keyed: a server
/// that crafted colliding URIs could only make the crawl stop with a loop
/// error, which it can do anyway.
fn hash(uri: &Uri) -> u64 {
    let mut h = Hash64::default();
    h.part(uri.scheme_str().unwrap_or("").as_bytes());
    h.part(
        uri.authority()
            .map_or("", http::uri::Authority::as_str)
            .as_bytes(),
    );
    h.part(
        uri.path_and_query()
            .map_or("", http::uri::PathAndQuery::as_str)
            .as_bytes(),
    );
    h.finish()
}

/// A 64-bit hash of a sequence of byte strings: foldhash with a fixed seed,
/// so that fingerprints do not depend on the process.
pub(crate) struct Hash64(foldhash::fast::FoldHasher<'static>);

impl Default for Hash64 {
    fn default() -> Self {
        Self(foldhash::fast::FixedState::with_seed(0).build_hasher())
    }
}

impl fmt::Debug for Hash64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Hash64").field(&self.0.finish()).finish()
    }
}

impl Hash64 {
    /// Adds one part. Its length ends it, so that ("ab", "c") and
    /// ("a", "bc") differ.
    pub(crate) fn part(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.0.write_usize(bytes.len());
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Content-loop detection: the fingerprints of the last
/// [`REPEAT_WINDOW`] pages with items, and where each came from.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    /// Apart from the URIs so that the per-page scan reads 512 bytes.
    fingerprints: VecDeque<u64>,
    uris: VecDeque<Uri>,
}

impl Repeats {
    /// Records the page at `uri` with `fingerprint`; the URI of the earlier
    /// page with the same fingerprint, if one is in the window.
    pub(crate) fn insert(&mut self, fingerprint: u64, uri: &Uri) -> Option<&Uri> {
        if let Some(i) = self.fingerprints.iter().position(|&f| f == fingerprint) {
            return self.uris.get(i);
        }
        if self.fingerprints.len() == REPEAT_WINDOW {
            self.fingerprints.pop_front();
            self.uris.pop_front();
        }
        self.fingerprints.push_back(fingerprint);
        self.uris.push_back(uri.clone());
        None
    }
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

    #[test]
    fn every_part_of_the_uri_counts() {
        let uris = [
            "http://a.test/items?page=1",
            "https://a.test/items?page=1",
            "http://b.test/items?page=1",
            "http://a.test:8080/items?page=1",
            "http://a.test/items?page=2",
            "http://a.test/items?page=10",
            "http://a.test/item?spage=1",
            "/items?page=1",
        ];
        let hashes: HashSet<u64> = uris.iter().map(|u| hash(&u.parse().unwrap())).collect();
        assert_eq!(hashes.len(), uris.len());
    }

    #[test]
    fn a_page_repeated_within_the_window_names_the_first() {
        let mut repeats = Repeats::default();
        assert_eq!(repeats.insert(1, &uri(1)), None);
        assert_eq!(repeats.insert(2, &uri(2)), None);
        assert_eq!(repeats.insert(1, &uri(3)), Some(&uri(1)));
        for i in 3..=REPEAT_WINDOW as u64 + 1 {
            assert_eq!(repeats.insert(i, &uri(i + 10)), None);
        }
        assert_eq!(repeats.fingerprints.len(), REPEAT_WINDOW);
        assert_eq!(repeats.uris.len(), REPEAT_WINDOW);
        assert_eq!(
            repeats.insert(1, &uri(99)),
            None,
            "1 fell out of the window"
        );
        assert_eq!(repeats.insert(2, &uri(99)), None, "so did 2");
        assert_eq!(repeats.insert(5, &uri(99)), Some(&uri(15)));
    }

    proptest! {
        /// Distinct URIs get distinct hashes (64 bits: a collision here
        /// would be a broken hash, not bad luck).
        #[test]
        fn distinct_uris_hash_apart(a in "/[a-z0-9]{0,20}(\\?[a-z0-9=&]{0,30})?", b in "/[a-z0-9]{0,20}(\\?[a-z0-9=&]{0,30})?") {
            let (ua, ub): (Uri, Uri) = (a.parse().unwrap(), b.parse().unwrap());
            prop_assert_eq!(hash(&ua) == hash(&ub), a == b);
        }

        /// Flipping any bits of any byte changes the hash, in the whole
        /// words and in the tail alike (page fingerprints rely on it).
        #[test]
        fn a_changed_byte_changes_the_hash(
            bytes in prop::collection::vec(any::<u8>(), 1..300),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let hash = |b: &[u8]| {
                let mut h = Hash64::default();
                h.part(b);
                h.finish()
            };
            let mut other = bytes.clone();
            other[at.index(bytes.len())] ^= flip;
            prop_assert_ne!(hash(&bytes), hash(&other));
        }

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
