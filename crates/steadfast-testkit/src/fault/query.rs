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

/// The query parser against a reference form encoder and a first-wins map.
#[cfg(test)]
mod model {
    use proptest::prelude::*;

    use std::fmt::Write as _;

    use super::*;

    /// `application/x-www-form-urlencoded` serialization (WHATWG URL §5.2):
    /// space as `+`, everything outside `*-._` and alphanumerics escaped.
    fn form_encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for &b in bytes {
            match b {
                b' ' => out.push('+'),
                b'*' | b'-' | b'.' | b'_' => out.push(char::from(b)),
                b if b.is_ascii_alphanumeric() => out.push(char::from(b)),
                b => {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn encoded_pairs_parse_back_first_occurrence_winning(
            pairs in prop::collection::vec(
                ("[a-c]{1,2}|\\PC{1,4}", prop::collection::vec(any::<u8>(), 0..8)),
                0..6,
            ),
            empties in prop::collection::vec(0usize..3, 7),
        ) {
            // Stray `&`s (empty pairs) in between are skipped.
            let mut raw = "&".repeat(empties[0]);
            for (i, (name, value)) in pairs.iter().enumerate() {
                raw.push_str(&form_encode(name.as_bytes()));
                raw.push('=');
                raw.push_str(&form_encode(value));
                raw.push_str(&"&".repeat(empties[i + 1].max(1)));
            }
            let q = Query::parse(Some(&raw));
            prop_assert_eq!(q.pairs().len(), pairs.len(), "{}", raw);
            for (pair, (name, value)) in q.pairs().iter().zip(&pairs) {
                prop_assert_eq!(pair.name.as_ref(), name.as_str());
                prop_assert_eq!(&*pair.value_bytes(), &value[..]);
                let lossy = String::from_utf8_lossy(value);
                prop_assert_eq!(pair.value.as_ref(), lossy.as_ref());
            }
            for (name, _) in &pairs {
                let first = pairs.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v));
                prop_assert_eq!(q.get(name), first.as_deref());
            }
            prop_assert_eq!(q.get("absent=name"), None);
        }

        #[test]
        fn numeric_params_are_in_range_or_an_error(
            value in prop_oneof!["[0-9]{1,21}", "\\PC{0,6}", (0u64..100).prop_map(|n| n.to_string())],
            lo in 0u64..50,
            span in 0u64..50,
        ) {
            let raw = format!("n={}", form_encode(value.as_bytes()));
            let q = Query::parse(Some(&raw));
            let range = lo..=lo + span;
            let want = value.parse::<u64>().ok().filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
            match q.opt_u64("n", range.clone()) {
                Ok(got) => {
                    prop_assert_eq!(got, want);
                    prop_assert!(got.is_some_and(|n| range.contains(&n)));
                }
                Err(e) => {
                    prop_assert_eq!(e.param.as_str(), "n");
                    prop_assert!(want.is_none_or(|n| !range.contains(&n)), "{:?} rejected", value);
                }
            }
            prop_assert_eq!(q.u64("missing", 7, range.clone()), Ok(7));
        }
    }
}
