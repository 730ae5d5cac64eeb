//! Loop detection: a bounded window of recently requested URIs, and one
//! of the fingerprints of recent pages.

use std::collections::{HashMap, HashSet, VecDeque, hash_map};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::ops::Range;

use bytes::Bytes;
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

/// How many bytes at each end of a content part the sample key reads.
const SAMPLE: usize = 64;

/// Content-loop detection over the last [`REPEAT_WINDOW`] pages with
/// items, and where each came from.
///
/// Hashing every page's content in full costs about half an instruction a
/// byte, as much as the rest of the paginator's own work together. So a
/// page is first told apart by a sample key (each content part's length
/// and its first and last [`SAMPLE`] bytes), which is all a page that
/// repeats nothing costs. A key that matches one in the window is only a
/// candidate, never an error by itself:
///
/// - against the previous page with items, whose body is kept, the
///   content is compared byte for byte: a page served again right after
///   itself (a server ignoring the page parameter, or handing out a fresh
///   cursor to the same page) is caught at once, exactly;
/// - against an older page, the page is hashed in full and the hash kept,
///   so that when the server comes round to it again the full hashes
///   decide: a cycle of several pages is caught the second time round.
///
/// With `full` every page is hashed in full (and no body is kept): any
/// repeat within the window is caught at its first showing.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    full: bool,
    /// How many entries of the window have each sample key.
    keys: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    entries: VecDeque<Entry>,
    /// The previous page with items and its content parts (sampled mode).
    previous: Option<(Bytes, Vec<Range<usize>>)>,
}

#[derive(Debug)]
struct Entry {
    key: u64,
    /// The hash of the whole content, when it was computed.
    full: Option<u64>,
    uri: Uri,
}

impl Repeats {
    pub(crate) fn new(full: bool) -> Self {
        Self {
            full,
            ..Self::default()
        }
    }

