//! Query strings: form-style decoding and validated numeric parameters.

use std::borrow::Cow;
use std::ops::RangeInclusive;

/// One `name=value` pair, raw as received and decoded.
#[derive(Debug)]
pub(crate) struct Pair<'a> {
    pub(crate) raw: &'a str,
    pub(crate) name: Cow<'a, str>,
    /// The decoded value as text (invalid UTF-8 replaced).
    pub(crate) value: Cow<'a, str>,
}

impl<'a> Pair<'a> {
    /// The decoded value as the bytes it escapes, invalid UTF-8 included:
    /// what a header value made from it must carry.
    pub(crate) fn value_bytes(&self) -> Cow<'a, [u8]> {
        let raw_value = self.raw.split_once('=').map_or("", |(_, v)| v);
        decode_bytes(raw_value)
    }
}

/// The parsed query of one request. The first occurrence of a name wins.
#[derive(Debug, Default)]
pub(crate) struct Query<'a> {
    pairs: Vec<Pair<'a>>,
}

/// A query parameter that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParamError {
    pub(crate) param: String,
    pub(crate) reason: String,
}

impl ParamError {
    pub(crate) fn new(param: &str, reason: impl Into<String>) -> Self {
        Self {
            param: param.to_owned(),
            reason: reason.into(),
        }
    }
}

impl<'a> Query<'a> {
    pub(crate) fn parse(raw: Option<&'a str>) -> Self {
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|raw| {
                let (name, value) = raw.split_once('=').unwrap_or((raw, ""));
                Pair {
                    raw,
                    name: decode(name),
                    value: decode(value),
                }
            })
            .collect();
        Self { pairs }
    }

    pub(crate) fn pairs(&self) -> &[Pair<'a>] {
        &self.pairs
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_ref())
    }

    /// An unsigned integer in `range`, or `default` when absent.
    pub(crate) fn u64(
        &self,
        name: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ParamError> {
        self.opt_u64(name, range).map(|v| v.unwrap_or(default))
    }

    pub(crate) fn opt_u64(
        &self,
        name: &str,
        range: RangeInclusive<u64>,
    ) -> Result<Option<u64>, ParamError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let value = parse_u64(text)
            .ok_or_else(|| ParamError::new(name, format!("`{text}` is not an unsigned integer")))?;
        if !range.contains(&value) {
            return Err(ParamError::new(
                name,
                format!(
                    "{value} is out of range; use {}..={}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(Some(value))
    }

    /// A boolean switch: `1`/`true` or `0`/`false`; absent is `false`.
    pub(crate) fn flag(&self, name: &str) -> Result<bool, ParamError> {
        match self.get(name) {
            None | Some("0" | "false") => Ok(false),
            Some("1" | "true" | "") => Ok(true),
            Some(other) => Err(ParamError::new(
                name,
                format!("`{other}` is not a switch; use 1 or 0"),
            )),
        }
    }
}

/// Plain decimal digits only: no sign, no whitespace, no overflow.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a
/// byte; malformed escapes stay as they are; invalid UTF-8 is replaced.
fn decode(s: &str) -> Cow<'_, str> {
    crate::percent::decode(s, true)
}

/// The same decoding to raw bytes, nothing replaced.
fn decode_bytes(s: &str) -> Cow<'_, [u8]> {
    crate::percent::decode_bytes(s, true)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn decodes_form_encoding() {
        assert_eq!(decode("a+b%20c%3b"), "a b c;");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%E2%9C%93"), "\u{2713}");
        assert_eq!(decode("%FFa"), "\u{FFFD}a");
    }

    #[test]
    fn values_decode_to_raw_bytes_too() {
        let q = Query::parse(Some("a=%FF%FE+x&b&c=%C3%A9&d=e=f"));
        let bytes: Vec<_> = q.pairs().iter().map(Pair::value_bytes).collect();
        assert_eq!(bytes, [&b"\xff\xfe x"[..], b"", "é".as_bytes(), b"e=f"]);
        assert_eq!(q.get("a"), Some("\u{FFFD}\u{FFFD} x"));
    }

    #[test]
    fn first_occurrence_wins_and_ranges_are_checked() {
        let q = Query::parse(Some("a=1&a=2&b=x&c=70"));
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.u64("a", 9, 0..=10), Ok(1));
        assert_eq!(q.u64("missing", 9, 0..=10), Ok(9));
        assert_eq!(q.u64("b", 9, 0..=10).unwrap_err().param, "b");
        assert!(q.u64("c", 9, 0..=10).unwrap_err().reason.contains("0..=10"));
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("18446744073709551616"), None);
        for bad in ["", "-1", "+1", " 1", "1.0", "0x10"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn decoding_never_panics(s in "[ -~]{0,40}") {
            let _ = Query::parse(Some(&s));
        }

        #[test]
        fn integers_round_trip(n: u64) {
            prop_assert_eq!(parse_u64(&n.to_string()), Some(n));
        }
    }
}
