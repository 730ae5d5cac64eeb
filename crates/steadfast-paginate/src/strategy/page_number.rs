//! Page-number pagination (`?page=N`).

use http::Uri;
use serde_json::Value;

use super::{Next, PageView, Strategy, StrategyError, check_field, read_count, read_param};
use crate::decode::Field;
use crate::uri::with_query_param;

/// The query parameter carrying the page number by default.
pub const DEFAULT_PAGE_PARAM: &str = "page";
/// The number of the first page by default (1-based APIs).
pub const DEFAULT_FIRST_PAGE: u64 = 1;

/// Requests `?page=N`, then `N+1`, ...
///
/// Stops only on what the server says, never on a guess:
///
/// - an empty page (a page-number API has no other way to say "past the
///   end");
/// - with the total number of pages ([`PageNumber::total_pages_at`]):
///   after the last page;
/// - with the total number of items ([`PageNumber::total_at`]): once the
///   pages of the crawl hold that many items, or once the page size the
///   server reports ([`PageNumber::per_page_at`]) times the page number
///   reaches it.
///
/// A page shorter than the ones before it does not end the crawl, nor does
/// a page shorter than the size asked for with [`PageNumber::per_page`]:
/// servers cap page sizes (ask for 100, get 50) and filter pages after
/// slicing them (permissions, deleted rows), so a short page is no proof
/// of the end. Such a server costs one request past the end (an empty
/// page), never lost items.
///
/// With a total, the following pages can be predicted (from the total and
/// the largest page seen), so [prefetch](crate::PaginatorBuilder::prefetch)
/// can request them concurrently; a prediction only starts requests early,
/// it never ends the crawl.
///
/// The page number is read back from each request URI, and the items
/// counted so far and the largest page are saved in checkpoints
/// (`{"items": 200, "page_size": 50}`), so a crawl resumed from a
/// checkpoint continues exactly where it stopped. A start URI that already
/// carries the page parameter starts at that page: the pages before it
/// count as holding as many items as the first page received (as many as
/// the server's [`PageNumber::per_page_at`] says, when given), and no
/// page past it is predicted from that estimate alone. Started on a short
/// last page, such a crawl asks for one page past the end.
#[derive(Clone, Debug)]
pub struct PageNumber {
    param: String,
    first_page: u64,
    per_page: Option<(String, u64)>,
    per_page_at: Option<Field>,
    total_pages_at: Option<Field>,
    total_at: Option<Field>,
    /// Items on the pages seen so far (the ones before the page being
    /// decided on, then that one too), including an estimate for the
    /// pages before a later start page.
    counted: u64,
    /// Whether `counted` holds the crawl's position: set by the first page
    /// decided on, or by a restored checkpoint.
    started: bool,
    /// `counted` rests on the first page alone, and the crawl started past
    /// the first page: the pages before it were estimated from it, so no
    /// page is predicted yet.
    estimated: bool,
    /// The largest page seen so far: a page-size estimate for predictions
    /// only (0 before the first page with items).
    largest: u64,
    last_page: Option<u64>,
}

impl PageNumber {
    /// `?page=1`, `?page=2`, ... with no totals.
    pub fn new() -> Self {
        Self {
            param: DEFAULT_PAGE_PARAM.to_owned(),
            first_page: DEFAULT_FIRST_PAGE,
            per_page: None,
            per_page_at: None,
            total_pages_at: None,
            total_at: None,
            counted: 0,
            started: false,
            estimated: false,
            largest: 0,
            last_page: None,
        }
    }