    /// Records the page at `uri` whose content is `parts` of `body`; the
    /// URI of the earlier page it repeats, if one is in the window.
    pub(crate) fn insert(
        &mut self,
        body: &Bytes,
        parts: &[Range<usize>],
        uri: &Uri,
    ) -> Option<&Uri> {
        let key = sample_key(body, parts);
        let mut full = self.full.then(|| full_hash(body, parts));
        if self.keys.contains_key(&key) {
            // A candidate (rare): find the page it repeats, if any.
            let last = self.entries.len().checked_sub(1);
            let mut repeated = None;
            for (i, entry) in self.entries.iter().enumerate() {
                if entry.key != key {
                    continue;
                }
                let same = match (&self.previous, entry.full) {
                    (Some((prev, prev_parts)), _) if Some(i) == last => {
                        same_content(prev, prev_parts, body, parts)
                    }
                    (_, Some(hash)) => *full.get_or_insert_with(|| full_hash(body, parts)) == hash,
                    (_, None) => false,
                };
                if same {
                    repeated = Some(i);
                    break;
                }
            }
            if let Some(i) = repeated {
                return self.entries.get(i).map(|entry| &entry.uri);
            }
            // Hashed in full now, so that the next showing is decided by it.
            full.get_or_insert_with(|| full_hash(body, parts));
        }
        if self.entries.len() == REPEAT_WINDOW
            && let Some(old) = self.entries.pop_front()
            && let hash_map::Entry::Occupied(mut count) = self.keys.entry(old.key)
        {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        *self.keys.entry(key).or_insert(0) += 1;
        self.entries.push_back(Entry {
            key,
            full,
            uri: uri.clone(),
        });
        if !self.full {
            let (prev, prev_parts) = self.previous.get_or_insert_with(Default::default);
            prev.clone_from(body);
            prev_parts.clear();
            prev_parts.extend_from_slice(parts);
        }
        None
    }
}

/// The parts, each by its length and its first and last [`SAMPLE`] bytes
/// (all of it when shorter than both).
fn sample_key(body: &[u8], parts: &[Range<usize>]) -> u64 {
    let mut h = Hash64::default();
    for range in parts {
        let part = body.get(range.clone()).unwrap_or_default();
        match (part.first_chunk::<SAMPLE>(), part.last_chunk::<SAMPLE>()) {
            // The samples have a fixed size and the part's length ends
            // them: nothing else needs delimiting.
            (Some(first), Some(last)) if part.len() > 2 * SAMPLE => {
                h.0.write(first);
                h.0.write(last);
                h.0.write_usize(part.len());
            }
            _ => h.part(part),
        }
    }
    h.finish()
}

/// A hash of the whole of every part.
pub(crate) fn full_hash(body: &[u8], parts: &[Range<usize>]) -> u64 {
    let mut h = Hash64::default();
    for range in parts {
        h.part(body.get(range.clone()).unwrap_or_default());
    }
    h.finish()
}

fn same_content(a: &[u8], a_parts: &[Range<usize>], b: &[u8], b_parts: &[Range<usize>]) -> bool {
    a_parts.len() == b_parts.len()
        && a_parts
            .iter()
            .zip(b_parts)
            .all(|(x, y)| a.get(x.clone()) == b.get(y.clone()))
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

    /// One page of `n` items `{"id":..}` starting at `from`: a body and
    /// its single content part.
    fn page(from: u64, n: u64) -> (Bytes, Vec<Range<usize>>) {
        let items: Vec<String> = (from..from + n)
            .map(|i| format!("{{\"id\":{i}}}"))
            .collect();
        let body = Bytes::from(format!("[{}]", items.join(",")));
        let parts = vec![Range {
            start: 0,
            end: body.len(),
        }];
        (body, parts)
    }

    fn insert(repeats: &mut Repeats, page: &(Bytes, Vec<Range<usize>>), at: u64) -> Option<Uri> {
        repeats.insert(&page.0, &page.1, &uri(at)).cloned()
    }

    #[test]
    fn a_page_served_again_right_after_itself_is_caught_at_once() {
        for full in [false, true] {
            let mut repeats = Repeats::new(full);
            assert_eq!(insert(&mut repeats, &page(0, 50), 1), None);
            assert_eq!(
                insert(&mut repeats, &page(0, 50), 2),
                Some(uri(1)),
                "full: {full}"
            );
        }
    }

    #[test]
    fn pages_alike_at_both_ends_are_told_apart() {
        // Same length, same first and last 64 bytes: the same sample key,
        // different content. Never a repeat, in either mode.
        let body = |middle: &str| {
            let body = Bytes::from(format!("[{}{middle}{}]", "a".repeat(100), "z".repeat(100)));
            let parts = vec![Range {
                start: 0,
                end: body.len(),
            }];
            (body, parts)
        };
        for full in [false, true] {
            let mut repeats = Repeats::new(full);
            let (a, b, c, d) = (body("1"), body("2"), body("3"), body("4"));
            assert_eq!(sample_key(&a.0, &a.1), sample_key(&b.0, &b.1));
            assert_eq!(insert(&mut repeats, &a, 1), None);
            assert_eq!(insert(&mut repeats, &b, 2), None, "adjacent, full: {full}");
            assert_eq!(insert(&mut repeats, &c, 3), None);
            assert_eq!(insert(&mut repeats, &d, 4), None, "older, full: {full}");
            assert_eq!(insert(&mut repeats, &d, 5), Some(uri(4)), "a real repeat");
        }
    }

    #[test]
    fn an_older_page_is_caught_at_once_in_full_mode_and_on_its_next_showing_otherwise() {
        let (a, b) = (page(0, 3), page(3, 3));
        let mut full = Repeats::new(true);
        assert_eq!(insert(&mut full, &a, 1), None);
        assert_eq!(insert(&mut full, &b, 2), None);
        assert_eq!(insert(&mut full, &a, 3), Some(uri(1)));

        let mut sampled = Repeats::new(false);
        assert_eq!(insert(&mut sampled, &a, 1), None);
        assert_eq!(insert(&mut sampled, &b, 2), None);
        assert_eq!(
            insert(&mut sampled, &a, 3),
            None,
            "a candidate, hashed in full"
        );
        assert_eq!(insert(&mut sampled, &b, 4), None, "likewise");
        assert_eq!(
            insert(&mut sampled, &a, 5),
            Some(uri(3)),
            "the cycle comes round"
        );
    }

    #[test]
    fn the_window_forgets_the_oldest_page() {
        for full in [false, true] {
            let mut repeats = Repeats::new(full);
            for i in 0..=REPEAT_WINDOW as u64 {
                assert_eq!(insert(&mut repeats, &page(i * 10, 10), i + 1), None);
            }
            assert_eq!(repeats.entries.len(), REPEAT_WINDOW);
            assert_eq!(repeats.keys.len(), REPEAT_WINDOW);
            // Page 1 fell out; pages 2 and 3 (hashed in full as candidates
            // in sampled mode) are still there.
            assert_eq!(insert(&mut repeats, &page(0, 10), 99), None, "full: {full}");
            assert_eq!(insert(&mut repeats, &page(10, 10), 100), None);
            assert_eq!(insert(&mut repeats, &page(10, 10), 101), Some(uri(100)));
        }
    }

    proptest! {
        /// Against a list of the last `REPEAT_WINDOW` contents: a reported
        /// repeat always names a page with the same content; in full mode
        /// every repeat in the window is reported, in sampled mode every
        /// repeat of the page right before. Contents share their ends (the
        /// same sample key) so that candidates are the common case.
        #[test]
        fn repeats_match_a_window_model(full in any::<bool>(), pages in prop::collection::vec(0u8..6, 1..80)) {
            let mut repeats = Repeats::new(full);
            let mut model: VecDeque<(u8, u64)> = VecDeque::new();
            for (at, &content) in (1u64..).zip(&pages) {
                let body = Bytes::from(format!("[{}{content}{}]", "a".repeat(70), "z".repeat(70)));
                let parts = [Range { start: 0, end: body.len() }];
                let got = repeats.insert(&body, &parts, &uri(at)).cloned();
                let previous = model.back().map(|&(c, _)| c);
                if let Some(earlier) = &got {
                    let same = model.iter().any(|&(c, a)| c == content && uri(a) == *earlier);
                    prop_assert!(same, "page {} reported as a repeat of {}", at, earlier);
                } else {
                    prop_assert!(previous != Some(content), "page {} repeats the one before", at);
                    prop_assert!(!full || model.iter().all(|&(c, _)| c != content));
                }
                if got.is_none() {
                    model.push_back((content, at));
                    if model.len() > REPEAT_WINDOW {
                        model.pop_front();
                    }
                }
            }
        }

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
