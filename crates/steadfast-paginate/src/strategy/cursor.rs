//! Opaque-cursor pagination (Slack, Shopify, most GraphQL-over-REST APIs).

use std::borrow::Cow;

use http::Uri;

use super::{Next, PageView, Strategy, StrategyError, Token, check_field};
use crate::decode::Field;
use crate::uri::with_query_param;

/// The query parameter a cursor is sent in by default.
pub const DEFAULT_CURSOR_PARAM: &str = "cursor";

/// Reads the next cursor from the body (JSON pointer) or from a response
/// header, and requests the same URI with the cursor in a query parameter
/// (default `cursor`).
///
/// Stops when the cursor is absent, `null` or an empty string. A page with
/// no items but a cursor does **not** stop the crawl.
#[derive(Clone, Debug)]
pub struct Cursor {
    source: Source,
    param: String,
}

#[derive(Clone, Debug)]
enum Source {
    Body(Field),
    Header(String),
}

impl Cursor {
    /// The cursor is at `pointer` in the body (`"/next_cursor"`,
    /// `"/meta/next"`); a string or a number.
    pub fn body(pointer: impl Into<String>) -> Self {
        Self {
            source: Source::Body(Field::new(pointer)),
            param: DEFAULT_CURSOR_PARAM.to_owned(),
        }
    }

    /// The cursor is the value of response header `name` (`"x-next-cursor"`).
    pub fn header(name: impl Into<String>) -> Self {
        Self {
            source: Source::Header(name.into().to_ascii_lowercase()),
            param: DEFAULT_CURSOR_PARAM.to_owned(),
        }
    }

    /// Sends the cursor in query parameter `name` instead of `cursor`.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>) -> Self {
        self.param = name.into();
        self
    }

    /// The cursor, as the server wrote it: a number keeps every digit.
    fn read<'a>(&self, page: &PageView<'a>) -> Result<Option<Cow<'a, str>>, StrategyError> {
        match &self.source {
            Source::Body(field) => match page.token(field) {
                Token::Absent => Ok(None),
                Token::Str(s) => Ok((!s.is_empty()).then_some(s)),
                Token::Number(n) => Ok(Some(n)),
                other @ Token::Other(_) => Err(StrategyError::BadValue {
                    location: format!("body {}", field.as_str()),
                    expected: "a string, a number or null",
                    found: other.describe(),
                }),
            },
            Source::Header(name) => match page.headers().get(name.as_str()) {
                None => Ok(None),
                Some(value) => match value.to_str() {
                    Ok(s) => Ok((!s.is_empty()).then_some(Cow::Borrowed(s))),
                    Err(_) => Err(StrategyError::BadValue {
                        location: format!("header {name}"),
                        expected: "visible ASCII text",
                        found: "non-ASCII bytes".to_owned(),
                    }),
                },
            },
        }
    }
}

impl Strategy for Cursor {
    fn validate(&self) -> Result<(), StrategyError> {
        match &self.source {
            Source::Body(field) => check_field(field)?,
            Source::Header(name) => {
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    StrategyError::Config(format!("{name:?} is not a valid header name"))
                })?;
            }
        }
        if self.param.is_empty() {
            return Err(StrategyError::Config(
                "the cursor parameter name is empty".to_owned(),
            ));
        }
        Ok(())
    }

    fn next(&mut self, page: &PageView<'_>) -> Result<Next, StrategyError> {
        match self.read(page)? {
            Some(cursor) => Ok(Next::Fetch(next_uri(page.uri(), &self.param, &cursor)?)),
            None => Ok(Next::Done),
        }
    }
}

