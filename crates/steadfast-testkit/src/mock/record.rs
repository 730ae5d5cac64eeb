//! [`RecordedCall`]: what the mock saw of one request.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use bytes::Bytes;
use http::{Extensions, HeaderMap, Method, Uri, Version};
use tokio::time::Instant;

/// One request as the [`MockTransport`](super::MockTransport) received it,
/// body read in full.
///
/// Every request is recorded, matched or not, in arrival order (the order in
/// which scripts were consumed). Custom matchers
/// ([`Route::matching`](super::Route::matching)) and dynamic replies
/// ([`Reply::with`](super::Reply::with)) receive it too.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct RecordedCall {
    /// The request method.
    pub method: Method,
    /// The request URI, as sent (absolute or origin-form).
    pub uri: Uri,
    /// The HTTP version of the request.
    pub version: Version,
    /// The request headers.
    pub headers: HeaderMap,
    /// The request extensions (a [`Deadline`](steadfast_core::Deadline), for
    /// instance, set by an outer layer).
    pub extensions: Extensions,
    /// The whole request body.
    pub body: Bytes,
    /// When the request reached the mock (`tokio::time`, so paused-time
    /// aware), before its body was read.
    pub at: Instant,
    /// Registration index of the route that served it; `None` when no route
    /// did (unmatched, served by the fallback, or its route was exhausted).
    /// Always `None` inside [`Route::matching`](super::Route::matching).
    pub route: Option<usize>,
    /// Values captured by the `{name}` segments of the serving route's path.
    pub params: Vec<(String, String)>,
}

impl RecordedCall {
    /// The path of the URI (`/users/7`).
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The first value of query parameter `name`, percent-decoded (`+` reads
    /// as a space).
    pub fn query(&self, name: &str) -> Option<String> {
        query_pairs(self.uri.query())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The first value of header `name` (case-insensitive), if it is visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value captured by the `{name}` segment of the serving route's path.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced by `�`).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON into `T` (use `serde_json::Value` for any JSON).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

impl fmt::Display for RecordedCall {
    /// `GET http://api.test/users?page=1 (12-byte body)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.uri)?;
        if !self.body.is_empty() {
            write!(f, " ({}-byte body)", self.body.len())?;
        }
        Ok(())
    }
}

/// Renders calls one per line for assertion messages, capped so a runaway
/// test does not print a million lines.
pub(crate) fn list_calls(calls: &[RecordedCall], highlight: Option<usize>) -> String {
    const MAX_LINES: usize = 50;
    if calls.is_empty() {
        return "  (no calls)".to_owned();
    }
    let mut out = String::new();
    for (i, call) in calls.iter().enumerate().take(MAX_LINES) {
        if i > 0 {
            out.push('\n');
        }
        let marker = match (highlight, call.route) {
            (Some(h), Some(r)) if h == r => "*",
            _ => " ",
        };
        let served = match call.route {
            Some(r) => format!("route #{r}"),
            None => "no route".to_owned(),
        };
        let _ = write!(out, " {marker}#{i} {call} -> {served}");
    }
    if calls.len() > MAX_LINES {
        let _ = write!(out, "\n  ... and {} more", calls.len() - MAX_LINES);
    }
    out
}

/// `application/x-www-form-urlencoded` pairs of a query string, decoded.
pub(crate) fn query_pairs(
    query: Option<&str>,
) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); malformed
/// escapes stay as they are, invalid UTF-8 becomes `�`.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Cow<'_, str> {
    crate::percent::decode(s, plus_is_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes_and_plus() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a%20b+c", false), "a b+c");
        assert_eq!(percent_decode("caf%C3%A9", false), "café");
        // Malformed escapes are kept verbatim, never a panic.
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%4", false), "%4");
        assert_eq!(percent_decode("%%41", false), "%A");
    }

    fn encode(s: &str) -> String {
        s.bytes().fold(String::new(), |mut out, b| {
            let _ = write!(out, "%{b:02X}");
            out
        })
    }

    proptest::proptest! {
        #[test]
        fn percent_encoding_round_trips(s in ".{0,40}") {
            let encoded = encode(&s);
            proptest::prop_assert_eq!(percent_decode(&encoded, true), s.as_str());
        }

        #[test]
        fn decoding_never_panics(s in "[%+a-fA-F0-9\\PC]{0,40}") {
            let _ = percent_decode(&s, true);
            let _ = query_pairs(Some(&s)).count();
        }
    }

    #[test]
    fn query_pairs_split_and_decode() {
        let pairs: Vec<_> = query_pairs(Some("a=1&b=x%2By&&c&d=e=f"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("a".into(), "1".into()),
                ("b".into(), "x+y".into()),
                ("c".into(), String::new()),
                ("d".into(), "e=f".into()),
            ]
        );
        assert_eq!(query_pairs(None).count(), 0);
    }
}
