//! Offset/limit pagination (`?offset=O&limit=L`).

use http::Uri;

use super::{Next, PageView, Strategy, StrategyError, check_field, read_count, read_param};
use crate::decode::Field;
use crate::uri::with_query_param;

/// The query parameter carrying the offset by default.
pub const DEFAULT_OFFSET_PARAM: &str = "offset";
/// The query parameter carrying the limit by default.
pub const DEFAULT_LIMIT_PARAM: &str = "limit";

/// Requests `?offset=0`, then advances the offset by the number of items
/// each page actually held (so a server that caps the limit never makes
/// the crawl skip items).
///
/// Stops when the offset reaches the total ([`OffsetLimit::total_at`]), or
/// on an empty page. With a total, the following pages are known in
/// advance, so [prefetch](crate::PaginatorBuilder::prefetch) applies.
#[derive(Clone, Debug)]
pub struct OffsetLimit {
    offset_param: String,
    limit_param: String,
    limit: Option<u64>,
    total_at: Option<Field>,
    total: Option<u64>,
    step: Option<u64>,
}

impl OffsetLimit {
    /// `?offset=0`, `?offset=<items so far>`, ... with the server's default limit.
    pub fn new() -> Self {
        Self {
            offset_param: DEFAULT_OFFSET_PARAM.to_owned(),
            limit_param: DEFAULT_LIMIT_PARAM.to_owned(),
            limit: None,
            total_at: None,
            total: None,
            step: None,
        }
    }

    /// Asks for `limit` items per page.
    #[must_use]
    pub const fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Renames the parameters (`.params("skip", "take")`).
    #[must_use]
    pub fn params(mut self, offset: impl Into<String>, limit: impl Into<String>) -> Self {
        self.offset_param = offset.into();
        self.limit_param = limit.into();
        self
    }

    /// Reads the total number of items from the body (`"/total"`).
    #[must_use]
    pub fn total_at(mut self, pointer: impl Into<String>) -> Self {
        self.total_at = Some(Field::new(pointer));
        self
    }

    fn offset_of(&self, uri: &Uri) -> Result<u64, StrategyError> {
        Ok(read_param(uri, &self.offset_param)?.unwrap_or(0))
    }
}

impl Default for OffsetLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for OffsetLimit {
    fn validate(&self) -> Result<(), StrategyError> {
        if let Some(field) = &self.total_at {
            check_field(field)?;
        }
        if self.offset_param.is_empty() || self.limit_param.is_empty() {
            return Err(StrategyError::Config(
                "offset and limit parameter names must not be empty".to_owned(),
            ));
        }
        if self.limit == Some(0) {
            return Err(StrategyError::Config(
                "a limit of 0 would never advance".to_owned(),
            ));
        }
        Ok(())
    }

    fn first(&mut self, start: &Uri) -> Result<Uri, StrategyError> {
        let offset = self.offset_of(start)?;
        let mut uri = with_query_param(start, &self.offset_param, &offset.to_string())?;
        if let Some(limit) = self.limit {
            uri = with_query_param(&uri, &self.limit_param, &limit.to_string())?;
        }
        Ok(uri)
    }

    fn next(&mut self, page: &PageView<'_>) -> Result<Next, StrategyError> {
        let offset = self.offset_of(page.uri())?;
        let count = page.item_count() as u64;
        self.total = match &self.total_at {
            Some(field) => read_count(page, field)?,
            None => None,
        };
        if count == 0 {
            return Ok(Next::Done);
        }
        self.step = Some(count);
        let next = offset.saturating_add(count);
        if self.total.is_some_and(|total| next >= total) {
            return Ok(Next::Done);
        }
        Ok(Next::Fetch(with_query_param(
            page.uri(),
            &self.offset_param,
            &next.to_string(),
        )?))
    }

