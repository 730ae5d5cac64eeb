//! RFC 8288 `Link` header pagination (GitHub, GitLab, many REST APIs).

use super::{Next, PageView, Strategy, StrategyError};
use http::Uri;

use crate::link::parse_link_headers;

/// Follows the `rel="next"` link of the `Link` header(s), resolved against
/// the URI of the request that returned it. Stops when there is no such
/// link. Links whose `anchor` parameter names another resource than the
/// page (RFC 8288 §3.2) are not the page's links and are ignored: when
/// every `next` link of a page is anchored elsewhere, the crawl ends there,
/// with a warning so that a server misusing `anchor` does not pass for a
/// complete crawl (the `tracing` event `next links anchored on another
/// resource were ignored; the crawl ends here`, with `page`, `url.full`,
/// `link.rel`, `link.target` and `link.anchor`).
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
        let mut ignored = None;
        links.retain(|l| {
            let about = l.is_about(page.uri());
            if !about && ignored.is_none() && l.has_rel(&self.rel) {
                ignored = Some(l.clone());
            }
            about
        });
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
        if let Some(link) = links.iter().find(|l| l.has_rel(&self.rel)) {
            return Ok(Next::Fetch(link.resolve(page.uri())?));
        }
        if let Some(link) = ignored {
            // Ending silently would hide a server's misuse of `anchor` as
            // a complete crawl.
            tracing::warn!(
                page = page.number(),
                url.full = %page.uri(),
                link.rel = %self.rel,
                link.target = link.target(),
                link.anchor = link.param("anchor").unwrap_or_default(),
                "next links anchored on another resource were ignored; the crawl ends here"
            );
        }
        Ok(Next::Done)
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

    /// Counts the warnings emitted, and keeps their `link.anchor`.
    #[derive(Default)]
    struct Warnings(std::sync::Mutex<Vec<String>>);

    struct Anchor<'a>(&'a mut String);

    impl tracing::field::Visit for Anchor<'_> {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == "link.anchor" {
                value.clone_into(self.0);
            }
        }

        fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
    }

    impl tracing::Subscriber for &'static Warnings {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }

        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() == tracing::Level::WARN {
                let mut anchor = String::new();
                event.record(&mut Anchor(&mut anchor));
                self.0.lock().unwrap().push(anchor);
            }
        }

        fn enter(&self, _: &tracing::span::Id) {}

        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn next_links_all_anchored_elsewhere_end_the_crawl_with_a_warning() {
        let warnings: &'static Warnings = Box::leak(Box::default());
        let anchored = Fixture::new("http://h.test/items", Value::Null, 1).header(
            "link",
            r#"</other?page=9>; rel="next"; anchor="/other?page=8", </items?page=0>; rel="prev""#,
        );
        let mixed = Fixture::new("http://h.test/items", Value::Null, 1).header(
            "link",
            r#"</x>; rel="next"; anchor="/other", </items?page=2>; rel="next""#,
        );
        let none = Fixture::new("http://h.test/items", Value::Null, 1)
            .header("link", r#"</other>; rel="prev"; anchor="/other""#);
        tracing::subscriber::with_default(warnings, || {
            let mut s = LinkHeader::new();
            assert_eq!(s.next(&anchored.view()).unwrap(), Next::Done);
            assert!(matches!(s.next(&mixed.view()).unwrap(), Next::Fetch(_)));
            assert_eq!(s.next(&none.view()).unwrap(), Next::Done);
        });
        assert_eq!(
            *warnings.0.lock().unwrap(),
            ["/other?page=8"],
            "one warning, for the page whose only next links were dropped"
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