fn next_uri(uri: &Uri, param: &str, cursor: &str) -> Result<Uri, StrategyError> {
    Ok(with_query_param(uri, param, cursor)?)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::strategy::testing::{Fixture, fetch};

    #[test]
    fn body_cursor_continues_until_null_absent_or_empty() {
        let mut s = Cursor::body("/next_cursor");
        let f = Fixture::new("/items?style=cursor", json!({"next_cursor": "c+2/="}), 10);
        assert_eq!(
            s.next(&f.view()).unwrap(),
            fetch("/items?style=cursor&cursor=c%2B2%2F%3D")
        );
        let f = Fixture::new("/items?cursor=a&x=1", json!({"next_cursor": 17}), 0);
        assert_eq!(
            s.next(&f.view()).unwrap(),
            fetch("/items?cursor=17&x=1"),
            "empty page continues"
        );
        for end in [
            json!({"next_cursor": null}),
            json!({}),
            json!({"next_cursor": ""}),
        ] {
            let f = Fixture::new("/items", end, 3);
            assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
        }
        let f = Fixture::new("/items", json!({"next_cursor": {"a": 1}}), 3);
        let err = s.next(&f.view()).unwrap_err().to_string();
        assert_eq!(
            err,
            "body /next_cursor is an object, expected a string, a number or null"
        );
    }

    #[test]
    fn numeric_cursors_are_sent_back_exactly_as_written() {
        let body = br#"{"data":[],"next":18446744073709551617,"f":1.50,"e":1e3,"s":"a\"b"}"#;
        let decoded = crate::decode::decode_page::<Value>(
            bytes::Bytes::from_static(body),
            &crate::decode::Pointer::parse("/data").unwrap(),
            false,
        )
        .unwrap();
        let uri: Uri = "/i".parse().unwrap();
        let headers = http::HeaderMap::new();
        let view = PageView::of_page(1, &uri, &headers, &decoded.rest, 0);
        for (pointer, sent) in [
            ("/next", "/i?cursor=18446744073709551617"),
            ("/f", "/i?cursor=1.50"),
            ("/e", "/i?cursor=1e3"),
            ("/s", "/i?cursor=a%22b"),
        ] {
            assert_eq!(
                Cursor::body(pointer).next(&view).unwrap(),
                fetch(sent),
                "{pointer}"
            );
        }
    }

    #[test]
    fn header_cursor_and_custom_param() {
        let mut s = Cursor::header("X-Next-Cursor").param("after");
        let f = Fixture::new("/items", Value::Null, 1).header("x-next-cursor", "abc");
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/items?after=abc"));
        let f = Fixture::new("/items", Value::Null, 1);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
    }

    #[test]
    fn configuration_is_validated() {
        assert!(Cursor::body("next").validate().is_err());
        assert!(Cursor::header("bad header").validate().is_err());
        assert!(Cursor::body("/n").param("").validate().is_err());
        assert!(Cursor::body("/n").validate().is_ok());
    }
}

#[cfg(test)]
mod model {
    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;
    use serde_json::Value;
    use serde_json::json;

    use super::*;
    use crate::strategy::Strategy;
    use crate::strategy::testing::{Fixture, param};

    proptest! {
        /// Any non-empty cursor comes back exactly in the next request, the
        /// other parameters untouched; a null, empty or absent one ends.
        #[test]
        fn cursors_round_trip_through_the_next_uri(
            cursor in prop_oneof!["\\PC{1,12}".prop_map(Value::from), any::<u64>().prop_map(Value::from)],
            old in prop::option::of("[a-z0-9]{1,6}"),
            other in "[a-z0-9]{0,6}",
            items in 0usize..3,
        ) {
            let mut s = Cursor::body("/next");
            let uri = match &old {
                Some(old) => format!("/i?x={other}&cursor={old}&y=1"),
                None => format!("/i?x={other}&y=1"),
            };
            let f = Fixture::new(&uri, json!({ "next": cursor }), items);
            let Next::Fetch(next) = s.next(&f.view()).unwrap() else {
                return Err(TestCaseError::fail("a cursor must continue the crawl"));
            };
            let want = match &cursor {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            prop_assert_eq!(param(&next, "cursor"), Some(want.clone()));
            prop_assert_eq!(param(&next, "x"), Some(other.clone()));
            prop_assert_eq!(param(&next, "y"), Some("1".to_owned()));
            prop_assert_eq!(next.query().unwrap().matches("cursor=").count(), 1);
            for end in [json!({ "next": null }), json!({ "next": "" }), json!({})] {
                let f = Fixture::new(&uri, end, items);
                prop_assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
            }
        }
    }
}
