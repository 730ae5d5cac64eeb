//! Has-more pagination (Stripe: `?starting_after=<last id>` and `"has_more"`).

use serde_json::Value;

use super::{Next, PageView, Strategy, StrategyError, Token, check_field};
use crate::decode::Field;
use crate::uri::with_query_param;

/// Where the flag is by default.
pub const DEFAULT_FLAG_POINTER: &str = "/has_more";
/// Where an item's id is by default (relative to the item).
pub const DEFAULT_ID_POINTER: &str = "/id";
/// The query parameter carrying the last id by default.
pub const DEFAULT_AFTER_PARAM: &str = "starting_after";

/// Continues while the body's `has_more` flag is `true`, asking for the
/// items after the id of the last item (`?starting_after=<id>`).
///
/// A missing flag, or `has_more: true` on an empty page (there is no last
/// id to continue after), is an error rather than a guess.
#[derive(Clone, Debug)]
pub struct HasMore {
    flag_at: Field,
    id_at: Field,
    param: String,
}

impl HasMore {
    /// `/has_more`, the item's `/id`, and `starting_after`.
    pub fn new() -> Self {
        Self {
            flag_at: Field::new(DEFAULT_FLAG_POINTER),
            id_at: Field::new(DEFAULT_ID_POINTER),
            param: DEFAULT_AFTER_PARAM.to_owned(),
        }
    }

    /// Reads the flag at another pointer.
    #[must_use]
    pub fn flag_at(mut self, pointer: impl Into<String>) -> Self {
        self.flag_at = Field::new(pointer);
        self
    }

    /// Reads the id at another pointer, relative to an item.
    #[must_use]
    pub fn id_at(mut self, pointer: impl Into<String>) -> Self {
        self.id_at = Field::new(pointer);
        self
    }

    /// Sends the id in another query parameter.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>) -> Self {
        self.param = name.into();
        self
    }
}

impl Default for HasMore {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for HasMore {
    fn validate(&self) -> Result<(), StrategyError> {
        check_field(&self.flag_at)?;
        check_field(&self.id_at)?;
        if self.param.is_empty() {
            return Err(StrategyError::Config(
                "the has-more parameter name is empty".to_owned(),
            ));
        }
        Ok(())
    }

    fn wants_last_item(&self) -> bool {
        true
    }

    fn next(&mut self, page: &PageView<'_>) -> Result<Next, StrategyError> {
        match page.lookup(&self.flag_at)?.as_deref() {
            Some(Value::Bool(false)) => return Ok(Next::Done),
            Some(Value::Bool(true)) => {}
            None => {
                return Err(StrategyError::Missing {
                    location: format!("body {}", self.flag_at.as_str()),
                });
            }
            Some(other) => {
                return Err(StrategyError::bad_value(
                    format!("body {}", self.flag_at.as_str()),
                    "a boolean",
                    other,
                ));
            }
        }
        if page.last_item().is_none() {
            return Err(StrategyError::NoProgress(
                "has_more is true but the page is empty, so there is no last id to continue after",
            ));
        }
        // The id goes back exactly as the server wrote it.
        let id = match page.last_item_token(&self.id_at) {
            Token::Str(s) if !s.is_empty() => s,
            Token::Number(n) => n,
            Token::Absent => {
                return Err(StrategyError::Missing {
                    location: format!("last item {}", self.id_at.as_str()),
                });
            }
            other => {
                return Err(StrategyError::BadValue {
                    location: format!("last item {}", self.id_at.as_str()),
                    expected: "a non-empty string or a number",
                    found: other.describe(),
                });
            }
        };
        Ok(Next::Fetch(with_query_param(page.uri(), &self.param, &id)?))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::strategy::testing::{Fixture, fetch};

    #[test]
    fn continues_after_the_last_id_while_has_more() {
        let mut s = HasMore::new();
        assert!(s.wants_last_item());
        let f = Fixture::new("/i?limit=2", json!({"has_more": true}), 2).last(json!({"id": 41}));
        assert_eq!(
            s.next(&f.view()).unwrap(),
            fetch("/i?limit=2&starting_after=41")
        );
        let f = Fixture::new("/i?starting_after=41", json!({"has_more": true}), 1)
            .last(json!({"id": "cus_9"}));
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?starting_after=cus_9"));
        let f = Fixture::new("/i", json!({"has_more": false}), 0);
        assert_eq!(s.next(&f.view()).unwrap(), Next::Done);
    }

    #[test]
    fn missing_or_unusable_signals_are_errors() {
        let mut s = HasMore::new();
        let f = Fixture::new("/i", json!({}), 1).last(json!({"id": 1}));
        assert_eq!(
            s.next(&f.view()).unwrap_err().to_string(),
            "body /has_more is missing from the page; check the strategy's pointer or header name"
        );
        let f = Fixture::new("/i", json!({"has_more": "yes"}), 1).last(json!({"id": 1}));
        assert!(matches!(
            s.next(&f.view()),
            Err(StrategyError::BadValue { .. })
        ));
        let f = Fixture::new("/i", json!({"has_more": true}), 0);
        assert!(matches!(
            s.next(&f.view()),
            Err(StrategyError::NoProgress(_))
        ));
        let f = Fixture::new("/i", json!({"has_more": true}), 1).last(json!({"name": "x"}));
        assert!(matches!(
            s.next(&f.view()),
            Err(StrategyError::Missing { .. })
        ));
        let mut s = HasMore::new()
            .flag_at("/meta/more")
            .id_at("/key")
            .param("after");
        let f = Fixture::new("/i", json!({"meta": {"more": true}}), 1).last(json!({"key": "k"}));
        assert_eq!(s.next(&f.view()).unwrap(), fetch("/i?after=k"));
        assert!(HasMore::new().id_at("id").validate().is_err());
    }
}