    /// Sends the page number in query parameter `name` instead of `page`.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>) -> Self {
        self.param = name.into();
        self
    }

    /// The number of the first page (`0` for 0-based APIs).
    #[must_use]
    pub const fn first_page(mut self, first: u64) -> Self {
        self.first_page = first;
        self
    }

    /// Asks for `size` items per page in query parameter `name`
    /// (`.per_page("per_page", 100)`). Only a request: a server may send
    /// fewer, so no page count or end is ever computed from it.
    #[must_use]
    pub fn per_page(mut self, name: impl Into<String>, size: u64) -> Self {
        self.per_page = Some((name.into(), size));
        self
    }

    /// Reads the page size the server used from the body (`"/per_page"`);
    /// trusted like the totals: with [`PageNumber::total_at`], page `n`
    /// (counting from the first) is the last once `n × per_page >= total`.
    #[must_use]
    pub fn per_page_at(mut self, pointer: impl Into<String>) -> Self {
        self.per_page_at = Some(Field::new(pointer));
        self
    }

    /// Reads the total number of pages from the body (`"/total_pages"`).
    #[must_use]
    pub fn total_pages_at(mut self, pointer: impl Into<String>) -> Self {
        self.total_pages_at = Some(Field::new(pointer));
        self
    }

    /// Reads the total number of items from the body (`"/total"`).
    #[must_use]
    pub fn total_at(mut self, pointer: impl Into<String>) -> Self {
        self.total_at = Some(Field::new(pointer));
        self
    }

    fn page_of(&self, uri: &Uri) -> Result<u64, StrategyError> {
        Ok(read_param(uri, &self.param)?.unwrap_or(self.first_page))
    }

    /// Where page `number` stands, once its items are counted.
    fn extent(&self, page: &PageView<'_>, number: u64) -> Result<Extent, StrategyError> {
        let read = |field: &Option<Field>| match field {
            Some(field) => read_count(page, field),
            None => Ok(None),
        };
        if let Some(total_pages) = read(&self.total_pages_at)? {
            return Ok(match total_pages.checked_sub(1) {
                Some(n) => Extent::LastPage(self.first_page.saturating_add(n)),
                None => Extent::Done,
            });
        }
        let Some(total) = read(&self.total_at)? else {
            return Ok(Extent::Unknown);
        };
        if self.counted >= total {
            return Ok(Extent::Done);
        }
        let pages = number.saturating_sub(self.first_page).saturating_add(1);
        if let Some(size) = read(&self.per_page_at)?.filter(|&size| size > 0) {
            if pages.saturating_mul(size) >= total {
                return Ok(Extent::Done);
            }
            return Ok(Extent::Predicted(
                self.first_page
                    .saturating_add(total.div_ceil(size))
                    .saturating_sub(1),
            ));
        }
        if self.estimated {
            // Only a guess of the items before the start page: predicting
            // from it could send requests past the end.
            return Ok(Extent::Unknown);
        }
        // The fewest pages that can hold the rest: never more than the
        // server has, unless the total grows, so prefetch does not
        // overshoot.
        let rest = (total - self.counted).div_ceil(self.largest.max(1));
        Ok(Extent::Predicted(number.saturating_add(rest)))
    }
}

/// What the body says about the number of pages.
enum Extent {
    /// Nothing: only an empty page ends the crawl.
    Unknown,
    /// The page is the last one.
    Done,
    /// The number of the last page, as the server says.
    LastPage(u64),
    /// The number of the last page, as far as the crawl can tell: for
    /// prefetch only.
    Predicted(u64),
}

/// The checkpoint member holding the items counted.
const ITEMS: &str = "items";
/// The checkpoint member holding the largest page seen.
const PAGE_SIZE: &str = "page_size";