    fn predict(&self, after: &Uri) -> Option<Uri> {
        let next = self.offset_of(after).ok()?.checked_add(self.step?)?;
        (next < self.total?)
            .then(|| with_query_param(after, &self.offset_param, &next.to_string()).ok())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::strategy::testing::{Fixture, fetch};

    #[test]
    fn advances_by_the_items_received_and_stops_at_the_total() {
        let mut s = OffsetLimit::new().limit(10).total_at("/total");
        assert_eq!(
            s.first(&"/i?style=offset".parse().unwrap()).unwrap(),
            "/i?style=offset&offset=0&limit=10"
        );
        let f = Fixture::new("/i?offset=0&limit=10", json!({"total": 25}), 10);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?offset=10&limit=10"));
        assert_eq!(
            s.predict(&"/i?offset=10&limit=10".parse().unwrap())
                .unwrap(),
            "/i?offset=20&limit=10"
        );
        assert_eq!(s.predict(&"/i?offset=20&limit=10".parse().unwrap()), None);
        // The server capped the page at 4 items: the offset follows what came.
        let f = Fixture::new("/i?offset=10&limit=10", json!({"total": 25}), 4);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?offset=14&limit=10"));
        let f = Fixture::new("/i?offset=20&limit=10", json!({"total": 25}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
    }

    #[test]
    fn without_a_total_an_empty_page_ends_and_nothing_is_predicted() {
        let mut s = OffsetLimit::new().params("skip", "take");
        let f = Fixture::new("/i?skip=5", json!({}), 5);
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?skip=10"));
        assert_eq!(s.predict(&"/i?skip=10".parse().unwrap()), None);
        let f = Fixture::new("/i?skip=10", json!({}), 0);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
    }

    #[test]
    fn configuration_is_validated() {
        assert!(OffsetLimit::new().limit(0).validate().is_err());
        assert!(OffsetLimit::new().total_at("x").validate().is_err());
        assert!(OffsetLimit::new().params("", "l").validate().is_err());
    }
}

/// A crawl against a model server that caps each page at its own size.
#[cfg(test)]
mod model {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::strategy::Strategy;
    use crate::strategy::testing::{Fixture, param};

    proptest! {
        /// The offsets requested are the running sums of the items
        /// received; with a total the crawl ends on the page that reaches
        /// it, without one on the first empty page. A prediction is always
        /// the offset the next page will really ask for.
        #[test]
        fn offsets_follow_the_items_received(
            total in 0u64..40,
            caps in prop::collection::vec(1u64..8, 1..6),
            with_total: bool,
        ) {
            let mut s = if with_total { OffsetLimit::new().total_at("/total") } else { OffsetLimit::new() };
            let mut uri = s.first(&"/i?limit=5".parse().unwrap()).unwrap();
            prop_assert_eq!(param(&uri, "limit"), Some("5".to_owned()));
            let (mut requested, mut expected) = (Vec::new(), Vec::new());
            let mut at = 0;
            for cap in caps.iter().cycle() {
                expected.push(at);
                let count = (*cap).min(total - at);
                at += count;
                if count == 0 || (with_total && at >= total) {
                    break;
                }
            }
            loop {
                let offset: u64 = param(&uri, "offset").unwrap().parse().unwrap();
                requested.push(offset);
                prop_assert!(requested.len() <= expected.len(), "{:?} vs {:?}", requested, expected);
                let cap = caps[(requested.len() - 1) % caps.len()];
                let count = cap.min(total.saturating_sub(offset));
                let page = Fixture::new(&uri.to_string(), json!({ "total": total }), count as usize);
                match s.next(&page.view()).unwrap() {
                    Next::Fetch(next) => {
                        prop_assert_eq!(param(&next, "limit"), Some("5".to_owned()));
                        if let Some(p) = s.predict(&next) {
                            let p: u64 = param(&p, "offset").unwrap().parse().unwrap();
                            prop_assert!(p < total, "predicted offset {} past {}", p, total);
                        }
                        uri = next;
                    }
                    Next::Done => break,
                }
            }
            prop_assert_eq!(requested, expected);
        }
    }
}
