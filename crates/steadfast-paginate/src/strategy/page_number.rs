//! Page-number pagination (`?page=N`).

use http::Uri;

use super::{Next, PageView, Strategy, StrategyError, check_field, read_count, read_param};
use crate::decode::Field;
use crate::uri::with_query_param;

/// The query parameter carrying the page number by default.
pub const DEFAULT_PAGE_PARAM: &str = "page";
/// The number of the first page by default (1-based APIs).
pub const DEFAULT_FIRST_PAGE: u64 = 1;

/// Requests `?page=N`, then `N+1`, ...
///
/// Stops, in this order of preference:
/// 1. after the last page, when the body gives the total number of pages
///    ([`PageNumber::total_pages_at`]), or the total number of items
///    ([`PageNumber::total_at`]) from which the pages are counted with the
///    page size (configured with [`PageNumber::per_page`], read with
///    [`PageNumber::per_page_at`], or else the size of the page just seen);
/// 2. on an empty page (a page-number API has no other way to say "past
///    the end").
///
/// With a total, the following pages are known in advance, so
/// [prefetch](crate::PaginatorBuilder::prefetch) can request them
/// concurrently.
///
/// The page number is read back from each request URI, so a crawl resumed
/// from a checkpoint continues exactly where it stopped. A start URI that
/// already carries the page parameter starts at that page.
#[derive(Clone, Debug)]
pub struct PageNumber {
    param: String,
    first_page: u64,
    per_page: Option<(String, u64)>,
    per_page_at: Option<Field>,
    total_pages_at: Option<Field>,
    total_at: Option<Field>,
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
    /// (`.per_page("per_page", 100)`).
    #[must_use]
    pub fn per_page(mut self, name: impl Into<String>, size: u64) -> Self {
        self.per_page = Some((name.into(), size));
        self
    }

    /// Reads the page size the server used from the body (`"/per_page"`).
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

    /// The last page number, when the body says how many there are.
    fn learn_last_page(&self, page: &PageView<'_>) -> Result<Extent, StrategyError> {
        let read = |field: &Option<Field>| match field {
            Some(field) => read_count(page, field),
            None => Ok(None),
        };
        let pages = if let Some(total_pages) = read(&self.total_pages_at)? {
            total_pages
        } else if let Some(total) = read(&self.total_at)? {
            let size = match read(&self.per_page_at)?.filter(|&s| s > 0) {
                Some(size) => size,
                None => match &self.per_page {
                    Some((_, size)) => *size,
                    None => page.item_count() as u64,
                },
            };
            if size == 0 {
                return Ok(Extent::Unknown);
            }
            total.div_ceil(size)
        } else {
            return Ok(Extent::Unknown);
        };
        Ok(match pages.checked_sub(1) {
            Some(n) => Extent::LastPage(self.first_page.saturating_add(n)),
            None => Extent::NoPages,
        })
    }
}

/// What the body says about the number of pages.
enum Extent {
    Unknown,
    NoPages,
    LastPage(u64),
}

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
        if page.item_count() == 0 {
            return Ok(Next::Done);
        }
        match self.learn_last_page(page)? {
            Extent::NoPages => {
                self.last_page = None;
                return Ok(Next::Done);
            }
            Extent::LastPage(last) => {
                self.last_page = Some(last);
                if number >= last {
                    return Ok(Next::Done);
                }
            }
            Extent::Unknown => self.last_page = None,
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

    fn predict(&self, after: &Uri) -> Option<Uri> {
        let last = self.last_page?;
        let number = self.page_of(after).ok()?;
        (number < last)
            .then(|| with_query_param(after, &self.param, &(number + 1).to_string()).ok())
            .flatten()
    }
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
    fn total_count_uses_the_page_size() {
        // 25 items, 10 per page: pages 1..=3.
        let mut s = PageNumber::new().total_at("/total");
        let f = Fixture::new("/i?page=2", json!({"total": 25}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=3"));
        let f = Fixture::new("/i?page=3", json!({"total": 25}), 5);
        // A short last page under-counts the size: it still ends, on the empty page after.
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?page=4"));
        let mut s = PageNumber::new()
            .total_at("/total")
            .per_page_at("/per_page");
        let f = Fixture::new("/i?page=3", json!({"total": "25", "per_page": 10}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
        let mut s = PageNumber::new().total_at("/total").per_page("n", 10);
        let f = Fixture::new("/i?page=3", json!({"total": 25}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
        let f = Fixture::new("/i?page=3", json!({"total": -1}), 5);
        assert!(matches!(
            s.next(&f.view()),
            Err(StrategyError::BadValue { .. })
        ));
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