impl Default for PageNumber {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for PageNumber {
    fn validate(&self) -> Result<(), StrategyError> {
        for field in [&self.per_page_at, &self.total_pages_at, &self.total_at]
            .into_iter()
            .flatten()
        {
            check_field(field)?;
        }
        if self.param.is_empty() {
            return Err(StrategyError::Config(
                "the page parameter name is empty".to_owned(),
            ));
        }
        if let Some((name, size)) = &self.per_page
            && (name.is_empty() || *size == 0)
        {
            return Err(StrategyError::Config(
                "per_page needs a parameter name and a size of at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    fn first(&mut self, start: &Uri) -> Result<Uri, StrategyError> {
        let page = self.page_of(start)?;
        let mut uri = with_query_param(start, &self.param, &page.to_string())?;
        if let Some((name, size)) = &self.per_page {
            uri = with_query_param(&uri, name, &size.to_string())?;
        }
        Ok(uri)
    }

    fn next(&mut self, page: &PageView<'_>) -> Result<Next, StrategyError> {
        let number = self.page_of(page.uri())?;
        let count = page.item_count() as u64;
        if count == 0 {
            return Ok(Next::Done);
        }
        self.estimated = false;
        if !self.started {
            self.started = true;
            // A crawl started on a later page: the pages before it count
            // as full as the server says, or as this one. Never more, so
            // that the total is not reached before the last item.
            let before = number.saturating_sub(self.first_page);
            if before > 0 {
                let size = match &self.per_page_at {
                    Some(field) => read_count(page, field)?.filter(|&size| size > 0),
                    None => None,
                };
                self.counted = before.saturating_mul(size.unwrap_or(count));
                self.estimated = size.is_none();
            }
        }
        self.counted = self.counted.saturating_add(count);
        self.largest = self.largest.max(count);
        self.last_page = None;
        match self.extent(page, number)? {
            Extent::Done => return Ok(Next::Done),
            Extent::LastPage(last) if number >= last => return Ok(Next::Done),
            Extent::LastPage(last) | Extent::Predicted(last) => self.last_page = Some(last),
            Extent::Unknown => {}
        }
        let next = number
            .checked_add(1)
            .ok_or(StrategyError::NoProgress("the page number overflowed"))?;
        Ok(Next::Fetch(with_query_param(
            page.uri(),
            &self.param,
            &next.to_string(),
        )?))
    }

    fn save(&self) -> Value {
        if self.counted == 0 {
            return Value::Null;
        }
        let mut state = serde_json::Map::new();
        state.insert(ITEMS.to_owned(), Value::from(self.counted));
        state.insert(PAGE_SIZE.to_owned(), Value::from(self.largest));
        Value::Object(state)
    }

    fn restore(&mut self, state: &Value) -> Result<(), StrategyError> {
        (self.counted, self.largest) = match state {
            Value::Null => (0, 0),
            Value::Object(map) => {
                let read = |key| map.get(key).and_then(Value::as_u64);
                match (read(ITEMS), read(PAGE_SIZE)) {
                    (Some(items), Some(size)) => (items, size),
                    _ => return Err(bad_state(state)),
                }
            }
            other => return Err(bad_state(other)),
        };
        self.started = !state.is_null();
        self.estimated = false;
        Ok(())
    }

    fn predict(&self, after: &Uri) -> Option<Uri> {
        let last = self.last_page?;
        let number = self.page_of(after).ok()?;
        (number < last)
            .then(|| with_query_param(after, &self.param, &(number + 1).to_string()).ok())
            .flatten()
    }
}

fn bad_state(found: &Value) -> StrategyError {
    StrategyError::Config(format!(
        "a PageNumber checkpoint state is null or {{\"{ITEMS}\": <items counted>, \"{PAGE_SIZE}\": <largest page>}}, not {found}"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::strategy::testing::{Fixture, fetch};

    #[test]
    fn first_request_sets_page_and_size_but_keeps_a_given_page() {
        let mut s = PageNumber::new().per_page("per_page", 10);
        assert_eq!(
            s.first(&"/items?style=page".parse().unwrap()).unwrap(),
            "/items?style=page&page=1&per_page=10"
        );
        assert_eq!(
            s.first(&"/items?page=4".parse().unwrap()).unwrap(),
            "/items?page=4&per_page=10"
        );
        let mut s = PageNumber::new().first_page(0).param("p");
        assert_eq!(s.first(&"/i".parse().unwrap()).unwrap(), "/i?p=0");
        assert!(s.first(&"/i?p=x".parse().unwrap()).is_err());
    }

    #[test]
    fn total_pages_end_the_crawl_on_the_last_page() {
        let mut s = PageNumber::new().total_pages_at("/total_pages");
        let body = json!({"total_pages": 3});
        let f = Fixture::new("/i?page=2", body.clone(), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=3"));
        assert_eq!(s.predict(&"/i?page=3".parse().unwrap()), None);
        assert_eq!(
            s.predict(&"/i?page=1".parse().unwrap()).unwrap(),
            "/i?page=2"
        );
        let f = Fixture::new("/i?page=3", body, 5);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
        let f = Fixture::new("/i?page=1", json!({"total_pages": 0}), 1);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
    }

    #[test]
    fn a_total_count_ends_once_the_pages_hold_it() {
        // 25 items, 10 per page: pages 1..=3, and page 3 holds the 25th.
        let mut s = PageNumber::new().total_at("/total");
        let f = Fixture::new("/i?page=1", json!({"total": 25}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=2"));
        assert_eq!(
            s.predict(&"/i?page=2".parse().unwrap()).unwrap(),
            "/i?page=3"
        );
        assert_eq!(s.predict(&"/i?page=3".parse().unwrap()), None);
        let f = Fixture::new("/i?page=2", json!({"total": 25}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=3"));
        let f = Fixture::new("/i?page=3", json!({"total": 25}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done, "25 items seen");

        // The size asked for is not the size served: 20 asked, 10 served.
        let mut s = PageNumber::new().total_at("/total").per_page("n", 20);
        let f = Fixture::new("/i?page=1&n=20", json!({"total": 25}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=2&n=20"));
        let f = Fixture::new("/i?page=2&n=20", json!({"total": 25}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=3&n=20"));
        let f = Fixture::new("/i?page=3&n=20", json!({"total": 25}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);

        // A size the server reports is trusted, even on a short page alone.
        let mut s = PageNumber::new()
            .total_at("/total")
            .per_page_at("/per_page");
        let f = Fixture::new("/i?page=2", json!({"total": "25", "per_page": 10}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=3"));
        assert_eq!(s.predict(&"/i?page=3".parse().unwrap()), None);
        let f = Fixture::new("/i?page=3", json!({"total": "25", "per_page": 10}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
        let f = Fixture::new("/i?page=3", json!({"total": -1}), 5);
        assert!(matches!(
            s.next(&f.view()),
            Err(StrategyError::BadValue { .. })
        ));
    }

    #[test]
    fn a_short_page_is_no_end_while_the_total_is_not_reached() {
        // Pages filtered after slicing: 10, 7, 10, 3 of a total of 30.
        let mut s = PageNumber::new().total_at("/total").per_page("n", 10);
        for (page, len) in [(1, 10), (2, 7), (3, 10)] {
            let f = Fixture::new(&format!("/i?page={page}"), json!({"total": 30}), len);
            assert_eq!(
                s.next(&f.view()).unwrap(),
                fetch(&format!("/i?page={}", page + 1)),
                "page {page} of {len}"
            );
        }
        // 27 counted: page 4 can hold the rest, nothing is predicted past it.
        assert_eq!(s.predict(&"/i?page=4".parse().unwrap()), None);
        let f = Fixture::new("/i?page=4", json!({"total": 30}), 3);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done, "30 items seen");

        // Without a total, neither a short page nor one below the size
        // asked for ends: only the empty page does.
        let mut s = PageNumber::new().per_page("n", 10);
        let f = Fixture::new("/i?page=1", json!({}), 4);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=2"));
        let f = Fixture::new("/i?page=2", json!({}), 0);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
    }

    #[test]
    fn a_later_start_page_counts_the_pages_before_it() {
        // 50 items, 10 a page, started on page 3: pages 1 and 2 count as
        // full, so page 5 holds the 50th item.
        let mut s = PageNumber::new().total_at("/total");
        let f = Fixture::new("/i?page=3", json!({"total": 50}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=4"));
        assert_eq!(s.save(), json!({"items": 30, "page_size": 10}));
        assert_eq!(
            s.predict(&"/i?page=4".parse().unwrap()),
            None,
            "nothing predicted from the estimate alone"
        );
        let f = Fixture::new("/i?page=4", json!({"total": 50}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=5"));
        let f = Fixture::new("/i?page=5", json!({"total": 50}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);

        // A short start page is no measure of the pages before it: the
        // estimate stays low, so no item is lost (one request too many).
        let mut s = PageNumber::new().total_at("/total");
        let f = Fixture::new("/i?page=5", json!({"total": 45}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=6"));
        // The size the server reports is used instead.
        let mut s = PageNumber::new()
            .total_at("/total")
            .per_page_at("/per_page");
        let f = Fixture::new("/i?page=5", json!({"total": 45, "per_page": 10}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
        // A restored position is not estimated again.
        let mut s = PageNumber::new().total_at("/total");
        s.restore(&json!({"items": 40, "page_size": 10})).unwrap();
        let f = Fixture::new("/i?page=5", json!({"total": 45}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
    }

    #[test]
    fn the_items_counted_survive_a_checkpoint() {
        let mut s = PageNumber::new().total_at("/total");
        assert_eq!(s.save(), Value::Null);
        let f = Fixture::new("/i?page=1", json!({"total": 25}), 10);
        s.next(&f.view()).unwrap();
        let f = Fixture::new("/i?page=2", json!({"total": 25}), 10);
        s.next(&f.view()).unwrap();
        let state = s.save();
        assert_eq!(state, json!({"items": 20, "page_size": 10}));
        // A fresh strategy that only sees the last page still ends there.
        let mut resumed = PageNumber::new().total_at("/total");
        resumed.restore(&state).unwrap();
        let f = Fixture::new("/i?page=3", json!({"total": 25}), 5);
        assert_eq!(resumed.next(&f.view()).unwrap(), Next::Done);
        resumed.restore(&Value::Null).unwrap();
        assert_eq!(resumed.save(), Value::Null);
        let bad_states = [
            json!(3),
            json!({"items": "x", "page_size": 1}),
            json!({"page_size": 10}),
            json!({}),
        ];
        for bad in bad_states {
            assert!(resumed.restore(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_totals_an_empty_page_ends() {
        let mut s = PageNumber::new();
        let f = Fixture::new("/i?page=7", json!({}), 1);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=8"));
        assert_eq!(
            s.predict(&"/i?page=8".parse().unwrap()),
            None,
            "no total, no prefetch"
        );
        let f = Fixture::new("/i?page=8", json!({}), 0);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
        let f = Fixture::new(&format!("/i?page={}", u64::MAX), json!({}), 1);
        assert!(matches!(
            s.next(&f.view()),
            Err(StrategyError::NoProgress(_))
        ));
    }

    #[test]
    fn configuration_is_validated() {
        assert!(PageNumber::new().total_at("total").validate().is_err());
        assert!(PageNumber::new().per_page("n", 0).validate().is_err());
        assert!(PageNumber::new().param("").validate().is_err());
        assert!(PageNumber::new().total_pages_at("/t").validate().is_ok());
    }
}

/// A crawl against a model server, with totals or without, interrupted and
/// resumed anywhere.
#[cfg(test)]
mod model {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::strategy::Strategy;
    use crate::strategy::testing::Fixture;
    use crate::uri::query_param;

    #[derive(Debug, Clone, Copy)]
    enum Signal {
        None,
        Total,
        TotalPages,
    }

    /// Runs `s` over a server whose page `n` (1-based) holds `counts[n-1]`
    /// items, optionally checkpointing after page `resume_after` into a
    /// fresh strategy. Returns the pages requested and the largest page
    /// any prediction made along the way.
    fn crawl(
        make: impl Fn() -> PageNumber,
        counts: &[u64],
        signal: Signal,
        resume_after: Option<usize>,
    ) -> (Vec<u64>, u64) {
        let total: u64 = counts.iter().sum();
        let body = match signal {
            Signal::None => json!({}),
            Signal::Total => json!({ "total": total }),
            Signal::TotalPages => json!({ "total_pages": counts.len() }),
        };
        let mut s = make();
        let mut uri = s.first(&"/i".parse().unwrap()).unwrap();
        let mut requested = Vec::new();
        let mut predicted = 0;
        loop {
            let n: u64 = query_param(&uri, "page").unwrap().parse().unwrap();
            requested.push(n);
            assert!(
                requested.len() <= counts.len() + 2,
                "runaway crawl: {requested:?}"
            );
            let items = usize::try_from(n)
                .ok()
                .and_then(|n| counts.get(n - 1))
                .copied()
                .unwrap_or(0);
            let page = Fixture::new(&uri.to_string(), body.clone(), items as usize);
            let next = s.next(&page.view()).unwrap();
            if let Some(p) = s.predict(&uri) {
                predicted = predicted.max(query_param(&p, "page").unwrap().parse().unwrap());
            }
            if resume_after == Some(requested.len()) {
                let state = serde_json::to_value(s.save()).unwrap();
                s = make();
                s.restore(&state).unwrap();
            }
            match next {
                Next::Fetch(u) => uri = u,
                Next::Done => return (requested, predicted),
            }
        }
    }

    fn make(signal: Signal) -> impl Fn() -> PageNumber {
        move || match signal {
            Signal::None => PageNumber::new(),
            Signal::Total => PageNumber::new().total_at("/total"),
            Signal::TotalPages => PageNumber::new().total_pages_at("/total_pages"),
        }
    }

    proptest! {
        /// Every page is fetched, uneven page sizes or not; with a total the
        /// crawl stops on the last page, without one it costs exactly one
        /// empty page more. Predictions never run past the last page, and a
        /// checkpoint taken after any page changes nothing.
        #[test]
        fn fetches_every_page_and_no_more(
            counts in prop::collection::vec(1u64..6, 0..8),
            signal in prop_oneof![Just(Signal::None), Just(Signal::Total), Just(Signal::TotalPages)],
            resume in any::<prop::sample::Index>(),
        ) {
            let pages = counts.len() as u64;
            let (requested, predicted) = crawl(make(signal), &counts, signal, None);
            let last = match signal {
                Signal::None => pages + 1,
                _ => pages.max(1),
            };
            prop_assert_eq!(&requested, &(1..=last).collect::<Vec<_>>());
            prop_assert!(predicted <= pages, "predicted page {} of {}", predicted, pages);

            let at = resume.index(requested.len()) + 1;
            let (resumed, _) = crawl(make(signal), &counts, signal, Some(at));
            prop_assert_eq!(resumed, requested, "resumed after page {}", at);
        }
    }
}
