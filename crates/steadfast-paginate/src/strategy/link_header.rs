//! RFC 8288 `Link` header pagination (GitHub, GitLab, many REST APIs).

use super::{Next, PageView, Strategy, StrategyError};
use http::Uri;

use crate::link::parse_link_headers;

/// Follows the `rel="next"` link of the `Link` header(s), resolved against
/// the URI of the request that returned it. Stops when there is no such
/// link. Links whose `anchor` parameter names another resource than the
/// page (RFC 8288 §3.2) are not the page's links and are ignored.
///
/// Several `Link` header lines, several links per line, any parameter-name
/// case and several relation types per `rel` are understood (see
/// [`crate::link`]). A malformed header is an error rather than a silent
/// end of the crawl.
#[derive(Clone, Debug)]
pub struct LinkHeader {
    rel: String,
    alias: Option<Uri>,
}

/// The relation type followed by default.
pub const DEFAULT_REL: &str = "next";

impl LinkHeader {
    /// Follows `rel="next"`.
    pub fn new() -> Self {
        Self {
            rel: DEFAULT_REL.to_owned(),
            alias: None,
        }
    }

    /// Follows another relation type (compared case-insensitively).
    #[must_use]
    pub fn rel(mut self, rel: impl Into<String>) -> Self {
        self.rel = rel.into();
        self
    }
}

impl Default for LinkHeader {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for LinkHeader {
    fn validate(&self) -> Result<(), StrategyError> {
        if self.rel.is_empty() || self.rel.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(StrategyError::Config(format!(
                "LinkHeader rel {:?} must be one relation type, without spaces",
                self.rel
            )));
        }
        Ok(())
    }

    fn next(&mut self, page: &PageView<'_>) -> Result<Next, StrategyError> {
        let mut links = parse_link_headers(page.headers())?;
        // Links anchored elsewhere (RFC 8288 §3.2) are about another
        // resource: its `next` is not this page's.
        links.retain(|l| l.is_about(page.uri()));
        // A page without a predecessor is the first page, whatever URI it
        // was fetched by: its `first` link is another name for it.
        self.alias = match links.iter().find(|l| l.has_rel("first")) {
            Some(first)
                if !links
                    .iter()
                    .any(|l| l.has_rel("prev") || l.has_rel("previous")) =>
            {
                first.resolve(page.uri()).ok()
            }
            _ => None,
        };
        match links.iter().find(|l| l.has_rel(&self.rel)) {
            Some(link) => Ok(Next::Fetch(link.resolve(page.uri())?)),
            None => Ok(Next::Done),
        }
    }

    fn alias(&mut self) -> Option<Uri> {
        self.alias.take()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::strategy::testing::{Fixture, fetch};

    #[test]
    fn follows_next_across_header_lines_and_resolves_it() {
        let f = Fixture::new("http://h.test/items?style=link&page=1", Value::Null, 10)
            .header(
                "link",
                r#"</items?style=link&page=1>; rel="first", </items?page=9>; rel="last""#,
            )
            .header("link", r#"</items?style=link&page=2>; REL="Next""#);
        assert_eq!(
            LinkHeader::new().next(&f.view()).unwrap(),
            fetch("http://h.test/items?style=link&page=2")
        );
        let f =
            Fixture::new("http://h.test/x", Value::Null, 10).header("link", r#"</p0>; rel="prev""#);
        assert_eq!(LinkHeader::new().next(&f.view()).unwrap(), Next::Done);
        let f = Fixture::new("http://h.test/x", Value::Null, 0);
        assert_eq!(LinkHeader::new().next(&f.view()).unwrap(), Next::Done);
    }

    #[test]
    fn the_first_page_is_aliased_by_its_first_link() {
        let mut s = LinkHeader::new();
        let f = Fixture::new("http://h.test/items?style=link", Value::Null, 10)
            .header("link", r#"</items?page=2>; rel="next""#)
            .header(
                "link",
                r#"</items?page=1>; rel="first", </items?page=9>; rel="last""#,
            );
        s.next(&f.view()).unwrap();
        assert_eq!(s.alias().unwrap(), "http://h.test/items?page=1");
        assert_eq!(s.alias(), None, "taken once");
        let f = Fixture::new("http://h.test/items?page=2", Value::Null, 10)
            .header(
                "link",
                r#"</items?page=3>; rel="next", </items?page=1>; rel="prev""#,
            )
            .header("link", r#"</items?page=1>; rel="first""#);
        s.next(&f.view()).unwrap();
        assert_eq!(
            s.alias(),
            None,
            "a page with a predecessor is not the first"
        );
    }

    #[test]
    fn links_anchored_elsewhere_are_ignored() {
        let f = Fixture::new("http://h.test/items", Value::Null, 1)
            .header(
                "link",
                r#"</other?page=9>; rel="next"; anchor="/other?page=8""#,
            )
            .header("link", r#"</other?page=1>; rel="first"; anchor="/other""#);
        let mut s = LinkHeader::new();
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
        assert_eq!(s.alias(), None);
        let f = Fixture::new("http://h.test/items", Value::Null, 1).header(
            "link",
            r#"</x>; rel="next"; anchor="/other", </items?page=2>; rel="next"; anchor="/items""#,
        );
        assert_eq!(
            s.next(&f.view()).unwrap(),
            fetch("http://h.test/items?page=2")
        );
    }

    #[test]
    fn custom_rel_and_bad_headers() {
        let f = Fixture::new("http://h.test/x", Value::Null, 1)
            .header("link", r#"<y>; rel="next", <z>; rel="older""#);
        assert_eq!(
            LinkHeader::new().rel("older").next(&f.view()).unwrap(),
            fetch("http://h.test/z")
        );
        let f = Fixture::new("http://h.test/x", Value::Null, 1).header("link", "<y; rel=next");
        assert!(matches!(
            LinkHeader::new().next(&f.view()),
            Err(StrategyError::Link(_))
        ));
        let f =
            Fixture::new("http://h.test/x", Value::Null, 1).header("link", "<ftp://y>; rel=next");
        assert!(matches!(
            LinkHeader::new().next(&f.view()),
            Err(StrategyError::Uri(_))
        ));
        assert!(LinkHeader::new().rel("a b").validate().is_err());
        assert!(LinkHeader::new().rel("").validate().is_err());
    }
}
